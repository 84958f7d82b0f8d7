//! Health transitions: each logged once (warn when worse, info when better) with the same
//! field names as every other log line, and counted in the metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{info, warn};

use super::dependency::Dependency;
use crate::Health;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Dependency,
    Service,
}

/// Why a service has its health: each deciding dependency with its reason,
/// `orders-api: HTTP 503; db: unknown` (empty when nothing decides, i.e. healthy).
pub(crate) fn deciding_reasons(
    deciding: &[Arc<str>],
    deps: &BTreeMap<Arc<str>, Dependency>,
) -> String {
    deciding
        .iter()
        .map(|name| {
            let why = deps
                .get(name)
                .map_or_else(|| "unknown".to_owned(), Dependency::why);
            format!("{name}: {why}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A health transition: logged once (warn when worse, info when better) and counted.
pub(crate) fn transition(
    kind: Kind,
    name: &str,
    from: Health,
    to: Health,
    reason: Option<&str>,
    metrics: Option<&Metrics>,
) {
    let reason = reason.unwrap_or("");
    // The same field names as every other log line, so a query by `dependency=` or `service=`
    // finds the transitions too (a service name quoted: the overall service is `""`).
    match (kind, to > from) {
        (Kind::Dependency, true) => {
            warn!(dependency = %name, from = %from, to = %to, reason = %reason, "health got worse")
        }
        (Kind::Dependency, false) => {
            info!(dependency = %name, from = %from, to = %to, reason = %reason, "health got better")
        }
        (Kind::Service, true) => {
            warn!(service = ?name, from = %from, to = %to, reason = %reason, "health got worse")
        }
        (Kind::Service, false) => {
            info!(service = ?name, from = %from, to = %to, reason = %reason, "health got better")
        }
    }
    match (kind, metrics) {
        (Kind::Dependency, Some(m)) => m.dependency_transition(name, to),
        (Kind::Service, Some(m)) => m.service_transition(name, to),
        (_, None) => {}
    }
}

/// A dependency's transition.
pub(crate) fn dependency(
    name: &str,
    from: Health,
    to: Health,
    why: Option<&str>,
    m: Option<&Metrics>,
) {
    transition(Kind::Dependency, name, from, to, why, m);
}
