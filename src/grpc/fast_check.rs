//! A fast path for `grpc.health.v1.Health/Check`, the RPC every probe, mesh and load balancer
//! sends: answered at the HTTP/2 level, in front of tonic's router, with the same bytes tonic
//! would send — status 200, `content-type: application/grpc`, `grpc-accept-encoding`,
//! `x-health-state`, one uncompressed message, `grpc-status: 0` trailers; `NOT_FOUND` and
//! protocol errors as trailers-only responses, with tonic's own messages.
//!
//! Why: a Check answer is a snapshot lookup, yet tonic's generic per-request machinery (codec,
//! boxed handler futures, request/response wrappers) cost ~4.5 µs of CPU per Check against
//! ~10.5 µs for everything hyper/h2 does — see BENCHMARKS.md. Only requests decided by their
//! headers take this path (POST, exact path, `application/grpc(+proto)`, no compression);
//! anything else — gzip requests included — goes to tonic unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body::Frame;
use http_body_util::StreamBody;
use prost::Message;
use tonic::Status;

use super::convert::health_state;
use super::health::{HEALTH_STATE_KEY, check};
use super::pb::health::{HealthCheckRequest, HealthCheckResponse};
use crate::Handle;

const PATH: &str = "/grpc.health.v1.Health/Check";

/// Check requests are a service name; anything bigger is not one.
const MAX_REQUEST: usize = 16 * 1024;

// Header names built once: a lookup or insert by `&str` parses and validates the name first.
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const HEALTH_STATE: HeaderName = HeaderName::from_static(HEALTH_STATE_KEY);

/// A tower layer that answers plain `grpc.health.v1.Health/Check` requests from `handle`
/// itself, in front of tonic's router, and passes everything else on. [`serve`](super::serve)
/// places it inside its observation layer, so fast answers are counted and traced too; an
/// embedder serving [`HealthService`](super::HealthService) on its own tonic server can add
/// it with `Server::builder().layer(FastCheckLayer::new(handle))`.
#[derive(Debug, Clone)]
pub struct FastCheckLayer {
    handle: Arc<Handle>,
}

impl FastCheckLayer {
    /// Answers from `handle`'s snapshots.
    pub fn new(handle: Handle) -> FastCheckLayer {
        FastCheckLayer {
            handle: Arc::new(handle),
        }
    }
}

impl<S> tower_layer::Layer<S> for FastCheckLayer {
    type Service = FastCheck<S>;

    fn layer(&self, inner: S) -> FastCheck<S> {
        FastCheck {
            inner,
            handle: self.handle.clone(),
        }
    }
}

/// The service [`FastCheckLayer`] makes: answers eligible Checks itself, passes everything
/// else to `S`.
///
/// Servers clone their service for every request, so the handle sits behind one `Arc`: a
/// clone is one reference count, not the handle's four.
#[derive(Debug, Clone)]
pub struct FastCheck<S> {
    inner: S,
    handle: Arc<Handle>,
}

