//! The reducer: the engine's single writer. It owns every dependency's and service's state,
//! applies outcomes, expiries and runtime changes one at a time, and publishes an
//! `Arc<Snapshot>` plus per-service watch values after each batch. Nobody else mutates state,
//! so there are no locks to hold across `.await`.
//!
//! Publishing copies one `Arc` per dependency, so it is O(dependencies). A change of health
//! (or of configuration) is published at once; an outcome that changes only details (latency,
//! counts, the last reason) waits up to [`DETAIL_PUBLISH_INTERVAL`] and shares a publication
//! with every other outcome of that window. Without this, 10,000 dependencies probed every
//! second meant 10,000 publications of 10,000 entries a second, a whole core.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::{Instrument, info, info_span, warn};

use super::factory::ProbeFactory;
use super::hysteresis::Hysteresis;
use super::on_demand::{self, OnDemandSlot};
use super::rollup::{self, Rolled};
use super::schedule::{self, Event, Runner};
use super::{ChangeError, Shared};
use crate::config::{DependencySpec, Mode, ServiceSpec};
use crate::metrics::Metrics;
use crate::probe::Probe;
use crate::snapshot::{DependencyState, ServiceHealth, ServiceState, Snapshot, Thresholds};
use crate::{Health, Outcome};

/// A runtime change, with where to send its result.
#[derive(Debug)]
pub(crate) enum Command {
    PutDependency {
        name: String,
        spec: DependencySpec,
        replace: bool,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    RemoveDependency {
        name: String,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    PutService {
        name: String,
        spec: ServiceSpec,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    RemoveService {
        name: String,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

struct Dependency {
    spec: Arc<DependencySpec>,
    instance: u64,
    cancel: CancellationToken,
    hysteresis: Hysteresis,
    last_outcome: Option<Outcome>,
    last_success: Option<SystemTime>,
    last_failure: Option<SystemTime>,
    stale_key: Option<delay_queue::Key>,
    /// When the last outcome goes stale (the timer may fire earlier, see [`stale_timer`]).
    stale_at: Instant,
    slot: Option<Arc<OnDemandSlot>>,
    /// The published form, rebuilt whenever something in it changes.
    state: Arc<DependencyState>,
}

struct Service {
    spec: ServiceSpec,
    state: Arc<ServiceState>,
}

pub(crate) struct Reducer {
    shared: Arc<Shared>,
    dependencies: BTreeMap<Arc<str>, Dependency>,
    services: BTreeMap<Arc<str>, Service>,
    factory: ProbeFactory,
    next_instance: u64,
    generation: u64,
    shutting_down: bool,
    stale: DelayQueue<Arc<str>>,
    events_tx: mpsc::Sender<Event>,
    /// Shared by every probe run: see [`schedule::MAX_CONCURRENT_PROBES`].
    probe_permits: Arc<Semaphore>,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Receiver<Command>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// A health, status or configuration changed since the last publication: publish now.
    dirty: bool,
    /// Only details changed since the last publication: publish when the interval is up.
    details_dirty: bool,
    /// A dependency's reason changed since the last publication (see [`Snapshot::revision`]).
    reasons_changed: bool,
    revision: u64,
    last_publish: Instant,
    /// A dependency's health changed: services must be rolled up again.
    rollup_needed: bool,
    /// The probe run whose outcome asked for the rollup, for the transitions it logs.
    rollup_span: tracing::Span,
    metrics: Option<Arc<Metrics>>,
}

/// How many outcomes the reducer applies before publishing, when many arrive at once.
const BATCH: usize = 1024;

/// The longest an outcome that changes no health waits to be published.
pub(crate) const DETAIL_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

impl Reducer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        tracker: TaskTracker,
        cancel: CancellationToken,
        metrics: Option<Arc<Metrics>>,
    ) -> Reducer {
        let (events_tx, events) = mpsc::channel(4096);
        Reducer {
            shared,
            dependencies: BTreeMap::new(),
            services: BTreeMap::new(),
            factory: ProbeFactory::default(),
            next_instance: 0,
            generation: 0,
            shutting_down: false,
            stale: DelayQueue::new(),
            events_tx,
            probe_permits: Arc::new(Semaphore::new(schedule::MAX_CONCURRENT_PROBES)),
            events,
            commands,
            tracker,
            cancel,
            dirty: true,
            details_dirty: false,
            reasons_changed: false,
            revision: 0,
            last_publish: Instant::now(),
            rollup_needed: true,
            rollup_span: tracing::Span::none(),
            metrics,
        }
    }

    /// Adds a dependency whose probe is already built.
    pub(crate) fn insert_dependency(
        &mut self,
        name: &str,
        spec: DependencySpec,
        probe: Arc<dyn Probe>,
    ) {
        let name: Arc<str> = Arc::from(name);
        let spec = Arc::new(spec);
        let hysteresis = Hysteresis::new(spec.fall, spec.rise);
        let (instance, cancel, slot) = self.spawn(&name, &spec, probe);
        let mut dep = Dependency {
            state: Arc::new(initial_state(&name, &spec)),
            spec,
            instance,
            cancel,
            hysteresis,
            last_outcome: None,
            last_success: None,
            last_failure: None,
            stale_key: None,
            stale_at: Instant::now(),
            slot,
        };
        refresh(&name, &mut dep);
        self.dependencies.insert(name, dep);
        self.dirty = true;
        self.rollup_needed = true;
    }

    pub(crate) fn insert_service(&mut self, name: &str, spec: ServiceSpec) {
        let name: Arc<str> = Arc::from(name);
        let state = Arc::new(ServiceState {
            name: name.clone(),
            status: ServiceHealth::new(Health::Unknown, spec.degraded, self.shutting_down),
            degraded: spec.degraded,
            deciding: Vec::new(),
            inputs: rollup::inputs(&spec),
        });
        self.services.insert(name, Service { spec, state });
        self.dirty = true;
        self.rollup_needed = true;
    }

    pub(crate) fn build_probe(
        &mut self,
        spec: &DependencySpec,
    ) -> Result<Arc<dyn Probe>, crate::probe::BuildError> {
        self.factory.build(spec)
    }

    /// Starts the dependency's probe task.
    fn spawn(
        &mut self,
        name: &Arc<str>,
        spec: &Arc<DependencySpec>,
        probe: Arc<dyn Probe>,
    ) -> (u64, CancellationToken, Option<Arc<OnDemandSlot>>) {
        self.next_instance += 1;
        let cancel = self.cancel.child_token();
        let runner = Runner {
            dependency: name.clone(),
            instance: self.next_instance,
            probe,
            spec: spec.clone(),
            events: self.events_tx.clone(),
            permits: self.probe_permits.clone(),
        };
        let span = info_span!("dependency", dependency = %name, kind = spec.kind());
        let supervisor = runner.clone();
        let slot = match spec.mode {
            Mode::Background { interval, jitter } => {
                let task = schedule::background(runner, interval, jitter, cancel.clone());
                self.tracker
                    .spawn(supervisor.supervise(task).instrument(span));
                None
            }
            Mode::OnDemand(ttls) => {
                let slot = Arc::new(OnDemandSlot::new());
                let task = on_demand::on_demand(runner, slot.clone(), ttls, cancel.clone());
                self.tracker
                    .spawn(supervisor.supervise(task).instrument(span));
                Some(slot)
            }
        };
        (self.next_instance, cancel, slot)
    }

    /// The reducer task: applies commands, outcomes and expiries until shutdown.
    pub(crate) async fn run(mut self) {
        self.publish();
        let details_due = tokio::time::sleep_until(self.last_publish);
        tokio::pin!(details_due);
        let mut details_waiting = false;
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.shut_down();
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.command(command),
                    // Every handle is gone: nobody can read what we publish.
                    None => break,
                },
                Some(event) = self.events.recv() => {
                    self.outcome(event);
                    for _ in 1..BATCH {
                        match self.events.try_recv() {
                            Ok(event) => self.outcome(event),
                            Err(_) => break,
                        }
                    }
                }
                Some(expired) = self.stale.next() => self.expire(expired.into_inner()),
                () = &mut details_due, if details_waiting => {}
            }
            self.publish();
            details_waiting = self.details_dirty;
            if details_waiting {
                details_due
                    .as_mut()
                    .reset(self.last_publish + DETAIL_PUBLISH_INTERVAL);
            }
        }
        self.cancel.cancel();
    }

