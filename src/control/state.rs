//! The state file (`[server] state_file`, DESIGN §10): what a restart must not lose — active
//! overrides, push dependencies' last reports, the runtime layer.
//!
//! **Written before the answer.** A front calls [`StateFile::save`] after a change applied and
//! answers only once it returns: what a caller was told is done is on disk. Writes are one at a
//! time and grouped: every `save` waiting when a write begins is answered by that write (the
//! state is read from the engine and the reloader as the write begins, so it holds each of
//! their changes). A burst of push reports therefore costs one write per burst, not one per
//! report.
//!
//! **Atomic.** Each write goes to `PATH.tmp` (mode 0600: runtime specs may carry literal
//! credentials, like the config file), is fsynced, renamed over `PATH`, and the directory is
//! fsynced: after a crash at any moment the file is the previous state or the new one, whole.
//!
//! **Loading never stops a start.** A missing file is an empty state. A file that cannot be
//! read or parsed is logged, moved aside to `PATH.corrupt` (for a person to look at) and the
//! server starts without it. Restored items are checked again as if set now: expired
//! overrides are dropped, push reports older than their ttl count as missing, runtime items
//! the config file now defines or that no longer validate are dropped, each with a log line.
//!
//! The format is JSON (`version: 1`), times RFC 3339 UTC, so an operator can read it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{Reloader, RuntimeSources};
use crate::engine::{Saved, SavedReport, Target};
use crate::snapshot::Override;
use crate::{Handle, Health, Reason};

/// The largest state file read at start: ten thousand runtime items of a few hundred bytes
/// each fit many times over; anything larger was not written by us.
pub const MAX_STATE_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// How many `save` calls may wait for the writer; past that a caller waits to queue (the
/// writer answers a whole queue with one write).
const QUEUE: usize = 4096;

/// What a state file kept, as read at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kept {
    /// Overrides and push reports, for [`Handle::restore`].
    pub saved: Saved,
    /// The runtime layer, for [`Reloader::restore_runtime`].
    pub runtime: RuntimeSources,
}

impl Kept {
    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.saved.overrides.is_empty()
            && self.saved.reports.is_empty()
            && self.runtime.dependencies.is_empty()
            && self.runtime.services.is_empty()
    }
}

/// The state could not be written; the change it was saved for has applied in memory.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the state file {path} could not be written: {reason}")]
pub struct StateError {
    path: String,
    reason: Arc<str>,
}

type Waiter = oneshot::Sender<Result<(), Arc<str>>>;

/// A state file being kept: see the [module docs](self).
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    requests: mpsc::Sender<Waiter>,
}

