//! [`serve`]: the gRPC server and its drain sequence.
//!
//! On the shutdown signal: every service goes `NOT_SERVING` at once and watchers are told; the
//! server keeps serving new connections and RPCs for `drain_delay` (so Envoy and kubelet see
//! it); then Watch streams end after their final `NOT_SERVING` and GOAWAY is sent; in-flight
//! RPCs get up to `drain_timeout`; then everything still open is dropped. A Watch client that
//! never cancels therefore cannot hold exit beyond `drain_delay + drain_timeout`.
//!
//! Connections are served by hyper directly rather than by `tonic::transport::Server`, whose
//! per-request wrapping (a boxed clone of the service stack, boxed bodies, connect info, its
//! timeout layer) cost about as much CPU as answering a Check (BENCHMARKS.md), under the
//! limits of [`crate::listener`]. `grpc-timeout` is not enforced by the server: every unary
//! RPC here answers at once, and a client whose deadline passes on a Watch resets the stream
//! itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tower_layer::Layer;
use tracing::{info, warn};

use super::admin::AdminService;
use super::front::Front;
use super::observe::ObserveLayer;
use super::pb;
use crate::Handle;
use crate::control::{Reloader, StateFile};
use crate::listener::{self, Bound, Limits, ServerTls};
use crate::metrics::Metrics;

/// How the server drains and who may read details.
#[derive(Default)]
pub struct ServeOptions {
    /// How long to keep serving after shutdown began.
    pub drain_delay: Duration,
    /// How long in-flight RPCs may take after the drain delay.
    pub drain_timeout: Duration,
    /// When set, the Detail service requires `authorization: Bearer TOKEN`.
    pub detail_token: Option<String>,
    /// Where RPCs, open Watch streams and connections are counted.
    pub metrics: Option<Arc<Metrics>>,
    /// Connection and stream limits.
    pub limits: Limits,
    /// The config file's reloader, whose status the Detail service shows (and which the Admin
    /// service's `Reload` uses).
    pub reloader: Option<Arc<Reloader>>,
    /// When set, `healthgate.v1.Admin` is served for callers with this bearer token.
    pub admin_token: Option<String>,
    /// Where the Admin service keeps overrides and reports before it answers (`[server]
    /// state_file`).
    pub state: Option<Arc<StateFile>>,
    /// TLS (and mTLS) for the gRPC listener.
    pub tls: Option<Arc<ServerTls>>,
    /// Client-certificate identities the Detail service accepts besides `detail_token`.
    pub detail_identities: Vec<String>,
    /// Client-certificate identities the Admin service accepts besides `admin_token`.
    pub admin_identities: Vec<String>,
    /// The plaintext probe listener (`[server] probe_listen`): `grpc.health.v1` and the
    /// router given (the twin's probe paths), nothing else.
    pub probe: Option<ProbeListener>,
}

/// The probe listener and the HTTP answers it serves beside `grpc.health.v1`.
#[derive(Debug)]
pub struct ProbeListener {
    /// Where it listens.
    pub listener: Bound,
    /// The HTTP side: `healthgate::http::twin_router` with `TwinOptions::probe_only`.
    pub router: axum::Router,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("drain_delay", &self.drain_delay)
            .field("drain_timeout", &self.drain_timeout)
            .field("limits", &self.limits)
            .field(
                "detail_token",
                &self.detail_token.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field("state", &self.state.as_deref().map(StateFile::path))
            .field("tls", &self.tls)
            .field("detail_identities", &self.detail_identities)
            .field("admin_identities", &self.admin_identities)
            .field("probe", &self.probe)
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
    listener: impl Into<Bound>,
    handle: Handle,
    mut options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut front = Front::new(handle.clone());
    if let Some(token) = &options.detail_token {
        front = front.with_detail_token(token.clone());
    }
    if !options.detail_identities.is_empty() {
        front = front.with_detail_identities(options.detail_identities.clone());
    }
    if let Some(reloader) = &options.reloader {
        front = front.with_config(reloader.clone());
    }
    let goaway = CancellationToken::new();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    let reflection_v1 = reflection
        .build_v1()?
        .max_decoding_message_size(super::MAX_REQUEST_MESSAGE);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET);
    let reflection_v1alpha = reflection
        .build_v1alpha()?
        .max_decoding_message_size(super::MAX_REQUEST_MESSAGE);
    let mut routes = Routes::new(front.health_server())
        .add_service(front.detail_server())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    if options.admin_token.is_some() || !options.admin_identities.is_empty() {
        let admin = AdminService::new(
            handle.clone(),
            options.admin_token.clone(),
            options.admin_identities.clone(),
            options.reloader.clone(),
        )
        .keeping_state(options.state.clone());
        routes = routes.add_service(admin.into_server());
    }
    let routes = routes.prepare();
    // The fast path sits inside the observation layer, so fast answers are counted and traced
    // like the rest.
    let service = ObserveLayer {
        metrics: options.metrics.clone(),
    }
    .layer(front.fast_path().layer(routes));
    let mut http = http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .max_concurrent_streams(options.limits.max_concurrent_streams)
        .initial_stream_window_size(listener::STREAM_WINDOW)
        .initial_connection_window_size(listener::CONNECTION_WINDOW)
        .max_header_list_size(listener::MAX_HEADER_LIST_SIZE)
        .max_send_buf_size(listener::MAX_SEND_BUFFER);
    let server = listener::accept(
        listener.into(),
        "grpc",
        options.limits,
        options.metrics.clone(),
        options.tls.clone(),
        TowerToHyperService::new(service),
        move |stream, service| http.serve_connection(TokioIo::new(stream), service),
        goaway.clone(),
    );
    // The probe port: the standard Health service only (through the same fast path) beside
    // the twin's probe paths, HTTP/1 and h2c on one plaintext listener; drained with the rest.
    let probe = options.probe.take().map(|probe| {
        let health = ObserveLayer {
            metrics: options.metrics.clone(),
        }
        .layer(
            front
                .fast_path()
                .layer(Routes::new(front.health_server()).prepare()),
        );
        let router = probe
            .router
            .route_service("/grpc.health.v1.Health/{*method}", health)
            .layer(axum::middleware::from_fn(only_health_over_grpc));
        let goaway = goaway.clone();
        crate::http::serve(
            probe.listener,
            "probe",
            router,
            options.limits,
            options.metrics.clone(),
            None,
            async move { goaway.cancelled().await },
        )
    });
    let server = async move {
        match probe {
            Some(probe) => drop(tokio::join!(server, probe)),
            None => server.await,
        }
    };
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
    front.end_streams();
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

/// On the probe port, a gRPC call to anything but `grpc.health.v1.Health` is `UNIMPLEMENTED`
/// (as a server without that service answers), not an HTTP answer of the twin.
async fn only_health_over_grpc(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc && !request.uri().path().starts_with("/grpc.health.v1.Health/") {
        return tonic::Status::unimplemented("not served on the probe port")
            .into_http::<axum::body::Body>();
    }
    next.run(request).await
}
