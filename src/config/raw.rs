//! The raw serde mirror of the configuration file: exactly what the TOML says, nothing checked.
//!
//! Durations, kinds, modes and impacts stay strings here so that validation can report every bad
//! value with its key path in one pass, instead of serde stopping at the first. Unknown keys are
//! collected by `serde_ignored` in [`super::parse`] for the same reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) defaults: RawDefaults,
    /// Shared: a table is about a kilobyte of mostly empty options, which the map's inserts
    /// (in file order, not key order) and every later move would copy whole, and a reload
    /// takes the unchanged tables of the read before ([`super::layout`]).
    #[serde(default)]
    pub(crate) dependencies: BTreeMap<String, Arc<RawDependency>>,
    #[serde(default)]
    pub(crate) services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub(crate) telemetry: RawTelemetry,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawAdmin {
    pub(crate) token: Option<String>,
    pub(crate) allowed_identities: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawLimits {
    pub(crate) max_connections: Option<i64>,
    pub(crate) max_concurrent_streams: Option<i64>,
    pub(crate) first_request_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawTelemetry {
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) sample_ratio: Option<f64>,
    pub(crate) export_timeout: Option<String>,
    pub(crate) queue_size: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawServer {
    pub(crate) grpc_listen: Option<String>,
    pub(crate) drain_delay: Option<String>,
    pub(crate) drain_timeout: Option<String>,
    pub(crate) detail_token: Option<String>,
    pub(crate) http_listen: Option<String>,
    pub(crate) http_failure_status: Option<i64>,
    pub(crate) haproxy_agent_listen: Option<String>,
    pub(crate) haproxy_agent_degraded_weight: Option<i64>,
    pub(crate) state_file: Option<String>,
    pub(crate) probe_listen: Option<String>,
    pub(crate) unix_socket_mode: Option<RawMode>,
    pub(crate) grpc_tls: Option<RawServerTls>,
    pub(crate) http_tls: Option<RawServerTls>,
    pub(crate) detail_identities: Option<Vec<String>>,
}

/// A file mode: TOML's `0o660`, or the text `"0660"` (octal).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawMode {
    Number(i64),
    Text(String),
}

/// `[server.grpc_tls]` / `[server.http_tls]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawServerTls {
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) client_ca_file: Option<String>,
    pub(crate) client_auth: Option<String>,
}

/// Settings that apply to every dependency unless it overrides them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawDefaults {
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) fall: Option<i64>,
    pub(crate) rise: Option<i64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) degraded_after: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawDependency {
    pub(crate) kind: Option<String>,
    pub(crate) parents: Option<Vec<String>>,
    pub(crate) mode: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) fall: Option<i64>,
    pub(crate) rise: Option<i64>,
    pub(crate) jitter: Option<f64>,
    pub(crate) degraded_after: Option<String>,
    pub(crate) stale_after: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) failure_ttl: Option<String>,
    pub(crate) max_failure_ttl: Option<String>,
    // http
    pub(crate) url: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) headers: Option<BTreeMap<String, String>>,
    pub(crate) secret_headers: Option<Vec<String>>,
    pub(crate) expected_statuses: Option<Vec<toml::Value>>,
    pub(crate) degraded_statuses: Option<Vec<toml::Value>>,
    pub(crate) body: Option<Vec<RawBodyCondition>>,
    pub(crate) max_body_bytes: Option<i64>,
    pub(crate) follow_redirects: Option<bool>,
    pub(crate) http_version: Option<String>,
    pub(crate) keep_alive: Option<bool>,
    // grpc
    pub(crate) target: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    pub(crate) secret_metadata: Option<Vec<String>>,
    // tcp
    pub(crate) address: Option<String>,
    // push
    pub(crate) token: Option<String>,
    // http and grpc
    pub(crate) tls: Option<RawTls>,
}

/// The probe kinds a config can name.
pub(crate) const KINDS: [&str; 4] = ["http", "grpc", "tcp", "push"];

impl RawDependency {
    /// Every key that belongs to one probe kind, with that kind and whether it is set: the one
    /// list validation checks kinds against (keep it beside the fields above).
    pub(crate) fn kind_keys(&self) -> [(&'static str, &'static str, bool); 18] {
        [
            ("http", "url", self.url.is_some()),
            ("http", "method", self.method.is_some()),
            ("http", "headers", self.headers.is_some()),
            ("http", "secret_headers", self.secret_headers.is_some()),
            (
                "http",
                "expected_statuses",
                self.expected_statuses.is_some(),
            ),
            (
                "http",
                "degraded_statuses",
                self.degraded_statuses.is_some(),
            ),
            ("http", "body", self.body.is_some()),
            ("http", "max_body_bytes", self.max_body_bytes.is_some()),
            ("http", "follow_redirects", self.follow_redirects.is_some()),
            ("http", "http_version", self.http_version.is_some()),
            ("http", "keep_alive", self.keep_alive.is_some()),
            ("grpc", "target", self.target.is_some()),
            ("grpc", "service", self.service.is_some()),
            ("grpc", "authority", self.authority.is_some()),
            ("grpc", "metadata", self.metadata.is_some()),
            ("grpc", "secret_metadata", self.secret_metadata.is_some()),
            ("tcp", "address", self.address.is_some()),
            ("push", "token", self.token.is_some()),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawBodyCondition {
    pub(crate) contains: Option<String>,
    pub(crate) json: Option<String>,
    pub(crate) equals: Option<toml::Value>,
    pub(crate) on_mismatch: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawTls {
    pub(crate) ca_file: Option<String>,
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) insecure: Option<bool>,
    pub(crate) expiry_warning: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawService {
    #[serde(default)]
    pub(crate) dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) quorum: Vec<RawQuorum>,
    pub(crate) degraded: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct RawQuorum {
    #[serde(default)]
    pub(crate) dependencies: Vec<String>,
    pub(crate) min: Option<i64>,
    pub(crate) impact: Option<String>,
}
