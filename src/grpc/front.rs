//! [`Front`]: the gRPC front of an engine as pieces for any tonic server — the handle + service
//! pair of tonic-health, plus the detail service and the optional fast path — sharing the one
//! token that ends their streams when the server drains.

use tokio_util::sync::CancellationToken;

use super::detail::DetailService;
use super::fast_path::FastPathLayer;
use super::health::HealthService;
use super::pb::detail::detail_server::DetailServer;
use super::pb::health::health_server::HealthServer;
use std::sync::Arc;

use crate::Handle;
use crate::control::Reloader;

/// The gRPC front of an engine, for embedding in a tonic server.
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = healthgate::Engine::builder().start()?; // inside a Tokio runtime
/// let front = healthgate::grpc::Front::new(engine.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
/// let server = tonic::transport::Server::builder()
///     // Optional: plain Check and Watch answered below tonic, at about half the cost.
///     .layer(front.fast_path())
///     .add_service(front.health_server())
///     .add_service(front.detail_server())
///     .serve_with_incoming_shutdown(incoming, async {
///         # return;
///         tokio::signal::ctrl_c().await.ok();
///     });
/// server.await?;
/// // Draining: every service NOT_SERVING, then Watch streams end after that final message.
/// engine.shutdown().await;
/// front.end_streams();
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Front {
    handle: Handle,
    streams_end: CancellationToken,
    detail_token: Option<String>,
    detail_identities: Vec<String>,
    config: Option<Arc<Reloader>>,
}

impl Front {
    /// The front of the engine behind `handle`; anyone may read details.
    pub fn new(handle: Handle) -> Front {
        Front {
            handle,
            streams_end: CancellationToken::new(),
            detail_token: None,
            detail_identities: Vec::new(),
            config: None,
        }
    }

    /// Requires `authorization: Bearer TOKEN` on the Detail service.
    pub fn with_detail_token(self, token: impl Into<String>) -> Front {
        Front {
            detail_token: Some(token.into()),
            ..self
        }
    }

    /// Also admits Detail callers whose client certificate has one of `identities` (exact
    /// match against its URI SANs, and DNS SANs as `dns:NAME`).
    pub fn with_detail_identities(self, identities: Vec<String>) -> Front {
        Front {
            detail_identities: identities,
            ..self
        }
    }

    /// Shows `reloader`'s config status (hash, load time, last error) in Detail answers.
    pub fn with_config(self, reloader: Arc<Reloader>) -> Front {
        Front {
            config: Some(reloader),
            ..self
        }
    }

    /// `grpc.health.v1.Health` (Check, Watch, List), ready for `add_service`.
    pub fn health_server(&self) -> HealthServer<HealthService> {
        HealthService::new(self.handle.clone(), self.streams_end.clone()).into_server()
    }

    /// `healthgate.v1.Detail` (Get, Watch), ready for `add_service`.
    pub fn detail_server(&self) -> DetailServer<DetailService> {
        DetailService::new(
            self.handle.clone(),
            crate::auth::Access::new(self.detail_token.clone(), self.detail_identities.clone()),
            self.config.clone(),
            self.streams_end.clone(),
        )
        .into_server()
    }

    /// The optional fast path for plain Check and Watch requests (see [`FastPathLayer`]): a
    /// tower layer for `Server::builder().layer(…)`. It answers before anything the server
    /// runs inside it — interceptors and layers added after it do not see those requests.
    pub fn fast_path(&self) -> FastPathLayer {
        FastPathLayer::new(self.handle.clone(), self.streams_end.clone())
    }

    /// Ends every Watch stream of this front (Health and Detail) after its final message; the
    /// drain sequence's last step, after [`Handle::shutdown`] made every service
    /// `NOT_SERVING`.
    pub fn end_streams(&self) {
        self.streams_end.cancel();
    }

    /// The engine this front answers from.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}
