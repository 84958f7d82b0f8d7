//! The `healthgate` binary, run for real: exit codes, stdout and stderr.

use std::process::Stdio;
use std::time::Duration;

use healthgate::config::ServiceSpec;
use healthgate::grpc::ServeOptions;
use healthgate::{Engine, Health, Impact, Verdict};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{
    Front, PATIENCE, Switch, closed_port, next_line, service_is, temp_dir, terminate,
};

const BIN: &str = env!("CARGO_BIN_EXE_healthgate");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        PATIENCE,
        Command::new(BIN).args(args).env_remove("RUST_LOG").output(),
    )
    .await
    .expect("finished in time")
    .expect("runs");
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn write(name: &str, text: &str) -> String {
    let file = temp_dir("cli").join(name);
    std::fs::write(&file, text).expect("write");
    file.display().to_string()
}

#[tokio::test]
async fn config_validate_lists_every_problem_with_its_key_path_and_exits_2() {
    let file = write(
        "bad.toml",
        "[dependencies.db]\nkind = \"http\"\ntimeout = \"5s\"\ninterval = \"5s\"\ncolor = 1\n[services.ready]\ndependencies = { nope = \"critical\" }\n",
    );
    let out = run(&["config", "validate", &file]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    for expected in [
        "dependencies.db: missing key `url`",
        "dependencies.db: timeout (5s) must be less than interval (5s)",
        "dependencies.db.color: unknown key",
        "services.ready.dependencies.nope: no dependency named \"nope\"",
    ] {
        assert!(
            lines.iter().any(|l| l == &format!("{file}: {expected}")),
            "missing {expected:?} in:\n{}",
            out.stderr
        );
    }
    let good = write(
        "good.toml",
        "[dependencies.db]\nkind = \"tcp\"\naddress = \"127.0.0.1:5432\"\n",
    );
    let out = run(&["config", "validate", &good]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

#[tokio::test]
async fn config_validate_warns_without_failing_when_probing_cannot_keep_on_time() {
    // 3,000 dependencies at 1 s with 500 ms timeouts: 1,500 in flight if all time out.
    let mut text = String::from("[defaults]\ninterval = \"1s\"\ntimeout = \"500ms\"\n");
    for i in 0..3_000 {
        text.push_str(&format!(
            "[dependencies.d{i}]\nkind = \"tcp\"\naddress = \"10.0.0.1:{}\"\n",
            1000 + i
        ));
    }
    let file = write("heavy.toml", &text);
    let out = run(&["config", "validate", &file]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{file}: warning: if every probe ran to its timeout, 1500 would be in flight"
        )),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn serve_with_a_bad_config_exits_2_and_listens_on_nothing() {
    let port = closed_port().await.port();
    let file = write(
        "bad.toml",
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:{port}\"\n[dependencies.db]\nkind = \"http\"\nurl = \"http://h/${{NO_SUCH_VAR}}\"\n"
        ),
    );
    let out = run(&["serve", "--config", &file]).await;
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr.trim(),
        format!("{file}: dependencies.db.url: environment variable NO_SUCH_VAR is not set")
    );
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);
    let out = run(&["serve"]).await;
    assert_eq!(out.code, 2, "usage error: {}", out.stderr);
}

/// A server with `""` healthy and `down` unhealthy.
async fn front() -> (Front, std::sync::Arc<Switch>) {
    let ok = Switch::new();
    let bad = Switch::new();
    bad.set(Verdict::unhealthy("HTTP 503"));
    let handle = Engine::builder()
        .dependency("ok", ok.spec())
        .dependency("bad", bad.spec())
        .service("", ServiceSpec::with_all(["ok"], Impact::Critical))
        .service("down", ServiceSpec::with_all(["bad"], Impact::Critical))
        .start()
        .expect("starts");
    service_is(&handle, "down", Health::Unhealthy).await;
    service_is(&handle, "", Health::Healthy).await;
    (Front::start(handle, ServeOptions::default()).await, bad)
}

