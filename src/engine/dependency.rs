//! One dependency as the reducer holds it: its spec, its probe task's identity, its hysteresis
//! and history, and how an outcome or an expiry changes them. The reducer owns the stale
//! timers; this type says when the next one is due.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::hysteresis::Hysteresis;
use super::spawn::Task;
use super::stale::Slot;
use crate::config::{DependencySpec, Mode};
use crate::snapshot::{DependencyState, History, Override, Thresholds};
use crate::{Health, Outcome, Reason};

#[derive(Debug)]
pub(crate) struct Dependency {
    pub(crate) spec: Arc<DependencySpec>,
    pub(crate) task: Task,
    hysteresis: Hysteresis,
    last_outcome: Option<Outcome>,
    last_success: Option<SystemTime>,
    last_failure: Option<SystemTime>,
    /// Push: when the last report arrived.
    pub(crate) last_report: Option<SystemTime>,
    /// The reducer's stale timer for this dependency, if one is set.
    pub(crate) stale_key: Slot,
    /// When the last outcome goes stale (the timer may fire earlier, see `engine::stale`).
    stale_at: Instant,
    /// The published form, rebuilt whenever something in it changes. Its history is the
    /// dependency's: recorded into a copy, published with the next state.
    state: Arc<DependencyState>,
    /// An active override and when (on the reducer's clock) it expires.
    forced: Option<(Arc<Override>, Instant)>,
    /// How outcomes arrive when not as the mode says (see `schedule::Event::note`).
    pub(crate) note: Option<&'static str>,
    /// The chain to the root cause while a parent makes this one fail (see
    /// [`DependencyState::caused_by`]); set at rollup.
    cause: Option<Arc<[Arc<str>]>>,
    /// The peer certificate's `notAfter` last seen.
    pub(crate) certificate: Option<SystemTime>,
}

/// What applying an outcome changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) before: Health,
    pub(crate) after: Health,
    /// The reason differs from the previous outcome's.
    pub(crate) reason_changed: bool,
}

impl Dependency {
    /// A new dependency, Unknown until its first outcome.
    pub(crate) fn new(name: &Arc<str>, spec: Arc<DependencySpec>, task: Task) -> Dependency {
        Dependency {
            state: Arc::new(initial_state(name, &spec)),
            hysteresis: Hysteresis::new(spec.fall, spec.rise),
            spec,
            task,
            last_outcome: None,
            last_success: None,
            last_failure: None,
            last_report: None,
            stale_key: None,
            stale_at: Instant::now(),
            forced: None,
            note: None,
            cause: None,
            certificate: None,
        }
    }

    /// The chain to the root cause (see [`DependencyState::caused_by`]).
    pub(crate) fn cause(&self) -> Option<&Arc<[Arc<str>]>> {
        self.cause.as_ref()
    }

    /// Sets the chain to the root cause; `true` when it changed (the state is rebuilt).
    pub(crate) fn set_cause(&mut self, name: &Arc<str>, cause: Option<Arc<[Arc<str>]>>) -> bool {
        if self.cause == cause {
            return false;
        }
        self.cause = cause;
        self.refresh(name);
        true
    }

    /// This dependency with new settings and a new task, keeping what is known (health,
    /// counts, last outcome, history) so services do not flap through Unknown and a reload
    /// loses no history; the new thresholds apply
    /// from the next outcome. The stale timer is the caller's to set again.
    pub(crate) fn replaced(self, name: &Arc<str>, spec: Arc<DependencySpec>, task: Task) -> Self {
        let mut dep = Dependency {
            hysteresis: self.hysteresis.with_thresholds(spec.fall, spec.rise),
            stale_key: None,
            stale_at: Instant::now() + spec.stale_after,
            spec,
            task,
            ..self
        };
        dep.refresh(name);
        dep
    }

    /// The health services see: the override's while one is active, else the computed one.
    pub(crate) fn health(&self) -> Health {
        self.forced
            .as_ref()
            .map_or_else(|| self.hysteresis.health(), |(o, _)| o.health)
    }

