//! Benchmark helper: hot reload. `reload_bench DEPS PHASE_SECONDS CYCLES COMMAND [ARGS…]`
//! serves DEPS HTTP dependencies on 127.0.0.1 (paths `/d/0` … `/d/DEPS-1`, `200 ok`, arrival
//! times recorded), writes a config probing each every second, runs `COMMAND ARGS… serve
//! --config FILE` (e.g. `taskset -c 0 target/release/healthgate`), waits until every dependency
//! was probed, then:
//!
//! 1. prints `pid=PID grpc=ADDR` (the server's), and runs CYCLES cycles of two phases of
//!    PHASE_SECONDS each: *quiet* (nothing), then *reloading*: one SIGHUP per second, each half
//!    a second after rewriting the file (atomically, as an editor does) with dependency `d0`'s
//!    URL changed, so every reload replaces one dependency and keeps DEPS − 1. A load generator runs across the
//!    cycles and its requests are told apart by the phase they started in.
//! 2. prints one `key=value` line: signal-to-swap time per reload (from the signal to the
//!    timestamp of the server's `config reloaded` log line, which it writes once the swap is
//!    done), what the server said it kept and replaced, and `early_probes`: intervals between
//!    two probes of an *unchanged* dependency shorter than 80 % of its interval (1 s ± 10 %
//!    jitter cannot make one; a reload that re-probed what it kept would make hundreds).
//! 3. prints one `PHASE START_US END_US CPU_TICKS` line per phase (`quiet` or `reloading`;
//!    microseconds since the Unix epoch, as `h2load --log-file` stamps requests; the server's
//!    user + system clock ticks spent in the phase, from `/proc/PID/stat`).
//!
//! Why the phases alternate: on a shared 2-vCPU machine the server's speed drifts by tens of
//! percent over tens of seconds (two consecutive 10 s quiet phases of the same process, same
//! fixed Check load: p99 1,714 vs 2,045 µs, and 263 vs 367 ticks of CPU for the same work), so a
//! quiet phase followed by a reloading phase measured the drift, not the reloads. Alternating
//! every few seconds puts both phases under the same drift.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::http::{StatusCode, Uri};
use tokio::net::TcpListener;

/// (dependency index, microseconds since the benchmark started) per probe request.
type Arrivals = Arc<Mutex<Vec<(u32, u64)>>>;

