//! The HTTP front's server: an axum router (`/metrics` and the twin of `grpc.health.v1`, see
//! [`twin_router`]) served on `[server] http_listen` over HTTP/1.1 (1.0 too) and h2c, under the
//! same connection limits as the gRPC front ([`crate::listener`]).

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

mod agent;
mod metrics;
mod push;
mod status;
mod twin;

/// Entry points for the benchmark helpers (`examples/status_json.rs`) into the status page.
/// Hidden from the docs and not part of the API.
#[doc(hidden)]
pub mod bench {
    use crate::snapshot::Snapshot;

    /// `/status.json` for `snapshot`.
    pub fn status_json(snapshot: &Snapshot, reasons: bool) -> String {
        super::status::json(snapshot, reasons)
    }

    /// `/` for `snapshot`.
    pub fn status_html(snapshot: &Snapshot, reasons: bool) -> String {
        super::status::html(snapshot, reasons)
    }
}

pub use agent::{DEFAULT_DEGRADED_WEIGHT, WRITE_TIMEOUT, agent_line, serve_agent};

pub use metrics::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, encode_classic, metrics_router};
pub use push::push_router;
pub use twin::{ENVOY_DEGRADED, ENVOY_IMMEDIATE_FAIL, READINESS, TwinOptions, twin_router};

use crate::listener::{self, Bound, Connection, Limits, ServerTls};
use crate::metrics::Metrics;

/// The protocols the HTTPS listener offers by ALPN, preferred first.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The HTTP/1 read buffer per connection, which bounds a request head.
pub const MAX_HTTP1_BUFFER: usize = 32 * 1024;

/// Serves `router` on `listener` under `limits` until `shutdown` resolves; then open
/// connections are closed gracefully (in-flight requests finish) and this returns when they
/// have. Connections are counted in `metrics` as listener `name` (`http`, `probe`). With
/// `tls`, HTTPS (HTTP/1.1 and h2 by ALPN, see [`HTTP_ALPN`]).
///
/// On HTTP/1 a request head must arrive within `limits.first_request_timeout` — also for
/// each later request on a kept-alive connection (hyper's header read timeout), so an idle
/// HTTP/1 connection is closed after that time.
pub async fn serve(
    listener: impl Into<Bound>,
    name: &'static str,
    router: axum::Router,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.first_request_timeout)
        .max_buf_size(MAX_HTTP1_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(listener::STREAM_WINDOW)
        .initial_connection_window_size(listener::CONNECTION_WINDOW)
        .max_header_list_size(listener::MAX_HEADER_LIST_SIZE)
        .max_send_buf_size(listener::MAX_SEND_BUFFER);
    let goaway = CancellationToken::new();
    let server = listener::accept(
        listener.into(),
        name,
        limits,
        metrics,
        tls,
        TowerToHyperService::new(router),
        move |stream, service| {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned()
        },
        goaway.clone(),
    );
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => return,
        () = shutdown => {}
    }
    goaway.cancel();
    server.await;
}

impl<I, S, E, B> Connection for auto::Connection<'static, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    Self: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send,
{
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}