    fn outcome(&mut self, event: Event) {
        let Some(dep) = self.dependencies.get_mut(&event.dependency) else {
            return;
        };
        if dep.instance != event.instance || self.shutting_down {
            return;
        }
        // Inside the run's span: the transition events below join the probe's trace.
        let _span = event.span.enter();
        let Some(outcome) = event.outcome else {
            // Its task is gone: nothing will probe it again until it is replaced.
            self.expire_now(&event.dependency, "internal error: the probe task stopped");
            return;
        };
        if let Some(m) = &self.metrics {
            m.probe_finished(&event.dependency, &outcome);
        }
        tracing::debug!(dependency = %event.dependency, health = %outcome.health(), latency_ms = outcome.latency.as_millis() as u64, reason = outcome.verdict.reason().map(|r| r.as_str()).unwrap_or(""), "probe finished");
        let before = dep.hysteresis.health();
        let after = dep.hysteresis.observe(outcome.health());
        if outcome.is_success() {
            dep.last_success = Some(outcome.finished_at);
        } else {
            dep.last_failure = Some(outcome.finished_at);
        }
        dep.stale_at = Instant::now() + dep.spec.stale_after;
        let stale_after = stale_timer(dep.spec.stale_after);
        match &dep.stale_key {
            Some(key) => self.stale.reset(key, stale_after),
            None => dep.stale_key = Some(self.stale.insert(event.dependency.clone(), stale_after)),
        }
        let reason = outcome.verdict.reason().cloned();
        let previous_reason = dep.last_outcome.as_ref().and_then(|o| o.verdict.reason());
        if previous_reason != reason.as_ref() {
            self.reasons_changed = true;
        }
        dep.last_outcome = Some(outcome);
        refresh(&event.dependency, dep);
        self.details_dirty = true;
        if before != after {
            self.dirty = true;
            transition(
                Kind::Dependency,
                &event.dependency,
                before,
                after,
                reason.as_ref().map(|r| r.as_str()),
                self.metrics.as_deref(),
            );
            // Rolled up once per batch (each rollup reads every input of every service), inside
            // the span of the batch's last change, so service transitions join its trace.
            self.rollup_needed = true;
            self.rollup_span = event.span.clone();
        }
    }

