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
pub mod state;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, DependencySpec, Problem, ServiceSpec};
use crate::engine::{Applied, ChangeError, Handle, Plan};
use metrics::ReloadMetrics;
pub use state::StateFile;
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

/// What a reload also does (see [`Reloader::also_on_reload`]).
type AlsoOnReload = Box<dyn Fn(&str) + Send + Sync>;

/// Reloads one config file into one engine. Clone-free: share it in an `Arc`.
pub struct Reloader {
    path: PathBuf,
    handle: Handle,
    state: Mutex<InForce>,
    /// One reload at a time: two triggers at once apply in turn, each reading the file anew.
    turn: tokio::sync::Mutex<()>,
    metrics: Option<Arc<ReloadMetrics>>,
    /// Where runtime changes are written before they are answered.
    kept: std::sync::OnceLock<Arc<StateFile>>,
    /// Also run on every reload trigger, with the trigger (the listeners' TLS files are read
    /// again this way).
    also: std::sync::OnceLock<AlsoOnReload>,
}

struct InForce {
    /// The file's configuration (shared with a reload being prepared).
    config: Arc<Config>,
    status: ConfigStatus,
    /// Runtime changes (admin): a layer over the file that survives reloads until removed.
    runtime: Layer,
    /// The engine's configuration revision at which it runs exactly what `config` and
    /// `runtime` make (see [`Plan`]); `None` until a change through this reloader told it.
    revision: Option<u64>,
}

/// The runtime layer: dependencies and services added by the admin API. A name belongs to
/// one layer: the admin API cannot add or remove what the file defines, and when a reloaded
/// file defines a name the layer has, the file's wins and the layer's entry is dropped (with
/// a warning) — so what the file says is always what runs for its names.
#[derive(Debug, Clone, Default)]
struct Layer {
    dependencies: BTreeMap<String, Runtime<DependencySpec>>,
    services: BTreeMap<String, Runtime<ServiceSpec>>,
}

/// A runtime item: its spec, and the TOML it was given as (what the state file keeps, so a
/// restart parses it again — `${ENV}` references stay references).
#[derive(Debug, Clone)]
struct Runtime<T> {
    spec: T,
    toml: Arc<str>,
}

/// Where an item of the effective configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The config file.
    File,
    /// A runtime change through the admin API.
    Runtime,
}

impl Origin {
    /// `file` or `runtime`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Runtime => "runtime",
        }
    }
}

