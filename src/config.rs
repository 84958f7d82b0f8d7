//! Configuration: TOML text → validated [`Config`].
//!
//! Two levels, as in ripgrep and vector: `raw` mirrors the file exactly, and `validate`
//! turns it into typed specs while collecting *every* problem with its key path, so one run of
//! `healthgate config validate` lists all of them. Unknown keys are problems too (reported by
//! path, all at once, rather than serde's first-only `deny_unknown_fields`).
//!
//! `${NAME}` in URLs, targets, addresses, header and metadata values is replaced from the
//! environment; a missing variable is a problem, and every expanded value is treated as a secret.

mod dependency;
mod env;
mod error;
mod layout;
pub(crate) mod limits;
mod listen;
mod raw;
mod service;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::redact;
use crate::tls::server::ServerTlsSpec;

pub use crate::probe::grpc::GrpcSpec;
pub use crate::probe::http::{
    BodyCondition, BodyMatcher, DEFAULT_MAX_BODY_BYTES, HttpSpec, HttpVersion, JsonSelector,
    StatusSet,
};
pub use crate::probe::tcp::TcpSpec;
pub use crate::tls::{DEFAULT_EXPIRY_WARNING, TlsSpec};
pub(crate) use dependency::parent_problems;
pub use dependency::{
    DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_JITTER, DEFAULT_RISE, DEFAULT_TIMEOUT, DependencySpec,
    MAX_DURATION, MAX_STALE_AFTER, MAX_STREAK, Mode, OnDemand, ProbeSpec,
};
pub(crate) use error::key as path_key;
pub use error::{ConfigError, Problem};
pub use limits::Limits;
pub use listen::{DEFAULT_SOCKET_MODE, ListenAddr, UNIX_PREFIX};
pub use service::{DegradedPolicy, LIVENESS, Quorum, ServiceSpec};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[server]` section.
    pub server: ServerConfig,
    /// The dependencies, by name.
    pub dependencies: BTreeMap<String, DependencySpec>,
    /// The services, by name; always contains `""` (by default: every dependency, critical).
    pub services: BTreeMap<String, ServiceSpec>,
    /// The `[telemetry]` section.
    pub telemetry: TelemetryConfig,
    /// The `[limits]` section: connection and stream bounds, for each listener.
    pub limits: Limits,
    /// The `[admin]` section: the control plane, off without a token.
    pub admin: AdminConfig,
}

/// The `[admin]` section.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// The bearer token of `healthgate.v1.Admin` (and of `POST /push/NAME` for any push
    /// dependency). Usually `"${VAR}"`.
    pub token: Option<String>,
    /// Client-certificate identities admitted to `healthgate.v1.Admin` besides the token
    /// (exact match: URI SANs as they are, DNS SANs as `dns:NAME`). The Admin service is
    /// served when either is set.
    pub allowed_identities: Vec<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| redact::REDACTED))
            .field("allowed_identities", &self.allowed_identities)
            .finish()
    }
}

/// The `[telemetry]` section: OTLP trace export. The standard `OTEL_*` variables apply where a
/// key is not set; export is off when neither names an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://otel-collector:4317` (else `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
    /// `service.name` (else `OTEL_SERVICE_NAME`, else `healthgate`).
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0 to 1 (else `OTEL_TRACES_SAMPLER(_ARG)`, else all).
    pub sample_ratio: Option<f64>,
    /// How long one export, and the final flush at exit, may take. Default 5 s.
    pub export_timeout: Duration,
    /// Spans queued for export at most; past that they are dropped and counted. Default 2048.
    pub queue_size: usize,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: None,
            export_timeout: Duration::from_secs(5),
            queue_size: 2048,
        }
    }
}

/// The `[server]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where grpc.health.v1 is served (`IP:PORT` or `unix:PATH`). Default `0.0.0.0:50051`.
    pub grpc_listen: ListenAddr,
    /// How long to keep serving after shutdown began, so probes see `NOT_SERVING`. Default 5 s.
    pub drain_delay: Duration,
    /// How long in-flight RPCs may take after the drain delay. Default 10 s.
    pub drain_timeout: Duration,
    /// Where the HTTP front (`/metrics`, the twin `/livez` `/readyz` `/healthz`, the status
    /// page) is served (`IP:PORT` or `unix:PATH`); off when not set.
    pub http_listen: Option<ListenAddr>,
    /// The plaintext probe listener (`IP:PORT` or `unix:PATH`): `grpc.health.v1` and the
    /// twin's `/livez` `/readyz` `/healthz` only; off when not set.
    pub probe_listen: Option<ListenAddr>,
    /// The file mode of every Unix socket listener. Default 0660.
    pub unix_socket_mode: u32,
    /// TLS for `grpc_listen` (`[server.grpc_tls]`).
    pub grpc_tls: Option<ServerTlsSpec>,
    /// TLS for `http_listen` (`[server.http_tls]`).
    pub http_tls: Option<ServerTlsSpec>,
    /// Client-certificate identities admitted to the detail RPCs and the HTTP reasons
    /// besides `detail_token`.
    pub detail_identities: Vec<String>,
    /// The status of a failing twin answer: 503 (default) or 500 (kube-apiserver's).
    pub http_failure_status: u16,
    /// Where the HAProxy agent line is served (`agent-check`); off when not set.
    pub haproxy_agent_listen: Option<SocketAddr>,
    /// The weight, in percent, the agent asks for while degraded (1–100, default 50).
    pub haproxy_agent_degraded_weight: u8,
    /// When set, the detail RPCs require `authorization: Bearer TOKEN` (the standard health
    /// service never does). Usually `"${VAR}"`.
    pub detail_token: Option<String>,
    /// Where overrides, push reports and runtime changes are kept across restarts (relative
    /// paths against the config file's directory); nothing is kept when not set.
    pub state_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("grpc_listen", &self.grpc_listen)
            .field("http_listen", &self.http_listen)
            .field("probe_listen", &self.probe_listen)
            .field(
                "unix_socket_mode",
                &format_args!("{:#o}", self.unix_socket_mode),
            )
            .field("grpc_tls", &self.grpc_tls)
            .field("http_tls", &self.http_tls)
            .field("detail_identities", &self.detail_identities)
            .field("http_failure_status", &self.http_failure_status)
            .field("haproxy_agent_listen", &self.haproxy_agent_listen)
            .field(
                "haproxy_agent_degraded_weight",
                &self.haproxy_agent_degraded_weight,
            )
            .field("drain_delay", &self.drain_delay)
            .field("drain_timeout", &self.drain_timeout)
            .field("state_file", &self.state_file)
            .field(
                "detail_token",
                &self.detail_token.as_ref().map(|_| redact::REDACTED),
            )
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            grpc_listen: ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 50051))),
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            detail_token: None,
            http_listen: None,
            probe_listen: None,
            unix_socket_mode: DEFAULT_SOCKET_MODE,
            grpc_tls: None,
            http_tls: None,
            detail_identities: Vec::new(),
            http_failure_status: 503,
            haproxy_agent_listen: None,
            haproxy_agent_degraded_weight: 50,
            state_file: None,
        }
    }
}

