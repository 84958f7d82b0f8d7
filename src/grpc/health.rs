//! `grpc.health.v1.Health`, to the letter of the canonical proto and its consumers: Check,
//! Watch and List, all answered from what the engine already published — never a probe.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::convert::{health_state, serving_status};
use super::pb::health::health_check_response::ServingStatus;
use super::pb::health::health_server::{Health, HealthServer};
use super::pb::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use crate::Handle;
use crate::engine::{ServiceWatch, WatchGuard};
use crate::snapshot::ServiceHealth;

/// The most names `List` returns; more is `RESOURCE_EXHAUSTED` (canonical proto).
pub const LIST_LIMIT: usize = 100;

pub use crate::health::HEALTH_STATE_KEY;

/// The `grpc.health.v1.Health` implementation over an engine [`Handle`].
#[derive(Debug, Clone)]
pub struct HealthService {
    handle: Handle,
    /// Cancelled when drain ends Watch streams (after their final `NOT_SERVING`).
    streams_end: CancellationToken,
}

impl HealthService {
    /// A service reading `handle`; Watch streams end when `streams_end` is cancelled.
    pub(crate) fn new(handle: Handle, streams_end: CancellationToken) -> HealthService {
        HealthService {
            handle,
            streams_end,
        }
    }

    /// The tonic server: accepts gzip-compressed requests, answers uncompressed (a status
    /// message is two bytes; compressing it only costs).
    pub(crate) fn into_server(self) -> HealthServer<HealthService> {
        HealthServer::new(self)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(super::MAX_REQUEST_MESSAGE)
    }
}

fn response<T>(message: T, status: Option<ServiceHealth>) -> Response<T> {
    let mut response = Response::new(message);
    response.metadata_mut().insert(
        HEALTH_STATE_KEY,
        MetadataValue::from_static(health_state(status)),
    );
    response
}

fn message(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

/// A Watch stream, boxed: its state is one watch receiver and a token.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// The answer to `Check(name)`: the wire status and what `x-health-state` says, or
/// `NOT_FOUND`. Shared by the tonic service and the fast path.
pub(crate) fn check(
    handle: &Handle,
    name: &str,
) -> Result<(ServingStatus, Option<ServiceHealth>), Status> {
    handle.wake_on_demand();
    let snapshot = handle.snapshot();
    let Some(service) = snapshot.service(name) else {
        return Err(Status::not_found("unknown service"));
    };
    let status = Some(service.status);
    Ok((serving_status(status), status))
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let (serving, status) = check(&self.handle, &request.get_ref().service)?;
        Ok(response(message(serving), status))
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        self.handle.wake_on_demand();
        let snapshot = self.handle.snapshot();
        if snapshot.services.len() > LIST_LIMIT {
            return Err(Status::resource_exhausted(format!(
                "more than {LIST_LIMIT} services"
            )));
        }
        let statuses = snapshot
            .services
            .iter()
            .map(|s| (s.name.to_string(), message(serving_status(Some(s.status)))))
            .collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.handle.wake_on_demand();
        let rx = self.handle.watch_service(&request.get_ref().service);
        let initial = *rx.borrow();
        let stream = WatchStatuses::new(rx, self.streams_end.clone()).map(|s| Ok(message(s)));
        Ok(response(Box::pin(stream) as WatchStream, initial))
    }
}

/// The statuses a Watch sends: the current one at once, then each *change of wire status* (a
/// Healthy ↔ Degraded flip on a lenient service sends nothing). Holds no queue: a slow reader
/// skips to the latest value. When `end` is cancelled it yields a final `NOT_SERVING` (unless
/// that was the last word already) and ends; if the engine goes away without a drain it stays
/// open until then. Shared by [`HealthService`] and the fast path, so both send the same.
pub(crate) struct WatchStatuses {
    changes: tokio_stream::wrappers::WatchStream<Option<ServiceHealth>>,
    /// After `changes` (fields drop in order): gives the channel back once the receiver is gone.
    _guard: WatchGuard,
    engine_gone: bool,
    end: Pin<Box<WaitForCancellationFutureOwned>>,
    last: Option<ServingStatus>,
    done: bool,
}

impl WatchStatuses {
    pub(crate) fn new(watch: ServiceWatch, end: CancellationToken) -> WatchStatuses {
        let (rx, guard) = watch.into_parts();
        WatchStatuses {
            changes: tokio_stream::wrappers::WatchStream::new(rx),
            _guard: guard,
            engine_gone: false,
            end: Box::pin(end.cancelled_owned()),
            last: None,
            done: false,
        }
    }

    fn send(&mut self, status: ServingStatus) -> Option<ServingStatus> {
        (self.last != Some(status)).then(|| {
            self.last = Some(status);
            status
        })
    }
}

impl Stream for WatchStatuses {
    type Item = ServingStatus;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServingStatus>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.end.as_mut().poll(cx).is_ready() {
                this.done = true;
                // The last word is always NOT_SERVING.
                return Poll::Ready(this.send(ServingStatus::NotServing));
            }
            if this.engine_gone {
                return Poll::Pending;
            }
            match this.changes.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.engine_gone = true,
                Poll::Ready(Some(health)) => {
                    if let Some(status) = this.send(serving_status(health)) {
                        return Poll::Ready(Some(status));
                    }
                }
            }
        }
    }
}
