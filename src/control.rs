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
use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, DependencySpec, Problem, ServiceSpec, Validated};
use crate::engine::{Applied, ChangeError, Effective, Handle, Plan, Service};
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
    /// What reading `config` kept for reading the file again.
    validated: Arc<Validated>,
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

/// [`read`] again: dependencies whose tables are unchanged since `earlier` take their specs
/// from there ([`Validated`]); with what this read keeps for the next.
fn read_again(
    path: &Path,
    earlier: (&Config, &Validated),
) -> Result<(Config, String, Validated), ConfigError> {
    let (text, hash) = read_text(path)?;
    let (config, validated) = crate::config::parse_again(path, &text, earlier)?;
    Ok((config, hash, validated))
}

/// The file's text, with the SHA-256 of its bytes.
fn read_text(path: &Path) -> Result<(String, String), ConfigError> {
    let text = crate::config::read_file(path)?;
    let hash = sha256_hex(&text);
    let text = String::from_utf8(text).map_err(|_| {
        ConfigError::new(
            path.display().to_string(),
            vec![Problem::new("", "the file is not UTF-8 text")],
        )
    })?;
    Ok((text, hash))
}

/// Reads and validates the config file at `path`, with the SHA-256 of its bytes and what the
/// read keeps for [`Reloader::new`].
pub fn read(path: &Path) -> Result<(Config, String, Kept), ConfigError> {
    let (text, hash) = read_text(path)?;
    let (config, validated) = crate::config::parse_keeping(path, &text)?;
    Ok((config, hash, Kept(Arc::new(validated))))
}

/// What reading the config file kept for reading it again, so that even the first reload
/// parses only the tables that changed ([`Validated`]): the file's text and raw tables, about
/// a kilobyte a dependency, as every reload keeps them anyway. `Kept::default()` keeps
/// nothing (the first reload then parses the whole file).
#[derive(Debug, Default)]
pub struct Kept(Arc<Validated>);

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
    /// Capacity warnings for the new configuration (logged once the reload is in hand).
    warnings: Vec<String>,
    /// The difference from the configuration in force, when its engine revision is known.
    plan: Option<Result<Plan, ChangeError>>,
    /// The CPU time the preparation took (logged with the reload).
    cpu: Duration,
    /// What this read keeps for the next.
    validated: Validated,
}

/// What a reload is prepared against: the configuration in force, and the engine revision
/// at which the engine runs exactly its effective dependencies and services (`None` until a
/// change through this reloader has told it).
struct Base {
    config: Arc<Config>,
    runtime: Layer,
    revision: Option<u64>,
    validated: Arc<Validated>,
}

