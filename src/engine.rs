//! The engine: probes dependencies in the background and publishes their health and the
//! services' rollup as [`Snapshot`]s.
//!
//! ```text
//!  probe tasks (one per dependency) ──mpsc──► reducer (single writer) ──► Arc<Snapshot>
//!                                    commands ──►                     └─► per-service watch
//! ```
//!
//! [`Engine::builder`] or [`Engine::from_config`] → [`EngineBuilder::start`] → a [`Handle`],
//! which readers clone freely: reading is a pointer copy and never waits for a probe.

#[doc(hidden)]
pub mod bench;
pub mod capacity;
mod change;
mod dependency;
mod factory;
pub(crate) mod hysteresis;
pub(crate) mod on_demand;
mod publication;
mod reducer;
pub(crate) mod rollup;
mod schedule;
mod service;
mod shared;
mod spawn;
mod stale;
pub mod subscription;
mod transition;

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Health;
use crate::config::{Config, DependencySpec, Problem, ServiceSpec, path_key};
use crate::metrics::Metrics;
use crate::probe::BuildError;
use crate::snapshot::{Override, Snapshot};
#[cfg(test)]
pub(crate) use change::with_default_service;
pub use change::{Applied, ChangeError, MAX_OVERRIDE, Reporter, Saved, SavedReport, Target};
use change::{Command, list};
pub(crate) use change::{Effective, Plan, Service};
use reducer::Reducer;
pub use shared::ServiceWatch;
pub(crate) use shared::Shared;
pub(crate) use shared::WatchGuard;

/// Entry points for building an engine.
#[derive(Debug)]
pub struct Engine;

impl Engine {
    /// An empty builder.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A builder holding every dependency and service of `config`.
    pub fn from_config(config: &Config) -> EngineBuilder {
        EngineBuilder {
            dependencies: config.dependencies.clone(),
            services: config.services.clone(),
            metrics: None,
        }
    }
}

/// Dependencies and services to start with.
#[derive(Debug, Default)]
pub struct EngineBuilder {
    dependencies: BTreeMap<String, DependencySpec>,
    services: BTreeMap<String, ServiceSpec>,
    metrics: Option<Arc<Metrics>>,
}

impl EngineBuilder {
    /// Adds (or replaces) a dependency.
    #[must_use]
    pub fn dependency(mut self, name: impl Into<String>, spec: DependencySpec) -> EngineBuilder {
        self.dependencies.insert(name.into(), spec);
        self
    }

    /// Adds (or replaces) a service.
    #[must_use]
    pub fn service(mut self, name: impl Into<String>, spec: ServiceSpec) -> EngineBuilder {
        self.services.insert(name.into(), spec);
        self
    }

    /// Records probe durations, transitions and health gauges in `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> EngineBuilder {
        self.metrics = Some(metrics);
        self
    }

    /// Validates everything, builds every probe and starts probing. When no `""` service was
    /// given, one is added that relies on every dependency (critical).
    ///
    /// Must be called within a Tokio runtime. Fails, starting nothing, if any dependency or
    /// service is invalid or a probe cannot be built.
    pub fn start(mut self) -> Result<Handle, StartError> {
        self.services.entry(String::new()).or_insert_with(|| {
            ServiceSpec::with_all(self.dependencies.keys().cloned(), crate::Impact::Critical)
        });
        let mut problems = Vec::new();
        for (name, spec) in &self.dependencies {
            problems.extend(spec.check(&format!("dependencies.{}", path_key(name))));
        }
        for (name, spec) in &self.services {
            problems.extend(spec.check(name, &|d| self.dependencies.contains_key(d)));
        }
        if !problems.is_empty() {
            return Err(StartError::Invalid(problems));
        }
        let (commands_tx, commands) = mpsc::channel(64);
        let shared = Arc::new(Shared::new());
        if let Some(m) = &self.metrics {
            m.attach(shared.snapshot.subscribe());
        }
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let mut reducer = Reducer::new(
            shared.clone(),
            commands,
            tracker.clone(),
            cancel.clone(),
            self.metrics,
        );
        for (name, spec) in self.dependencies {
            let probe = match reducer.factory.build(&spec) {
                Ok(probe) => probe,
                Err(source) => {
                    cancel.cancel();
                    return Err(StartError::Build {
                        dependency: name,
                        source,
                    });
                }
            };
            reducer.insert_dependency(&name, spec, probe);
        }
        for (name, spec) in self.services {
            reducer.insert_service(&name, spec);
        }
        // Publish before returning, so the first reader sees every dependency and service.
        reducer.publish();
        tracker.spawn(supervise(shared.clone(), reducer.run()));
        Ok(Handle(Arc::new(HandleParts {
            shared,
            commands: commands_tx,
            tracker,
            cancel,
        })))
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Dependencies or services break the rules; every problem is listed.
    #[error("invalid engine settings: {}", list(.0))]
    Invalid(Vec<Problem>),
    /// A probe could not be built.
    #[error("dependency {dependency:?}")]
    Build {
        /// The dependency.
        dependency: String,
        /// Why.
        #[source]
        source: BuildError,
    },
}

