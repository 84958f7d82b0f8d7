//! Entry points for the criterion benchmarks (`benches/hot_paths.rs`) into engine internals
//! that have no public API of their own. Hidden from the docs and not part of the API: they
//! may change with any release.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reducer::Reducer;
use super::{Shared, rollup};
use crate::config::{DependencySpec, ServiceSpec};
use crate::probe::{Probe, ProbeContext, ProbeFuture};
use crate::snapshot::Snapshot;
use crate::{Health, Impact, Verdict};

/// The health of `spec` given each dependency's health, rolled up as the engine does.
pub fn rollup(spec: &ServiceSpec, health_of: &dyn Fn(&str) -> Health) -> Health {
    rollup::rollup(spec, health_of).health
}

/// A reducer holding `n` dependencies and a service relying on all of them, to time
/// publications. Create it inside a Tokio runtime that is not driven while it is used: the
/// probe tasks are spawned and never run.
pub struct Publisher {
    reducer: Reducer,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Idle;

impl Probe for Idle {
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async { Verdict::Healthy })
    }
}

impl Publisher {
    /// `n` dependencies `d0` … and service `all` relying on every one.
    pub fn new(n: usize) -> Publisher {
        let shared = Arc::new(Shared::new());
        let snapshots = shared.snapshot.subscribe();
        let (_commands_tx, commands) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let mut reducer = Reducer::new(shared, commands, TaskTracker::new(), cancel.clone(), None);
        let probe: Arc<dyn Probe> = Arc::new(Idle);
        let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        for name in &names {
            let spec =
                DependencySpec::custom(probe.clone(), "idle").every(Duration::from_secs(3600), 0.0);
            reducer.insert_dependency(name, spec, probe.clone());
        }
        reducer.insert_service("all", ServiceSpec::with_all(names, Impact::Critical));
        reducer.publish();
        Publisher {
            reducer,
            snapshots,
            cancel,
        }
    }

    /// Publishes a new snapshot, as after a batch that changed something; returns its
    /// generation.
    pub fn publish(&mut self) -> u64 {
        self.reducer.throttle.changed();
        self.reducer.publish();
        self.snapshots.borrow_and_update().generation
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
