//! `[server] state_file` through the real binary: overrides, push reports and runtime changes
//! survive a restart and a SIGKILL at any moment; a corrupt file is moved aside.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use healthgate::grpc::pb::admin::admin_client::AdminClient;
use healthgate::grpc::pb::admin::{OverrideRequest, PutRequest, TargetKind};
use healthgate::grpc::pb::detail::Health as WireHealth;
use serde_json::Value;

use crate::admin::admin;
use crate::support::{channel, http_call, serve_file, temp_dir, terminate_and_read_logs};

const ADMIN: &str = "admin-Tok3n-0123456789";
const JOB: &str = "job-t0ken";

fn config(db: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "0s"
state_file = "state.json"

[admin]
token = "${{ADMIN_TOKEN}}"

[dependencies.nightly]
kind = "push"
ttl = "1h"
token = "${{JOB_TOKEN}}"

[dependencies.db]
kind = "tcp"
address = "{db}"
interval = "60s"

[services.readiness]
dependencies = {{ nightly = "critical", db = "critical" }}
"#
    )
}

const ENV: &[(&str, &str)] = &[("ADMIN_TOKEN", ADMIN), ("JOB_TOKEN", JOB)];

/// `/status.json` as JSON.
async fn status(http: std::net::SocketAddr) -> Value {
    let (code, body) = http_call(http, "GET", "/status.json", None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v["name"] == name)
}

