//! The listeners' instruments, registered in the embedder's [`Metrics`] registry the first
//! time a listener accepts: open connections, refused connections and server-side closes, by
//! listener (`grpc`, `http`) and reason.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: String,
    reason: String,
}

/// The connection families.
#[derive(Debug)]
pub(crate) struct ConnectionMetrics {
    open: Family<ListenerLabels, Gauge>,
    refused: Family<ListenerLabels, Counter>,
    closed: Family<ClosedLabels, Counter>,
}

/// One listener's connection counters.
#[derive(Debug, Clone)]
pub(crate) struct ListenerMetrics {
    pub(crate) open: Gauge,
    pub(crate) refused: Counter,
    pub(crate) first_request_timeouts: Counter,
    pub(crate) idle_closes: Counter,
}

impl ConnectionMetrics {
    /// The connection instruments of `metrics`, registered on first use.
    fn of(metrics: &Metrics) -> Arc<ConnectionMetrics> {
        metrics.instruments(|registry| {
            let m = ConnectionMetrics {
                open: Family::default(),
                refused: Family::default(),
                closed: Family::default(),
            };
            registry.register(
                "connections_open",
                "Open client connections, by listener",
                m.open.clone(),
            );
            registry.register(
                "connections_refused",
                "Connections closed at once because the listener had max_connections open",
                m.refused.clone(),
            );
            registry.register(
                "connections_closed",
                "Connections closed by the server, by listener and reason (first_request_timeout, idle_timeout)",
                m.closed.clone(),
            );
            m
        })
    }
}

impl ListenerMetrics {
    /// The counters of listener `name` in `metrics`.
    pub(crate) fn new(metrics: &Metrics, name: &str) -> ListenerMetrics {
        let m = ConnectionMetrics::of(metrics);
        let listener = ListenerLabels {
            listener: name.to_owned(),
        };
        let closed = |reason: &str| {
            m.closed
                .get_or_create(&ClosedLabels {
                    listener: name.to_owned(),
                    reason: reason.to_owned(),
                })
                .clone()
        };
        ListenerMetrics {
            open: m.open.get_or_create(&listener).clone(),
            refused: m.refused.get_or_create(&listener).clone(),
            first_request_timeouts: closed("first_request_timeout"),
            idle_closes: closed("idle_timeout"),
        }
    }
}
