//! Per-RPC observation, as a tower layer on the server: a span following OpenTelemetry's RPC
//! conventions (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, joined to
//! the caller's `traceparent`), requests counted by method and status code, and open Watch
//! streams counted until their body is dropped.
//!
//! The status code is read where gRPC puts it: in the trailers, or in the headers of a
//! trailers-only (error) response. A body dropped before its trailers is a cancelled call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt;
use tonic::Code;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::metrics::{RpcMetrics, StreamGuard, method_label};
use crate::metrics::Metrics;

// Built once: a lookup by `&str` parses the name first, on every request.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The layer; `metrics` may be absent (spans only).
#[derive(Debug, Clone, Default)]
pub(crate) struct ObserveLayer {
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.as_deref().map(RpcMetrics::of),
        }
    }
}

/// The service the layer wraps around the router.
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    metrics: Option<Arc<RpcMetrics>>,
}

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Observe<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let name = method.trim_start_matches('/');
        let (service, rpc_method) = name.split_once('/').unwrap_or(("other", "other"));
        let span = tracing::info_span!(
            "rpc",
            otel.name = name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = rpc_method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
        );
        let parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace_context::parse);
        if let Some(parent) = parent {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
        let call = self.inner.call(request).instrument(span.clone());
        ObserveFuture {
            call,
            span: Some(span),
            metrics: self.metrics.clone(),
            method,
        }
    }
}

pin_project_lite::pin_project! {
    /// The call, wrapped in place (no box, no copy of the router's future).
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        call: tracing::instrument::Instrumented<F>,
        span: Option<tracing::Span>,
        metrics: Option<Arc<RpcMetrics>>,
        method: &'static str,
    }
}

impl<F, ResBody, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<ObservedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.call.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        let method = *this.method;
        let metrics = this.metrics.take();
        let stream = method
            .ends_with("/Watch")
            .then(|| metrics.as_ref().map(|m| m.stream_opened(method)))
            .flatten();
        let span = this.span.take().unwrap_or_else(tracing::Span::none);
        let mut finish = Some(Finish {
            span,
            metrics,
            method,
            _stream: stream,
        });
        // A trailers-only response (an error) carries its status in the headers.
        if let Some(code) = status_of(response.headers())
            && let Some(f) = finish.take()
        {
            f.done(code);
        }
        Poll::Ready(Ok(response.map(|inner| ObservedBody { inner, finish })))
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    let code: i32 = headers.get(GRPC_STATUS)?.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(code))
}

/// What to record when the call ends.
#[derive(Debug)]
struct Finish {
    span: tracing::Span,
    metrics: Option<Arc<RpcMetrics>>,
    method: &'static str,
    _stream: Option<StreamGuard>,
}

impl Finish {
    fn done(self, code: Code) {
        self.span.record("rpc.grpc.status_code", code as i32);
        // Server-side errors, per OpenTelemetry's gRPC conventions.
        if matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ) {
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some(m) = &self.metrics {
            m.rpc_finished(self.method, code);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the call's status when its trailers pass, or when it is
    /// dropped early (a cancelled call).
    pub(crate) struct ObservedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(finish) = this.project().finish.take() {
                finish.done(Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| status_of(t).unwrap_or(Code::Unknown)),
            Poll::Ready(Some(Err(_))) => Some(Code::Internal),
            // Ended without trailers: not a well-formed gRPC response.
            Poll::Ready(None) => Some(Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(finish) = this.finish.take()
        {
            finish.done(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
