//! Stale timers: one per dependency with an outcome, fired when that outcome is older than
//! `stale_after` so the dependency becomes Unknown. Timers are capped at [`MAX_DURATION`]
//! because tokio's `DelayQueue` panics beyond about two years (a panic there would stop the
//! reducer); a default `stale_after` can be longer (three periods of up to a year each), so
//! such a timer fires early and the reducer sets it again for the rest.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::time::{DelayQueue, delay_queue};

use crate::config::MAX_DURATION;

/// The timer slot a dependency holds: `None` while no timer is set.
pub(crate) type Slot = Option<delay_queue::Key>;

#[derive(Debug, Default)]
pub(crate) struct StaleTimers {
    queue: DelayQueue<Arc<str>>,
}

impl StaleTimers {
    /// Sets `slot`'s timer (for dependency `name`) to fire `after` from now, capped.
    pub(crate) fn set(&mut self, slot: &mut Slot, name: &Arc<str>, after: Duration) {
        let after = after.min(MAX_DURATION);
        match slot {
            Some(key) => self.queue.reset(key, after),
            None => *slot = Some(self.queue.insert(name.clone(), after)),
        }
    }

    /// Cancels `slot`'s timer, if any.
    pub(crate) fn clear(&mut self, slot: &mut Slot) {
        if let Some(key) = slot.take() {
            self.queue.remove(&key);
        }
    }

    /// The next dependency whose timer fired (its slot is then stale: clear it with `None`).
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<str>>> {
        self.queue
            .poll_expired(cx)
            .map(|fired| fired.map(|e| e.into_inner()))
    }

    /// The next dependency whose timer fires.
    pub(crate) async fn fired(&mut self) -> Option<Arc<str>> {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timers_fire_once_can_be_reset_and_cleared_and_are_capped() {
        let mut timers = StaleTimers::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (mut slot_a, mut slot_b) = (None, None);
        timers.set(&mut slot_a, &a, Duration::from_secs(5));
        timers.set(&mut slot_b, &b, Duration::from_secs(3));
        // Reset: a now fires after b.
        timers.set(&mut slot_a, &a, Duration::from_secs(10));
        assert_eq!(timers.fired().await.as_deref(), Some("b"));
        timers.clear(&mut slot_a);
        assert!(slot_a.is_none());
        // A timer far beyond what DelayQueue holds is capped, not a panic.
        let mut slot_c = None;
        timers.set(&mut slot_c, &a, MAX_DURATION * 4);
        let started = tokio::time::Instant::now();
        assert_eq!(timers.fired().await.as_deref(), Some("a"));
        assert_eq!(started.elapsed(), MAX_DURATION);
    }
}
