//! `/metrics` over real HTTP: the series the issue names, runtime changes reflected, label
//! cardinality bounded, no secrets.

use std::sync::Arc;

use healthgate::config::ServiceSpec;
use healthgate::grpc::ServeOptions;
use healthgate::metrics::Metrics;
use healthgate::{Config, Engine, Health, Impact, Verdict};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{Front, HttpServer, PATIENCE, Switch, service_is, state_where};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let response = crate::support::get_metrics(addr).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

async fn serve_metrics(metrics: Arc<Metrics>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(
        async move { axum::serve(listener, healthgate::http::metrics_router(metrics)).await },
    );
    addr
}

fn series<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test]
async fn metrics_cover_dependencies_services_rpcs_and_streams() {
    let metrics = Arc::new(Metrics::new());
    let switch = Switch::new();
    let handle = Engine::builder()
        .dependency("db", switch.spec())
        .service("readiness", ServiceSpec::with_all(["db"], Impact::Critical))
        .metrics(metrics.clone())
        .start()
        .expect("starts");
    service_is(&handle, "readiness", Health::Healthy).await;
    switch.set(Verdict::unhealthy("HTTP 503"));
    service_is(&handle, "readiness", Health::Unhealthy).await;
    let front = Front::start(
        handle.clone(),
        ServeOptions {
            metrics: Some(metrics.clone()),
            ..ServeOptions::default()
        },
    )
    .await;
    let mut client = HealthClient::new(front.channel().await);
    client
        .check(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .expect("check");
    client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect_err("unknown");
    let mut watch = client
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("ok").expect("first");
    // An unknown path is counted, under one shared label.
    let mut raw = tonic::client::Grpc::new(front.channel().await);
    raw.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/made.up.Service/Method");
    let _ = raw
        .unary::<_, HealthCheckRequest, _>(
            tonic::Request::new(HealthCheckRequest::default()),
            path,
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default(),
        )
        .await;

    let addr = serve_metrics(metrics.clone()).await;
    let text = scrape(addr).await;
    assert_eq!(
        series(&text, "healthgate_dependency_health{"),
        ["healthgate_dependency_health{dependency=\"db\"} 3"]
    );
    assert!(
        text.contains("healthgate_service_health{service=\"readiness\"} 3"),
        "{text}"
    );
    assert!(text.contains("healthgate_service_serving{service=\"readiness\"} 0"));
    assert!(text.contains("healthgate_service_serving{service=\"\"} 0"));
    assert!(
        text.contains(
            "healthgate_dependency_transitions_total{dependency=\"db\",to=\"unhealthy\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "healthgate_service_transitions_total{service=\"readiness\",to=\"unhealthy\"} 1"
    ));
    assert!(
        !series(
            &text,
            "healthgate_probe_duration_seconds_count{dependency=\"db\",outcome=\"unhealthy\"}"
        )
        .is_empty()
    );
    assert!(
        text.contains(
            "healthgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("healthgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Check\",code=\"NOT_FOUND\"} 1"));
    assert!(
        text.contains("healthgate_grpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1"),
        "{text}"
    );
    assert!(text.contains("healthgate_watch_streams{method=\"/grpc.health.v1.Health/Watch\"} 1"));
    assert!(text.contains("healthgate_dropped_spans_total 0"));
    assert!(text.contains(&format!(
        "healthgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // A cancelled Watch is no longer counted as open, and is counted as CANCELLED.
    drop(watch);
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = scrape(addr).await;
            if text.contains("healthgate_watch_streams{method=\"/grpc.health.v1.Health/Watch\"} 0")
            {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stream closed");
    assert!(closed.contains("healthgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Watch\",code=\"CANCELLED\"} 1"), "{closed}");
}

#[tokio::test]
async fn runtime_added_and_removed_dependencies_appear_and_disappear() {
    let metrics = Arc::new(Metrics::new());
    let handle = Engine::builder()
        .metrics(metrics.clone())
        .start()
        .expect("starts");
    let addr = serve_metrics(metrics.clone()).await;
    let switch = Switch::new();
    handle
        .add_dependency("cache", switch.spec())
        .await
        .expect("added");
    handle
        .set_service("reads", ServiceSpec::with_all(["cache"], Impact::Degrading))
        .await
        .expect("service");
    state_where(&handle, "cache", |d| d.health == Health::Healthy).await;
    let text = scrape(addr).await;
    assert!(
        text.contains("healthgate_dependency_health{dependency=\"cache\"} 0"),
        "{text}"
    );
    assert!(text.contains("healthgate_service_health{service=\"reads\"} 0"));
    handle.remove_service("reads").await.expect("removed");
    handle.remove_dependency("cache").await.expect("removed");
    let text = scrape(addr).await;
    assert!(
        !text.contains("dependency=\"cache\""),
        "every series of the removed dependency is gone: {text}"
    );
    assert!(!text.contains("service=\"reads\""), "{text}");
}

#[tokio::test]
async fn an_active_override_has_its_expiry_as_a_gauge_and_no_series_after() {
    use healthgate::engine::Target;
    let metrics = Arc::new(Metrics::new());
    let switch = Switch::new();
    let handle = Engine::builder()
        .dependency("db", switch.spec())
        .service("readiness", ServiceSpec::with_all(["db"], Impact::Critical))
        .metrics(metrics.clone())
        .start()
        .expect("starts");
    let addr = serve_metrics(metrics.clone()).await;
    let hour = std::time::Duration::from_secs(3600);
    let forced = handle
        .set_override(
            Target::Dependency("db".into()),
            Health::Unhealthy,
            hour,
            "drain",
        )
        .await
        .expect("set");
    handle
        .set_override(
            Target::Service("readiness".into()),
            Health::Healthy,
            hour,
            "mute",
        )
        .await
        .expect("set");
    let until = forced
        .until
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let text = scrape(addr).await;
    assert!(
        text.contains(&format!(
            "healthgate_dependency_override_expiry_timestamp_seconds{{dependency=\"db\"}} {until}"
        )),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "healthgate_service_override_expiry_timestamp_seconds{"
        )
        .len(),
        1,
        "{text}"
    );
    assert!(text.contains("healthgate_dependency_health{dependency=\"db\"} 3"));
    handle
        .clear_override(Target::Dependency("db".into()))
        .await
        .expect("cleared");
    handle
        .clear_override(Target::Service("readiness".into()))
        .await
        .expect("cleared");
    let text = scrape(addr).await;
    assert!(
        !text.contains("override_expiry_timestamp_seconds{"),
        "{text}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn metrics_carry_names_never_urls_reasons_or_secrets() {
    let server = HttpServer::start().await;
    server.set(crate::support::Answer {
        status: 503,
        body: "CANARY-BODY-6".into(),
        ..Default::default()
    });
    let toml = format!(
        "[dependencies.api]\nkind = \"http\"\nurl = \"http://u:CANARY-PW-1@{}/h?token=CANARY-Q-2\"\n\
         headers = {{ Authorization = \"Bearer CANARY-H-3\" }}\ninterval = \"1s\"\ntimeout = \"500ms\"\njitter = 0.0\n",
        server.addr
    );
    let config = Config::from_toml_with_env(&toml, &|_| None).expect("valid");
    let metrics = Arc::new(Metrics::new());
    let handle = Engine::from_config(&config)
        .metrics(metrics.clone())
        .start()
        .expect("starts");
    state_where(&handle, "api", |d| d.last_outcome.is_some()).await;
    for text in [metrics.encode(), healthgate::http::encode_classic(&metrics)] {
        for leak in ["CANARY", "127.0.0.1", "HTTP 503", "/h"] {
            assert!(!text.contains(leak), "{leak} in metrics:\n{text}");
        }
    }
    handle.shutdown().await;
}