async fn kill(child: &mut tokio::process::Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

#[tokio::test]
async fn overrides_reports_and_runtime_changes_survive_a_restart_and_a_corrupt_file_is_moved_aside()
{
    let db = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let db_addr = db.local_addr().expect("addr");
    let dir = temp_dir("state");
    let file = dir.join("healthgate.toml");
    std::fs::write(&file, config(db_addr)).expect("write");
    let state_file = dir.join("state.json");

    let (mut child, grpc, http) = serve_file(&file, &[], ENV, Stdio::null()).await;
    let http = http.expect("http");
    assert!(state_file.exists(), "written once at start");
    let addr = grpc.to_string();
    let ok = |r: (i32, String, String)| assert_eq!(r.0, 0, "{} {}", r.1, r.2);
    ok(admin(
        &addr,
        Some(ADMIN),
        &[
            "override",
            "service",
            "readiness",
            "unhealthy",
            "--for",
            "1h",
            "--reason",
            "drain for upgrade",
        ],
    )
    .await);
    let spec = format!("kind = \"tcp\"\naddress = \"{db_addr}\"\ninterval = \"60s\"");
    ok(admin(
        &addr,
        Some(ADMIN),
        &["add-dependency", "extra", "--spec", &spec],
    )
    .await);
    ok(admin(
        &addr,
        Some(ADMIN),
        &[
            "set-service",
            "web",
            "--spec",
            "dependencies = { extra = \"critical\" }",
        ],
    )
    .await);
    let (code, body) = http_call(
        http,
        "POST",
        "/push/nightly?status=degraded&reason=late%20again",
        Some(JOB),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let before = status(http).await;
    let forced = &named(&before["services"], "readiness").expect("readiness")["override"];
    assert_eq!(forced["reason"], "drain for upgrade");
    // SIGKILL: nothing is flushed at exit; what was answered is already on disk.
    kill(&mut child).await;
    let text = std::fs::read_to_string(&state_file).expect("state");
    assert!(
        text.contains("drain for upgrade") && text.contains("late again"),
        "{text}"
    );
    assert!(
        !text.contains(ADMIN) && !text.contains(JOB),
        "no tokens: {text}"
    );

    let (mut child, grpc, http) = serve_file(&file, &[], ENV, Stdio::null()).await;
    let http = http.expect("http");
    let after = status(http).await;
    let restored = &named(&after["services"], "readiness").expect("readiness")["override"];
    assert_eq!(
        restored, forced,
        "the same override: health, since, until, reason"
    );
    assert!(named(&after["services"], "web").is_some(), "{after}");
    let nightly = named(&after["dependencies"], "nightly").expect("nightly");
    assert_eq!(nightly["health"], "degraded", "{nightly}");
    assert_eq!(nightly["reason"], "late again");
    let (code, out, _) = admin(&grpc.to_string(), Some(ADMIN), &["show"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("  extra [runtime] tcp"), "{out}");
    assert!(out.contains("  web [runtime]"), "{out}");
    terminate_and_read_logs(&mut child).await;

    // A file we did not write: the start goes on without it, and it is kept aside.
    std::fs::write(&state_file, b"{\"version\": 1, \"overrides\": [").expect("corrupt");
    let (mut child, grpc, http) = serve_file(&file, &[], ENV, Stdio::piped()).await;
    let fresh = status(http.expect("http")).await;
    let readiness = named(&fresh["services"], "readiness").expect("readiness");
    assert!(readiness.get("override").is_none(), "{readiness}");
    assert!(named(&fresh["services"], "web").is_none());
    let (_, out, _) = admin(&grpc.to_string(), Some(ADMIN), &["show"]).await;
    assert!(!out.contains("extra"), "{out}");
    let logs = terminate_and_read_logs(&mut child).await;
    assert!(logs.contains("moved aside, starting without it"), "{logs}");
    assert_eq!(
        std::fs::read(dir.join("state.json.corrupt")).expect("kept aside"),
        b"{\"version\": 1, \"overrides\": ["
    );
    let rewritten = std::fs::read(&state_file).expect("a new state file");
    assert!(healthgate::control::state::decode(&rewritten).is_ok());
    drop(db);
}

/// What the server must show after change `n` of the stream below: the override of the last
/// even change, and one runtime dependency per odd change.
fn expected_after(n: i64) -> (Option<String>, Vec<String>) {
    let reason = (0..=n)
        .rev()
        .find(|i| i % 2 == 0)
        .map(|i| format!("change {i}"));
    let mut deps: Vec<String> = (0..=n)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("rt{i}"))
        .collect();
    deps.sort();
    (reason, deps)
}

async fn shown(http: std::net::SocketAddr) -> (Option<String>, Vec<String>) {
    let s = status(http).await;
    let reason = named(&s["services"], "readiness")
        .and_then(|r| r["override"]["reason"].as_str())
        .map(str::to_owned);
    let mut deps: Vec<String> = (s["dependencies"].as_array().expect("list").iter())
        .filter_map(|d| d["name"].as_str())
        .filter(|n| n.starts_with("rt"))
        .map(str::to_owned)
        .collect();
    deps.sort();
    (reason, deps)
}

/// A small xorshift, seeded from the clock: where in the stream each kill lands.
fn random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn sigkill_at_random_moments_never_loses_an_acknowledged_change_or_corrupts_the_file() {
    let db = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let db_addr = db.local_addr().expect("addr");
    let dir = temp_dir("state-kill");
    let file = dir.join("healthgate.toml");
    std::fs::write(&file, config(db_addr)).expect("write");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    let acked = Arc::new(AtomicI64::new(-1));
    let mut next = 0i64;
    for round in 0..8 {
        let (mut child, grpc, http) = serve_file(&file, &[], ENV, Stdio::null()).await;
        let http = http.expect("http");
        // After a restart: the last acknowledged change, or the one in flight at the kill.
        let a = acked.load(Ordering::SeqCst);
        let seen = shown(http).await;
        assert!(
            seen == expected_after(a) || seen == expected_after(a + 1),
            "round {round}: acknowledged up to {a}, the server shows {seen:?}"
        );
        if seen == expected_after(a + 1) {
            acked.store(a + 1, Ordering::SeqCst);
        }
        next = acked.load(Ordering::SeqCst) + 1;
        assert!(
            !dir.join("state.json.corrupt").exists(),
            "round {round}: the file was never unreadable"
        );

        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {ADMIN}").parse().expect("header");
        let mut client =
            AdminClient::with_interceptor(channel(grpc).await, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            });
        let changes = {
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in next.. {
                    let result = if i % 2 == 0 {
                        client
                            .r#override(OverrideRequest {
                                kind: TargetKind::Service as i32,
                                name: "readiness".into(),
                                health: WireHealth::Unhealthy as i32,
                                duration: Some(prost_types::Duration {
                                    seconds: 3600,
                                    nanos: 0,
                                }),
                                reason: format!("change {i}"),
                            })
                            .await
                            .map(drop)
                    } else {
                        client
                            .add_dependency(PutRequest {
                                name: format!("rt{i}"),
                                spec: format!(
                                    "kind = \"tcp\"\naddress = \"{db_addr}\"\ninterval = \"60s\""
                                ),
                            })
                            .await
                            .map(drop)
                    };
                    if result.is_err() {
                        return;
                    }
                    acked.store(i, Ordering::SeqCst);
                }
            })
        };
        // Somewhere in the first 300 ms of changes (a few dozen of them).
        let at = Duration::from_millis(random(&mut seed) % 300);
        tokio::time::sleep(at).await;
        kill(&mut child).await;
        changes
            .await
            .expect("the change stream ends with the server");
        assert!(
            acked.load(Ordering::SeqCst) >= next - 1,
            "round {round}: the stream ran"
        );
    }
    eprintln!("acknowledged {next} changes");
    assert!(
        next > 8,
        "changes were acknowledged across the rounds: {next}"
    );
    drop(db);
}

