//! A listener's running TLS: the rustls config in force, reloaded from its files (see
//! [`ServerTls::reload`]) when they change, on SIGHUP and on `admin reload`.
//!
//! Rotation: each new handshake takes the config in force at that moment; connections already
//! open (and their Watch streams) keep the session they negotiated. A rotation to files that
//! cannot be read, parsed or do not match (the key is not the certificate's) keeps the config in
//! force, is logged at warn and counted (`healthgate_tls_reloads_total{result="failure"}`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::ServerConfig;
use tracing::{info, warn};

use super::tls_metrics::TlsMetrics;
use crate::tls::server::{CertificateInfo, ServerTlsSpec, build};

/// Warn in the log when the server's own certificate expires within this.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A listener's TLS: the config in force, reloadable.
pub struct ServerTls {
    listener: &'static str,
    spec: ServerTlsSpec,
    alpn: Vec<Vec<u8>>,
    current: RwLock<(Arc<ServerConfig>, CertificateInfo)>,
    metrics: Option<TlsMetrics>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("listener", &self.listener)
            .field("spec", &self.spec)
            .field("certificate", &self.info())
            .finish()
    }
}

impl ServerTls {
    /// Loads `spec` for `listener` (`grpc`, `http`), offering the `alpn` protocols. The error
    /// names the file and the reason.
    pub fn load(
        listener: &'static str,
        spec: ServerTlsSpec,
        alpn: &[&[u8]],
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Result<Arc<ServerTls>, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let (config, info) = build(&spec, &alpn)?;
        let metrics = metrics.map(|m| TlsMetrics::new(m, listener));
        let tls = Arc::new(ServerTls {
            listener,
            spec,
            alpn,
            current: RwLock::new((Arc::new(config), info.clone())),
            metrics,
        });
        tls.loaded(&info);
        Ok(tls)
    }

    /// The files and policy.
    pub fn spec(&self) -> &ServerTlsSpec {
        &self.spec
    }

    /// The certificate in force.
    pub fn info(&self) -> CertificateInfo {
        self.lock_read().1.clone()
    }

    /// Reads the files again and, when they make a valid config, uses it for new handshakes
    /// (`Ok(true)` when the certificate changed). On failure the config in force stays; the
    /// failure is logged and counted, and returned.
    pub fn reload(&self, trigger: &str) -> Result<bool, String> {
        match build(&self.spec, &self.alpn) {
            Ok((config, info)) => {
                let changed = {
                    let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
                    let changed = current.1 != info;
                    *current = (Arc::new(config), info.clone());
                    changed
                };
                if let Some(m) = &self.metrics {
                    m.reloaded(true);
                }
                if changed {
                    info!(
                        listener = self.listener,
                        trigger,
                        serial = %info.serial,
                        "TLS certificate reloaded: new handshakes use it"
                    );
                    self.loaded(&info);
                }
                Ok(changed)
            }
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.reloaded(false);
                }
                warn!(
                    listener = self.listener,
                    trigger,
                    error = %e,
                    "TLS certificate reload failed: the certificate in force stays"
                );
                Err(e)
            }
        }
    }

    /// Counts a handshake that failed or timed out.
    pub(crate) fn handshake_failed(&self) {
        if let Some(m) = &self.metrics {
            m.handshake_failures.inc();
        }
    }

    /// The listener's name.
    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// An acceptor with the config in force.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.lock_read().0.clone())
    }

    /// Sets the expiry gauge and warns when the certificate expires soon.
    pub fn loaded(&self, info: &CertificateInfo) {
        let at = info
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(m) = &self.metrics {
            m.expiry.set(i64::try_from(at).unwrap_or(i64::MAX));
        }
        self.warn_if_expiring(info);
    }

    /// Warns when the certificate in force expires within [`EXPIRY_WARNING`] (or has).
    pub fn warn_if_expiring(&self, info: &CertificateInfo) {
        match info.not_after.duration_since(SystemTime::now()) {
            Err(_) => warn!(
                listener = self.listener,
                serial = %info.serial,
                "the listener's TLS certificate has expired"
            ),
            Ok(left) if left < EXPIRY_WARNING => warn!(
                listener = self.listener,
                serial = %info.serial,
                expires_in = %humantime::format_duration(Duration::from_secs(left.as_secs())),
                "the listener's TLS certificate expires soon"
            ),
            Ok(_) => {}
        }
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<ServerConfig>, CertificateInfo)> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running watch of the listeners' TLS files; dropping it stops watching.
#[derive(Debug)]
pub struct CertificateWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CertificateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The quiet period after the last change in a certificate's directory before the files are
/// read: cert-manager and Vault agents write the key and the chain separately, and a
/// Kubernetes Secret volume swaps a `..data` symlink.
pub const ROTATION_DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the log is told again about a certificate that expires soon.
const EXPIRY_REMINDER: Duration = Duration::from_secs(24 * 3600);

/// Watches the directories of every file of `listeners` and reloads a listener's TLS after a
/// change ([`ROTATION_DEBOUNCE`]); also repeats the expiry warning daily. Must be called within
/// a Tokio runtime.
pub fn watch(listeners: Vec<Arc<ServerTls>>) -> Result<CertificateWatch, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = listeners
        .iter()
        .flat_map(|t| t.spec.files())
        .map(|f| match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let task = tokio::spawn(rotate(listeners, rx));
    Ok(CertificateWatch {
        _watcher: watcher,
        task,
    })
}

async fn rotate(listeners: Vec<Arc<ServerTls>>, mut events: tokio::sync::mpsc::Receiver<()>) {
    let mut reminder = tokio::time::interval(EXPIRY_REMINDER);
    reminder.tick().await; // the first is now: the load already warned
    loop {
        tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
                loop {
                    match tokio::time::timeout(ROTATION_DEBOUNCE, events.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                for tls in &listeners {
                    // Unchanged files reload silently; failures are logged and counted.
                    let _ = tls.reload("file change");
                }
            }
            _ = reminder.tick() => {
                for tls in &listeners {
                    tls.warn_if_expiring(&tls.info());
                }
            }
        }
    }
}
