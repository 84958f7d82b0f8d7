//! The control plane (DESIGN §10): what changes a running healthgate besides its probes.
//!
//! This room holds the [`Reloader`]: the config file in force, and the one path every reload
//! takes — SIGHUP, the admin `reload`, the file watch — read → parse → validate → build aside
//! → swap ([`Handle::apply`](crate::Handle::apply)) in one step. A file with any problem
//! changes nothing; it is logged line by line as `config validate` prints it, counted, and kept
//! as the last error for the detail RPC.
//!
//! With `serve --watch-config`, [`watch`] reloads when the file's content changes (see
//! `watch.rs` for why the directory is watched).
//!
//! What a reload applies: every dependency and service. What it does not: the `[server]`,
//! `[limits]` and `[telemetry]` sections (listeners are bound, connections admitted and the
//! exporter started under them); a change there is kept for the next start and named in a
//! warning, and the rest of the file still applies.

mod metrics;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, Problem};
use crate::engine::{Applied, ChangeError, Handle};
use metrics::ReloadMetrics;
pub use watch::{ConfigWatch, DEFAULT_DEBOUNCE, watch};

/// What a [`Reloader`] reports about the configuration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStatus {
    /// SHA-256 of the file in force, lowercase hex.
    pub hash: String,
    /// When it was loaded (at start or by the last successful reload).
    pub loaded_at: SystemTime,
    /// Why the last reload failed, one problem per line; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// A reload was refused; the running configuration is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or breaks the rules: every problem, one per line.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The engine refused the new dependencies and services (a probe could not be built).
    #[error("{0:#}")]
    Rejected(anyhow::Error),
    /// Shutdown began.
    #[error("shutting down")]
    ShuttingDown,
}

impl ReloadError {
    /// The problems, one line each, as `config validate` prints them.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

/// Reloads one config file into one engine. Clone-free: share it in an `Arc`.
pub struct Reloader {
    path: PathBuf,
    handle: Handle,
    state: Mutex<InForce>,
    /// One reload at a time: two triggers at once apply in turn, each reading the file anew.
    turn: tokio::sync::Mutex<()>,
    metrics: Option<Arc<ReloadMetrics>>,
}

struct InForce {
    config: Config,
    status: ConfigStatus,
}

impl fmt::Debug for Reloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Reads and validates the config file at `path`, with the SHA-256 of its bytes.
pub fn read(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            vec![Problem::new("", format!("cannot read file: {e}"))],
        )
    })?;
    let hash = sha256_hex(&text);
    let text = String::from_utf8(text).map_err(|_| {
        ConfigError::new(
            path.display().to_string(),
            vec![Problem::new("", "the file is not UTF-8 text")],
        )
    })?;
    Ok((Config::from_file_text(path, &text)?, hash))
}

