//! Trace export, end to end: the real binary exports over OTLP/gRPC to an in-process receiver
//! (the OpenTelemetry collector's TraceService), and the HTTP dependency receives the probe's
//! `traceparent`. Also: a black-holed collector changes nothing that matters.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{
    HttpServer, PATIENCE, channel, get_metrics, serve_with, silent_server, terminate,
};

/// Collects every exported span, with its resource's `service.name`.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("not poisoned");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let collector = Collector::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()));
        tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
        (collector, addr)
    }

    /// Waits for a span matching `pred`.
    async fn span_where(&self, pred: impl Fn(&Span) -> bool) -> Span {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some((_, s)) = self
                    .spans
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .find(|(_, s)| pred(s))
                {
                    return s.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no such span among {} received",
                self.spans.lock().expect("not poisoned").len()
            )
        })
    }
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn serve(config: &str) -> (Child, SocketAddr) {
    let (child, addr, _) = serve_with(config, &[], Stdio::null()).await;
    (child, addr)
}

fn config(dependency: SocketAddr, telemetry: &str) -> String {
    format!(
        r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "0s"
drain_timeout = "1s"

[telemetry]
{telemetry}

[dependencies.api]
kind = "http"
url = "http://probe:CANARY-PW-1@{dependency}/health?token=CANARY-Q-2"
headers = {{ Authorization = "Bearer CANARY-H-3" }}
interval = "100ms"
timeout = "50ms"
jitter = 0.0
"#
    )
}

