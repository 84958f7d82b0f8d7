//! Accepting connections under limits, for every front (gRPC and HTTP): a cap on open
//! connections, a deadline for a new connection's first request, and idle connections closed.
//!
//! What a client can hold, and what it sees at each bound (the README's "Limits" lists them):
//! - **Connections** beyond [`Limits::max_connections`] are accepted and closed at once (the
//!   newest is refused; everyone connected keeps being served), counted in
//!   `healthgate_connections_refused_total`.
//! - **First request.** A connection that has not started a request within
//!   [`Limits::first_request_timeout`] (an HTTP/2 client that never sends its preface, an
//!   HTTP/1 client that never finishes its head) is closed, counted in
//!   `healthgate_connections_closed_total{reason="first_request_timeout"}`: silent connections
//!   cannot hold the connection slots for longer than that.
//! - **Idle.** A connection with no request in flight for [`Limits::idle_timeout`] is closed
//!   gracefully (HTTP/2 GOAWAY, or the end of HTTP/1 keep-alive), counted with
//!   `reason="idle_timeout"`. An open Watch stream is a request in flight, so watchers keep their
//!   connections; dead peers are found by TCP keep-alive (see [`KEEP_ALIVE_TIME`]).
//! - **Streams** per HTTP/2 connection are capped by [`Limits::max_concurrent_streams`],
//!   advertised in SETTINGS; h2 refuses a stream beyond it with `REFUSED_STREAM` (hyper does not
//!   report those, so they are not counted).
//!
//! Transports (DESIGN §11): a listener is bound from a [`ListenAddr`] — TCP or a Unix socket
//! ([`bind`]) — and may have a [`ServerTls`] (rustls; its config swapped whole on rotation,
//! each handshake taking the one in force). The handshake runs in the connection's task under
//! the first-request deadline, so a slow or silent TLS client holds one connection slot, never
//! the accept loop. A verified client certificate's identities become the connection's
//! [`Peer`], which the admin and detail services (and the twin's reasons) consult besides their
//! bearer tokens.
//!
//! Idleness is checked on a timer per connection, every quarter of the idle timeout, not per
//! request: a request costs two counter updates, no clock read and no timer. So an idle
//! connection is closed `idle_timeout` after its last request ended, give or take a quarter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use socket2::{SockRef, TcpKeepalive};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

mod bind;
mod metrics;
mod tls;
mod tls_metrics;

use crate::metrics::Metrics;
use metrics::ListenerMetrics;

pub use crate::auth::Peer;
pub use crate::config::{DEFAULT_SOCKET_MODE, ListenAddr, UNIX_PREFIX};
pub use crate::tls::server::{CertificateInfo, ClientAuth, ServerTlsSpec};
pub use bind::{Bound, Io, bind};
pub use tls::{
    CertificateWatch, EXPIRY_WARNING, ROTATION_DEBOUNCE, ServerTls, watch as watch_certificates,
};

/// A served connection's transport: plain, or TLS over it.
pub type Conn = tokio_util::either::Either<Io, tokio_rustls::server::TlsStream<Io>>;

pub use crate::config::limits::{
    DEFAULT_FIRST_REQUEST_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_STREAMS,
    DEFAULT_MAX_CONNECTIONS, FD_RESERVE, Limits, fd_limit,
};

/// TCP keep-alive to notice dead peers holding Watch streams: first probe after 30 s of
/// silence, then every 10 s, given up after 3 unanswered (about a minute in all). The kernel
/// does this at no cost per request; HTTP/2 pings would read the clock and take a lock on every
/// frame received (hyper's ping recorder), about 3 % of a Check.
pub const KEEP_ALIVE_TIME: Duration = Duration::from_secs(30);
#[cfg(target_os = "linux")]
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
#[cfg(target_os = "linux")]
const KEEP_ALIVE_RETRIES: u32 = 3;

