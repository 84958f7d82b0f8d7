//! `serve --watch-config`: reload when the config file's content changes.
//!
//! The *directory* is watched, not the file: editors replace a file by renaming a new one over
//! it, and a Kubernetes ConfigMap volume swaps a `..data` symlink to a new directory, and both
//! leave a watch on the old file (its inode) deaf. Any event in the directory starts a quiet
//! period (`debounce`); when it ends the file is read and hashed, and a reload runs only when
//! the content differs from the config in force — and from the last content that failed, so a
//! broken file is reported once, not on every event.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::warn;

use super::{Reloader, sha256_hex};

/// The quiet period after the last event before the file is read (`--watch-config`).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
#[derive(Debug)]
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `reloader`'s file (its directory) and reloading on content changes. Must
/// be called within a Tokio runtime. Fails when the directory cannot be watched (e.g. the
/// inotify limit is reached): the caller says so and serves without the watch.
pub fn watch(reloader: Arc<Reloader>, debounce: Duration) -> Result<ConfigWatch, notify::Error> {
    // One slot: events only say "look again", so a full channel loses nothing.
    let (tx, rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    })?;
    let path = reloader.path().to_path_buf();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(run(reloader, rx, debounce));
    Ok(ConfigWatch {
        _watcher: watcher,
        task,
    })
}

async fn run(reloader: Arc<Reloader>, mut events: mpsc::Receiver<()>, debounce: Duration) {
    let mut failed_hash: Option<String> = None;
    while events.recv().await.is_some() {
        // Quiet for `debounce`: a burst of writes, renames and symlink swaps is one change.
        loop {
            match tokio::time::timeout(debounce, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let hash = match tokio::fs::read(reloader.path()).await {
            Ok(bytes) => sha256_hex(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Mid-swap, or deleted: the next event looks again.
                continue;
            }
            Err(e) => {
                warn!(file = %reloader.path().display(), error = %e, "config watch: cannot read the file");
                continue;
            }
        };
        if hash == reloader.status().hash || failed_hash.as_ref() == Some(&hash) {
            continue;
        }
        failed_hash = reloader.reload("file watch").await.err().map(|_| hash);
    }
}