fn write_config(path: &std::path::Path, deps: u32, port: u16, version: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(
            file,
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
             [defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\n"
        )?;
        for i in 0..deps {
            // d0 changes with every version: the one dependency each reload replaces.
            let query = if i == 0 {
                format!("?v={version}")
            } else {
                String::new()
            };
            writeln!(
                file,
                "[dependencies.d{i}]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/d/{i}{query}\"\n"
            )?;
        }
        file.flush()?;
    }
    std::fs::rename(tmp, path)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: reload_bench DEPS PHASE_SECONDS CYCLES COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let deps: u32 = args.next().ok_or(USAGE)?.parse()?;
    let phase: u32 = args.next().ok_or(USAGE)?.parse()?;
    let cycles: u32 = args.next().ok_or(USAGE)?.parse()?;
    let command: Vec<String> = args.collect();
    let (program, prefix) = command.split_first().ok_or(USAGE)?;
    if deps < 2 || phase < 1 || cycles < 1 {
        return Err("DEPS must be at least 2, PHASE_SECONDS and CYCLES at least 1".into());
    }

    let started = Instant::now();
    let arrivals: Arrivals = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
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

    let config = std::env::temp_dir().join(format!("reload-bench-{}.toml", std::process::id()));
    write_config(&config, deps, port, 0)?;
    let mut child = Command::new(program)
        .args(prefix)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
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
    // The server's log: every `config reloaded` line, with the time it was read.
    let (lines_tx, mut reloaded) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("config reloaded") || line.contains("config reload rejected") {
                let _ = lines_tx.send(line);
            }
        }
    });

    // Every dependency probed at least twice: past the first round's spread.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = {
            let a = arrivals.lock().unwrap_or_else(|e| e.into_inner());
            let mut count = vec![0u8; deps as usize];
            for &(i, _) in a.iter() {
                if let Some(c) = count.get_mut(i as usize) {
                    *c = c.saturating_add(1);
                }
            }
            count.iter().all(|&c| c >= 2)
        };
        if seen {
            break;
        }
        if Instant::now() > deadline {
            return Err("not every dependency was probed within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("pid={pid} grpc={grpc}");
    let window_start = started.elapsed().as_micros() as u64;

    let epoch_us = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros()
    };
    // The server's user + system clock ticks (fields 14 and 15 of /proc/PID/stat).
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        // Fields after the command start at field 3.
        field(14 - 3).unwrap_or(0) + field(15 - 3).unwrap_or(0)
    };
    let mut phases = Vec::new();
    let mut swap_ms = Vec::new();
    let mut kept = Vec::new();
    let mut replaced = Vec::new();
    // What each reload's preparation cost its thread, and how many tables it parsed.
    let mut prepare_ms = Vec::new();
    let mut parsed = Vec::new();
    let mut version = 0;
    let mut next = Instant::now();
    let mut mark = (SystemTime::now(), cpu_ticks());
    let mut close_phase = |name: &'static str, mark: &mut (SystemTime, u64)| {
        let now = (SystemTime::now(), cpu_ticks());
        phases.push(format!(
            "{name} {} {} {}",
            epoch_us(mark.0),
            epoch_us(now.0),
            now.1.saturating_sub(mark.1)
        ));
        *mark = now;
    };
    // Each version is written half a second before its signal, as an editor saves before
    // anyone signals: the write runs on the load generator's core, and at the signal it would
    // delay the load's own requests in the very window the footprint below counts.
    let ahead = Duration::from_millis(500);
    for _ in 0..cycles {
        next += Duration::from_secs(u64::from(phase));
        tokio::time::sleep_until((next - ahead).into()).await;
        version += 1;
        write_config(&config, deps, port, version)?;
        tokio::time::sleep_until(next.into()).await;
        close_phase("quiet", &mut mark);
        for reload in 0..phase {
            if reload > 0 {
                tokio::time::sleep_until((next - ahead).into()).await;
                version += 1;
                write_config(&config, deps, port, version)?;
                tokio::time::sleep_until(next.into()).await;
            }
            let signalled = SystemTime::now();
            // kill(2) directly: spawning `kill` would fork on the load generator's core.
            let target = rustix::process::Pid::from_raw(pid as i32).ok_or("no server pid")?;
            rustix::process::kill_process(target, rustix::process::Signal::HUP)?;
            let line = tokio::time::timeout(Duration::from_secs(10), reloaded.recv())
                .await?
                .ok_or("the server's log ended")?;
            if line.contains("rejected") {
                return Err(format!("a reload was rejected: {line}").into());
            }
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let swapped = humantime::parse_rfc3339(stamp)?;
            let ms = swapped
                .duration_since(signalled)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0;
            swap_ms.push(ms);
            let field = |key: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX)
            };
            kept.push(field("kept="));
            replaced.push(field("replaced="));
            parsed.push(field("tables_parsed="));
            prepare_ms.push(
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix("prepare_cpu_ms="))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN),
            );
            next += Duration::from_secs(1);
        }
        tokio::time::sleep_until(next.into()).await;
        close_phase("reloading", &mut mark);
    }
    // One more interval, so a probe a late reload caused is in the record.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let window_end = started.elapsed().as_micros() as u64;
    child.kill()?;
    child.wait()?;
    let _ = std::fs::remove_file(&config);

    let mut arrivals = std::mem::take(&mut *arrivals.lock().unwrap_or_else(|e| e.into_inner()));
    arrivals.sort_unstable();
    // Intervals of unchanged dependencies (all but d0) that end inside the cycles.
    let intervals: Vec<u64> = arrivals
        .windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[0].0 != 0)
        .filter(|w| w[1].1 >= window_start && w[1].1 <= window_end)
        .map(|w| w[1].1 - w[0].1)
        .collect();
    let early = intervals.iter().filter(|&&us| us < 800_000).count();
    let shortest_ms = intervals.iter().min().map_or(0.0, |&us| us as f64 / 1000.0);
    let mut sorted = swap_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)];
    let all = |v: &[u64], want: u64| v.iter().all(|&x| x == want);
    prepare_ms.sort_by(f64::total_cmp);
    // The first reload after the start parses the whole file (the start keeps no layout).
    let parsed_after_first = parsed.iter().skip(1).max().copied().unwrap_or(0);
    println!(
        "deps={deps} reloads={} swap_ms_p50={:.1} swap_ms_max={:.1} kept_ok={} replaced_ok={} \
         unchanged_intervals={} early_probes={early} shortest_interval_ms={shortest_ms:.1} \
         prepare_cpu_ms_p50={:.1} tables_parsed_first={} tables_parsed_later_max={parsed_after_first}",
        sorted.len(),
        pct(0.5),
        sorted.last().copied().unwrap_or_default(),
        all(&kept, u64::from(deps - 1)),
        all(&replaced, 1),
        intervals.len(),
        prepare_ms
            .get(prepare_ms.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        parsed.first().copied().unwrap_or(0),
    );
    for line in &phases {
        println!("{line}");
    }
    Ok(())
}
