//! The gRPC probe against real tonic servers on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use healthgate::{Health, Verdict};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::support::{probe_once, silent_server};

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// A tonic server with tonic-health, recording the metadata of the last request.
pub(crate) async fn health_server() -> (SocketAddr, HealthReporter, Arc<Mutex<Option<MetadataMap>>>)
{
    let (reporter, service) = tonic_health::server::health_reporter();
    let seen = Arc::new(Mutex::new(None));
    let record = seen.clone();
    let service = InterceptedService::new(service, move |req: tonic::Request<()>| {
        *record.lock().expect("not poisoned") = Some(req.metadata().clone());
        Ok(req)
    });
    let addr = serve(Server::builder().add_service(service)).await;
    (addr, reporter, seen)
}

fn grpc(addr: SocketAddr, service: &str) -> String {
    format!(
        "kind = \"grpc\"\ntarget = \"http://{addr}\"\nservice = \"{service}\"\ntimeout = \"1s\"\n"
    )
}

#[tokio::test]
async fn serving_and_not_serving_map_to_health() {
    let (addr, reporter, _) = health_server().await;
    reporter
        .set_service_status("payments.v1.Payments", ServingStatus::Serving)
        .await;
    assert_eq!(
        probe_once(&grpc(addr, "payments.v1.Payments"))
            .await
            .verdict,
        Verdict::Healthy
    );
    assert_eq!(
        probe_once(&grpc(addr, "")).await.verdict,
        Verdict::Healthy,
        "the whole server"
    );
    reporter
        .set_service_status("payments.v1.Payments", ServingStatus::NotServing)
        .await;
    assert_eq!(
        probe_once(&grpc(addr, "payments.v1.Payments"))
            .await
            .verdict,
        Verdict::unhealthy("NOT_SERVING")
    );
}

#[tokio::test]
async fn unknown_service_and_missing_health_service_are_told_apart() {
    let (addr, _, _) = health_server().await;
    assert_eq!(
        probe_once(&grpc(addr, "nope.v1.Nope")).await.verdict,
        Verdict::unhealthy("service unknown")
    );
    // A gRPC server without grpc.health.v1: every method is UNIMPLEMENTED.
    let bare = serve(Server::builder().add_routes(Routes::default())).await;
    assert_eq!(
        probe_once(&grpc(bare, "")).await.verdict,
        Verdict::unhealthy("no health service")
    );
}

#[tokio::test]
async fn hung_and_refused_servers_are_unhealthy() {
    let hung = silent_server().await;
    let outcome = probe_once(&grpc(hung, "")).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("timed out after 1s"));
    let refused = crate::support::closed_port().await;
    let outcome = probe_once(&grpc(refused, "")).await;
    assert_eq!(
        outcome.verdict,
        Verdict::unhealthy("unavailable: connection refused")
    );
}

/// A server that answers HTTP/2's preface with bytes that are not HTTP/2: the reason names
/// the protocol failure our side saw, not only the status code tonic turned it into.
#[tokio::test]
async fn a_server_that_is_not_http2_is_unhealthy_with_the_protocol_error() {
    let garbage = crate::support::garbage_server().await;
    let outcome = probe_once(&grpc(garbage, "")).await;
    assert_eq!(outcome.verdict.health(), Health::Unhealthy, "{outcome:?}");
    let reason = crate::support::reason(&outcome);
    let cause = reason
        .strip_prefix("grpc status ")
        .and_then(|r| r.split_once(": "))
        .map(|(_, cause)| cause);
    assert!(
        cause.is_some_and(|c| !c.is_empty()),
        "a cause after the code: {reason:?}"
    );
    assert!(!reason.contains("127.0.0.1"), "{reason:?}");

    // A status the dependency itself sent is its code alone: its message is free text.
    let (reporter, service) = tonic_health::server::health_reporter();
    drop(reporter);
    let service = InterceptedService::new(service, |_req: tonic::Request<()>| {
        Err(tonic::Status::permission_denied("ask bob: token hunter2"))
    });
    let refusing = serve(Server::builder().add_service(service)).await;
    assert_eq!(
        probe_once(&grpc(refusing, "")).await.verdict,
        Verdict::unhealthy("grpc status PERMISSION_DENIED")
    );
}

#[tokio::test]
async fn metadata_and_deadline_are_sent() {
    let (addr, _, seen) = health_server().await;
    let dep = format!("{}metadata = {{ x-tenant = \"blue\" }}\n", grpc(addr, ""));
    assert_eq!(probe_once(&dep).await.verdict, Verdict::Healthy);
    let metadata = seen
        .lock()
        .expect("not poisoned")
        .clone()
        .expect("request seen");
    assert_eq!(
        metadata
            .get("x-tenant")
            .expect("sent")
            .to_str()
            .expect("ascii"),
        "blue"
    );
    assert!(
        metadata.get("grpc-timeout").is_some(),
        "the probe passes its deadline on"
    );
}
