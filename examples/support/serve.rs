//! Starting `healthgate serve` for the benchmark and reliability helpers. Each helper
//! includes this file with `#[path]` and uses some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs `PROGRAM PREFIX… serve --config CONFIG` (e.g. `taskset -c 0 target/release/healthgate`)
/// with its stdout piped and stderr dropped, and waits for its `grpc listening on ADDR` line:
/// the child and ADDR.
pub(crate) async fn serve(
    program: &str,
    prefix: &[String],
    config: &Path,
) -> Result<(Child, String), Box<dyn std::error::Error>> {
    let (child, mut addrs) = serve_listening(program, prefix, config, &["grpc"]).await?;
    Ok((child, addrs.remove(0)))
}

/// [`serve`], waiting for one `KIND listening on ADDR` line per entry of `kinds` (`grpc`,
/// `http`, `probe`, …; the server prints them in that order): the child and the addresses, in
/// the order of `kinds`.
pub(crate) async fn serve_listening(
    program: &str,
    prefix: &[String],
    config: &Path,
    kinds: &[&str],
) -> Result<(Child, Vec<String>), Box<dyn std::error::Error>> {
    let mut child = Command::new(program)
        .args(prefix)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let wanted: Vec<String> = kinds.iter().map(|k| format!("{k} listening on ")).collect();
    let found = tokio::task::spawn_blocking(move || {
        let mut found: Vec<Option<String>> = vec![None; wanted.len()];
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            for (slot, prefix) in found.iter_mut().zip(&wanted) {
                if let Some(addr) = line.strip_prefix(prefix.as_str()) {
                    *slot = Some(addr.to_owned());
                }
            }
            if found.iter().all(Option::is_some) {
                return Some(found.into_iter().flatten().collect::<Vec<_>>());
            }
        }
        None
    })
    .await?
    .ok_or("the server did not print every listening line")?;
    Ok((child, found))
}
