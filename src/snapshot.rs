//! [`Snapshot`]: the immutable view the engine publishes after every change. Readers clone an
//! `Arc<Snapshot>` and never wait for the engine, and the engine never waits for them. Pure
//! data: reading a snapshot has no effect (waking on-demand dependencies is the handle's
//! `wake_on_demand`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::DegradedPolicy;
use crate::{Health, Impact, Outcome};

/// Everything known at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publication.
    pub generation: u64,
    /// Increases with every publication that changed something a watcher is told about: a
    /// health, a reason, a service's status or deciding inputs, the configuration, shutdown.
    /// Publications that only update latencies and counters keep it.
    pub revision: u64,
    /// Shutdown began: every service is Unhealthy and not serving, for good.
    pub shutting_down: bool,
    /// Services, sorted by name.
    pub services: Vec<Arc<ServiceState>>,
    /// Dependencies, sorted by name.
    pub dependencies: Vec<Arc<DependencyState>>,
}

impl Snapshot {
    /// The service called `name` (exact, case-sensitive).
    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        let i = self
            .services
            .binary_search_by(|s| (*s.name).cmp(name))
            .ok()?;
        Some(&self.services[i])
    }

    /// The dependency called `name`.
    pub fn dependency(&self, name: &str) -> Option<&DependencyState> {
        let i = self
            .dependencies
            .binary_search_by(|d| (*d.name).cmp(name))
            .ok()?;
        Some(&self.dependencies[i])
    }
}

/// What a service's watchers see: its health and what standard clients are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The three-state (plus Unknown) health.
    pub health: Health,
    /// Whether grpc.health.v1 says `SERVING`: Healthy, or Degraded on a lenient service, and
    /// never once shutdown began.
    pub serving: bool,
}

impl ServiceHealth {
    /// The wire answer for `health` under `policy`.
    pub fn new(health: Health, policy: DegradedPolicy, shutting_down: bool) -> ServiceHealth {
        let serving = !shutting_down
            && match health {
                Health::Healthy => true,
                Health::Degraded => policy == DegradedPolicy::Serving,
                Health::Unknown | Health::Unhealthy => false,
            };
        ServiceHealth { health, serving }
    }
}

/// One service in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// The name served over grpc.health.v1 (`""` is the whole server).
    pub name: Arc<str>,
    /// Health and wire answer.
    pub status: ServiceHealth,
    /// How Degraded is reported.
    pub degraded: DegradedPolicy,
    /// The dependencies that decided a non-healthy status.
    pub deciding: Vec<Arc<str>>,
    /// Every dependency the service relies on, with its impact.
    pub inputs: Vec<(Arc<str>, Impact)>,
}

/// One dependency in a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyState {
    /// The dependency's name.
    pub name: Arc<str>,
    /// `http`, `grpc`, `tcp` or `custom`.
    pub kind: &'static str,
    /// What is probed, redacted (no credentials, no query values).
    pub target: Arc<str>,
    /// Stable health after hysteresis and staleness.
    pub health: Health,
    /// The latest probe run.
    pub last_outcome: Option<Outcome>,
    /// Consecutive successful runs, ending with the latest.
    pub consecutive_successes: u32,
    /// Consecutive failed runs, ending with the latest.
    pub consecutive_failures: u32,
    /// When a run last succeeded.
    pub last_success: Option<SystemTime>,
    /// When a run last failed.
    pub last_failure: Option<SystemTime>,
    /// The settings that explain the health.
    pub thresholds: Thresholds,
}

/// The settings behind a dependency's health, for display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// `background` or `on_demand`.
    pub mode: &'static str,
    /// Time between runs (background), or the success time to live (on demand).
    pub period: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive bad outcomes needed to get worse.
    pub fall: u32,
    /// Consecutive good outcomes needed to get better.
    pub rise: u32,
    /// Successful runs slower than this are Degraded.
    pub degraded_after: Option<Duration>,
    /// Outcomes older than this make the dependency Unknown.
    pub stale_after: Duration,
}
