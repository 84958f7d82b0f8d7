//! `mode = "watch"`: one subscription held per dependency (gRPC `Watch(service)` on its kept
//! channel), every message an outcome at once; hysteresis applies as for polled outcomes.
//!
//! - **Opening** (connect, the call, and its first message) must take less than `timeout`, or
//!   it is an Unhealthy outcome (`timed out after …`) and the next attempt waits its backoff.
//! - **A silent open stream** repeats its last status every `interval` as an outcome, so
//!   staleness keeps its meaning (no outcome for `stale_after`: the watch task is stuck). The
//!   channel pings every `interval` and a ping unanswered within `timeout` breaks it, so a dead
//!   peer is found within `interval + timeout` (HTTP/2 keep-alive).
//! - **The stream ending** (OK or an error) or the channel breaking is an Unhealthy outcome
//!   (`watch ended`, or the error's reason) and a reconnect at once — when the stream had lasted
//!   [`MIN_LASTING`]; each failed attempt after that is an Unhealthy outcome too (so `fall`
//!   still damps a blip) and the next waits exponentially longer, as gRFC A6/A17 clients do:
//!   [`INITIAL_BACKOFF`] × [`MULTIPLIER`]ⁿ, ± [`JITTER`], at most [`MAX_BACKOFF`]. A stream
//!   that ends as soon as it opened waits its backoff too, so a server closing every Watch is
//!   not hammered.
//! - **No `Watch` on the server** (`UNIMPLEMENTED`): polled with `Check` every `interval` from
//!   then on (jitter 10 %), logged once, and the dependency's mode shows
//!   `watch not supported, polling` in detail.
//! - `admin refresh` reopens the stream (a fresh first message).
//!
//! Outcome latency: the first message's is the time to open the stream (and `degraded_after`
//! applies to it); later messages arrive unasked and have latency 0.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::schedule::{Runner, background, outcome_of, with_expiry};
use crate::Verdict;
use crate::probe::{ProbeContext, Subscription, VerdictStream};

/// The first wait before a failed subscription is tried again.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Each failed attempt multiplies the wait by this.
pub const MULTIPLIER: f64 = 1.6;
/// Each wait varies by this fraction either way.
pub const JITTER: f64 = 0.2;
/// The longest wait between attempts: the most a recovery can go unseen.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A stream open at least this long before it ended is reopened at once (and the backoff
/// starts again); a shorter one waits its backoff.
pub const MIN_LASTING: Duration = Duration::from_secs(1);

/// What a server without `Watch` shows as its mode.
pub(crate) const POLLING_NOTE: &str = "watch not supported, polling";

/// The jitter of the polling fallback.
const POLLING_JITTER: f64 = 0.1;

/// A subscription attempt, once its first message is in (or it failed).
enum Opened {
    Stream(VerdictStream, Option<Result<Verdict, String>>),
    Unsupported,
    Failed(Verdict),
}

