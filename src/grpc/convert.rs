//! Conversions between engine types and generated types — the only place where both meet,
//! including the single `Health` → `ServingStatus` mapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pb::detail as pb;
use super::pb::health::health_check_response::ServingStatus;
use crate::config::DegradedPolicy;
use crate::snapshot::{DependencyState, Override, ServiceHealth, ServiceState, Snapshot};
use crate::{Health, Impact};

/// The wire status of a service: `None` (no such service) is `SERVICE_UNKNOWN`.
pub(crate) fn serving_status(status: Option<ServiceHealth>) -> ServingStatus {
    match status {
        None => ServingStatus::ServiceUnknown,
        Some(s) if s.serving => ServingStatus::Serving,
        Some(_) => ServingStatus::NotServing,
    }
}

/// The value of the `x-health-state` response metadata: a fixed set, never names or reasons.
pub(crate) fn health_state(status: Option<ServiceHealth>) -> &'static str {
    status.map_or("unknown", |s| s.health.as_str())
}

fn health(h: Health) -> i32 {
    (match h {
        Health::Unknown => pb::Health::Unknown,
        Health::Healthy => pb::Health::Healthy,
        Health::Degraded => pb::Health::Degraded,
        Health::Unhealthy => pb::Health::Unhealthy,
    }) as i32
}

pub(crate) fn impact(i: Impact) -> i32 {
    (match i {
        Impact::Critical => pb::Impact::Critical,
        Impact::Degrading => pb::Impact::Degrading,
        Impact::Informational => pb::Impact::Informational,
    }) as i32
}

pub(crate) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The detail view of a snapshot, limited to `services` and what they rely on (all when empty).
/// Unknown service names are ignored: the view shows what exists. With `history`, each
/// dependency's history too.
pub(crate) fn detail(
    snapshot: &Snapshot,
    services: &[String],
    history: bool,
) -> pb::DetailResponse {
    let wanted = |name: &str| services.is_empty() || services.iter().any(|s| s == name);
    let chosen: Vec<&ServiceState> = snapshot
        .services
        .iter()
        .map(|s| &**s)
        .filter(|s| wanted(&s.name))
        .collect();
    let relevant = |dep: &str| {
        services.is_empty()
            || chosen
                .iter()
                .any(|s| s.inputs.iter().any(|(d, _)| &**d == dep))
    };
    pb::DetailResponse {
        generation: snapshot.generation,
        shutting_down: snapshot.shutting_down,
        services: chosen.iter().map(|s| service(s)).collect(),
        dependencies: snapshot
            .dependencies
            .iter()
            .filter(|d| relevant(&d.name))
            .map(|d| dependency(d, snapshot, history))
            .collect(),
        config: None,
    }
}

fn service(s: &ServiceState) -> pb::ServiceDetail {
    pb::ServiceDetail {
        name: s.name.to_string(),
        health: health(s.status.health),
        serving_status: serving_status(Some(s.status)) as i32,
        degraded_serves: s.degraded == DegradedPolicy::Serving,
        deciding: s.deciding.iter().map(ToString::to_string).collect(),
        inputs: s
            .inputs
            .iter()
            .map(|(d, i)| pb::Input {
                dependency: d.to_string(),
                impact: impact(*i),
            })
            .collect(),
        forced: s.forced.as_deref().map(forced),
    }
}

pub(crate) fn forced(o: &Override) -> pb::Override {
    pb::Override {
        health: health(o.health),
        since: Some(timestamp(o.since)),
        until: Some(timestamp(o.until)),
        reason: o.reason.to_string(),
    }
}

/// The config in force, as the detail response carries it.
pub(crate) fn config(status: &crate::control::ConfigStatus) -> pb::ConfigInfo {
    pb::ConfigInfo {
        hash: status.hash.clone(),
        loaded_at: Some(timestamp(status.loaded_at)),
        last_error: status.last_error.clone().unwrap_or_default(),
    }
}

fn dependency(d: &DependencyState, snapshot: &Snapshot, history: bool) -> pb::DependencyDetail {
    let t = &d.thresholds;
    let (outcomes, transitions) = if history {
        (
            d.history
                .outcomes()
                .map(|o| pb::HistoryOutcome {
                    finished_at: Some(timestamp(o.at())),
                    health: health(o.health()),
                    latency: Some(duration(o.latency())),
                })
                .collect(),
            d.history
                .transitions()
                .map(|t| pb::Transition {
                    at: Some(timestamp(t.at())),
                    from: health(t.from()),
                    to: health(t.to()),
                    reason: t.reason().map(|r| r.to_string()).unwrap_or_default(),
                })
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    pb::DependencyDetail {
        name: d.name.to_string(),
        kind: d.kind.to_owned(),
        target: d.target.to_string(),
        health: health(d.health),
        computed: health(d.computed),
        forced: d.forced.as_deref().map(forced),
        last_outcome: d.last_outcome.as_ref().map(|o| pb::Outcome {
            health: health(o.health()),
            latency: Some(duration(o.latency)),
            reason: o
                .verdict
                .reason()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            finished_at: Some(timestamp(o.finished_at)),
        }),
        consecutive_successes: d.consecutive_successes,
        consecutive_failures: d.consecutive_failures,
        last_success: d.last_success.map(timestamp),
        last_failure: d.last_failure.map(timestamp),
        thresholds: Some(pb::Thresholds {
            mode: t.mode.to_owned(),
            period: Some(duration(t.period)),
            timeout: Some(duration(t.timeout)),
            fall: t.fall,
            rise: t.rise,
            degraded_after: t.degraded_after.map(duration),
            stale_after: Some(duration(t.stale_after)),
        }),
        used_by: snapshot
            .services
            .iter()
            .flat_map(|s| {
                s.inputs
                    .iter()
                    .filter(|(dep, _)| *dep == d.name)
                    .map(|(_, i)| pb::Usage {
                        service: s.name.to_string(),
                        impact: impact(*i),
                    })
            })
            .collect(),
        since: d.since().map(timestamp),
        history: outcomes,
        transitions,
        parents: d.parents.iter().map(|p| p.to_string()).collect(),
        caused_by: d
            .caused_by
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_string())
            .collect(),
        reason: d.reason().map(|r| r.into_owned()).unwrap_or_default(),
        certificate_expires: d.certificate_expires.map(timestamp),
    }
}

/// Our health from the wire's (`HEALTH_UNSPECIFIED` and unknown numbers: `None`).
pub(crate) fn from_health(h: i32) -> Option<Health> {
    match pb::Health::try_from(h).ok()? {
        pb::Health::Unknown => Some(Health::Unknown),
        pb::Health::Healthy => Some(Health::Healthy),
        pb::Health::Degraded => Some(Health::Degraded),
        pb::Health::Unhealthy => Some(Health::Unhealthy),
        pb::Health::Unspecified => None,
    }
}
