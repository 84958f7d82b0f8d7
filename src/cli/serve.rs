//! `healthgate serve`: load and validate the config, start the engine, listen, serve until
//! SIGTERM/SIGINT, drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use healthgate::control::Reloader;
use healthgate::grpc::{ProbeListener, ServeOptions, serve};
use healthgate::listener::Limits;
use healthgate::listener::{ListenAddr, ServerTls, ServerTlsSpec, bind};
use healthgate::metrics::Metrics;
use healthgate::{Config, Engine};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::telemetry::{self, LogFormat};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The config file.
    #[arg(long, short, env = "HEALTHGATE_CONFIG")]
    config: PathBuf,
    /// Listen on this address (`IP:PORT` or `unix:PATH`) instead of `[server] grpc_listen`.
    #[arg(long, value_parser = ListenAddr::parse)]
    listen: Option<ListenAddr>,
    /// Reload the config when its file changes (as SIGHUP does); works with editors that
    /// replace the file and with Kubernetes ConfigMap volumes.
    #[arg(long)]
    watch_config: bool,
}

/// Where the config came from, for reloads: its file and the SHA-256 of what was read.
pub(crate) struct Source {
    path: PathBuf,
    watch: bool,
    hash: String,
    /// What reading the file kept for reading it again.
    kept: healthgate::control::Kept,
    /// The config as the file says (before command-line overrides).
    config: Config,
}

