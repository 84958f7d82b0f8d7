//! Starting a dependency's probe task — background or on demand — tracked by the engine's task
//! tracker, cancelled with it, and numbered so the reducer can drop a replaced task's outcomes.

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

use super::on_demand::{self, OnDemandSlot};
use super::schedule::{Event, MAX_CONCURRENT_PROBES, Runner, background};
use crate::config::{DependencySpec, Mode};
use crate::probe::Probe;

/// The probe task a dependency has: its instance number (outcomes of an older instance are
/// ignored), its cancellation, and its on-demand slot.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) instance: u64,
    pub(crate) cancel: CancellationToken,
    pub(crate) slot: Option<Arc<OnDemandSlot>>,
    /// Wakes the task to probe now (`refresh`); `None` for push dependencies.
    pub(crate) refresh: Option<Arc<Notify>>,
}

/// Starts probe tasks: each gets an instance number, a child of the engine's cancellation, and
/// a place in its task tracker.
#[derive(Debug)]
pub(crate) struct Spawner {
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    pub(crate) events: mpsc::Sender<Event>,
    /// Shared by every probe run: see [`MAX_CONCURRENT_PROBES`].
    pub(crate) permits: Arc<Semaphore>,
    next_instance: u64,
}

impl Spawner {
    pub(crate) fn new(
        tracker: TaskTracker,
        cancel: CancellationToken,
        events: mpsc::Sender<Event>,
    ) -> Spawner {
        Spawner {
            tracker,
            cancel,
            events,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
            next_instance: 0,
        }
    }

    /// Starts the dependency's probe task.
    pub(crate) fn spawn(
        &mut self,
        name: &Arc<str>,
        spec: &Arc<DependencySpec>,
        probe: Arc<dyn Probe>,
    ) -> Task {
        self.next_instance += 1;
        let cancel = self.cancel.child_token();
        let runner = Runner {
            dependency: name.clone(),
            instance: self.next_instance,
            probe,
            spec: spec.clone(),
            events: self.events.clone(),
            permits: self.permits.clone(),
            note: None,
        };
        let span = info_span!("dependency", dependency = %name, kind = spec.kind());
        let supervisor = runner.clone();
        let refresh = Arc::new(Notify::new());
        let slot = match spec.mode {
            Mode::Background { interval, jitter } => {
                let task = background(runner, interval, jitter, refresh.clone(), cancel.clone());
                self.tracker
                    .spawn(supervisor.supervise(task).instrument(span));
                None
            }
            Mode::OnDemand(ttls) => {
                let slot = Arc::new(OnDemandSlot::new());
                let task = on_demand::on_demand(
                    runner,
                    slot.clone(),
                    ttls,
                    refresh.clone(),
                    cancel.clone(),
                );
                self.tracker
                    .spawn(supervisor.supervise(task).instrument(span));
                Some(slot)
            }
            Mode::Watch { interval } => {
                let task =
                    super::subscription::watch(runner, interval, refresh.clone(), cancel.clone());
                self.tracker
                    .spawn(supervisor.supervise(task).instrument(span));
                None
            }
            // Reports arrive through the reducer; the missing report is its stale timer.
            Mode::Push { .. } => None,
        };
        let refresh = (!matches!(spec.mode, Mode::Push { .. })).then_some(refresh);
        Task {
            instance: self.next_instance,
            cancel,
            slot,
            refresh,
        }
    }
}
