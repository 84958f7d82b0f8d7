//! Runtime changes: the commands a [`Handle`](super::Handle) sends the reducer, the checks
//! that decide whether one may apply (pure, so a rejected change provably changes nothing),
//! and [`ChangeError`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::Health;
use crate::snapshot::Override;

use crate::config::{DependencySpec, Problem, ServiceSpec, path_key};
use crate::probe::BuildError;

/// A runtime change, with where to send its result.
#[derive(Debug)]
pub(crate) enum Command {
    PutDependency {
        name: String,
        spec: DependencySpec,
        replace: bool,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    RemoveDependency {
        name: String,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    PutService {
        name: String,
        spec: ServiceSpec,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    RemoveService {
        name: String,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// Every dependency and service at once (a reload): see [`check_apply`]. Answers with
    /// the configuration revision it made.
    Apply {
        dependencies: BTreeMap<String, DependencySpec>,
        services: BTreeMap<String, ServiceSpec>,
        reply: oneshot::Sender<Result<(Applied, u64), ChangeError>>,
    },
    /// A reload worked out away from the engine: see [`Plan`].
    ApplyPlan {
        plan: Plan,
        reply: oneshot::Sender<Result<(Applied, u64), ChangeError>>,
    },
    /// Forces a dependency's or service's health for a while.
    Override {
        target: Target,
        health: Health,
        duration: Duration,
        reason: String,
        reply: oneshot::Sender<Result<Arc<Override>, ChangeError>>,
    },
    /// A push dependency's report.
    Report {
        name: String,
        health: Health,
        reason: Option<String>,
        reporter: Reporter,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// Probes a dependency now.
    Refresh {
        name: String,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// What a state file kept (at start, before anything listens): see [`Saved`].
    Restore {
        saved: Saved,
        reply: oneshot::Sender<Result<Vec<String>, ChangeError>>,
    },
    /// What a state file must keep now.
    Saved {
        reply: oneshot::Sender<Result<Saved, ChangeError>>,
    },
    /// Ends an override now; answers whether one was active.
    ClearOverride {
        target: Target,
        reply: oneshot::Sender<Result<bool, ChangeError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Who reports for a push dependency.
#[derive(Clone, PartialEq, Eq)]
pub enum Reporter {
    /// A caller the front authenticated as an operator (the admin token): any push dependency.
    Admin,
    /// A caller presenting this bearer token: only the push dependency whose `token` it is.
    Token(String),
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reporter::Admin => f.write_str("Admin"),
            Reporter::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

/// What an override or a clear is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A dependency, by name.
    Dependency(String),
    /// A service, by name.
    Service(String),
}

impl Target {
    /// `dependency` or `service`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Dependency(_) => "dependency",
            Target::Service(_) => "service",
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        match self {
            Target::Dependency(n) | Target::Service(n) => n,
        }
    }
}

/// What a state file kept for [`Handle::restore`](super::Handle::restore): the active
/// overrides and the push dependencies' last reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Saved {
    /// Overrides as they were set: their `since` and `until` are kept.
    pub overrides: Vec<(Target, Override)>,
    /// Push dependencies' last reports.
    pub reports: Vec<SavedReport>,
}

/// A push dependency's state when it was saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedReport {
    /// The push dependency.
    pub dependency: String,
    /// Its health after hysteresis.
    pub health: Health,
    /// Its reason (degraded and unhealthy reports).
    pub reason: Option<String>,
    /// When its last report arrived.
    pub at: std::time::SystemTime,
}

/// The longest override: a maintenance window longer than a week belongs in the config.
pub const MAX_OVERRIDE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Whether an override may be set (the target's existence is the reducer's to check): a
/// duration above zero and at most [`MAX_OVERRIDE`], a known health, a reason.
pub(crate) fn check_override(
    health: Health,
    duration: Duration,
    reason: &str,
) -> Result<(), ChangeError> {
    let problem = if duration.is_zero() {
        "the duration must be above zero"
    } else if duration > MAX_OVERRIDE {
        "the duration is above the maximum (7d)"
    } else if health == Health::Unknown {
        "an override is healthy, degraded or unhealthy"
    } else if reason.trim().is_empty() {
        "a reason is required"
    } else {
        return Ok(());
    };
    Err(ChangeError::InvalidOverride(problem.to_owned()))
}

/// What applying a whole configuration changed: names by what happened to them. Dependencies
/// and services whose spec is equal to the running one are `kept` with their state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Dependencies that were not there.
    pub added_dependencies: Vec<String>,
    /// Dependencies whose spec changed: a new probe, the known health kept.
    pub replaced_dependencies: Vec<String>,
    /// Dependencies no longer configured.
    pub removed_dependencies: Vec<String>,
    /// Dependencies left exactly as they were.
    pub kept_dependencies: usize,
    /// Services that were not there.
    pub added_services: Vec<String>,
    /// Services whose spec changed.
    pub changed_services: Vec<String>,
    /// Services no longer configured (their watchers are told the name is gone).
    pub removed_services: Vec<String>,
    /// Services left exactly as they were.
    pub kept_services: usize,
}

impl Applied {
    /// Nothing was added, replaced or removed.
    pub fn is_empty(&self) -> bool {
        self.added_dependencies.is_empty()
            && self.replaced_dependencies.is_empty()
            && self.removed_dependencies.is_empty()
            && self.added_services.is_empty()
            && self.changed_services.is_empty()
            && self.removed_services.is_empty()
    }
}

/// Whether a whole configuration may replace the running one: every dependency valid, every
/// service naming only dependencies of the new set. Every problem is listed, with key paths as
/// `config validate` prints them.
pub(crate) fn check_apply(
    dependencies: &BTreeMap<String, DependencySpec>,
    services: &BTreeMap<String, ServiceSpec>,
) -> Result<(), ChangeError> {
    let mut problems = Vec::new();
    for (name, spec) in dependencies {
        if name.is_empty() {
            problems.push(Problem::new("dependencies", "a name must not be empty"));
        }
        problems.extend(spec.check(&format!("dependencies.{}", path_key(name))));
    }
    for (name, spec) in services {
        problems.extend(spec.check(name, &|d| dependencies.contains_key(d)));
    }
    problems.extend(crate::config::parent_problems(dependencies, &|_| false));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::InvalidConfig(problems))
    }
}

/// `services` with the server's overall service `""` added when it is missing: every
/// dependency, critical (what the engine serves for `""` unless told otherwise).
pub(crate) fn with_default_service(
    dependencies: &BTreeMap<String, DependencySpec>,
    mut services: BTreeMap<String, ServiceSpec>,
) -> BTreeMap<String, ServiceSpec> {
    services.entry(String::new()).or_insert_with(|| {
        ServiceSpec::with_all(dependencies.keys().cloned(), crate::Impact::Critical)
    });
    services
}

/// A configuration as the engine runs it, by reference: every dependency, and every service
/// with the server's overall service `""` in it (see [`with_default_service`]). What
/// [`Plan::between`] compares.
pub(crate) trait Effective {
    /// The dependency `name`.
    fn dependency(&self, name: &str) -> Option<&DependencySpec>;
    /// Every dependency (an implementation keeps one order for two configurations alike).
    fn dependencies(&self) -> Box<dyn Iterator<Item = (&str, &DependencySpec)> + '_>;
    /// The service `name`.
    fn service(&self, name: &str) -> Option<Service<'_>>;
    /// Every service, `""` included.
    fn services(&self) -> Box<dyn Iterator<Item = (&str, Service<'_>)> + '_>;
    /// [`crate::config::parent_problems`] of every dependency.
    fn parent_problems(&self) -> Vec<Problem>;
}

/// Maps as given to [`Handle::apply`](super::Handle::apply) (`""` missing: every dependency,
/// critical), as an [`Effective`] configuration.
#[cfg(test)]
struct Maps<'a> {
    dependencies: &'a BTreeMap<String, DependencySpec>,
    services: &'a BTreeMap<String, ServiceSpec>,
}

#[cfg(test)]
impl Effective for Maps<'_> {
    fn dependency(&self, name: &str) -> Option<&DependencySpec> {
        self.dependencies.get(name)
    }

    fn dependencies(&self) -> Box<dyn Iterator<Item = (&str, &DependencySpec)> + '_> {
        Box::new(self.dependencies.iter().map(|(n, s)| (n.as_str(), s)))
    }

