//! Reliability helper: drain under load. `drain_load WATCHERS LOADERS COMMAND [ARGS…]` runs
//! `COMMAND ARGS… serve --config FILE` (e.g. `taskset -c 0 target/release/healthgate`) with
//! `drain_delay = "2s"` and `drain_timeout = "3s"`, opens WATCHERS Watch streams (100 per
//! connection), runs LOADERS connections each calling Check back to back, then sends SIGTERM
//! and records:
//!
//! - Check/s before the signal;
//! - the last SERVING answer, relative to the signal (answers that left before it can arrive
//!   just after it; nothing may say SERVING once the server has seen the signal);
//! - how many watchers got NOT_SERVING, and how long after the signal the last one did;
//! - when the process exited (must be within drain_delay + drain_timeout = 5 s).
//!
//! Prints one `key=value` line.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "support/serve.rs"]
mod serve;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: drain_load WATCHERS LOADERS COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let watchers: usize = args.next().ok_or(USAGE)?.parse()?;
    let loaders: usize = args.next().ok_or(USAGE)?.parse()?;
    let program = args.next().ok_or(USAGE)?;
    let prefix: Vec<String> = args.collect();

    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let target_addr = target.local_addr()?;
    tokio::spawn(async move { while target.accept().await.is_ok() {} });
    let dir = std::env::temp_dir().join(format!("hg-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("healthgate.toml");
    writeln!(
        std::fs::File::create(&config)?,
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"2s\"\ndrain_timeout = \"3s\"\n\n\
         [dependencies.db]\nkind = \"tcp\"\naddress = \"{target_addr}\"\ninterval = \"1s\"\n\
         timeout = \"500ms\"\n"
    )?;
    let (mut child, grpc) = serve::serve(&program, &prefix, &config).await?;
    let pid = child.id();
    let url = format!("http://{grpc}");
    let connect = || async {
        tonic::transport::Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
    };
    // SERVING first.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let serving = HealthClient::new(connect().await?)
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving);
        if serving {
            break;
        }
        if Instant::now() > deadline {
            return Err("not SERVING within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let epoch = Instant::now();
    let micros = move || epoch.elapsed().as_micros() as u64;
    // Watchers: each records when it saw NOT_SERVING.
    let not_serving_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(100) {
        channels.push(connect().await?);
    }
    for i in 0..watchers {
        let channel = channels[i / 100].clone();
        let seen = not_serving_at.clone();
        let mut stream = HealthClient::new(channel)
            .watch(HealthCheckRequest::default())
            .await?
            .into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if m.status() == ServingStatus::NotServing {
                    seen.lock().expect("not poisoned").push(micros());
                    return;
                }
            }
        });
    }
    // Load: Check back to back; the latest SERVING answer's arrival.
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let last_serving = Arc::new(AtomicU64::new(0));
    for _ in 0..loaders {
        let mut client = HealthClient::new(connect().await?);
        let (stop, checks, last_serving) = (stop.clone(), checks.clone(), last_serving.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.check(HealthCheckRequest::default()).await {
                    Ok(r) => {
                        checks.fetch_add(1, Ordering::Relaxed);
                        if r.into_inner().status() == ServingStatus::Serving {
                            last_serving.fetch_max(micros(), Ordering::Relaxed);
                        }
                    }
                    Err(_) => return, // the server went away: drained
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c0, t0) = (checks.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rate = (checks.load(Ordering::Relaxed) - c0) as f64 / t0.elapsed().as_secs_f64();

    let signalled = micros();
    let target = rustix::process::Pid::from_raw(pid as i32).ok_or("no pid")?;
    rustix::process::kill_process(target, rustix::process::Signal::TERM)?;
    let exited = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        micros()
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let seen = not_serving_at.lock().expect("not poisoned").clone();
    let last_watcher = seen.iter().max().copied().unwrap_or(0);
    let ms = |t: u64| (t as f64 - signalled as f64) / 1000.0;
    println!(
        "watchers={watchers} loaders={loaders} checks_per_sec={rate:.0} \
         last_serving_ms={:.1} watchers_not_serving={} last_watcher_ms={:.1} exit_ms={:.0}",
        ms(last_serving.load(Ordering::Relaxed)),
        seen.len(),
        ms(last_watcher),
        ms(exited),
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
