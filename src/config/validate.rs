//! Raw mirror → validated [`Config`]: every problem collected with its key path, never stopping
//! at the first.

mod grpc_spec;
mod http_spec;
mod server;
mod services;
mod tcp_spec;
mod tls_spec;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use url::Url;

use super::ListenAddr;
use super::dependency::*;
use super::error::{Problem, key};
use super::raw::*;
use super::service::{DegradedPolicy, Quorum, ServiceSpec};
use super::{AdminConfig, Config, Limits, ServerConfig, TelemetryConfig, env};
use crate::probe::grpc::GrpcSpec;
use crate::probe::http::{
    BodyCondition, BodyMatcher, DEFAULT_MAX_BODY_BYTES, HttpSpec, HttpVersion, JsonSelector,
    StatusSet,
};
use crate::probe::tcp::TcpSpec;
use crate::redact::{Secrets, url_secrets};
use crate::tls::server::{ClientAuth, ServerTlsSpec};
use crate::tls::{self, TlsSpec};
use crate::{Health, Impact};

/// Headers whose values are always secret.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Validation state: the problems so far and how to resolve environment variables and files.
pub(crate) struct Validator<'a> {
    pub(crate) problems: Vec<Problem>,
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
    /// Relative TLS file paths are resolved against this directory (the config file's).
    pub(crate) base_dir: Option<&'a Path>,
    /// The current dependency's target as written, when it used `${NAME}`.
    pub(crate) target_template: Option<String>,
    /// Dependencies that exist besides the text's (a runtime service may rely on them).
    pub(crate) known: &'a dyn Fn(&str) -> bool,
    /// The specs validated by the read before, and what it kept: an equal table takes its
    /// spec from there ([`super::Validated`]). With it, `kept` is filled for the next read.
    pub(crate) earlier: Option<(&'a BTreeMap<String, DependencySpec>, &'a super::Validated)>,
    /// Whether the current dependency's spec came from its table alone (no `${NAME}`, no file).
    pub(crate) pure: bool,
    /// With `earlier`, once the config validated: by position in the raw dependencies,
    /// whether the spec came from the table alone.
    pub(crate) kept: Option<Vec<bool>>,
}

/// The read before's tables, each with whether its spec came from the table alone.
type Tables<'a> = std::iter::Zip<
    std::collections::btree_map::Iter<'a, String, Arc<RawDependency>>,
    std::slice::Iter<'a, bool>,
>;

/// The read before's specs and tables, walked beside this read's tables: all three are in name
/// order, so each lookup is a step or two instead of a search (a 1,000-dependency reload
/// looked each name up in three maps, a fifth of validating it: `perf`).
struct Before<'a> {
    specs: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, DependencySpec>>,
    tables: std::iter::Peekable<Tables<'a>>,
}

impl<'a> Before<'a> {
    fn new(specs: &'a BTreeMap<String, DependencySpec>, kept: &'a super::Validated) -> Before<'a> {
        Before {
            specs: specs.iter().peekable(),
            tables: kept.raw.dependencies.iter().zip(&kept.pure).peekable(),
        }
    }

    /// The spec the read before validated from a table equal to `raw`, if it kept one.
    /// Names must come in order.
    fn spec(&mut self, name: &str, raw: &Arc<RawDependency>) -> Option<DependencySpec> {
        while self
            .tables
            .next_if(|((k, _), _)| k.as_str() < name)
            .is_some()
        {}
        let ((_, table), pure) = self.tables.next_if(|((k, _), _)| k.as_str() == name)?;
        // A table the read took from the read before is the same one.
        if !*pure || !(Arc::ptr_eq(table, raw) || table == raw) {
            return None;
        }
        while self.specs.next_if(|(k, _)| k.as_str() < name).is_some() {}
        self.specs
            .next_if(|(k, _)| k.as_str() == name)
            .map(|(_, spec)| spec.clone())
    }
}

