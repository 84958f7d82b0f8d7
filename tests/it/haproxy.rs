//! HAProxy end to end: a real `haproxy` (Debian's 2.6) checks the binary's twin with
//! `option httpchk GET /readyz` and its agent port with `agent-check`, and its own view (`show
//! stat` on the stats socket) follows: DOWN after `fall` failed checks, UP after `rise`, the
//! weight lowered while degraded, out of rotation while healthgate drains. Skipped when haproxy
//! is missing, unless `HEALTHGATE_REQUIRE_TOOLS=1`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Answer, HttpServer, PATIENCE, temp_dir};

fn haproxy() -> Option<PathBuf> {
    let found = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("HEALTHGATE_REQUIRE_TOOLS").is_none(),
            "haproxy is required (apt-get install haproxy)"
        );
        eprintln!("skipped: haproxy missing");
    }
    found
}

/// `show stat` for one server: its `status` and `weight` columns (and the rest, by name).
async fn server_stat(socket: &Path, backend: &str, server: &str) -> HashMap<String, String> {
    let mut unix = tokio::net::UnixStream::connect(socket)
        .await
        .expect("stats socket");
    unix.write_all(b"show stat\n").await.expect("write");
    let mut csv = String::new();
    unix.read_to_string(&mut csv).await.expect("read");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .expect("a CSV header")
        .split(',')
        .collect();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.first() == Some(&backend) && fields.get(1) == Some(&server) {
            return header
                .iter()
                .zip(fields)
                .map(|(k, v)| (k.to_string(), v.to_owned()))
                .collect();
        }
    }
    panic!("no {backend}/{server} in show stat:\n{csv}");
}

/// Polls HAProxy's view until `pred` holds; returns every distinct status seen on the way.
async fn until(
    socket: &Path,
    backend: &str,
    pred: impl Fn(&HashMap<String, String>) -> bool,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let stat = server_stat(socket, backend, "app1").await;
            let status = stat["status"].clone();
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if pred(&stat) {
                return;
            }
            // No event to wait on: HAProxy's view is only readable by asking.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{backend}: never reached the state; seen {seen:?}"));
    seen
}

async fn start_healthgate(config: &str, dir: &Path) -> (Child, SocketAddr, SocketAddr) {
    let file = dir.join("healthgate.toml");
    std::fs::write(&file, config).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_healthgate"))
        .args(["serve", "--config", &file.display().to_string()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let (mut http, mut agent) = (None, None);
    while http.is_none() || agent.is_none() {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a listening line");
        if let Some(a) = line.strip_prefix("http listening on ") {
            http = a.parse().ok();
        } else if let Some(a) = line.strip_prefix("haproxy agent listening on ") {
            agent = a.parse().ok();
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, http.expect("http"), agent.expect("agent"))
}

#[tokio::test]
async fn haproxy_follows_the_twin_and_the_agent_port() {
    let Some(haproxy) = haproxy() else {
        return;
    };
    let dir = temp_dir("haproxy");
    let (db, cache) = (HttpServer::start().await, HttpServer::start().await);
    let config = format!(
        r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
haproxy_agent_listen = "127.0.0.1:0"
haproxy_agent_degraded_weight = 40
drain_delay = "4s"
drain_timeout = "1s"

[dependencies.db]
kind = "http"
url = "{}"
interval = "100ms"
timeout = "90ms"
fall = 1
rise = 1

[dependencies.cache]
kind = "http"
url = "{}"
interval = "100ms"
timeout = "90ms"
fall = 1
rise = 1

[services.readiness]
dependencies = {{ db = "critical", cache = "degrading" }}
"#,
        db.url("/"),
        cache.url("/")
    );
    let (mut healthgate, http, agent) = start_healthgate(&config, &dir).await;
    let socket = dir.join("haproxy.sock");
    // The recipe itself (deploy/haproxy/haproxy.cfg), pointed at this instance.
    let haproxy_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/haproxy.cfg");
    let env = [
        ("HAPROXY_STATS_SOCKET", socket.display().to_string()),
        ("APP", http.to_string()),
        ("HG_ADDR", http.ip().to_string()),
        ("HG_HTTP_PORT", http.port().to_string()),
        ("HG_AGENT_PORT", agent.port().to_string()),
        ("HG_INTER", "150ms".to_owned()),
    ];
    assert_eq!(
        agent.ip(),
        http.ip(),
        "the recipe checks one healthgate address"
    );
    let check = std::process::Command::new(&haproxy)
        .args(["-c", "-f", &haproxy_file.display().to_string()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let _haproxy = Command::new(&haproxy)
        .args(["-db", "-f", &haproxy_file.display().to_string()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("haproxy starts");
    tokio::time::timeout(PATIENCE, async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("haproxy opens its stats socket");

    until(&socket, "app_twin", |s| s["status"] == "UP").await;
    until(&socket, "app_agent", |s| {
        s["status"] == "UP" && s["weight"] == "100"
    })
    .await;

    // Degraded: the twin still passes; the agent asks for 40 %.
    cache.set(Answer {
        status: 503,
        ..Answer::default()
    });
    until(&socket, "app_agent", |s| s["weight"] == "40").await;
    assert_eq!(
        server_stat(&socket, "app_twin", "app1").await["status"],
        "UP"
    );
    cache.set(Answer::default());
    until(&socket, "app_agent", |s| s["weight"] == "100").await;

    // The critical dependency fails: DOWN only after `fall` failed checks.
    db.set(Answer {
        status: 503,
        ..Answer::default()
    });
    let seen = until(&socket, "app_twin", |s| s["status"] == "DOWN").await;
    assert!(
        seen.iter().any(|s| s == "UP 1/3") && seen.iter().any(|s| s == "UP 2/3"),
        "went down through fall = 3: {seen:?}"
    );
    // And back UP after `rise` good checks.
    db.set(Answer::default());
    let seen = until(&socket, "app_twin", |s| s["status"] == "UP").await;
    assert!(
        seen.iter().any(|s| s == "DOWN 1/2"),
        "came up through rise = 2: {seen:?}"
    );

    // SIGTERM: out of rotation (the twin fails, the agent says drain) before healthgate exits.
    let pid = healthgate.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    until(&socket, "app_twin", |s| s["status"] == "DOWN").await;
    until(&socket, "app_agent", |s| s["status"].starts_with("DRAIN")).await;
    assert!(
        healthgate.try_wait().expect("status").is_none(),
        "healthgate still serving while HAProxy took it out"
    );
    assert!(healthgate.wait().await.expect("exits").success());
}
