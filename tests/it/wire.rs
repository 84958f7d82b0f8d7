//! The front at the HTTP/2 level, with a raw h2 client: exact frames, a Watch client that never
//! reads, and the drain sequence with its timings.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use healthgate::config::ServiceSpec;
use healthgate::grpc::ServeOptions;
use healthgate::{Engine, Handle, Health, Impact};
use prost::Message;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::support::{Front, PATIENCE, Switch, rss_bytes, service_is};

/// A raw HTTP/2 connection whose streams have `window` bytes of flow-control credit that is
/// never given back unless the test reads.
async fn h2_client(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    client
}

/// Sends one gRPC call with `payload` (already framed) and extra headers.
async fn call(
    client: h2::client::SendRequest<Bytes>,
    method: &str,
    payload: Vec<u8>,
    headers: &[(&str, &str)],
) -> http::Response<h2::RecvStream> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://any-authority.example/grpc.health.v1.Health/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut client = client.ready().await.expect("ready");
    let (response, mut body) = client
        .send_request(request.body(()).expect("valid request"), false)
        .expect("sent");
    body.send_data(Bytes::from(payload), true)
        .expect("body sent");
    response.await.expect("response headers")
}

fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// gzip of the empty input: an empty HealthCheckRequest (service "").
const GZIP_EMPTY: [u8; 20] = [
    0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

async fn healthy_engine() -> Handle {
    let switch = Switch::new();
    let handle = Engine::builder()
        .dependency("db", switch.spec())
        .start()
        .expect("starts");
    service_is(&handle, "", Health::Healthy).await;
    std::mem::forget(switch); // the probe holds its own Arc; keep the test's too
    handle
}

#[tokio::test]
async fn check_response_is_an_uncompressed_frame_with_grpc_status_0() {
    let front = Front::start(healthy_engine().await, ServeOptions::default()).await;
    for (payload, headers) in [
        // No metadata at all, any :authority.
        (frame(false, &[]), vec![]),
        // A gzip-compressed request from a client that accepts gzip: still answered plainly.
        (
            frame(true, &GZIP_EMPTY),
            vec![
                ("grpc-encoding", "gzip"),
                ("grpc-accept-encoding", "gzip"),
                ("grpc-timeout", "5S"),
            ],
        ),
    ] {
        let response = call(
            h2_client(front.addr, 65_535).await,
            "Check",
            payload,
            &headers,
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert!(
            response.headers().get("grpc-encoding").is_none(),
            "response not compressed"
        );
        assert_eq!(response.headers()["x-health-state"], "healthy");
        let mut body = response.into_body();
        let data = body.data().await.expect("a data frame").expect("readable");
        assert_eq!(data[0], 0, "compressed flag off");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let message =
            HealthCheckResponse::decode(&data[5..5 + len]).expect("a HealthCheckResponse");
        assert_eq!(message.status(), ServingStatus::Serving);
        let trailers = body.trailers().await.expect("trailers").expect("present");
        assert_eq!(trailers["grpc-status"], "0");
    }
}

#[tokio::test]
async fn a_watcher_that_never_reads_holds_one_pending_value_and_slows_nobody() {
    let up = Switch::new();
    let down = Switch::new();
    down.set(healthgate::Verdict::unhealthy("down"));
    let handle = Engine::builder()
        .dependency("up", up.spec())
        .dependency("down", down.spec())
        .service("flappy", ServiceSpec::with_all(["up"], Impact::Critical))
        .start()
        .expect("starts");
    service_is(&handle, "", Health::Unhealthy).await;
    service_is(&handle, "flappy", Health::Healthy).await;
    let front = Front::start(handle.clone(), ServeOptions::default()).await;

    // 256 bytes of credit: ~36 seven-byte messages, then the server must hold back. (Bigger
    // windows trip the h2 client's own flood guard: it counts buffered DATA frames under
    // 256 bytes and sends itself a GOAWAY past ~100 of them.)
    let stuck = call(
        h2_client(front.addr, 256).await,
        "Watch",
        frame(
            false,
            &HealthCheckRequest {
                service: "flappy".into(),
            }
            .encode_to_vec(),
        ),
        &[],
    )
    .await;
    let mut reader = HealthClient::new(front.channel().await)
        .watch(HealthCheckRequest {
            service: "flappy".into(),
        })
        .await
        .expect("watch")
        .into_inner();

    let rss_before = rss_bytes();
    let flips = 10_000;
    for i in 0..flips {
        let dep = if i % 2 == 0 { "down" } else { "up" };
        handle
            .set_service("flappy", ServiceSpec::with_all([dep], Impact::Critical))
            .await
            .expect("flip");
    }
    // 10,000 is even: the last flip set "up".
    let grown = rss_bytes().saturating_sub(rss_before);

    // Check stays fast while the stuck stream sits there.
    let mut client = HealthClient::new(front.channel().await);
    let started = Instant::now();
    for _ in 0..200 {
        client
            .check(HealthCheckRequest {
                service: "flappy".into(),
            })
            .await
            .expect("check");
    }
    let per_check = started.elapsed() / 200;
    assert!(
        per_check < Duration::from_millis(20),
        "Check took {per_check:?} on average"
    );

    // A reading watcher converges on the final value.
    tokio::time::timeout(PATIENCE, async {
        while reader.message().await.expect("ok").expect("open").status() != ServingStatus::Serving
        {
        }
    })
    .await
    .expect("the reading watcher got the latest value");

    // The stuck watcher, read at last: a bounded backlog, ending with the latest value.
    let mut body = stuck.into_body();
    let mut received = Vec::new();
    let mut buffer = Vec::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_millis(500), body.data()).await
    {
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
        while buffer.len() >= 5 {
            let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() < 5 + len {
                break;
            }
            received.push(
                HealthCheckResponse::decode(&buffer[5..5 + len])
                    .expect("message")
                    .status(),
            );
            buffer.drain(..5 + len);
        }
    }
    assert_eq!(
        received.last(),
        Some(&ServingStatus::Serving),
        "latest value delivered"
    );
    assert!(
        received.len() < 60,
        "{} of {flips} flips were queued for a client that did not read",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[0] != w[1]),
        "never the same value twice in a row"
    );
    assert!(
        grown < 32 << 20,
        "RSS grew by {grown} bytes during the flips"
    );
}