/// Runs the reducer; if it panics (a defect), the engine fails loudly: see [`Shared::fail`].
async fn supervise(shared: Arc<Shared>, reducer: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(reducer).catch_unwind().await {
        shared.fail(&schedule::panic_message(&*panic));
    }
}

/// A cheap, cloneable handle to a running engine: read snapshots, watch services, change
/// dependencies and services, shut down. A clone is one reference count (servers clone their
/// services, and with them the handle, for every request).
#[derive(Debug, Clone)]
pub struct Handle(Arc<HandleParts>);

#[derive(Debug)]
struct HandleParts {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Handle {
    /// The latest snapshot. Never waits for a probe, and has no effect: to have on-demand
    /// dependencies answer a question, call [`Handle::wake_on_demand`] first.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.0.shared.snapshot.borrow().clone()
    }

    /// Tells every on-demand dependency that someone asked about health: those whose cached
    /// outcome expired probe again, in the background (a later snapshot shows the result;
    /// nothing here waits). The fronts call it for each Check, Watch, List and Detail request,
    /// since a question is what an on-demand dependency waits for; an embedder serving its own
    /// answers from [`Handle::snapshot`] should too.
    pub fn wake_on_demand(&self) {
        // Touching is a few atomics and never blocks, so it happens under the read borrow (no
        // Arc clone on every Check; with no on-demand dependency this is an empty loop).
        for slot in self.0.shared.on_demand.borrow().iter() {
            slot.touch();
        }
    }

