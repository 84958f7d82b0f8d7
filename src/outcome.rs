//! What one probe run yields: a [`Verdict`] from the probe, wrapped by the engine into an
//! [`Outcome`] with latency and time, and the short sanitized [`Reason`] both carry.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::Health;

/// The longest reason kept, in bytes; longer text is cut at a character boundary.
///
/// Reasons travel in snapshots, detail RPCs, logs and spans: they must stay short.
pub const MAX_REASON_LEN: usize = 160;

/// A short, sanitized explanation of a non-healthy verdict, e.g. `HTTP 503` or
/// `timed out after 2s`.
///
/// Probes build reasons from fixed wording and classified errors, never from URLs, header values
/// or response bodies. The engine additionally scrubs every configured secret from them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reason(Arc<str>);

impl Reason {
    /// A reason from text, cut to [`MAX_REASON_LEN`] bytes.
    pub fn new(text: impl Into<Cow<'static, str>>) -> Reason {
        let text = text.into();
        if text.len() <= MAX_REASON_LEN {
            return Reason(Arc::from(text.as_ref()));
        }
        let mut end = MAX_REASON_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}…", &text[..end]);
        Reason(Arc::from(text.as_ref()))
    }

    /// The reason's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// What a [`Probe`](crate::Probe) concludes from one run.
///
/// A failed probe is data, not an error: it is a `Unhealthy` verdict with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The dependency answered as expected.
    Healthy,
    /// The dependency answered, but a degraded criterion matched (e.g. `HTTP 429`).
    Degraded(Reason),
    /// The dependency failed (e.g. `connection refused`).
    Unhealthy(Reason),
}

impl Verdict {
    /// An unhealthy verdict with the given reason.
    pub fn unhealthy(reason: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict::Unhealthy(Reason::new(reason))
    }

    /// A degraded verdict with the given reason.
    pub fn degraded(reason: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict::Degraded(Reason::new(reason))
    }

    /// The health this verdict stands for.
    pub fn health(&self) -> Health {
        match self {
            Verdict::Healthy => Health::Healthy,
            Verdict::Degraded(_) => Health::Degraded,
            Verdict::Unhealthy(_) => Health::Unhealthy,
        }
    }

    /// The reason, if the verdict is not healthy.
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Verdict::Healthy => None,
            Verdict::Degraded(r) | Verdict::Unhealthy(r) => Some(r),
        }
    }
}

/// One probe run as the engine records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The verdict (after the engine applied `degraded_after` and the timeout).
    pub verdict: Verdict,
    /// How long the run took.
    pub latency: Duration,
    /// Wall-clock time the run finished, for display.
    pub finished_at: SystemTime,
}

impl Outcome {
    /// The health of this single run (never [`Health::Unknown`]).
    pub fn health(&self) -> Health {
        self.verdict.health()
    }

    /// Whether the run succeeded (healthy or degraded).
    pub fn is_success(&self) -> bool {
        !matches!(self.verdict, Verdict::Unhealthy(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(200);
        let r = Reason::new(long);
        assert!(r.as_str().len() <= MAX_REASON_LEN + '…'.len_utf8());
        assert!(r.as_str().ends_with('…'));
        assert_eq!(Reason::new("HTTP 503").as_str(), "HTTP 503");
    }
}
