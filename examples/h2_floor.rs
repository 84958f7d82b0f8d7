//! Benchmark floor: the least an HTTP/2 server can do to answer a gRPC health Check — a fixed,
//! valid `SERVING` response (headers, one 7-byte message, `grpc-status: 0` trailers) for any
//! request, without decoding it. Nothing that really serves grpc.health.v1 can be cheaper.
//! It runs on tokio's current-thread scheduler, as healthgate does by default: with it,
//! responses to many streams leave in one write (a one-worker thread pool writes about once per
//! response), so anything else would not be the floor.
//! Usage: `h2_floor ADDR`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// `HealthCheckResponse { status: SERVING }`, gRPC-framed.
const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];

async fn answer(
    _request: hyper::Request<hyper::body::Incoming>,
) -> Result<
    hyper::Response<
        StreamBody<
            futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
        >,
    >,
    Infallible,
> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(&SERVING))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Ok(hyper::Response::builder()
        .header("content-type", "application/grpc")
        .body(body)
        .expect("static response parts are valid"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("grpc listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer))
                .await;
        });
    }
}