/// [`read`], and the rest of a reload's preparation ([`Prepared`]: the shadowed runtime
/// items, the keys that need a restart, capacity warnings, and the [`Plan`] against `base`),
/// off the serving thread, which is often alone on its core: on a thread of Linux's
/// `SCHED_IDLE` class, which runs only when the core has nothing else to run and yields it
/// the moment the server wakes; if it has not finished within [`IDLE_GRACE`] (a saturated
/// core has no idle time), the same thread is moved to the normal class at nice 5 (a quarter
/// of the server's share under contention) to finish.
///
/// Why not a nice thread alone: under EEVDF a running task keeps its slice (about 0.75 ms)
/// when the server wakes, whatever its nice value, while a `SCHED_IDLE` one is preempted at
/// once. Measured (`bench/run.sh`, section `control`, 1,000 dependencies, one reload a
/// second, server on one core, Check at a fixed 30,000/s, requests by 20 ms since the
/// signal): at nice 5, 23 % of the requests of the first 20 ms after a signal were slower
/// than the quiet phases' p99 (0.0–1.7 % in the rest of the second); in `SCHED_IDLE`, 7.9 %.
/// Why the same thread and not a second preparation at nice 5 (as first built): a starved
/// idle thread left running still gets picked now and then on a saturated core, and then
/// holds it for a whole slice while the server, never waking, waits (saturated Check p99
/// 1.28x the quiet phases' in a run whose quiet halves agreed within 2 %). Not the blocking
/// pool: its threads also resolve names for the probes, which must not wait. (The
/// configuration a reload replaces is dropped on a thread of its own: [`drop_elsewhere`].)
///
/// What limits a saturated core (`perf sched timehist`, server on one core under saturating
/// Check load, one reload a second): Linux ends a running thread's turn at a scheduler tick
/// (4 ms at `HZ=250`, as here) or when it blocks, whatever its class or slice. A new thread
/// is placed ahead of a server that is runnable without pause, so at the next tick the reader
/// takes the core and keeps it to the following one: 3.5–4.0 ms at a stretch, its whole
/// preparation, while the server waits runnable; 21–84 % of the requests started in those
/// milliseconds were slower than the quiet phases' p99. Tried: giving the core back
/// (`sched_yield`) every 250 µs of preparation. Stretches fell to 0.26 ms (the TOML parse,
/// 1.2–1.6 ms, stayed one), but each yield waited for a tick to be resumed, so a reload
/// swapped up to 407 ms after its signal, and the p99 bound did not improve (saturated median
/// 1.067): dropped. A third less work (5.8 → 3.7 ms) did not move the bound either: the
/// stretch ends at the tick, not with the work. What did: a preparation that ends well inside
/// one. A reload parses only the dependency tables whose text changed
/// ([`crate::config`]'s layout), validation walks the read before's specs in name order, and
/// unchanged probe specs are shared rather than copied: 0.9–1.2 ms of CPU per reload (median
/// by round), signal to swap p50 4.9–6.7 ms, and the saturated p99 bound's median over 5
/// rounds went from 1.056 to 1.022–1.043 in three runs (BENCHMARKS.md). The slowed share fell
/// less than the CPU did: what is left is no longer mostly the reader's work.
async fn prepare_in_background(path: PathBuf, base: Base) -> Result<Prepared, ReloadError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The reader while it runs: taken under the lock to raise it, cleared under the lock
    // before it ends, so a raise never names a thread that is gone.
    let running: Arc<Mutex<Option<thread_priority::ThreadId>>> = Arc::default();
    let reader = running.clone();
    std::thread::Builder::new()
        .name("healthgate-config".into())
        .spawn(move || {
            *reader.lock().unwrap_or_else(|p| p.into_inner()) = Reader::start_idle();
            let prepared = prepare(&path, &base);
            *reader.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let _ = tx.send(prepared);
        })
        .map_err(|e| {
            ReloadError::Rejected(anyhow::anyhow!("cannot start the config reader: {e}"))
        })?;
    let prepared = async {
        rx.await
            .map_err(|_| ReloadError::Rejected(anyhow::anyhow!("the config reader stopped")))?
    };
    tokio::pin!(prepared);
    tokio::select! {
        prepared = &mut prepared => return prepared,
        () = tokio::time::sleep(IDLE_GRACE) => {}
    }
    Reader::raise(running);
    prepared.await
}

/// How long a reload's preparation waits for idle CPU before it asks for a quarter of the
/// server's share (nice 5). A core under a fixed load leaves idle time and the preparation
/// finishes inside it; a saturated core leaves none, and the reload must still swap well
/// under 100 ms. Tried: nice 10 first (a tenth for longer cost a saturated server's p99 less:
/// 0.08–0.23 % of all requests slowed, against 0.27–0.45 % at nice 5) swapped up to 145 ms
/// after the signal; nice 10 then nice 5 from 60 ms, up to 112 ms. Nice 5 from 15 ms: 49 ms.
const IDLE_GRACE: Duration = Duration::from_millis(15);

/// A reload preparation thread's scheduling (Linux; elsewhere these calls fail and cost only
/// the priority, so failures are not reported).
struct Reader;

impl Reader {
    /// Puts the calling thread in `SCHED_IDLE`, with nice 5 for when it leaves it; its id for
    /// [`Reader::raise`], or `None` when the class could not be set or could not be left
    /// again (then it runs at nice 5 throughout).
    fn start_idle() -> Option<thread_priority::ThreadId> {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if !Reader::can_leave_idle() {
            let _ = rustix::process::setpriority_process(None, 5);
            return None;
        }
        let id = thread_native_id();
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let set = set_thread_priority_and_policy(id, ThreadPriority::Min, idle).is_ok();
        // After the class: setting it also sets the calling thread's nice value.
        let _ = rustix::process::setpriority_process(None, 5);
        set.then_some(id)
    }