#[tokio::test]
async fn sigkill_during_reloads_always_restarts_and_the_state_file_stays_whole() {
    let db = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let db_addr = db.local_addr().expect("addr");
    let dir = temp_dir("state-kill-reload");
    let file = dir.join("healthgate.toml");
    let base = config(db_addr);
    // Two versions of the file: the second defines `rt` itself, which drops the runtime `rt`
    // (the file wins) — so reloads also write the state file.
    let with_rt = format!(
        "{base}\n[dependencies.rt]\nkind = \"tcp\"\naddress = \"{db_addr}\"\ninterval = \"60s\"\n"
    );
    std::fs::write(&file, &base).expect("write");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    for round in 0..8 {
        // Every restart succeeds (serve_file waits for the listening lines), whatever moment
        // the last run died at.
        let (mut child, grpc, _) = serve_file(&file, &[], ENV, Stdio::null()).await;
        let state = std::fs::read(dir.join("state.json")).expect("written at start");
        healthgate::control::state::decode(&state)
            .unwrap_or_else(|e| panic!("round {round}: the state file is not whole: {e}"));
        assert!(
            !dir.join("state.json.corrupt").exists(),
            "round {round}: the file was never unreadable"
        );
        // A runtime change, so there is something for a reload to drop and write.
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {ADMIN}").parse().expect("header");
        let mut client =
            AdminClient::with_interceptor(channel(grpc).await, move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert("authorization", bearer.clone());
                Ok(r)
            });
        let _ = client
            .add_dependency(PutRequest {
                name: "rt".into(),
                spec: format!("kind = \"tcp\"\naddress = \"{db_addr}\"\ninterval = \"60s\""),
            })
            .await;
        // Reloads as fast as they go, each after an atomic rewrite of the file (as editors and
        // ConfigMap updates do), and a SIGKILL somewhere among them.
        let pid = child.id().expect("running") as i32;
        let reloads = {
            let (file, base, with_rt) = (file.clone(), base.clone(), with_rt.clone());
            tokio::spawn(async move {
                for n in 0u32.. {
                    let tmp = file.with_extension("tmp");
                    std::fs::write(&tmp, if n % 2 == 0 { &with_rt } else { &base }).expect("write");
                    std::fs::rename(&tmp, &file).expect("rename");
                    let Some(target) = rustix::process::Pid::from_raw(pid) else {
                        return;
                    };
                    if rustix::process::kill_process(target, rustix::process::Signal::HUP).is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let at = Duration::from_millis(random(&mut seed) % 300);
        tokio::time::sleep(at).await;
        // Stop signalling first (a pid is not signalled after it could be reused); the
        // server is still in the middle of the reloads already sent.
        reloads.abort();
        let _ = reloads.await;
        kill(&mut child).await;
    }
}
