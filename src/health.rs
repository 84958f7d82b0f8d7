//! The health status model: [`Health`], its severity order, and the impact a dependency has on a
//! service.

use std::fmt;

/// The response header (gRPC metadata, HTTP header) that carries the three-state health next to
/// a two-state answer: `healthy`, `degraded`, `unhealthy` or `unknown` — never names or reasons.
pub const HEALTH_STATE_KEY: &str = "x-health-state";

/// The health of a dependency or a service.
///
/// The derived order is *severity*: `Healthy < Degraded < Unknown < Unhealthy`, so the worst of
/// several inputs is their maximum. Unknown ranks below Unhealthy because a known failure is more
/// specific than missing information; both map to `NOT_SERVING` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Health {
    /// Every input is fine.
    Healthy,
    /// Works, but something it relies on is slow, partly down, or non-critical and down.
    Degraded,
    /// No result yet, or the last result is older than `stale_after`.
    #[default]
    Unknown,
    /// A critical input is down.
    Unhealthy,
}

impl Health {
    /// The worst (most severe) of two health values.
    #[must_use]
    pub fn worst(self, other: Health) -> Health {
        self.max(other)
    }

    /// The lowercase name used in logs, metadata (`x-health-state`) and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unknown => "unknown",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a dependency's health matters to one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Impact {
    /// Dependency unhealthy ⇒ service unhealthy; unknown ⇒ unknown.
    Critical,
    /// Dependency unhealthy or unknown ⇒ service at most degraded.
    Degrading,
    /// Shown in detail, never changes the service.
    Informational,
}

impl Impact {
    /// What a dependency in state `health` contributes to a service through this impact.
    ///
    /// `None` for informational dependencies: they never take part in the rollup.
    pub fn contribution(self, health: Health) -> Option<Health> {
        match self {
            Impact::Critical => Some(health),
            Impact::Degrading => Some(match health {
                Health::Healthy => Health::Healthy,
                Health::Degraded | Health::Unknown | Health::Unhealthy => Health::Degraded,
            }),
            Impact::Informational => None,
        }
    }

    /// The name used in config files (`critical`, `degrading`, `informational`).
    pub fn as_str(self) -> &'static str {
        match self {
            Impact::Critical => "critical",
            Impact::Degrading => "degrading",
            Impact::Informational => "informational",
        }
    }
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_of_follows_severity() {
        assert_eq!(Health::Healthy.worst(Health::Degraded), Health::Degraded);
        assert_eq!(Health::Degraded.worst(Health::Unknown), Health::Unknown);
        assert_eq!(Health::Unknown.worst(Health::Unhealthy), Health::Unhealthy);
        assert_eq!(Health::Unhealthy.worst(Health::Healthy), Health::Unhealthy);
    }

    #[test]
    fn degrading_impact_caps_at_degraded() {
        for h in [Health::Degraded, Health::Unknown, Health::Unhealthy] {
            assert_eq!(Impact::Degrading.contribution(h), Some(Health::Degraded));
        }
        assert_eq!(
            Impact::Degrading.contribution(Health::Healthy),
            Some(Health::Healthy)
        );
        assert_eq!(
            Impact::Critical.contribution(Health::Unknown),
            Some(Health::Unknown)
        );
        assert_eq!(Impact::Informational.contribution(Health::Unhealthy), None);
    }
}
