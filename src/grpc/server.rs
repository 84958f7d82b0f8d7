//! [`serve`]: the gRPC server and its drain sequence.
//!
//! On the shutdown signal: every service goes `NOT_SERVING` at once and watchers are told; the
//! server keeps serving new connections and RPCs for `drain_delay` (so Envoy and kubelet see
//! it); then Watch streams end after their final `NOT_SERVING` and GOAWAY is sent; in-flight
//! RPCs get up to `drain_timeout`; then everything still open is dropped. A Watch client that
//! never cancels therefore cannot hold exit beyond `drain_delay + drain_timeout`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::fast_check::FastCheckLayer;
use super::observe::ObserveLayer;
use super::{DetailService, HealthService, pb};
use crate::Handle;
use crate::metrics::Metrics;

/// HTTP/2 pings to notice dead peers holding Watch streams.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The transport failed.
    #[error("grpc transport")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves health, detail and reflection on `listener` until `shutdown` resolves, then drains
/// (see the module docs) and shuts the engine down.
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
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
        .layer(ObserveLayer {
            metrics: options.metrics.clone(),
        })
        // Inside the observation layer (tonic's later layers sit closer to the services), so
        // fast answers are counted and traced like the rest.
        .layer(FastCheckLayer::new(handle.clone()))
        .add_service(HealthService::new(handle.clone(), streams_end.clone()).into_server())
        .add_service(
            DetailService::new(
                handle.clone(),
                options.detail_token.clone(),
                streams_end.clone(),
            )
            .into_server(),
        )
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // `tcp_nodelay` on the builder only reaches listeners tonic binds itself; ours is handed
    // in, so it is set here. Without it a response written in two parts waits for the client's
    // delayed ACK (~40 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = router.serve_with_incoming_shutdown(incoming, goaway.clone().cancelled_owned());
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return Ok(result?),
        () = shutdown => {}
    }
    info!(drain_delay = ?options.drain_delay, "shutdown: NOT_SERVING for every service, draining");
    let drain = async {
        handle.shutdown().await;
        tokio::time::sleep(options.drain_delay).await;
    };
    tokio::select! {
        result = &mut server => return Ok(result?),
        () = drain => {}
    }
    streams_end.cancel();
    goaway.cancel();
    match tokio::time::timeout(options.drain_timeout, &mut server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            warn!(drain_timeout = ?options.drain_timeout, "in-flight RPCs outlived the drain timeout; closing them");
            Ok(())
        }
    }
}