    /// Sets or clears the override; returns the health services see, before and after.
    pub(crate) fn force(
        &mut self,
        name: &Arc<str>,
        forced: Option<(Arc<Override>, Instant)>,
    ) -> (Health, Health) {
        let before = self.health();
        self.forced = forced;
        self.refresh(name);
        (before, self.health())
    }

    /// When the active override expires, on the reducer's clock.
    pub(crate) fn forced_until(&self) -> Option<Instant> {
        self.forced.as_ref().map(|(_, at)| *at)
    }

    /// The active override.
    pub(crate) fn forced(&self) -> Option<&Arc<Override>> {
        self.forced.as_ref().map(|(o, _)| o)
    }

    /// A push dependency's state for the state file: its health and reason, and when its
    /// last report arrived (`None` before the first report).
    pub(crate) fn saved_report(&self, name: &str) -> Option<crate::engine::SavedReport> {
        let at = self.last_report?;
        let health = self.hysteresis.health();
        if health == Health::Unknown {
            return None;
        }
        Some(crate::engine::SavedReport {
            dependency: name.to_owned(),
            health,
            reason: (self.last_outcome.as_ref())
                .and_then(|o| o.verdict.reason())
                .map(|r| r.to_string()),
            at,
        })
    }

    pub(crate) fn has_outcome(&self) -> bool {
        self.last_outcome.is_some()
    }

    pub(crate) fn state(&self) -> &Arc<DependencyState> {
        &self.state
    }

    /// Applies one probe outcome; the last outcome goes stale `stale_after` from now.
    pub(crate) fn apply(&mut self, name: &Arc<str>, outcome: Outcome) -> Applied {
        let before = self.hysteresis.health();
        let after = self.hysteresis.observe(outcome.health());
        let mut history = self.state.history.clone();
        let record = Arc::make_mut(&mut history);
        record.record_outcome(&outcome);
        if before != after {
            let reason = (after != Health::Healthy)
                .then(|| outcome.verdict.reason().cloned())
                .flatten();
            record.record_transition(outcome.finished_at, before, after, reason);
        }
        if outcome.is_success() {
            self.last_success = Some(outcome.finished_at);
        } else {
            self.last_failure = Some(outcome.finished_at);
        }
        self.stale_at = Instant::now() + self.spec.stale_after;
        let previous = self.last_outcome.as_ref().and_then(|o| o.verdict.reason());
        let reason_changed = previous != outcome.verdict.reason();
        self.last_outcome = Some(outcome);
        self.refresh_with(name, history);
        Applied {
            before,
            after,
            reason_changed,
        }
    }

    /// Makes the last outcome go stale `left` from now instead (a restored push report keeps
    /// the rest of its ttl).
    pub(crate) fn stale_in_at_most(&mut self, left: Duration) {
        self.stale_at = self.stale_at.min(Instant::now() + left);
    }

    /// How long until the last outcome is stale, from now (zero when it is).
    pub(crate) fn stale_in(&self) -> Duration {
        self.stale_at.saturating_duration_since(Instant::now())
    }

    /// Makes the dependency Unknown; returns its health before, if that was not Unknown.
    pub(crate) fn expire(&mut self, name: &Arc<str>) -> Option<Health> {
        let before = self.hysteresis.health();
        self.hysteresis.expire();
        if before == Health::Unknown {
            return None;
        }
        let mut history = self.state.history.clone();
        Arc::make_mut(&mut history).record_transition(
            SystemTime::now(),
            before,
            Health::Unknown,
            Some(Reason::new("stale")),
        );
        self.refresh_with(name, history);
        Some(before)
    }

    /// A push dependency's report did not come within its ttl: Unhealthy at once with
    /// `reason` (recorded as an outcome, so detail and the twin say why). Returns the health
    /// before when it changed.
    pub(crate) fn miss(&mut self, name: &Arc<str>, reason: Reason) -> Option<Health> {
        let before = self.hysteresis.health();
        self.hysteresis.miss();
        let now = SystemTime::now();
        let outcome = Outcome {
            verdict: crate::Verdict::Unhealthy(reason.clone()),
            latency: Duration::ZERO,
            finished_at: now,
        };
        let mut history = self.state.history.clone();
        let record = Arc::make_mut(&mut history);
        record.record_outcome(&outcome);
        if before != Health::Unhealthy {
            record.record_transition(now, before, Health::Unhealthy, Some(reason));
        }
        self.last_failure = Some(now);
        self.last_outcome = Some(outcome);
        self.refresh_with(name, history);
        (before != Health::Unhealthy).then_some(before)
    }

