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

/// A subscription's messages (see [`Probe::subscribe`]): each a verdict as the dependency
/// announces it; `Err(reason)` when the stream broke; the stream's end when the dependency
/// ended it.
pub type VerdictStream = Pin<Box<dyn futures_util::Stream<Item = Result<Verdict, String>> + Send>>;

/// The future [`Probe::subscribe`] returns.
pub type SubscribeFuture<'a> = Pin<Box<dyn Future<Output = Subscription> + Send + 'a>>;

/// How a subscription began.
#[non_exhaustive]
pub enum Subscription {
    /// Open: its messages.
    Open(VerdictStream),
    /// The dependency offers none (gRPC `UNIMPLEMENTED`): the engine polls `check` instead.
    Unsupported,
    /// It could not be opened: the failure, as a verdict.
    Failed(Verdict),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subscription::Open(_) => f.write_str("Open"),
            Subscription::Unsupported => f.write_str("Unsupported"),
            Subscription::Failed(v) => f.debug_tuple("Failed").field(v).finish(),
        }
    }
}

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

    /// Subscribes to the dependency's own announcements (`mode = "watch"`: gRPC's `Watch`).
    /// The engine owns the rest: the time allowed for the first message, reconnects with
    /// backoff, hysteresis. The default offers none, so the engine polls [`Probe::check`].
    fn subscribe(&self, _ctx: ProbeContext) -> SubscribeFuture<'_> {
        Box::pin(async { Subscription::Unsupported })
    }

    /// The peer certificate's `notAfter` seen by the latest run, for probes that complete a
    /// TLS handshake (`None` otherwise, or when the run got no certificate). The engine reads
    /// it after each run: it is shown, exported, and turns a success Degraded within
    /// `tls.expiry_warning`.
    fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        None
    }
}

/// A probe could not be built from its spec (e.g. the TLS configuration was refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot build {kind} probe: {reason}")]
pub struct BuildError {
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
}
