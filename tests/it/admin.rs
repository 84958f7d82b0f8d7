//! The admin CLI against the real binary: exit codes, audit lines, the token never logged.

use std::process::Stdio;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{
    PATIENCE, channel, closed_port, get_metrics, http_call, serve_file, temp_dir,
};

const ADMIN: &str = "admin-Tok3n-0123456789";

/// `healthgate admin --addr ADDR ARGS…` with `token`: exit code, stdout, stderr.
pub(crate) async fn admin(addr: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"));
    command.args(["admin", "--addr", addr]).args(args);
    command.env_remove("HEALTHGATE_ADMIN_TOKEN");
    if let Some(token) = token {
        command.env("HEALTHGATE_ADMIN_TOKEN", token);
    }
    let out = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("in time")
        .expect("runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn readiness(client: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    crate::support::serving_status(client, "readiness").await
}

#[tokio::test]
async fn the_admin_cli_reports_overrides_clears_and_reloads_with_its_exit_codes() {
    let good = r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "0s"

[admin]
token = "${ADMIN_TOKEN}"

[dependencies.nightly]
kind = "push"
ttl = "1h"

[services.readiness]
dependencies = { nightly = "critical" }
"#;
    let file = temp_dir("admin").join("healthgate.toml");
    std::fs::write(&file, good).expect("write");
    let (mut child, grpc, http) =
        serve_file(&file, &[], &[("ADMIN_TOKEN", ADMIN)], Stdio::piped()).await;
    let addr = grpc.to_string();
    let mut client = HealthClient::new(channel(grpc).await);

    // Bad arguments: 1. No server: 2. Wrong token: 3.
    let (code, _, err) = admin(&addr, None, &["reload"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = admin(&addr, Some(ADMIN), &["report", "nightly", "fine"]).await;
    assert_eq!(code, 1);
    let (code, _, err) = admin(&closed_port().await.to_string(), Some(ADMIN), &["reload"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = admin(&addr, Some("wrong-token-wrong-token"), &["reload"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("admin bearer token"), "{err}");

    let (code, out, err) = admin(&addr, Some(ADMIN), &["report", "nightly", "healthy"]).await;
    assert_eq!((code, out.trim()), (0, "reported nightly"), "{err}");
    assert_eq!(readiness(&mut client).await, ServingStatus::Serving);

    let args = [
        "override",
        "dependency",
        "nightly",
        "unhealthy",
        "--for",
        "10m",
        "--reason",
        "restore test",
    ];
    let (code, out, err) = admin(&addr, Some(ADMIN), &args).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("nightly overridden until 20"), "{out}");
    assert_eq!(readiness(&mut client).await, ServingStatus::NotServing);
    let args = [
        "override",
        "service",
        "readiness",
        "healthy",
        "--for",
        "8d",
        "--reason",
        "x",
    ];
    let (code, _, err) = admin(&addr, Some(ADMIN), &args).await;
    assert_eq!(code, 3);
    assert!(err.contains("maximum"), "{err}");
    let args = [
        "override", "service", "nope", "healthy", "--for", "1m", "--reason", "x",
    ];
    let (code, _, err) = admin(&addr, Some(ADMIN), &args).await;
    assert_eq!(code, 3);
    assert!(err.contains("no service named \"nope\""), "{err}");
    let (code, out, _) = admin(&addr, Some(ADMIN), &["clear", "dependency", "nightly"]).await;
    assert_eq!((code, out.trim()), (0, "override of nightly cleared"));
    assert_eq!(readiness(&mut client).await, ServingStatus::Serving);
    let (_, out, _) = admin(&addr, Some(ADMIN), &["clear", "dependency", "nightly"]).await;
    assert_eq!(out.trim(), "nightly had no override");
    let (code, _, err) = admin(&addr, Some(ADMIN), &["refresh", "nightly"]).await;
    assert_eq!(code, 3);
    assert!(err.contains("nothing to probe"), "{err}");

    // The admin token reports any push dependency over HTTP too.
    let http_addr = http.expect("http");
    let (code, _) = http_call(
        http_addr,
        "POST",
        "/push/nightly?status=degraded",
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = http_call(http_addr, "POST", "/push/nope", Some(ADMIN)).await;
    assert_eq!(code, 404, "operators learn the name is unknown");

    // Reload: a file with problems is refused with every problem, one per line.
    std::fs::write(&file, format!("{good}\n[dependencies.bad]\nkind = \"tcp\"\n[services.x]\ndependencies = {{ gone = \"critical\" }}\n")).expect("write");
    let (code, _, err) = admin(&addr, Some(ADMIN), &["reload"]).await;
    assert_eq!(code, 3);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    assert!(
        lines.iter().all(|l| l.contains("healthgate.toml: ")),
        "{err}"
    );
    std::fs::write(&file, good).expect("write");
    let (code, out, err) = admin(&addr, Some(ADMIN), &["reload"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 added, 0 replaced, 0 removed, 1 kept"),
        "{out}"
    );

    let metrics = get_metrics(http.expect("http")).await;
    assert!(
        metrics.contains(
            "healthgate_grpc_requests_total{method=\"/healthgate.v1.Admin/Reload\",code=\"UNAUTHENTICATED\"} 1"
        ),
        "refusals are counted: {metrics}"
    );
    let logs = crate::support::terminate_and_read_logs(&mut child).await;
    assert!(!logs.contains(ADMIN), "the token is never logged");
    let audit = logs
        .lines()
        .find(|l| l.contains("action=\"override\"") || l.contains("action=override"))
        .unwrap_or_else(|| panic!("an audit line: {logs}"));
    for part in [
        "nightly",
        "unhealthy",
        "restore test",
        "caller=\"127.0.0.1:",
    ] {
        assert!(audit.contains(part), "{part}: {audit}");
    }
    assert!(logs.contains("admin call refused"), "{logs}");
}

#[tokio::test]
async fn runtime_changes_are_a_layer_over_the_file_that_survives_reloads_until_the_file_takes_a_name()
 {
    let web = crate::support::HttpServer::start().await;
    let file_text = |extra: &str| {
        format!(
            r#"
[server]
grpc_listen = "127.0.0.1:0"
drain_delay = "0s"

[admin]
token = "${{ADMIN_TOKEN}}"

[dependencies.file-dep]
kind = "http"
url = "{}"
interval = "1s"
timeout = "500ms"
{extra}"#,
            web.url("/file")
        )
    };
    let file = temp_dir("layer").join("healthgate.toml");
    std::fs::write(&file, file_text("")).expect("write");
    let (mut child, grpc, _) =
        serve_file(&file, &[], &[("ADMIN_TOKEN", ADMIN)], Stdio::piped()).await;
    let addr = grpc.to_string();
    let mut client = HealthClient::new(channel(grpc).await);
    let check = |client: &mut HealthClient<tonic::transport::Channel>, name: &str| {
        let mut client = client.clone();
        let name = name.to_owned();
        async move { client.check(HealthCheckRequest { service: name }).await }
    };

    let spec = format!(
        "kind = \"http\"\nurl = \"{}\"\ninterval = \"1s\"\ntimeout = \"500ms\"",
        web.url("/rt")
    );
    let (code, out, err) = admin(
        &addr,
        Some(ADMIN),
        &["add-dependency", "rt", "--spec", &spec],
    )
    .await;
    assert_eq!(
        (code, out.trim()),
        (0, "added dependency rt; changed service \"\""),
        "{err}"
    );
    let (code, _, err) = admin(
        &addr,
        Some(ADMIN),
        &[
            "set-service",
            "rt-svc",
            "--spec",
            "dependencies = { rt = \"critical\", file-dep = \"degrading\" }",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    tokio::time::timeout(PATIENCE, async {
        while check(&mut client, "rt-svc")
            .await
            .map(|r| r.into_inner().status())
            .ok()
            != Some(ServingStatus::Serving)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the runtime service serves");

    // The file owns its names; a dependency in use stays; a spec is one table.
    let (code, _, err) = admin(
        &addr,
        Some(ADMIN),
        &[
            "add-dependency",
            "file-dep",
            "--spec",
            "kind = \"tcp\"\naddress = \"x:1\"",
        ],
    )
    .await;
    assert_eq!(code, 3);
    assert!(err.contains("defined in the config file"), "{err}");
    let (code, _, err) = admin(&addr, Some(ADMIN), &["remove-dependency", "rt"]).await;
    assert_eq!(code, 3);
    assert!(
        err.contains("services.rt-svc.dependencies.rt: no dependency named \"rt\""),
        "{err}"
    );
    let (code, _, err) = admin(
        &addr,
        Some(ADMIN),
        &[
            "add-dependency",
            "x",
            "--spec",
            "kind = \"tcp\"\naddress = \"x:1\"\n[server]\ngrpc_listen = \"0.0.0.0:1\"",
        ],
    )
    .await;
    assert_eq!(code, 3);
    assert!(err.contains("without [headers]"), "{err}");
    let (code, _, err) = admin(
        &addr,
        Some(ADMIN),
        &["add-dependency", "y", "--spec", "kind = \"tcp\""],
    )
    .await;
    assert_eq!(code, 3);
    assert!(
        err.contains("dependencies.y"),
        "the validator's key paths: {err}"
    );

    let (code, out, _) = admin(&addr, Some(ADMIN), &["show"]).await;
    assert_eq!(code, 0);
    for line in [
        "  rt [runtime] http",
        "  file-dep [file] http",
        "  rt-svc [runtime] { ",
        "every 1s, timeout 500ms, fall 3, rise 2",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }

    let (code, out, err) = admin(&addr, Some(ADMIN), &["refresh", "rt"]).await;
    assert_eq!((code, out.trim()), (0, "probing rt now"), "{err}");

    // A reload keeps the layer.
    let (code, _, err) = admin(&addr, Some(ADMIN), &["reload"]).await;
    assert_eq!(code, 0, "{err}");
    let status = check(&mut client, "rt-svc")
        .await
        .expect("kept")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    // The file takes the name: its definition wins, the runtime one is dropped.
    std::fs::write(
        &file,
        file_text("\n[services.rt-svc]\ndependencies = { file-dep = \"critical\" }\n"),
    )
    .expect("write");
    let (code, _, err) = admin(&addr, Some(ADMIN), &["reload"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = admin(&addr, Some(ADMIN), &["show"]).await;
    assert!(
        out.contains("  rt-svc [file] { file-dep critical }"),
        "{out}"
    );
    assert!(
        out.contains("  rt [runtime]"),
        "the runtime dependency stays: {out}"
    );
    let (code, _, _) = admin(&addr, Some(ADMIN), &["remove-dependency", "rt"]).await;
    assert_eq!(code, 0, "no longer in use");
    let (code, _, err) = admin(&addr, Some(ADMIN), &["remove-service", "rt-svc"]).await;
    assert_eq!(code, 3, "the file's now: {err}");

    let logs = crate::support::terminate_and_read_logs(&mut child).await;
    assert!(logs.contains("its runtime change is dropped"), "{logs}");
    assert!(
        logs.contains("action=\"add-dependency\" name=\"rt\""),
        "{logs}"
    );
}
