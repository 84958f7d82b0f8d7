//! Running probes: [`run_once`] wraps one probe run (timeout, panic, `degraded_after`, secret
//! scrubbing), and [`background`] is the task that runs it every interval ± jitter.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::DependencySpec;
use crate::probe::{Probe, ProbeContext};
use crate::{Outcome, Reason, Verdict};

/// An outcome on its way to the reducer, tagged with the dependency instance that produced it
/// (outcomes of a replaced or removed instance are dropped).
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) dependency: Arc<str>,
    pub(crate) instance: u64,
    /// `None`: the dependency's task stopped unexpectedly (it panicked outside a probe run);
    /// the reducer makes the dependency Unknown rather than keep its last health for ever.
    pub(crate) outcome: Option<Outcome>,
    /// The run's span: the reducer enters it to log transitions, so they join its trace.
    pub(crate) span: tracing::Span,
    /// How the outcome was obtained, when not as the mode says (a watch-mode dependency whose
    /// server has no Watch: polled); shown as the dependency's mode.
    pub(crate) note: Option<&'static str>,
    /// The peer certificate's `notAfter` the run saw (TLS dependencies).
    pub(crate) certificate: Option<SystemTime>,
}

/// What a probe task needs, cloned out of the spec.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub(crate) dependency: Arc<str>,
    pub(crate) instance: u64,
    pub(crate) probe: Arc<dyn Probe>,
    pub(crate) spec: Arc<DependencySpec>,
    pub(crate) events: mpsc::Sender<Event>,
    /// One permit per probe run in flight, shared by the engine's probes.
    pub(crate) permits: Arc<Semaphore>,
    /// Given to every event (see [`Event::note`]).
    pub(crate) note: Option<&'static str>,
}

/// The most probe runs in flight at once, engine-wide. Runs wait for a permit *before* their
/// timeout starts, so waiting never fails a probe; it only delays it.
///
/// Why: without a limit, the first round of a large config (every dependency within
/// `jitter × interval`) opens thousands of connections at once. 10,000 HTTP dependencies on one
/// host then overloaded the thread, probes timed out, their connections were dropped and
/// reopened every second (~13,000 sockets, the kernel searching ephemeral ports, the HTTP
/// client's pool — reqwest's, then — scanning its waiters on every dropped checkout), and the
/// engine never recovered: 99 % CPU,
/// each dependency probed every 14 s. Steady state needs far fewer (1,000 dependencies at 1 s
/// with millisecond answers keep a handful in flight); the limit is high enough that a few
/// hundred hung dependencies (each holding a permit up to its timeout) do not delay the rest.
pub(crate) const MAX_CONCURRENT_PROBES: usize = 1024;

impl Runner {
    /// Runs `task` (this dependency's background or on-demand loop); if it panics — a defect,
    /// since probe runs catch their own panics — logs it and tells the reducer, so the
    /// dependency goes Unknown instead of keeping its last health while nothing probes it.
    pub(crate) async fn supervise(self, task: impl Future<Output = ()>) {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            tracing::error!(
                dependency = %self.dependency,
                panic = panic_message(&*panic),
                "probe task stopped unexpectedly; the dependency is Unknown until it is replaced"
            );
            let event = Event {
                dependency: self.dependency.clone(),
                instance: self.instance,
                outcome: None,
                span: tracing::Span::none(),
                note: self.note,
                certificate: None,
            };
            let _ = self.events.send(event).await;
        }
    }

    /// Runs the probe once and reports the outcome; `None` when cancelled or the engine is gone.
    pub(crate) async fn run_and_report(&self, cancel: &CancellationToken) -> Option<Outcome> {
        let span = probe_span(&self.dependency, &self.spec);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return None,
            o = async {
                // Never closed: the engine owns the semaphore for as long as probes run.
                let _permit = self.permits.acquire().await;
                run_once(&*self.probe, &self.spec).await
            }.instrument(span.clone()) => o,
        };
        record(&span, &outcome);
        let certificate = self.probe.certificate_expiry();
        self.send_in(cancel, outcome.clone(), span, certificate)
            .await
            .then_some(outcome)
    }

    /// Sends `outcome` to the reducer; `false` when cancelled or the engine is gone.
    pub(crate) async fn send(&self, cancel: &CancellationToken, outcome: Outcome) -> bool {
        let certificate = self.probe.certificate_expiry();
        self.send_in(cancel, outcome, tracing::Span::none(), certificate)
            .await
    }

    async fn send_in(
        &self,
        cancel: &CancellationToken,
        outcome: Outcome,
        span: tracing::Span,
        certificate: Option<SystemTime>,
    ) -> bool {
        let event = Event {
            dependency: self.dependency.clone(),
            instance: self.instance,
            outcome: Some(outcome),
            span,
            note: self.note,
            certificate,
        };
        tokio::select! {
            _ = cancel.cancelled() => false,
            sent = self.events.send(event) => sent.is_ok(),
        }
    }
}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// A root span per probe run (each run is its own trace; the dependency's traceparent joins it).
fn probe_span(dependency: &str, spec: &DependencySpec) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "probe",
        otel.kind = "client",
        dependency = %dependency,
        kind = spec.kind(),
        health = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        reason = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    )
}

