//! grpc.health.v1 and the detail service, served for real on 127.0.0.1:0 and driven by tonic
//! clients (tonic-health's, and our generated ones for List and Detail).

use std::time::Duration;

use healthgate::config::{DegradedPolicy, ServiceSpec};
use healthgate::grpc::ServeOptions;
use healthgate::grpc::pb::detail::detail_client::DetailClient;
use healthgate::grpc::pb::detail::{DetailRequest, Health as PbHealth};
use healthgate::grpc::pb::health::HealthListRequest;
use healthgate::grpc::pb::health::health_client::HealthClient as OurHealthClient;
use healthgate::{Engine, Handle, Health, Impact, Verdict};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::support::{Front, PATIENCE, Switch, service_is};

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

/// An engine with one switchable dependency `db` behind `""` (critical), `lenient` (degraded
/// serves), `strict` (degraded does not) and `liveness`.
async fn engine(switch: &std::sync::Arc<Switch>) -> Handle {
    let critical = ServiceSpec::with_all(["db"], Impact::Critical);
    let handle = Engine::builder()
        .dependency("db", switch.spec())
        .service("", critical.clone())
        .service("lenient", critical.clone())
        .service(
            "strict",
            ServiceSpec {
                degraded: DegradedPolicy::NotServing,
                ..critical
            },
        )
        .service("liveness", ServiceSpec::default())
        .start()
        .expect("starts");
    service_is(&handle, "", Health::Healthy).await;
    handle
}

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> (ServingStatus, String) {
    let response = client.check(request(service)).await.expect("check answers");
    let state = response
        .metadata()
        .get("x-health-state")
        .expect("x-health-state sent")
        .to_str()
        .expect("ascii")
        .to_owned();
    (response.into_inner().status(), state)
}

#[tokio::test]
async fn check_maps_health_to_serving_status_with_the_three_state_in_metadata() {
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let mut client = HealthClient::new(front.channel().await);

    assert_eq!(
        check(&mut client, "").await,
        (ServingStatus::Serving, "healthy".into())
    );
    assert_eq!(
        check(&mut client, "liveness").await,
        (ServingStatus::Serving, "healthy".into())
    );

    switch.set(Verdict::degraded("HTTP 429"));
    service_is(&handle, "lenient", Health::Degraded).await;
    assert_eq!(
        check(&mut client, "lenient").await,
        (ServingStatus::Serving, "degraded".into())
    );
    assert_eq!(
        check(&mut client, "strict").await,
        (ServingStatus::NotServing, "degraded".into())
    );

    switch.set(Verdict::unhealthy("down"));
    service_is(&handle, "", Health::Unhealthy).await;
    assert_eq!(
        check(&mut client, "").await,
        (ServingStatus::NotServing, "unhealthy".into())
    );
    assert_eq!(
        check(&mut client, "liveness").await,
        (ServingStatus::Serving, "healthy".into()),
        "liveness ignores dependencies"
    );
}

#[tokio::test]
async fn check_of_an_unknown_or_differently_cased_name_is_not_found() {
    let switch = Switch::new();
    let front = Front::start(engine(&switch).await, ServeOptions::default()).await;
    let mut client = HealthClient::new(front.channel().await);
    for name in ["nope", "Liveness", "liveness "] {
        let status = client.check(request(name)).await.expect_err("unknown");
        assert_eq!(
            (status.code(), status.message()),
            (Code::NotFound, "unknown service"),
            "{name:?}"
        );
    }
}

/// Reads the next message within PATIENCE.
async fn next(stream: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .expect("stream healthy")
        .expect("stream open")
        .status()
}

#[tokio::test]
async fn watch_sends_the_current_status_then_only_changes_of_wire_status() {
    // Plain requests take the fast path; gzip-compressed ones go through tonic's HealthService.
    for compressed in [false, true] {
        watch_sends_changes_of_wire_status(compressed).await;
    }
}

async fn watch_sends_changes_of_wire_status(compressed: bool) {
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let mut client = HealthClient::new(front.channel().await);
    if compressed {
        client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    }
    let response = client.watch(request("lenient")).await.expect("watch");
    assert_eq!(
        response.metadata().get("x-health-state").expect("sent"),
        "healthy"
    );
    let mut stream = response.into_inner();
    assert_eq!(next(&mut stream).await, ServingStatus::Serving);

    // Healthy → Degraded on a lenient service is SERVING → SERVING: nothing is sent.
    switch.set(Verdict::degraded("slow"));
    service_is(&handle, "lenient", Health::Degraded).await;
    switch.set(Verdict::unhealthy("down"));
    assert_eq!(
        next(&mut stream).await,
        ServingStatus::NotServing,
        "the degraded flip sent nothing"
    );
    switch.set(Verdict::Healthy);
    assert_eq!(next(&mut stream).await, ServingStatus::Serving);
}