    /// Why the dependency has its health, for a service transition's reason: its last reason,
    /// or its health when there is none.
    pub(crate) fn why(&self) -> String {
        if let Some((o, _)) = &self.forced {
            return format!("override: {}", o.reason);
        }
        if self.hysteresis.health() == Health::Unknown {
            return "unknown".to_owned();
        }
        self.last_outcome
            .as_ref()
            .and_then(|o| o.verdict.reason())
            .map_or_else(|| self.hysteresis.health().to_string(), |r| r.to_string())
    }

    /// Rebuilds the published form from the state.
    fn refresh(&mut self, name: &Arc<str>) {
        let history = self.state.history.clone();
        self.refresh_with(name, history);
    }

    /// Rebuilds the published form from the state and `history`.
    fn refresh_with(&mut self, name: &Arc<str>, history: Arc<History>) {
        let state = DependencyState {
            history,
            health: self.health(),
            computed: self.hysteresis.health(),
            forced: self.forced.as_ref().map(|(o, _)| o.clone()),
            last_outcome: self.last_outcome.clone(),
            consecutive_successes: self.hysteresis.consecutive_successes(),
            consecutive_failures: self.hysteresis.consecutive_failures(),
            last_success: self.last_success,
            last_failure: self.last_failure,
            reported_at: self.last_report,
            ..initial_state(name, &self.spec)
        };
        let mut state = state;
        if let Some(note) = self.note {
            state.thresholds.mode = note;
        }
        state.caused_by = self.cause.clone();
        state.certificate_expires = self.certificate;
        self.state = Arc::new(state);
    }
}