#[tokio::test]
async fn probe_and_rpc_spans_arrive_over_otlp_and_the_dependency_joins_the_trace() {
    let (collector, collector_addr) = Collector::start().await;
    let dependency = HttpServer::start().await;
    let telemetry = format!(
        "otlp_endpoint = \"http://{collector_addr}\"\nservice_name = \"hg-test\"\nexport_timeout = \"2s\""
    );
    let (mut child, addr) = serve(&config(dependency.addr, &telemetry)).await;

    // The traceparent the dependency received names a trace that arrives at the collector.
    let traceparent = tokio::time::timeout(PATIENCE, async {
        loop {
            let seen = dependency
                .last_headers
                .lock()
                .expect("not poisoned")
                .as_ref()
                .and_then(|h| h.get("traceparent").cloned());
            if let Some(v) = seen {
                return v.to_str().expect("ascii").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dependency received a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[3]),
        (4, "00", "01"),
        "{traceparent}"
    );
    let probe = collector.span_where(|s| hex(&s.trace_id) == parts[1]).await;
    assert_eq!(probe.name, "probe");
    assert_eq!(
        hex(&probe.span_id),
        parts[2],
        "the traceparent names the probe span itself"
    );
    assert_eq!(
        attr(&probe.attributes, "dependency").as_deref(),
        Some("api")
    );
    assert_eq!(attr(&probe.attributes, "kind").as_deref(), Some("http"));
    assert_eq!(
        attr(&probe.attributes, "health").as_deref(),
        Some("healthy")
    );
    assert!(attr(&probe.attributes, "latency_ms").is_some_and(|l| l.parse::<f64>().is_ok()));

    // The first outcome made the dependency healthy: that transition is an event of a probe span.
    let first = collector
        .span_where(|s| s.name == "probe" && s.events.iter().any(|e| e.name == "health got better"))
        .await;
    let event = first
        .events
        .iter()
        .find(|e| e.name == "health got better")
        .expect("found above");
    assert_eq!(attr(&event.attributes, "to").as_deref(), Some("healthy"));

    // A failing run: span status error, with the sanitized reason.
    dependency.set(crate::support::Answer {
        status: 503,
        ..Default::default()
    });
    let failed = collector
        .span_where(|s| {
            s.name == "probe" && attr(&s.attributes, "health").as_deref() == Some("unhealthy")
        })
        .await;
    assert_eq!(
        attr(&failed.attributes, "reason").as_deref(),
        Some("HTTP 503")
    );
    let status = failed.status.as_ref().expect("status set");
    assert_eq!(status.code, 2, "STATUS_CODE_ERROR");

    // An RPC on our server has its own span, following the RPC semantic conventions.
    let mut client = HealthClient::new(channel(addr).await);
    client
        .check(HealthCheckRequest::default())
        .await
        .expect("check");
    let rpc = collector
        .span_where(|s| s.name == "grpc.health.v1.Health/Check")
        .await;
    assert_eq!(attr(&rpc.attributes, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(&rpc.attributes, "rpc.service").as_deref(),
        Some("grpc.health.v1.Health")
    );
    assert_eq!(
        attr(&rpc.attributes, "rpc.method").as_deref(),
        Some("Check")
    );
    assert_eq!(
        attr(&rpc.attributes, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );

    terminate(&mut child).await;
    let spans = collector.spans.lock().expect("not poisoned");
    assert!(
        spans.iter().all(|(service, _)| service == "hg-test"),
        "service.name from [telemetry]"
    );
    let everything = format!("{:?}", *spans);
    for canary in ["CANARY-PW-1", "CANARY-Q-2", "CANARY-H-3"] {
        assert!(
            !everything.contains(canary),
            "{canary} leaked into an exported span"
        );
    }
}

/// Probe runs per second and the median Check latency of a running server.
async fn measure(dependency: &HttpServer, addr: SocketAddr) -> (f64, Duration) {
    let mut client = HealthClient::new(channel(addr).await);
    let before = dependency
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("check");
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = dependency
        .requests
        .load(std::sync::atomic::Ordering::SeqCst)
        - before;
    latencies.sort();
    (
        runs as f64 / started.elapsed().as_secs_f64(),
        latencies[latencies.len() / 2],
    )
}

#[tokio::test]
async fn a_black_holed_collector_changes_neither_check_latency_nor_probe_cadence_nor_exit() {
    let dependency = HttpServer::start().await;
    let (mut baseline, addr) = serve(&config(dependency.addr, "")).await;
    let (base_rate, base_check) = measure(&dependency, addr).await;
    terminate(&mut baseline).await;

    // Accepts connections and never answers: every export hangs until its timeout.
    let hole = silent_server().await;
    let export_timeout = Duration::from_millis(500);
    let telemetry =
        format!("otlp_endpoint = \"http://{hole}\"\nexport_timeout = \"500ms\"\nqueue_size = 64");
    let (mut child, addr, http) =
        serve_with(&config(dependency.addr, &telemetry), &[], Stdio::null()).await;
    let (rate, check) = measure(&dependency, addr).await;
    let scraped = get_metrics(http.expect("http_listen set")).await;
    let dropped: u64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix("healthgate_dropped_spans_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the dropped-spans counter");
    let exit = terminate(&mut child).await;
    assert!(
        dropped > 0,
        "spans that could not be exported were counted as dropped"
    );

    assert!(
        rate >= base_rate * 0.7,
        "probe cadence {rate:.1}/s against {base_rate:.1}/s without telemetry"
    );
    assert!(
        check <= base_check * 3 + Duration::from_millis(2),
        "median Check {check:?} against {base_check:?}"
    );
    // drain_delay 0 + at most the export timeout for the final flush, plus process slack.
    assert!(
        exit < export_timeout + Duration::from_millis(1500),
        "exit took {exit:?}"
    );
}

#[tokio::test]
async fn the_standard_otel_variables_enable_export_without_a_telemetry_section() {
    let (collector, collector_addr) = Collector::start().await;
    let dependency = HttpServer::start().await;
    let endpoint = format!("http://{collector_addr}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_SERVICE_NAME", "from-env"),
    ];
    let (mut child, _, _) = serve_with(&config(dependency.addr, ""), &env, Stdio::null()).await;
    collector.span_where(|s| s.name == "probe").await;
    terminate(&mut child).await;
    let spans = collector.spans.lock().expect("not poisoned");
    assert!(
        spans.iter().all(|(service, _)| service == "from-env"),
        "service.name from OTEL_SERVICE_NAME"
    );
}

#[tokio::test]
async fn logs_at_trace_level_carry_no_secrets() {
    let (collector, collector_addr) = Collector::start().await;
    let dependency = HttpServer::start().await;
    dependency.set(crate::support::Answer {
        status: 503,
        ..Default::default()
    });
    // User info in the collector's endpoint, and `${ENV}` values in a URL's host, port, path
    // and a query part without `=`.
    let endpoint = format!("http://otel:CANARY-OTLP-6@{collector_addr}");
    let port = dependency.addr.port().to_string();
    let env = [
        ("RUST_LOG", "trace"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("CANARY_HOST", "127.0.0.1"),
        ("CANARY_PORT", port.as_str()),
        ("CANARY_PATH", "CANARY-PATH-7"),
        ("CANARY_RAW", "CANARY-RAW-8"),
    ];
    let config = format!(
        "{}\n[dependencies.from-env]\nkind = \"http\"\n\
         url = \"http://${{CANARY_HOST}}:${{CANARY_PORT}}/${{CANARY_PATH}}?${{CANARY_RAW}}\"\n\
         interval = \"100ms\"\ntimeout = \"50ms\"\njitter = 0.0\n",
        config(dependency.addr, "")
    );
    let (mut child, addr, http) = serve_with(&config, &env, Stdio::piped()).await;
    // Read as it comes: trace logs would fill the pipe and block the server.
    let mut stderr = child.stderr.take().expect("piped");
    let logs = tokio::spawn(async move {
        let mut logs = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut logs)
            .await
            .expect("read logs");
        logs
    });
    collector.span_where(|s| s.name == "probe").await;
    // Several failing rounds (each probe logged at debug), the transition warnings, the drain.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let detail = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"))
        .args(["check", "--addr", &addr.to_string(), "--detail", "--json"])
        .output()
        .await
        .expect("check runs");
    let metrics = crate::support::get_metrics(http.expect("http_listen is set")).await;
    assert!(metrics.contains("dependency=\"from-env\""), "{metrics}");
    terminate(&mut child).await;
    let logs = logs.await.expect("reader");
    assert!(
        logs.contains("probe finished")
            && logs.contains("health got worse")
            && logs.contains("exporting traces over OTLP"),
        "trace logs were written:\n{logs}"
    );
    // Transitions carry the fields every other line uses, and a service says why.
    let worse: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("health got worse"))
        .collect();
    assert!(
        worse
            .iter()
            .any(|l| l.contains("dependency=api") && l.contains("reason=HTTP 503")),
        "{worse:?}"
    );
    assert!(
        worse
            .iter()
            .any(|l| l.contains("service=\"\"") && l.contains("api: HTTP 503")),
        "{worse:?}"
    );
    let detail = String::from_utf8_lossy(&detail.stdout);
    assert!(
        detail.contains("http://${CANARY_HOST}:${CANARY_PORT}/${CANARY_PATH}?[redacted]"),
        "the target shows the variables: {detail}"
    );
    let spans = format!("{:?}", collector.spans.lock().expect("not poisoned"));
    for canary in [
        "CANARY-PW-1",
        "CANARY-Q-2",
        "CANARY-H-3",
        "CANARY-OTLP-6",
        "CANARY-PATH-7",
        "CANARY-RAW-8",
    ] {
        assert!(!logs.contains(canary), "{canary} leaked into the logs");
        assert!(!detail.contains(canary), "{canary} leaked into the detail");
        assert!(!spans.contains(canary), "{canary} leaked into the spans");
        assert!(
            !metrics.contains(canary),
            "{canary} leaked into the metrics"
        );
    }
    // The values were used: the dependency saw the expanded path.
    assert!(
        dependency
            .paths()
            .iter()
            .any(|p| p == "/CANARY-PATH-7?CANARY-RAW-8"),
        "requests: {:?}",
        dependency.paths()
    );
}

#[tokio::test]
async fn grpc_probes_send_the_traceparent_of_their_span() {
    let (collector, collector_addr) = Collector::start().await;
    let (grpc, _reporter, seen) = crate::probe_grpc::health_server().await;
    let telemetry = format!("otlp_endpoint = \"http://{collector_addr}\"\nexport_timeout = \"2s\"");
    let toml = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n[telemetry]\n{telemetry}\n\
         [dependencies.inventory]\nkind = \"grpc\"\ntarget = \"http://{grpc}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\njitter = 0.0\n"
    );
    let (mut child, _) = serve(&toml).await;
    let traceparent = tokio::time::timeout(PATIENCE, async {
        loop {
            let value = seen.lock().expect("not poisoned").as_ref().and_then(|m| {
                m.get("traceparent")
                    .map(|v| v.to_str().expect("ascii").to_owned())
            });
            if let Some(v) = value {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the gRPC dependency received a traceparent");
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .expect("a trace id")
        .to_owned();
    let probe = collector.span_where(|s| hex(&s.trace_id) == trace_id).await;
    assert_eq!(
        (
            probe.name.as_str(),
            attr(&probe.attributes, "kind").as_deref()
        ),
        ("probe", Some("grpc"))
    );
    terminate(&mut child).await;
}
