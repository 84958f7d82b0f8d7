//! A loopback dependency for benchmarks: `bench_dependency ADDR MODE` where MODE is `healthy`
//! (200 "ok"), `hung` (accepts, never answers), `flapping` (200 and 503 alternating every
//! second) or `signal` (200 until a SIGUSR1, then 503 until the next, and so on). Answers every
//! path, so one process stands in for any number of dependencies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let mode = std::env::args().nth(2).unwrap_or_else(|| "healthy".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("http listening on {}", listener.local_addr()?);
    let started = Instant::now();
    let down = Arc::new(AtomicBool::new(false));
    if mode == "signal" {
        let mut flips =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        let down = down.clone();
        tokio::spawn(async move {
            while flips.recv().await.is_some() {
                down.fetch_xor(true, Ordering::SeqCst);
            }
        });
    }
    let app = Router::new().fallback(any(move || {
        let mode = mode.clone();
        let down = down.load(Ordering::SeqCst);
        async move {
            match mode.as_str() {
                "hung" => std::future::pending::<(StatusCode, &str)>().await,
                "flapping" if started.elapsed().as_secs() % 2 == 1 => {
                    (StatusCode::SERVICE_UNAVAILABLE, "down")
                }
                "signal" if down => (StatusCode::SERVICE_UNAVAILABLE, "down"),
                _ => (StatusCode::OK, "ok"),
            }
        }
    }));
    axum::serve(listener, app).await?;
    Ok(())
}