    fn service(&self, name: &str) -> Option<Service<'_>> {
        match self.services.get(name) {
            Some(s) => Some(Service::Spec(s)),
            None => name.is_empty().then_some(Service::Every),
        }
    }

    fn services(&self) -> Box<dyn Iterator<Item = (&str, Service<'_>)> + '_> {
        let every = (!self.services.contains_key("")).then_some(("", Service::Every));
        Box::new(
            every.into_iter().chain(
                self.services
                    .iter()
                    .map(|(n, s)| (n.as_str(), Service::Spec(s))),
            ),
        )
    }

    fn parent_problems(&self) -> Vec<Problem> {
        crate::config::parent_problems(self.dependencies, &|_| false)
    }
}

/// A service of an [`Effective`] configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Service<'a> {
    /// As configured.
    Spec(&'a ServiceSpec),
    /// Every dependency of the configuration, critical: `""` when not configured otherwise
    /// (kept unbuilt: two of them are equal when their configurations' names are).
    Every,
}

impl Service<'_> {
    /// The spec itself; [`Service::Every`] built from `of`'s dependencies.
    pub(crate) fn to_spec(self, of: &dyn Effective) -> ServiceSpec {
        match self {
            Service::Spec(s) => s.clone(),
            Service::Every => ServiceSpec::with_all(
                of.dependencies().map(|(n, _)| n.to_owned()),
                crate::Impact::Critical,
            ),
        }
    }
}

