//! Reliability helper: the soak. `soak WATCHERS SECONDS COMMAND [ARGS…]` serves one HTTP
//! dependency on loopback, runs `COMMAND ARGS… serve --config FILE` (e.g. `taskset -c 0
//! target/release/healthgate`) probing it every 100 ms (fall = rise = 1), opens WATCHERS Watch
//! streams on `""` (100 per connection), and then flips the dependency once a second for
//! SECONDS. 900 ms after each flip it counts the watchers whose latest status is the new one.
//! The server's RSS and open file descriptors are read after the first minute (the baseline)
//! and at the end.
//!
//! Prints one `key=value` line: flips, flips where every watcher converged, the fewest
//! converged on any flip, and RSS and fds at the baseline and at the end (RELIABILITY.md: every
//! watcher on every flip, RSS and fds flat within 2 %).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::rss_kib;

use axum::Router;
use axum::http::StatusCode;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: soak WATCHERS SECONDS COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let watchers: usize = args.next().ok_or(USAGE)?.parse()?;
    let seconds: u64 = args.next().ok_or(USAGE)?.parse()?;
    let program = args.next().ok_or(USAGE)?;
    let prefix: Vec<String> = args.collect();

    let up = Arc::new(AtomicBool::new(true));
    let answer = up.clone();
    let app = Router::new().route(
        "/health",
        axum::routing::get(move || {
            let up = answer.load(Ordering::Relaxed);
            async move {
                if up {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dep = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("hg-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("healthgate.toml");
    writeln!(
        std::fs::File::create(&config)?,
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
         [dependencies.dep]\nkind = \"http\"\nurl = \"http://{dep}/health\"\n\
         interval = \"100ms\"\ntimeout = \"80ms\"\nfall = 1\nrise = 1\njitter = 0.0\n"
    )?;
    let (mut child, grpc) = serve::serve(&program, &prefix, &config).await?;
    let pid = child.id();
    let url = format!("http://{grpc}");

    // Each watcher's latest status (the wire enum), -1 before the first message.
    let latest: Arc<Vec<AtomicI32>> = Arc::new((0..watchers).map(|_| AtomicI32::new(-1)).collect());
    let mut channel = None;
    for i in 0..watchers {
        if i % 100 == 0 {
            channel = Some(
                tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect()
                    .await?,
            );
        }
        let client = HealthClient::new(channel.clone().ok_or("a channel")?);
        let latest = latest.clone();
        tokio::spawn(async move {
            let mut client = client;
            let Ok(response) = client.watch(HealthCheckRequest::default()).await else {
                return;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(m)) = stream.message().await {
                latest[i].store(m.status, Ordering::Relaxed);
            }
        });
    }
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());

    let started = Instant::now();
    let (mut flips, mut all_converged, mut fewest) = (0u64, 0u64, usize::MAX);
    let mut baseline = None;
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        next += Duration::from_secs(1);
        let now_up = !up.load(Ordering::Relaxed);
        up.store(now_up, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(900)).await;
        let expected = if now_up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        } as i32;
        let converged = latest
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == expected)
            .count();
        flips += 1;
        if converged == watchers {
            all_converged += 1;
        }
        fewest = fewest.min(converged);
        if baseline.is_none() && started.elapsed() >= Duration::from_secs(60) {
            baseline = Some((rss_kib(pid)?, fds()?));
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let (rss1, fds1) = (rss_kib(pid)?, fds()?);
    let (rss0, fds0) = baseline.unwrap_or((rss1, fds1));
    println!(
        "watchers={watchers} seconds={seconds} flips={flips} all_converged={all_converged} \
         fewest_converged={fewest} rss_kib_baseline={rss0} rss_kib_end={rss1} \
         rss_growth_pct={:.2} fds_baseline={fds0} fds_end={fds1}",
        (rss1 as f64 - rss0 as f64) / rss0 as f64 * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
