//! [`DependencySpec`]: one validated dependency — what to probe, how often, and how its
//! outcomes turn into health.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::Problem;
use crate::probe::Probe;
use crate::probe::grpc::GrpcSpec;
use crate::probe::http::HttpSpec;
use crate::probe::tcp::TcpSpec;
use crate::redact::{Secrets, redact_url, redact_url_template};
use crate::tls::TlsSpec;

/// Default time between probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive bad outcomes needed to get worse.
pub const DEFAULT_FALL: u32 = 3;
/// Default consecutive good outcomes needed to get better.
pub const DEFAULT_RISE: u32 = 2;
/// Default jitter: each wait is the interval ± this fraction of it.
pub const DEFAULT_JITTER: f64 = 0.1;
/// The longest duration any setting may have (365 days). Longer values mean nothing for health
/// checking and reach the limits of the runtime's timers (tokio's timer wheel holds about two
/// years), so validation refuses them instead of letting them fail later.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The longest `stale_after` a dependency can have: set by hand it is at most
/// [`MAX_DURATION`] like every setting; the default (three periods and a timeout) can reach
/// this.
pub const MAX_STALE_AFTER: Duration = Duration::from_secs(4 * 365 * 24 * 60 * 60);
/// The largest `fall` and `rise`.
pub const MAX_STREAK: u32 = 1000;

/// A validated dependency. Two specs are equal when they probe the same way (a reload keeps
/// a dependency whose spec is equal, with its state and connections, and probes it on its
/// own schedule); custom probes are equal only as the same instance.
#[derive(Clone, PartialEq)]
pub struct DependencySpec {
    /// What to probe.
    pub probe: ProbeSpec,
    /// When to probe.
    pub mode: Mode,
    /// How long one probe run may take; a run still going then is Unhealthy ("timed out").
    pub timeout: Duration,
    /// Consecutive outcomes at least that bad needed to move to a worse health.
    pub fall: u32,
    /// Consecutive outcomes at least that good needed to move to a better health.
    pub rise: u32,
    /// A successful run slower than this is Degraded.
    pub degraded_after: Option<Duration>,
    /// A dependency whose last outcome is older than this is Unknown.
    pub stale_after: Duration,
    /// Values to scrub from anything printed about this dependency.
    pub secrets: Secrets,
    /// The URL, target or address as written, before `${NAME}` expansion, when it used
    /// environment variables: [`DependencySpec::target`] shows it (redacted) instead of the
    /// expanded value, so a secret from the environment never appears in the target, whatever
    /// its length or position. Set by config validation.
    pub target_template: Option<String>,
    /// Dependencies this one relies on (a gateway, a database proxy): while one of them is
    /// Unhealthy, this one failing is attributed to it (`parent gateway unhealthy`) and
    /// services name the root cause instead. It is still probed (its own recovery must be
    /// seen). Parents form a DAG.
    pub parents: Vec<String>,
}

impl fmt::Debug for DependencySpec {
    /// The probe is shown as [`DependencySpec::target`]: the probe specs alone cannot know
    /// which parts of their URL came from the environment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DependencySpec")
            .field("kind", &self.kind())
            .field("target", &self.target())
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("fall", &self.fall)
            .field("rise", &self.rise)
            .field("degraded_after", &self.degraded_after)
            .field("stale_after", &self.stale_after)
            .field("secrets", &self.secrets)
            .field("parents", &self.parents)
            .finish_non_exhaustive()
    }
}

