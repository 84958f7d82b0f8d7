//! Reliability helper: connection and stream churn. `churn CYCLES WATCHES COMMAND [ARGS…]` runs
//! `COMMAND ARGS… serve --config FILE` (e.g. `target/release/healthgate`) with one TCP
//! dependency on loopback, then:
//!
//! 1. warms up (1,000 connect/Check/close cycles and 1,000 Watch open/cancel cycles, so the
//!    allocator and the runtime reach their working size) and reads the server's open file
//!    descriptors and RSS: the baseline;
//! 2. runs CYCLES connect/Check/close cycles (a new TCP connection and HTTP/2 handshake each),
//!    then WATCHES cycles of opening a Watch and a Detail.Watch on one connection and
//!    cancelling them after their first message;
//! 3. waits for the server to close what it holds, and reads fds and RSS again.
//!
//! Prints one `key=value` line; RELIABILITY.md records it (target: fds back to the baseline,
//! RSS within 2 %).

use std::io::Write;
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::rss_kib;

use healthgate::grpc::pb::detail::DetailRequest;
use healthgate::grpc::pb::detail::detail_client::DetailClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: churn CYCLES WATCHES COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let cycles: u32 = args.next().ok_or(USAGE)?.parse()?;
    let watches: u32 = args.next().ok_or(USAGE)?.parse()?;
    let program = args.next().ok_or(USAGE)?;
    let prefix: Vec<String> = args.collect();

    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(async move { while target.accept().await.is_ok() {} });
    let dir = std::env::temp_dir().join(format!("hg-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("healthgate.toml");
    let mut file = std::fs::File::create(&config)?;
    writeln!(
        file,
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
         [dependencies.db]\nkind = \"tcp\"\naddress = \"{target_addr}\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
    )?;
    drop(file);
    let (mut child, grpc) = serve::serve(&program, &prefix, &config).await?;
    let pid = child.id();
    let url = format!("http://{grpc}");
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());

    let connect_check_close = |n: u32| {
        let url = url.clone();
        async move {
            for _ in 0..n {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect()
                    .await?;
                HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await?;
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    let open_cancel = |n: u32| {
        let url = url.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)?
                .connect()
                .await?;
            for _ in 0..n {
                let mut watch = HealthClient::new(channel.clone())
                    .watch(HealthCheckRequest::default())
                    .await?
                    .into_inner();
                watch.message().await?;
                drop(watch); // cancels the stream (RST_STREAM)
                let mut detail = DetailClient::new(channel.clone())
                    .watch(DetailRequest::default())
                    .await?
                    .into_inner();
                detail.message().await?;
                drop(detail);
            }
            Ok::<_, Box<dyn std::error::Error>>(())
        }
    };
    // Warm up, then settle: the baseline.
    connect_check_close(1_000).await?;
    open_cancel(1_000).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds0, rss0) = (fds()?, rss_kib(pid)?);

    let started = Instant::now();
    connect_check_close(cycles).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    open_cancel(watches).await?;
    let watch_secs = started.elapsed().as_secs_f64();
    // The last connections close on our side; give the server a moment to see it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (fds1, rss1) = (fds()?, rss_kib(pid)?);
    println!(
        "cycles={cycles} watches={watches} connect_per_sec={:.0} watch_pairs_per_sec={:.0} \
         fds_before={fds0} fds_after={fds1} rss_kib_before={rss0} rss_kib_after={rss1} \
         rss_growth_pct={:.2}",
        f64::from(cycles) / connect_secs,
        f64::from(watches) / watch_secs,
        (rss1 as f64 - rss0 as f64) / rss0 as f64 * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
