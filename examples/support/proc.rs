//! `/proc` readings shared by the benchmark helpers (Linux).

/// Resident set size of `pid`, in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(rss.trim().trim_end_matches(" kB").parse()?)
}