/// A whole new configuration as its difference from the one the engine runs: what to add or
/// replace, what to remove, how much stays. A reload of 1,000 dependencies that changes one
/// costs the engine's thread (which also serves) the work for one, not for 1,000: the file is
/// read, validated, checked as a whole ([`check_apply`]) and compared here, on the reload's
/// own thread, and the engine applies the plan only to the configuration it was computed
/// against — its `base` revision, which every structural change moves on. Against anything
/// else the plan is refused ([`ChangeError::Stale`]) and the caller applies in full.
///
/// Measured (`bench/run.sh`, section `control`, 1,000 dependencies, one reload a second):
/// the full apply's checks, comparisons and drops took about 1.2 ms of the serving thread
/// per reload, and the reload's own preparation (the effective configuration, dropping the
/// old one) another 0.9 ms (perf, dwarf call graphs).
#[derive(Debug)]
pub(crate) struct Plan {
    /// The revision it was computed against.
    pub(super) base: u64,
    /// Added or changed.
    pub(super) dependencies: BTreeMap<String, DependencySpec>,
    pub(super) removed_dependencies: Vec<String>,
    /// Added or changed.
    pub(super) services: BTreeMap<String, ServiceSpec>,
    pub(super) removed_services: Vec<String>,
    pub(super) kept_dependencies: usize,
    pub(super) kept_services: usize,
}

impl Plan {
    /// The plan from `old_*` — what was applied at revision `base`, as given to
    /// [`Handle::apply`](super::Handle::apply) — to `dependencies` and `services`
    /// ([`Plan::between`] those maps).
    #[cfg(test)]
    pub(crate) fn new(
        base: u64,
        old_dependencies: &BTreeMap<String, DependencySpec>,
        old_services: &BTreeMap<String, ServiceSpec>,
        dependencies: BTreeMap<String, DependencySpec>,
        services: BTreeMap<String, ServiceSpec>,
    ) -> Result<Plan, ChangeError> {
        let old = Maps {
            dependencies: old_dependencies,
            services: old_services,
        };
        let new = Maps {
            dependencies: &dependencies,
            services: &services,
        };
        Plan::between(base, &old, &new)
    }

