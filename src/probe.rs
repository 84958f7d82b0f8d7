//! The [`Probe`] trait and the built-in probes: `http`, `grpc` and `tcp`.
//!
//! A probe answers one question once: is the dependency fine right now? It returns a
//! [`Verdict`]; the engine owns everything around it (timeout, latency, `degraded_after`, panics,
//! scheduling, hysteresis). Failures are verdicts with short reasons built from classified
//! errors (`reason`), never from URLs, header values or bodies.

pub(crate) mod grpc;
pub(crate) mod http;
pub(crate) mod tcp;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Verdict;

/// Timeouts inside a probe's libraries (tonic's deadline, connect timeouts) are set this much
/// beyond the probe's timeout, so that a run taking too long is always ended — and worded,
/// `timed out after …` — by the engine, in one place, rather than by whichever library timer
/// fires a moment earlier.
pub(crate) const OWN_TIMEOUT_MARGIN: Duration = Duration::from_millis(100);

/// The future a probe returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// What the engine tells a probe about the run it asks for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ProbeContext {
    /// The engine abandons the run after this long; probes that can pass a deadline on (gRPC's
    /// `grpc-timeout`) should.
    pub timeout: Duration,
}

impl ProbeContext {
    /// A context with the given timeout.
    pub fn new(timeout: Duration) -> ProbeContext {
        ProbeContext { timeout }
    }
}

/// One way of checking a dependency. Implement it for in-process checks (a pool, a queue, a
/// cache) and register them with [`DependencySpec::custom`](crate::config::DependencySpec::custom).
///
/// The engine runs at most one check per dependency at a time, cancels it (drops the future) at
/// the timeout, and turns a panic into an Unhealthy outcome.
///
/// ```
/// use healthgate::probe::{Probe, ProbeContext, ProbeFuture};
/// use healthgate::Verdict;
///
/// #[derive(Debug)]
/// struct QueueDepth(std::sync::Arc<std::sync::atomic::AtomicUsize>);
///
/// impl Probe for QueueDepth {
///     fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
///         Box::pin(async move {
///             match self.0.load(std::sync::atomic::Ordering::Relaxed) {
///                 0..=999 => Verdict::Healthy,
///                 1000..=9999 => Verdict::degraded("queue over 1000"),
///                 _ => Verdict::unhealthy("queue over 10000"),
///             }
///         })
///     }
/// }
/// ```
pub trait Probe: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one check.
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_>;
}

/// A probe could not be built from its spec (e.g. the TLS configuration was refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot build {kind} probe: {reason}")]
pub struct BuildError {
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}