/// When a dependency is probed.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// A background task probes every `interval` ± `jitter` × `interval`.
    Background {
        /// Time between probe runs.
        interval: Duration,
        /// Fraction of the interval by which each wait varies (0 disables jitter).
        jitter: f64,
    },
    /// Probed only when a reader finds the cached outcome older than its time to live.
    OnDemand(OnDemand),
    /// gRPC only: one `Watch(service)` stream held on the dependency's channel; every message
    /// is an outcome at once. A silent open stream repeats its last status every `interval`
    /// (so staleness keeps its meaning: the watch task is stuck), HTTP/2 pings every `interval`
    /// find a dead peer within `interval + timeout`, and a server without `Watch` is polled
    /// with `Check` every `interval` (see `engine::watch`).
    Watch {
        /// How often a silent stream repeats its status, the keep-alive ping period, and the
        /// polling interval when the server has no `Watch`.
        interval: Duration,
    },
    /// Never probed: reports arrive from outside, and none within `ttl` is a failure.
    Push {
        /// How long a report holds.
        ttl: Duration,
    },
}

/// Cache lifetimes of an on-demand dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemand {
    /// How long a successful outcome is fresh.
    pub ttl: Duration,
    /// How long a failed outcome is fresh; doubles while failures continue.
    pub failure_ttl: Duration,
    /// The cap on the doubled failure time to live.
    pub max_failure_ttl: Duration,
}

/// A push dependency: a job reports its own health. `token` (secret), when set, lets a
/// reporter report this dependency only (the admin token can always report).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PushSpec {
    /// The dependency's own bearer token for `POST /push/NAME`.
    pub token: Option<String>,
}

impl fmt::Debug for PushSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushSpec")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// What a dependency probes, by kind.
///
/// The HTTP and gRPC specs are shared: a reload takes the spec of each unchanged dependency
/// from the config before, and the plan compares it with the one in force. Shared, that is a
/// count and a pointer compare; boxed, each was a deep copy (URL, headers, TLS settings) and
/// a deep compare, and the old copies had to be freed after the swap. A 1,000-dependency
/// reload spent about a sixth of its CPU there (`perf`, the reader thread).
#[derive(Clone)]
pub enum ProbeSpec {
    /// An HTTP(S) endpoint.
    Http(Arc<HttpSpec>),
    /// A gRPC server's own `grpc.health.v1.Health/Check`.
    Grpc(Arc<GrpcSpec>),
    /// A TCP connect.
    Tcp(TcpSpec),
    /// No probe: reports arrive (admin `report`, `POST /push/NAME`); see [`Mode::Push`].
    Push(PushSpec),
    /// An in-process check supplied by a library user.
    Custom {
        /// The probe.
        probe: Arc<dyn Probe>,
        /// What it checks, for display (must not hold secrets).
        target: String,
    },
}

impl PartialEq for ProbeSpec {
    fn eq(&self, other: &ProbeSpec) -> bool {
        match (self, other) {
            (ProbeSpec::Http(a), ProbeSpec::Http(b)) => Arc::ptr_eq(a, b) || a == b,
            (ProbeSpec::Grpc(a), ProbeSpec::Grpc(b)) => Arc::ptr_eq(a, b) || a == b,
            (ProbeSpec::Tcp(a), ProbeSpec::Tcp(b)) => a == b,
            (ProbeSpec::Push(a), ProbeSpec::Push(b)) => a == b,
            (
                ProbeSpec::Custom { probe, target },
                ProbeSpec::Custom {
                    probe: other_probe,
                    target: other_target,
                },
            ) => Arc::ptr_eq(probe, other_probe) && target == other_target,
            _ => false,
        }
    }
}

impl fmt::Debug for ProbeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeSpec::Http(s) => fmt::Debug::fmt(s, f),
            ProbeSpec::Grpc(s) => fmt::Debug::fmt(s, f),
            ProbeSpec::Tcp(s) => fmt::Debug::fmt(s, f),
            ProbeSpec::Push(s) => fmt::Debug::fmt(s, f),
            ProbeSpec::Custom { target, .. } => {
                f.debug_struct("Custom").field("target", target).finish()
            }
        }
    }
}