fn initial_state(name: &Arc<str>, spec: &DependencySpec) -> DependencyState {
    let (mode, period) = match spec.mode {
        Mode::Background { interval, .. } => ("background", interval),
        Mode::Watch { interval } => ("watch", interval),
        Mode::OnDemand(o) => ("on_demand", o.ttl),
        Mode::Push { ttl } => ("push", ttl),
    };
    DependencyState {
        name: name.clone(),
        kind: spec.kind(),
        target: Arc::from(spec.target()),
        health: Health::Unknown,
        computed: Health::Unknown,
        forced: None,
        last_outcome: None,
        consecutive_successes: 0,
        consecutive_failures: 0,
        last_success: None,
        last_failure: None,
        reported_at: None,
        thresholds: Thresholds {
            mode,
            period,
            timeout: spec.timeout,
            fall: spec.fall,
            rise: spec.rise,
            degraded_after: spec.degraded_after,
            stale_after: spec.stale_after,
        },
        history: Arc::default(),
        parents: spec.parents.iter().map(|p| Arc::from(p.as_str())).collect(),
        caused_by: None,
        certificate_expires: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Verdict;
    use crate::probe::{Probe, ProbeContext, ProbeFuture};
    use tokio_util::sync::CancellationToken;

    #[derive(Debug)]
    struct Never;

    impl Probe for Never {
        fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
            Box::pin(std::future::pending())
        }
    }

    fn dependency(fall: u32, rise: u32) -> (Arc<str>, Dependency) {
        let mut spec =
            DependencySpec::custom(Arc::new(Never), "never").every(Duration::from_secs(5), 0.0);
        spec.fall = fall;
        spec.rise = rise;
        let task = Task {
            instance: 1,
            cancel: CancellationToken::new(),
            slot: None,
            refresh: None,
        };
        let name: Arc<str> = Arc::from("db");
        let dep = Dependency::new(&name, Arc::new(spec), task);
        (name, dep)
    }

    fn outcome(verdict: Verdict) -> Outcome {
        Outcome {
            verdict,
            latency: Duration::from_millis(3),
            finished_at: SystemTime::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_move_health_through_hysteresis_and_into_the_published_state() {
        let (name, mut dep) = dependency(2, 1);
        assert_eq!(dep.state().health, Health::Unknown);
        let applied = dep.apply(&name, outcome(Verdict::Healthy));
        assert_eq!(
            (applied.before, applied.after),
            (Health::Unknown, Health::Healthy)
        );
        assert_eq!(dep.state().consecutive_successes, 1);
        assert!(dep.state().last_success.is_some() && dep.state().last_failure.is_none());

        // fall = 2: one failure is not enough, and the reason is new.
        let applied = dep.apply(&name, outcome(Verdict::unhealthy("HTTP 503")));
        assert_eq!(applied.after, Health::Healthy);
        assert!(applied.reason_changed);
        assert_eq!(dep.why(), "HTTP 503");
        let applied = dep.apply(&name, outcome(Verdict::unhealthy("HTTP 503")));
        assert_eq!(applied.after, Health::Unhealthy);
        assert!(!applied.reason_changed, "same reason as before");
        assert_eq!(dep.state().health, Health::Unhealthy);
        assert_eq!(dep.state().consecutive_failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn history_records_every_outcome_and_each_change_of_stable_health() {
        let (name, mut dep) = dependency(2, 1);
        dep.apply(&name, outcome(Verdict::Healthy));
        dep.apply(&name, outcome(Verdict::unhealthy("HTTP 503")));
        dep.apply(&name, outcome(Verdict::unhealthy("HTTP 502")));
        dep.apply(&name, outcome(Verdict::Healthy));
        let state = dep.state().clone();
        let outcomes: Vec<Health> = state.history.outcomes().map(|o| o.health()).collect();
        use Health::*;
        assert_eq!(outcomes, [Healthy, Unhealthy, Unhealthy, Healthy]);
        let transitions: Vec<(Health, Health, Option<&str>)> = state
            .history
            .transitions()
            .map(|t| (t.from(), t.to(), t.reason().map(|r| r.as_str())))
            .collect();
        assert_eq!(
            transitions,
            [
                (Unknown, Healthy, None),
                (Healthy, Unhealthy, Some("HTTP 502")),
                (Unhealthy, Healthy, None),
            ]
        );
        assert_eq!(
            state.since(),
            state.history.transitions().next_back().map(|t| t.at())
        );
        dep.expire(&name);
        let last = dep.state().history.transitions().next_back().cloned();
        assert_eq!(
            last.map(|t| (t.from(), t.to(), t.reason().map(|r| r.to_string()))),
            Some((Healthy, Unknown, Some("stale".to_owned())))
        );
        assert_eq!(
            state.history.transitions().len(),
            3,
            "published copies never change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_goes_stale_after_stale_after_and_expiry_makes_it_unknown() {
        let (name, mut dep) = dependency(1, 1);
        dep.apply(&name, outcome(Verdict::Healthy));
        assert_eq!(dep.stale_in(), dep.spec.stale_after);
        tokio::time::advance(dep.spec.stale_after).await;
        assert_eq!(dep.stale_in(), Duration::ZERO);
        assert_eq!(dep.expire(&name), Some(Health::Healthy));
        assert_eq!(dep.state().health, Health::Unknown);
        assert_eq!(dep.why(), "unknown");
        assert_eq!(dep.expire(&name), None, "already unknown: no transition");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_dependency_keeps_its_health_and_takes_the_new_thresholds() {
        let (name, mut dep) = dependency(1, 1);
        dep.apply(&name, outcome(Verdict::Healthy));
        let mut spec = (*dep.spec).clone();
        spec.fall = 3;
        let task = Task {
            instance: 2,
            cancel: CancellationToken::new(),
            slot: None,
            refresh: None,
        };
        let mut dep = dep.replaced(&name, Arc::new(spec), task);
        assert_eq!(dep.health(), Health::Healthy);
        assert!(dep.has_outcome());
        assert_eq!(dep.state().history.outcomes().len(), 1, "history kept");
        assert_eq!(dep.state().history.transitions().len(), 1);
        assert_eq!(dep.state().thresholds.fall, 3);
        for _ in 0..2 {
            assert_eq!(
                dep.apply(&name, outcome(Verdict::unhealthy("down"))).after,
                Health::Healthy
            );
        }
        assert_eq!(
            dep.apply(&name, outcome(Verdict::unhealthy("down"))).after,
            Health::Unhealthy
        );
    }
}