/// The backoff between failed attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }

    /// The wait before the next attempt (jittered), and the one after it grows.
    fn step(&mut self) -> Duration {
        let wait = self
            .next
            .mul_f64(1.0 + JITTER * (2.0 * fastrand::f64() - 1.0));
        self.next = self.next.mul_f64(MULTIPLIER).min(MAX_BACKOFF);
        wait
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// The watch task of one dependency (see the module docs).
pub(crate) async fn watch(
    runner: Runner,
    interval: Duration,
    refresh: std::sync::Arc<Notify>,
    cancel: CancellationToken,
) {
    let spec = runner.spec.clone();
    let mut backoff = Backoff::new();
    // A reconnect right after a stream that delivered waits for nothing.
    let mut wait = Duration::ZERO;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = refresh.notified() => {}
            }
        }
        let started = Instant::now();
        let ctx = ProbeContext::new(spec.timeout);
        let opened = tokio::select! {
            _ = cancel.cancelled() => return,
            opened = tokio::time::timeout(spec.timeout, async {
                match runner.probe.subscribe(ctx).await {
                    Subscription::Open(mut stream) => {
                        let first = stream.next().await;
                        Opened::Stream(stream, first)
                    }
                    Subscription::Unsupported => Opened::Unsupported,
                    Subscription::Failed(verdict) => Opened::Failed(verdict),
                }
            }) => opened,
        };
        let (mut stream, first) = match opened {
            Err(_) => {
                let why = format!(
                    "timed out after {} opening the watch",
                    humantime::format_duration(spec.timeout)
                );
                if !report(&runner, &cancel, Verdict::unhealthy(why), started.elapsed()).await {
                    return;
                }
                wait = backoff.step();
                continue;
            }
            Ok(Opened::Unsupported) => {
                info!(
                    dependency = %runner.dependency,
                    "the server has no grpc.health.v1 Watch (UNIMPLEMENTED): polling Check every interval"
                );
                let mut runner = runner.clone();
                runner.note = Some(POLLING_NOTE);
                background(runner, interval, POLLING_JITTER, refresh, cancel).await;
                return;
            }
            Ok(Opened::Failed(verdict)) => {
                if !report(&runner, &cancel, verdict, started.elapsed()).await {
                    return;
                }
                wait = backoff.step();
                continue;
            }
            Ok(Opened::Stream(stream, first)) => (stream, first),
        };
        let mut last = match first {
            Some(Ok(verdict)) => verdict,
            Some(Err(reason)) => {
                if !report(
                    &runner,
                    &cancel,
                    Verdict::unhealthy(reason),
                    started.elapsed(),
                )
                .await
                {
                    return;
                }
                wait = backoff.step();
                continue;
            }
            None => {
                let verdict = Verdict::unhealthy("watch ended before a status");
                if !report(&runner, &cancel, verdict, started.elapsed()).await {
                    return;
                }
                wait = backoff.step();
                continue;
            }
        };
        if !report(&runner, &cancel, last.clone(), started.elapsed()).await {
            return;
        }
        let opened_at = Instant::now();
        // Open: every message an outcome; silence repeats the last one every interval.
        let mut repeat = Instant::now() + interval;
        let ended = loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = refresh.notified() => break None,
                _ = sleep_until(repeat) => {
                    repeat = Instant::now() + interval;
                    if !report_unasked(&runner, &cancel, last.clone()).await {
                        return;
                    }
                }
                item = stream.next() => match item {
                    Some(Ok(verdict)) => {
                        repeat = Instant::now() + interval;
                        last = verdict.clone();
                        if !report_unasked(&runner, &cancel, verdict).await {
                            return;
                        }
                    }
                    Some(Err(reason)) => break Some(Verdict::unhealthy(reason)),
                    None => break Some(Verdict::unhealthy("watch ended")),
                }
            }
        };
        drop(stream);
        match ended {
            // Refresh: reopen at once, without an outcome in between.
            None => wait = Duration::ZERO,
            Some(verdict) => {
                warn!(
                    dependency = %runner.dependency,
                    reason = verdict.reason().map_or("", |r| r.as_str()),
                    "watch stream ended; reconnecting"
                );
                if !report(&runner, &cancel, verdict, Duration::ZERO).await {
                    return;
                }
                // A stream that lasted is reopened at once; one ended as soon as it opened
                // (a server that closes every Watch) waits its backoff, so it is not hammered.
                wait = if opened_at.elapsed() >= MIN_LASTING {
                    backoff.reset();
                    Duration::ZERO
                } else {
                    backoff.step()
                };
            }
        }
    }
}

/// Sends an outcome of `verdict` that took `latency` (`degraded_after` applies); `false` when
/// cancelled or the engine is gone.
async fn report(
    runner: &Runner,
    cancel: &CancellationToken,
    verdict: Verdict,
    latency: Duration,
) -> bool {
    let verdict = with_expiry(verdict, &*runner.probe, &runner.spec);
    let outcome = outcome_of(verdict, latency, &runner.spec);
    runner.send(cancel, outcome).await
}

/// Sends an outcome the dependency announced (or repeated): latency 0 (nothing was waited
/// for, so `degraded_after` never applies); secrets scrubbed as for every outcome.
async fn report_unasked(runner: &Runner, cancel: &CancellationToken, verdict: Verdict) -> bool {
    let verdict = with_expiry(verdict, &*runner.probe, &runner.spec);
    let outcome = outcome_of(verdict, Duration::ZERO, &runner.spec);
    runner.send(cancel, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let mut nominal = INITIAL_BACKOFF.as_secs_f64();
        for _ in 0..20 {
            let wait = b.step().as_secs_f64();
            assert!(
                wait >= nominal * (1.0 - JITTER) - 1e-9 && wait <= nominal * (1.0 + JITTER) + 1e-9,
                "{wait} around {nominal}"
            );
            nominal = (nominal * MULTIPLIER).min(MAX_BACKOFF.as_secs_f64());
        }
        assert!((nominal - MAX_BACKOFF.as_secs_f64()).abs() < 1e-9, "capped");
        b.reset();
        assert!(b.step() <= INITIAL_BACKOFF.mul_f64(1.0 + JITTER));
    }
}
