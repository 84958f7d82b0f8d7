//! Benchmark helper: gRPC dependencies by Watch versus polled. `watch_probe_bench MODE DEPS
//! SECONDS FLIPS COMMAND [ARGS…]` (MODE `watch` or `background`) serves one tonic-health server
//! on loopback with DEPS + 1 service names, all SERVING, writes a config with DEPS gRPC
//! dependencies (`d0` … one service each, `interval = "5s"`, the MODE given) and one more,
//! `flip`, behind the service `flipped` (fall = rise = 1), runs `COMMAND ARGS… serve --config
//! FILE` (e.g. `taskset -c 0 target/release/healthgate`), waits until everything is SERVING and
//! 10 s more, then:
//!
//! 1. measures the server for SECONDS: CPU share of one core and RSS (the idle cost of DEPS
//!    dependencies: held streams versus a Check every 5 s each);
//! 2. flips `flip` FLIPS times (NOT_SERVING, SERVING, …), each once healthgate's own Watch on
//!    `flipped` has shown the previous one, recording the time from the dependency's status
//!    change to healthgate's Watch message.
//!
//! Prints one `key=value` line.

use std::io::Write;
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::{clock_ticks_per_second, cpu_ticks, rss_kib};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str =
        "usage: watch_probe_bench watch|background DEPS SECONDS FLIPS COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    if mode != "watch" && mode != "background" {
        return Err(USAGE.into());
    }
    let deps: u32 = args.next().ok_or(USAGE)?.parse()?;
    let seconds: u64 = args.next().ok_or(USAGE)?.parse()?;
    let flips: u32 = args.next().ok_or(USAGE)?.parse()?;
    let program = args.next().ok_or(USAGE)?;
    let prefix: Vec<String> = args.collect();

    let (reporter, service) = tonic_health::server::health_reporter();
    for i in 0..deps {
        reporter
            .set_service_status(format!("d{i}"), ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("flip", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = std::env::temp_dir().join(format!("hg-watch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("healthgate.toml");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&config)?);
        writeln!(
            file,
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
             [defaults]\ninterval = \"5s\"\ntimeout = \"1s\"\n"
        )?;
        for i in 0..deps {
            writeln!(
                file,
                "[dependencies.d{i}]\nkind = \"grpc\"\ntarget = \"http://{addr}\"\nservice = \"d{i}\"\nmode = \"{mode}\"\n"
            )?;
        }
        writeln!(
            file,
            "[dependencies.flip]\nkind = \"grpc\"\ntarget = \"http://{addr}\"\nservice = \"flip\"\n\
             mode = \"{mode}\"\nfall = 1\nrise = 1\n\n\
             [services.flipped]\ndependencies = {{ flip = \"critical\" }}\n"
        )?;
    }
    let (mut child, grpc) = serve::serve(&program, &prefix, &config).await?;
    let pid = child.id();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let serving = health
            .check(HealthCheckRequest::default())
            .await
            .is_ok_and(|r| r.into_inner().status() == Wire::Serving);
        if serving {
            break;
        }
        if Instant::now() > deadline {
            return Err("not SERVING within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;

    let tick = clock_ticks_per_second()?;
    let (ticks0, t0) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (ticks1, wall) = (cpu_ticks(pid)?, t0.elapsed());
    let rss = rss_kib(pid)?;
    let cpu_pct = (ticks1 - ticks0) as f64 / tick / wall.as_secs_f64() * 100.0;

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "flipped".into(),
        })
        .await?
        .into_inner();
    let mut current = watch.message().await?.ok_or("the watch ended")?.status;
    let mut latencies = Vec::new();
    for n in 0..flips {
        let (to, expect) = if n % 2 == 0 {
            (ServingStatus::NotServing, Wire::NotServing as i32)
        } else {
            (ServingStatus::Serving, Wire::Serving as i32)
        };
        // Uniformly within the 5 s interval, so a polled dependency's next probe falls anywhere
        // in it (right after a flip was seen, the next probe is a whole interval away).
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..5000))).await;
        let flipped = Instant::now();
        reporter.set_service_status("flip", to).await;
        while current != expect {
            current = tokio::time::timeout(Duration::from_secs(30), watch.message())
                .await??
                .ok_or("the watch ended")?
                .status;
        }
        latencies.push(flipped.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "mode={mode} deps={deps} cpu_pct={cpu_pct:.2} rss_kib={rss} flips={flips} \
         flip_ms_p50={:.1} flip_ms_p99={:.1} flip_ms_max={:.1}",
        at(0.5),
        at(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
