//! Benchmark helper: Watch fan-out.
//! `watch_fanout ADDR WATCHERS CONNS FLIPS SERVER_PID FLIP_PID`
//!
//! Opens WATCHERS grpc.health.v1 Watch streams on service `""` over CONNS connections to the
//! server at ADDR (process SERVER_PID), then FLIPS times sends SIGUSR1 to FLIP_PID — which
//! makes `""` change (the peers flip it themselves; for healthgate it is the dependency
//! `""` relies on) — and waits until every stream has seen the new status before the next.
//! Prints one `key=value` line:
//! - `rss_kib_idle`, `rss_kib_watching`, `bytes_per_watcher`: server RSS before connecting and
//!   with every stream open and answered, and the difference per watcher;
//! - `cpu_us_per_msg`: server CPU during the flips, less its idle rate with the streams open,
//!   per delivered message (CPU from `/proc/PID/task/*/schedstat`, nanoseconds);
//! - `first_ms_*`: from the signal to the first stream seeing the change (includes the flip
//!   itself: healthgate's probe interval, the peers' signal handling);
//! - `spread_ms_p50/p99/max`: from the first stream seeing a change to each other stream
//!   seeing it — the fan-out itself;
//! - `converged`: flips on which every stream saw the new status (must equal FLIPS).

use std::time::{Duration, Instant};

#[path = "support/proc.rs"]
mod proc;
use proc::rss_kib;

use tokio::sync::mpsc;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long one flip may take to reach every stream before it counts as not converged.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: watch_fanout ADDR WATCHERS CONNS FLIPS SERVER_PID FLIP_PID";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, watchers, conns, flips, server, flipper] = &args[..] else {
        return Err(USAGE.into());
    };
    let (watchers, conns, flips): (usize, usize, usize) =
        (watchers.parse()?, conns.parse()?, flips.parse()?);
    let (server, flipper): (u32, u32) = (server.parse()?, flipper.parse()?);

    let rss_idle = rss_kib(server)?;
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    // Every message any stream receives: (stream, status, when).
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, i32, Instant)>();
    for i in 0..watchers {
        let mut client = HealthClient::new(channels[i % conns].clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(response) = client.watch(HealthCheckRequest::default()).await else {
                return;
            };
            let mut stream = response.into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if tx.send((i, message.status, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // Every stream at SERVING before the first flip (a server may pass through NOT_SERVING
    // while starting).
    let serving = ServingStatus::Serving as i32;
    let mut status = vec![-1; watchers];
    let mut at_serving = 0;
    while at_serving < watchers {
        let (i, s, _) = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .map_err(|_| "not every stream reached SERVING")?
            .ok_or("streams ended before answering")?;
        if s == serving && status[i] != serving {
            at_serving += 1;
        } else if s != serving && status[i] == serving {
            at_serving -= 1;
        }
        status[i] = s;
    }
    // Let allocations settle, then the idle rate with every stream open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_watching = rss_kib(server)?;
    let (idle_ns0, idle_t0) = (cpu_ns(server)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rate = (cpu_ns(server)? - idle_ns0) as f64 / idle_t0.elapsed().as_secs_f64();

    let mut firsts = Vec::with_capacity(flips);
    let mut spreads = Vec::with_capacity(flips * watchers);
    let mut converged = 0;
    let mut delivered = 0u64;
    let (ns0, t0) = (cpu_ns(server)?, Instant::now());
    for flip in 0..flips {
        let want = if flip % 2 == 0 {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        } as i32;
        let signalled = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-USR1", &flipper.to_string()])
            .status()?;
        if !killed.success() {
            return Err("kill -USR1 failed".into());
        }
        let mut first: Option<Instant> = None;
        let mut have = status.iter().filter(|s| **s == want).count();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while have < watchers {
            let Ok(Some((i, s, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            delivered += 1;
            if s == want && status[i] != want {
                have += 1;
                let first = *first.get_or_insert(at);
                spreads.push(at.duration_since(first));
            }
            status[i] = s;
        }
        if have == watchers {
            converged += 1;
        }
        if let Some(first) = first {
            firsts.push(first.duration_since(signalled));
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let net_ns = (cpu_ns(server)? - ns0) as f64 - idle_rate * elapsed;

    firsts.sort_unstable();
    spreads.sort_unstable();
    let ms = |v: &[Duration], q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v[((q * v.len() as f64) as usize).min(v.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "watchers={watchers} conns={conns} flips={flips} converged={converged} \
         delivered={delivered} rss_kib_idle={rss_idle} rss_kib_watching={rss_watching} \
         bytes_per_watcher={:.0} cpu_us_per_msg={:.2} idle_cpu_pct={:.2} first_ms_p50={:.2} \
         first_ms_max={:.2} spread_ms_p50={:.2} spread_ms_p99={:.2} spread_ms_max={:.2}",
        (rss_watching.saturating_sub(rss_idle) * 1024) as f64 / watchers as f64,
        net_ns / 1000.0 / delivered.max(1) as f64,
        idle_rate / 1e7,
        ms(&firsts, 0.5),
        ms(&firsts, 1.0),
        ms(&spreads, 0.5),
        ms(&spreads, 0.99),
        ms(&spreads, 1.0),
    );
    Ok(())
}

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between listing and reading.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .ok_or("bad schedstat")?
            .parse::<u64>()?;
    }
    Ok(total)
}