#[tokio::test]
async fn drain_goes_not_serving_keeps_serving_then_ends_streams_within_the_timeouts() {
    let handle = healthy_engine().await;
    let drain_delay = Duration::from_millis(600);
    let drain_timeout = Duration::from_millis(1000);
    let mut front = Front::start(
        handle.clone(),
        ServeOptions {
            drain_delay,
            drain_timeout,
            detail_token: None,
            ..ServeOptions::default()
        },
    )
    .await;
    let mut watcher = HealthClient::new(front.channel().await)
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watcher.message().await.expect("ok").expect("open").status(),
        ServingStatus::Serving
    );
    // A watcher whose 7 bytes of credit are spent by the first message: it can never receive
    // the final NOT_SERVING, so only drain_timeout can end its stream.
    let stuck = call(
        h2_client(front.addr, 7).await,
        "Watch",
        frame(false, &[]),
        &[],
    )
    .await;

    let t0 = Instant::now();
    front.begin_shutdown();
    let told = tokio::time::timeout(PATIENCE, watcher.message())
        .await
        .expect("told")
        .expect("ok")
        .expect("open");
    assert_eq!(told.status(), ServingStatus::NotServing);
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "NOT_SERVING took {:?}",
        t0.elapsed()
    );

    // During drain_delay the server still takes new connections and RPCs.
    let mut late = HealthClient::new(front.channel().await);
    let answer = late
        .check(HealthCheckRequest::default())
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::NotServing);
    assert!(t0.elapsed() < drain_delay);

    // After drain_delay the Watch stream ends cleanly (after its final NOT_SERVING).
    let end = tokio::time::timeout(PATIENCE, watcher.message())
        .await
        .expect("ended in time");
    assert!(matches!(end, Ok(None)), "stream ended with OK: {end:?}");
    let ended = t0.elapsed();
    assert!(
        ended >= drain_delay && ended < drain_delay + Duration::from_millis(500),
        "stream ended after {ended:?}"
    );

    // The stuck watcher cannot hold exit past drain_delay + drain_timeout.
    let result = tokio::time::timeout(PATIENCE, &mut front.done)
        .await
        .expect("server exits")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
    let exited = t0.elapsed();
    assert!(
        exited >= drain_delay + drain_timeout - Duration::from_millis(50),
        "exit waited for the stuck stream up to drain_timeout: {exited:?}"
    );
    assert!(
        exited < drain_delay + drain_timeout + Duration::from_millis(700),
        "exit took {exited:?}"
    );
    drop(stuck);
    assert!(
        handle.snapshot().services.iter().all(|s| !s.status.serving),
        "nothing turns back to SERVING"
    );
}