/// Loads the config; on failure prints every problem and returns exit code 2.
pub(crate) fn load(args: &ServeArgs) -> Result<(Config, Source), ExitCode> {
    let (config, hash, kept) = healthgate::control::read(&args.config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    let source = Source {
        path: args.config.clone(),
        watch: args.watch_config,
        hash,
        kept,
        config: config.clone(),
    };
    Ok((config, source))
}

pub(crate) async fn run(
    mut config: Config,
    source: Source,
    args: ServeArgs,
    log_format: LogFormat,
) -> ExitCode {
    if let Some(listen) = args.listen {
        config.server.grpc_listen = listen;
    }
    serve_config(&config, Some(source), log_format).await
}

/// Sets up telemetry, starts the engine, binds, prints one `… listening on ADDR` line per
/// listener and serves until a signal; then drains, and flushes traces. With a `source`, SIGHUP
/// reloads it (see [`healthgate::control`]).
pub(crate) async fn serve_config(
    config: &Config,
    source: Option<Source>,
    log_format: LogFormat,
) -> ExitCode {
    let listen = config.server.grpc_listen.clone();
    let metrics = Arc::new(Metrics::new());
    // Telemetry first, so the very first probe already has a span.
    let telemetry = match telemetry::init(log_format, &config.telemetry, metrics.dropped_spans()) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in healthgate::engine::capacity::warnings(config.dependencies.values()) {
        warn!("performance warning: {w}");
    }
    // The engine starts (and can still refuse a probe) before anything listens.
    let handle = match Engine::from_config(config).metrics(metrics.clone()).start() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    let mut _config_watch = None;
    let mut config_reloader = None;
    if let Some(source) = source {
        let watch = source.watch;
        let reloader = Arc::new(Reloader::new(
            source.path,
            handle.clone(),
            source.config,
            source.hash,
            source.kept,
            Some(&metrics),
        ));
        config_reloader = Some(reloader.clone());
        // Registered before anything listens: from here on SIGHUP reloads instead of killing.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hup) => {
                tokio::spawn(reload_on_sighup(hup, reloader.clone()));
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGHUP; the config will not be reloaded on it")
            }
        }
        if watch {
            match healthgate::control::watch(reloader, healthgate::control::DEFAULT_DEBOUNCE) {
                Ok(w) => _config_watch = Some(w),
                Err(e) => {
                    eprintln!("error: cannot watch the config file: {e}");
                    handle.shutdown().await;
                    return ExitCode::from(1);
                }
            }
        }
    }
    // What the state file kept is back before anything listens: no client sees the state
    // from before it.
    let state = match &config.server.state_file {
        Some(path) => match keep_state(path, &handle, config_reloader.as_ref(), &metrics).await {
            Ok(state) => Some(state),
            Err(code) => {
                handle.shutdown().await;
                return code;
            }
        },
        None => None,
    };
    // TLS files were checked with the config; read again here, a failure is still a config
    // error (exit 2) before anything listens.
    let load_tls = |name: &'static str, spec: &Option<ServerTlsSpec>, alpn: &[&[u8]]| {
        spec.clone()
            .map(|spec| ServerTls::load(name, spec, alpn, Some(&metrics)))
            .transpose()
            .map_err(|e| eprintln!("error: server.{name}_tls: {e}"))
    };
    let (grpc_tls, http_tls) = match (
        load_tls("grpc", &config.server.grpc_tls, &[b"h2"]),
        load_tls("http", &config.server.http_tls, healthgate::http::HTTP_ALPN),
    ) {
        (Ok(g), Ok(h)) => (g, h),
        _ => {
            handle.shutdown().await;
            return ExitCode::from(2);
        }
    };
    let certificates: Vec<Arc<ServerTls>> = grpc_tls.iter().chain(&http_tls).cloned().collect();
    let _certificate_watch = if certificates.is_empty() {
        None
    } else {
        if let Some(reloader) = &config_reloader {
            let listeners = certificates.clone();
            reloader.also_on_reload(move |trigger| {
                for tls in &listeners {
                    // Logged and counted by the listener's TLS; the certificate in force stays.
                    let _ = tls.reload(trigger);
                }
            });
        }
        match healthgate::listener::watch_certificates(certificates) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot watch the TLS files; they are read again on SIGHUP and admin reload only");
                None
            }
        }
    };
    let mode = config.server.unix_socket_mode;
    let listener = match bind(&listen, mode).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            handle.shutdown().await;
            return ExitCode::from(1);
        }
    };
    let mut bound = Vec::new();
    for addr in [&config.server.http_listen, &config.server.probe_listen] {
        match addr {
            None => bound.push(None),
            Some(addr) => match bind(addr, mode).await {
                Ok(l) => bound.push(Some(l)),
                Err(e) => {
                    eprintln!("error: cannot listen on {addr}: {e}");
                    handle.shutdown().await;
                    return ExitCode::from(1);
                }
            },
        }
    }
    let (probe, http) = (bound.pop().flatten(), bound.pop().flatten());
    let agent = match bind_optional(config.server.haproxy_agent_listen).await {
        Ok(listener) => listener,
        Err(code) => {
            handle.shutdown().await;
            return code;
        }
    };
    println!(
        "grpc listening on {}",
        listener.local_addr().unwrap_or(listen)
    );
    let limits = fit_limits(
        config,
        1 + usize::from(http.is_some())
            + usize::from(probe.is_some())
            + usize::from(agent.is_some()),
    );
    let twin = |probe_only: bool| healthgate::http::TwinOptions {
        detail_token: config.server.detail_token.clone(),
        failure_status: axum::http::StatusCode::from_u16(config.server.http_failure_status).ok(),
        detail_identities: config.server.detail_identities.clone(),
        probe_only,
    };
    let http_stop = CancellationToken::new();
    if let Some(http) = http {
        if let Ok(addr) = http.local_addr() {
            println!("http listening on {addr}");
        }
        let app = healthgate::http::metrics_router(metrics.clone())
            .merge(healthgate::http::push_router(
                handle.clone(),
                config.admin.token.clone(),
                state.clone(),
            ))
            .merge(healthgate::http::twin_router(handle.clone(), twin(false)));
        let stop = http_stop.clone();
        let metrics = Some(metrics.clone());
        tokio::spawn(healthgate::http::serve(
            http,
            "http",
            app,
            limits,
            metrics,
            http_tls,
            stop.cancelled_owned(),
        ));
    }
    if let Some(agent) = agent {
        if let Ok(addr) = agent.local_addr() {
            println!("haproxy agent listening on {addr}");
        }
        tokio::spawn(healthgate::http::serve_agent(
            agent,
            handle.clone(),
            config.server.haproxy_agent_degraded_weight,
            limits.max_connections,
            http_stop.clone().cancelled_owned(),
        ));
    }
    let probe = probe.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            println!("probe listening on {addr}");
        }
        ProbeListener {
            listener,
            router: healthgate::http::twin_router(handle.clone(), twin(true)),
        }
    });
    let options = ServeOptions {
        drain_delay: config.server.drain_delay,
        drain_timeout: config.server.drain_timeout,
        detail_token: config.server.detail_token.clone(),
        metrics: Some(metrics),
        limits,
        reloader: config_reloader,
        admin_token: config.admin.token.clone(),
        state,
        tls: grpc_tls,
        detail_identities: config.server.detail_identities.clone(),
        admin_identities: config.admin.allowed_identities.clone(),
        probe,
    };
    // Every listener is bound (connections queue until `serve` accepts them, a moment from
    // now): systemd may start what depends on us.
    super::systemd::ready();
    let watchdog = tokio::spawn(super::systemd::watchdog());
    let shutdown = async {
        shutdown_signal().await;
        super::systemd::stopping();
    };
    let result = serve(listener, handle, options, shutdown).await;
    watchdog.abort();
    http_stop.cancel();
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}