impl StateFile {
    /// Keeps the state of `handle` (and of `reloader`'s runtime layer, when there is one) at
    /// `path`; writes are counted in `metrics` (`healthgate_state_writes_total{result}`).
    /// Spawns the writer on the current runtime; it ends with the last `StateFile` clone.
    pub fn start(
        path: impl Into<PathBuf>,
        handle: Handle,
        reloader: Option<Arc<Reloader>>,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Arc<StateFile> {
        let path = path.into();
        let (requests, queue) = mpsc::channel(QUEUE);
        let counts = metrics.map(super::metrics::StateMetrics::of);
        // Weak: the reloader keeps this file (runtime changes are written before they are
        // answered), and the writer must not keep the reloader alive in turn.
        let reloader = reloader.as_ref().map(Arc::downgrade);
        tokio::spawn(writer(path.clone(), handle, reloader, queue, counts));
        Arc::new(StateFile { path, requests })
    }

    /// Writes the state as it is now, and returns once it is on disk.
    pub async fn save(&self) -> Result<(), StateError> {
        let error = |reason: &str| StateError {
            path: self.path.display().to_string(),
            reason: Arc::from(reason),
        };
        let (reply, written) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| error("the writer stopped"))?;
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(error(&reason)),
            Err(_) => Err(error("the writer stopped")),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

async fn writer(
    path: PathBuf,
    handle: Handle,
    reloader: Option<std::sync::Weak<Reloader>>,
    mut queue: mpsc::Receiver<Waiter>,
    metrics: Option<Arc<super::metrics::StateMetrics>>,
) {
    let mut on_disk: Option<Vec<u8>> = None;
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        while let Ok(next) = queue.try_recv() {
            waiting.push(next);
        }
        // Read after every waiter's change applied: this write holds all of them.
        let result = match handle.saved().await {
            Err(e) => Err(Arc::from(e.to_string())),
            Ok(saved) => {
                let runtime = (reloader.as_ref().and_then(std::sync::Weak::upgrade))
                    .map(|r| r.runtime_sources())
                    .unwrap_or_default();
                let bytes = encode(&Kept { saved, runtime });
                if on_disk.as_ref() == Some(&bytes) {
                    Ok(())
                } else {
                    let (p, b) = (path.clone(), bytes.clone());
                    let written = tokio::task::spawn_blocking(move || write_atomic(&p, &b)).await;
                    let result = match written {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(Arc::from(e.to_string())),
                        Err(_) => Err(Arc::from("the write was interrupted")),
                    };
                    if result.is_ok() {
                        on_disk = Some(bytes);
                    }
                    if let Some(m) = &metrics {
                        m.wrote(result.is_ok());
                    }
                    result
                }
            }
        };
        if let Err(reason) = &result {
            error!(path = %path.display(), %reason, "state file not written");
        }
        for waiter in waiting {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsynced, renamed over it,
/// and the directory fsynced (so the rename itself survives a power cut).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the state file at `path` (see the [module docs](self)): empty when there is none;
/// a file that cannot be read or parsed is logged and moved aside to `PATH.corrupt`.
pub fn load(path: &Path) -> Kept {
    match read(path) {
        Ok(Some(kept)) => {
            info!(
                path = %path.display(),
                overrides = kept.saved.overrides.len(),
                reports = kept.saved.reports.len(),
                runtime_dependencies = kept.runtime.dependencies.len(),
                runtime_services = kept.runtime.services.len(),
                "state file read"
            );
            kept
        }
        Ok(None) => {
            info!(path = %path.display(), "no state file yet; it is written at the first change");
            Kept::default()
        }
        Err(why) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            match std::fs::rename(path, &aside) {
                Ok(()) => error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    "state file unusable ({why}); moved aside, starting without it"
                ),
                Err(e) => error!(
                    path = %path.display(),
                    error = %e,
                    "state file unusable ({why}) and cannot be moved aside; starting without it"
                ),
            }
            Kept::default()
        }
    }
}

/// The file's content: `None` when there is no file, `Err` why it is unusable.
fn read(path: &Path) -> Result<Option<Kept>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_STATE_FILE_BYTES {
        return Err(format!(
            "larger than {} MiB",
            MAX_STATE_FILE_BYTES / 1024 / 1024
        ));
    }
    decode(&bytes).map(Some)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    overrides: Vec<OverrideV1>,
    reports: Vec<ReportV1>,
    runtime: RuntimeV1,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideV1 {
    kind: String,
    name: String,
    health: String,
    since: String,
    until: String,
    reason: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportV1 {
    dependency: String,
    health: String,
    reason: Option<String>,
    at: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuntimeV1 {
    dependencies: BTreeMap<String, String>,
    services: BTreeMap<String, String>,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `kept` as the file's bytes (deterministic: equal states give equal bytes).
pub fn encode(kept: &Kept) -> Vec<u8> {
    let file = FileV1 {
        version: 1,
        overrides: (kept.saved.overrides.iter())
            .map(|(target, o)| OverrideV1 {
                kind: target.kind().to_owned(),
                name: target.name().to_owned(),
                health: o.health.as_str().to_owned(),
                since: time(o.since),
                until: time(o.until),
                reason: o.reason.to_string(),
            })
            .collect(),
        reports: (kept.saved.reports.iter())
            .map(|r| ReportV1 {
                dependency: r.dependency.clone(),
                health: r.health.as_str().to_owned(),
                reason: r.reason.clone(),
                at: time(r.at),
            })
            .collect(),
        runtime: RuntimeV1 {
            dependencies: (kept.runtime.dependencies.iter())
                .map(|(n, t)| (n.clone(), t.to_string()))
                .collect(),
            services: (kept.runtime.services.iter())
                .map(|(n, t)| (n.clone(), t.to_string()))
                .collect(),
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The file's bytes as a state, or why they are not one.
pub fn decode(bytes: &[u8]) -> Result<Kept, String> {
    let file: FileV1 =
        serde_json::from_slice(bytes).map_err(|e| format!("not a state file: {e}"))?;
    if file.version != 1 {
        return Err(format!(
            "version {} is not one this build reads (1)",
            file.version
        ));
    }
    let at = |s: &str| humantime::parse_rfc3339(s).map_err(|e| format!("time {s:?}: {e}"));
    let health = |s: &str| match s {
        "healthy" => Ok(Health::Healthy),
        "degraded" => Ok(Health::Degraded),
        "unhealthy" => Ok(Health::Unhealthy),
        other => Err(format!(
            "health {other:?}: expected healthy, degraded or unhealthy"
        )),
    };
    let mut saved = Saved::default();
    for o in file.overrides {
        let target = match o.kind.as_str() {
            "dependency" => Target::Dependency(o.name),
            "service" => Target::Service(o.name),
            other => {
                return Err(format!(
                    "override kind {other:?}: expected dependency or service"
                ));
            }
        };
        let forced = Override {
            health: health(&o.health)?,
            since: at(&o.since)?,
            until: at(&o.until)?,
            reason: Reason::new(o.reason),
        };
        saved.overrides.push((target, forced));
    }
    for r in file.reports {
        saved.reports.push(SavedReport {
            dependency: r.dependency,
            health: health(&r.health)?,
            reason: r.reason,
            at: at(&r.at)?,
        });
    }
    let runtime = RuntimeSources {
        dependencies: (file.runtime.dependencies.into_iter())
            .map(|(n, t)| (n, Arc::from(t)))
            .collect(),
        services: (file.runtime.services.into_iter())
            .map(|(n, t)| (n, Arc::from(t)))
            .collect(),
    };
    Ok(Kept { saved, runtime })
}

/// Restores `kept` into the engine (and the runtime layer into `reloader`), logging what is
/// dropped; meant for the start, before anything listens.
pub async fn restore(kept: Kept, handle: &Handle, reloader: Option<&Reloader>) {
    if kept.is_empty() {
        return;
    }
    // The runtime layer first: overrides and reports may be for its items.
    let mut dropped = match reloader {
        Some(r) => r.restore_runtime(kept.runtime).await,
        None if kept.runtime.dependencies.is_empty() && kept.runtime.services.is_empty() => {
            Vec::new()
        }
        None => {
            vec!["the runtime layer: this server was not started from a config file".to_owned()]
        }
    };
    match handle.restore(kept.saved).await {
        Ok(more) => dropped.extend(more),
        Err(e) => dropped.push(format!("overrides and reports: {e}")),
    }
    for line in &dropped {
        warn!("state file: not restored: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Kept {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        Kept {
            saved: Saved {
                overrides: vec![(
                    Target::Service("checkout".into()),
                    Override {
                        health: Health::Unhealthy,
                        since: t,
                        until: t + Duration::from_secs(3600),
                        reason: Reason::new("drain for upgrade".to_owned()),
                    },
                )],
                reports: vec![SavedReport {
                    dependency: "backup".into(),
                    health: Health::Degraded,
                    reason: Some("slow".into()),
                    at: t,
                }],
            },
            runtime: RuntimeSources {
                dependencies: vec![(
                    "extra".into(),
                    Arc::from("kind = \"tcp\"\naddress = \"127.0.0.1:1\"\n"),
                )],
                services: vec![("web".into(), Arc::from("dependencies = [\"extra\"]\n"))],
            },
        }
    }

    #[test]
    fn a_state_survives_encoding_and_equal_states_give_equal_bytes() {
        let kept = sample();
        let bytes = encode(&kept);
        assert_eq!(decode(&bytes).expect("decodes"), kept);
        assert_eq!(encode(&sample()), bytes);
    }

    #[test]
    fn anything_but_our_own_format_is_refused_with_a_reason() {
        let good = String::from_utf8(encode(&sample())).expect("utf-8");
        for (bad, why) in [
            ("", "not a state file"),
            ("{\"version\": 1", "not a state file"),
            (&good[..good.len() / 2], "not a state file"),
            (
                &good.replace("\"version\": 1", "\"version\": 2"),
                "version 2",
            ),
            (
                &good.replace("\"unhealthy\"", "\"sideways\""),
                "health \"sideways\"",
            ),
            (&good.replace("\"service\"", "\"planet\""), "override kind"),
            (
                &good.replace("2027-01-15T08:00:00.123Z", "yesterday"),
                "time \"yesterday\"",
            ),
            (
                &good.replace("\"reports\"", "\"extra\": 1, \"reports\""),
                "unknown field",
            ),
        ] {
            let e = decode(bad.as_bytes()).expect_err(bad);
            assert!(e.contains(why), "{e} (wanted {why})");
        }
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_it_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("healthgate-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        write_atomic(&path, b"first").expect("write");
        write_atomic(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn an_unusable_file_is_moved_aside_and_the_start_goes_on_empty() {
        let dir = std::env::temp_dir().join(format!("healthgate-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        assert_eq!(load(&path), Kept::default(), "no file: empty");
        std::fs::write(&path, b"{\"version\": 1, \"overr").expect("write");
        assert_eq!(load(&path), Kept::default());
        assert!(!path.exists());
        let aside = dir.join("state.json.corrupt");
        assert_eq!(
            std::fs::read(&aside).expect("kept aside"),
            b"{\"version\": 1, \"overr"
        );
        write_atomic(&path, &encode(&sample())).expect("write");
        assert_eq!(load(&path), sample());
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
