//! Command-line arguments and dispatch.

mod admin;
mod check;
mod demo;
mod serve;
mod systemd;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// healthgate: answers grpc.health.v1 by probing what a service depends on.
#[derive(Debug, Parser)]
#[command(name = "healthgate", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log format (logs go to stderr; filter with RUST_LOG, e.g. RUST_LOG=healthgate=debug).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "HEALTHGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Threads that run the server and the probes. 1 (the default) runs everything on one
    /// thread: a sidecar should not start a thread per host core, and one thread answers far
    /// more Checks and Watch updates than a thread pool of one does (responses leave in
    /// batches; see BENCHMARKS.md). More threads only help when probing thousands of
    /// dependencies with TLS.
    #[arg(
        long,
        global = true,
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=1024),
        env = "HEALTHGATE_WORKER_THREADS"
    )]
    worker_threads: u16,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The async runtime `--worker-threads` asks for: one thread is tokio's current-thread
    /// scheduler, more is its multi-thread scheduler with that many workers.
    pub(crate) fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = if self.worker_threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(usize::from(self.worker_threads));
            builder
        };
        builder.enable_all().build()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve grpc.health.v1 for the dependencies and services of a config file.
    Serve(serve::ServeArgs),
    /// A self-contained demo: built-in dependencies on loopback, one of them cycling through
    /// healthy, slow and failing, so every state shows within a minute.
    Demo(demo::DemoArgs),
    /// Ask a health server (drop-in for grpc_health_probe; same flags and exit codes).
    Check(Box<check::CheckArgs>),
    /// Change a running server: push reports, overrides, reloads (needs `[admin] token`).
    Admin(admin::AdminArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file: exit 0 when valid, 2 with one line per problem when not.
    Validate {
        /// The config file.
        file: PathBuf,
    },
}

/// Runs the command and returns the process exit code.
pub(crate) async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            let (config, source) = match serve::load(&args) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            serve::run(config, source, args, cli.log_format).await
        }
        Command::Demo(args) => demo::run(args, cli.log_format).await,
        Command::Check(args) => check::run(*args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => match healthgate::Config::load(&file) {
            Ok(config) => {
                for w in healthgate::engine::capacity::warnings(config.dependencies.values()) {
                    eprintln!("{}: warning: {w}", file.display());
                }
                println!(
                    "{}: ok ({} dependencies, {} services)",
                    file.display(),
                    config.dependencies.len(),
                    config.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// grpc_health_probe spells long flags with one dash (`-addr=:50051`); `check` accepts that
/// spelling so it can replace it in existing probe definitions.
pub(crate) fn normalize_args(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_none_or(|a| a != "check") {
        return args;
    }
    for arg in args.iter_mut().skip(2) {
        let Some(text) = arg.to_str() else { continue };
        let name = text.split('=').next().unwrap_or(text);
        if name.len() > 2
            && name.starts_with('-')
            && !name.starts_with("--")
            && check::LONG_FLAGS.contains(&&name[1..])
        {
            *arg = OsString::from(format!("-{text}"));
        }
    }
    args
}
