//! Config reload through the real binary: SIGHUP with a broken file changes nothing (every
//! problem logged, counted); with a good one, unchanged dependencies keep their state and
//! schedule, services appear to and vanish from open Watch streams, in one step.

use std::process::Stdio;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use healthgate::grpc::pb::detail::detail_client::DetailClient;
use healthgate::grpc::pb::detail::{ConfigInfo, DetailRequest};

use crate::support::{HttpServer, PATIENCE, channel, get_metrics, serve_file, temp_dir};

fn sha256(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn config_info(addr: std::net::SocketAddr) -> ConfigInfo {
    let mut detail = DetailClient::new(channel(addr).await);
    let response = detail
        .get(DetailRequest::default())
        .await
        .expect("detail")
        .into_inner();
    response.config.expect("serve from a file shows its config")
}

fn config(dependencies: &[(&str, &HttpServer, &str)], services: &str) -> String {
    let mut text = String::from(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n",
    );
    for (name, server, interval) in dependencies {
        text.push_str(&format!(
            "[dependencies.{name}]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"{interval}\"\n\
             timeout = \"500ms\"\njitter = 0.0\nrise = 1\nfall = 1\n\n",
            server.url(&format!("/{name}"))
        ));
    }
    text + services
}

/// Every stderr line of the child, as it comes.
fn log_lines(child: &mut tokio::process::Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a log line containing `needle`; returns it with the lines before it.
async fn line_with(logs: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = logs.recv().await {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return;
            }
        }
        panic!("the log ended before {needle:?}: {seen:#?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
    seen
}

fn hup(child: &tokio::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().expect("running").to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

async fn next_status(stream: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    let message = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("a message");
    message.status()
}

#[tokio::test]
async fn sighup_applies_a_good_file_in_one_step_and_a_bad_one_changes_nothing() {
    let (kept, changed, added) = (
        HttpServer::start().await,
        HttpServer::start().await,
        HttpServer::start().await,
    );
    let file = temp_dir("reload").join("healthgate.toml");
    // `kept` is probed once a minute: any probe after the first would be the reload's doing.
    std::fs::write(
        &file,
        config(
            &[("kept", &kept, "60s"), ("changed", &changed, "1s")],
            "[services.readiness]\ndependencies = { kept = \"critical\" }\n\n\
             [services.old]\ndependencies = { changed = \"critical\" }\n",
        ),
    )
    .expect("write");
    let (mut child, addr, http) = serve_file(&file, &[], &[], Stdio::piped()).await;
    let http = http.expect("http listener");
    let mut logs = log_lines(&mut child);
    let mut client = HealthClient::new(channel(addr).await);
    let watch = |name: &str| HealthCheckRequest {
        service: name.to_owned(),
    };
    let mut old = client
        .watch(watch("old"))
        .await
        .expect("watch")
        .into_inner();
    let mut new = client
        .watch(watch("new"))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut new).await, ServingStatus::ServiceUnknown);
    let mut first = next_status(&mut old).await;
    while first != ServingStatus::Serving {
        first = next_status(&mut old).await;
    }
    tokio::time::timeout(PATIENCE, async {
        while kept.paths().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("kept probed once");
    let first_hash = sha256(&file);
    let info = config_info(addr).await;
    assert_eq!(
        (info.hash.as_str(), info.last_error.as_str()),
        (first_hash.as_str(), "")
    );

    // A broken file: two problems, both logged with the file and key; nothing changes.
    std::fs::write(
        &file,
        config(
            &[("kept", &kept, "60s"), ("fast", &added, "100ms")],
            "[services.readiness]\ndependencies = { kept = \"critical\", gone = \"critical\" }\n",
        ),
    )
    .expect("write");
    hup(&child);
    let mut lines = line_with(&mut logs, "dependencies.fast").await;
    lines.extend(line_with(&mut logs, "services.readiness").await);
    let rejected: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("config reload rejected") && l.contains("healthgate.toml"))
        .collect();
    assert_eq!(rejected.len(), 2, "{lines:#?}");
    let text = get_metrics(http).await;
    assert_eq!(
        metric(&text, "healthgate_config_reloads_total{result=\"failure\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "healthgate_config_last_reload_successful"),
        Some(0.0)
    );
    let info = config_info(addr).await;
    assert_eq!(
        info.hash, first_hash,
        "the config in force is still the first"
    );
    assert!(
        info.last_error.contains("dependencies.fast") && info.last_error.contains("gone"),
        "{}",
        info.last_error
    );
    let check = |name: &str| {
        let mut client = client.clone();
        let name = name.to_owned();
        async move { client.check(HealthCheckRequest { service: name }).await }
    };
    assert_eq!(
        check("old")
            .await
            .expect("still there")
            .into_inner()
            .status(),
        ServingStatus::Serving
    );

    // A good file: `kept` unchanged, `changed` probes another path, `added` is new; service
    // `old` goes, `new` comes.
    let probes_of_changed = changed.paths().len();
    std::fs::write(
        &file,
        config(
            &[
                ("kept", &kept, "60s"),
                ("changed", &changed, "2s"),
                ("added", &added, "1s"),
            ],
            "[services.readiness]\ndependencies = { kept = \"critical\" }\n\n\
             [services.new]\ndependencies = { added = \"critical\", changed = \"critical\" }\n",
        ),
    )
    .expect("write");
    hup(&child);
    let lines = line_with(&mut logs, "config reloaded").await;
    let reloaded = lines.last().expect("the line");
    for field in [
        "added=1",
        "replaced=1",
        "removed=0",
        "kept=1",
        "services_removed=1",
    ] {
        assert!(reloaded.contains(field), "{field}: {reloaded}");
    }
    assert_eq!(next_status(&mut old).await, ServingStatus::ServiceUnknown);
    let mut status = next_status(&mut new).await;
    while status != ServingStatus::Serving {
        status = next_status(&mut new).await;
    }
    assert_eq!(
        check("old").await.expect_err("removed").code(),
        Code::NotFound
    );
    assert_eq!(
        check("readiness")
            .await
            .expect("kept")
            .into_inner()
            .status(),
        ServingStatus::Serving
    );
    assert!(!added.paths().is_empty(), "the new dependency is probed");
    assert!(
        changed.paths().len() > probes_of_changed,
        "the changed one too"
    );
    assert_eq!(
        kept.paths().len(),
        1,
        "the unchanged one is not probed again"
    );
    let text = get_metrics(http).await;
    assert_eq!(
        metric(&text, "healthgate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "healthgate_config_last_reload_successful"),
        Some(1.0)
    );
    let info = config_info(addr).await;
    assert_eq!((info.hash, info.last_error), (sha256(&file), String::new()));
    assert!(
        metric(
            &text,
            "healthgate_config_last_reload_success_timestamp_seconds"
        )
        .is_some_and(|t| t > 1.7e9),
        "{text}"
    );
    crate::support::terminate(&mut child).await;
}

/// A reload parses only the dependency tables whose text changed, the first one after the
/// start included (the start keeps the file's layout); a change elsewhere parses the whole file.
#[tokio::test]
async fn a_reload_parses_only_the_dependency_tables_that_changed() {
    let (a, b, c) = (
        HttpServer::start().await,
        HttpServer::start().await,
        HttpServer::start().await,
    );
    let file = temp_dir("reload-parsed").join("healthgate.toml");
    let write = |b_interval: &str, services: &str| {
        let deps = [("a", &a, "60s"), ("b", &b, b_interval), ("c", &c, "60s")];
        std::fs::write(&file, config(&deps, services)).expect("write");
    };
    write("60s", "");
    let (mut child, _addr, _http) = serve_file(&file, &[], &[], Stdio::piped()).await;
    let mut logs = log_lines(&mut child);
    let service = "[services.s]\ndependencies = { a = \"critical\" }\n";
    for (b_interval, services, says) in [
        ("30s", "", ["tables_parsed=1", "replaced=1", "kept=2"]),
        (
            "30s",
            service,
            ["tables_parsed=3", "kept=3", "services_added=1"],
        ),
        ("20s", service, ["tables_parsed=1", "replaced=1", "kept=2"]),
    ] {
        write(b_interval, services);
        hup(&child);
        let lines = line_with(&mut logs, "config reloaded").await;
        let reloaded = lines.last().expect("the line");
        for field in says {
            assert!(reloaded.contains(field), "{field}: {reloaded}");
        }
    }
    crate::support::terminate(&mut child).await;
}

/// A Kubernetes ConfigMap volume's update: the file is a symlink through `..data`, which is
/// swapped to a new directory and the old one removed.
fn configmap_update(dir: &std::path::Path, version: u32, text: &str) {
    let data = dir.join(format!("..2026_12_02_{version}"));
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("healthgate.toml"), text).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().expect("named"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    if version > 1 {
        std::fs::remove_dir_all(dir.join(format!("..2026_12_02_{}", version - 1))).expect("rm");
    }
}

#[tokio::test]
async fn watch_config_follows_a_configmap_swap_and_reports_a_broken_file_once() {
    let db = HttpServer::start().await;
    let dir = temp_dir("configmap");
    let one = config(&[("db", &db, "1s")], "");
    configmap_update(&dir, 1, &one);
    let file = dir.join("healthgate.toml");
    std::os::unix::fs::symlink("..data/healthgate.toml", &file).expect("symlink");
    let (mut child, addr, _) = serve_file(&file, &["--watch-config"], &[], Stdio::piped()).await;
    let mut logs = log_lines(&mut child);
    let mut client = HealthClient::new(channel(addr).await);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "readiness".to_owned(),
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::ServiceUnknown);

    let broken = format!("{one}[services.readiness]\ndependencies = {{ nope = \"critical\" }}\n");
    configmap_update(&dir, 2, &broken);
    let lines = line_with(&mut logs, "config reload rejected").await;
    assert!(
        lines.last().expect("line").contains("file watch"),
        "{lines:?}"
    );
    // Another event in the directory, the same broken content: not tried again. (An absence
    // can only be observed for a while: 1 s is five debounce periods.)
    std::fs::write(dir.join("unrelated"), "x").expect("write");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let two = format!("{one}[services.readiness]\ndependencies = {{ db = \"critical\" }}\n");
    configmap_update(&dir, 3, &two);
    let lines = line_with(&mut logs, "config reloaded").await;
    assert!(
        !lines.iter().any(|l| l.contains("rejected")),
        "the broken version is reported once: {lines:#?}"
    );
    assert!(
        lines
            .last()
            .expect("line")
            .contains("trigger=\"file watch\"")
    );
    let mut status = next_status(&mut watch).await;
    while status != ServingStatus::Serving {
        status = next_status(&mut watch).await;
    }
    crate::support::terminate(&mut child).await;
}
