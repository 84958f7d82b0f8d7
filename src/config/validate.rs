//! Raw mirror → validated [`Config`]: every problem collected with its key path, never stopping
//! at the first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use url::Url;

use super::dependency::*;
use super::error::{Problem, key};
use super::raw::*;
use super::service::{DegradedPolicy, Quorum, ServiceSpec};
use super::{Config, Limits, ServerConfig, TelemetryConfig, env};
use crate::probe::grpc::GrpcSpec;
use crate::probe::http::{
    BodyCondition, BodyMatcher, DEFAULT_MAX_BODY_BYTES, HttpSpec, HttpVersion, JsonSelector,
    StatusSet,
};
use crate::probe::tcp::TcpSpec;
use crate::redact::{Secrets, url_secrets};
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
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    pub(crate) fn config(&mut self, raw: RawConfig) -> Option<Config> {
        let server = self.server(&raw.server);
        let mut dependencies = BTreeMap::new();
        for (name, dep) in &raw.dependencies {
            let path = format!("dependencies.{}", key(name));
            if name.is_empty() {
                self.problem(&path, "a dependency name must not be empty");
            }
            if let Some(spec) = self.dependency(&path, dep, &raw.defaults) {
                dependencies.insert(name.clone(), spec);
            }
        }
        let mut services = BTreeMap::new();
        for (name, svc) in &raw.services {
            if let Some(spec) = self.service(name, svc) {
                services.insert(name.clone(), spec);
            }
        }
        // `""` is the whole server; when not configured it relies on every dependency.
        services.entry(String::new()).or_insert_with(|| {
            ServiceSpec::with_all(dependencies.keys().cloned(), Impact::Critical)
        });
        for (name, spec) in &services {
            // Skip references to dependencies that failed validation: they were reported already.
            let exists = |d: &str| dependencies.contains_key(d) || raw.dependencies.contains_key(d);
            self.problems.extend(spec.check(name, &exists));
        }
        let telemetry = self.telemetry(&raw.telemetry);
        let limits = self.limits(&raw.limits);
        (self.problems.is_empty()).then(|| Config {
            server: server.unwrap_or_default(),
            dependencies,
            services,
            telemetry,
            limits,
        })
    }

    fn server(&mut self, raw: &RawServer) -> Option<ServerConfig> {
        let mut server = ServerConfig::default();
        if let Some(listen) = &raw.grpc_listen {
            match listen.parse::<SocketAddr>() {
                Ok(addr) => server.grpc_listen = addr,
                Err(_) => self.problem(
                    "server.grpc_listen",
                    format!("invalid address {listen:?}: expected IP:PORT, e.g. \"0.0.0.0:50051\""),
                ),
            }
        }
        if let Some(listen) = &raw.http_listen {
            match listen.parse::<SocketAddr>() {
                Ok(addr) => server.http_listen = Some(addr),
                Err(_) => self.problem(
                    "server.http_listen",
                    format!("invalid address {listen:?}: expected IP:PORT, e.g. \"0.0.0.0:9464\""),
                ),
            }
        }
        if let Some(d) = self.duration("server.drain_delay", raw.drain_delay.as_deref()) {
            server.drain_delay = d;
        }
        if let Some(d) = self.duration("server.drain_timeout", raw.drain_timeout.as_deref()) {
            server.drain_timeout = d;
        }
        if let Some(token) = &raw.detail_token {
            let token = self.expand("server.detail_token", token, &mut Vec::new())?;
            if token.is_empty() {
                self.problem(
                    "server.detail_token",
                    "must not be empty (omit it to allow anyone)",
                );
            }
            server.detail_token = Some(token);
        }
        Some(server)
    }

    fn telemetry(&mut self, raw: &RawTelemetry) -> TelemetryConfig {
        let mut t = TelemetryConfig::default();
        if let Some(endpoint) = &raw.otlp_endpoint {
            match Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    t.otlp_endpoint = Some(endpoint.clone())
                }
                // Not echoed: it may carry user info.
                _ => self.problem(
                    "telemetry.otlp_endpoint",
                    "invalid endpoint: expected http(s)://host:port",
                ),
            }
        }
        t.service_name = raw.service_name.clone();
        if let Some(ratio) = raw.sample_ratio {
            if (0.0..=1.0).contains(&ratio) {
                t.sample_ratio = Some(ratio);
            } else {
                self.problem(
                    "telemetry.sample_ratio",
                    format!("{ratio} must be between 0 and 1"),
                );
            }
        }
        if let Some(d) = self.duration("telemetry.export_timeout", raw.export_timeout.as_deref()) {
            t.export_timeout = d;
        }
        if let Some(n) = self.number("telemetry.queue_size", raw.queue_size, 1, 1_000_000) {
            t.queue_size = n;
        }
        t
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let mut limits = Limits::default();
        let key = "limits.max_connections";
        if let Some(n) = self.number(key, raw.max_connections, 1, 1_000_000) {
            limits.max_connections = n;
        }
        let key = "limits.max_concurrent_streams";
        if let Some(n) = self.number(key, raw.max_concurrent_streams, 1, 10_000) {
            limits.max_concurrent_streams = n;
        }
        let ranged = |v: &mut Self, key: &str, raw: Option<&str>, min: Duration, max: Duration| {
            let d = v.duration(key, raw)?;
            if (min..=max).contains(&d) {
                Some(d)
            } else {
                v.problem(
                    key,
                    format!(
                        "{} must be between {} and {}",
                        humantime::format_duration(d),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
        };
        if let Some(d) = ranged(
            self,
            "limits.first_request_timeout",
            raw.first_request_timeout.as_deref(),
            Duration::from_millis(100),
            Duration::from_secs(300),
        ) {
            limits.first_request_timeout = d;
        }
        if let Some(d) = ranged(
            self,
            "limits.idle_timeout",
            raw.idle_timeout.as_deref(),
            Duration::from_secs(1),
            Duration::from_secs(24 * 60 * 60),
        ) {
            limits.idle_timeout = d;
        }
        limits
    }

    fn duration(&mut self, path: &str, raw: Option<&str>) -> Option<Duration> {
        let raw = raw?;
        match humantime::parse_duration(raw) {
            Ok(d) if d <= MAX_DURATION => Some(d),
            Ok(_) => {
                self.problem(
                    path,
                    format!("duration {raw:?} is too long: at most 365days"),
                );
                None
            }
            Err(e) => {
                self.problem(path, format!("invalid duration {raw:?}: {e}"));
                None
            }
        }
    }

    /// An integer setting within `min..=max` (the range is stated in the problem).
    fn number<T>(&mut self, path: &str, raw: Option<i64>, min: T, max: T) -> Option<T>
    where
        T: TryFrom<i64> + PartialOrd + std::fmt::Display,
    {
        let raw = raw?;
        match T::try_from(raw) {
            Ok(v) if min <= v && v <= max => Some(v),
            _ => {
                self.problem(path, format!("{raw} must be between {min} and {max}"));
                None
            }
        }
    }

    fn expand(&mut self, path: &str, raw: &str, secrets: &mut Vec<String>) -> Option<String> {
        match env::expand(raw, self.env) {
            Ok(e) => {
                secrets.extend(e.from_env);
                Some(e.text)
            }
            Err(e) => {
                self.problem(path, e);
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
        let probe = match kind {
            Some("http") => self
                .http(path, raw, &mut secrets)
                .map(|s| ProbeSpec::Http(Box::new(s))),
            Some("grpc") => self
                .grpc(path, raw, &mut secrets)
                .map(|s| ProbeSpec::Grpc(Box::new(s))),
            Some("tcp") => self.tcp(path, raw, &mut secrets).map(ProbeSpec::Tcp),
            Some(other) => {
                self.problem(
                    format!("{path}.kind"),
                    format!("unknown kind {other:?}: expected \"http\", \"grpc\" or \"tcp\""),
                );
                None
            }
            None => {
                self.problem(path, "missing key `kind` (\"http\", \"grpc\" or \"tcp\")");
                None
            }
        };
        let d = |own: &Option<String>, def: &Option<String>| own.clone().or_else(|| def.clone());
        let before_timing = self.problems.len();
        let interval = self.duration(
            &format!("{path}.interval"),
            d(&raw.interval, &defaults.interval).as_deref(),
        );
        let timeout = self.duration(
            &format!("{path}.timeout"),
            d(&raw.timeout, &defaults.timeout).as_deref(),
        );
        let degraded_after = self.duration(
            &format!("{path}.degraded_after"),
            d(&raw.degraded_after, &defaults.degraded_after).as_deref(),
        );
        let stale_after = self.duration(&format!("{path}.stale_after"), raw.stale_after.as_deref());
        let fall = self.number(
            &format!("{path}.fall"),
            raw.fall.or(defaults.fall),
            1,
            MAX_STREAK,
        );
        let rise = self.number(
            &format!("{path}.rise"),
            raw.rise.or(defaults.rise),
            1,
            MAX_STREAK,
        );
        let jitter = raw.jitter.or(defaults.jitter).unwrap_or(DEFAULT_JITTER);
        // Cross-field rules compare parsed values; with a value that did not parse they would
        // only report the default standing in for it.
        let timing_parsed = self.problems.len() == before_timing;
        let interval = interval.unwrap_or(DEFAULT_INTERVAL);
        let mode = match raw.mode.as_deref() {
            None | Some("background") => Mode::Background { interval, jitter },
            Some("on_demand") => {
                let ttl = self
                    .duration(&format!("{path}.ttl"), raw.ttl.as_deref())
                    .unwrap_or(interval);
                let failure_ttl = self
                    .duration(&format!("{path}.failure_ttl"), raw.failure_ttl.as_deref())
                    .unwrap_or_else(|| ttl.min(Duration::from_secs(1)));
                let max_failure_ttl = self
                    .duration(
                        &format!("{path}.max_failure_ttl"),
                        raw.max_failure_ttl.as_deref(),
                    )
                    .unwrap_or_else(|| ttl.max(Duration::from_secs(30)));
                Mode::OnDemand(OnDemand {
                    ttl,
                    failure_ttl,
                    max_failure_ttl,
                })
            }
            Some(other) => {
                self.problem(
                    format!("{path}.mode"),
                    format!("unknown mode {other:?}: expected \"background\" or \"on_demand\""),
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
        if timing_parsed {
            self.problems.extend(spec.check(path));
        }
        if !valid_probe {
            return None;
        }
        (self.problems.len() == before).then_some(spec)
    }

    /// Reports keys that do not belong to the dependency's kind or mode.
    fn only_for(&mut self, path: &str, kind: Option<&str>, raw: &RawDependency) {
        let http = [
            ("url", raw.url.is_some()),
            ("method", raw.method.is_some()),
            ("headers", raw.headers.is_some()),
            ("secret_headers", raw.secret_headers.is_some()),
            ("expected_statuses", raw.expected_statuses.is_some()),
            ("degraded_statuses", raw.degraded_statuses.is_some()),
            ("body", raw.body.is_some()),
            ("max_body_bytes", raw.max_body_bytes.is_some()),
            ("follow_redirects", raw.follow_redirects.is_some()),
            ("http_version", raw.http_version.is_some()),
            ("keep_alive", raw.keep_alive.is_some()),
        ];
        let grpc = [
            ("target", raw.target.is_some()),
            ("service", raw.service.is_some()),
            ("authority", raw.authority.is_some()),
            ("metadata", raw.metadata.is_some()),
            ("secret_metadata", raw.secret_metadata.is_some()),
        ];
        let tcp = [("address", raw.address.is_some())];
        for (kinds, keys) in [("http", &http[..]), ("grpc", &grpc[..]), ("tcp", &tcp[..])] {
            if kind.is_some_and(|k| k != kinds && ["http", "grpc", "tcp"].contains(&k)) {
                for (name, _) in keys.iter().filter(|(_, set)| *set) {
                    self.problem(
                        format!("{path}.{name}"),
                        format!("only valid for kind = \"{kinds}\""),
                    );
                }
            }
        }
        if kind == Some("tcp") && raw.tls.is_some() {
            self.problem(
                format!("{path}.tls"),
                "only valid for kind = \"http\" or \"grpc\"",
            );
        }
        let on_demand = raw.mode.as_deref() == Some("on_demand");
        for (name, set) in [
            ("ttl", raw.ttl.is_some()),
            ("failure_ttl", raw.failure_ttl.is_some()),
            ("max_failure_ttl", raw.max_failure_ttl.is_some()),
        ] {
            if set && !on_demand {
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

    fn http(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<HttpSpec> {
        let url = self.url(&format!("{path}.url"), raw.url.as_deref(), "url", secrets);
        let method = match raw.method.as_deref() {
            None => Some(http::Method::GET),
            Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    self.problem(format!("{path}.method"), format!("invalid method {m:?}"));
                    None
                }
            },
        };
        let secret_names = lowercase_all(raw.secret_headers.as_deref());
        let mut headers = HeaderMap::new();
        for (name, value) in raw.headers.iter().flatten() {
            let hpath = format!("{path}.headers.{}", key(name));
            let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
                self.problem(&hpath, "invalid header name");
                continue;
            };
            let before = secrets.len();
            let Some(text) = self.expand(&hpath, value, secrets) else {
                continue;
            };
            let secret = secrets.len() > before
                || SECRET_HEADERS.contains(&hname.as_str())
                || secret_names.iter().any(|s| s == hname.as_str());
            match HeaderValue::from_str(&text) {
                Ok(mut v) => {
                    if secret {
                        v.set_sensitive(true);
                        secrets.push(text);
                    }
                    headers.append(hname, v);
                }
                Err(_) => self.problem(&hpath, "invalid header value (control characters?)"),
            }
        }
        let expected_statuses = self.statuses(
            &format!("{path}.expected_statuses"),
            raw.expected_statuses.as_deref(),
        );
        let degraded_statuses = self.statuses(
            &format!("{path}.degraded_statuses"),
            raw.degraded_statuses.as_deref(),
        );
        let body = self.body(path, raw.body.as_deref());
        let max_body_bytes = match raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) if (1..=64 * 1024 * 1024).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    format!("{path}.max_body_bytes"),
                    format!("{n} must be between 1 and 67108864 (64 MiB)"),
                );
                DEFAULT_MAX_BODY_BYTES
            }
        };
        let version = match raw.http_version.as_deref() {
            None | Some("auto") => HttpVersion::Auto,
            Some("1.1") => HttpVersion::Http1,
            Some("2") => HttpVersion::Http2,
            Some(other) => {
                self.problem(
                    format!("{path}.http_version"),
                    format!("unknown version {other:?}: expected \"auto\", \"1.1\" or \"2\""),
                );
                HttpVersion::Auto
            }
        };
        let tls = self.tls(&format!("{path}.tls"), raw.tls.as_ref());
        let url = url?;
        if raw.tls.is_some() && url.scheme() != "https" {
            self.problem(format!("{path}.tls"), "has no effect on an http:// url");
        }
        Some(HttpSpec {
            url,
            method: method?,
            headers,
            expected_statuses: expected_statuses?.unwrap_or_else(StatusSet::success),
            degraded_statuses: degraded_statuses?.unwrap_or_default(),
            body: body?,
            max_body_bytes,
            follow_redirects: raw.follow_redirects.unwrap_or(false),
            tls: tls?,
            version,
            keep_alive: raw.keep_alive.unwrap_or(true),
        })
    }

    /// Status lists: numbers (`503`) and ranges (`"200-299"`).
    fn statuses(&mut self, path: &str, raw: Option<&[toml::Value]>) -> Option<Option<StatusSet>> {
        let Some(raw) = raw else { return Some(None) };
        let mut set = Vec::new();
        let mut ok = true;
        for (i, v) in raw.iter().enumerate() {
            let range = match v {
                toml::Value::Integer(n) => u16::try_from(*n).ok().map(|n| n..=n),
                toml::Value::String(s) => s.split_once('-').and_then(|(a, b)| {
                    Some(a.trim().parse::<u16>().ok()?..=b.trim().parse::<u16>().ok()?)
                }),
                _ => None,
            };
            match range {
                Some(r)
                    if (100..=599).contains(r.start())
                        && (100..=599).contains(r.end())
                        && r.start() <= r.end() =>
                {
                    set.push(r)
                }
                _ => {
                    ok = false;
                    self.problem(format!("{path}[{i}]"), format!("invalid status {v}: expected a code 100-599 or a range like \"200-299\""));
                }
            }
        }
        ok.then_some(Some(StatusSet(set)))
    }

    fn body(&mut self, path: &str, raw: Option<&[RawBodyCondition]>) -> Option<Vec<BodyCondition>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, c) in raw.unwrap_or_default().iter().enumerate() {
            let cpath = format!("{path}.body[{i}]");
            let on_mismatch = match c.on_mismatch.as_deref() {
                None | Some("unhealthy") => Health::Unhealthy,
                Some("degraded") => Health::Degraded,
                Some(other) => {
                    ok = false;
                    self.problem(
                        format!("{cpath}.on_mismatch"),
                        format!("unknown value {other:?}: expected \"unhealthy\" or \"degraded\""),
                    );
                    continue;
                }
            };
            let matcher = match (&c.contains, &c.json, &c.equals) {
                (Some(text), None, None) => BodyMatcher::Contains(text.clone()),
                (None, Some(sel), Some(equals)) => {
                    let selector = if sel.starts_with('/') || sel.is_empty() {
                        JsonSelector::Pointer(sel.clone())
                    } else {
                        match serde_json_path::JsonPath::parse(sel) {
                            Ok(p) => JsonSelector::Path(p),
                            Err(e) => {
                                ok = false;
                                self.problem(
                                    format!("{cpath}.json"),
                                    format!("invalid JSONPath {sel:?}: {e}"),
                                );
                                continue;
                            }
                        }
                    };
                    let equals = serde_json::to_value(equals).unwrap_or(serde_json::Value::Null);
                    BodyMatcher::Json { selector, equals }
                }
                _ => {
                    ok = false;
                    self.problem(&cpath, "expected either `contains = \"text\"` or `json = \"$.path\"` with `equals = value`");
                    continue;
                }
            };
            out.push(BodyCondition {
                matcher,
                on_mismatch,
            });
        }
        ok.then_some(out)
    }

    fn tls(&mut self, path: &str, raw: Option<&RawTls>) -> Option<TlsSpec> {
        let Some(raw) = raw else {
            return Some(TlsSpec::default());
        };
        let before = self.problems.len();
        let ca_pem = raw.ca_file.as_deref().and_then(|f| {
            let pem = self.read_file(&format!("{path}.ca_file"), f)?;
            tls::parse_certs(&pem)
                .map_err(|e| self.problem(format!("{path}.ca_file"), format!("{f}: {e}")))
                .ok()?;
            Some(pem)
        });
        let identity_pem = match (&raw.cert_file, &raw.key_file) {
            (None, None) => None,
            (Some(cert), Some(key_file)) => {
                let cert_pem = self
                    .read_file(&format!("{path}.cert_file"), cert)
                    .and_then(|pem| {
                        tls::parse_certs(&pem)
                            .map_err(|e| {
                                self.problem(format!("{path}.cert_file"), format!("{cert}: {e}"))
                            })
                            .ok()?;
                        Some(pem)
                    });
                let key_pem = self
                    .read_file(&format!("{path}.key_file"), key_file)
                    .and_then(|pem| {
                        tls::check_key(&pem)
                            .map_err(|e| {
                                self.problem(format!("{path}.key_file"), format!("{key_file}: {e}"))
                            })
                            .ok()?;
                        Some(pem)
                    });
                cert_pem.zip(key_pem)
            }
            _ => {
                self.problem(path, "cert_file and key_file must be set together");
                None
            }
        };
        let insecure = raw.insecure.unwrap_or(false);
        if insecure && raw.ca_file.is_some() {
            self.problem(path, "insecure = true and ca_file contradict each other: a CA is pointless when nothing is verified");
        }
        (self.problems.len() == before).then(|| TlsSpec {
            ca_pem,
            identity_pem,
            server_name: raw.server_name.clone(),
            insecure,
        })
    }

    fn read_file(&mut self, path: &str, file: &str) -> Option<Vec<u8>> {
        let full = match self.base_dir {
            Some(dir) => dir.join(file),
            None => Path::new(file).to_path_buf(),
        };
        std::fs::read(&full)
            .map_err(|e| self.problem(path, format!("cannot read {}: {e}", full.display())))
            .ok()
    }

    fn grpc(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<GrpcSpec> {
        let target = self.url(
            &format!("{path}.target"),
            raw.target.as_deref(),
            "target",
            secrets,
        );
        if let Some(t) = &target
            && (t.path() != "/" || t.query().is_some())
        {
            self.problem(format!("{path}.target"), "must be scheme://host:port without a path or query; set the health service name with `service`");
        }
        let secret_names = lowercase_all(raw.secret_metadata.as_deref());
        let mut metadata = MetadataMap::new();
        let mut secret_metadata = Vec::new();
        for (name, value) in raw.metadata.iter().flatten() {
            let mpath = format!("{path}.metadata.{}", key(name));
            let lname = name.to_ascii_lowercase();
            let Ok(mkey) = MetadataKey::from_bytes(lname.as_bytes()) else {
                self.problem(
                    &mpath,
                    "invalid metadata key (lowercase ASCII; binary `-bin` keys are not supported)",
                );
                continue;
            };
            let before = secrets.len();
            let Some(text) = self.expand(&mpath, value, secrets) else {
                continue;
            };
            match MetadataValue::try_from(text.as_str()) {
                Ok(v) => {
                    if secrets.len() > before
                        || SECRET_HEADERS.contains(&lname.as_str())
                        || secret_names.contains(&lname)
                    {
                        secrets.push(text);
                        secret_metadata.push(lname);
                    }
                    metadata.append(mkey, v);
                }
                Err(_) => self.problem(&mpath, "invalid metadata value"),
            }
        }
        let tls = self.tls(&format!("{path}.tls"), raw.tls.as_ref());
        let target = target?;
        if raw.tls.is_some() && target.scheme() != "https" {
            self.problem(format!("{path}.tls"), "has no effect on an http:// target");
        }
        Some(GrpcSpec {
            target,
            service: raw.service.clone().unwrap_or_default(),
            authority: raw.authority.clone(),
            metadata,
            secret_metadata,
            tls: tls?,
        })
    }

    fn tcp(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<TcpSpec> {
        let Some(address) = raw.address.as_deref() else {
            self.problem(path, "missing key `address`");
            return None;
        };
        let apath = format!("{path}.address");
        let before = secrets.len();
        let raw_address = address;
        let address = self.expand(&apath, address, secrets)?;
        if secrets.len() > before {
            self.target_template = Some(raw_address.to_owned());
        }
        let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            // The address as written: an expanded value is a secret.
            self.problem(
                &apath,
                format!("invalid address {raw_address:?}: expected HOST:PORT"),
            );
            return None;
        }
        Some(TcpSpec { address })
    }

    fn service(&mut self, name: &str, raw: &RawService) -> Option<ServiceSpec> {
        let path = format!("services.{}", key(name));
        let mut spec = ServiceSpec::default();
        for (dep, impact) in &raw.dependencies {
            match parse_impact(impact) {
                Some(i) => {
                    spec.dependencies.insert(dep.clone(), i);
                }
                None => self.problem(format!("{path}.dependencies.{}", key(dep)), format!("unknown impact {impact:?}: expected \"critical\", \"degrading\" or \"informational\"")),
            }
        }
        for (i, q) in raw.quorum.iter().enumerate() {
            let qpath = format!("{path}.quorum[{i}]");
            let impact = match q.impact.as_deref().map(parse_impact) {
                None => Impact::Critical,
                Some(Some(i)) => i,
                Some(None) => {
                    self.problem(
                        format!("{qpath}.impact"),
                        "unknown impact: expected \"critical\", \"degrading\" or \"informational\"",
                    );
                    continue;
                }
            };
            let Some(min) = q.min else {
                self.problem(&qpath, "missing key `min`");
                continue;
            };
            spec.quorums.push(Quorum {
                members: q.dependencies.clone(),
                min: usize::try_from(min).unwrap_or(0),
                impact,
            });
        }
        spec.degraded = match raw.degraded.as_deref() {
            None | Some("serving") => DegradedPolicy::Serving,
            Some("not_serving") => DegradedPolicy::NotServing,
            Some(other) => {
                self.problem(
                    format!("{path}.degraded"),
                    format!("unknown value {other:?}: expected \"serving\" or \"not_serving\""),
                );
                DegradedPolicy::Serving
            }
        };
        // Kept even when partly invalid, so its references are checked too: one pass reports
        // everything (the config as a whole fails anyway).
        Some(spec)
    }
}

fn parse_impact(s: &str) -> Option<Impact> {
    match s {
        "critical" => Some(Impact::Critical),
        "degrading" => Some(Impact::Degrading),
        "informational" => Some(Impact::Informational),
        _ => None,
    }
}

fn lowercase_all(names: Option<&[String]>) -> Vec<String> {
    names
        .unwrap_or_default()
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}
