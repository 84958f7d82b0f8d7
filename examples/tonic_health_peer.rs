//! Benchmark peer: a bare tonic-health server — what a user would run instead of healthgate —
//! with the same service names, all SERVING. Usage: `tonic_health_peer ADDR [CERT_PEM KEY_PEM]`
//! (with the two files: TLS, as `Server::builder().tls_config(…)` sets it up). Each SIGUSR1
//! flips `""` between SERVING and NOT_SERVING (for the Watch fan-out benchmark).

use tokio::net::TcpListener;
use tonic_health::ServingStatus;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let tls = match (args.next(), args.next()) {
        (Some(cert), Some(key)) => Some(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(std::fs::read(cert)?, std::fs::read(key)?),
        )),
        _ => None,
    };
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in ["", "readiness", "liveness"] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let mut flips = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let flipper = reporter.clone();
    tokio::spawn(async move {
        let mut serving = true;
        while flips.recv().await.is_some() {
            serving = !serving;
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            flipper.set_service_status("", status).await;
        }
    });
    let listener = TcpListener::bind(&addr).await?;
    println!("grpc listening on {}", listener.local_addr()?);
    // As `Server::serve(addr)` would: tonic's incoming stream with TCP_NODELAY (its default).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(service)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