    /// Whether a thread of this process may move from `SCHED_IDLE` back to the normal class
    /// at nice 5: Linux allows it only within `RLIMIT_NICE` (20 − 5 = 15 needed; the default
    /// limit is 0) or with `CAP_SYS_NICE`, here taken as root. An unprivileged server (the
    /// systemd unit's user, a non-root container) would otherwise leave a reader starved on a
    /// saturated core for seconds.
    fn can_leave_idle() -> bool {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nice);
        rustix::process::geteuid().is_root() || limit.current.is_none_or(|n| n >= 15)
    }

    /// Moves the reader in `running`, if it still runs, from `SCHED_IDLE` to the normal
    /// class, where its nice 5 applies. From a short-lived thread of its own: the library
    /// also sets the nice value of the thread that calls it, which must not be the server's.
    fn raise(running: Arc<Mutex<Option<thread_priority::ThreadId>>>) {
        let _ = std::thread::Builder::new()
            .name("healthgate-config".into())
            .spawn(move || {
                use thread_priority::{
                    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                    set_thread_priority_and_policy,
                };
                let running = running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(id) = *running {
                    let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
                    let _ = set_thread_priority_and_policy(id, ThreadPriority::Min, other);
                }
            });
    }
}

fn prepare(path: &Path, base: &Base) -> Result<Prepared, ReloadError> {
    let started = thread_cpu_time();
    let (config, hash, validated) = read_again(path, (&base.config, &base.validated))?;
    let (runtime, shadowed) = base.runtime.without(&config);
    let ignored = not_reloadable(&base.config, &config);
    let new = InEffect {
        file: &config,
        layer: &runtime,
    };
    let warnings = crate::engine::capacity::warnings(new.dependencies().map(|(_, spec)| spec));
    let plan = base.revision.map(|revision| {
        let old = InEffect {
            file: &base.config,
            layer: &base.runtime,
        };
        Plan::between(revision, &old, &new)
    });
    let cpu = thread_cpu_time().saturating_sub(started);
    Ok(Prepared {
        config,
        hash,
        runtime,
        shadowed,
        ignored,
        warnings,
        plan,
        cpu,
        validated,
    })
}

/// The CPU time of the calling thread so far (zero where the clock cannot be read).
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The effective configuration by reference: the file's dependencies and services with the
/// runtime layer's (which holds no name the file defines, but may hold `""`). What
/// [`effective`] builds, without building it: a reload compares two of these
/// ([`Plan::between`]) and clones only what changed.
struct InEffect<'a> {
    file: &'a Config,
    layer: &'a Layer,
}

impl InEffect<'_> {
    /// Whether `spec` is what the validator puts under `""` when the file does not configure
    /// it: every file dependency, critical.
    fn is_defaulted(&self, spec: &ServiceSpec) -> bool {
        spec.quorums.is_empty()
            && spec.degraded == crate::config::DegradedPolicy::default()
            && spec.dependencies.len() == self.file.dependencies.len()
            && (spec.dependencies.iter())
                .zip(self.file.dependencies.keys())
                .all(|((n, impact), k)| n == k && *impact == crate::Impact::Critical)
    }
}