/// A runtime change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeRefused {
    /// The spec text has problems: every one, with its key path.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The name is the file's: edit the file instead.
    #[error("{kind} {name:?} is defined in the config file; change it there")]
    InFile {
        /// `dependency` or `service`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// No such runtime item.
    #[error("no runtime {kind} named {name:?}")]
    Unknown {
        /// `dependency` or `service`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The runtime layer holds [`MAX_RUNTIME_ITEMS`] of this kind already.
    #[error("the runtime layer holds {MAX_RUNTIME_ITEMS} {kind} entries already; remove one first")]
    Full {
        /// `dependency` or `service`.
        kind: &'static str,
    },
    /// The engine refused the result (a service would name a missing dependency, a probe
    /// cannot be built, …).
    #[error("{0}")]
    Rejected(#[from] ChangeError),
    /// The change applied, but the state file could not be written.
    #[error("the change applied, but {0}")]
    NotSaved(#[from] state::StateError),
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

/// A reload made ready on its own thread: the file read and validated, and everything the
/// swap needs worked out, so that the serving thread only swaps.
struct Prepared {
    config: Config,
    hash: String,
    /// The runtime layer without the names the file now defines, and those names.
    runtime: Layer,
    shadowed: Vec<String>,
    /// Keys that changed but apply only at the next start.
    ignored: Vec<&'static str>,
    /// The difference from the configuration in force, when its engine revision is known.
    plan: Option<Result<Plan, ChangeError>>,
}

/// What a reload is prepared against: the configuration in force, and the engine revision
/// at which the engine runs exactly its effective dependencies and services (`None` until a
/// change through this reloader has told it).
struct Base {
    config: Arc<Config>,
    runtime: Layer,
    revision: Option<u64>,
}

/// [`read`], and the rest of a reload's preparation ([`Prepared`]: the shadowed runtime
/// items, the keys that need a restart, capacity warnings, and the [`Plan`] against `base`),
/// on a thread of its own at a lower CPU priority (nice 5), so that the serving thread, often
/// alone on its core, keeps answering while a reload is worked out. Measured with
/// `bench/run.sh` (section `control`, 1,000 dependencies, one reload a second, server on one
/// core, Check at a fixed 60,000/s): reading and validating costs about 7 ms of CPU
/// (release); parsing on the serving thread made Check p99 1.12x the quiet figure, on the
/// shared blocking pool (same priority, time-sliced with the server) 1.21x, here at nice 5
/// 1.06x to 1.18x by round (nice 10 the same, 1.14x, with a slower swap); what was left on
/// the serving thread then — about 2 ms per reload: the effective configuration built, the
/// whole of it checked and compared again by the engine, the old one dropped — is here too
/// now, and the engine applies only the difference. Not the blocking pool: its threads also
/// resolve names for the probes, which must not run at a lower priority. (The configuration
/// a reload replaces is dropped on a thread of its own too: [`drop_elsewhere`].)
///
/// Tried and dropped: `SCHED_IDLE` (preempted the moment the server wakes, where a nice
/// thread keeps its scheduler slice), with a nice-5 second preparation after 30 ms without
/// idle time. On a second, 2x slower machine (validation 14.5 ms), 5 rounds at a fixed
/// 30,000 Check/s: p99 reloading over quiet 1.16x to 1.95x by round against 1.29x to 1.70x
/// at nice 5 in the run before, no better, and signal to swap max 106 to 117 ms against 40 to
/// 75 ms. The serving thread's p99 under reloads is not decided by this thread's priority.
async fn prepare_in_background(
    path: PathBuf,
    base: Base,
    trigger: String,
) -> Result<Prepared, ReloadError> {
    /// The reader's nice value: a quarter of the serving thread's CPU share under contention,
    /// so a reload still swaps in tens of milliseconds on a saturated core.
    const NICE: i32 = 5;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("healthgate-config".into())
        .spawn(move || {
            // Linux: the calling thread's nice value. A failure only costs the priority.
            let _ = rustix::process::setpriority_process(None, NICE);
            let _ = tx.send(prepare(&path, &base, &trigger));
        });
    if let Err(e) = spawned {
        return Err(ReloadError::Rejected(anyhow::anyhow!(
            "cannot start the config reader: {e}"
        )));
    }
    rx.await
        .map_err(|_| ReloadError::Rejected(anyhow::anyhow!("the config reader stopped")))?
}

fn prepare(path: &Path, base: &Base, trigger: &str) -> Result<Prepared, ReloadError> {
    let (config, hash) = read(path)?;
    let (runtime, shadowed) = base.runtime.without(&config);
    let ignored = not_reloadable(&base.config, &config);
    let (dependencies, services) = effective(&config, &runtime);
    for w in crate::engine::capacity::warnings(&dependencies) {
        warn!(trigger, "config reload: performance warning: {w}");
    }
    let plan = base.revision.map(|revision| {
        let (old_dependencies, old_services) = effective(&base.config, &base.runtime);
        Plan::new(
            revision,
            &old_dependencies,
            &old_services,
            dependencies,
            services,
        )
    });
    Ok(Prepared {
        config,
        hash,
        runtime,
        shadowed,
        ignored,
        plan,
    })
}

/// Drops `value` on a short-lived thread of its own: a replaced configuration of thousands
/// of dependencies is thousands of frees the serving thread need not make.
fn drop_elsewhere<T: Send + 'static>(value: T) {
    // When no thread can start, the closure, and the value in it, drops here instead.
    let _ = std::thread::Builder::new()
        .name("healthgate-drop".into())
        .spawn(move || drop(value));
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
                config: Arc::new(config),
                status: ConfigStatus {
                    hash,
                    loaded_at: now,
                    last_error: None,
                },
                runtime: Layer::default(),
                revision: None,
            }),
            turn: tokio::sync::Mutex::new(()),
            metrics,
            kept: std::sync::OnceLock::new(),
            also: std::sync::OnceLock::new(),
        }
    }

    /// Runtime changes (and reloads, which may drop runtime items the file now defines) are
    /// written to `state` before they are answered. Set once; later calls are ignored.
    pub fn keep_state(&self, state: Arc<StateFile>) {
        let _ = self.kept.set(state);
    }

    /// Every reload (SIGHUP, `admin reload`, `--watch-config`) also runs `also` with its
    /// trigger, whatever the config's outcome, before the file is read — `serve` reads the
    /// listeners' TLS files again this way (`crate::listener::ServerTls::reload`). Set once;
    /// later calls are ignored.
    pub fn also_on_reload(&self, also: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.also.set(Box::new(also));
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
        if let Some(also) = self.also.get() {
            also(trigger);
        }
        let result = self.try_reload(trigger).await;
        if let (Ok(_), Some(state)) = (&result, self.kept.get()) {
            // The reload itself applied; a state write that fails is logged by the writer and
            // retried with the next change.
            let _ = state.save().await;
        }
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
        let base = {
            let state = self.lock();
            Base {
                config: state.config.clone(),
                runtime: state.runtime.clone(),
                revision: state.revision,
            }
        };
        let Prepared {
            config,
            hash,
            runtime,
            shadowed,
            ignored,
            plan,
        } = prepare_in_background(self.path.clone(), base, trigger.to_owned()).await?;
        let refused = |e: ChangeError| match e {
            ChangeError::ShuttingDown => ReloadError::ShuttingDown,
            e => ReloadError::Rejected(anyhow::Error::from(e)),
        };
        let planned = match plan {
            Some(Ok(plan)) => match self.handle.apply_plan(plan).await {
                Err(ChangeError::Stale) => None,
                other => Some(other),
            },
            Some(Err(e)) => Some(Err(e)),
            None => None,
        };
        let (applied, revision) = match planned {
            Some(result) => result.map_err(refused)?,
            // No plan (the first reload, or the engine changed since): apply in full.
            None => {
                let (dependencies, services) = effective(&config, &runtime);
                self.handle
                    .apply_at(dependencies, services)
                    .await
                    .map_err(refused)?
            }
        };
        for name in &shadowed {
            warn!(
                name,
                "config reload: the file now defines this name; its runtime change is dropped"
            );
        }
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
        let replaced = {
            let mut state = self.lock();
            // The sections that did not apply stay as they are in force, so the next reload
            // still names them.
            let config = Arc::new(Config {
                server: state.config.server.clone(),
                limits: state.config.limits,
                telemetry: state.config.telemetry.clone(),
                admin: state.config.admin.clone(),
                ..config
            });
            state.status.hash = hash;
            state.revision = Some(revision);
            (
                std::mem::replace(&mut state.config, config),
                std::mem::replace(&mut state.runtime, runtime),
            )
        };
        drop_elsewhere(replaced);
        Ok(applied)
    }

    /// Adds or replaces the runtime dependency `name` from `toml` (the keys of a
    /// `[dependencies.NAME]` table, validated as the file's are, built-in defaults).
    pub async fn put_dependency(&self, name: &str, toml: &str) -> Result<Applied, ChangeRefused> {
        let spec = parse_table("dependencies", name, toml, &|_| false)?
            .dependencies
            .remove(name)
            .ok_or_else(|| ChangeRefused::Unknown {
                kind: "dependency",
                name: name.to_owned(),
            })?;
        self.change(|file, layer| {
            if file.dependencies.contains_key(name) {
                return Err(in_file("dependency", name));
            }
            room(&layer.dependencies, "dependency", name)?;
            let toml = Arc::from(toml);
            layer
                .dependencies
                .insert(name.to_owned(), Runtime { spec, toml });
            Ok(())
        })
        .await
    }

    /// Adds or replaces the runtime service `name` from `toml` (the keys of a
    /// `[services.NAME]` table); it may rely on the file's dependencies and the runtime ones.
    pub async fn put_service(&self, name: &str, toml: &str) -> Result<Applied, ChangeRefused> {
        let known = {
            let state = self.lock();
            let mut names: Vec<String> = state.config.dependencies.keys().cloned().collect();
            names.extend(state.runtime.dependencies.keys().cloned());
            names
        };
        let mut config = parse_table("services", name, toml, &|d| known.iter().any(|k| k == d))?;
        let spec = config.services.remove(name).unwrap_or_default();
        self.change(|file, layer| {
            if file.services.contains_key(name) {
                return Err(in_file("service", name));
            }
            room(&layer.services, "service", name)?;
            let toml = Arc::from(toml);
            layer
                .services
                .insert(name.to_owned(), Runtime { spec, toml });
            Ok(())
        })
        .await
    }

    /// Removes a runtime dependency (no service may still rely on it).
    pub async fn remove_dependency(&self, name: &str) -> Result<Applied, ChangeRefused> {
        self.change(|file, layer| {
            if file.dependencies.contains_key(name) {
                return Err(in_file("dependency", name));
            }
            layer
                .dependencies
                .remove(name)
                .map(drop)
                .ok_or_else(|| ChangeRefused::Unknown {
                    kind: "dependency",
                    name: name.to_owned(),
                })
        })
        .await
    }

    /// Removes a runtime service.
    pub async fn remove_service(&self, name: &str) -> Result<Applied, ChangeRefused> {
        self.change(|file, layer| {
            if file.services.contains_key(name) {
                return Err(in_file("service", name));
            }
            layer
                .services
                .remove(name)
                .map(drop)
                .ok_or_else(|| ChangeRefused::Unknown {
                    kind: "service",
                    name: name.to_owned(),
                })
        })
        .await
    }

    /// Every dependency and service in force, by name, with its origin.
    pub fn origins(&self) -> (BTreeMap<String, Origin>, BTreeMap<String, Origin>) {
        let state = self.lock();
        let of = |file: Vec<&String>, runtime: Vec<&String>| {
            file.into_iter()
                .map(|n| (n.clone(), Origin::File))
                .chain(runtime.into_iter().map(|n| (n.clone(), Origin::Runtime)))
                .collect()
        };
        (
            of(
                state.config.dependencies.keys().collect(),
                state.runtime.dependencies.keys().collect(),
            ),
            of(
                state.config.services.keys().collect(),
                state.runtime.services.keys().collect(),
            ),
        )
    }

    /// The runtime layer as it was given: each dependency's and service's TOML, by name.
    pub fn runtime_sources(&self) -> RuntimeSources {
        fn sources<T>(items: &BTreeMap<String, Runtime<T>>) -> Vec<(String, Arc<str>)> {
            (items.iter())
                .map(|(n, r)| (n.clone(), r.toml.clone()))
                .collect()
        }
        let state = self.lock();
        RuntimeSources {
            dependencies: sources(&state.runtime.dependencies),
            services: sources(&state.runtime.services),
        }
    }

    /// Puts back a runtime layer a state file kept (at start, before anything listens): each
    /// item parsed and validated again, as if it were added now. An item the file now defines,
    /// or that no longer validates, is dropped; so is a service that relies on a dropped
    /// dependency. Returns what was dropped and why, one line each.
    pub async fn restore_runtime(&self, sources: RuntimeSources) -> Vec<String> {
        let mut dropped = Vec::new();
        let built = {
            let _turn = self.turn.lock().await;
            let file = self.lock().config.clone();
            let layer = restored_layer(&file, &sources, &mut dropped);
            let (dependencies, services) = effective(&file, &layer);
            match self.handle.apply_at(dependencies, services).await {
                Ok((_, revision)) => {
                    let mut state = self.lock();
                    state.runtime = layer;
                    state.revision = Some(revision);
                    true
                }
                Err(e) => {
                    warn!(error = %e, "the kept runtime layer does not apply as a whole; restoring it item by item");
                    false
                }
            }
        };
        if !built {
            // One at a time, so one bad item (a probe that cannot be built now) costs only itself.
            for (name, toml) in &sources.dependencies {
                if let Err(e) = self.put_dependency(name, toml).await {
                    dropped.push(format!("runtime dependency {name:?}: {e}"));
                }
            }
            for (name, toml) in &sources.services {
                if let Err(e) = self.put_service(name, toml).await {
                    dropped.push(format!("runtime service {name:?}: {e}"));
                }
            }
        }
        dropped
    }

    /// Applies `edit` to a copy of the runtime layer and swaps the result in; on any refusal
    /// the layer and the engine are as they were.
    async fn change(
        &self,
        edit: impl FnOnce(&Config, &mut Layer) -> Result<(), ChangeRefused>,
    ) -> Result<Applied, ChangeRefused> {
        let _turn = self.turn.lock().await;
        let (mut layer, file) = {
            let state = self.lock();
            (state.runtime.clone(), state.config.clone())
        };
        edit(&file, &mut layer)?;
        let (dependencies, services) = effective(&file, &layer);
        let (applied, revision) = self.handle.apply_at(dependencies, services).await?;
        {
            let mut state = self.lock();
            state.runtime = layer;
            state.revision = Some(revision);
        }
        if let Some(state) = self.kept.get() {
            state.save().await?;
        }
        Ok(applied)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InForce> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Layer {
    /// This layer without the names `file` defines (the file's win), and those names.
    fn without(&self, file: &Config) -> (Layer, Vec<String>) {
        let mut layer = self.clone();
        let mut shadowed = Vec::new();
        layer.dependencies.retain(|n, _| {
            let keep = !file.dependencies.contains_key(n);
            if !keep {
                shadowed.push(format!("dependencies.{n}"));
            }
            keep
        });
        layer.services.retain(|n, _| {
            let keep = !file.services.contains_key(n) || n.is_empty();
            if !keep {
                shadowed.push(format!("services.{n}"));
            }
            keep
        });
        (layer, shadowed)
    }
}

/// A runtime layer as TOML, by name: what [`Reloader::runtime_sources`] gives and
/// [`Reloader::restore_runtime`] takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeSources {
    /// `[dependencies.NAME]` bodies.
    pub dependencies: Vec<(String, Arc<str>)>,
    /// `[services.NAME]` bodies.
    pub services: Vec<(String, Arc<str>)>,
}

