//! `mode = "watch"` against real tonic servers: a Watch that flips (seen at once, not at the
//! interval), a server without Watch (polled with Check), a server that ends every stream (a
//! backoff, not a storm), and a connection that dies mid-stream (reconnect, recovery).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use healthgate::Health;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::probe_grpc::health_server;
use crate::support::{PATIENCE, start, state_where};

fn watch_dep(addr: SocketAddr, interval: &str, timeout: &str) -> String {
    format!(
        "[dependencies.dep]\nkind = \"grpc\"\ntarget = \"http://{addr}\"\nmode = \"watch\"\n\
         interval = \"{interval}\"\ntimeout = \"{timeout}\"\nfall = 1\nrise = 1\n"
    )
}

fn reason_of(d: &healthgate::snapshot::DependencyState) -> String {
    d.last_outcome
        .as_ref()
        .and_then(|o| o.verdict.reason())
        .map_or(String::new(), |r| r.to_string())
}

#[tokio::test]
async fn a_flip_on_the_watch_is_seen_at_once_not_at_the_interval() {
    let (addr, reporter, _) = health_server().await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // An interval far longer than the test: a poll would never see the flip in time.
    let handle = start(&watch_dep(addr, "60s", "2s"));
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;
    for (status, health) in [
        (ServingStatus::NotServing, Health::Unhealthy),
        (ServingStatus::Serving, Health::Healthy),
    ] {
        let flipped = Instant::now();
        reporter.set_service_status("", status).await;
        let state = state_where(&handle, "dep", |d| d.health == health).await;
        assert!(
            flipped.elapsed() < Duration::from_secs(5),
            "seen in {:?}, not at the 60 s interval",
            flipped.elapsed()
        );
        if health == Health::Unhealthy {
            assert_eq!(reason_of(&state), "NOT_SERVING");
        }
        assert_eq!(state.thresholds.mode, "watch");
    }
    handle.shutdown().await;
}

/// A Health service scripted per test, counting its Watch calls.
#[derive(Clone)]
struct Scripted {
    watches: Arc<Mutex<Vec<Instant>>>,
    checks: Arc<AtomicUsize>,
    watch_unimplemented: bool,
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl HealthApi for Scripted {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(HealthCheckResponse {
            status: Wire::Serving as i32,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<WatchStream>, Status> {
        self.watches
            .lock()
            .expect("not poisoned")
            .push(Instant::now());
        if self.watch_unimplemented {
            return Err(Status::unimplemented("no watch here"));
        }
        // One SERVING, then the stream ends (status OK).
        let once = tokio_stream::iter([Ok(HealthCheckResponse {
            status: Wire::Serving as i32,
        })]);
        Ok(Response::new(Box::pin(once)))
    }
}

async fn scripted(watch_unimplemented: bool) -> (SocketAddr, Scripted) {
    let service = Scripted {
        watches: Arc::default(),
        checks: Arc::default(),
        watch_unimplemented,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let router =
        tonic::transport::Server::builder().add_service(HealthServer::new(service.clone()));
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (addr, service)
}

#[tokio::test]
async fn a_server_without_watch_is_polled_with_check_and_says_so() {
    let (addr, server) = scripted(true).await;
    let handle = start(&watch_dep(addr, "200ms", "100ms"));
    let state = state_where(&handle, "dep", |d| {
        d.health == Health::Healthy && d.consecutive_successes >= 3
    })
    .await;
    assert_eq!(state.thresholds.mode, "watch not supported, polling");
    assert!(
        server.checks.load(Ordering::SeqCst) >= 3,
        "polled with Check"
    );
    assert_eq!(
        server.watches.lock().expect("not poisoned").len(),
        1,
        "Watch was tried once, then never again"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_server_that_ends_every_stream_gets_outcomes_and_a_growing_backoff_not_a_storm() {
    let (addr, server) = scripted(false).await;
    let handle = start(&watch_dep(addr, "60s", "1s"));
    // Each stream: SERVING, then its end — an Unhealthy outcome (fall = 1 shows it).
    let ended = state_where(&handle, "dep", |d| {
        d.health == Health::Unhealthy && reason_of(d) == "watch ended"
    })
    .await;
    assert_eq!(ended.thresholds.mode, "watch");
    let waited = async {
        while server.watches.lock().expect("not poisoned").len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE * 2, waited)
        .await
        .expect("it keeps reconnecting");
    let times = server.watches.lock().expect("not poisoned").clone();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // 1 s, 1.6 s, 2.56 s nominal, each ± 20 %.
    for (gap, nominal) in gaps.iter().zip([1.0, 1.6, 2.56]) {
        assert!(
            *gap >= nominal * 0.8 - 0.05 && *gap <= nominal * 1.2 + 0.5,
            "gaps {gaps:?}: expected about {nominal} s"
        );
    }
    // Each reconnect's first message made it healthy again, each end unhealthy.
    let recovered = handle
        .snapshot()
        .dependency("dep")
        .map(|d| {
            d.history
                .transitions()
                .filter(|t| t.to() == Health::Healthy)
                .count()
        })
        .unwrap_or_default();
    assert!(
        recovered >= 3,
        "healthy at each reconnect: {recovered} times"
    );
    handle.shutdown().await;
}

/// A TCP proxy to `backend` on `listener`'s port whose connections can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(listener: TcpListener, backend: SocketAddr) -> Proxy {
        let addr = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, task }
    }

    /// Cuts every connection and stops listening (the JoinSet goes with the task).
    fn die(self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_connection_dying_mid_stream_is_unhealthy_then_reconnects_when_the_server_is_back() {
    let (backend, reporter, _) = health_server().await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let proxy = Proxy::start(
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        backend,
    )
    .await;
    let addr = proxy.addr;
    let handle = start(&watch_dep(addr, "60s", "1s"));
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;
    proxy.die();
    let broken = state_where(&handle, "dep", |d| d.health == Health::Unhealthy).await;
    let reason = reason_of(&broken);
    assert!(
        reason.starts_with("watch") || reason.starts_with("unavailable"),
        "the break or the refused reconnect: {reason}"
    );
    // Back on the same port: a reconnect within the backoff finds it.
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let _proxy = Proxy::start(listener, backend).await;
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn watch_mode_is_for_grpc_only() {
    let err = healthgate::Config::from_toml(
        "[dependencies.web]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nmode = \"watch\"\n",
    )
    .expect_err("not for http");
    assert!(
        err.to_string().contains("only valid for kind = \"grpc\""),
        "{err}"
    );
}
