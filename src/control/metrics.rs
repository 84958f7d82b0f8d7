//! The reload instruments, named as Prometheus names its own
//! (`prometheus_config_last_reload_successful`, …): registered in the embedder's
//! [`Metrics`] registry by the first [`Reloader`](super::Reloader).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::metrics::Metrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// A counter family by `result`, with both `success` and `failure` series present from the
/// start (so `rate()` sees the first failure).
fn by_result() -> Family<ResultLabels, Counter> {
    let family = Family::<ResultLabels, Counter>::default();
    for result in ["success", "failure"] {
        drop(family.get_or_create(&ResultLabels {
            result: result.to_owned(),
        }));
    }
    family
}

/// Counts one `success` or failure in `family`.
fn count(family: &Family<ResultLabels, Counter>, ok: bool) {
    let result = if ok { "success" } else { "failure" };
    family
        .get_or_create(&ResultLabels {
            result: result.to_owned(),
        })
        .inc();
}

#[derive(Debug)]
pub(crate) struct ReloadMetrics {
    reloads: Family<ResultLabels, Counter>,
    last_successful: Gauge,
    last_success: Gauge<f64, AtomicU64>,
}

impl ReloadMetrics {
    pub(crate) fn of(metrics: &Metrics) -> Arc<ReloadMetrics> {
        metrics.instruments(|registry| {
            let m = ReloadMetrics {
                reloads: by_result(),
                last_successful: Gauge::default(),
                last_success: Gauge::default(),
            };
            registry.register(
                "config_reloads",
                "Config reloads, by result",
                m.reloads.clone(),
            );
            registry.register(
                "config_last_reload_successful",
                "Whether the last config reload succeeded (1) or the running config is older than the file (0)",
                m.last_successful.clone(),
            );
            registry.register_with_unit(
                "config_last_reload_success_timestamp",
                "When the config in force was loaded, as a Unix time",
                Unit::Seconds,
                m.last_success.clone(),
            );
            m
        })
    }

    /// A config was loaded at `at` (at start, or by a successful reload).
    pub(crate) fn loaded(&self, at: SystemTime) {
        self.last_successful.set(1);
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_success.set(secs.as_secs_f64());
    }

    pub(crate) fn succeeded(&self) {
        count(&self.reloads, true);
    }

    pub(crate) fn failed(&self) {
        self.last_successful.set(0);
        count(&self.reloads, false);
    }
}

/// The state file's writes, by result: `healthgate_state_writes_total{result}`.
#[derive(Debug)]
pub(crate) struct StateMetrics {
    writes: Family<ResultLabels, Counter>,
}

impl StateMetrics {
    pub(crate) fn of(metrics: &Metrics) -> Arc<StateMetrics> {
        metrics.instruments(|registry| {
            let m = StateMetrics {
                writes: by_result(),
            };
            registry.register(
                "state_writes",
                "State file writes, by result (one write answers every change waiting for it)",
                m.writes.clone(),
            );
            m
        })
    }

    pub(crate) fn wrote(&self, ok: bool) {
        count(&self.writes, ok);
    }
}
