//! Rollup: a service's health from its dependencies' health, worst-of across inputs.

use std::sync::Arc;

use crate::config::{Quorum, ServiceSpec};
use crate::{Health, Impact};

/// A service's computed health and the dependencies that decided it (empty when Healthy:
/// nothing pulls it down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rolled {
    pub(crate) health: Health,
    pub(crate) deciding: Vec<Arc<str>>,
}

/// Rolls up `spec` given each dependency's health. A service with no inputs is Healthy (this is
/// `liveness`: alive while the engine runs).
pub(crate) fn rollup(spec: &ServiceSpec, health_of: &dyn Fn(&str) -> Health) -> Rolled {
    // (contribution, the dependencies behind it)
    let mut inputs: Vec<(Health, Vec<&str>)> = Vec::new();
    for (dep, impact) in &spec.dependencies {
        if let Some(c) = impact.contribution(health_of(dep)) {
            inputs.push((c, vec![dep.as_str()]));
        }
    }
    for q in &spec.quorums {
        let (group, members) = quorum(q, health_of);
        if let Some(c) = q.impact.contribution(group) {
            inputs.push((c, members));
        }
    }
    let health = inputs
        .iter()
        .map(|(h, _)| *h)
        .max()
        .unwrap_or(Health::Healthy);
    let deciding = if health == Health::Healthy {
        Vec::new()
    } else {
        inputs
            .iter()
            .filter(|(h, _)| *h == health)
            .flat_map(|(_, deps)| deps.iter().map(|d| Arc::from(*d)))
            .collect()
    };
    Rolled { health, deciding }
}

/// A quorum group's health and its members that are not healthy: all healthy ⇒ Healthy; at
/// least `min` up (healthy or degraded) ⇒ Degraded; fewer, but enough if the Unknown ones were up
/// ⇒ Unknown; else Unhealthy.
fn quorum<'a>(q: &'a Quorum, health_of: &dyn Fn(&str) -> Health) -> (Health, Vec<&'a str>) {
    let states: Vec<(&str, Health)> = q
        .members
        .iter()
        .map(|m| (m.as_str(), health_of(m)))
        .collect();
    let up = states
        .iter()
        .filter(|(_, h)| *h <= Health::Degraded)
        .count();
    let unknown = states.iter().filter(|(_, h)| *h == Health::Unknown).count();
    let health = if states.iter().all(|(_, h)| *h == Health::Healthy) {
        Health::Healthy
    } else if up >= q.min {
        Health::Degraded
    } else if up + unknown >= q.min {
        Health::Unknown
    } else {
        Health::Unhealthy
    };
    let not_healthy = states
        .iter()
        .filter(|(_, h)| *h != Health::Healthy)
        .map(|(m, _)| *m)
        .collect();
    (health, not_healthy)
}

/// The impact each dependency has on a service (quorum members take their group's impact).
pub(crate) fn inputs(spec: &ServiceSpec) -> Vec<(Arc<str>, Impact)> {
    spec.dependencies
        .iter()
        .map(|(d, i)| (Arc::from(d.as_str()), *i))
        .chain(
            spec.quorums
                .iter()
                .flat_map(|q| q.members.iter().map(|m| (Arc::from(m.as_str()), q.impact))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use Health::*;

    fn spec(deps: &[(&str, Impact)]) -> ServiceSpec {
        ServiceSpec {
            dependencies: deps.iter().map(|(d, i)| (d.to_string(), *i)).collect(),
            ..ServiceSpec::default()
        }
    }

    fn roll(spec: &ServiceSpec, states: &[(&str, Health)]) -> Rolled {
        let map: HashMap<&str, Health> = states.iter().copied().collect();
        rollup(spec, &|d| map.get(d).copied().unwrap_or(Unknown))
    }

    fn names(r: &Rolled) -> Vec<&str> {
        r.deciding.iter().map(|d| &**d).collect()
    }

    #[test]
    fn no_dependencies_is_healthy() {
        assert_eq!(roll(&ServiceSpec::default(), &[]).health, Healthy);
    }

    #[test]
    fn impacts_bound_what_a_dependency_can_do() {
        let s = spec(&[
            ("db", Impact::Critical),
            ("cache", Impact::Degrading),
            ("audit", Impact::Informational),
        ]);
        assert_eq!(
            roll(
                &s,
                &[("db", Healthy), ("cache", Healthy), ("audit", Unhealthy)]
            )
            .health,
            Healthy
        );
        let r = roll(
            &s,
            &[("db", Healthy), ("cache", Unhealthy), ("audit", Healthy)],
        );
        assert_eq!((r.health, names(&r)), (Degraded, vec!["cache"]));
        let r = roll(
            &s,
            &[("db", Unhealthy), ("cache", Unhealthy), ("audit", Healthy)],
        );
        assert_eq!((r.health, names(&r)), (Unhealthy, vec!["db"]));
    }

    #[test]
    fn unknown_critical_input_makes_the_service_unknown() {
        let s = spec(&[("db", Impact::Critical), ("cache", Impact::Degrading)]);
        let r = roll(&s, &[("db", Unknown), ("cache", Unknown)]);
        assert_eq!((r.health, names(&r)), (Unknown, vec!["db"]));
        // A known failure outranks missing information.
        let s = spec(&[("a", Impact::Critical), ("b", Impact::Critical)]);
        assert_eq!(
            roll(&s, &[("a", Unknown), ("b", Unhealthy)]).health,
            Unhealthy
        );
    }

    #[test]
    fn degraded_critical_dependency_degrades_the_service() {
        let s = spec(&[("db", Impact::Critical)]);
        assert_eq!(roll(&s, &[("db", Degraded)]).health, Degraded);
    }

    #[test]
    fn quorum_counts_members_up() {
        let s = ServiceSpec {
            quorums: vec![Quorum {
                members: vec!["r1".into(), "r2".into(), "r3".into()],
                min: 2,
                impact: Impact::Critical,
            }],
            ..ServiceSpec::default()
        };
        assert_eq!(
            roll(&s, &[("r1", Healthy), ("r2", Healthy), ("r3", Healthy)]).health,
            Healthy
        );
        let r = roll(&s, &[("r1", Healthy), ("r2", Degraded), ("r3", Unhealthy)]);
        assert_eq!((r.health, names(&r)), (Degraded, vec!["r2", "r3"]));
        assert_eq!(
            roll(&s, &[("r1", Healthy), ("r2", Unhealthy), ("r3", Unhealthy)]).health,
            Unhealthy
        );
        assert_eq!(
            roll(&s, &[("r1", Healthy), ("r2", Unknown), ("r3", Unhealthy)]).health,
            Unknown
        );
    }

    #[test]
    fn degrading_quorum_below_min_only_degrades() {
        let s = ServiceSpec {
            quorums: vec![Quorum {
                members: vec!["r1".into(), "r2".into()],
                min: 2,
                impact: Impact::Degrading,
            }],
            ..ServiceSpec::default()
        };
        assert_eq!(
            roll(&s, &[("r1", Unhealthy), ("r2", Unhealthy)]).health,
            Degraded
        );
    }
}
