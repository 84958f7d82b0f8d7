//! When the reducer publishes: a change of health or configuration at once; an outcome that
//! changes only details (latency, counts, the last reason) waits up to
//! [`DETAIL_PUBLISH_INTERVAL`] and shares a publication with every other outcome of that
//! window. Without this, 10,000 dependencies probed every second meant 10,000 publications of
//! 10,000 entries a second, a whole core.

use std::time::Duration;

use tokio::time::Instant;

/// The longest an outcome that changes no health waits to be published.
pub(crate) const DETAIL_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The publication numbers: `generation` counts every publication, `revision` only those that
/// changed a health, a configuration or a reason (see `Snapshot::revision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Numbers {
    pub(crate) generation: u64,
    pub(crate) revision: u64,
}

#[derive(Debug)]
pub(crate) struct Throttle {
    /// A health, status or configuration changed since the last publication.
    changed: bool,
    /// Only details changed since the last publication.
    details: bool,
    /// A reason changed since the last publication.
    reasons: bool,
    numbers: Numbers,
    last: Instant,
}

impl Throttle {
    /// A throttle whose first [`Throttle::due`] publishes (the initial snapshot).
    pub(crate) fn new() -> Throttle {
        Throttle {
            changed: true,
            details: false,
            reasons: false,
            numbers: Numbers {
                generation: 0,
                revision: 0,
            },
            last: Instant::now(),
        }
    }

    /// Something that must be published at once changed.
    pub(crate) fn changed(&mut self) {
        self.changed = true;
    }

    /// Only details changed; `reason_changed` when a reason did.
    pub(crate) fn details(&mut self, reason_changed: bool) {
        self.details = true;
        self.reasons |= reason_changed;
    }

    /// If a publication is due now, the numbers it carries (and the throttle starts a new
    /// window); else `None`.
    pub(crate) fn due(&mut self) -> Option<Numbers> {
        let details_due = self.details && self.last.elapsed() >= DETAIL_PUBLISH_INTERVAL;
        if !self.changed && !details_due {
            return None;
        }
        if self.changed || self.reasons {
            self.numbers.revision += 1;
        }
        self.numbers.generation += 1;
        self.changed = false;
        self.details = false;
        self.reasons = false;
        self.last = Instant::now();
        Some(self.numbers)
    }

    /// When details waiting to be published are due, if any are waiting.
    pub(crate) fn details_deadline(&self) -> Option<Instant> {
        self.details.then(|| self.last + DETAIL_PUBLISH_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn changes_publish_at_once_and_details_wait_for_the_interval() {
        let mut t = Throttle::new();
        let first = t.due().expect("the initial snapshot");
        assert_eq!(
            first,
            Numbers {
                generation: 1,
                revision: 1
            }
        );
        assert_eq!(t.due(), None, "nothing changed");

        t.details(false);
        assert_eq!(t.due(), None, "details wait");
        let deadline = t.details_deadline().expect("waiting");
        tokio::time::advance(DETAIL_PUBLISH_INTERVAL).await;
        assert!(Instant::now() >= deadline);
        let n = t.due().expect("details due");
        assert_eq!(
            (n.generation, n.revision),
            (2, 1),
            "details keep the revision"
        );
        assert_eq!(t.details_deadline(), None);

        t.details(true);
        t.changed();
        let n = t.due().expect("a change publishes at once");
        assert_eq!((n.generation, n.revision), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_reason_moves_the_revision_when_its_details_publish() {
        let mut t = Throttle::new();
        t.due();
        t.details(true);
        t.details(false);
        tokio::time::advance(DETAIL_PUBLISH_INTERVAL).await;
        let n = t.due().expect("due");
        assert_eq!((n.generation, n.revision), (2, 2));
    }
}
