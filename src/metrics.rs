//! Prometheus metrics, in an explicit registry the embedder owns (no globals).
//!
//! Labels are names only — dependency, service, RPC method, and fixed value sets (outcome,
//! state, gRPC code) — so cardinality is bounded by the configuration, never by traffic: RPC
//! paths outside the known set are counted as `other`. Series of removed dependencies and
//! services are removed, not left at their last value.
//!
//! The health gauges are not maintained at all: a collector reads them from the engine's
//! latest snapshot at scrape time, so they cost nothing per probe outcome (with 10,000
//! dependencies, refreshing them on every publication cost more than the probing) and can
//! never disagree with what Check answers.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::{Health, Outcome};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`Metrics::encode_classic`]'s output.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// RPC methods counted by name; anything else is `other`.
const KNOWN_METHODS: [&str; 7] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/healthgate.v1.Detail/Get",
    "/healthgate.v1.Detail/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// gRPC status codes, 0 to 16.
const CODES: usize = 17;

const OUTCOMES: [&str; 3] = ["healthy", "degraded", "unhealthy"];
const STATES: [Health; 4] = [
    Health::Healthy,
    Health::Degraded,
    Health::Unknown,
    Health::Unhealthy,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    dependency: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyTransitionLabels {
    dependency: String,
    to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceTransitionLabels {
    service: String,
    to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    listener: String,
    reason: String,
}

/// One listener's connection counters (see [`crate::listener`]).
#[derive(Debug, Clone)]
pub(crate) struct ListenerMetrics {
    pub(crate) open: Gauge,
    pub(crate) refused: Counter,
    pub(crate) first_request_timeouts: Counter,
    pub(crate) idle_closes: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type DurationFamily = Family<ProbeLabels, Histogram, fn() -> Histogram>;

fn probe_buckets() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The health as a number, in severity order, so `max` is the worst:
/// 0 healthy, 1 degraded, 2 unknown, 3 unhealthy.
fn level(h: Health) -> i64 {
    match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        Health::Unknown => 2,
        Health::Unhealthy => 3,
    }
}

/// healthgate's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The health gauges, from the attached engine's snapshots.
    gauges: Arc<HealthGauges>,
    probe_duration: DurationFamily,
    dependency_transitions: Family<DependencyTransitionLabels, Counter>,
    service_transitions: Family<ServiceTransitionLabels, Counter>,
    grpc_requests: Family<RpcLabels, Counter>,
    watch_streams: Family<MethodLabels, Gauge>,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_refused: Family<ListenerLabels, Counter>,
    connections_closed: Family<ClosedLabels, Counter>,
    dropped_spans: Counter,
    /// Handles into `grpc_requests`, by (method index, code).
    rpc_counters: Box<[OnceLock<Counter>]>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every healthgate metric, prefixed `healthgate_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("healthgate");
        let m = Metrics {
            registry: Registry::default(),
            gauges: Arc::default(),
            probe_duration: DurationFamily::new_with_constructor(probe_buckets),
            dependency_transitions: Family::default(),
            service_transitions: Family::default(),
            grpc_requests: Family::default(),
            watch_streams: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            connections_closed: Family::default(),
            dropped_spans: Counter::default(),
            rpc_counters: (0..(KNOWN_METHODS.len() + 1) * CODES)
                .map(|_| OnceLock::new())
                .collect(),
        };
        registry.register_collector(Box::new(m.gauges.clone()));
        registry.register_with_unit(
            "probe_duration",
            "Probe run duration, by outcome",
            Unit::Seconds,
            m.probe_duration.clone(),
        );
        registry.register(
            "dependency_transitions",
            "Dependency health transitions, by new health",
            m.dependency_transitions.clone(),
        );
        registry.register(
            "service_transitions",
            "Service health transitions, by new health",
            m.service_transitions.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests served, by method and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "watch_streams",
            "Open Watch streams, by method",
            m.watch_streams.clone(),
        );
        registry.register(
            "connections_open",
            "Open client connections, by listener",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener had max_connections open",
            m.connections_refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed by the server, by listener and reason (first_request_timeout, idle_timeout)",
            m.connections_closed.clone(),
        );
        registry.register(
            "dropped_spans",
            "Trace spans dropped because the export queue was full or export failed",
            m.dropped_spans.clone(),
        );
        // A gauge, not OpenMetrics' `info` type: classic-format tools (promtool) reject `info`.
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Build information; the value is always 1",
            build,
        );
        Metrics { registry, ..m }
    }

    /// The connection counters of listener `name` (`grpc`, `http`).
    pub(crate) fn listener(&self, name: &str) -> ListenerMetrics {
        let listener = ListenerLabels {
            listener: name.to_owned(),
        };
        let closed = |reason: &str| {
            self.connections_closed
                .get_or_create(&ClosedLabels {
                    listener: name.to_owned(),
                    reason: reason.to_owned(),
                })
                .clone()
        };
        ListenerMetrics {
            open: self.connections_open.get_or_create(&listener).clone(),
            refused: self.connections_refused.get_or_create(&listener).clone(),
            first_request_timeouts: closed("first_request_timeout"),
            idle_closes: closed("idle_timeout"),
        }
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the classic Prometheus text format (0.0.4, [`CLASSIC_CONTENT_TYPE`]), for
    /// scrapers and tools that do not speak OpenMetrics (`promtool check metrics`, curl).
    ///
    /// The two differ here only in that OpenMetrics names a counter family without `_total`
    /// (its samples carry it) and has `# UNIT` and `# EOF` lines.
    pub fn encode_classic(&self) -> String {
        let open = self.encode();
        let counters: BTreeSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let meta = ["# HELP ", "# TYPE "]
                .iter()
                .find_map(|p| Some((*p, line.strip_prefix(p)?)));
            match meta {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let name = if counters.contains(name) {
                        format!("{name}_total")
                    } else {
                        name.to_owned()
                    };
                    out.push_str(&format!("{prefix}{name} {tail}"));
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The dropped-spans counter, for the span exporter to increment.
    pub fn dropped_spans(&self) -> Counter {
        self.dropped_spans.clone()
    }

    pub(crate) fn probe_finished(&self, dependency: &str, outcome: &Outcome) {
        let labels = ProbeLabels {
            dependency: dependency.to_owned(),
            outcome: outcome.health().as_str().to_owned(),
        };
        self.probe_duration
            .get_or_create(&labels)
            .observe(outcome.latency.as_secs_f64());
    }

    pub(crate) fn dependency_transition(&self, dependency: &str, to: Health) {
        let labels = DependencyTransitionLabels {
            dependency: dependency.to_owned(),
            to: to.as_str().to_owned(),
        };
        self.dependency_transitions.get_or_create(&labels).inc();
    }

    pub(crate) fn service_transition(&self, service: &str, to: Health) {
        let labels = ServiceTransitionLabels {
            service: service.to_owned(),
            to: to.as_str().to_owned(),
        };
        self.service_transitions.get_or_create(&labels).inc();
    }

    /// Reads the health gauges from `snapshots` from now on (the engine calls this once; a
    /// second engine on the same `Metrics` is ignored).
    pub(crate) fn attach(&self, snapshots: watch::Receiver<Arc<Snapshot>>) {
        let _ = self.gauges.snapshots.set(snapshots);
    }

    /// Removes a removed dependency's series.
    pub(crate) fn forget_dependency(&self, name: &str) {
        let dependency = name.to_owned();
        for outcome in OUTCOMES {
            self.probe_duration.remove(&ProbeLabels {
                dependency: dependency.clone(),
                outcome: outcome.to_owned(),
            });
        }
        for to in STATES {
            self.dependency_transitions
                .remove(&DependencyTransitionLabels {
                    dependency: dependency.clone(),
                    to: to.as_str().to_owned(),
                });
        }
    }

    /// Removes a removed service's series.
    pub(crate) fn forget_service(&self, name: &str) {
        for to in STATES {
            self.service_transitions.remove(&ServiceTransitionLabels {
                service: name.to_owned(),
                to: to.as_str().to_owned(),
            });
        }
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

/// The health gauges, encoded from the latest snapshot at each scrape.
#[derive(Debug, Default)]
struct HealthGauges {
    snapshots: OnceLock<watch::Receiver<Arc<Snapshot>>>,
}

impl Collector for HealthGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(snapshots) = self.snapshots.get() else {
            return Ok(());
        };
        let snapshot = snapshots.borrow().clone();
        let deps = || snapshot.dependencies.iter();
        let services = || snapshot.services.iter();
        gauges(
            &mut encoder,
            "dependency_health",
            "Dependency health: 0 healthy, 1 degraded, 2 unknown, 3 unhealthy",
            "dependency",
            deps().map(|d| (&*d.name, level(d.health))),
        )?;
        gauges(
            &mut encoder,
            "service_health",
            "Service health: 0 healthy, 1 degraded, 2 unknown, 3 unhealthy",
            "service",
            services().map(|s| (&*s.name, level(s.status.health))),
        )?;
        gauges(
            &mut encoder,
            "service_serving",
            "1 when grpc.health.v1 answers SERVING for the service",
            "service",
            services().map(|s| (&*s.name, i64::from(s.status.serving))),
        )
    }
}

/// One gauge family with a series per `(label value, value)`; nothing at all when empty.
fn gauges<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl ExactSizeIterator<Item = (&'a str, i64)>,
) -> Result<(), std::fmt::Error> {
    if series.len() == 0 {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, gauge) in series {
        family
            .encode_family(&[(label, value)])?
            .encode_gauge(&gauge)?;
    }
    Ok(())
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
    metrics: Arc<Metrics>,
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

/// An HTTP router serving `GET /metrics` (for `[server] http_listen`): OpenMetrics to clients
/// that accept it (Prometheus asks for it), the classic text format to everyone else.
pub fn http_router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let metrics = metrics.clone();
            async move {
                let open_metrics = headers
                    .get_all(axum::http::header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                if open_metrics {
                    (
                        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                        metrics.encode(),
                    )
                } else {
                    (
                        [(axum::http::header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)],
                        metrics.encode_classic(),
                    )
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_format_names_counter_families_with_total_and_drops_openmetrics_lines() {
        let m = Metrics::new();
        m.rpc_finished("/grpc.health.v1.Health/Check", tonic::Code::Ok);
        let classic = m.encode_classic();
        assert!(
            classic.contains("# HELP healthgate_grpc_requests_total "),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE healthgate_grpc_requests_total counter"),
            "{classic}"
        );
        assert!(classic.contains(
            "healthgate_grpc_requests_total{method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 1"
        ));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert!(m.encode().ends_with("# EOF\n"));
    }

    #[test]
    fn unknown_rpc_paths_share_one_label() {
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(method_label("/random.Service/Whatever"), "other");
    }
}
