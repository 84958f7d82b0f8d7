//! [`ServiceSpec`]: one name served over grpc.health.v1 and the dependencies it relies on.

use std::collections::BTreeMap;

use super::error::{Problem, key};
use crate::Impact;

/// The name of the liveness service, which never depends on dependencies: a process that cannot
/// reach its database must not be restarted for it.
pub const LIVENESS: &str = "liveness";

/// A validated service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    /// Dependencies and how much each matters.
    pub dependencies: BTreeMap<String, Impact>,
    /// Replica groups: healthy when all members are, degraded when at least `min` are up.
    pub quorums: Vec<Quorum>,
    /// What a Degraded service answers on the wire.
    pub degraded: DegradedPolicy,
}

/// k of n replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// The replicas (dependency names).
    pub members: Vec<String>,
    /// How many must be up (healthy or degraded) for the group to be at least Degraded.
    pub min: usize,
    /// What the group's health means to the service.
    pub impact: Impact,
}

/// How a Degraded service is reported to standard clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DegradedPolicy {
    /// Degraded answers `SERVING` (the default: degraded still takes traffic).
    #[default]
    Serving,
    /// Degraded answers `NOT_SERVING` (strict).
    NotServing,
}

impl ServiceSpec {
    /// A service that depends on `dependencies`, all with the same impact.
    pub fn with_all<I, S>(dependencies: I, impact: Impact) -> ServiceSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ServiceSpec {
            dependencies: dependencies
                .into_iter()
                .map(|d| (d.into(), impact))
                .collect(),
            ..ServiceSpec::default()
        }
    }

    /// Every dependency name this service refers to.
    pub fn referenced(&self) -> impl Iterator<Item = &str> {
        self.dependencies.keys().map(String::as_str).chain(
            self.quorums
                .iter()
                .flat_map(|q| q.members.iter().map(String::as_str)),
        )
    }

    /// The rules a service must follow, for config validation and runtime changes alike.
    /// `exists` says whether a dependency name is defined.
    pub fn check(&self, name: &str, exists: &dyn Fn(&str) -> bool) -> Vec<Problem> {
        let path = format!("services.{}", key(name));
        let mut problems = Vec::new();
        if name == LIVENESS && (!self.dependencies.is_empty() || !self.quorums.is_empty()) {
            problems.push(Problem::new(
                &path,
                "liveness must not depend on dependencies (a process that cannot reach one \
                 must not be restarted for it)",
            ));
        }
        for dep in self.dependencies.keys() {
            if !exists(dep) {
                problems.push(Problem::new(
                    format!("{path}.dependencies.{}", key(dep)),
                    format!("no dependency named {dep:?}"),
                ));
            }
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, q) in self.quorums.iter().enumerate() {
            let qpath = format!("{path}.quorum[{i}]");
            if q.members.is_empty() {
                problems.push(Problem::new(
                    &qpath,
                    "a quorum needs at least one dependency",
                ));
            }
            if q.min == 0 || q.min > q.members.len() {
                problems.push(Problem::new(
                    &qpath,
                    format!(
                        "min ({}) must be between 1 and the number of dependencies ({})",
                        q.min,
                        q.members.len()
                    ),
                ));
            }
            for m in &q.members {
                if !exists(m) {
                    problems.push(Problem::new(&qpath, format!("no dependency named {m:?}")));
                }
                *seen.entry(m).or_default() += 1;
            }
        }
        for (dep, count) in seen {
            if count > 1 || self.dependencies.contains_key(dep) {
                problems.push(Problem::new(
                    &path,
                    format!("dependency {dep:?} is listed more than once"),
                ));
            }
        }
        problems
    }
}
