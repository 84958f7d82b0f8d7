//! `healthgate demo`: self-contained. Starts two dependencies on loopback — an HTTP endpoint
//! that cycles healthy → slow → failing → healthy, and a gRPC server with its own health
//! service — and serves them, so a newcomer sees every state (and its transitions in the log)
//! within a minute, with no files or setup.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use healthgate::Config;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::telemetry::LogFormat;

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where to serve grpc.health.v1.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Where to serve `/metrics`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    http_listen: SocketAddr,
    /// How long each phase of the cycling dependency lasts.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    phase: Duration,
}

/// The cycling dependency's phases, in order.
const PHASES: [&str; 3] = ["healthy", "slow", "failing"];

/// Probe timing scaled to the phase, so transitions show early in each phase.
struct Timing {
    interval: Duration,
    timeout: Duration,
    degraded_after: Duration,
    slow_answer: Duration,
}

impl Timing {
    fn for_phase(phase: Duration) -> Timing {
        let interval = (phase / 6).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let timeout = interval / 2;
        Timing {
            interval,
            timeout,
            degraded_after: timeout * 2 / 5,
            slow_answer: timeout * 7 / 10,
        }
    }
}

pub(crate) async fn run(args: DemoArgs, log_format: LogFormat) -> ExitCode {
    let timing = Timing::for_phase(args.phase);
    let (http, grpc) = match start_dependencies(args.phase, timing.slow_answer).await {
        Ok(addrs) => addrs,
        Err(e) => {
            eprintln!("error: cannot start the demo dependencies: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "demo http dependency on {http} (cycles healthy, slow, failing every {})",
        humantime::format_duration(args.phase)
    );
    println!("demo grpc dependency on {grpc}");
    let toml = format!(
        r#"
[server]
drain_delay = "1s"
drain_timeout = "2s"

[defaults]
interval = "{interval}"
timeout = "{timeout}"
fall = 2
rise = 2

[dependencies.orders-api]
kind = "http"
url = "http://{http}/health"
degraded_after = "{degraded_after}"

[dependencies.inventory]
kind = "grpc"
target = "http://{grpc}"
service = "demo.v1.Inventory"

[services.""]
dependencies = {{ orders-api = "critical", inventory = "critical" }}

[services.readiness]
dependencies = {{ orders-api = "critical", inventory = "degrading" }}

[services.liveness]
"#,
        interval = humantime::format_duration(timing.interval),
        timeout = humantime::format_duration(timing.timeout),
        degraded_after = humantime::format_duration(timing.degraded_after),
    );
    let mut config = match Config::from_toml(&toml) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    config.server.grpc_listen = args.listen.into();
    config.server.http_listen = Some(args.http_listen.into());
    super::serve::serve_config(&config, None, log_format).await
}

async fn start_dependencies(
    phase: Duration,
    slow_answer: Duration,
) -> std::io::Result<(SocketAddr, SocketAddr)> {
    let started = Instant::now();
    let app = Router::new().route(
        "/health",
        get(move || async move {
            let index =
                (started.elapsed().as_nanos() / phase.as_nanos().max(1)) as usize % PHASES.len();
            match PHASES[index] {
                "healthy" => (StatusCode::OK, "ok"),
                "slow" => {
                    tokio::time::sleep(slow_answer).await;
                    (StatusCode::OK, "ok, slowly")
                }
                _ => (StatusCode::SERVICE_UNAVAILABLE, "failing"),
            }
        }),
    );
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    tokio::spawn(async move { axum::serve(http, app).await });
    tokio::spawn(announce_phases(started, phase));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("demo.v1.Inventory", tonic_health::ServingStatus::Serving)
        .await;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let grpc_addr = grpc.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(grpc));
    tokio::spawn(async move {
        let _reporter = reporter; // dropping it would end the health service's status updates
        server.await
    });
    Ok((http_addr, grpc_addr))
}

/// Logs each phase change of the cycling dependency, so the log tells cause before effect.
async fn announce_phases(started: Instant, phase: Duration) {
    for n in 1usize.. {
        tokio::time::sleep_until(started + phase * u32::try_from(n).unwrap_or(u32::MAX)).await;
        info!(
            dependency = "orders-api",
            phase = PHASES[n % PHASES.len()],
            "demo dependency changes phase"
        );
    }
}
