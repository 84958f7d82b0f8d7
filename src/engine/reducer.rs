//! The reducer: the engine's single writer. It owns every dependency's and service's state,
//! applies outcomes, expiries and runtime changes one at a time, and publishes an
//! `Arc<Snapshot>` plus per-service watch values after each batch, so nobody holds a lock
//! across `.await`. Its parts are rooms of their own (`dependency`, `service`, `publication`,
//! `change`, `stale`, `spawn`, `transition`); publishing is O(dependencies), throttled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

mod restore;

use super::Shared;
use super::change::{self, Applied, ChangeError, Command, Plan, Reporter, Target};
use super::dependency::Dependency;
use super::factory::ProbeFactory;
use super::publication::Throttle;
use super::schedule::Event;
use super::service::Service;
use super::spawn::Spawner;
use super::stale::StaleTimers;
use super::transition;
use crate::config::Mode;
use crate::config::{DependencySpec, ServiceSpec};
use crate::metrics::Metrics;
use crate::probe::Probe;
use crate::snapshot::{Override, Snapshot};
use crate::{Health, Outcome, Reason, Verdict};

pub(crate) struct Reducer {
    shared: Arc<Shared>,
    dependencies: BTreeMap<Arc<str>, Dependency>,
    services: BTreeMap<Arc<str>, Service>,
    /// Builds probes (also for the engine's start, before the first publication).
    pub(crate) factory: ProbeFactory,
    shutting_down: bool,
    stale: StaleTimers,
    spawner: Spawner,
    events: mpsc::Receiver<Event>,
    commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
    pub(crate) throttle: Throttle,
    /// A dependency's health changed: services must be rolled up again.
    rollup_needed: bool,
    /// Dependencies were added, replaced or removed: the on-demand slots must be republished.
    slots_changed: bool,
    /// The probe run whose outcome asked for the rollup, for the transitions it logs.
    rollup_span: tracing::Span,
    /// When the earliest active override expires.
    next_expiry: Option<Instant>,
    metrics: Option<Arc<Metrics>>,
    /// Moves on with every change to the dependencies or services: what a [`Plan`] is
    /// computed against.
    config_revision: u64,
}

