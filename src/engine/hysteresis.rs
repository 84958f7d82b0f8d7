//! Hysteresis: turning a dependency's stream of outcomes into its stable [`Health`].
//!
//! The first outcome applies at once (and so does the first after the dependency went Unknown:
//! there is nothing to damp against). Afterwards the health moves to a worse level after `fall`
//! consecutive outcomes *at least that bad*, and to a better one after `rise` consecutive
//! outcomes *at least that good*. Three levels need more than one streak counter: from Healthy,
//! the run Degraded, Unhealthy, Unhealthy (fall 3) is three outcomes at least Degraded, so the
//! health becomes Degraded, not Unhealthy.

use crate::Health;

const LEVELS: usize = 3;

fn level(h: Health) -> usize {
    match h {
        Health::Healthy => 0,
        Health::Degraded => 1,
        // Unknown never comes from an outcome; treat it as the worst if it ever does.
        Health::Unhealthy | Health::Unknown => 2,
    }
}

fn from_level(l: usize) -> Health {
    [Health::Healthy, Health::Degraded, Health::Unhealthy][l]
}

/// The hysteresis state of one dependency.
#[derive(Debug, Clone)]
pub(crate) struct Hysteresis {
    fall: u32,
    rise: u32,
    stable: Health,
    /// `at_least_bad[l]`: consecutive outcomes (ending now) whose level is ≥ l.
    at_least_bad: [u32; LEVELS],
    /// `at_least_good[l]`: consecutive outcomes (ending now) whose level is ≤ l.
    at_least_good: [u32; LEVELS],
}

impl Hysteresis {
    pub(crate) fn new(fall: u32, rise: u32) -> Hysteresis {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            stable: Health::Unknown,
            at_least_bad: [0; LEVELS],
            at_least_good: [0; LEVELS],
        }
    }

    /// The stable health.
    pub(crate) fn health(&self) -> Health {
        self.stable
    }

    /// Consecutive successful (healthy or degraded) outcomes, ending with the latest.
    pub(crate) fn consecutive_successes(&self) -> u32 {
        self.at_least_good[1]
    }

    /// Consecutive failed outcomes, ending with the latest.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.at_least_bad[2]
    }

    /// Records one outcome's health and returns the (possibly new) stable health.
    pub(crate) fn observe(&mut self, outcome: Health) -> Health {
        let l = level(outcome);
        for i in 0..LEVELS {
            self.at_least_bad[i] = if l >= i {
                self.at_least_bad[i].saturating_add(1)
            } else {
                0
            };
            self.at_least_good[i] = if l <= i {
                self.at_least_good[i].saturating_add(1)
            } else {
                0
            };
        }
        if self.stable == Health::Unknown {
            self.stable = from_level(l);
            return self.stable;
        }
        let s = level(self.stable);
        // Worse: the worst level whose run is long enough.
        if let Some(worse) = (s + 1..LEVELS)
            .rev()
            .find(|&i| self.at_least_bad[i] >= self.fall)
        {
            self.stable = from_level(worse);
        } else if let Some(better) = (0..s).find(|&i| self.at_least_good[i] >= self.rise) {
            self.stable = from_level(better);
        }
        self.stable
    }

    /// The same state under new thresholds (a dependency replaced at runtime).
    pub(crate) fn with_thresholds(self, fall: u32, rise: u32) -> Hysteresis {
        Hysteresis {
            fall: fall.max(1),
            rise: rise.max(1),
            ..self
        }
    }

    /// The last outcome is too old: nothing is known any more. The next outcome applies at once.
    pub(crate) fn expire(&mut self) {
        self.stable = Health::Unknown;
    }

    /// A push dependency's report is missing: Unhealthy at once, not damped by `fall` (the
    /// missing report is itself the failure). The next report applies at once too.
    pub(crate) fn miss(&mut self) {
        self.stable = Health::Unhealthy;
        self.at_least_bad = [0; LEVELS];
        self.at_least_good = [0; LEVELS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn run(h: &mut Hysteresis, outcomes: &[Health]) -> Vec<Health> {
        outcomes.iter().map(|&o| h.observe(o)).collect()
    }

    #[test]
    fn first_outcome_applies_at_once() {
        assert_eq!(Hysteresis::new(3, 2).observe(Unhealthy), Unhealthy);
        assert_eq!(Hysteresis::new(3, 2).observe(Healthy), Healthy);
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = Hysteresis::new(3, 2);
        let got = run(
            &mut h,
            &[Healthy, Unhealthy, Unhealthy, Unhealthy, Healthy, Healthy],
        );
        assert_eq!(
            got,
            [Healthy, Healthy, Healthy, Unhealthy, Unhealthy, Healthy]
        );
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut h = Hysteresis::new(3, 2);
        let got = run(
            &mut h,
            &[Healthy, Unhealthy, Unhealthy, Healthy, Unhealthy, Unhealthy],
        );
        assert!(got.iter().all(|&x| x == Healthy), "{got:?}");
        assert_eq!(h.consecutive_failures(), 2);
    }

    #[test]
    fn mixed_bad_streak_moves_to_the_level_all_of_it_reached() {
        let mut h = Hysteresis::new(3, 2);
        let got = run(
            &mut h,
            &[Healthy, Degraded, Unhealthy, Unhealthy, Unhealthy],
        );
        // Three at least Degraded ⇒ Degraded; then three at least Unhealthy ⇒ Unhealthy.
        assert_eq!(got, [Healthy, Healthy, Healthy, Degraded, Unhealthy]);
    }

    #[test]
    fn partial_recovery_goes_to_the_level_reached() {
        let mut h = Hysteresis::new(1, 2);
        run(&mut h, &[Unhealthy]);
        let got = run(&mut h, &[Degraded, Healthy, Healthy]);
        // Two at least Degraded ⇒ Degraded; two Healthy ⇒ Healthy.
        assert_eq!(got, [Unhealthy, Degraded, Healthy]);
    }

    #[test]
    fn expiry_makes_the_next_outcome_apply_at_once() {
        let mut h = Hysteresis::new(3, 2);
        run(&mut h, &[Healthy]);
        h.expire();
        assert_eq!(h.health(), Unknown);
        assert_eq!(h.observe(Unhealthy), Unhealthy);
    }

    #[test]
    fn counts_consecutive_successes_and_failures() {
        let mut h = Hysteresis::new(3, 2);
        run(&mut h, &[Healthy, Degraded, Healthy]);
        assert_eq!(
            (h.consecutive_successes(), h.consecutive_failures()),
            (3, 0)
        );
        run(&mut h, &[Unhealthy, Unhealthy]);
        assert_eq!(
            (h.consecutive_successes(), h.consecutive_failures()),
            (0, 2)
        );
    }
}