/// How long to pause accepting after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Receive window per HTTP/2 stream, advertised in SETTINGS: what a client may send on one
/// stream before the server reads it. Requests here are a few bytes (a service name).
pub const STREAM_WINDOW: u32 = 64 * 1024;
/// Receive window per HTTP/2 connection: unread request data a connection can hold, at most.
pub const CONNECTION_WINDOW: u32 = 256 * 1024;
/// The largest request header block accepted (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE; HTTP/1
/// head buffer).
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Response bytes buffered per HTTP/2 stream beyond what the client's window lets through.
pub const MAX_SEND_BUFFER: usize = 64 * 1024;
/// Counts requests in flight on one connection, and requests started.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One request in flight, until its response body is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A hyper service that counts its requests in flight (until the response body is dropped).
#[derive(Debug, Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The connection's addresses, given as tonic's `TcpConnectInfo` (so
    /// `Request::remote_addr` names the caller in the admin audit) and as a [`Peer`] to
    /// requests under [`PEER_PATHS`], and to every request when the peer has an identity.
    addresses: tonic::transport::server::TcpConnectInfo,
    peer: Peer,
}

/// Request paths that get the connection's peer in their extensions. Only these (unless the
/// peer has an identity): the first extension a request gets allocates its map, and Check and
/// Watch must not pay for it.
pub(crate) const PEER_PATHS: &[&str] = &["/healthgate.v1.Admin/", "/healthgate.v1.Detail/"];