/// How many outcomes the reducer applies before publishing, when many arrive at once.
const BATCH: usize = 1024;

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
            shutting_down: false,
            stale: StaleTimers::default(),
            spawner: Spawner::new(tracker, cancel.clone(), events_tx),
            events,
            commands,
            cancel,
            throttle: Throttle::new(),
            rollup_needed: true,
            slots_changed: true,
            rollup_span: tracing::Span::none(),
            next_expiry: None,
            metrics,
            config_revision: 0,
        }
    }

    /// Adds a dependency whose probe is already built.
    pub(crate) fn insert_dependency(
        &mut self,
        name: &str,
        spec: DependencySpec,
        probe: Arc<dyn Probe>,
    ) {
        let (name, spec): (Arc<str>, _) = (Arc::from(name), Arc::new(spec));
        let task = self.spawner.spawn(&name, &spec, probe);
        let mut dependency = Dependency::new(&name, spec, task);
        if let Mode::Push { ttl } = dependency.spec.mode {
            // No report within the ttl from now is a failure, as after any report.
            self.stale.set(&mut dependency.stale_key, &name, ttl);
        }
        self.dependencies.insert(name, dependency);
        self.slots_changed = true;
        self.health_may_change();
    }

    /// Adds or replaces a service (a replaced one keeps its override).
    pub(crate) fn insert_service(&mut self, name: &str, spec: ServiceSpec) {
        let mut service = Service::new(Arc::from(name), spec, self.shutting_down);
        service.forced = self.services.get(name).and_then(|s| s.forced.clone());
        self.services.insert(Arc::from(name), service);
        self.health_may_change();
    }

    /// The reducer task: applies commands, outcomes and expiries until shutdown.
    pub(crate) async fn run(mut self) {
        self.publish();
        let details_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(details_due);
        let override_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(override_due);
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
                    None => break, // every handle is gone: nobody reads what we publish
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
                Some(fired) = self.stale.fired() => self.expire(fired),
                () = &mut details_due, if details_waiting => {}
                () = &mut override_due, if self.next_expiry.is_some() => self.expire_overrides(),
            }
            if let Some(at) = self.next_expiry
                && at != override_due.deadline()
            {
                override_due.as_mut().reset(at);
            }
            self.publish();
            // Details waiting to be published wake the loop when they are due.
            let due = self.throttle.details_deadline();
            details_waiting = due.map(|at| details_due.as_mut().reset(at)).is_some();
        }
        self.cancel.cancel();
    }

    fn outcome(&mut self, event: Event) {
        let Some(dep) = self.dependencies.get_mut(&event.dependency) else {
            return;
        };
        if dep.task.instance != event.instance || self.shutting_down {
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
        let reason = outcome.verdict.reason().cloned();
        dep.note = event.note;
        if event.certificate.is_some() {
            dep.certificate = event.certificate;
        }
        let applied = dep.apply(&event.dependency, outcome);
        let stale_after = dep.spec.stale_after;
        self.stale
            .set(&mut dep.stale_key, &event.dependency, stale_after);
        self.throttle.details(applied.reason_changed);
        if applied.before != applied.after {
            self.throttle.changed();
            let (reason, m) = (reason.as_ref().map(|r| r.as_str()), self.metrics.as_deref());
            transition::dependency(&event.dependency, applied.before, applied.after, reason, m);
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
        let left = dep.stale_in();
        if !left.is_zero() {
            // A capped timer fired early: wait for the rest.
            self.stale.set(&mut dep.stale_key, &name, left);
            return;
        }
        if let Mode::Push { ttl } = dep.spec.mode {
            let reason = Reason::new(format!("no report for {}", humantime::format_duration(ttl)));
            if let Some(before) = dep.miss(&name, reason.clone()) {
                let m = self.metrics.as_deref();
                transition::dependency(&name, before, Health::Unhealthy, Some(reason.as_str()), m);
                self.health_may_change();
            } else {
                self.throttle.changed();
            }
            return;
        }
        self.expire_now(&name, "no recent outcome (stale)");
    }

    /// Makes a dependency Unknown at once (its outcome is stale, or its task stopped).
    fn expire_now(&mut self, name: &Arc<str>, reason: &str) {
        let Some(dep) = self.dependencies.get_mut(name) else {
            return;
        };
        self.stale.clear(&mut dep.stale_key);
        if let Some(before) = dep.expire(name) {
            let m = self.metrics.as_deref();
            transition::dependency(name, before, Health::Unknown, Some(reason), m);
            self.health_may_change();
        }
    }

    /// Applies a command, publishes (so the caller, once answered, reads its effect), and
    /// answers.
    fn command(&mut self, command: Command) {
        let (reply, result) = match command {
            Command::PutDependency {
                name,
                spec,
                replace,
                reply,
            } => (reply, self.put_dependency(name, spec, replace)),
            Command::RemoveDependency { name, reply } => (reply, self.remove_dependency(&name)),
            Command::PutService { name, spec, reply } => (reply, self.put_service(name, spec)),
            Command::RemoveService { name, reply } => (reply, self.remove_service(&name)),
            Command::Apply {
                dependencies,
                services,
                reply,
            } => {
                let result = self.apply(dependencies, services);
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::ApplyPlan { plan, reply } => {
                let result = self.apply_plan(plan);
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::Override {
                target,
                health,
                duration,
                reason,
                reply,
            } => {
                let result = self.set_override(&target, health, duration, &reason);
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::Report {
                name,
                health,
                reason,
                reporter,
                reply,
            } => {
                let result = self.report(&name, health, reason, &reporter);
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::Refresh { name, reply } => {
                let result = match self.dependencies.get(name.as_str()) {
                    None => Err(ChangeError::UnknownDependency(name.clone())),
                    Some(dep) => match &dep.task.refresh {
                        Some(refresh) => {
                            refresh.notify_one();
                            info!(dependency = %name, "refresh: probing now");
                            Ok(())
                        }
                        None => Err(ChangeError::NotProbed(name.clone())),
                    },
                };
                let _ = reply.send(result);
                return;
            }
            Command::Restore { saved, reply } => {
                let result = if self.shutting_down {
                    Err(ChangeError::ShuttingDown)
                } else {
                    Ok(self.restore(saved))
                };
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::Saved { reply } => {
                let _ = reply.send(Ok(self.saved()));
                return;
            }
            Command::ClearOverride { target, reply } => {
                let result = self.clear_override(&target, "cleared");
                self.publish();
                let _ = reply.send(result);
                return;
            }
            Command::Shutdown { .. } => unreachable!("handled in run"),
        };
        if result.is_ok() {
            self.config_revision += 1;
        }
        // Published before the reply: whoever asked sees the change in the next snapshot.
        self.publish();
        let _ = reply.send(result);
    }

    fn put_dependency(
        &mut self,
        name: String,
        spec: DependencySpec,
        replace: bool,
    ) -> Result<(), ChangeError> {
        let exists = self.dependencies.contains_key(name.as_str());
        change::check_put_dependency(&name, &spec, exists, replace)?;
        if !spec.parents.is_empty() {
            // Only a dependency with parents can close a cycle or name a missing one.
            let mut specs: BTreeMap<String, DependencySpec> = (self.dependencies.iter())
                .map(|(n, d)| (n.to_string(), (*d.spec).clone()))
                .collect();
            specs.insert(name.clone(), spec.clone());
            let problems = crate::config::parent_problems(&specs, &|_| false);
            if !problems.is_empty() {
                return Err(ChangeError::InvalidConfig(problems));
            }
        }
        let probe = self.factory.build(&spec)?;
        let Some(old) = self.dependencies.remove(name.as_str()) else {
            info!(dependency = %name, kind = spec.kind(), "dependency added");
            self.insert_dependency(&name, spec, probe);
            return Ok(());
        };
        self.swap_dependency(&name, old, spec, probe);
        Ok(())
    }

    /// Puts `old`'s successor in place: a new probe task, the known health kept.
    fn swap_dependency(
        &mut self,
        name: &str,
        mut old: Dependency,
        spec: DependencySpec,
        probe: Arc<dyn Probe>,
    ) {
        old.task.cancel.cancel();
        self.stale.clear(&mut old.stale_key);
        let key: Arc<str> = Arc::from(name);
        let spec = Arc::new(spec);
        let task = self.spawner.spawn(&key, &spec, probe);
        let mut dep = old.replaced(&key, spec, task);
        if dep.has_outcome() || matches!(dep.spec.mode, Mode::Push { .. }) {
            let stale_after = dep.spec.stale_after;
            self.stale.set(&mut dep.stale_key, &key, stale_after);
        }
        info!(dependency = %name, kind = dep.spec.kind(), "dependency replaced");
        self.dependencies.insert(key, dep);
        self.slots_changed = true;
        self.health_may_change();
    }

    /// Replaces every dependency and service at once (a reload), in this one step: nothing
    /// is published in between, so readers see the old configuration or the new one. Specs
    /// equal to the running ones are left alone (state, history, connections and schedule
    /// kept); changed ones are swapped keeping their health; the rest added or removed. When
    /// anything is invalid or a probe cannot be built, nothing changes.
    fn apply(
        &mut self,
        dependencies: BTreeMap<String, DependencySpec>,
        services: BTreeMap<String, ServiceSpec>,
    ) -> Result<(Applied, u64), ChangeError> {
        if self.shutting_down {
            return Err(ChangeError::ShuttingDown);
        }
        let services = change::with_default_service(&dependencies, services);
        change::check_apply(&dependencies, &services)?;
        let plan = Plan::diff(
            self.config_revision,
            (
                |n: &str| self.dependencies.get(n).map(|d| &*d.spec),
                self.dependencies.keys().map(|k| &**k),
            ),
            (
                |n: &str| self.services.get(n).map(|s| &*s.spec),
                self.services.keys().map(|k| &**k),
            ),
            dependencies,
            services,
        );
        self.apply_plan(plan)
    }

    /// [`Reducer::apply`] from its difference with what runs, computed against this
    /// configuration revision (see [`Plan`]): the work is the changes'.
    fn apply_plan(&mut self, plan: Plan) -> Result<(Applied, u64), ChangeError> {
        if self.shutting_down {
            return Err(ChangeError::ShuttingDown);
        }
        if plan.base != self.config_revision {
            return Err(ChangeError::Stale);
        }
        // Every probe first: a build failure must find everything as it was.
        let mut probes = BTreeMap::new();
        for (name, spec) in &plan.dependencies {
            let probe = self
                .factory
                .build(spec)
                .map_err(|source| ChangeError::Probe {
                    dependency: name.clone(),
                    source,
                })?;
            probes.insert(name.clone(), probe);
        }
        let mut applied = Applied {
            kept_dependencies: plan.kept_dependencies,
            kept_services: plan.kept_services,
            ..Applied::default()
        };
        for name in plan.removed_services {
            if self.services.remove(name.as_str()).is_none() {
                continue;
            }
            if let Some(m) = &self.metrics {
                m.forget_service(&name);
            }
            info!(service = %name, "service removed");
            applied.removed_services.push(name);
        }
        for name in plan.removed_dependencies {
            let Some(mut dep) = self.dependencies.remove(name.as_str()) else {
                continue;
            };
            dep.task.cancel.cancel();
            self.stale.clear(&mut dep.stale_key);
            if let Some(m) = &self.metrics {
                m.forget_dependency(&name);
            }
            info!(dependency = %name, "dependency removed");
            applied.removed_dependencies.push(name);
            self.slots_changed = true;
        }
        for (name, spec) in plan.dependencies {
            let Some(probe) = probes.remove(&name) else {
                continue;
            };
            match self.dependencies.remove(name.as_str()) {
                Some(old) => {
                    self.swap_dependency(&name, old, spec, probe);
                    applied.replaced_dependencies.push(name);
                }
                None => {
                    info!(dependency = %name, kind = spec.kind(), "dependency added");
                    self.insert_dependency(&name, spec, probe);
                    applied.added_dependencies.push(name);
                }
            }
        }
        for (name, spec) in plan.services {
            let exists = self.services.contains_key(name.as_str());
            info!(service = %name, "service set");
            self.insert_service(&name, spec);
            if exists {
                applied.changed_services.push(name);
            } else {
                applied.added_services.push(name);
            }
        }
        self.config_revision += 1;
        self.health_may_change();
        Ok((applied, self.config_revision))
    }

    fn remove_dependency(&mut self, name: &str) -> Result<(), ChangeError> {
        let services = self
            .services
            .iter()
            .map(|(n, s)| (&**n, s.spec.referenced().collect::<Vec<_>>()));
        change::check_remove_dependency(name, self.dependencies.contains_key(name), services)?;
        if let Some(dep) = self.dependencies.remove(name) {
            self.slots_changed = true;
            dep.task.cancel.cancel();
            let mut dep = dep;
            self.stale.clear(&mut dep.stale_key);
        }
        if let Some(m) = &self.metrics {
            m.forget_dependency(name);
        }
        info!(dependency = %name, "dependency removed");
        self.throttle.changed();
        Ok(())
    }

    fn put_service(&mut self, name: String, spec: ServiceSpec) -> Result<(), ChangeError> {
        change::check_put_service(&name, &spec, &|d| self.dependencies.contains_key(d))?;
        info!(service = %name, "service set");
        self.insert_service(&name, spec);
        Ok(())
    }

    fn remove_service(&mut self, name: &str) -> Result<(), ChangeError> {
        change::check_remove_service(name, self.services.contains_key(name))?;
        self.services.remove(name);
        if let Some(m) = &self.metrics {
            m.forget_service(name);
        }
        info!(service = %name, "service removed");
        self.throttle.changed();
        Ok(())
    }

    /// A push dependency's report, applied as an outcome (hysteresis applies; its ttl starts
    /// again).
    fn report(
        &mut self,
        name: &str,
        health: Health,
        reason: Option<String>,
        reporter: &Reporter,
    ) -> Result<(), ChangeError> {
        if self.shutting_down {
            return Err(ChangeError::ShuttingDown);
        }
        // A caller with a dependency's token learns nothing about other names: for it an
        // unknown name or one that is not push is a wrong token. Operators get the reason.
        let operator = *reporter == Reporter::Admin;
        let refuse = |e: ChangeError| {
            if operator {
                e
            } else {
                ChangeError::Unauthenticated(name.to_owned())
            }
        };
        let Some((key, dep)) = self.dependencies.get_key_value(name) else {
            return Err(refuse(ChangeError::UnknownDependency(name.to_owned())));
        };
        if !matches!(dep.spec.mode, Mode::Push { .. }) {
            return Err(refuse(ChangeError::NotPush(name.to_owned())));
        }
        if let Reporter::Token(given) = reporter {
            let own = dep.spec.push_token();
            if !own
                .is_some_and(|own| crate::auth::constant_time_eq(given.as_bytes(), own.as_bytes()))
            {
                return Err(ChangeError::Unauthenticated(name.to_owned()));
            }
        }
        let reason = || {
            Reason::new(
                reason
                    .clone()
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| format!("reported {health}")),
            )
        };
        let verdict = match health {
            Health::Healthy => Verdict::Healthy,
            Health::Degraded => Verdict::Degraded(reason()),
            Health::Unhealthy => Verdict::Unhealthy(reason()),
            Health::Unknown => return Err(ChangeError::InvalidReport),
        };
        let (key, instance, now) = (key.clone(), dep.task.instance, SystemTime::now());
        if let Some(dep) = self.dependencies.get_mut(&key) {
            dep.last_report = Some(now);
        }
        let event = Event {
            dependency: key,
            instance,
            outcome: Some(Outcome {
                verdict,
                latency: Duration::ZERO,
                finished_at: now,
            }),
            span: tracing::Span::current(),
            note: None,
            certificate: None,
        };
        self.outcome(event);
        Ok(())
    }

    /// Forces `target`'s health for `duration` (replacing an override it has).
    fn set_override(
        &mut self,
        target: &Target,
        health: Health,
        duration: Duration,
        reason: &str,
    ) -> Result<Arc<Override>, ChangeError> {
        if self.shutting_down {
            return Err(ChangeError::ShuttingDown);
        }
        change::check_override(health, duration, reason)?;
        let now = SystemTime::now();
        let forced = Arc::new(Override {
            health,
            since: now,
            until: now + duration,
            reason: Reason::new(reason.to_owned()),
        });
        self.force(target, forced.clone(), duration)?;
        info!(
            kind = target.kind(),
            name = target.name(),
            health = %health,
            until = %humantime::format_rfc3339_seconds(forced.until),
            reason = %forced.reason,
            "override set"
        );
        Ok(forced)
    }

    /// Puts `forced` on `target` for `left` (on the reducer's clock).
    fn force(
        &mut self,
        target: &Target,
        forced: Arc<Override>,
        left: Duration,
    ) -> Result<(), ChangeError> {
        let expires = Instant::now() + left;
        match target {
            Target::Dependency(name) => {
                let (key, dep) = self.dependency_mut(name)?;
                let (before, after) = dep.force(&key, Some((forced, expires)));
                if before != after {
                    self.rollup_needed = true;
                }
            }
            Target::Service(name) => {
                let Some(service) = self.services.get_mut(name.as_str()) else {
                    return Err(ChangeError::UnknownService(name.clone()));
                };
                service.forced = Some((forced, expires));
                self.rollup_needed = true;
            }
        }
        self.throttle.changed();
        self.next_expiry = self.earliest_expiry();
        Ok(())
    }

    /// The dependency `name`, with its key (the name its state is published under).
    fn dependency_mut(&mut self, name: &str) -> Result<(Arc<str>, &mut Dependency), ChangeError> {
        let unknown = || ChangeError::UnknownDependency(name.to_owned());
        let key = (self.dependencies.get_key_value(name))
            .map(|(k, _)| k.clone())
            .ok_or_else(unknown)?;
        let dep = self.dependencies.get_mut(&key).ok_or_else(unknown)?;
        Ok((key, dep))
    }

    /// Ends `target`'s override (`why`: cleared, expired); returns whether it had one.
    fn clear_override(&mut self, target: &Target, why: &str) -> Result<bool, ChangeError> {
        let had = match target {
            Target::Dependency(name) => {
                let (key, dep) = self.dependency_mut(name)?;
                let had = dep.forced_until().is_some();
                if had {
                    dep.force(&key, None);
                }
                had
            }
            Target::Service(name) => {
                let Some(service) = self.services.get_mut(name.as_str()) else {
                    return Err(ChangeError::UnknownService(name.clone()));
                };
                service.forced.take().is_some()
            }
        };
        if had {
            info!(
                kind = target.kind(),
                name = target.name(),
                "override {why}: the computed health applies"
            );
            self.health_may_change();
            self.next_expiry = self.earliest_expiry();
        }
        Ok(had)
    }

    /// Ends every override whose time is up.
    fn expire_overrides(&mut self) {
        let now = Instant::now();
        let due: Vec<Target> = (self.dependencies.iter())
            .filter(|(_, d)| d.forced_until().is_some_and(|at| at <= now))
            .map(|(n, _)| Target::Dependency(n.to_string()))
            .chain(
                (self.services.iter())
                    .filter(|(_, s)| s.forced.as_ref().is_some_and(|(_, at)| *at <= now))
                    .map(|(n, _)| Target::Service(n.to_string())),
            )
            .collect();
        for target in &due {
            let _ = self.clear_override(target, "expired");
        }
        self.next_expiry = self.earliest_expiry();
    }

    fn earliest_expiry(&self) -> Option<Instant> {
        let deps = self
            .dependencies
            .values()
            .filter_map(Dependency::forced_until);
        let services =
            (self.services.values()).filter_map(|s| s.forced.as_ref().map(|(_, at)| *at));
        deps.chain(services).min()
    }

    /// Freezes every service at Unhealthy / not serving and stops every probe.
    fn shut_down(&mut self) {
        if !self.shutting_down {
            info!("shutdown: every service is now NOT_SERVING");
        }
        self.shutting_down = true;
        self.health_may_change();
        self.publish();
        for dep in self.dependencies.values() {
            dep.task.cancel.cancel();
        }
    }

    fn roll_up(&mut self) {
        let span = std::mem::replace(&mut self.rollup_span, tracing::Span::none());
        let _entered = span.enter();
        self.attribute_causes();
        for service in self.services.values_mut() {
            let metrics = self.metrics.as_deref();
            service.roll_up(&self.dependencies, self.shutting_down, metrics);
        }
        self.rollup_needed = false;
    }

    /// Root causes: each failing dependency with an Unhealthy parent gets the chain to the
    /// root (the first Unhealthy ancestor, in `parents` order, whose own parents are not), the
    /// others none. Before the services roll up, which name root causes.
    fn attribute_causes(&mut self) {
        let deps = &self.dependencies;
        let health = |n: &str| deps.get(n).map_or(Health::Unknown, Dependency::health);
        let chain_of = |name: &Arc<str>| -> Option<Chain> {
            let mut chain: Vec<Arc<str>> = Vec::new();
            let mut at = name.clone();
            // A DAG (checked at every change); the bound only guards against a defect.
            for _ in 0..=deps.len() {
                let parents = deps
                    .get(&at)
                    .map(|d| &d.spec.parents[..])
                    .unwrap_or_default();
                let Some(next) = parents.iter().find(|p| health(p) == Health::Unhealthy) else {
                    break;
                };
                let Some((next, _)) = deps.get_key_value(next.as_str()) else {
                    break;
                };
                chain.push(next.clone());
                at = next.clone();
            }
            (!chain.is_empty()).then(|| chain.into())
        };
        let causes: Vec<(Arc<str>, Option<Chain>)> = deps
            .iter()
            .filter(|(_, d)| !d.spec.parents.is_empty() || d.cause().is_some())
            .map(|(name, d)| {
                let failing = matches!(d.health(), Health::Unhealthy | Health::Degraded);
                (name.clone(), failing.then(|| chain_of(name)).flatten())
            })
            .collect();
        for (name, cause) in causes {
            if let Some(d) = self.dependencies.get_mut(&name)
                && d.set_cause(&name, cause)
            {
                self.throttle.details(true);
            }
        }
    }

    /// A health, a service or the configuration may have changed: roll up and publish now.
    fn health_may_change(&mut self) {
        self.throttle.changed();
        self.rollup_needed = true;
    }

    /// Rolls up if needed, and publishes if the throttle says a publication is due.
    pub(crate) fn publish(&mut self) {
        if self.rollup_needed {
            self.roll_up();
        }
        let Some(numbers) = self.throttle.due() else {
            return;
        };
        if std::mem::take(&mut self.slots_changed) {
            let slots = self
                .dependencies
                .values()
                .filter_map(|d| d.task.slot.clone());
            self.shared.on_demand.send_replace(slots.collect());
        }
        let snapshot = Arc::new(Snapshot {
            generation: numbers.generation,
            revision: numbers.revision,
            shutting_down: self.shutting_down,
            services: self.services.values().map(|s| s.state.clone()).collect(),
            dependencies: self
                .dependencies
                .values()
                .map(|d| d.state().clone())
                .collect(),
        });
        self.shared.publish(snapshot);
    }
}

/// A chain of dependency names to a root cause (see `DependencyState::caused_by`).
type Chain = Arc<[Arc<str>]>;