/// Records the outcome on the run's span; failures set the span status to error.
fn record(span: &tracing::Span, outcome: &Outcome) {
    span.record("health", outcome.health().as_str());
    span.record("latency_ms", outcome.latency.as_secs_f64() * 1000.0);
    if let Some(reason) = outcome.verdict.reason() {
        span.record("reason", reason.as_str());
    }
    if outcome.is_success() {
        span.record("otel.status_code", "OK");
    } else {
        span.record("otel.status_code", "ERROR");
        span.record(
            "otel.status_message",
            outcome.verdict.reason().map_or("", |r| r.as_str()),
        );
    }
}

/// One probe run as an [`Outcome`]: abandoned at the timeout, a panic caught, a slow success
/// made Degraded, every secret scrubbed from the reason.
pub(crate) async fn run_once(probe: &dyn Probe, spec: &DependencySpec) -> Outcome {
    let started = Instant::now();
    let ctx = ProbeContext::new(spec.timeout);
    // AssertUnwindSafe: after a panic the future is dropped and nothing it touched is reused;
    // probes share no state with the engine beyond what they own.
    let run = AssertUnwindSafe(async { probe.check(ctx).await }).catch_unwind();
    let verdict = match tokio::time::timeout(spec.timeout, run).await {
        Err(_) => Verdict::unhealthy(format!(
            "timed out after {}",
            humantime::format_duration(spec.timeout)
        )),
        Ok(Err(_panic)) => Verdict::unhealthy("probe panicked"),
        Ok(Ok(verdict)) => verdict,
    };
    let verdict = with_expiry(verdict, probe, spec);
    outcome_of(verdict, started.elapsed(), spec)
}

/// `verdict`, made Degraded (or Unhealthy) by the probe's peer certificate when it is a
/// success and the certificate expires within `tls.expiry_warning`.
pub(crate) fn with_expiry(verdict: Verdict, probe: &dyn Probe, spec: &DependencySpec) -> Verdict {
    match (verdict, probe.certificate_expiry(), spec.tls()) {
        (Verdict::Healthy, Some(not_after), Some(tls)) => {
            expiry_verdict(not_after, tls.expiry_warning)
        }
        (verdict, _, _) => verdict,
    }
}

/// A successful run's verdict given its peer certificate's `notAfter`: Degraded within
/// `warning` of it (`certificate expires in 3d`; no name from the certificate), Unhealthy once
/// past it (a verifying client refuses it first; `insecure` ones get here).
pub(crate) fn expiry_verdict(not_after: SystemTime, warning: Duration) -> Verdict {
    match not_after.duration_since(SystemTime::now()) {
        Err(_) => Verdict::unhealthy("certificate expired"),
        Ok(left) if left < warning => {
            Verdict::degraded(format!("certificate expires in {}", short_duration(left)))
        }
        Ok(_) => Verdict::Healthy,
    }
}

/// `3d`, `5h`, `12m`: in the largest unit it reaches, rounded (a certificate made for three
/// days, a few seconds ago, expires in `3d`).
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let round = |unit: u64| (s + unit / 2) / unit;
    match s {
        86_400.. => format!("{}d", round(86_400)),
        3_600.. => format!("{}h", round(3_600)),
        _ => format!("{}m", round(60)),
    }
}

/// The outcome of `verdict` after `latency`: a slow success made Degraded (`degraded_after`),
/// every secret scrubbed from the reason.
pub(crate) fn outcome_of(verdict: Verdict, latency: Duration, spec: &DependencySpec) -> Outcome {
    let verdict = match (verdict, spec.degraded_after) {
        (Verdict::Healthy, Some(limit)) if latency > limit => Verdict::degraded(format!(
            "slow: {}ms (degraded after {})",
            latency.as_millis(),
            humantime::format_duration(limit)
        )),
        (verdict, _) => verdict,
    };
    Outcome {
        verdict: scrub(verdict, spec),
        latency,
        finished_at: SystemTime::now(),
    }
}

fn scrub(verdict: Verdict, spec: &DependencySpec) -> Verdict {
    if spec.secrets.is_empty() {
        return verdict;
    }
    let clean = |r: Reason| Reason::new(spec.secrets.scrub(r.as_str()).into_owned());
    match verdict {
        Verdict::Healthy => Verdict::Healthy,
        Verdict::Degraded(r) => Verdict::Degraded(clean(r)),
        Verdict::Unhealthy(r) => Verdict::Unhealthy(clean(r)),
    }
}

/// The background task of one dependency: a first run spread over `jitter × interval`, then one
/// run every `interval ± jitter × interval`, measured from the start of the previous run. The
/// timeout is below the interval, so runs never overlap.
pub(crate) async fn background(
    runner: Runner,
    interval: Duration,
    jitter: f64,
    refresh: std::sync::Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    let mut next = Instant::now() + interval.mul_f64(jitter * fastrand::f64());
    loop {
        // A refresh probes now; the schedule then continues from that run.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_until(next) => {}
            _ = refresh.notified() => {}
        }
        let started = Instant::now();
        if runner.run_and_report(&cancel).await.is_none() {
            return;
        }
        next = started + interval.mul_f64(1.0 + jitter * (2.0 * fastrand::f64() - 1.0));
    }
}
