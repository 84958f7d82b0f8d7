//! [`serve`]: the gRPC server and its drain sequence.
//!
//! On the shutdown signal: every service goes `NOT_SERVING` at once and watchers are told; the
//! server keeps serving new connections and RPCs for `drain_delay` (so Envoy and kubelet see
//! it); then Watch streams end after their final `NOT_SERVING` and GOAWAY is sent; in-flight
//! RPCs get up to `drain_timeout`; then everything still open is dropped. A Watch client that
//! never cancels therefore cannot hold exit beyond `drain_delay + drain_timeout`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tower_layer::Layer;
use tracing::{debug, info, warn};

use super::fast_check::FastCheckLayer;
use super::observe::{ObserveLayer, ObservedBody};
use super::{DetailService, HealthService, pb};
use crate::Handle;
use crate::metrics::Metrics;

/// TCP keep-alive to notice dead peers holding Watch streams: first probe after 30 s of
/// silence, then every 10 s, given up after 3 unanswered (about a minute in all). The kernel
/// does this at no cost per request; HTTP/2 pings would read the clock and take a lock on every
/// frame received (hyper's ping recorder), about 3 % of a Check.
const KEEP_ALIVE_TIME: Duration = Duration::from_secs(30);
#[cfg(target_os = "linux")]
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
#[cfg(target_os = "linux")]
const KEEP_ALIVE_RETRIES: u32 = 3;

/// How long to pause accepting after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How the server drains and who may read details.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// How long to keep serving after shutdown began.
    pub drain_delay: Duration,
    /// How long in-flight RPCs may take after the drain delay.
    pub drain_timeout: Duration,
    /// When set, the Detail service requires `authorization: Bearer TOKEN`.
    pub detail_token: Option<String>,
    /// Where RPCs and open Watch streams are counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("drain_delay", &self.drain_delay)
            .field("drain_timeout", &self.drain_timeout)
            .field(
                "detail_token",
                &self.detail_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// The server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not load the descriptor set (a build defect).
    #[error("server reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The engine stopped on its own (see [`Handle::failed`]); the server drained and stopped
    /// rather than answer from health that no longer changes.
    #[error("the engine stopped unexpectedly: {0}")]
    EngineFailed(String),
}

/// Serves health, detail and reflection on `listener` until `shutdown` resolves (or the engine
/// fails, see [`Handle::failed`]), then drains (see the module docs) and shuts the engine down.
pub async fn serve(
    listener: TcpListener,
    handle: Handle,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let streams_end = CancellationToken::new();
    let goaway = CancellationToken::new();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    let reflection_v1 = reflection.build_v1()?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    let reflection_v1alpha = reflection.build_v1alpha()?;
    let routes = Routes::new(HealthService::new(handle.clone(), streams_end.clone()).into_server())
        .add_service(
            DetailService::new(
                handle.clone(),
                options.detail_token.clone(),
                streams_end.clone(),
            )
            .into_server(),
        )
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare();
    // The fast path sits inside the observation layer, so fast answers are counted and traced
    // like the rest.
    let service = ObserveLayer {
        metrics: options.metrics.clone(),
    }
    .layer(
        FastCheckLayer::new(handle.clone())
            .with_watch(streams_end.clone())
            .layer(routes),
    );
    let server = accept(listener, TowerToHyperService::new(service), goaway.clone());
    tokio::pin!(server);

    let mut failure = None;
    tokio::select! {
        () = &mut server => return Ok(()),
        () = shutdown => {}
        why = handle.failed() => failure = Some(why),
    }
    info!(drain_delay = ?options.drain_delay, "shutdown: NOT_SERVING for every service, draining");
    let drain = async {
        handle.shutdown().await;
        tokio::time::sleep(options.drain_delay).await;
    };
    tokio::select! {
        () = &mut server => return Ok(()),
        () = drain => {}
    }
    streams_end.cancel();
    goaway.cancel();
    if tokio::time::timeout(options.drain_timeout, &mut server)
        .await
        .is_err()
    {
        warn!(drain_timeout = ?options.drain_timeout, "in-flight RPCs outlived the drain timeout; closing them");
    }
    // Dropping `server` aborts every connection still open.
    match failure {
        Some(why) => Err(ServeError::EngineFailed(why)),
        None => Ok(()),
    }
}

/// Accepts connections until `goaway`, then waits for the open ones to finish: each is told
/// GOAWAY and ends when its last stream has. Dropping this future aborts them all.
///
/// Connections are served by hyper directly rather than by `tonic::transport::Server`, whose
/// per-request wrapping (a boxed clone of the service stack, a boxed request body and response
/// body, connect info in the extensions, its timeout layer) cost about as much CPU as
/// answering a Check does (BENCHMARKS.md). The HTTP/2 settings are tonic's defaults (no limit
/// on concurrent streams, HTTP/2 only); dead peers are noticed by TCP keep-alive. `grpc-timeout` is not enforced by the server: every unary RPC here answers at
/// once, and a client whose deadline passes on a Watch resets the stream itself.
async fn accept<S>(listener: TcpListener, service: S, goaway: CancellationToken)
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<ObservedBody<tonic::body::Body>>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let mut http = http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new()).max_concurrent_streams(None);
    let keepalive = TcpKeepalive::new().with_time(KEEP_ALIVE_TIME);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(KEEP_ALIVE_INTERVAL)
        .with_retries(KEEP_ALIVE_RETRIES);
    let mut connections = JoinSet::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = goaway.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: the error repeats until something
                    // closes, so pause rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Without it a response written in two parts waits for the client's delayed ACK
        // (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY");
        }
        if let Err(e) = SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            debug!(error = %e, "TCP keep-alive");
        }
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let goaway = goaway.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = goaway.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop listening at once: new clients are refused rather than left waiting.
    drop(listener);
    while connections.join_next().await.is_some() {}
}