#[tokio::test]
async fn a_compressed_flag_without_grpc_encoding_is_a_protocol_error() {
    let front = Front::start(healthy_engine().await, ServeOptions::default()).await;
    let response = call(
        h2_client(front.addr, 65_535).await,
        "Check",
        frame(true, &GZIP_EMPTY),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
    // Trailers-only: the status is in the headers, as tonic sends it.
    assert_eq!(response.headers()["grpc-status"], "13");
    let message = response.headers()["grpc-message"].to_str().expect("ascii");
    assert!(
        message.starts_with("protocol%20error") || message.starts_with("protocol error"),
        "{message}"
    );
}

/// The status code and message of a call's answer: from the headers of a trailers-only
/// response, else from the trailers after the body.
async fn status_of(mut response: http::Response<h2::RecvStream>) -> (String, String) {
    let text = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    };
    if response.headers().contains_key("grpc-status") {
        let h = response.headers();
        return (text(h, "grpc-status"), text(h, "grpc-message"));
    }
    let body = response.body_mut();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    (
        text(&trailers, "grpc-status"),
        text(&trailers, "grpc-message"),
    )
}

#[tokio::test]
async fn the_fast_path_answers_bad_requests_with_tonics_own_statuses_and_messages() {
    let handle = healthy_engine().await;
    // The fast path in front (as `serve` has it), and tonic alone (the reference).
    let fast = Front::start(handle.clone(), ServeOptions::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tonic_addr = listener.local_addr().expect("bound");
    let front = healthgate::grpc::Front::new(handle.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(front.health_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let not_protobuf = frame(false, &[0x0a, 0x05, b'a']);
    let mut trailing = frame(false, &[]);
    trailing.push(0);
    let cases: [(&str, Vec<u8>); 6] = [
        ("no message", Vec::new()),
        (
            "compressed flag without grpc-encoding",
            frame(true, &GZIP_EMPTY),
        ),
        ("truncated prefix", vec![0, 0, 0]),
        ("a message longer than its frame", vec![0, 0, 0, 0, 9, 0x0a]),
        ("bytes after the message", trailing),
        ("not protobuf", not_protobuf),
    ];
    let unknown = {
        let message = HealthCheckRequest {
            service: "no-such-service".into(),
        };
        ("unknown service", frame(false, &message.encode_to_vec()))
    };
    for (what, payload) in cases.into_iter().chain([unknown]) {
        for method in ["Check", "Watch"] {
            if method == "Watch" && what == "unknown service" {
                // Watch answers SERVICE_UNKNOWN and stays open (both paths): no status to read.
                continue;
            }
            let ours = call(
                h2_client(fast.addr, 65_535).await,
                method,
                payload.clone(),
                &[],
            );
            let ours = status_of(ours.await).await;
            let tonics = call(
                h2_client(tonic_addr, 65_535).await,
                method,
                payload.clone(),
                &[],
            );
            let tonics = status_of(tonics.await).await;
            assert_eq!(ours, tonics, "{method}: {what}");
            assert_ne!(ours.0, "0", "{method}: {what} must fail");
        }
    }
}

/// One HTTP/2 frame: length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2):
/// exactly the bytes given, so an `:authority` no client library would send can be.
fn literal_header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127, "one-byte lengths");
        out.push(0);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// grpcio's multi-address targets send `addr1,addr2` as `:authority`, grpc-java over a Unix
/// socket the socket path: upstream h2 resets such streams with PROTOCOL_ERROR before any
/// handler runs. The patched h2 (vendor/h2/PATCHED.md) serves them as if they had none; this
/// fails if the patch is lost.
#[tokio::test]
async fn a_malformed_authority_is_served_as_if_absent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let front = Front::start(healthy_engine().await, ServeOptions::default()).await;
    let authorities = [
        "127.0.0.1:1,127.0.0.1:2",
        "/run/healthgate/grpc.sock",
        "a b",
    ];
    let mut tcp = TcpStream::connect(front.addr).await.expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[])); // SETTINGS
    for (i, authority) in authorities.iter().enumerate() {
        let stream = 1 + 2 * i as u32;
        let block = literal_header_block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", "/grpc.health.v1.Health/Check"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        out.extend(h2_frame(1, 0x4, stream, &block)); // HEADERS, END_HEADERS
        out.extend(h2_frame(0, 0x1, stream, &frame(false, &[]))); // DATA, END_STREAM
    }
    tcp.write_all(&out).await.expect("sent");

    // Read frames until every stream got its SERVING message (or one was reset).
    let serving = frame(false, &[8, 1]); // HealthCheckResponse { status: SERVING }
    let mut answered = std::collections::BTreeSet::new();
    let read = async {
        while answered.len() < authorities.len() {
            let mut head = [0u8; 9];
            tcp.read_exact(&mut head).await.expect("a frame");
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            tcp.read_exact(&mut payload).await.expect("its payload");
            match head[3] {
                3 => panic!(
                    "stream {stream} was reset (RST_STREAM {payload:?}): the h2 patch is lost"
                ),
                7 => panic!("GOAWAY {payload:?}"),
                0 if payload == serving => {
                    answered.insert(stream);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("every request answered in time");
    assert_eq!(answered.into_iter().collect::<Vec<_>>(), vec![1, 3, 5]);
}