impl DependencySpec {
    /// A spec with default timing for `probe`: background every 5 s, timeout 2 s, fall 3,
    /// rise 2, jitter 10 %.
    pub fn new(probe: ProbeSpec) -> DependencySpec {
        let mut spec = DependencySpec {
            probe,
            mode: Mode::Background {
                interval: DEFAULT_INTERVAL,
                jitter: DEFAULT_JITTER,
            },
            timeout: DEFAULT_TIMEOUT,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
            degraded_after: None,
            stale_after: Duration::ZERO,
            secrets: Secrets::default(),
            target_template: None,
            parents: Vec::new(),
        };
        spec.stale_after = spec.default_stale_after();
        spec
    }

    /// Sets the dependencies this one relies on (see [`DependencySpec::parents`]).
    #[must_use]
    pub fn with_parents(
        mut self,
        parents: impl IntoIterator<Item = impl Into<String>>,
    ) -> DependencySpec {
        self.parents = parents.into_iter().map(Into::into).collect();
        self
    }

    /// A spec for an in-process [`Probe`], with default timing.
    pub fn custom(probe: Arc<dyn Probe>, target: impl Into<String>) -> DependencySpec {
        DependencySpec::new(ProbeSpec::Custom {
            probe,
            target: target.into(),
        })
    }

    /// Sets background mode with this interval and jitter, and the default `stale_after`.
    #[must_use]
    pub fn every(mut self, interval: Duration, jitter: f64) -> DependencySpec {
        self.mode = Mode::Background { interval, jitter };
        self.stale_after = self.default_stale_after();
        self
    }

    /// Sets on-demand mode, and the default `stale_after`.
    #[must_use]
    pub fn on_demand(mut self, on_demand: OnDemand) -> DependencySpec {
        self.mode = Mode::OnDemand(on_demand);
        self.stale_after = self.default_stale_after();
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> DependencySpec {
        self.timeout = timeout;
        self.stale_after = self.default_stale_after();
        self
    }

    /// Sets the hysteresis thresholds.
    #[must_use]
    pub fn with_thresholds(mut self, fall: u32, rise: u32) -> DependencySpec {
        self.fall = fall;
        self.rise = rise;
        self
    }

    /// The TLS settings of a dependency that completes a handshake: `https://` HTTP and gRPC,
    /// TCP with `tls`.
    pub fn tls(&self) -> Option<&TlsSpec> {
        match &self.probe {
            ProbeSpec::Http(s) if s.url.scheme() == "https" => Some(&s.tls),
            ProbeSpec::Grpc(s) if s.target.scheme() == "https" => Some(&s.tls),
            ProbeSpec::Tcp(s) => s.tls.as_deref(),
            _ => None,
        }
    }

    /// The kind name: `http`, `grpc`, `tcp` or `custom`.
    pub fn kind(&self) -> &'static str {
        match self.probe {
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Grpc(_) => "grpc",
            ProbeSpec::Tcp(_) => "tcp",
            ProbeSpec::Push(_) => "push",
            ProbeSpec::Custom { .. } => "custom",
        }
    }

    /// A push dependency: Unknown until its first report, Unhealthy at once when `ttl` passes
    /// without one (from the last report, or from when the dependency appeared). Reports are
    /// outcomes: fall 1 and rise 1 unless set (a nightly job's failure must not wait three
    /// nights).
    pub fn push(ttl: Duration, token: Option<String>) -> DependencySpec {
        let secrets = Secrets::new(token.iter());
        DependencySpec {
            mode: Mode::Push { ttl },
            fall: 1,
            rise: 1,
            stale_after: ttl,
            secrets,
            ..DependencySpec::new(ProbeSpec::Push(PushSpec { token }))
        }
    }

    /// The dependency's own push token, if it is a push dependency with one.
    pub fn push_token(&self) -> Option<&str> {
        match &self.probe {
            ProbeSpec::Push(p) => p.token.as_deref(),
            _ => None,
        }
    }

