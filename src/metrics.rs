//! Prometheus metrics, in an explicit registry the embedder owns (no globals).
//!
//! This room owns the registry and the engine's instruments (probe durations, transitions, the
//! health gauges, dropped spans); each front registers its own in the same registry
//! (`Metrics::instruments`: `grpc/metrics.rs`, `listener/metrics.rs`), and `http` serves it.
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

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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
struct VersionLabels {
    version: String,
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
    /// The health gauges, from the attached engine's snapshots.
    gauges: Arc<HealthGauges>,
    probe_duration: DurationFamily,
    dependency_transitions: Family<DependencyTransitionLabels, Counter>,
    service_transitions: Family<ServiceTransitionLabels, Counter>,
    dropped_spans: Counter,
    /// The registry, locked to register a front's instruments and to encode a scrape.
    registry: Mutex<Registry>,
    /// Instruments registered by the fronts (see [`Metrics::instruments`]), by type.
    instruments: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
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
            registry: Mutex::new(Registry::default()),
            instruments: Mutex::default(),
            gauges: Arc::default(),
            probe_duration: DurationFamily::new_with_constructor(probe_buckets),
            dependency_transitions: Family::default(),
            service_transitions: Family::default(),
            dropped_spans: Counter::default(),
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
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// The instruments of type `T` — a front's own (RPC counters, connection counters) —
    /// registered by `register` the first time they are asked for, the same ones after that.
    /// So each room owns its instruments, and two fronts on one registry share them.
    pub(crate) fn instruments<T: Any + Send + Sync>(
        &self,
        register: impl FnOnce(&mut Registry) -> T,
    ) -> Arc<T> {
        let mut instruments = self.instruments.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = instruments.get(&TypeId::of::<T>())
            && let Ok(found) = found.clone().downcast::<T>()
        {
            return found;
        }
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let made = Arc::new(register(&mut registry));
        instruments.insert(TypeId::of::<T>(), made.clone());
        made
    }

    /// The metrics in the OpenMetrics text format (`crate::http::CONTENT_TYPE`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
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
        )?;
        // Present only while an override is active: `time() > …` can never fire on a stale one.
        let expiry = |o: &crate::snapshot::Override| {
            o.until
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        let forced: Vec<(&str, i64)> = deps()
            .filter_map(|d| Some((&*d.name, expiry(d.forced.as_deref()?))))
            .collect();
        gauges(
            &mut encoder,
            "dependency_override_expiry_timestamp_seconds",
            "When the dependency's active override expires, as a Unix time",
            "dependency",
            forced.into_iter(),
        )?;
        let forced: Vec<(&str, i64)> = services()
            .filter_map(|s| Some((&*s.name, expiry(s.forced.as_deref()?))))
            .collect();
        gauges(
            &mut encoder,
            "service_override_expiry_timestamp_seconds",
            "When the service's active override expires, as a Unix time",
            "service",
            forced.into_iter(),
        )?;
        let unix = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        let certificates: Vec<(&str, i64)> = deps()
            .filter_map(|d| Some((&*d.name, unix(d.certificate_expires?))))
            .collect();
        gauges(
            &mut encoder,
            "dependency_certificate_expiry_timestamp_seconds",
            "When the dependency's TLS certificate expires (notAfter, last seen), as a Unix time",
            "dependency",
            certificates.into_iter(),
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