#[tokio::test]
async fn check_exit_codes_follow_grpc_health_probe() {
    let (front, _bad) = front().await;
    let addr = front.addr.to_string();
    let out = run(&["check", "--addr", &addr]).await;
    assert_eq!((out.code, out.stdout.trim()), (0, "status: SERVING"));
    let out = run(&["check", "--addr", &addr, "--service", "down"]).await;
    assert_eq!(
        (out.code, out.stderr.trim()),
        (4, "service unhealthy (responded with \"NOT_SERVING\")")
    );
    let out = run(&["check", "--addr", &addr, "--service", "nope"]).await;
    assert_eq!(
        out.code, 3,
        "unknown service is an RPC failure: {}",
        out.stderr
    );
    let refused = closed_port().await.to_string();
    let out = run(&["check", "--addr", &refused]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("connection refused"), "{}", out.stderr);
    let out = run(&["check", "--addr", &addr, "--no-such-flag"]).await;
    assert_eq!(out.code, 1, "bad arguments");
    // grpc_health_probe spelling, as found in existing probe definitions.
    let out = run(&[
        "check",
        &format!("-addr={addr}"),
        "-service=down",
        "-connect-timeout=2s",
        "-rpc-timeout=2s",
    ])
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    // Several services: the worst decides.
    let out = run(&[
        "check",
        "--addr",
        &addr,
        "--service",
        "",
        "--service",
        "down",
    ])
    .await;
    assert_eq!(out.code, 4);
    assert!(
        out.stdout.contains("\"\": status: SERVING"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn check_detail_json_prints_one_object_and_keeps_the_exit_code() {
    let (front, _bad) = front().await;
    let addr = front.addr.to_string();
    let out = run(&[
        "check",
        "--addr",
        &addr,
        "--service",
        "down",
        "--detail",
        "--json",
    ])
    .await;
    assert_eq!(out.code, 4, "exit code as without --detail");
    let json: serde_json::Value =
        serde_json::from_str(&out.stdout).expect("stdout is one JSON object");
    assert!(json["generation"].as_u64().is_some());
    assert_eq!(json["services"][0]["name"], "down");
    assert_eq!(json["services"][0]["health"], "unhealthy");
    assert_eq!(json["services"][0]["serving_status"], "NOT_SERVING");
    assert_eq!(json["services"][0]["deciding"][0], "bad");
    let dep = &json["dependencies"][0];
    assert_eq!(
        (
            dep["name"].as_str(),
            dep["kind"].as_str(),
            dep["reason"].as_str()
        ),
        (Some("bad"), Some("custom"), Some("HTTP 503"))
    );
    assert!(
        dep["latency_ms"].is_number()
            && dep["checked_at"].is_string()
            && dep["consecutive_failures"].as_u64() >= Some(1)
    );
    let table = run(&[
        "check",
        "--addr",
        &addr,
        "--service",
        "",
        "--service",
        "down",
        "--detail",
    ])
    .await;
    assert_eq!(table.code, 4);
    assert!(
        table.stdout.contains("DEPENDENCY") && table.stdout.contains("HTTP 503"),
        "{}",
        table.stdout
    );
}

/// `healthgate ARGS… serve --config FILE`, once it printed its gRPC address.
async fn serve(args: &[&str], file: &str) -> (tokio::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["serve", "--config", file])
        .env_remove("HEALTHGATE_WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = next_line(&mut stdout).await;
    let addr = line
        .strip_prefix("grpc listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    // Keep reading, so a later line never meets a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    (child, addr)
}

#[tokio::test]
async fn serve_prints_its_address_and_drains_on_sigterm() {
    let file = write(
        "ok.toml",
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"200ms\"\ndrain_timeout = \"1s\"\n[services.liveness]\n",
    );
    let (mut child, addr) = serve(&[], &file).await;
    let out = run(&["check", "--addr", &addr, "--service", "liveness"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let took = terminate(&mut child).await;
    assert!(took < Duration::from_secs(3), "drained in {took:?}");
}

#[tokio::test]
async fn demo_shows_healthy_degraded_and_unhealthy_and_recovers() {
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--phase",
            "1s",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut seen = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["dependency"] == "orders-api" && event["to"].is_string() {
                seen.push(event["to"].as_str().unwrap_or_default().to_owned());
            }
            let after = |state: &str, then: &str| {
                seen.iter()
                    .position(|s| s == state)
                    .is_some_and(|i| seen[i..].iter().any(|s| s == then))
            };
            if after("degraded", "unhealthy") && after("unhealthy", "healthy") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(all, Ok(true), "transitions seen: {seen:?}");
}

#[tokio::test]
async fn check_watch_prints_each_status_until_the_stream_ends() {
    let switch = Switch::new();
    let handle = Engine::builder()
        .dependency("db", switch.spec())
        .start()
        .expect("starts");
    service_is(&handle, "", Health::Healthy).await;
    let options = ServeOptions {
        drain_delay: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(1),
        detail_token: None,
        ..ServeOptions::default()
    };
    let mut front = Front::start(handle.clone(), options).await;
    let mut child = Command::new(BIN)
        .args(["check", "--addr", &front.addr.to_string(), "--watch"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = next_line(&mut lines).await;
    assert!(first.ends_with(" status: SERVING"), "{first}");
    switch.set(Verdict::unhealthy("down"));
    let second = next_line(&mut lines).await;
    assert!(second.ends_with(" status: NOT_SERVING"), "{second}");
    front.begin_shutdown(); // the server ends the stream after draining
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits")
        .expect("waited");
    assert_eq!(status.code(), Some(4), "last status was NOT_SERVING");
}

/// How many tokio worker threads (named `tokio-rt-worker`) process `pid` runs (Linux).
#[cfg(target_os = "linux")]
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("linux /proc")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tokio-rt-worker")
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_runs_on_one_thread_unless_worker_threads_asks_for_more() {
    let file = write(
        "threads.toml",
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n[services.liveness]\n",
    );
    for (args, workers) in [(&[][..], 0), (&["--worker-threads", "3"][..], 3)] {
        let (mut child, addr) = serve(args, &file).await;
        let out = run(&["check", "--addr", &addr, "--service", "liveness"]).await;
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        let pid = child.id().expect("running");
        assert_eq!(worker_threads(pid), workers, "{args:?}");
        terminate(&mut child).await;
    }
    let out = run(&["--worker-threads", "0", "serve", "--config", &file]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--worker-threads"), "{}", out.stderr);
}

#[tokio::test]
async fn http_probes_ignore_proxy_environment_variables() {
    let dependency = crate::support::HttpServer::start().await;
    let proxy = format!("http://{}", closed_port().await);
    let file = write(
        "proxied.toml",
        &format!(
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\n[dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n",
            dependency.url("/health")
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config", &file])
        .env_remove("HEALTHGATE_WORKER_THREADS")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env("ALL_PROXY", &proxy)
        .env("all_proxy", &proxy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    // Through the (closed) proxy no request would ever arrive.
    tokio::time::timeout(PATIENCE, async {
        while dependency
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dependency was probed directly");
    terminate(&mut child).await;
}
