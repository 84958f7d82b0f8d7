//! [`Snapshot`]: the immutable view the engine publishes after every change. Readers clone an
//! `Arc<Snapshot>` and never wait for the engine, and the engine never waits for them. Pure
//! data: reading a snapshot has no effect (waking on-demand dependencies is the handle's
//! `wake_on_demand`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{DegradedPolicy, ServiceSpec};
use crate::outcome::Reason;
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
    /// The service's spec, so a front can roll it up again without some inputs (the HTTP
    /// twin's `?exclude=`).
    pub spec: Arc<ServiceSpec>,
    /// An operator's override deciding `status` until it expires (then the rollup decides).
    pub forced: Option<Arc<Override>>,
}

/// An operator's override of a dependency's or a service's health: a maintenance mute
/// (`Healthy`) or a manual drain (`Unhealthy`). It never outlives `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The health it forces.
    pub health: Health,
    /// When it was set.
    pub since: SystemTime,
    /// When it expires.
    pub until: SystemTime,
    /// Why, as the operator said it (sanitized and capped like every reason).
    pub reason: crate::Reason,
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
    /// The health services see: [`DependencyState::computed`], or the override's while one is
    /// active.
    pub health: Health,
    /// Stable health after hysteresis and staleness, whatever an override says.
    pub computed: Health,
    /// An operator's override deciding `health` until it expires.
    pub forced: Option<Arc<Override>>,
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
    /// A push dependency's last report: when it arrived (`None` before the first, and for
    /// probed dependencies).
    pub reported_at: Option<SystemTime>,
    /// The settings that explain the health.
    pub thresholds: Thresholds,
    /// The latest outcomes and transitions, bounded.
    pub history: Arc<History>,
    /// The dependencies this one relies on (`parents`).
    pub parents: Arc<[Arc<str>]>,
    /// The peer certificate's `notAfter` last seen (TLS dependencies; kept when a later run
    /// got none, e.g. when the handshake failed).
    pub certificate_expires: Option<SystemTime>,
    /// While this dependency fails and a parent is Unhealthy: the chain from its parent to the
    /// root cause (`["proxy", "gateway"]`: this → proxy → gateway, the last is Unhealthy for
    /// its own reasons). `None` otherwise.
    pub caused_by: Option<Arc<[Arc<str>]>>,
}

impl DependencyState {
    /// The reason to show: `parent gateway unhealthy` while [`DependencyState::caused_by`]
    /// says so, else the latest outcome's own reason (kept in
    /// [`DependencyState::last_outcome`] either way).
    pub fn reason(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(root) = self.caused_by.as_ref().and_then(|c| c.last()) {
            return Some(std::borrow::Cow::Owned(format!("parent {root} unhealthy")));
        }
        self.last_outcome
            .as_ref()
            .and_then(|o| o.verdict.reason())
            .map(|r| std::borrow::Cow::Borrowed(r.as_str()))
    }

    /// The root cause of this dependency failing, when it is a parent's (the chain's end).
    pub fn root_cause(&self) -> Option<&Arc<str>> {
        self.caused_by.as_ref().and_then(|c| c.last())
    }

    /// When the dependency took its current health (its latest transition), if it has had one.
    pub fn since(&self) -> Option<SystemTime> {
        self.history.transitions().next_back().map(|t| t.at())
    }
}

/// How many outcomes a dependency's [`History`] keeps: two minutes at a 1 s interval.
pub const HISTORY_OUTCOMES: usize = 120;

/// How many transitions of its stable health a dependency's [`History`] keeps.
pub const HISTORY_TRANSITIONS: usize = 20;

/// A dependency's recent past: its last [`HISTORY_OUTCOMES`] outcomes and its last
/// [`HISTORY_TRANSITIONS`] transitions, oldest first. The records are compact (16 and 32
/// bytes, reasons shared with the outcomes they came from): a full history is 2,560 bytes of
/// records plus its reason texts, at most about 6 KiB. The reducer records into a copy of the
/// published history, so a second copy lives only until the next publication (≤ 100 ms).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    outcomes: VecDeque<OutcomeRecord>,
    transitions: VecDeque<TransitionRecord>,
}

impl History {
    /// Records one outcome, forgetting the oldest beyond [`HISTORY_OUTCOMES`].
    pub fn record_outcome(&mut self, outcome: &Outcome) {
        if self.outcomes.len() == HISTORY_OUTCOMES {
            self.outcomes.pop_front();
        } else if self.outcomes.capacity() == 0 {
            self.outcomes.reserve_exact(HISTORY_OUTCOMES);
        }
        self.outcomes.push_back(OutcomeRecord {
            at_ms: millis(outcome.finished_at),
            latency_us: u32::try_from(outcome.latency.as_micros()).unwrap_or(u32::MAX),
            health: outcome.health(),
        });
    }

