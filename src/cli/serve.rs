//! `healthgate serve`: load and validate the config, start the engine, listen, serve until
//! SIGTERM/SIGINT, drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use healthgate::grpc::{ServeOptions, serve};
use healthgate::{Config, Engine};
use tokio::net::TcpListener;
use tracing::warn;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The config file.
    #[arg(long, short, env = "HEALTHGATE_CONFIG")]
    config: PathBuf,
    /// Listen on this address instead of `[server] grpc_listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Loads the config; on failure prints every problem and returns exit code 2.
pub(crate) fn load(args: &ServeArgs) -> Result<Config, ExitCode> {
    Config::load(&args.config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

pub(crate) async fn run(config: Config, args: ServeArgs) -> ExitCode {
    let listen = args.listen.unwrap_or(config.server.grpc_listen);
    serve_config(&config, listen).await
}

/// Starts the engine, binds, prints `grpc listening on ADDR` and serves until a signal.
pub(crate) async fn serve_config(config: &Config, listen: SocketAddr) -> ExitCode {
    // The engine starts (and can still refuse a probe) before anything listens.
    let handle = match Engine::from_config(config).start() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            handle.shutdown().await;
            return ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("grpc listening on {addr}"),
        Err(_) => println!("grpc listening on {listen}"),
    }
    let options = ServeOptions {
        drain_delay: config.server.drain_delay,
        drain_timeout: config.server.drain_timeout,
        detail_token: config.server.detail_token.clone(),
    };
    match serve(listener, handle, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
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