    /// What is probed, safe to show: URLs redacted, custom targets scrubbed, values from the
    /// environment shown as their `${NAME}`.
    pub fn target(&self) -> String {
        let template = self.target_template.as_deref();
        match &self.probe {
            ProbeSpec::Http(s) => template.map_or_else(|| redact_url(&s.url), redact_url_template),
            ProbeSpec::Grpc(s) => {
                let target = template.map_or_else(|| redact_url(&s.target), redact_url_template);
                let target = target.trim_end_matches('/');
                if s.service.is_empty() {
                    target.to_owned()
                } else {
                    format!("{target} service {:?}", s.service)
                }
            }
            ProbeSpec::Tcp(s) => match template {
                Some(template) => template.to_owned(),
                None => self.secrets.scrub(&s.address).into_owned(),
            },
            ProbeSpec::Push(_) => "push".to_owned(),
            ProbeSpec::Custom { target, .. } => self.secrets.scrub(target).into_owned(),
        }
    }

    /// The period that sets the default staleness: the interval, or the on-demand ttl.
    fn period(&self) -> Duration {
        match &self.mode {
            Mode::Background { interval, .. } | Mode::Watch { interval } => *interval,
            Mode::OnDemand(o) => o.ttl.max(o.max_failure_ttl),
            Mode::Push { ttl } => *ttl,
        }
    }

    /// `3 × period + timeout`: three missed runs in a row make a dependency Unknown. The only
    /// duration that may exceed [`MAX_DURATION`] (up to [`MAX_STALE_AFTER`]).
    pub fn default_stale_after(&self) -> Duration {
        if let Mode::Push { ttl } = self.mode {
            // The missing report is the failure: it expires at the ttl itself.
            return ttl;
        }
        self.period()
            .saturating_mul(3)
            .saturating_add(self.timeout)
            .min(MAX_STALE_AFTER)
    }

    /// The cross-field rules, for config validation and runtime changes alike. `path` prefixes
    /// each problem (e.g. `dependencies.payments`).
    pub fn check(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut problem = |msg: String| problems.push(Problem::new(path, msg));
        let f = |d: Duration| humantime::format_duration(d).to_string();
        let t = f(self.timeout);
        for (key, value) in self.durations() {
            if value > MAX_DURATION {
                problem(format!("{key} ({}) must be at most 365days", f(value)));
            }
        }
        if self.stale_after > MAX_STALE_AFTER {
            problem(format!(
                "stale_after ({}) must be at most 1460days",
                f(self.stale_after)
            ));
        }
        if self.timeout.is_zero() {
            problem("timeout must be greater than 0".into());
        }
        if matches!(self.probe, ProbeSpec::Push(_)) != matches!(self.mode, Mode::Push { .. }) {
            problem("a push dependency has mode push, and only it".into());
        }
        match &self.mode {
            Mode::Push { ttl } => {
                if ttl.is_zero() {
                    problem("ttl must be greater than 0".into());
                }
                if self.stale_after != *ttl {
                    problem("a push dependency expires at its ttl (no stale_after)".into());
                }
            }
            Mode::Watch { interval } => {
                if self.timeout >= *interval {
                    problem(format!(
                        "timeout ({t}) must be less than interval ({})",
                        f(*interval)
                    ));
                }
                if !matches!(self.probe, ProbeSpec::Grpc(_)) {
                    problem("mode watch is only valid for grpc dependencies".into());
                }
            }
            Mode::Background { interval, jitter } => {
                let i = f(*interval);
                if self.timeout >= *interval {
                    problem(format!("timeout ({t}) must be less than interval ({i})"));
                }
                if !(0.0..=0.5).contains(jitter) {
                    problem(format!("jitter ({jitter}) must be between 0 and 0.5"));
                }
                // Saturating: the sum of two durations that passed the range check fits, but
                // a library caller may hand us anything.
                let sum = interval.saturating_add(self.timeout);
                if self.stale_after <= sum {
                    problem(format!(
                        "stale_after ({}) must be greater than interval + timeout ({})",
                        f(self.stale_after),
                        f(sum)
                    ));
                }
            }
            Mode::OnDemand(o) => {
                if o.ttl.is_zero() || o.failure_ttl.is_zero() {
                    problem("ttl and failure_ttl must be greater than 0".into());
                }
                if o.failure_ttl > o.max_failure_ttl {
                    problem(format!(
                        "failure_ttl ({}) must not exceed max_failure_ttl ({})",
                        f(o.failure_ttl),
                        f(o.max_failure_ttl)
                    ));
                }
                if self.stale_after <= o.ttl {
                    problem(format!(
                        "stale_after ({}) must be greater than ttl ({})",
                        f(self.stale_after),
                        f(o.ttl)
                    ));
                }
            }
        }
        if !(1..=MAX_STREAK).contains(&self.fall) || !(1..=MAX_STREAK).contains(&self.rise) {
            problem(format!("fall and rise must be between 1 and {MAX_STREAK}"));
        }
        if let Some(d) = self.degraded_after
            && d >= self.timeout
        {
            problem(format!(
                "degraded_after ({}) must be less than timeout ({t})",
                f(d)
            ));
        }
        problems
    }