    /// Records a change of stable health, forgetting the oldest beyond
    /// [`HISTORY_TRANSITIONS`].
    pub fn record_transition(
        &mut self,
        at: SystemTime,
        from: Health,
        to: Health,
        reason: Option<Reason>,
    ) {
        if self.transitions.len() == HISTORY_TRANSITIONS {
            self.transitions.pop_front();
        } else if self.transitions.capacity() == 0 {
            self.transitions.reserve_exact(HISTORY_TRANSITIONS);
        }
        self.transitions.push_back(TransitionRecord {
            at_ms: millis(at),
            from,
            to,
            reason,
        });
    }

    /// The outcomes, oldest first.
    pub fn outcomes(&self) -> impl DoubleEndedIterator<Item = &OutcomeRecord> + ExactSizeIterator {
        self.outcomes.iter()
    }

    /// The transitions, oldest first.
    pub fn transitions(
        &self,
    ) -> impl DoubleEndedIterator<Item = &TransitionRecord> + ExactSizeIterator {
        self.transitions.iter()
    }

    /// The heap bytes this history holds, reason texts included (counted once per record
    /// even where records share them): what a dependency's history costs.
    pub fn heap_bytes(&self) -> usize {
        self.outcomes.capacity() * std::mem::size_of::<OutcomeRecord>()
            + self.transitions.capacity() * std::mem::size_of::<TransitionRecord>()
            + self
                .transitions
                .iter()
                .filter_map(|t| t.reason.as_ref())
                .map(|r| r.as_str().len() + 2 * std::mem::size_of::<usize>())
                .sum::<usize>()
    }
}

fn millis(t: SystemTime) -> u64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// One outcome in a [`History`] (16 bytes: milliseconds, microseconds, health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeRecord {
    at_ms: u64,
    latency_us: u32,
    health: Health,
}

impl OutcomeRecord {
    /// When the run finished (millisecond precision).
    pub fn at(&self) -> SystemTime {
        from_millis(self.at_ms)
    }

    /// How long the run took (microsecond precision, at most about 71 minutes).
    pub fn latency(&self) -> Duration {
        Duration::from_micros(u64::from(self.latency_us))
    }

    /// The run's own health (never Unknown).
    pub fn health(&self) -> Health {
        self.health
    }
}

/// One change of a dependency's stable health in a [`History`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRecord {
    at_ms: u64,
    from: Health,
    to: Health,
    reason: Option<Reason>,
}

impl TransitionRecord {
    /// When it changed (millisecond precision).
    pub fn at(&self) -> SystemTime {
        from_millis(self.at_ms)
    }

    /// The health before.
    pub fn from(&self) -> Health {
        self.from
    }

    /// The health after.
    pub fn to(&self) -> Health {
        self.to
    }

    /// Why, when the new health has a reason (the outcome's, or `stale`).
    pub fn reason(&self) -> Option<&Reason> {
        self.reason.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;

    fn outcome(i: u64, verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            latency: Duration::from_micros(1_500 + i),
            finished_at: UNIX_EPOCH + Duration::from_millis(1_000 * i),
        }
    }

    #[test]
    fn history_keeps_the_latest_records_in_order_and_its_size_is_bounded() {
        let mut history = History::default();
        for i in 0..1_000 {
            history.record_outcome(&outcome(i, Verdict::Healthy));
            history.record_transition(
                UNIX_EPOCH + Duration::from_millis(i),
                Health::Healthy,
                Health::Unhealthy,
                Some(Reason::new("x".repeat(1_000))),
            );
        }
        assert_eq!(history.outcomes().len(), HISTORY_OUTCOMES);
        assert_eq!(history.transitions().len(), HISTORY_TRANSITIONS);
        let first = history.outcomes().next().map(OutcomeRecord::at);
        assert_eq!(first, Some(UNIX_EPOCH + Duration::from_secs(880)));
        let last = history.outcomes().next_back().copied();
        assert_eq!(
            last.map(|o| o.latency()),
            Some(Duration::from_micros(2_499))
        );
        assert_eq!(last.map(|o| o.health()), Some(Health::Healthy));
        assert_eq!(
            history.transitions().next_back().map(TransitionRecord::at),
            Some(UNIX_EPOCH + Duration::from_millis(999))
        );
        assert_eq!(std::mem::size_of::<OutcomeRecord>(), 16);
        assert_eq!(std::mem::size_of::<TransitionRecord>(), 32);
        // Full, with the longest reasons, it fits in the 8 KiB a dependency's history may
        // cost; a clone (the published copy) is no bigger.
        let bytes = history.heap_bytes();
        assert!(bytes <= 8 * 1024, "{bytes} bytes");
        assert!(history.clone().heap_bytes() <= bytes);
    }
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
