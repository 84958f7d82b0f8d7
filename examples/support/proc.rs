//! `/proc` readings shared by the benchmark helpers (Linux). Each helper includes this file
//! with `#[path]` and uses some of it.
#![allow(dead_code)]

/// Resident set size of `pid`, in KiB (`VmRSS`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(rss.trim().trim_end_matches(" kB").parse()?)
}

/// CPU time of `pid` so far (user + system), in clock ticks (see [`clock_ticks_per_second`]).
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// `getconf CLK_TCK`.
pub(crate) fn clock_ticks_per_second() -> Result<f64, Box<dyn std::error::Error>> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}