    /// The plan from `old` — what was applied at revision `base` — to `new`, both by
    /// reference: only what is added or changed is checked ([`DependencySpec::check`]) and
    /// cloned, then the whole of `new` is checked as [`check_apply`] checks it (services name
    /// dependencies that exist, parents exist and make no cycle). A reload of 1,000
    /// dependencies that changes one clones one spec, not 2,000 (measured in
    /// `control::prepare`).
    pub(crate) fn between(
        base: u64,
        old: &dyn Effective,
        new: &dyn Effective,
    ) -> Result<Plan, ChangeError> {
        let mut problems = Vec::new();
        let mut dependencies = BTreeMap::new();
        let mut kept_dependencies = 0;
        for (name, spec) in new.dependencies() {
            if old.dependency(name) == Some(spec) {
                kept_dependencies += 1;
                continue;
            }
            if name.is_empty() {
                problems.push(Problem::new("dependencies", "a name must not be empty"));
            }
            problems.extend(spec.check(&format!("dependencies.{}", path_key(name))));
            dependencies.insert(name.to_owned(), spec.clone());
        }
        let removed_dependencies = old
            .dependencies()
            .filter(|(n, _)| new.dependency(n).is_none())
            .map(|(n, _)| n.to_owned())
            .collect();
        let mut services = BTreeMap::new();
        let mut kept_services = 0;
        let exists = |d: &str| new.dependency(d).is_some();
        for (name, spec) in new.services() {
            let same = match (old.service(name), &spec) {
                (None, _) => false,
                (Some(Service::Spec(a)), Service::Spec(b)) => a == *b,
                (Some(Service::Every), Service::Every) => old
                    .dependencies()
                    .map(|(n, _)| n)
                    .eq(new.dependencies().map(|(n, _)| n)),
                (Some(a), b) => a.to_spec(old) == b.to_spec(new),
            };
            if let Service::Spec(s) = spec {
                // Every service, kept or not: a removed dependency may be one it relies on.
                problems.extend(s.check(name, &exists));
            }
            if same {
                kept_services += 1;
            } else {
                services.insert(name.to_owned(), spec.to_spec(new));
            }
        }
        let removed_services = old
            .services()
            .filter(|(n, _)| new.service(n).is_none())
            .map(|(n, _)| n.to_owned())
            .collect();
        problems.extend(new.parent_problems());
        if !problems.is_empty() {
            return Err(ChangeError::InvalidConfig(problems));
        }
        Ok(Plan {
            base,
            dependencies,
            removed_dependencies,
            services,
            removed_services,
            kept_dependencies,
            kept_services,
        })
    }

    /// The names this plan adds or replaces: dependencies, services.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (Vec<&str>, Vec<&str>) {
        (
            self.dependencies.keys().map(String::as_str).collect(),
            self.services.keys().map(String::as_str).collect(),
        )
    }

    /// The difference between the old configuration — each half a lookup by name and every
    /// name — and the new one (checked by the caller, `""` included).
    pub(crate) fn diff<'a>(
        base: u64,
        old_dependencies: (
            impl Fn(&str) -> Option<&'a DependencySpec>,
            impl Iterator<Item = &'a str>,
        ),
        old_services: (
            impl Fn(&str) -> Option<&'a ServiceSpec>,
            impl Iterator<Item = &'a str>,
        ),
        mut dependencies: BTreeMap<String, DependencySpec>,
        mut services: BTreeMap<String, ServiceSpec>,
    ) -> Plan {
        let removed_dependencies = (old_dependencies.1)
            .filter(|n| !dependencies.contains_key(*n))
            .map(str::to_owned)
            .collect();
        let removed_services = (old_services.1)
            .filter(|n| !services.contains_key(*n))
            .map(str::to_owned)
            .collect();
        let before = dependencies.len();
        dependencies.retain(|n, spec| (old_dependencies.0)(n) != Some(spec));
        let kept_dependencies = before - dependencies.len();
        let before = services.len();
        services.retain(|n, spec| (old_services.0)(n) != Some(spec));
        let kept_services = before - services.len();
        Plan {
            base,
            dependencies,
            removed_dependencies,
            services,
            removed_services,
            kept_dependencies,
            kept_services,
        }
    }
}