/// SHA-256 of `bytes`, lowercase hex: the config hash.
fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Reloader {
    /// A reloader for the engine `handle` started from `config`, read from `path` with `hash`
    /// (see [`read`]). With `metrics`, reloads are counted there
    /// (`healthgate_config_reloads_total{result}`, `healthgate_config_last_reload_successful`,
    /// `healthgate_config_last_reload_success_timestamp_seconds`).
    pub fn new(
        path: impl Into<PathBuf>,
        handle: Handle,
        config: Config,
        hash: String,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Reloader {
        let now = SystemTime::now();
        let metrics = metrics.map(ReloadMetrics::of);
        if let Some(m) = &metrics {
            m.loaded(now);
        }
        Reloader {
            path: path.into(),
            handle,
            state: Mutex::new(InForce {
                config,
                status: ConfigStatus {
                    hash,
                    loaded_at: now,
                    last_error: None,
                },
            }),
            turn: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// The configuration in force: hash, load time, last error.
    pub fn status(&self) -> ConfigStatus {
        self.lock().status.clone()
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again and swaps its dependencies and services in; `trigger` (`SIGHUP`,
    /// `admin`, `file watch`) is logged. On any problem nothing changes: the problems are
    /// logged one per line, counted, and returned.
    pub async fn reload(&self, trigger: &str) -> Result<Applied, ReloadError> {
        let _turn = self.turn.lock().await;
        let result = self.try_reload(trigger).await;
        let now = SystemTime::now();
        let mut state = self.lock();
        match &result {
            Ok(_) => {
                state.status.loaded_at = now;
                state.status.last_error = None;
                if let Some(m) = &self.metrics {
                    m.succeeded();
                    m.loaded(now);
                }
            }
            Err(e) => {
                for line in e.lines() {
                    error!(
                        trigger,
                        "config reload rejected, the running config stays: {line}"
                    );
                }
                state.status.last_error = Some(e.to_string());
                if let Some(m) = &self.metrics {
                    m.failed();
                }
            }
        }
        result
    }

    async fn try_reload(&self, trigger: &str) -> Result<Applied, ReloadError> {
        let (config, hash) = read(&self.path)?;
        let ignored = {
            let state = self.lock();
            not_reloadable(&state.config, &config)
        };
        let applied = self
            .handle
            .apply(config.dependencies.clone(), config.services.clone())
            .await
            .map_err(|e| match e {
                ChangeError::ShuttingDown => ReloadError::ShuttingDown,
                e => ReloadError::Rejected(anyhow::Error::from(e)),
            })?;
        if !ignored.is_empty() {
            warn!(
                keys = %ignored.join(", "),
                "config reload: these keys changed but apply only at the next start; the rest applied"
            );
        }
        info!(
            trigger,
            hash = %hash,
            added = applied.added_dependencies.len(),
            replaced = applied.replaced_dependencies.len(),
            removed = applied.removed_dependencies.len(),
            kept = applied.kept_dependencies,
            services_added = applied.added_services.len(),
            services_changed = applied.changed_services.len(),
            services_removed = applied.removed_services.len(),
            "config reloaded"
        );
        let mut state = self.lock();
        // The sections that did not apply stay as they are in force, so the next reload still
        // names them.
        let server = state.config.server.clone();
        let limits = state.config.limits;
        let telemetry = state.config.telemetry.clone();
        let admin = state.config.admin.clone();
        state.config = Config {
            server,
            limits,
            telemetry,
            admin,
            ..config
        };
        state.status.hash = hash;
        Ok(applied)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InForce> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys of `[server]`, `[limits]` and `[telemetry]` that differ between `old` and `new`.
fn not_reloadable(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differs("server.grpc_listen", a.grpc_listen != b.grpc_listen);
    differs("server.http_listen", a.http_listen != b.http_listen);
    differs(
        "server.haproxy_agent_listen",
        a.haproxy_agent_listen != b.haproxy_agent_listen,
    );
    differs("server.drain_delay", a.drain_delay != b.drain_delay);
    differs("server.drain_timeout", a.drain_timeout != b.drain_timeout);
    differs(
        "server.http_failure_status",
        a.http_failure_status != b.http_failure_status,
    );
    differs(
        "server.haproxy_agent_degraded_weight",
        a.haproxy_agent_degraded_weight != b.haproxy_agent_degraded_weight,
    );
    differs("server.detail_token", a.detail_token != b.detail_token);
    differs("admin.token", old.admin != new.admin);
    differs("limits", old.limits != new.limits);
    differs("telemetry", old.telemetry != new.telemetry);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_listeners_and_sections_are_named_and_nothing_else() {
        let base = Config::from_toml("[server]\ngrpc_listen = \"127.0.0.1:1\"\n").expect("valid");
        assert!(not_reloadable(&base, &base.clone()).is_empty());
        let other = Config::from_toml(
            "[server]\ngrpc_listen = \"127.0.0.1:2\"\nhttp_listen = \"127.0.0.1:3\"\n\
             detail_token = \"t0ken-value\"\n[limits]\nmax_connections = 10\n",
        )
        .expect("valid");
        assert_eq!(
            not_reloadable(&base, &other),
            [
                "server.grpc_listen",
                "server.http_listen",
                "server.detail_token",
                "limits"
            ]
        );
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