impl Config {
    /// Reads and validates a config file. Relative TLS file paths are resolved against the
    /// file's directory; `${NAME}` is read from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = read_file(path)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            ConfigError::new(
                path.display().to_string(),
                vec![Problem::new("", "the file is not UTF-8 text")],
            )
        })?;
        Config::from_file_text(path, &text)
    }

    /// Validates `text`, read from the file at `path`: problems name that file, relative paths
    /// are relative to its directory, `${NAME}` is read from the process environment.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        parse(text, &source, path.parent(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// Validates config text; `${NAME}` is read from the process environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        parse(text, "<config>", None, &|name| std::env::var(name).ok())
    }

    /// Validates config text, resolving `${NAME}` through `env` (for tests and embedding).
    pub fn from_toml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        parse(text, "<config>", None, env)
    }
}

/// The most a config file may hold: 16 MiB, about 160,000 dependencies. A file is read
/// whole, parsed, and (for reloads) kept; a bigger one — a mistaken mount, `/dev/zero` — is
/// refused before it is read past the bound, so it cannot take the process's memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The bytes of the config file at `path`, at most [`MAX_FILE_BYTES`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let fail = |why: String| {
        ConfigError::new(
            path.display().to_string(),
            vec![Problem::new("", format!("cannot read file: {why}"))],
        )
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!(
            "larger than {} MiB, the most a config file may hold",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(bytes)
}

fn parse(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    parse_known(text, source, base_dir, env, &|_| false)
}

/// `text` validated as a config whose services may also rely on the dependencies `known`
/// accepts (a runtime change's services rely on the running ones). `${NAME}` from the process
/// environment; problems name `source`.
pub(crate) fn parse_known(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    known: &dyn Fn(&str) -> bool,
) -> Result<Config, ConfigError> {
    parse_with(text, source, base_dir, env, known, None).map(|(config, _)| config)
}

/// What validating a config file keeps for validating the same file again (a reload): each
/// dependency's table as written, with the file's `[defaults]`, where the spec came from
/// that table and those defaults alone — no `${NAME}` in it and no file read for it (a
/// variable or a certificate file may have changed since). A table that is equal the next
/// time takes the spec validated from it then instead of being validated again: the same
/// input, the same answer. About a kilobyte a dependency (a table is 816 bytes of mostly
/// empty options, shared, and its strings), and the file's text.
///
/// Measured (1,000 HTTP dependencies, one changed per reload, release, the CPU time of 12
/// reloads' preparations as logged in `prepare_cpu_ms`): 5.8 ms median without it, 4.5 ms
/// with it; validating had been 2.0–2.2 ms of it, parsing the TOML 1.6–2.0 ms (which stays).
/// Later, on a noisier machine (20 reloads, thread CPU by phase): with the tables unboxed
/// (each insert into the raw map moved 816-byte values about) and `[defaults]` compared per
/// dependency, 5.8 ms median (deserializing 1.0, validating 2.6); boxed, compared once, and
/// `serde_path_to_error` only for a file that fails: 3.7 ms (0.6 and 1.4). The text's
/// [`layout::Layout`] then took parsing the unchanged tables away too (its docs).
#[derive(Debug, Default)]
pub(crate) struct Validated {
    /// The file as this read found it (its tables shared with the next read's where they did
    /// not change).
    raw: raw::RawConfig,
    /// By position in `raw.dependencies`: whether the spec came from the table and
    /// `[defaults]` alone.
    pure: Vec<bool>,
    /// Where the tables lie in the file's text: the next read parses only the changed ones.
    layout: Option<layout::Layout>,
    /// How many dependency tables this read parsed (the others it took from the read before).
    pub(crate) tables_parsed: usize,
}

