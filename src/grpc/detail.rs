//! `healthgate.v1.Detail`: why each service has its status. Health is always in the body with
//! status OK; the only errors are a missing or wrong bearer token.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb::detail::detail_server::{Detail, DetailServer};
use super::pb::detail::{DetailRequest, DetailResponse};
use crate::Handle;
use crate::snapshot::Snapshot;

/// The `healthgate.v1.Detail` implementation over an engine [`Handle`].
#[derive(Clone)]
pub struct DetailService {
    handle: Handle,
    token: Option<Arc<str>>,
    streams_end: CancellationToken,
}

impl std::fmt::Debug for DetailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetailService")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl DetailService {
    /// A service reading `handle`. With a `token`, callers must send
    /// `authorization: Bearer TOKEN`; Watch streams end when `streams_end` is cancelled.
    pub fn new(
        handle: Handle,
        token: Option<String>,
        streams_end: CancellationToken,
    ) -> DetailService {
        DetailService {
            handle,
            token: token.map(Arc::from),
            streams_end,
        }
    }

    /// The tonic server: gzip accepted, and used for responses when the client accepts it.
    pub fn into_server(self) -> DetailServer<DetailService> {
        DetailServer::new(self)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(Status::unauthenticated("a valid bearer token is required")),
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A detail Watch stream.
pub type DetailStream = Pin<Box<dyn Stream<Item = Result<DetailResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Detail for DetailService {
    async fn get(
        &self,
        request: Request<DetailRequest>,
    ) -> Result<Response<DetailResponse>, Status> {
        self.authorize(&request)?;
        let snapshot = self.handle.snapshot();
        Ok(Response::new(convert::detail(
            &snapshot,
            &request.get_ref().services,
        )))
    }

    type WatchStream = DetailStream;

    async fn watch(
        &self,
        request: Request<DetailRequest>,
    ) -> Result<Response<DetailStream>, Status> {
        self.authorize(&request)?;
        self.handle.snapshot();
        let rx = self.handle.subscribe();
        let services = request.into_inner().services;
        Ok(Response::new(Box::pin(detail_stream(
            rx,
            services,
            self.streams_end.clone(),
        ))))
    }
}

/// What a detail watcher is told about: health and reasons, not latencies or counters.
fn fingerprint(r: &DetailResponse) -> Vec<(String, i32, i32, String)> {
    let services = r.services.iter().map(|s| {
        (
            s.name.clone(),
            s.health,
            s.serving_status,
            s.deciding.join(","),
        )
    });
    let deps = r.dependencies.iter().map(|d| {
        let reason = d
            .last_outcome
            .as_ref()
            .map(|o| o.reason.clone())
            .unwrap_or_default();
        (d.name.clone(), d.health, -1, reason)
    });
    let mut out: Vec<_> = services.chain(deps).collect();
    out.push((String::new(), i32::from(r.shutting_down), -2, String::new()));
    out
}

fn detail_stream(
    rx: watch::Receiver<Arc<Snapshot>>,
    services: Vec<String>,
    end: CancellationToken,
) -> impl Stream<Item = Result<DetailResponse, Status>> + Send {
    let state = (rx, services, end, None::<Vec<(String, i32, i32, String)>>);
    futures_util::stream::unfold(state, |(mut rx, services, end, mut last)| async move {
        loop {
            if end.is_cancelled() {
                return None;
            }
            let snapshot = rx.borrow_and_update().clone();
            let response = convert::detail(&snapshot, &services);
            let key = fingerprint(&response);
            if last.as_ref() != Some(&key) {
                last = Some(key);
                return Some((Ok(response), (rx, services, end, last)));
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { end.cancelled().await },
                _ = end.cancelled() => {}
            }
        }
    })
}