/// The layer `sources` describe, over `file`: every item that still parses and validates and
/// that the file does not define (the others are named in `dropped`), within the bounds.
fn restored_layer(file: &Config, sources: &RuntimeSources, dropped: &mut Vec<String>) -> Layer {
    let mut layer = Layer::default();
    for (name, toml) in &sources.dependencies {
        let what = format!("runtime dependency {name:?}");
        if file.dependencies.contains_key(name) {
            dropped.push(format!("{what}: the config file defines it now"));
            continue;
        }
        if room(&layer.dependencies, "dependency", name).is_err() {
            dropped.push(format!("{what}: the runtime layer is full"));
            continue;
        }
        match parse_table("dependencies", name, toml, &|_| false) {
            Ok(mut c) => {
                if let Some(spec) = c.dependencies.remove(name) {
                    let toml = toml.clone();
                    layer
                        .dependencies
                        .insert(name.clone(), Runtime { spec, toml });
                }
            }
            Err(e) => dropped.extend(e.to_string().lines().map(|l| format!("{what}: {l}"))),
        }
    }
    let known = |d: &str| file.dependencies.contains_key(d) || layer.dependencies.contains_key(d);
    let mut services = BTreeMap::new();
    for (name, toml) in &sources.services {
        let what = format!("runtime service {name:?}");
        if file.services.contains_key(name) {
            dropped.push(format!("{what}: the config file defines it now"));
            continue;
        }
        if room(&services, "service", name).is_err() {
            dropped.push(format!("{what}: the runtime layer is full"));
            continue;
        }
        match parse_table("services", name, toml, &known) {
            Ok(mut c) => {
                let spec = c.services.remove(name).unwrap_or_default();
                let toml = toml.clone();
                services.insert(name.clone(), Runtime { spec, toml });
            }
            Err(e) => dropped.extend(e.to_string().lines().map(|l| format!("{what}: {l}"))),
        }
    }
    layer.services = services;
    layer
}