/// A key path `PARENT.KEY`, formatted only when a problem names it: a dependency's settings
/// are mostly valid, and formatting each one's path up front was 7 % of validating a
/// 1,000-dependency file (`perf`, `config validate`), work a reload repeats every time.
pub(super) struct At<'a, P: ?Sized>(pub(super) &'a P, pub(super) &'static str);

impl<P: std::fmt::Display + ?Sized> std::fmt::Display for At<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub(crate) fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let server = self.server(&raw.server);
        // In name order, collected at once (a sorted map is then built, not searched).
        let mut dependencies = Vec::with_capacity(raw.dependencies.len());
        // By position in `raw.dependencies`: whether the spec came from the table alone.
        let mut pure = Vec::with_capacity(raw.dependencies.len());
        // The read before applies only under the same `[defaults]`.
        let mut before = (self.earlier)
            .filter(|(_, kept)| kept.raw.defaults == raw.defaults)
            .map(|(specs, kept)| Before::new(specs, kept));
        for (name, dep) in &raw.dependencies {
            if let Some(spec) = before.as_mut().and_then(|b| b.spec(name, dep)) {
                pure.push(true);
                dependencies.push((name.clone(), spec));
                continue;
            }
            let path = format!("dependencies.{}", key(name));
            if name.is_empty() {
                self.problem(&path, "a dependency name must not be empty");
            }
            self.pure = true;
            let spec = self.dependency(&path, dep, &raw.defaults);
            pure.push(self.pure && spec.is_some());
            if let Some(spec) = spec {
                dependencies.push((name.clone(), spec));
            }
        }
        let dependencies: BTreeMap<String, DependencySpec> = dependencies.into_iter().collect();
        {
            let failed = |d: &str| raw.dependencies.contains_key(d) || (self.known)(d);
            let problems = super::dependency::parent_problems(&dependencies, &failed);
            self.problems.extend(problems);
        }
        let mut services = BTreeMap::new();
        for (name, svc) in &raw.services {
            if let Some(spec) = self.service(name, svc) {
                services.insert(name.clone(), spec);
            }
        }
        for (name, spec) in &services {
            // Skip references to dependencies that failed validation: they were reported already.
            let exists = |d: &str| {
                dependencies.contains_key(d) || raw.dependencies.contains_key(d) || (self.known)(d)
            };
            self.problems.extend(spec.check(name, &exists));
        }
        // `""` is the whole server; when not configured it relies on every dependency (all
        // of them exist: nothing to check).
        services.entry(String::new()).or_insert_with(|| {
            ServiceSpec::with_all(dependencies.keys().cloned(), Impact::Critical)
        });
        let telemetry = self.telemetry(&raw.telemetry);
        let limits = self.limits(&raw.limits);
        let mut admin = AdminConfig::default();
        if let Some(token) = &raw.admin.token
            && let Some(token) = self.expand("admin.token", token, &mut Vec::new())
        {
            if token.len() < 16 {
                self.problem(
                    "admin.token",
                    "must be at least 16 characters (it grants every change)",
                );
            }
            admin.token = Some(token);
        }
        admin.allowed_identities = self.identities(
            "admin.allowed_identities",
            raw.admin.allowed_identities.as_deref(),
        );
        if let Some(server) = &server {
            let verifies_clients = [&server.grpc_tls, &server.http_tls]
                .into_iter()
                .flatten()
                .any(|t| t.client_auth != ClientAuth::None);
            for (key, ids) in [
                ("admin.allowed_identities", &admin.allowed_identities),
                ("server.detail_identities", &server.detail_identities),
            ] {
                if !ids.is_empty() && !verifies_clients {
                    self.problem(
                        key,
                        "identities come from client certificates: set client_ca_file in [server.grpc_tls] or [server.http_tls]",
                    );
                }
            }
        }
        if self.problems.is_empty() && self.earlier.is_some() {
            self.kept = Some(pure);
        }
        (self.problems.is_empty()).then(|| Config {
            server: server.unwrap_or_default(),
            dependencies,
            services,
            telemetry,
            limits,
            admin,
        })
    }

    fn duration(
        &mut self,
        path: &(impl std::fmt::Display + ?Sized),
        raw: Option<&str>,
    ) -> Option<Duration> {
        let raw = raw?;
        match humantime::parse_duration(raw) {
            Ok(d) if d <= MAX_DURATION => Some(d),
            Ok(_) => {
                self.problem(
                    path.to_string(),
                    format!("duration {raw:?} is too long: at most 365days"),
                );
                None
            }
            Err(e) => {
                self.problem(path.to_string(), format!("invalid duration {raw:?}: {e}"));
                None
            }
        }
    }

    /// An integer setting within `min..=max` (the range is stated in the problem).
    fn number<T>(
        &mut self,
        path: &(impl std::fmt::Display + ?Sized),
        raw: Option<i64>,
        min: T,
        max: T,
    ) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display,
    {
        let raw = raw?;
        match T::try_from(raw) {
            Ok(v) if min <= v && v <= max => Some(v),
            _ => {
                self.problem(
                    path.to_string(),
                    format!("{raw} must be between {min} and {max}"),
                );
                None
            }
        }
    }

    fn expand(
        &mut self,
        path: &(impl std::fmt::Display + ?Sized),
        raw: &str,
        secrets: &mut Vec<String>,
    ) -> Option<String> {
        match env::expand(raw, self.env) {
            Ok(e) => {
                if !e.from_env.is_empty() {
                    self.pure = false;
                }
                secrets.extend(e.from_env);
                Some(e.text)
            }
            Err(e) => {
                self.problem(path.to_string(), e);
                None
            }
        }
    }

    fn dependency(
        &mut self,
        path: &str,
        raw: &RawDependency,
        defaults: &RawDefaults,
    ) -> Option<DependencySpec> {
        let before = self.problems.len();
        let mut secrets = Vec::new();
        self.target_template = None;
        let kind = raw.kind.as_deref();
        self.only_for(path, kind, raw);
        if kind == Some("push") {
            return self.push(path, raw);
        }
        let probe = match kind {
            Some("http") => self
                .http(path, raw, &mut secrets)
                .map(|s| ProbeSpec::Http(Arc::new(s))),
            Some("grpc") => self
                .grpc(path, raw, &mut secrets)
                .map(|s| ProbeSpec::Grpc(Arc::new(s))),
            Some("tcp") => self.tcp(path, raw, &mut secrets).map(ProbeSpec::Tcp),
            Some(other) => {
                self.problem(
                    format!("{path}.kind"),
                    format!(
                        "unknown kind {other:?}: expected \"http\", \"grpc\", \"tcp\" or \"push\""
                    ),
                );
                None
            }
            None => {
                self.problem(
                    path,
                    "missing key `kind` (\"http\", \"grpc\", \"tcp\" or \"push\")",
                );
                None
            }
        };
        let d = |own: &Option<String>, def: &Option<String>| own.clone().or_else(|| def.clone());
        let before_timing = self.problems.len();
        let interval = self.duration(
            &At(path, "interval"),
            d(&raw.interval, &defaults.interval).as_deref(),
        );
        let timeout = self.duration(
            &At(path, "timeout"),
            d(&raw.timeout, &defaults.timeout).as_deref(),
        );
        let degraded_after = self.duration(
            &At(path, "degraded_after"),
            d(&raw.degraded_after, &defaults.degraded_after).as_deref(),
        );
        let stale_after = self.duration(&At(path, "stale_after"), raw.stale_after.as_deref());
        let fall = self.number(&At(path, "fall"), raw.fall.or(defaults.fall), 1, MAX_STREAK);
        let rise = self.number(&At(path, "rise"), raw.rise.or(defaults.rise), 1, MAX_STREAK);
        let jitter = raw.jitter.or(defaults.jitter).unwrap_or(DEFAULT_JITTER);
        // Cross-field rules compare parsed values; with a value that did not parse they would
        // only report the default standing in for it.
        let timing_parsed = self.problems.len() == before_timing;
        let interval = interval.unwrap_or(DEFAULT_INTERVAL);
        let mode = match raw.mode.as_deref() {
            None | Some("background") => Mode::Background { interval, jitter },
            Some("on_demand") => {
                let ttl = self
                    .duration(&At(path, "ttl"), raw.ttl.as_deref())
                    .unwrap_or(interval);
                let failure_ttl = self
                    .duration(&At(path, "failure_ttl"), raw.failure_ttl.as_deref())
                    .unwrap_or_else(|| ttl.min(Duration::from_secs(1)));
                let max_failure_ttl = self
                    .duration(&At(path, "max_failure_ttl"), raw.max_failure_ttl.as_deref())
                    .unwrap_or_else(|| ttl.max(Duration::from_secs(30)));
                Mode::OnDemand(OnDemand {
                    ttl,
                    failure_ttl,
                    max_failure_ttl,
                })
            }
            Some("watch") if matches!(probe, Some(ProbeSpec::Grpc(_)) | None) => {
                Mode::Watch { interval }
            }
            Some("watch") => {
                self.problem(
                    format!("{path}.mode"),
                    "\"watch\" is only valid for kind = \"grpc\" (it holds a grpc.health.v1 Watch stream)",
                );
                Mode::Background { interval, jitter }
            }
            Some(other) => {
                self.problem(
                    format!("{path}.mode"),
                    format!(
                        "unknown mode {other:?}: expected \"background\", \"on_demand\" or \"watch\" (grpc)"
                    ),
                );
                Mode::Background { interval, jitter }
            }
        };
        // The timing rules are checked even when the probe part is invalid, so one pass
        // reports everything; a stand-in probe carries them when the real one failed.
        let valid_probe = probe.is_some();
        let mut spec = DependencySpec::new(probe.unwrap_or_else(|| {
            ProbeSpec::Tcp(TcpSpec {
                address: String::new(),
                tls: None,
            })
        }));
        spec.mode = mode;
        spec.timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        spec.fall = fall.unwrap_or(DEFAULT_FALL);
        spec.rise = rise.unwrap_or(DEFAULT_RISE);
        spec.degraded_after = degraded_after;
        spec.stale_after = stale_after.unwrap_or_else(|| spec.default_stale_after());
        spec.secrets = Secrets::new(secrets);
        spec.target_template = self.target_template.take();
        spec.parents = raw.parents.clone().unwrap_or_default();
        if timing_parsed {
            self.problems.extend(spec.check(path));
        }
        if !valid_probe {
            return None;
        }
        (self.problems.len() == before).then_some(spec)
    }

    /// A push dependency: `ttl` (required), `token`, `fall`, `rise` (1 and 1 unless set here:
    /// `[defaults]` are about probing); nothing about probing.
    fn push(&mut self, path: &str, raw: &RawDependency) -> Option<DependencySpec> {
        let before = self.problems.len();
        for (name, set) in [
            ("mode", raw.mode.is_some()),
            ("interval", raw.interval.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("jitter", raw.jitter.is_some()),
            ("degraded_after", raw.degraded_after.is_some()),
            ("stale_after", raw.stale_after.is_some()),
            ("failure_ttl", raw.failure_ttl.is_some()),
            ("max_failure_ttl", raw.max_failure_ttl.is_some()),
            ("tls", raw.tls.is_some()),
        ] {
            if set {
                let why = if name == "stale_after" {
                    "not used with kind = \"push\" (it expires at its ttl)"
                } else {
                    "not used with kind = \"push\" (nothing is probed)"
                };
                self.problem(format!("{path}.{name}"), why);
            }
        }
        let ttl = match raw.ttl.as_deref() {
            Some(ttl) => self.duration(&At(path, "ttl"), Some(ttl)),
            None => {
                self.problem(
                    path,
                    "missing key `ttl` (how long a report holds, e.g. \"26h\")",
                );
                None
            }
        };
        let mut secrets = Vec::new();
        let token = raw
            .token
            .as_deref()
            .and_then(|t| self.expand(&At(path, "token"), t, &mut secrets))
            .inspect(|t| secrets.push(t.clone()));
        if raw.token.is_some() && token.as_deref().is_some_and(str::is_empty) {
            self.problem(format!("{path}.token"), "must not be empty");
        }
        let fall = self.number(&At(path, "fall"), raw.fall, 1, MAX_STREAK);
        let rise = self.number(&At(path, "rise"), raw.rise, 1, MAX_STREAK);
        let mut spec = DependencySpec::push(ttl?, token);
        spec.fall = fall.unwrap_or(1);
        spec.rise = rise.unwrap_or(1);
        spec.secrets = Secrets::new(secrets);
        self.problems.extend(spec.check(path));
        (self.problems.len() == before).then_some(spec)
    }

    /// Reports keys that do not belong to the dependency's kind or mode.
    fn only_for(&mut self, path: &str, kind: Option<&str>, raw: &RawDependency) {
        if let Some(kind) = kind.filter(|k| KINDS.contains(k)) {
            for (owner, name, _) in raw
                .kind_keys()
                .iter()
                .filter(|(o, _, set)| *set && *o != kind)
            {
                self.problem(
                    format!("{path}.{name}"),
                    format!("only valid for kind = \"{owner}\""),
                );
            }
        }
        let on_demand = raw.mode.as_deref() == Some("on_demand");
        let push = kind == Some("push");
        for (name, set) in [
            ("ttl", raw.ttl.is_some()),
            ("failure_ttl", raw.failure_ttl.is_some()),
            ("max_failure_ttl", raw.max_failure_ttl.is_some()),
        ] {
            if set && !on_demand && !(push && name == "ttl") {
                self.problem(
                    format!("{path}.{name}"),
                    "only valid with mode = \"on_demand\"",
                );
            }
        }
        for (name, set) in [
            ("interval", raw.interval.is_some()),
            ("jitter", raw.jitter.is_some()),
        ] {
            if set && on_demand {
                self.problem(
                    format!("{path}.{name}"),
                    "not used with mode = \"on_demand\" (set ttl)",
                );
            }
        }
    }

    fn url(
        &mut self,
        path: &str,
        raw: Option<&str>,
        what: &str,
        secrets: &mut Vec<String>,
    ) -> Option<Url> {
        let Some(raw) = raw else {
            self.problem(
                path.rsplit_once('.').map_or(path, |p| p.0),
                format!("missing key `{what}`"),
            );
            return None;
        };
        let before = secrets.len();
        let text = self.expand(path, raw, secrets)?;
        if secrets.len() > before {
            self.target_template = Some(raw.to_owned());
        }
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                secrets.extend(url_secrets(&url));
                Some(url)
            }
            // Never echo the URL: it may hold credentials.
            Ok(_) => {
                self.problem(path, "must be an http:// or https:// URL with a host");
                None
            }
            Err(e) => {
                self.problem(path, format!("invalid URL: {e}"));
                None
            }
        }
    }

    fn read_file(&mut self, path: &str, file: &str) -> Option<Vec<u8>> {
        self.pure = false;
        let full = match self.base_dir {
            Some(dir) => dir.join(file),
            None => Path::new(file).to_path_buf(),
        };
        std::fs::read(&full)
            .map_err(|e| self.problem(path, format!("cannot read {}: {e}", full.display())))
            .ok()
    }
}

fn lowercase_all(names: Option<&[String]>) -> Vec<String> {
    names
        .unwrap_or_default()
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}
