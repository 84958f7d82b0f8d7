//! Starting `healthgate serve` for the benchmark and reliability helpers. Each helper
//! includes this file with `#[path]`.

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
    let mut child = Command::new(program)
        .args(prefix)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let grpc = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        lines.find_map(|l| {
            l.ok()?
                .strip_prefix("grpc listening on ")
                .map(str::to_owned)
        })
    })
    .await?
    .ok_or("the server printed no listening line")?;
    Ok((child, grpc))
}