/// The file's dependencies and services with the runtime layer's added. The file's `""`,
/// when it was defaulted (every dependency, critical), covers the runtime dependencies too.
fn effective(
    file: &Config,
    layer: &Layer,
) -> (
    BTreeMap<String, DependencySpec>,
    BTreeMap<String, ServiceSpec>,
) {
    let mut dependencies = file.dependencies.clone();
    dependencies.extend((layer.dependencies.iter()).map(|(n, r)| (n.clone(), r.spec.clone())));
    let mut services = file.services.clone();
    services.extend((layer.services.iter()).map(|(n, r)| (n.clone(), r.spec.clone())));
    let defaulted =
        ServiceSpec::with_all(file.dependencies.keys().cloned(), crate::Impact::Critical);
    if services.get("") == Some(&defaulted) {
        services.remove("");
    }
    (dependencies, services)
}

/// The most runtime dependencies, and separately services: a bound on what the admin API
/// can make the engine hold (the file has its own size; this layer must not grow without one).
pub const MAX_RUNTIME_ITEMS: usize = 10_000;

/// Whether `name` may be put in `items`: a replacement always, a new name below the bound.
fn room<T>(
    items: &BTreeMap<String, T>,
    kind: &'static str,
    name: &str,
) -> Result<(), ChangeRefused> {
    if items.len() >= MAX_RUNTIME_ITEMS && !items.contains_key(name) {
        return Err(ChangeRefused::Full { kind });
    }
    Ok(())
}