#[tokio::test]
async fn watch_of_an_unknown_name_stays_open_and_follows_the_name_appearing_and_vanishing() {
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let mut client = HealthClient::new(front.channel().await);
    let mut stream = client
        .watch(request("later"))
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(next(&mut stream).await, ServingStatus::ServiceUnknown);
    handle
        .set_service("later", ServiceSpec::with_all(["db"], Impact::Critical))
        .await
        .expect("added");
    assert_eq!(next(&mut stream).await, ServingStatus::Serving);
    handle.remove_service("later").await.expect("removed");
    assert_eq!(next(&mut stream).await, ServingStatus::ServiceUnknown);
}

#[tokio::test]
async fn list_returns_every_name_and_refuses_more_than_100() {
    let handle = Engine::builder().start().expect("starts");
    for i in 1..100 {
        handle
            .set_service(format!("svc-{i:03}"), ServiceSpec::default())
            .await
            .expect("added");
    }
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let mut client = OurHealthClient::new(front.channel().await);
    let list = client
        .list(HealthListRequest {})
        .await
        .expect("100 names is fine")
        .into_inner();
    assert_eq!(list.statuses.len(), 100);
    assert!(
        list.statuses.contains_key(""),
        "the overall service is listed"
    );
    assert_eq!(
        list.statuses["svc-001"].status,
        ServingStatus::Serving as i32
    );
    handle
        .set_service("svc-100", ServiceSpec::default())
        .await
        .expect("added");
    let status = client
        .list(HealthListRequest {})
        .await
        .expect_err("101 names");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn detail_explains_why_with_health_in_the_body() {
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let options = ServeOptions {
        detail_token: Some("s3cret-token".into()),
        ..ServeOptions::default()
    };
    let front = Front::start(handle.clone(), options).await;
    switch.set(Verdict::unhealthy("HTTP 503"));
    service_is(&handle, "strict", Health::Unhealthy).await;

    let mut detail = DetailClient::new(front.channel().await);
    let denied = detail
        .get(DetailRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(denied.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(DetailRequest::default());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("ascii"));
    assert_eq!(
        detail.get(wrong).await.expect_err("wrong token").code(),
        Code::Unauthenticated
    );

    let mut request = tonic::Request::new(DetailRequest {
        services: vec!["strict".into()],
        history: false,
    });
    // RFC 9110: the scheme is case-insensitive, followed by one or more spaces.
    request.metadata_mut().insert(
        "authorization",
        "bearer   s3cret-token".parse().expect("ascii"),
    );
    let response = detail
        .get(request)
        .await
        .expect("health is in the body, status OK")
        .into_inner();
    assert_eq!(response.services.len(), 1);
    let strict = &response.services[0];
    assert_eq!(
        (strict.health, strict.deciding.as_slice()),
        (PbHealth::Unhealthy as i32, &["db".to_owned()][..])
    );
    assert_eq!(strict.serving_status, ServingStatus::NotServing as i32);
    let db = &response.dependencies[0];
    assert_eq!((db.name.as_str(), db.kind.as_str()), ("db", "custom"));
    let outcome = db.last_outcome.as_ref().expect("probed");
    assert_eq!(outcome.reason, "HTTP 503");
    assert!(db.consecutive_failures >= 1 && db.last_failure.is_some() && db.last_success.is_some());
    assert_eq!(db.thresholds.as_ref().expect("sent").fall, 1);
    assert!(db.used_by.iter().any(|u| u.service == "strict"));

    // The standard health service never asks for the token.
    let mut health = HealthClient::new(front.channel().await);
    assert_eq!(
        check(&mut health, "strict").await.0,
        ServingStatus::NotServing
    );
}

#[tokio::test]
async fn detail_watch_sends_state_at_once_then_on_health_or_reason_changes_only() {
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let mut detail = DetailClient::new(front.channel().await);
    let mut stream = detail
        .watch(DetailRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = stream.message().await.expect("ok").expect("open");
    assert_eq!(
        first
            .services
            .iter()
            .find(|s| s.name.is_empty())
            .expect("overall")
            .health,
        PbHealth::Healthy as i32
    );
    // Probes keep running (new latencies, new generations) without a message...
    let quiet = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        quiet.is_err(),
        "no message while only latencies change: {quiet:?}"
    );
    // ...until health changes.
    switch.set(Verdict::unhealthy("down"));
    let changed = tokio::time::timeout(PATIENCE, async {
        loop {
            let m = stream.message().await.expect("ok").expect("open");
            if m.services
                .iter()
                .any(|s| s.name.is_empty() && s.health == PbHealth::Unhealthy as i32)
            {
                return m;
            }
        }
    })
    .await
    .expect("told in time");
    assert!(changed.generation > first.generation);
}

#[tokio::test]
async fn reflection_lists_both_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let front = Front::start(
        Engine::builder().start().expect("starts"),
        ServeOptions::default(),
    )
    .await;
    let mut client = ServerReflectionClient::new(front.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("list services")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"healthgate.v1.Detail".to_owned()),
        "{names:?}"
    );
}