/// Whether `spec` may be put under `name`: a valid spec, a non-empty name, and (with
/// `replace`) a dependency that `exists`, else (without) one that does not.
pub(crate) fn check_put_dependency(
    name: &str,
    spec: &DependencySpec,
    exists: bool,
    replace: bool,
) -> Result<(), ChangeError> {
    let problems = spec.check(&format!("dependencies.{}", path_key(name)));
    if name.is_empty() || !problems.is_empty() {
        return Err(ChangeError::invalid(name, problems));
    }
    match (exists, replace) {
        (true, false) => Err(ChangeError::DuplicateDependency(name.to_owned())),
        (false, true) => Err(ChangeError::UnknownDependency(name.to_owned())),
        _ => Ok(()),
    }
}

/// Whether the dependency `name` may be removed: it exists and no service (of `services`,
/// each with the dependencies it references) relies on it.
pub(crate) fn check_remove_dependency<'a>(
    name: &str,
    exists: bool,
    services: impl Iterator<Item = (&'a str, Vec<&'a str>)>,
) -> Result<(), ChangeError> {
    if !exists {
        return Err(ChangeError::UnknownDependency(name.to_owned()));
    }
    let users: Vec<String> = services
        .filter(|(_, deps)| deps.contains(&name))
        .map(|(service, _)| service.to_owned())
        .collect();
    if users.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::DependencyInUse {
            dependency: name.to_owned(),
            services: users,
        })
    }
}

/// Whether `spec` may be set as service `name`: every dependency it names exists.
pub(crate) fn check_put_service(
    name: &str,
    spec: &ServiceSpec,
    dependency_exists: &dyn Fn(&str) -> bool,
) -> Result<(), ChangeError> {
    let problems = spec.check(name, dependency_exists);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ChangeError::invalid(name, problems))
    }
}

/// Whether service `name` may be removed: it exists and is not the overall service `""`.
pub(crate) fn check_remove_service(name: &str, exists: bool) -> Result<(), ChangeError> {
    if name.is_empty() {
        return Err(ChangeError::invalid(
            "",
            vec![Problem::new(
                "services.\"\"",
                "the overall service \"\" cannot be removed",
            )],
        ));
    }
    if !exists {
        return Err(ChangeError::UnknownService(name.to_owned()));
    }
    Ok(())
}

/// A runtime change was rejected; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The spec breaks the rules; every problem is listed.
    #[error("invalid change to {name:?}: {}", list(.problems))]
    Invalid {
        /// The dependency or service.
        name: String,
        /// What is wrong.
        problems: Vec<Problem>,
    },
    /// A whole configuration breaks the rules; every problem is listed.
    #[error("invalid configuration: {}", list(.0))]
    InvalidConfig(Vec<Problem>),
    /// A dependency's probe could not be built.
    #[error("dependency {dependency:?}")]
    Probe {
        /// The dependency.
        dependency: String,
        /// Why.
        #[source]
        source: BuildError,
    },
    /// Adding a dependency whose name is taken.
    #[error("dependency {0:?} already exists")]
    DuplicateDependency(String),
    /// Replacing or removing a dependency that does not exist.
    #[error("no dependency named {0:?}")]
    UnknownDependency(String),
    /// A report for a dependency that is not a push dependency.
    #[error("dependency {0:?} is not a push dependency")]
    NotPush(String),
    /// A refresh of a push dependency (nothing to probe).
    #[error("dependency {0:?} is a push dependency: nothing to probe")]
    NotProbed(String),
    /// A report without the right token.
    #[error("a valid token is required to report {0:?}")]
    Unauthenticated(String),
    /// A report of `unknown`.
    #[error("a report is healthy, degraded or unhealthy")]
    InvalidReport,
    /// An override breaks the rules (duration, health, reason).
    #[error("invalid override: {0}")]
    InvalidOverride(String),
    /// Removing a service that does not exist.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// Removing a dependency that services still rely on.
    #[error("dependency {dependency:?} is used by services {services:?}")]
    DependencyInUse {
        /// The dependency.
        dependency: String,
        /// The services that list it.
        services: Vec<String>,
    },
    /// The probe could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Shutdown began; nothing changes any more.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A [`Plan`] computed against a configuration the engine no longer runs (another change
    /// came first); nothing changed, and the whole configuration may be applied instead.
    #[error("the configuration changed while this change was prepared")]
    Stale,
}

