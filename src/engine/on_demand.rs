//! On-demand dependencies: probed only when a reader finds the cached outcome too old.
//!
//! Readers never wait: finding the cache expired, the first of them flips `in_flight` and wakes
//! the dependency's task, every other reader sees `in_flight` and moves on, and all of them are
//! answered from the snapshot meanwhile (1,000 concurrent readers cause one probe). Failures are
//! cached for `failure_ttl`, doubled after each further failure up to `max_failure_ttl`, so a
//! dependency that is down is not hammered by its readers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::Runner;
use crate::config::OnDemand;

/// The shared refresh trigger of one on-demand dependency.
#[derive(Debug)]
pub(crate) struct OnDemandSlot {
    /// Times are nanoseconds since `epoch` (a `tokio::time::Instant`, so paused-clock tests work).
    epoch: Instant,
    fresh_until: AtomicU64,
    in_flight: AtomicBool,
    wake: Notify,
}

impl OnDemandSlot {
    /// A slot whose first refresh (the warm-up at start) is already in flight.
    pub(crate) fn new() -> OnDemandSlot {
        OnDemandSlot {
            epoch: Instant::now(),
            fresh_until: AtomicU64::new(0),
            in_flight: AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Called by readers: starts a refresh if the cache expired and none is running.
    pub(crate) fn touch(&self) {
        if self.now() >= self.fresh_until.load(Ordering::Acquire)
            && !self.in_flight.swap(true, Ordering::AcqRel)
        {
            self.wake.notify_one();
        }
    }

    /// Called by the task after a run: the cache is fresh for `ttl`, and readers may trigger
    /// again afterwards. `fresh_until` is stored before `in_flight` is cleared, so a reader that
    /// sees the flag down also sees the new deadline.
    fn refreshed(&self, ttl: Duration) {
        let until = self
            .now()
            .saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        self.fresh_until.store(until, Ordering::Release);
        self.in_flight.store(false, Ordering::Release);
    }
}

/// The task of an on-demand dependency: one warm-up run at start, then a run per wake-up.
pub(crate) async fn on_demand(
    runner: Runner,
    slot: std::sync::Arc<OnDemandSlot>,
    ttls: OnDemand,
    refresh: std::sync::Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut failure_ttl = ttls.failure_ttl;
    loop {
        let Some(outcome) = runner.run_and_report(&cancel).await else {
            return;
        };
        let ttl = if outcome.is_success() {
            failure_ttl = ttls.failure_ttl;
            ttls.ttl
        } else {
            let ttl = failure_ttl;
            failure_ttl = failure_ttl.saturating_mul(2).min(ttls.max_failure_ttl);
            ttl
        };
        slot.refreshed(ttl);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = slot.wake.notified() => {}
            // `refresh`: probe now, whatever the cache says, and forget the back-off.
            _ = refresh.notified() => failure_ttl = ttls.failure_ttl,
        }
    }
}