    fn expire(&mut self, name: Arc<str>) {
        let Some(dep) = self.dependencies.get_mut(&name) else {
            return;
        };
        dep.stale_key = None;
        let left = dep.stale_at.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            // A capped timer fired early: wait for the rest.
            dep.stale_key = Some(self.stale.insert(name, stale_timer(left)));
            return;
        }
        self.expire_now(&name, "no recent outcome (stale)");
    }

    /// Makes a dependency Unknown at once (its outcome is stale, or its task stopped).
    fn expire_now(&mut self, name: &Arc<str>, reason: &str) {
        let Some(dep) = self.dependencies.get_mut(name) else {
            return;
        };
        if let Some(key) = dep.stale_key.take() {
            self.stale.remove(&key);
        }
        let before = dep.hysteresis.health();
        dep.hysteresis.expire();
        if before != Health::Unknown {
            transition(
                Kind::Dependency,
                name,
                before,
                Health::Unknown,
                Some(reason),
                self.metrics.as_deref(),
            );
            refresh(name, dep);
            self.dirty = true;
            self.rollup_needed = true;
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::PutDependency {
                name,
                spec,
                replace,
                reply,
            } => {
                let _ = reply.send(self.put_dependency(name, spec, replace));
            }
            Command::RemoveDependency { name, reply } => {
                let _ = reply.send(self.remove_dependency(&name));
            }
            Command::PutService { name, spec, reply } => {
                let _ = reply.send(self.put_service(name, spec));
            }
            Command::RemoveService { name, reply } => {
                let _ = reply.send(self.remove_service(&name));
            }
            Command::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn put_dependency(
        &mut self,
        name: String,
        spec: DependencySpec,
        replace: bool,
    ) -> Result<(), ChangeError> {
        let problems = spec.check(&format!("dependencies.{}", crate::config::path_key(&name)));
        if name.is_empty() || !problems.is_empty() {
            return Err(ChangeError::invalid(&name, problems));
        }
        match (self.dependencies.contains_key(name.as_str()), replace) {
            (true, false) => return Err(ChangeError::DuplicateDependency(name)),
            (false, true) => return Err(ChangeError::UnknownDependency(name)),
            _ => {}
        }
        let probe = self.factory.build(&spec)?;
        let Some(old) = self.dependencies.remove(name.as_str()) else {
            info!(dependency = %name, kind = spec.kind(), "dependency added");
            self.insert_dependency(&name, spec, probe);
            return Ok(());
        };
        // Same name, new settings: keep what is known (health, counts, last outcome) so services
        // do not flap through Unknown; the new thresholds apply from the next outcome.
        old.cancel.cancel();
        if let Some(key) = &old.stale_key {
            self.stale.remove(key);
        }
        let key: Arc<str> = Arc::from(name.as_str());
        let spec = Arc::new(spec);
        let (instance, cancel, slot) = self.spawn(&key, &spec, probe);
        let mut dep = Dependency {
            hysteresis: old.hysteresis.with_thresholds(spec.fall, spec.rise),
            stale_key: old.last_outcome.as_ref().map(|_| {
                self.stale
                    .insert(key.clone(), stale_timer(spec.stale_after))
            }),
            stale_at: Instant::now() + spec.stale_after,
            spec,
            instance,
            cancel,
            slot,
            ..old
        };
        refresh(&key, &mut dep);
        info!(dependency = %name, kind = dep.spec.kind(), "dependency replaced");
        self.dependencies.insert(key, dep);
        self.dirty = true;
        self.rollup_needed = true;
        Ok(())
    }

    fn remove_dependency(&mut self, name: &str) -> Result<(), ChangeError> {
        if !self.dependencies.contains_key(name) {
            return Err(ChangeError::UnknownDependency(name.to_owned()));
        }
        let users: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.spec.referenced().any(|d| d == name))
            .map(|(n, _)| n.to_string())
            .collect();
        if !users.is_empty() {
            return Err(ChangeError::DependencyInUse {
                dependency: name.to_owned(),
                services: users,
            });
        }
        if let Some(dep) = self.dependencies.remove(name) {
            dep.cancel.cancel();
            if let Some(key) = &dep.stale_key {
                self.stale.remove(key);
            }
        }
        if let Some(m) = &self.metrics {
            m.forget_dependency(name);
        }
        info!(dependency = %name, "dependency removed");
        self.dirty = true;
        Ok(())
    }

    fn put_service(&mut self, name: String, spec: ServiceSpec) -> Result<(), ChangeError> {
        let problems = spec.check(&name, &|d| self.dependencies.contains_key(d));
        if !problems.is_empty() {
            return Err(ChangeError::invalid(&name, problems));
        }
        info!(service = %name, "service set");
        self.insert_service(&name, spec);
        Ok(())
    }

    fn remove_service(&mut self, name: &str) -> Result<(), ChangeError> {
        if name.is_empty() {
            return Err(ChangeError::invalid(
                "",
                vec![crate::config::Problem::new(
                    "services.\"\"",
                    "the overall service \"\" cannot be removed",
                )],
            ));
        }
        if self.services.remove(name).is_none() {
            return Err(ChangeError::UnknownService(name.to_owned()));
        }
        if let Some(m) = &self.metrics {
            m.forget_service(name);
        }
        info!(service = %name, "service removed");
        self.dirty = true;
        Ok(())
    }

    /// Freezes every service at Unhealthy / not serving and stops every probe.
    fn shut_down(&mut self) {
        if !self.shutting_down {
            info!("shutdown: every service is now NOT_SERVING");
        }
        self.shutting_down = true;
        self.rollup_needed = true;
        self.dirty = true;
        self.publish();
        for dep in self.dependencies.values() {
            dep.cancel.cancel();
        }
    }

    fn roll_up(&mut self) {
        let span = std::mem::replace(&mut self.rollup_span, tracing::Span::none());
        let _entered = span.enter();
        let deps = &self.dependencies;
        let health_of = |d: &str| {
            deps.get(d)
                .map_or(Health::Unknown, |d| d.hysteresis.health())
        };
        for (name, svc) in &mut self.services {
            let Rolled { health, deciding } = if self.shutting_down {
                Rolled {
                    health: Health::Unhealthy,
                    deciding: Vec::new(),
                }
            } else {
                rollup::rollup(&svc.spec, &health_of)
            };
            let status = ServiceHealth::new(health, svc.spec.degraded, self.shutting_down);
            if status != svc.state.status || deciding != svc.state.deciding {
                if status.health != svc.state.status.health && !self.shutting_down {
                    let from = svc.state.status.health;
                    let why = deciding_reasons(&deciding, deps);
                    transition(
                        Kind::Service,
                        name,
                        from,
                        health,
                        Some(&why),
                        self.metrics.as_deref(),
                    );
                }
                svc.state = Arc::new(ServiceState {
                    status,
                    deciding,
                    ..(*svc.state).clone()
                });
            }
        }
        self.rollup_needed = false;
    }

    /// Publishes whether or not anything changed (for the benchmarks).
    pub(crate) fn publish_now(&mut self) {
        self.dirty = true;
        self.publish();
    }

    /// Rolls up if needed, and publishes if anything changed: at once for a change of health
    /// or configuration, for changed details only once [`DETAIL_PUBLISH_INTERVAL`] has passed
    /// since the last publication.
    pub(crate) fn publish(&mut self) {
        if self.rollup_needed {
            self.roll_up();
        }
        let details_due =
            self.details_dirty && self.last_publish.elapsed() >= DETAIL_PUBLISH_INTERVAL;
        if !self.dirty && !details_due {
            return;
        }
        if self.dirty || self.reasons_changed {
            self.revision += 1;
        }
        self.dirty = false;
        self.details_dirty = false;
        self.reasons_changed = false;
        self.last_publish = Instant::now();
        self.generation += 1;
        let snapshot = Arc::new(Snapshot {
            generation: self.generation,
            revision: self.revision,
            shutting_down: self.shutting_down,
            services: self.services.values().map(|s| s.state.clone()).collect(),
            dependencies: self
                .dependencies
                .values()
                .map(|d| d.state.clone())
                .collect(),
            on_demand: self
                .dependencies
                .values()
                .filter_map(|d| d.slot.clone())
                .collect(),
        });
        self.shared.publish(snapshot);
    }
}