impl ChangeError {
    pub(crate) fn invalid(name: &str, mut problems: Vec<Problem>) -> ChangeError {
        if problems.is_empty() {
            problems.push(Problem::new("", "a name must not be empty"));
        }
        ChangeError::Invalid {
            name: name.to_owned(),
            problems,
        }
    }
}

pub(crate) fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::Impact;
    use crate::probe::{Probe, ProbeContext, ProbeFuture};

    #[derive(Debug)]
    struct Idle;

    impl Probe for Idle {
        fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
            Box::pin(async { crate::Verdict::Healthy })
        }
    }

    fn spec() -> DependencySpec {
        DependencySpec::custom(Arc::new(Idle), "idle").every(Duration::from_secs(5), 0.0)
    }

    #[test]
    fn putting_a_dependency_needs_a_valid_spec_and_the_right_existence() {
        assert!(check_put_dependency("db", &spec(), false, false).is_ok());
        assert!(check_put_dependency("db", &spec(), true, true).is_ok());
        assert!(matches!(
            check_put_dependency("db", &spec(), true, false),
            Err(ChangeError::DuplicateDependency(n)) if n == "db"
        ));
        assert!(matches!(
            check_put_dependency("db", &spec(), false, true),
            Err(ChangeError::UnknownDependency(_))
        ));
        let err = check_put_dependency("", &spec(), false, false).expect_err("empty name");
        assert!(
            err.to_string().contains("a name must not be empty"),
            "{err}"
        );
        let mut slow = spec();
        slow.timeout = Duration::from_secs(10);
        let err = check_put_dependency("db", &slow, false, false).expect_err("timeout > interval");
        assert!(err.to_string().contains("dependencies.db"), "{err}");
    }

    #[test]
    fn a_dependency_in_use_cannot_be_removed_and_the_users_are_named() {
        let services =
            || [("checkout", vec!["db", "cache"]), ("search", vec!["index"])].into_iter();
        assert!(check_remove_dependency("index", true, [].into_iter()).is_ok());
        match check_remove_dependency("db", true, services()) {
            Err(ChangeError::DependencyInUse { services, .. }) => {
                assert_eq!(services, ["checkout"])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_remove_dependency("gone", false, services()),
            Err(ChangeError::UnknownDependency(_))
        ));
    }

    #[test]
    fn services_need_known_dependencies_and_the_overall_one_stays() {
        let spec = ServiceSpec::with_all(["db".to_owned()], Impact::Critical);
        assert!(check_put_service("checkout", &spec, &|d| d == "db").is_ok());
        assert!(check_put_service("checkout", &spec, &|_| false).is_err());
        assert!(check_remove_service("checkout", true).is_ok());
        assert!(matches!(
            check_remove_service("checkout", false),
            Err(ChangeError::UnknownService(_))
        ));
        let err = check_remove_service("", true).expect_err("overall service");
        assert!(err.to_string().contains("cannot be removed"), "{err}");
    }
}