/// The file at `path` validated again as [`Config::from_file_text`] does, taking the specs of
/// `earlier` (the config read before, with what that read kept) for dependencies whose tables
/// are unchanged; with what this read keeps for the next.
pub(crate) fn parse_again(
    path: &Path,
    text: &str,
    earlier: (&Config, &Validated),
) -> Result<(Config, Validated), ConfigError> {
    read_file_text(path, text, (&earlier.0.dependencies, earlier.1))
}

/// The file at `path` validated as [`Config::from_file_text`] does, with what the read keeps
/// for reading the same file again ([`parse_again`]).
pub(crate) fn parse_keeping(path: &Path, text: &str) -> Result<(Config, Validated), ConfigError> {
    read_file_text(path, text, (&BTreeMap::new(), &Validated::default()))
}

/// [`parse_again`] against the specs and what was kept of the read before.
fn read_file_text(
    path: &Path,
    text: &str,
    earlier: (&BTreeMap<String, DependencySpec>, &Validated),
) -> Result<(Config, Validated), ConfigError> {
    let source = path.display().to_string();
    let env = |name: &str| std::env::var(name).ok();
    parse_with(
        text,
        &source,
        path.parent(),
        &env,
        &|_| false,
        Some(earlier),
    )
    .map(|(config, kept)| (config, kept.unwrap_or_default()))
}

fn parse_with(
    text: &str,
    source: &str,
    base_dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    known: &dyn Fn(&str) -> bool,
    earlier: Option<(&BTreeMap<String, DependencySpec>, &Validated)>,
) -> Result<(Config, Option<Validated>), ConfigError> {
    let fail = |problems| ConfigError::new(source, problems);
    let mut unknown = Vec::new();
    let reparsed = earlier.and_then(|(_, kept)| kept.layout.as_ref()?.reparse(&kept.raw, text));
    let (raw, layout, tables_parsed) = match reparsed {
        Some(r) => (r.raw, Some(r.layout), r.parsed),
        None => {
            let raw = parse_whole(text, &fail, &mut unknown)?;
            let count = raw.dependencies.len();
            (raw, None, count)
        }
    };
    let mut v = validate::Validator {
        problems: unknown,
        env,
        base_dir,
        target_template: None,
        known,
        earlier,
        pure: true,
        kept: None,
    };
    match v.config(&raw) {
        Some(config) => {
            let kept = v.kept.map(|pure| Validated {
                layout: layout.or_else(|| layout::Layout::of(text)),
                raw,
                pure,
                tables_parsed,
            });
            Ok((config, kept))
        }
        None => {
            v.problems.sort_by(|a, b| a.path.cmp(&b.path));
            Err(fail(v.problems))
        }
    }
}

/// The whole text parsed into its raw mirror; unknown keys are added to `unknown`.
pub(crate) fn parse_whole(
    text: &str,
    fail: &dyn Fn(Vec<Problem>) -> ConfigError,
    unknown: &mut Vec<Problem>,
) -> Result<raw::RawConfig, ConfigError> {
    let parse = || {
        toml::Deserializer::parse(text)
            .map_err(|e| fail(vec![Problem::new("", syntax_message(text, &e))]))
    };
    let de = parse()?;
    let mut on_unknown = |path: serde_ignored::Path<'_>| {
        unknown.push(Problem::new(path.to_string(), "unknown key"));
    };
    // Without the key paths first: `serde_path_to_error` records every key on the way, which
    // only a file that does not deserialize needs; that one is read again to name the key.
    let first =
        serde::Deserialize::deserialize(serde_ignored::Deserializer::new(de, &mut on_unknown));
    match first {
        Ok(raw) => Ok(raw),
        Err(first) => {
            let mut ignore = |_: serde_ignored::Path<'_>| {};
            let ignored = serde_ignored::Deserializer::new(parse()?, &mut ignore);
            let problem = match serde_path_to_error::deserialize::<_, raw::RawConfig>(ignored) {
                Err(e) => Problem::new(e.path().to_string(), e.inner().message()),
                // The same text cannot deserialize the second time only; if it did, the
                // first error without its key.
                Ok(_) => Problem::new("", first.message()),
            };
            Err(fail(vec![problem]))
        }
    }
}

/// A TOML syntax error as one line: `line 3, column 7: expected ...`.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message().trim())
        }
        None => e.message().trim().to_owned(),
    }
}
