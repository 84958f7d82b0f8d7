//! Push dependencies through the real binary, reported over plain HTTP as a cron job would.

use std::process::Stdio;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{channel, http_call, serve_with};

const TOKEN: &str = "nightly-Sekr1t-9876";

async fn readiness(client: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    crate::support::serving_status(client, "readiness").await
}

#[tokio::test]
async fn a_job_reports_with_its_token_and_everyone_else_is_refused() {
    let config = r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "0s"

[dependencies.nightly-backup]
kind = "push"
ttl = "1h"
token = "${NIGHTLY_TOKEN}"

[dependencies.port]
kind = "tcp"
address = "127.0.0.1:9"

[services.readiness]
dependencies = { nightly-backup = "critical" }
"#;
    let (mut child, addr, http) =
        serve_with(config, &[("NIGHTLY_TOKEN", TOKEN)], Stdio::piped()).await;
    let http = http.expect("http");
    let mut client = HealthClient::new(channel(addr).await);
    assert_eq!(
        readiness(&mut client).await,
        ServingStatus::NotServing,
        "no report yet"
    );

    let (code, _) = http_call(http, "POST", "/push/nightly-backup", None).await;
    assert_eq!(code, 401);
    let (code, _) = http_call(http, "POST", "/push/nightly-backup", Some("wrong")).await;
    assert_eq!(code, 401);
    // A dependency's token learns nothing about other names (the admin token gets 404 / 409).
    let (code, _) = http_call(http, "POST", "/push/nope", Some(TOKEN)).await;
    assert_eq!(code, 401);
    let (code, _) = http_call(http, "POST", "/push/port", Some(TOKEN)).await;
    assert_eq!(code, 401);
    let (code, _) = http_call(http, "GET", "/push/nightly-backup", Some(TOKEN)).await;
    assert_eq!(code, 405);
    let (code, body) = http_call(http, "POST", "/push/nightly-backup?state=ok", Some(TOKEN)).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        readiness(&mut client).await,
        ServingStatus::NotServing,
        "refused reports change nothing"
    );

    // A bare POST is a heartbeat.
    let (code, body) = http_call(http, "POST", "/push/nightly-backup", Some(TOKEN)).await;
    assert_eq!((code, body.as_str()), (200, "reported healthy\n"));
    assert_eq!(readiness(&mut client).await, ServingStatus::Serving);

    let (code, _) = http_call(
        http,
        "POST",
        "/push/nightly-backup?status=unhealthy&reason=disk%20full%20on%20%2Fbackup",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(readiness(&mut client).await, ServingStatus::NotServing);
    let (code, body) = http_call(http, "GET", "/readyz?verbose", None).await;
    assert_eq!(code, 503);
    assert!(
        body.contains("[-]nightly-backup failed: reason withheld"),
        "{body}"
    );
    let (_, json) = http_call(http, "GET", "/status.json", None).await;
    assert!(json.contains("\"kind\":\"push\""), "{json}");

    let logs = crate::support::terminate_and_read_logs(&mut child).await;
    assert!(
        !logs.contains(TOKEN),
        "the token never reaches the log: {logs}"
    );
    assert!(
        logs.contains("disk full on /backup"),
        "the reported reason is logged: {logs}"
    );
}
