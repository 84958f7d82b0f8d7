//! Whether the engine can keep a configuration's probing on time: the "performance warning"
//! that `config validate`, `serve` at start and every reload print (without failing).
//!
//! Two bounds, both from the engine's own limits and measurements:
//! - **in flight**: if every probe ran to its timeout, `Σ timeout / interval` runs would be in
//!   flight on average; above [`MAX_CONCURRENT_PROBES`] runs wait for a permit and fall behind
//!   their schedule (waiting never fails a probe, it delays it).
//! - **rate**: `Σ 1 / interval` probes per second; one runtime thread spends ~65 µs per HTTP
//!   probe (BENCHMARKS.md, engine scale: 1,000 dependencies at 1 s ≈ 6.5 % of a core), so
//!   above [`PROBES_PER_SECOND`] the probes alone would take most of a core and Checks with
//!   them.

use super::schedule::MAX_CONCURRENT_PROBES;
use crate::config::{DependencySpec, Mode};

/// The probe rate above which a warning is printed (per second, all dependencies).
pub const PROBES_PER_SECOND: f64 = 10_000.0;

/// What a configuration asks of the engine, in the numbers the warnings name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Probe runs per second at the configured intervals (on-demand: at most one per ttl).
    pub probes_per_second: f64,
    /// Runs in flight on average if every probe ran to its timeout.
    pub in_flight_at_timeouts: f64,
}

/// The load of `dependencies` (push dependencies are never probed).
pub fn load<'a>(dependencies: impl IntoIterator<Item = &'a DependencySpec>) -> Load {
    let mut l = Load {
        probes_per_second: 0.0,
        in_flight_at_timeouts: 0.0,
    };
    for spec in dependencies {
        let period = match &spec.mode {
            Mode::Background { interval, .. } => *interval,
            Mode::OnDemand(o) => o.ttl.min(o.failure_ttl),
            // A held stream, not runs (a server without Watch is polled at the interval: counted
            // as the polled one it becomes would be, at worst).
            Mode::Watch { interval } => *interval,
            Mode::Push { .. } => continue,
        };
        let period = period.as_secs_f64().max(1e-3);
        l.probes_per_second += 1.0 / period;
        l.in_flight_at_timeouts += (spec.timeout.as_secs_f64() / period).min(1.0);
    }
    l
}

/// One line per bound the configuration exceeds, naming the numbers; empty when it fits.
pub fn warnings<'a>(dependencies: impl IntoIterator<Item = &'a DependencySpec>) -> Vec<String> {
    let l = load(dependencies);
    let mut out = Vec::new();
    if l.in_flight_at_timeouts > MAX_CONCURRENT_PROBES as f64 {
        out.push(format!(
            "if every probe ran to its timeout, {:.0} would be in flight on average, above the \
             engine's limit of {MAX_CONCURRENT_PROBES}: probes would wait and fall behind their \
             intervals (shorten timeouts or lengthen intervals)",
            l.in_flight_at_timeouts
        ));
    }
    if l.probes_per_second > PROBES_PER_SECOND {
        out.push(format!(
            "{:.0} probes per second configured, above {PROBES_PER_SECOND:.0}: at ~65 µs each \
             they take most of a core on the serving thread (lengthen intervals, use \
             on-demand mode, or --worker-threads)",
            l.probes_per_second
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::probe::{Probe, ProbeContext, ProbeFuture};

    #[derive(Debug)]
    struct Idle;

    impl Probe for Idle {
        fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
            Box::pin(async { crate::Verdict::Healthy })
        }
    }

    fn deps(n: usize, interval: Duration, timeout: Duration) -> Vec<DependencySpec> {
        let probe: Arc<dyn Probe> = Arc::new(Idle);
        (0..n)
            .map(|_| {
                DependencySpec::custom(probe.clone(), "idle")
                    .every(interval, 0.0)
                    .with_timeout(timeout)
            })
            .collect()
    }

    #[test]
    fn a_config_within_the_limits_says_nothing_and_each_bound_names_its_numbers() {
        let ms = Duration::from_millis;
        assert!(warnings(&deps(1_000, ms(1000), ms(500))).is_empty());
        // 3,000 × 500 ms / 1 s = 1,500 in flight at timeouts.
        let w = warnings(&deps(3_000, ms(1000), ms(500)));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("1500 would be in flight") && w[0].contains("1024"),
            "{w:?}"
        );
        // 2,000 at 100 ms = 20,000 probes/s (and 1,000 in flight: under the limit).
        let w = warnings(&deps(2_000, ms(100), ms(50)));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("20000 probes per second"), "{w:?}");
        let push = [DependencySpec::push(ms(1), None)];
        assert_eq!(load(&push).probes_per_second, 0.0);
    }
}