/// The stale timer for `stale_after`: at most [`MAX_DURATION`], because tokio's `DelayQueue`
/// panics beyond about two years (a panic here would stop the reducer). A default
/// `stale_after` can be longer (three periods of up to a year each); such a timer fires
/// early and is set again for the rest ([`Reducer::expire`]).
///
/// [`MAX_DURATION`]: crate::config::MAX_DURATION
fn stale_timer(stale_after: Duration) -> Duration {
    stale_after.min(crate::config::MAX_DURATION)
}

/// Rebuilds the published form of a dependency from its state.
fn refresh(name: &Arc<str>, dep: &mut Dependency) {
    let state = DependencyState {
        health: dep.hysteresis.health(),
        last_outcome: dep.last_outcome.clone(),
        consecutive_successes: dep.hysteresis.consecutive_successes(),
        consecutive_failures: dep.hysteresis.consecutive_failures(),
        last_success: dep.last_success,
        last_failure: dep.last_failure,
        ..initial_state(name, &dep.spec)
    };
    dep.state = Arc::new(state);
}

fn initial_state(name: &Arc<str>, spec: &DependencySpec) -> DependencyState {
    let (mode, period) = match spec.mode {
        Mode::Background { interval, .. } => ("background", interval),
        Mode::OnDemand(o) => ("on_demand", o.ttl),
    };
    DependencyState {
        name: name.clone(),
        kind: spec.kind(),
        target: Arc::from(spec.target()),
        health: Health::Unknown,
        last_outcome: None,
        consecutive_successes: 0,
        consecutive_failures: 0,
        last_success: None,
        last_failure: None,
        thresholds: Thresholds {
            mode,
            period,
            timeout: spec.timeout,
            fall: spec.fall,
            rise: spec.rise,
            degraded_after: spec.degraded_after,
            stale_after: spec.stale_after,
        },
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Dependency,
    Service,
}

/// Why a service has its health: each deciding dependency with its reason,
/// `orders-api: HTTP 503; db: unknown` (empty when nothing decides, i.e. healthy).
fn deciding_reasons(deciding: &[Arc<str>], deps: &BTreeMap<Arc<str>, Dependency>) -> String {
    deciding
        .iter()
        .map(|name| {
            let why = match deps.get(name) {
                Some(d) if d.hysteresis.health() == Health::Unknown => "unknown".to_owned(),
                Some(d) => d
                    .last_outcome
                    .as_ref()
                    .and_then(|o| o.verdict.reason())
                    .map_or_else(|| d.hysteresis.health().to_string(), |r| r.to_string()),
                None => "unknown".to_owned(),
            };
            format!("{name}: {why}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A health transition: logged once (warn when worse, info when better) and counted.
fn transition(
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
