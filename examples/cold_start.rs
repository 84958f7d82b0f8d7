//! Benchmark helper: process start to first `SERVING` answer, and idle RSS.
//! Usage: `cold_start PORT COMMAND [ARGS…]` — the command must serve grpc.health.v1 on
//! 127.0.0.1:PORT. Prints `start_ms=… rss_kib=…` (RSS read after one idle second).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: cold_start PORT COMMAND [ARGS…]")?
        .parse()?;
    let program = args
        .next()
        .ok_or("usage: cold_start PORT COMMAND [ARGS…]")?;
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let elapsed = loop {
        if started.elapsed() > Duration::from_secs(10) {
            child.kill()?;
            return Err("no SERVING answer within 10 s".into());
        }
        let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
        else {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        };
        let mut client = HealthClient::new(channel);
        match client.check(HealthCheckRequest::default()).await {
            Ok(r) if r.get_ref().status() == ServingStatus::Serving => break started.elapsed(),
            _ => tokio::time::sleep(Duration::from_micros(200)).await,
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = proc::rss_kib(child.id())?;
    child.kill()?;
    child.wait()?;
    println!(
        "start_ms={:.2} rss_kib={rss}",
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}
