//! The `healthgate` binary: a thin shell over the library — arguments, logging, config loading,
//! signals and exit codes.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config. `check` follows
//! grpc_health_probe instead: 0 serving, 1 bad arguments, 2 connection failure, 3 RPC failure,
//! 4 not serving. `admin`: 0 done, 1 bad arguments, 2 connection failure, 3 rejected.

mod cli;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let args = cli::normalize_args(std::env::args_os().collect());
    // `check` (grpc_health_probe's codes) and `admin` say 1 for bad arguments.
    let is_check = args.get(1).is_some_and(|a| a == "check" || a == "admin");
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ if is_check => ExitCode::from(1),
                _ => ExitCode::from(2),
            };
        }
    };
    let runtime = match cli.runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(cli))
}