impl Effective for InEffect<'_> {
    fn dependency(&self, name: &str) -> Option<&DependencySpec> {
        (self.file.dependencies.get(name))
            .or_else(|| self.layer.dependencies.get(name).map(|r| &r.spec))
    }

    fn dependencies(&self) -> Box<dyn Iterator<Item = (&str, &DependencySpec)> + '_> {
        let file = self.file.dependencies.iter();
        let layer = (self.layer.dependencies.iter())
            .filter(|(n, _)| !self.file.dependencies.contains_key(*n))
            .map(|(n, r)| (n, &r.spec));
        Box::new(file.chain(layer).map(|(n, s)| (n.as_str(), s)))
    }

    fn service(&self, name: &str) -> Option<Service<'_>> {
        let spec = (self.layer.services.get(name).map(|r| &r.spec))
            .or_else(|| self.file.services.get(name));
        match spec {
            Some(s) if !(name.is_empty() && self.is_defaulted(s)) => Some(Service::Spec(s)),
            _ if name.is_empty() => Some(Service::Every),
            _ => None,
        }
    }

    fn services(&self) -> Box<dyn Iterator<Item = (&str, Service<'_>)> + '_> {
        let mut names: std::collections::BTreeSet<&str> =
            (self.file.services.keys().chain(self.layer.services.keys()))
                .map(String::as_str)
                .collect();
        names.insert("");
        Box::new(
            names
                .into_iter()
                .filter_map(|n| self.service(n).map(|s| (n, s))),
        )
    }

    fn parent_problems(&self) -> Vec<Problem> {
        if self.layer.dependencies.is_empty() {
            return crate::config::parent_problems(&self.file.dependencies, &|_| false);
        }
        let every: BTreeMap<String, DependencySpec> = (self.dependencies())
            .map(|(n, s)| (n.to_owned(), s.clone()))
            .collect();
        crate::config::parent_problems(&every, &|_| false)
    }
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
    /// and `kept` (see [`read`]). With `metrics`, reloads are counted there
    /// (`healthgate_config_reloads_total{result}`, `healthgate_config_last_reload_successful`,
    /// `healthgate_config_last_reload_success_timestamp_seconds`).
    pub fn new(
        path: impl Into<PathBuf>,
        handle: Handle,
        config: Config,
        hash: String,
        kept: Kept,
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
                validated: kept.0,
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
                validated: state.validated.clone(),
            }
        };
        let Prepared {
            config,
            hash,
            runtime,
            shadowed,
            ignored,
            warnings,
            plan,
            cpu,
            validated,
        } = prepare_in_background(self.path.clone(), base).await?;
        for w in &warnings {
            warn!(trigger, "config reload: performance warning: {w}");
        }
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
            tables_parsed = validated.tables_parsed,
            prepare_cpu_ms = format_args!("{:.1}", cpu.as_secs_f64() * 1000.0),
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
                std::mem::replace(&mut state.validated, Arc::new(validated)),
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

    fn layer(dependencies: &[&str], services: &[(&str, ServiceSpec)]) -> Layer {
        let toml: Arc<str> = Arc::from("");
        Layer {
            dependencies: (dependencies.iter())
                .map(|n| {
                    let spec = DependencySpec::push(Duration::from_secs(30), None);
                    let toml = toml.clone();
                    ((*n).to_owned(), Runtime { spec, toml })
                })
                .collect(),
            services: (services.iter())
                .map(|(n, spec)| {
                    let (spec, toml) = (spec.clone(), toml.clone());
                    ((*n).to_owned(), Runtime { spec, toml })
                })
                .collect(),
        }
    }

    #[test]
    fn the_effective_view_is_what_effective_builds_with_the_default_service() {
        let defaulted = Config::from_toml(
            "[dependencies.a]\nkind = \"tcp\"\naddress = \"a:1\"\n\
             [dependencies.b]\nkind = \"tcp\"\naddress = \"b:1\"\n\
             [services.web]\ndependencies = { a = \"critical\" }\n",
        )
        .expect("valid");
        let configured = Config::from_toml(
            "[dependencies.a]\nkind = \"tcp\"\naddress = \"a:1\"\n\
             [services.\"\"]\ndependencies = { a = \"degrading\" }\n",
        )
        .expect("valid");
        let critical_a = ServiceSpec::with_all(["a"], crate::Impact::Critical);
        let layers = [
            layer(&[], &[]),
            layer(&["r1", "r2"], &[]),
            layer(&["r1"], &[("ops", critical_a.clone())]),
            layer(&[], &[("", critical_a.clone())]),
        ];
        for file in [&defaulted, &configured] {
            for layer in &layers {
                let view = InEffect { file, layer };
                let (dependencies, services) = effective(file, layer);
                let services = crate::engine::with_default_service(&dependencies, services);
                let seen: BTreeMap<String, DependencySpec> = (view.dependencies())
                    .map(|(n, s)| (n.to_owned(), s.clone()))
                    .collect();
                assert_eq!(seen, dependencies, "{layer:?}");
                let seen: BTreeMap<String, ServiceSpec> = (view.services())
                    .map(|(n, s)| (n.to_owned(), s.to_spec(&view)))
                    .collect();
                assert_eq!(seen, services, "{layer:?}");
                for name in ["a", "r1", "zz"] {
                    assert_eq!(view.dependency(name), dependencies.get(name));
                }
            }
        }
    }

    #[test]
    fn a_reload_plan_between_views_keeps_the_same_and_names_every_difference() {
        let before = Config::from_toml(
            "[dependencies.a]\nkind = \"tcp\"\naddress = \"a:1\"\n\
             [dependencies.b]\nkind = \"tcp\"\naddress = \"b:1\"\n\
             [dependencies.c]\nkind = \"tcp\"\naddress = \"c:1\"\n\
             [services.web]\ndependencies = { a = \"critical\" }\n",
        )
        .expect("valid");
        // b changed, c removed, d added; web the same; "" follows the dependencies.
        let after = Config::from_toml(
            "[dependencies.a]\nkind = \"tcp\"\naddress = \"a:1\"\n\
             [dependencies.b]\nkind = \"tcp\"\naddress = \"b:2\"\n\
             [dependencies.d]\nkind = \"tcp\"\naddress = \"d:1\"\n\
             [services.web]\ndependencies = { a = \"critical\" }\n",
        )
        .expect("valid");
        let empty = Layer::default();
        let view = |file| InEffect {
            file,
            layer: &empty,
        };
        let plan = Plan::between(7, &view(&before), &view(&after)).expect("valid");
        let text = format!("{plan:?}");
        for expected in [
            "base: 7",
            "removed_dependencies: [\"c\"]",
            "kept_dependencies: 1",
            "kept_services: 1",
            "removed_services: []",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let (deps, services) = plan.parts();
        assert_eq!(deps, ["b", "d"]);
        assert_eq!(services, [""]);
        // Nothing changed: nothing to apply.
        let same = Plan::between(7, &view(&after), &view(&after)).expect("valid");
        assert_eq!(same.parts(), (vec![], vec![]));
        // A kept service that relies on a removed dependency refuses the plan.
        let broken = Config::from_toml("[dependencies.b]\nkind = \"tcp\"\naddress = \"b:1\"\n")
            .expect("valid");
        let mut layer = Layer::default();
        layer.services.insert(
            "ops".into(),
            Runtime {
                spec: ServiceSpec::with_all(["a"], crate::Impact::Critical),
                toml: Arc::from(""),
            },
        );
        let old = InEffect {
            file: &before,
            layer: &layer,
        };
        let new = InEffect {
            file: &broken,
            layer: &layer,
        };
        assert!(matches!(
            Plan::between(7, &old, &new),
            Err(ChangeError::InvalidConfig(_))
        ));
    }

    #[test]
    fn a_reader_that_may_leave_idle_is_raised_to_the_normal_class_and_one_that_may_not_stays_fair()
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let policy = || thread_priority::thread_schedule_policy().expect("policy");
        let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let running: Arc<Mutex<Option<thread_priority::ThreadId>>> = Arc::default();
        let (raised_tx, raised_rx) = std::sync::mpsc::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let reader = running.clone();
        let thread = std::thread::spawn(move || {
            let id = Reader::start_idle();
            let started = policy();
            *reader.lock().expect("lock") = id;
            started_tx.send((id.is_some(), started)).expect("send");
            raised_rx.recv().expect("raised");
            policy()
        });
        let (idle_set, started) = started_rx.recv().expect("started");
        assert_eq!(idle_set, Reader::can_leave_idle());
        assert_eq!(started, if idle_set { idle } else { other });
        Reader::raise(running.clone());
        // The raise runs on a thread of its own and holds the lock while it sets the class.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while idle_set && std::time::Instant::now() < deadline {
            let id = running.lock().expect("lock").expect("id");
            let (policy, _) = thread_priority::thread_schedule_policy_param(id).expect("policy");
            if policy == other {
                break;
            }
            std::thread::yield_now();
        }
        raised_tx.send(()).expect("send");
        assert_eq!(
            thread.join().expect("reader"),
            other,
            "the reader left SCHED_IDLE"
        );
        assert_eq!(policy(), other, "the raise left the calling thread alone");
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_bytes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