/// The `timer` column of the server's end of a connection in `/proc/net/tcp`: `2` while a
/// keep-alive timer runs, `0` when no timer does.
#[cfg(target_os = "linux")]
fn server_side_timer(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<u8> {
    let hex = |a: std::net::SocketAddr| {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            panic!("IPv4 loopback expected")
        };
        format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("linux /proc");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields[5].split(':').next()?.parse().ok())
            .flatten()
    })
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_connections_use_tcp_keepalive_to_notice_dead_peers() {
    let front = Front::start(
        Engine::builder().start().expect("starts"),
        ServeOptions::default(),
    )
    .await;
    // A peer that connects and says nothing: only keep-alive would ever notice it gone.
    let socket = tokio::net::TcpStream::connect(front.addr)
        .await
        .expect("connect");
    let client = socket.local_addr().expect("bound");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let timer = loop {
        // The server side appears once the server has accepted (and configured) the socket.
        if let Some(timer) = server_side_timer(front.addr, client)
            && (timer != 0 || tokio::time::Instant::now() > deadline)
        {
            break timer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server end not found"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(timer, 2, "keep-alive timer on the server's end");
}

/// An on-demand probe counting its runs.
#[derive(Debug, Default)]
struct Counted(std::sync::atomic::AtomicUsize);

impl healthgate::Probe for Counted {
    fn check(&self, _ctx: healthgate::probe::ProbeContext) -> healthgate::probe::ProbeFuture<'_> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Verdict::Healthy })
    }
}

#[tokio::test]
async fn every_kind_of_health_question_wakes_an_expired_on_demand_dependency() {
    let probe = std::sync::Arc::new(Counted::default());
    let ttl = Duration::from_millis(100);
    let spec = healthgate::config::DependencySpec::custom(probe.clone(), "counted")
        .with_timeout(Duration::from_millis(50))
        .on_demand(healthgate::config::OnDemand {
            ttl,
            failure_ttl: ttl,
            max_failure_ttl: ttl,
        });
    let handle = Engine::builder()
        .dependency("cache", spec)
        .start()
        .expect("starts");
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    let channel = front.channel().await;
    let runs = || probe.0.load(std::sync::atomic::Ordering::SeqCst);
    // Each question, asked until the dependency has probed again once its cache expired.
    for question in ["check", "watch", "list", "detail"] {
        let before = runs();
        tokio::time::timeout(PATIENCE, async {
            while runs() == before {
                match question {
                    "check" => {
                        let _ = HealthClient::new(channel.clone()).check(request("")).await;
                    }
                    "watch" => {
                        let _ = HealthClient::new(channel.clone()).watch(request("")).await;
                    }
                    "list" => {
                        let _ = OurHealthClient::new(channel.clone())
                            .list(HealthListRequest {})
                            .await;
                    }
                    _ => {
                        let _ = DetailClient::new(channel.clone())
                            .get(DetailRequest::default())
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{question} never woke the on-demand dependency"));
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn detail_shows_overrides_with_the_computed_health_beside_them() {
    use healthgate::engine::Target;
    let switch = Switch::new();
    let handle = engine(&switch).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;
    switch.set(Verdict::unhealthy("HTTP 503"));
    service_is(&handle, "strict", Health::Unhealthy).await;
    let hour = Duration::from_secs(3600);
    handle
        .set_override(
            Target::Dependency("db".into()),
            Health::Healthy,
            hour,
            "vendor maintenance",
        )
        .await
        .expect("set");
    handle
        .set_override(
            Target::Service("lenient".into()),
            Health::Unhealthy,
            hour,
            "drain",
        )
        .await
        .expect("set");
    let mut detail = DetailClient::new(front.channel().await);
    let response = detail
        .get(DetailRequest::default())
        .await
        .expect("detail")
        .into_inner();
    assert!(response.config.is_none(), "not started from a file");
    let db = response
        .dependencies
        .iter()
        .find(|d| d.name == "db")
        .expect("db");
    assert_eq!(db.health(), PbHealth::Healthy);
    assert_eq!(db.computed(), PbHealth::Unhealthy);
    let forced = db.forced.as_ref().expect("override shown");
    assert_eq!(
        (forced.health(), forced.reason.as_str()),
        (PbHealth::Healthy, "vendor maintenance")
    );
    let until = forced.until.expect("until").seconds - forced.since.expect("since").seconds;
    assert!((3599..=3601).contains(&until), "{until}");
    let lenient = response
        .services
        .iter()
        .find(|s| s.name == "lenient")
        .expect("lenient");
    assert_eq!(lenient.health(), PbHealth::Unhealthy);
    assert_eq!(lenient.forced.as_ref().expect("forced").reason, "drain");
    let strict = response
        .services
        .iter()
        .find(|s| s.name == "strict")
        .expect("strict");
    assert_eq!(
        strict.health(),
        PbHealth::Healthy,
        "the muted dependency decides"
    );
    assert!(strict.forced.is_none());
}