impl<S, B> tower_service::Service<http::Request<B>> for FastCheck<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    B: http_body::Body<Data = Bytes>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = FastCheckFuture<B, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !eligible(&request) {
            return FastCheckFuture::Passed {
                call: self.inner.call(request),
            };
        }
        FastCheckFuture::Answering {
            body: request.into_body(),
            message: Bytes::new(),
            handle: self.handle.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`FastCheck`]: the answer once the request message is in (it
    /// usually arrives with the headers, so the first poll completes), or the inner call.
    #[project = Projected]
    #[allow(missing_docs)]
    pub enum FastCheckFuture<B, F> {
        /// Reading the request message, then answering from the snapshot.
        Answering { #[pin] body: B, message: Bytes, handle: Arc<Handle> },
        /// Not a plain Check: the inner service's call.
        Passed { #[pin] call: F },
    }
}

impl<B, F, E> Future for FastCheckFuture<B, F>
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
            } => loop {
                let data = match ready!(body.as_mut().poll_frame(cx)) {
                    None => return Poll::Ready(Ok(answer(handle, message))),
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

fn eligible<B>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let plain = headers.get(GRPC_ENCODING).is_none_or(|v| v == "identity");
    request.method() == http::Method::POST
        && request.uri().path() == PATH
        && matches!(
            content_type,
            Some("application/grpc" | "application/grpc+proto")
        )
        && plain
}

fn answer(handle: &Handle, bytes: &[u8]) -> http::Response<tonic::body::Body> {
    let request = match decode(bytes) {
        Ok(request) => request,
        Err(status) => return status.into_http(),
    };
    match check(handle, &request.service) {
        Err(status) => status.into_http(),
        Ok((serving, state)) => {
            let message = HealthCheckResponse {
                status: serving as i32,
            };
            let mut data = BytesMut::with_capacity(5 + message.encoded_len());
            data.extend_from_slice(&[0]);
            data.extend_from_slice(
                &u32::try_from(message.encoded_len())
                    .unwrap_or(0)
                    .to_be_bytes(),
            );
            message.encode_raw(&mut data);
            let mut trailers = http::HeaderMap::with_capacity(1);
            trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
            let frames = [
                Ok::<_, Infallible>(Frame::data(data.freeze())),
                Ok(Frame::trailers(trailers)),
            ];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            let mut response = http::Response::new(tonic::body::Body::new(body));
            let headers = response.headers_mut();
            headers.reserve(3);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            headers.insert(HEALTH_STATE, HeaderValue::from_static(health_state(state)));
            response
        }
    }
}

/// One uncompressed, length-prefixed message, with tonic's wording for what is wrong.
fn decode(bytes: &[u8]) -> Result<HealthCheckRequest, Status> {
    let Some((&flag, rest)) = bytes.split_first() else {
        return Err(Status::internal("Missing request message."));
    };
    if flag != 0 {
        return Err(Status::internal(
            "protocol error: received message with compressed-flag but no grpc-encoding was specified",
        ));
    }
    let (len, message) = rest
        .split_at_checked(4)
        .ok_or_else(|| Status::internal("protocol error: truncated message"))?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if message.len() != len {
        return Err(Status::internal(
            "protocol error: message length does not match its prefix",
        ));
    }
    HealthCheckRequest::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn decodes_one_plain_message() {
        let message = HealthCheckRequest {
            service: "readiness".into(),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&framed(0, &message)).expect("valid").service,
            "readiness"
        );
        assert_eq!(
            decode(&framed(0, &[]))
                .expect("empty message is service \"\"")
                .service,
            ""
        );
    }

    #[test]
    fn rejects_what_tonic_rejects() {
        let message = HealthCheckRequest {
            service: "x".into(),
        }
        .encode_to_vec();
        let compressed = decode(&framed(1, &message)).expect_err("compressed flag, no encoding");
        assert!(
            compressed
                .message()
                .starts_with("protocol error: received message with compressed-flag")
        );
        assert_eq!(
            decode(&[]).expect_err("no message").code(),
            tonic::Code::Internal
        );
        assert_eq!(
            decode(&[0, 0, 0]).expect_err("truncated prefix").code(),
            tonic::Code::Internal
        );
        let mut long = framed(0, &message);
        long.push(0);
        assert_eq!(
            decode(&long).expect_err("trailing bytes").code(),
            tonic::Code::Internal
        );
        assert_eq!(
            decode(&framed(0, &[0xff, 0xff]))
                .expect_err("not protobuf")
                .code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn only_plain_grpc_checks_take_the_fast_path() {
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
        assert!(eligible(&request(PATH, "application/grpc", None)));
        assert!(eligible(&request(
            PATH,
            "application/grpc+proto",
            Some("identity")
        )));
        assert!(
            !eligible(&request(PATH, "application/grpc", Some("gzip"))),
            "tonic decompresses"
        );
        assert!(!eligible(&request(PATH, "application/grpc-web", None)));
        assert!(!eligible(&request(
            "/grpc.health.v1.Health/Watch",
            "application/grpc",
            None
        )));
    }
}
