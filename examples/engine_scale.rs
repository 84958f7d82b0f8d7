//! Benchmark helper: engine scale. `engine_scale DEPS SECONDS HOSTS COMMAND [ARGS…]` serves
//! DEPS HTTP dependencies on loopback (paths `/d/0` … `/d/DEPS-1`, all `200 ok`, arrival times
//! recorded) — with HOSTS `one`, all on 127.0.0.1 (the probes share keep-alive connections);
//! with HOSTS `distinct`, each on its own loopback address 127.x.y.z (listening on the
//! wildcard address), so each has its own connection, as dependencies on different hosts
//! would — writes a config probing each one every second (default jitter), runs
//! `COMMAND ARGS… serve --config FILE` (e.g. `taskset -c 0 target/release/healthgate`), lets it
//! warm up for 10 s (`WARM_UP_SECONDS` to change it), then measures it for SECONDS: CPU share of one core, RSS at the start and
//! the end of the window, open file descriptors (keep-alive connections) at the end, and every
//! dependency's interval between probe arrivals. Prints one `key=value` line.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::{clock_ticks_per_second, cpu_ticks, rss_kib};

use axum::Router;
use axum::http::{StatusCode, Uri};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Seconds between start and the measured window, unless `WARM_UP_SECONDS` says otherwise.
const WARM_UP_DEFAULT: u64 = 10;

/// (dependency index, microseconds since the benchmark started) per probe request.
type Arrivals = Arc<Mutex<Vec<(u32, u64)>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: engine_scale DEPS SECONDS one|distinct COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let deps: u32 = args.next().ok_or(USAGE)?.parse()?;
    let seconds: u64 = args.next().ok_or(USAGE)?.parse()?;
    let distinct = match args.next().as_deref() {
        Some("one") => false,
        Some("distinct") => true,
        _ => return Err(USAGE.into()),
    };
    let command: Vec<String> = args.collect();
    let (program, prefix) = command.split_first().ok_or(USAGE)?;

    let started = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let listener = TcpListener::bind(if distinct { "0.0.0.0:0" } else { "127.0.0.1:0" }).await?;
    let port = listener.local_addr()?.port();
    // 127.0.0.1 for every dependency, or 127.0.0.2, 127.0.0.3, … one each.
    let host = |i: u32| -> std::net::Ipv4Addr {
        if distinct {
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 0, 2)) + i)
        } else {
            std::net::Ipv4Addr::LOCALHOST
        }
    };
    let recorder = arrivals.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let recorder = recorder.clone();
        async move {
            let index = uri.path().strip_prefix("/d/").and_then(|i| i.parse().ok());
            if let Some(index) = index {
                let at = started.elapsed().as_micros() as u64;
                recorder
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((index, at));
            }
            (StatusCode::OK, "ok")
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = std::env::temp_dir().join(format!("engine-scale-{}.toml", std::process::id()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&config)?);
        writeln!(
            file,
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n"
        )?;
        writeln!(file, "[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"")?;
        // ENGINE_SCALE_JITTER: another jitter than the default (for experiments).
        if let Ok(jitter) = std::env::var("ENGINE_SCALE_JITTER") {
            writeln!(file, "jitter = {jitter}")?;
        }
        writeln!(file)?;
        // ENGINE_SCALE_DEPENDENCY_TOML: more keys for every dependency (e.g. `keep_alive = false`).
        let extra = std::env::var("ENGINE_SCALE_DEPENDENCY_TOML").unwrap_or_default();
        for i in 0..deps {
            writeln!(
                file,
                "[dependencies.d{i}]\nkind = \"http\"\nurl = \"http://{}:{port}/d/{i}\"\n{extra}\n",
                host(i)
            )?;
        }
        if deps == 0 {
            writeln!(file, "[services.liveness]")?;
        }
    }

    let spawned = Instant::now();
    let (mut child, grpc) = serve::serve(program, prefix, &config).await?;
    let pid = child.id();
    let listening_ms = spawned.elapsed().as_secs_f64() * 1000.0;

    let warm_up = std::env::var("WARM_UP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(WARM_UP_DEFAULT);
    tokio::time::sleep(Duration::from_secs(warm_up).saturating_sub(spawned.elapsed())).await;
    let window_start = started.elapsed().as_micros() as u64;
    let (ticks0, rss0) = (cpu_ticks(pid)?, rss_kib(pid)?);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (ticks1, rss1) = (cpu_ticks(pid)?, rss_kib(pid)?);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let wall = t0.elapsed();
    let window_end = started.elapsed().as_micros() as u64;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status();
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_file(&config);

    let tick = 1.0 / clock_ticks_per_second()?;
    let cpu_pct = (ticks1 - ticks0) as f64 * tick / wall.as_secs_f64() * 100.0;

    // Intervals between consecutive probes of the same dependency, inside the window.
    let mut arrivals = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|e| e.into_inner()));
    arrivals.sort_unstable();
    let mut intervals: Vec<u64> = arrivals
        .windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[0].1 >= window_start && w[1].1 <= window_end)
        .map(|w| w[1].1 - w[0].1)
        .collect();
    intervals.sort_unstable();
    let probed = {
        let mut seen: Vec<u32> = arrivals
            .iter()
            .filter(|a| a.1 >= window_start)
            .map(|a| a.0)
            .collect();
        seen.dedup();
        seen.len()
    };
    let pct = |q: f64| -> f64 {
        if intervals.is_empty() {
            return 0.0;
        }
        let i = ((q * intervals.len() as f64) as usize).min(intervals.len() - 1);
        intervals[i] as f64 / 1000.0
    };
    println!(
        "deps={deps} hosts={} listening_ms={listening_ms:.1} cpu_pct={cpu_pct:.2} rss_kib_start={rss0} \
         rss_kib_end={rss1} probed={probed} probes={} interval_ms_p1={:.1} interval_ms_p50={:.1} \
         interval_ms_p99={:.1} interval_ms_max={:.1} fds={fds} serving={}",
        if distinct { "distinct" } else { "one" },
        intervals.len(),
        pct(0.01),
        pct(0.5),
        pct(0.99),
        intervals.last().map_or(0.0, |&v| v as f64 / 1000.0),
        status == ServingStatus::Serving,
    );
    Ok(())
}
