//! `healthgate.v1.Detail`: why each service has its status. Health is always in the body with
//! status OK; the only errors are a missing or wrong bearer token.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb::detail::detail_server::{Detail, DetailServer};
use super::pb::detail::{DetailRequest, DetailResponse};
use crate::control::Reloader;
use crate::snapshot::Snapshot;
use crate::{Handle, auth};

/// The `healthgate.v1.Detail` implementation over an engine [`Handle`].
#[derive(Clone)]
pub struct DetailService {
    handle: Handle,
    access: auth::Access,
    config: Option<Arc<Reloader>>,
    streams_end: CancellationToken,
    feeds: Arc<Feeds>,
}

impl std::fmt::Debug for DetailService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetailService")
            .field("access", &self.access)
            .finish()
    }
}

impl DetailService {
    /// A service reading `handle`, for callers `access` admits (a bearer token in
    /// `authorization`, or an allowed client-certificate identity); Watch streams end when
    /// `streams_end` is cancelled.
    pub(crate) fn new(
        handle: Handle,
        access: auth::Access,
        config: Option<Arc<Reloader>>,
        streams_end: CancellationToken,
    ) -> DetailService {
        DetailService {
            handle,
            access,
            config,
            streams_end,
            feeds: Arc::default(),
        }
    }

    /// The tonic server: gzip accepted, and used for responses when the client accepts it.
    pub(crate) fn into_server(self) -> DetailServer<DetailService> {
        DetailServer::new(self)
            .max_decoding_message_size(super::MAX_REQUEST_MESSAGE)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let peer = request.extensions().get::<crate::listener::Peer>();
        match self.access.check(authorization, peer) {
            Some(_) => Ok(()),
            None => Err(Status::unauthenticated(
                "a valid bearer token or an allowed client certificate is required",
            )),
        }
    }
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
        self.handle.wake_on_demand();
        let snapshot = self.handle.snapshot();
        let request = request.get_ref();
        let mut response = convert::detail(&snapshot, &request.services, request.history);
        response.config = self.config.as_ref().map(|c| convert::config(&c.status()));
        Ok(Response::new(response))
    }

    type WatchStream = DetailStream;

    async fn watch(
        &self,
        request: Request<DetailRequest>,
    ) -> Result<Response<DetailStream>, Status> {
        self.authorize(&request)?;
        self.handle.wake_on_demand();
        let DetailRequest { services, history } = request.into_inner();
        let rx = self
            .feeds
            .subscribe(&self.handle, services, history, &self.streams_end)?;
        Ok(Response::new(Box::pin(detail_stream(
            rx,
            self.config.clone(),
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

type Latest = watch::Sender<Arc<DetailResponse>>;

/// The most distinct Detail.Watch requests (sets of service names) open at once; the newest
/// past it is `RESOURCE_EXHAUSTED`. Watchers of a request already open always get in.
pub const MAX_DETAIL_FEEDS: usize = 64;

/// A distinct Detail.Watch request: the set of service names asked for, and whether histories
/// come with the answers.
type FeedKey = Arc<(Vec<String>, bool)>;

/// The detail Watch feeds, one per distinct request (the set of service names asked for).
///
/// One task per feed computes the answer once per snapshot that changed what watchers are told
/// about ([`Handle::subscribe_changes`]: health, reasons, services, configuration — not the
/// latency-only publications) and sends it only when its fingerprint changed; every watcher of
/// the same request shares it. So 1,000 idle watchers of one request cost one computation per
/// real change, not 1,000 per publication, and nothing at all while nothing changes. A feed
/// ends, and leaves the map, when its last watcher goes.
#[derive(Debug, Default)]
struct Feeds {
    feeds: Mutex<HashMap<FeedKey, Latest>>,
}

impl Feeds {
    /// A receiver of the latest answer for `services`, starting a feed if there is none.
    fn subscribe(
        self: &Arc<Self>,
        handle: &Handle,
        mut services: Vec<String>,
        history: bool,
        end: &CancellationToken,
    ) -> Result<watch::Receiver<Arc<DetailResponse>>, Status> {
        // The answer does not depend on the order or repetition of names.
        services.sort_unstable();
        services.dedup();
        let key: FeedKey = Arc::new((services, history));
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = feeds.get(&key) {
            return Ok(tx.subscribe());
        }
        // Each distinct request is a feed that recomputes on every change: without a cap,
        // watchers asking for distinct name lists would bring back the cost per watcher.
        if feeds.len() >= MAX_DETAIL_FEEDS {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_DETAIL_FEEDS} distinct Detail.Watch requests are open; \
                 watch all services or a common list"
            )));
        }
        let mut changes = handle.subscribe_changes();
        changes.mark_unchanged();
        // The first answer from the latest snapshot (latencies included), computed once.
        let first = convert::detail(&handle.snapshot(), &key.0, key.1);
        let (tx, rx) = watch::channel(Arc::new(first));
        feeds.insert(key.clone(), tx.clone());
        tokio::spawn(self.clone().feed(key, tx, changes, end.clone()));
        Ok(rx)
    }

    async fn feed(
        self: Arc<Self>,
        services: FeedKey,
        tx: Latest,
        mut changes: watch::Receiver<Arc<Snapshot>>,
        end: CancellationToken,
    ) {
        let mut last = fingerprint(&tx.borrow());
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() {
                    // The engine is gone: keep the last answer until drain ends the streams
                    // or the last watcher leaves.
                    tokio::select! {
                        () = end.cancelled() => {}
                        () = tx.closed() => {}
                    }
                    break;
                },
                () = tx.closed() => {
                    // Watchers subscribe under the lock, so under it this count is final.
                    let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
                    if tx.receiver_count() == 0 {
                        feeds.remove(&services);
                        return;
                    }
                    continue; // a watcher joined since `closed` resolved
                }
                () = end.cancelled() => break,
            }
            let snapshot = changes.borrow_and_update().clone();
            let response = convert::detail(&snapshot, &services.0, services.1);
            let key = fingerprint(&response);
            if key != last {
                last = key;
                tx.send_replace(Arc::new(response));
            }
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if feeds.get(&services).is_some_and(|t| t.same_channel(&tx)) {
            feeds.remove(&services);
        }
    }
}

/// A watcher's stream: the feed's latest answer at once, then each one it sends; ends on drain.
/// The feed's messages, each with the config in force as it is sent (a failed reload changes
/// no health, so it sends nothing by itself; the next message carries it).
fn detail_stream(
    rx: watch::Receiver<Arc<DetailResponse>>,
    config: Option<Arc<Reloader>>,
    end: CancellationToken,
) -> impl Stream<Item = Result<DetailResponse, Status>> + Send {
    tokio_stream::wrappers::WatchStream::new(rx)
        .map(move |response| {
            let mut response = (*response).clone();
            response.config = config.as_ref().map(|c| convert::config(&c.status()));
            Ok(response)
        })
        .take_until(end.cancelled_owned())
}