fn in_file(kind: &'static str, name: &str) -> ChangeRefused {
    ChangeRefused::InFile {
        kind,
        name: name.to_owned(),
    }
}

/// `toml` as the body of `[SECTION.NAME]`, validated like the file (built-in defaults; a
/// service may rely on any dependency `known` accepts). Problems name `admin`.
fn parse_table(
    section: &str,
    name: &str,
    toml: &str,
    known: &dyn Fn(&str) -> bool,
) -> Result<Config, ConfigError> {
    if toml.lines().any(|l| l.trim_start().starts_with('[')) {
        return Err(ConfigError::new(
            "admin",
            vec![Problem::new(
                format!("{section}.{}", crate::config::path_key(name)),
                "the spec is the keys of one table, without [headers]",
            )],
        ));
    }
    let key = crate::config::path_key(name);
    let text = format!("[{section}.{key}]\n{toml}\n");
    crate::config::parse_known(&text, "admin", None, &|v| std::env::var(v).ok(), known)
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
    differs("server.probe_listen", a.probe_listen != b.probe_listen);
    differs(
        "server.unix_socket_mode",
        a.unix_socket_mode != b.unix_socket_mode,
    );
    // The files' contents rotate on every reload; which files, and the client policy, apply
    // at the next start.
    differs("server.grpc_tls", a.grpc_tls != b.grpc_tls);
    differs("server.http_tls", a.http_tls != b.http_tls);
    differs(
        "server.detail_identities",
        a.detail_identities != b.detail_identities,
    );
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
    differs("server.state_file", a.state_file != b.state_file);
    differs("admin.token", old.admin.token != new.admin.token);
    differs(
        "admin.allowed_identities",
        old.admin.allowed_identities != new.admin.allowed_identities,
    );
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
    fn the_runtime_layer_refuses_the_newest_name_at_its_bound_and_still_replaces() {
        let full: BTreeMap<String, ()> = (0..MAX_RUNTIME_ITEMS)
            .map(|i| (format!("d{i}"), ()))
            .collect();
        assert!(matches!(
            room(&full, "dependency", "new"),
            Err(ChangeRefused::Full { .. })
        ));
        assert!(
            room(&full, "dependency", "d7").is_ok(),
            "a replacement takes no room"
        );
        let mut almost = full;
        almost.remove("d0");
        assert!(room(&almost, "dependency", "new").is_ok());
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
