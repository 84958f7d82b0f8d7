//! A fast path for `grpc.health.v1.Health/Check` and `Watch`, the RPCs every probe, mesh and
//! load balancer sends: answered at the HTTP/2 level, in front of tonic's router, with the same
//! bytes tonic would send — status 200, `content-type: application/grpc`,
//! `grpc-accept-encoding`, `x-health-state`, uncompressed messages, `grpc-status: 0` trailers;
//! `NOT_FOUND` and protocol errors as trailers-only responses, with tonic's own messages. Watch
//! keeps [`HealthService`](super::HealthService)'s semantics exactly (current status at once,
//! only changes of wire status, no queue, a final `NOT_SERVING` on drain).
//!
//! Why: a Check answer is a snapshot lookup and a Watch message one of four fixed byte strings,
//! yet tonic's generic machinery (codec, boxed handler futures and bodies, a stream encoder and
//! a cancellation future per message) cost more than the answer: in-process, a Check takes
//! 0.89 µs here against 1.50 µs through tonic (criterion, BENCHMARKS.md), and a Watch stream
//! holds ~4 KiB instead of ~8 KiB. Only requests decided by their headers take this path (POST,
//! exact path, `application/grpc(+proto)`, no compression); anything else — gzip requests
//! included — goes to tonic unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::StreamBody;
use tokio_util::sync::CancellationToken;
use tonic::Status;

mod wire;

use super::convert::health_state;
use super::health::{HEALTH_STATE_KEY, WatchStatuses, check};
use crate::Handle;
use crate::snapshot::ServiceHealth;
use wire::{decode, framed};

const PATH: &str = "/grpc.health.v1.Health/Check";
const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Check requests are a service name; anything bigger is not one.
const MAX_REQUEST: usize = super::MAX_REQUEST_MESSAGE;

// Header names built once: a lookup or insert by `&str` parses and validates the name first.
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const HEALTH_STATE: HeaderName = HeaderName::from_static(HEALTH_STATE_KEY);

/// A tower layer that answers plain `grpc.health.v1.Health/Check` and `Watch` requests from
/// the engine itself, in front of tonic's router, and passes everything else on. Get one from
/// [`Front::fast_path`](super::Front::fast_path). [`serve`](super::serve) places it inside its
/// observation layer, so fast answers are counted and traced too.
///
/// It answers *before* whatever the server runs inside it: an interceptor, auth layer or
/// rate limit that an embedder adds to its tonic server after this layer never sees the
/// Checks and Watches answered here. Put such layers outside it (`.layer(auth).layer(fast)`),
/// or leave the fast path out.
#[derive(Debug, Clone)]
pub struct FastPathLayer {
    handle: Handle,
    streams_end: CancellationToken,
}

impl FastPathLayer {
    /// Answers Checks and Watches from `handle`; Watch streams end, after a final
    /// `NOT_SERVING`, when `streams_end` is cancelled. Built by [`Front::fast_path`].
    ///
    /// [`Front::fast_path`]: super::Front::fast_path
    pub(crate) fn new(handle: Handle, streams_end: CancellationToken) -> FastPathLayer {
        FastPathLayer {
            handle,
            streams_end,
        }
    }
}

impl<S> tower_layer::Layer<S> for FastPathLayer {
    type Service = FastPath<S>;

    fn layer(&self, inner: S) -> FastPath<S> {
        FastPath {
            inner,
            handle: self.handle.clone(),
            streams_end: self.streams_end.clone(),
        }
    }
}

/// The service [`FastPathLayer`] makes: answers eligible Checks itself, passes everything
/// else to `S`.
///
/// Servers clone their service for every request; a [`Handle`] clone is one reference count.
#[derive(Debug, Clone)]
pub struct FastPath<S> {
    inner: S,
    handle: Handle,
    streams_end: CancellationToken,
}

impl<S, B> tower_service::Service<http::Request<B>> for FastPath<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    B: http_body::Body<Data = Bytes>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = FastPathFuture<B, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let rpc = match eligible(&request) {
            Some(Kind::Check) => Rpc::Check,
            Some(Kind::Watch) => Rpc::Watch(self.streams_end.clone()),
            None => {
                return FastPathFuture::Passed {
                    call: self.inner.call(request),
                };
            }
        };
        FastPathFuture::Answering {
            body: request.into_body(),
            message: Bytes::new(),
            handle: self.handle.clone(),
            rpc,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`FastPath`]: the answer once the request message is in (it
    /// usually arrives with the headers, so the first poll completes), or the inner call.
    #[project = Projected]
    #[allow(missing_docs)]
    pub enum FastPathFuture<B, F> {
        /// Reading the request message, then answering from the snapshot.
        Answering {
            #[pin] body: B,
            message: Bytes,
            handle: Handle,
            rpc: Rpc,
        },
        /// Not a plain Check: the inner service's call.
        Passed { #[pin] call: F },
    }
}

impl<B, F, E> Future for FastPathFuture<B, F>
where
    B: http_body::Body<Data = Bytes>,
    F: Future<Output = Result<http::Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Passed { call } => call.poll(cx),
            Projected::Answering {
                mut body,
                message,
                handle,
                rpc,
            } => loop {
                let data = match ready!(body.as_mut().poll_frame(cx)) {
                    None => {
                        return Poll::Ready(Ok(match rpc {
                            Rpc::Check => answer(handle, message),
                            Rpc::Watch(end) => watch(handle, message, end),
                        }));
                    }
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => data,
                        Err(_trailers) => continue,
                    },
                    Some(Err(_)) => return Poll::Ready(Ok(unreadable())),
                };
                if message.len() + data.len() > MAX_REQUEST {
                    return Poll::Ready(Ok(unreadable()));
                }
                if message.is_empty() {
                    // The usual case: the whole message in one DATA frame, kept without a copy.
                    *message = data;
                } else {
                    let mut joined = BytesMut::with_capacity(message.len() + data.len());
                    joined.extend_from_slice(message);
                    joined.extend_from_slice(&data);
                    *message = joined.freeze();
                }
            },
        }
    }
}

