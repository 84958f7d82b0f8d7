//! What the reducer (the one writer) and the handles (readers) share: the snapshot channels,
//! the on-demand slots, the per-service watch channels, and the engine's failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::on_demand::OnDemandSlot;
use crate::Health;
use crate::snapshot::{ServiceHealth, ServiceState, Snapshot};

/// State shared by the reducer (writer) and handles (readers).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) snapshot: watch::Sender<Arc<Snapshot>>,
    /// The snapshots whose [`Snapshot::revision`] changed.
    pub(super) changes: watch::Sender<Arc<Snapshot>>,
    /// The refresh triggers of on-demand dependencies (see [`Handle::wake_on_demand`]),
    /// replaced when the set of dependencies changes.
    pub(super) on_demand: watch::Sender<Arc<[Arc<OnDemandSlot>]>>,
    /// Per-service watch channels.
    pub(super) watchers: Mutex<Watchers>,
    /// Why the engine stopped on its own, once it has.
    pub(super) failure: Mutex<Option<String>>,
    /// Cancelled when the engine stopped on its own.
    pub(super) failed: CancellationToken,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            snapshot: watch::channel(Arc::new(Snapshot::default())).0,
            changes: watch::channel(Arc::new(Snapshot::default())).0,
            on_demand: watch::channel(Arc::from(Vec::new())).0,
            watchers: Mutex::new(Watchers::default()),
            failure: Mutex::new(None),
            failed: CancellationToken::new(),
        }
    }
    /// The reducer died (a defect): nothing will update health again, so rather than serve the
    /// last health for ever, every service becomes Unhealthy / not serving, watchers are told,
    /// and [`Handle::failed`] resolves so the process can exit and be restarted.
    pub(super) fn fail(&self, why: &str) {
        tracing::error!(
            panic = why,
            "the engine stopped unexpectedly; every service is now NOT_SERVING"
        );
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_owned());
        let last = self.snapshot.borrow().clone();
        let services = last
            .services
            .iter()
            .map(|s| {
                Arc::new(ServiceState {
                    status: ServiceHealth::new(Health::Unhealthy, s.degraded, true),
                    deciding: Vec::new(),
                    ..(**s).clone()
                })
            })
            .collect();
        self.publish(Arc::new(Snapshot {
            generation: last.generation + 1,
            revision: last.revision + 1,
            shutting_down: true,
            services,
            dependencies: last.dependencies.clone(),
        }));
        self.failed.cancel();
    }

    /// Publishes a snapshot, then tells each configured service's watchers if their value
    /// changed: O(services), whatever the number of watched names. Channels of names that are
    /// not configured hold `None` and can only change when the set of service names does, so
    /// they are visited only then.
    pub(crate) fn publish(&self, snapshot: Arc<Snapshot>) {
        let previous = self.snapshot.send_replace(snapshot.clone());
        if snapshot.revision != previous.revision {
            self.changes.send_replace(snapshot.clone());
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let names_changed = previous.services.len() != snapshot.services.len()
            || previous
                .services
                .iter()
                .zip(&snapshot.services)
                .any(|(a, b)| a.name != b.name);
        if names_changed {
            for (name, tx) in watchers.channels.iter() {
                let now = snapshot.service(name).map(|s| s.status);
                tx.send_if_modified(|v| std::mem::replace(v, now) != now);
            }
            watchers.sweep(&snapshot);
        } else {
            for service in &snapshot.services {
                if let Some(tx) = watchers.channels.get(&service.name) {
                    let now = Some(service.status);
                    tx.send_if_modified(|v| std::mem::replace(v, now) != now);
                }
            }
        }
    }
}

/// The per-service watch channels, including names not (or no longer) configured, whose
/// watchers see `None` until the service appears.
///
/// Opening a Watch is one hash lookup or insert; the channel of a name that is not configured
/// goes away when its last [`ServiceWatch`] is dropped. A receiver cloned out of a
/// `ServiceWatch` escapes that bookkeeping, so such channels are also swept whenever the map
/// has doubled since the last sweep (amortised O(1) per insert) and when the service names
/// change.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    pub(super) channels: HashMap<Arc<str>, watch::Sender<Option<ServiceHealth>>>,
    /// The map's size after the last sweep.
    pub(super) swept: usize,
}

impl Watchers {
    /// Drops the channels of unconfigured names nobody watches.
    pub(super) fn sweep(&mut self, snapshot: &Snapshot) {
        self.channels
            .retain(|name, tx| snapshot.service(name).is_some() || tx.receiver_count() > 0);
        self.swept = self.channels.len();
    }
}

/// A receiver for one service's status (see [`Handle::watch_service`](super::Handle::watch_service)); it dereferences to
/// a [`watch::Receiver`]. Dropping it gives its channel back when nobody else watches the name.
#[derive(Debug)]
pub struct ServiceWatch {
    // Declared before `guard`, so it is dropped first and the guard sees the right count.
    pub(super) rx: watch::Receiver<Option<ServiceHealth>>,
    pub(super) guard: WatchGuard,
}

impl ServiceWatch {
    /// The receiver and the guard that gives the channel back when dropped: keep the guard
    /// for as long as the receiver, and drop it after.
    pub(crate) fn into_parts(self) -> (watch::Receiver<Option<ServiceHealth>>, WatchGuard) {
        (self.rx, self.guard)
    }
}

impl std::ops::Deref for ServiceWatch {
    type Target = watch::Receiver<Option<ServiceHealth>>;

    fn deref(&self) -> &Self::Target {
        &self.rx
    }
}

impl std::ops::DerefMut for ServiceWatch {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.rx
    }
}

/// Removes a watched name's channel, when dropped after the last receiver, unless the name is
/// configured.
#[derive(Debug)]
pub(crate) struct WatchGuard {
    pub(super) shared: std::sync::Weak<Shared>,
    pub(super) name: Arc<str>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut watchers = shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let unused = watchers
            .channels
            .get(&self.name)
            .is_some_and(|tx| tx.receiver_count() == 0);
        if unused && shared.snapshot.borrow().service(&self.name).is_none() {
            watchers.channels.remove(&self.name);
        }
    }
}
