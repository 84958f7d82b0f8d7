//! Benchmark floor for the HTTP twin: the least an HTTP/1.1 server can do to answer a health
//! check — hyper's HTTP/1.1 connection answering `200 ok` (`text/plain`) to any request,
//! reading nothing. On tokio's current-thread scheduler, as healthgate runs by default, with
//! TCP_NODELAY as healthgate's listener sets it. Usage: `http_floor ADDR [STATUS [BODY_BYTES]]`:
//! with STATUS (e.g. 503) it answers that status instead, and with BODY_BYTES a body of that
//! many bytes instead of `ok`, to see what a failing status and a longer answer cost the load
//! generator and the connection (the twin's hung case answers 503 and names every dependency).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(
    _request: hyper::Request<hyper::body::Incoming>,
    status: u16,
    body: Bytes,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body))
        .expect("static response parts are valid"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let status: u16 = std::env::args().nth(2).map_or(Ok(200), |s| s.parse())?;
    let body = match std::env::args().nth(3) {
        Some(n) => Bytes::from(vec![b'x'; n.parse()?]),
        None => Bytes::from_static(b"ok"),
    };
    let listener = TcpListener::bind(&addr).await?;
    println!("http listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    TokioIo::new(tcp),
                    hyper::service::service_fn(move |r| answer(r, status, body.clone())),
                )
                .await;
        });
    }
}