impl<S, RB, B> hyper::service::Service<http::Request<RB>> for Tracked<S>
where
    S: hyper::service::Service<http::Request<RB>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, mut request: http::Request<RB>) -> Self::Future {
        let path = request.uri().path();
        if !self.peer.identities.is_empty() || PEER_PATHS.iter().any(|p| path.starts_with(p)) {
            request.extensions_mut().insert(self.addresses.clone());
            request.extensions_mut().insert(self.peer.clone());
        }
        TrackedFuture {
            call: self.inner.call(request),
            in_flight: Some(self.activity.begin()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner call, in place; the request counts as in flight from the call on.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        call: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.call.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection being served, as hyper's connection types are.
pub(crate) trait Connection: Future<Output = Result<(), Self::Error>> + Send {
    /// What the connection ends with on failure.
    type Error: std::fmt::Display;
    /// Starts a graceful close: no new requests, in-flight ones finish.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// Accepts connections under `limits` until `goaway`, then waits for the open ones to finish:
/// each is asked to close gracefully and ends when its last request has. Dropping this future
/// aborts them all.
///
/// With `tls`, each connection's handshake runs in its own task (never in the accept loop)
/// within `limits.first_request_timeout`; a failed or late handshake closes the connection and
/// is counted. `serve` turns the connection and a tracked service into the served connection;
/// `service` answers its requests.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn accept<S, C, F>(
    listener: Bound,
    name: &'static str,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    tls: Option<Arc<ServerTls>>,
    service: S,
    serve: F,
    goaway: CancellationToken,
) where
    S: Clone + Send + 'static,
    C: Connection + 'static,
    F: Fn(Conn, Tracked<S>) -> C + Send + Sync + 'static,
{
    let metrics = metrics.map(|m| ListenerMetrics::new(&m, name));
    let keepalive = TcpKeepalive::new().with_time(KEEP_ALIVE_TIME);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(KEEP_ALIVE_INTERVAL)
        .with_retries(KEEP_ALIVE_RETRIES);
    let serve = Arc::new(serve);
    let open = Arc::new(AtomicUsize::new(0));
    let mut connections = JoinSet::new();
    loop {
        let (io, addresses) = tokio::select! {
            () = goaway.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or memory: the error repeats until something
                    // closes, so pause rather than spin.
                    warn!(listener = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            // Refuse the newest: everyone connected keeps being served.
            debug!(
                listener = name,
                max_connections = limits.max_connections,
                "connection refused: at the cap"
            );
            if let Some(m) = &metrics {
                m.refused.inc();
            }
            drop(io);
            continue;
        }
        if let tokio_util::either::Either::Left(stream) = &io {
            // Without it a response written in two parts waits for the client's delayed ACK
            // (~40 ms).
            if let Err(e) = stream.set_nodelay(true) {
                debug!(error = %e, "TCP_NODELAY");
            }
            if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
                debug!(error = %e, "TCP keep-alive");
            }
        }
        let slot = OpenSlot::new(open.clone(), metrics.clone());
        let (service, serve, tls, goaway) =
            (service.clone(), serve.clone(), tls.clone(), goaway.clone());
        connections.spawn(async move {
            let mut identities: Arc<[String]> = Arc::from([]);
            let conn = match tls {
                None => tokio_util::either::Either::Left(io),
                Some(tls) => {
                    let handshake = tls.acceptor().accept(io);
                    match tokio::time::timeout(limits.first_request_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            if let Some(cert) = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                            {
                                identities = crate::tls::server::identities(cert).into();
                            }
                            tokio_util::either::Either::Right(stream)
                        }
                        Ok(Err(e)) => {
                            debug!(listener = name, error = %e, "TLS handshake failed");
                            tls.handshake_failed();
                            return;
                        }
                        Err(_) => {
                            debug!(listener = name, "TLS handshake timed out");
                            tls.handshake_failed();
                            return;
                        }
                    }
                }
            };
            let activity = Arc::new(Activity::default());
            let connection = serve(
                conn,
                Tracked {
                    inner: service,
                    activity: activity.clone(),
                    addresses: tonic::transport::server::TcpConnectInfo {
                        local_addr: addresses.map(|(_, local)| local),
                        remote_addr: addresses.map(|(peer, _)| peer),
                    },
                    peer: Peer {
                        remote: addresses.map(|(peer, _)| peer),
                        identities,
                    },
                },
            );
            watch_over(connection, activity, limits, goaway, slot).await;
        });
    }
    // Stop listening at once: new clients are refused rather than left waiting.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One open connection, counted until dropped.
struct OpenSlot {
    open: Arc<AtomicUsize>,
    metrics: Option<ListenerMetrics>,
}

impl OpenSlot {
    fn new(open: Arc<AtomicUsize>, metrics: Option<ListenerMetrics>) -> OpenSlot {
        open.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &metrics {
            m.open.inc();
        }
        OpenSlot { open, metrics }
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.open.dec();
        }
    }
}

/// Serves one connection, closing it when it breaks the first-request deadline or idles, and
/// gracefully on `goaway`.
async fn watch_over<C: Connection>(
    connection: C,
    activity: Arc<Activity>,
    limits: Limits,
    goaway: CancellationToken,
    slot: OpenSlot,
) {
    tokio::pin!(connection);
    let tick = (limits.idle_timeout / 4).max(Duration::from_millis(10));
    let check = tokio::time::sleep(limits.first_request_timeout);
    tokio::pin!(check);
    let mut first_request_due = true;
    let mut last_started = 0;
    let mut idle_since = Instant::now();
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = goaway.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut check, if !closing => {
                let now = Instant::now();
                let started = activity.started.load(Ordering::Relaxed);
                if std::mem::take(&mut first_request_due) && started == 0 {
                    debug!(timeout = ?limits.first_request_timeout, "connection closed: no request in time");
                    if let Some(m) = &slot.metrics {
                        m.first_request_timeouts.inc();
                    }
                    return; // dropped, not drained: it never asked for anything
                }
                if activity.in_flight.load(Ordering::Relaxed) > 0 || started != last_started {
                    last_started = started;
                    idle_since = now;
                } else if now.duration_since(idle_since) >= limits.idle_timeout {
                    debug!(timeout = ?limits.idle_timeout, "connection closed: idle");
                    if let Some(m) = &slot.metrics {
                        m.idle_closes.inc();
                    }
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                    continue;
                }
                check.as_mut().reset(now + tick);
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "connection ended with an error");
    }
    drop(slot);
}

impl<I, S, E, B> Connection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B> + Send,
    Self: Future<Output = hyper::Result<()>> + Send,
{
    type Error = hyper::Error;

    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}