    /// A receiver that sees every published snapshot (the latest one when it falls behind).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.0.shared.snapshot.subscribe()
    }

    /// A receiver that sees only snapshots that changed what watchers are told about (see
    /// [`Snapshot::revision`]): it is not woken by publications that only update latencies and
    /// counters.
    pub fn subscribe_changes(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.0.shared.changes.subscribe()
    }

    /// A receiver for one service's status: `None` while no service has that name. It is
    /// told only when the value changes, and holds just the latest value, so a reader that
    /// stops reading costs nothing and delays nobody.
    pub fn watch_service(&self, name: &str) -> ServiceWatch {
        let mut watchers = self
            .0
            .shared
            .watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (name, rx) = match watchers.channels.get_key_value(name) {
            Some((name, tx)) => (name.clone(), tx.subscribe()),
            None => {
                // Read the snapshot under the lock: the reducer updates channels under it after
                // each publication, so this channel cannot miss a change.
                let snapshot = self.0.shared.snapshot.borrow().clone();
                if watchers.channels.len() >= 2 * watchers.swept.max(512) {
                    watchers.sweep(&snapshot);
                }
                let (tx, rx) = watch::channel(snapshot.service(name).map(|s| s.status));
                let name: Arc<str> = Arc::from(name);
                watchers.channels.insert(name.clone(), tx);
                (name, rx)
            }
        };
        ServiceWatch {
            rx,
            guard: WatchGuard {
                shared: Arc::downgrade(&self.0.shared),
                name,
            },
        }
    }

    /// Adds a dependency; fails if the name is taken or the spec is invalid.
    pub async fn add_dependency(
        &self,
        name: impl Into<String>,
        spec: DependencySpec,
    ) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::PutDependency {
            name,
            spec,
            replace: false,
            reply,
        })
        .await
    }

    /// Replaces an existing dependency's spec, keeping its known health.
    pub async fn replace_dependency(
        &self,
        name: impl Into<String>,
        spec: DependencySpec,
    ) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::PutDependency {
            name,
            spec,
            replace: true,
            reply,
        })
        .await
    }

    /// Removes a dependency no service relies on.
    pub async fn remove_dependency(&self, name: impl Into<String>) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::RemoveDependency { name, reply })
            .await
    }

    /// Adds or replaces a service; every dependency it names must exist.
    pub async fn set_service(
        &self,
        name: impl Into<String>,
        spec: ServiceSpec,
    ) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::PutService { name, spec, reply })
            .await
    }

    /// Removes a service (not `""`); its watchers see `None`.
    pub async fn remove_service(&self, name: impl Into<String>) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::RemoveService { name, reply })
            .await
    }

    /// Replaces every dependency and service at once, as a config reload does: specs equal to
    /// the running ones keep their state, history, connections and schedule; changed ones get a
    /// new probe and keep their known health; missing ones are removed (watchers of a removed
    /// service see `None`), new ones added. When no `""` service is given, one relying on
    /// every dependency (critical) is used, as at start. All or nothing: when anything is
    /// invalid or a probe cannot be built, nothing changes and every problem is returned.
    /// Readers see the old configuration or the new one, never a mix.
    pub async fn apply(
        &self,
        dependencies: BTreeMap<String, DependencySpec>,
        services: BTreeMap<String, ServiceSpec>,
    ) -> Result<Applied, ChangeError> {
        Ok(self.apply_at(dependencies, services).await?.0)
    }

    /// [`Handle::apply`], also answering the configuration revision it made (what a
    /// [`Plan`] for the next change is computed against).
    pub(crate) async fn apply_at(
        &self,
        dependencies: BTreeMap<String, DependencySpec>,
        services: BTreeMap<String, ServiceSpec>,
    ) -> Result<(Applied, u64), ChangeError> {
        self.request(|reply| Command::Apply {
            dependencies,
            services,
            reply,
        })
        .await
    }

    /// Applies a [`Plan`]: as [`Handle::apply_at`] for the configuration it was computed to,
    /// or [`ChangeError::Stale`] (nothing changed) when the engine no longer runs the one it
    /// was computed from.
    pub(crate) async fn apply_plan(&self, plan: Plan) -> Result<(Applied, u64), ChangeError> {
        self.request(|reply| Command::ApplyPlan { plan, reply })
            .await
    }

    /// Forces `target`'s health for `duration` (at most [`MAX_OVERRIDE`]) with a `reason`: a
    /// maintenance mute (`Healthy`) or a manual drain (`Unhealthy`). It applies on top of
    /// hysteresis and before rollup, shows in the snapshot (`forced`), replaces an override the
    /// target has, survives reloads that keep the target, and ends by itself at its expiry,
    /// when the computed health applies at once.
    pub async fn set_override(
        &self,
        target: Target,
        health: Health,
        duration: std::time::Duration,
        reason: impl Into<String>,
    ) -> Result<Arc<Override>, ChangeError> {
        let reason = reason.into();
        self.request(|reply| Command::Override {
            target,
            health,
            duration,
            reason,
            reply,
        })
        .await
    }

    /// A report for the push dependency `name`: an outcome (its hysteresis applies, fall and
    /// rise 1 by default), and its ttl starts again. `reason` (sanitized and capped; default
    /// `reported HEALTH`) applies to degraded and unhealthy reports. A [`Reporter::Token`] must
    /// be the dependency's own token. Fails for unknown names, dependencies that are not push,
    /// a wrong token, and `Unknown`.
    pub async fn report(
        &self,
        name: impl Into<String>,
        health: Health,
        reason: Option<String>,
        reporter: Reporter,
    ) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::Report {
            name,
            health,
            reason,
            reporter,
            reply,
        })
        .await
    }

    /// Probes the dependency `name` now, bypassing its interval, its cached outcome and its
    /// failure back-off; the outcome arrives in a later snapshot (this does not wait for it).
    /// Fails for unknown names and push dependencies.
    pub async fn refresh(&self, name: impl Into<String>) -> Result<(), ChangeError> {
        let name = name.into();
        self.request(|reply| Command::Refresh { name, reply }).await
    }

    /// Restores what a state file kept, in one step (meant for the start, before anything
    /// listens): overrides keep their `since` and `until` (expired ones are dropped); a push
    /// report within its ttl restores the dependency's health and reason, and the ttl runs on
    /// from the report's time; an older one counts as missing (Unhealthy, `no report for
    /// TTL`). Returns what was dropped and why, one line each (unknown names, expired
    /// overrides, dependencies that are no longer push).
    pub async fn restore(&self, saved: Saved) -> Result<Vec<String>, ChangeError> {
        self.request(|reply| Command::Restore { saved, reply })
            .await
    }

    /// What a state file must keep now (the inverse of [`Handle::restore`]): every active
    /// override and every push dependency's last report, as the engine holds them at this
    /// moment — a change this handle was told has applied is in it.
    pub async fn saved(&self) -> Result<Saved, ChangeError> {
        self.request(|reply| Command::Saved { reply }).await
    }

    /// Ends `target`'s override now; `Ok(false)` when it had none.
    pub async fn clear_override(&self, target: Target) -> Result<bool, ChangeError> {
        self.request(|reply| Command::ClearOverride { target, reply })
            .await
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, ChangeError>>) -> Command,
    ) -> Result<T, ChangeError> {
        let (reply, result) = oneshot::channel();
        self.0
            .commands
            .send(command(reply))
            .await
            .map_err(|_| ChangeError::ShuttingDown)?;
        result.await.unwrap_or(Err(ChangeError::ShuttingDown))
    }

    /// Resolves if the engine stopped on its own — an internal task panicked, a defect —
    /// with the panic's message. Every service is then Unhealthy / not serving for good; a
    /// server should exit (the binary does, with status 1) so that it is restarted, rather than
    /// keep answering from an engine that no longer changes.
    pub async fn failed(&self) -> String {
        self.0.shared.failed.cancelled().await;
        self.0
            .shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Marks every service Unhealthy / not serving for good (watchers are told at once), stops
    /// every probe and waits for all engine tasks to end. Idempotent.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .0
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        self.0.cancel.cancel();
        self.0.tracker.close();
        self.0.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::probe::{Probe, ProbeContext, ProbeFuture};
    use crate::snapshot::{ServiceHealth, ServiceState};

    #[derive(Debug)]
    struct Idle;

    impl Probe for Idle {
        fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
            Box::pin(async { crate::Verdict::Healthy })
        }
    }

    fn every(secs: u64) -> DependencySpec {
        DependencySpec::custom(Arc::new(Idle), "idle")
            .every(std::time::Duration::from_secs(secs), 0.0)
    }

    fn deps(specs: &[(&str, u64)]) -> BTreeMap<String, DependencySpec> {
        (specs.iter())
            .map(|(n, s)| (n.to_string(), every(*s)))
            .collect()
    }

    fn names(handle: &Handle) -> Vec<String> {
        (handle.snapshot().dependencies.iter())
            .map(|d| d.name.to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_plan_applies_what_changed_as_a_full_apply_would_and_a_stale_one_changes_nothing() {
        let old = deps(&[("a", 5), ("b", 5), ("c", 5)]);
        // (A custom probe's spec is equal only to itself: `a` is the same one.)
        let mut new = old.clone();
        new.remove("c");
        new.extend(deps(&[("b", 7), ("d", 5)]));
        let services = BTreeMap::from([(
            "checkout".to_owned(),
            ServiceSpec::with_all(["a".to_owned()], crate::Impact::Critical),
        )]);
        // The same change, in full on one engine and as a plan on another.
        let full = Engine::builder().start().expect("starts");
        full.apply_at(old.clone(), services.clone())
            .await
            .expect("applies");
        let (in_full, _) = full
            .apply_at(new.clone(), services.clone())
            .await
            .expect("applies");
        let planned = Engine::builder().start().expect("starts");
        let (_, base) = planned
            .apply_at(old.clone(), services.clone())
            .await
            .expect("applies");
        let plan = Plan::new(base, &old, &services, new.clone(), services.clone()).expect("valid");
        assert_eq!(
            plan.dependencies.keys().collect::<Vec<_>>(),
            ["b", "d"],
            "only what changed"
        );
        let (by_plan, revision) = planned.apply_plan(plan).await.expect("applies");
        assert_eq!(by_plan, in_full);
        assert_eq!(by_plan.replaced_dependencies, ["b"]);
        assert_eq!(by_plan.added_dependencies, ["d"]);
        assert_eq!(by_plan.removed_dependencies, ["c"]);
        assert_eq!((by_plan.kept_dependencies, by_plan.kept_services), (1, 1));
        assert_eq!(
            by_plan.changed_services,
            [""],
            "the overall service follows its dependencies"
        );
        assert_eq!(names(&planned), names(&full));
        assert_eq!(names(&planned), ["a", "b", "d"]);

        // Computed against an earlier revision: refused, nothing changes.
        let stale = Plan::new(base, &old, &services, old.clone(), services.clone()).expect("valid");
        assert!(matches!(
            planned.apply_plan(stale).await,
            Err(ChangeError::Stale)
        ));
        assert_eq!(names(&planned), ["a", "b", "d"]);
        // Any other change moves the revision on.
        let current = Plan::new(revision, &new, &services, new.clone(), services.clone());
        planned.add_dependency("e", every(5)).await.expect("added");
        assert!(matches!(
            planned.apply_plan(current.expect("valid")).await,
            Err(ChangeError::Stale)
        ));
        // And an invalid configuration is no plan at all.
        let broken = BTreeMap::from([(
            "checkout".to_owned(),
            ServiceSpec::with_all(["nowhere".to_owned()], crate::Impact::Critical),
        )]);
        assert!(Plan::new(revision, &new, &services, new.clone(), broken).is_err());
        full.shutdown().await;
        planned.shutdown().await;
    }

    #[tokio::test]
    async fn a_watched_unknown_name_goes_with_its_last_watcher_and_a_known_one_stays() {
        let handle = Engine::builder().start().expect("starts");
        let channels = |h: &Handle| {
            h.0.shared
                .watchers
                .lock()
                .expect("not poisoned")
                .channels
                .len()
        };
        let a = handle.watch_service("nobody");
        let b = handle.watch_service("nobody");
        let overall = handle.watch_service("");
        assert_eq!(channels(&handle), 2);
        drop(a);
        assert_eq!(channels(&handle), 2, "one watcher of the name is left");
        drop(b);
        assert_eq!(channels(&handle), 1, "gone with its last watcher");
        drop(overall);
        assert_eq!(channels(&handle), 1, "a configured name keeps its channel");
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn a_panicking_reducer_fails_every_service_and_says_so() {
        let shared = Arc::new(Shared::new());
        let name: Arc<str> = Arc::from("readiness");
        shared.publish(Arc::new(Snapshot {
            generation: 7,
            services: vec![Arc::new(ServiceState {
                name: name.clone(),
                status: ServiceHealth::new(Health::Healthy, Default::default(), false),
                degraded: Default::default(),
                deciding: Vec::new(),
                inputs: Vec::new(),
                spec: Arc::default(),
                forced: None,
            })],
            ..Snapshot::default()
        }));
        let mut watcher = {
            let mut watchers = shared.watchers.lock().expect("not poisoned");
            let (tx, rx) = watch::channel(Some(ServiceHealth::new(
                Health::Healthy,
                Default::default(),
                false,
            )));
            watchers.channels.insert(name, tx);
            rx
        };
        supervise(shared.clone(), async { panic!("reducer bug") }).await;
        assert!(shared.failed.is_cancelled());
        assert_eq!(
            shared.failure.lock().expect("not poisoned").as_deref(),
            Some("reducer bug")
        );
        let snapshot = shared.snapshot.borrow().clone();
        assert_eq!(snapshot.generation, 8);
        let status = snapshot.service("readiness").expect("kept").status;
        assert!(!status.serving);
        assert_eq!(status.health, Health::Unhealthy);
        assert!(watcher.has_changed().expect("sender alive"));
        assert_eq!(*watcher.borrow_and_update(), Some(status));
    }
}