fn unreadable() -> http::Response<tonic::body::Body> {
    Status::internal("failed to read the request").into_http()
}

/// The RPC a [`FastPathFuture`] answers; a Watch carries what ends it.
#[derive(Debug)]
pub enum Rpc {
    /// `grpc.health.v1.Health/Check`.
    Check,
    /// `grpc.health.v1.Health/Watch`, ended (after a final `NOT_SERVING`) by the token.
    Watch(CancellationToken),
}

/// Which RPC a request is, when the fast path can answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Check,
    Watch,
}

fn eligible<B>(request: &http::Request<B>) -> Option<Kind> {
    let headers = request.headers();
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let plain = headers.get(GRPC_ENCODING).is_none_or(|v| v == "identity");
    let grpc = request.method() == http::Method::POST
        && matches!(
            content_type,
            Some("application/grpc" | "application/grpc+proto")
        )
        && plain;
    match request.uri().path() {
        PATH if grpc => Some(Kind::Check),
        WATCH_PATH if grpc => Some(Kind::Watch),
        _ => None,
    }
}

fn answer(handle: &Handle, bytes: &[u8]) -> http::Response<tonic::body::Body> {
    let request = match decode(bytes) {
        Ok(request) => request,
        Err(status) => return status.into_http(),
    };
    match check(handle, &request.service) {
        Err(status) => status.into_http(),
        Ok((serving, state)) => {
            let frames = [
                Ok::<_, Infallible>(Frame::data(framed(serving))),
                Ok(Frame::trailers(ok_trailers())),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            grpc_response(tonic::body::Body::new(body), state)
        }
    }
}

fn watch(
    handle: &Handle,
    bytes: &[u8],
    end: &CancellationToken,
) -> http::Response<tonic::body::Body> {
    let request = match decode(bytes) {
        Ok(request) => request,
        Err(status) => return status.into_http(),
    };
    handle.wake_on_demand();
    let rx = handle.watch_service(&request.service);
    let initial = *rx.borrow();
    let body = WatchBody {
        statuses: WatchStatuses::new(rx, end.clone()),
        trailers_sent: false,
    };
    grpc_response(tonic::body::Body::new(body), initial)
}

fn grpc_response(
    body: tonic::body::Body,
    state: Option<ServiceHealth>,
) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
    headers.reserve(3);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    headers.insert(HEALTH_STATE, HeaderValue::from_static(health_state(state)));
    response
}

fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    trailers
}

/// A Watch response body: [`WatchStatuses`] as fixed frames, then `grpc-status: 0`.
struct WatchBody {
    statuses: WatchStatuses,
    trailers_sent: bool,
}

impl http_body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(match ready!(self.statuses.poll_next_unpin(cx)) {
            Some(status) => Frame::data(framed(status)),
            None => {
                self.trailers_sent = true;
                Frame::trailers(ok_trailers())
            }
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_grpc_checks_and_watches_take_the_fast_path() {
        let request = |path: &str, content_type: &str, encoding: Option<&str>| {
            let mut builder = http::Request::builder()
                .method("POST")
                .uri(path)
                .header("content-type", content_type);
            if let Some(e) = encoding {
                builder = builder.header("grpc-encoding", e);
            }
            builder.body(()).expect("valid request")
        };
        let check = |r| eligible(&r) == Some(Kind::Check);
        let watch = |r| eligible(&r) == Some(Kind::Watch);
        assert!(check(request(PATH, "application/grpc", None)));
        assert!(check(request(
            PATH,
            "application/grpc+proto",
            Some("identity")
        )));
        assert!(watch(request(WATCH_PATH, "application/grpc", None)));
        assert!(
            eligible(&request(PATH, "application/grpc", Some("gzip"))).is_none(),
            "tonic decompresses"
        );
        assert!(
            eligible(&request(WATCH_PATH, "application/grpc", Some("gzip"))).is_none(),
            "tonic decompresses"
        );
        assert!(eligible(&request(PATH, "application/grpc-web", None)).is_none());
        assert!(
            eligible(&request(
                "/grpc.health.v1.Health/List",
                "application/grpc",
                None
            ))
            .is_none()
        );
    }
}