    /// Every duration setting with its key, for the range check.
    fn durations(&self) -> Vec<(&'static str, Duration)> {
        // `stale_after` has its own, larger bound: its default is a sum.
        let mut out = vec![("timeout", self.timeout)];
        match &self.mode {
            Mode::Background { interval, .. } | Mode::Watch { interval } => {
                out.push(("interval", *interval))
            }
            Mode::OnDemand(o) => out.extend([
                ("ttl", o.ttl),
                ("failure_ttl", o.failure_ttl),
                ("max_failure_ttl", o.max_failure_ttl),
            ]),
            Mode::Push { ttl } => out.push(("ttl", *ttl)),
        }
        out.extend(self.degraded_after.map(|d| ("degraded_after", d)));
        out
    }
}

/// The problems of `parents` across `dependencies`: a parent that names no dependency (unless
/// `known`: one that failed validation, reported already) and every cycle, named as
/// `a → b → a`. Parents must form a DAG.
pub(crate) fn parent_problems(
    dependencies: &std::collections::BTreeMap<String, DependencySpec>,
    known: &dyn Fn(&str) -> bool,
) -> Vec<super::Problem> {
    use super::Problem;
    let mut problems = Vec::new();
    for (name, spec) in dependencies {
        for parent in &spec.parents {
            if !dependencies.contains_key(parent) && !known(parent) {
                problems.push(Problem::new(
                    format!("dependencies.{}.parents", super::path_key(name)),
                    format!("no dependency {parent:?}"),
                ));
            }
        }
    }
    // Depth-first, colouring: a parent on the current path closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        dependencies: &'a std::collections::BTreeMap<String, DependencySpec>,
        marks: &mut std::collections::BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        marks.insert(name, Mark::OnPath);
        path.push(name);
        for parent in dependencies
            .get(name)
            .map(|s| &s.parents[..])
            .unwrap_or_default()
        {
            let Some((parent, _)) = dependencies.get_key_value(parent.as_str()) else {
                continue;
            };
            match marks.get(parent.as_str()).copied().unwrap_or(Mark::New) {
                Mark::New => visit(parent, dependencies, marks, path, cycles),
                Mark::OnPath => {
                    let start = path.iter().position(|n| *n == parent).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(parent);
                    cycles.push(cycle);
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
    }
    let mut marks = std::collections::BTreeMap::new();
    let mut cycles = Vec::new();
    // A dependency without parents closes no cycle (and most have none: skipping them keeps
    // this linear in the parent links, not in the map's lookups).
    for (name, _) in dependencies.iter().filter(|(_, s)| !s.parents.is_empty()) {
        if marks.get(name.as_str()).copied().unwrap_or(Mark::New) == Mark::New {
            visit(name, dependencies, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        problems.push(Problem::new(
            format!("dependencies.{}.parents", super::path_key(cycle[0])),
            format!("parents form a cycle: {}", cycle.join(" → ")),
        ));
    }
    problems
}