/// Restores the state file at `path` into the engine and the reloader, then keeps it: written
/// once now (so a file that cannot be written stops the start, exit 2, instead of failing every
/// later change) and on every change after.
async fn keep_state(
    path: &std::path::Path,
    handle: &healthgate::Handle,
    reloader: Option<&Arc<Reloader>>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<healthgate::control::StateFile>, ExitCode> {
    use healthgate::control::state;
    let kept = state::load(path);
    state::restore(kept, handle, reloader.map(|r| &**r)).await;
    let file = healthgate::control::StateFile::start(
        path,
        handle.clone(),
        reloader.cloned(),
        Some(metrics),
    );
    if let Err(e) = file.save().await {
        eprintln!("error: server.state_file: {e}");
        return Err(ExitCode::from(2));
    }
    if let Some(reloader) = reloader {
        reloader.keep_state(file.clone());
    }
    Ok(file)
}

/// Binds an optional listener; on failure says why and returns exit code 1.
async fn bind_optional(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ExitCode> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    TcpListener::bind(addr).await.map(Some).map_err(|e| {
        eprintln!("error: cannot listen on {addr}: {e}");
        ExitCode::from(1)
    })
}

/// The configured limits, with `max_connections` lowered to fit the file descriptor limit
/// (said in the log when it is).
fn fit_limits(config: &Config, listeners: usize) -> Limits {
    let fd_limit = healthgate::listener::fd_limit();
    let (limits, lowered) =
        config
            .limits
            .fit_fd_limit(fd_limit, listeners, config.dependencies.len());
    if lowered {
        warn!(
            fd_limit = fd_limit.unwrap_or_default(),
            configured = config.limits.max_connections,
            max_connections = limits.max_connections,
            "max_connections lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
    }
    info!(
        max_connections = limits.max_connections,
        max_concurrent_streams = limits.max_concurrent_streams,
        first_request_timeout = ?limits.first_request_timeout,
        idle_timeout = ?limits.idle_timeout,
        "connection limits, per listener"
    );
    limits
}

/// Reloads the config on every SIGHUP (a failed reload is logged and counted by the
/// reloader; the running config stays).
/// systemd hears of each one (`RELOADING=1`, then `READY=1`).
async fn reload_on_sighup(mut hup: tokio::signal::unix::Signal, reloader: Arc<Reloader>) {
    while hup.recv().await.is_some() {
        super::systemd::reloading();
        let outcome = match reloader.reload("SIGHUP").await {
            Ok(_) => "serving; config reloaded",
            Err(_) => "serving; config reload rejected, the running config stays",
        };
        super::systemd::reloaded(outcome);
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM; only SIGINT will drain");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
