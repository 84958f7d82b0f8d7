//! The gRPC front's instruments, registered in the embedder's [`Metrics`] registry the first
//! time a front is built: requests by method and status code, open Watch streams by method.
//! Method labels come from a fixed list (anything else is `other`), so cardinality never
//! depends on traffic.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;

/// RPC methods counted by name; anything else is `other`.
const KNOWN_METHODS: [&str; 17] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/healthgate.v1.Detail/Get",
    "/healthgate.v1.Detail/Watch",
    "/healthgate.v1.Admin/Report",
    "/healthgate.v1.Admin/Override",
    "/healthgate.v1.Admin/Clear",
    "/healthgate.v1.Admin/Reload",
    "/healthgate.v1.Admin/Refresh",
    "/healthgate.v1.Admin/AddDependency",
    "/healthgate.v1.Admin/SetService",
    "/healthgate.v1.Admin/RemoveDependency",
    "/healthgate.v1.Admin/RemoveService",
    "/healthgate.v1.Admin/Show",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// gRPC status codes, 0 to 16.
const CODES: usize = 17;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// `healthgate_grpc_requests_total` and `healthgate_watch_streams`.
#[derive(Debug)]
pub(crate) struct RpcMetrics {
    grpc_requests: Family<RpcLabels, Counter>,
    watch_streams: Family<MethodLabels, Gauge>,
    /// Handles into `grpc_requests`, by (method index, code).
    rpc_counters: Box<[OnceLock<Counter>]>,
}

impl RpcMetrics {
    /// The gRPC instruments of `metrics`, registered on first use.
    pub(crate) fn of(metrics: &Metrics) -> Arc<RpcMetrics> {
        metrics.instruments(|registry| {
            let rpc = RpcMetrics {
                grpc_requests: Family::default(),
                watch_streams: Family::default(),
                rpc_counters: (0..(KNOWN_METHODS.len() + 1) * CODES)
                    .map(|_| OnceLock::new())
                    .collect(),
            };
            registry.register(
                "grpc_requests",
                "gRPC requests served, by method and status code",
                rpc.grpc_requests.clone(),
            );
            registry.register(
                "watch_streams",
                "Open Watch streams, by method",
                rpc.watch_streams.clone(),
            );
            rpc
        })
    }

    /// Counts a finished RPC. Allocation-free after the first call per (method, code): the
    /// counter handles live in a fixed table, since both label sets are fixed.
    pub(crate) fn rpc_finished(&self, method: &str, code: tonic::Code) {
        let m = KNOWN_METHODS
            .iter()
            .position(|k| *k == method)
            .unwrap_or(KNOWN_METHODS.len());
        let slot = &self.rpc_counters[m * CODES + code as usize];
        slot.get_or_init(|| {
            let labels = RpcLabels {
                method: method_label(method).to_owned(),
                code: crate::grpc_code::code_name(code).to_owned(),
            };
            self.grpc_requests.get_or_create_owned(&labels)
        })
        .inc();
    }

    /// Counts an open stream until the returned guard is dropped.
    pub(crate) fn stream_opened(self: &Arc<Self>, method: &'static str) -> StreamGuard {
        self.watch_streams
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .inc();
        StreamGuard {
            metrics: self.clone(),
            method,
        }
    }
}

/// The method label for a request path: the path itself when known, else `other`.
pub(crate) fn method_label(path: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("other")
}

/// Decrements the open-stream gauge when dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    metrics: Arc<RpcMetrics>,
    method: &'static str,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics
            .watch_streams
            .get_or_create(&MethodLabels {
                method: self.method.to_owned(),
            })
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_rpc_paths_share_one_label() {
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/random.Service/Whatever"), "other");
    }

    #[test]
    fn requests_are_counted_by_method_and_code_and_registered_once() {
        let metrics = Metrics::new();
        let rpc = RpcMetrics::of(&metrics);
        rpc.rpc_finished("/grpc.health.v1.Health/Check", tonic::Code::Ok);
        RpcMetrics::of(&metrics).rpc_finished("/x.Y/Z", tonic::Code::NotFound);
        let text = metrics.encode();
        assert!(text.contains(
            "healthgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 1"
        ));
        assert!(
            text.contains("healthgate_grpc_requests_total{method=\"other\",code=\"NOT_FOUND\"} 1")
        );
        assert_eq!(
            text.matches("# TYPE healthgate_grpc_requests counter")
                .count(),
            1
        );
        let guard = rpc.stream_opened("/grpc.health.v1.Health/Watch");
        assert!(
            metrics
                .encode()
                .contains("healthgate_watch_streams{method=\"/grpc.health.v1.Health/Watch\"} 1")
        );
        drop(guard);
        assert!(
            metrics
                .encode()
                .contains("healthgate_watch_streams{method=\"/grpc.health.v1.Health/Watch\"} 0")
        );
    }
}
