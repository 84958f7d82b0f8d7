//! Reliability helper: the dependency fault matrix, over time. `fault_matrix SECONDS COMMAND
//! [ARGS…]` serves one loopback dependency per fault (below), runs `COMMAND ARGS… serve --config
//! FILE` (e.g. `taskset -c 0 target/release/healthgate`) probing every one of them every 200 ms
//! with a 150 ms timeout (fall = rise = 1), and for SECONDS reads the server's `/status.json`
//! once a second. Each reading must show every dependency with its expected health and reason,
//! decided within timeout + 100 ms, and checked within the last two seconds (the engine keeps
//! probing whatever the faults do). The server's RSS and open file descriptors are read after a
//! minute (the baseline; half of SECONDS when shorter) and at the end.
//!
//! | dependency | fault | expected |
//! |---|---|---|
//! | `healthy` | none (control) | Healthy |
//! | `refused` | connection refused | `connection refused` |
//! | `never-accepted` | a listener that never accepts (then a full accept queue: SYNs dropped) | `timed out after 150ms` |
//! | `hung-after-accept` | accepts, never answers | `timed out after 150ms` |
//! | `hung-mid-body` | headers and a first chunk, then nothing | `timed out after 150ms` |
//! | `garbage` | bytes that are not HTTP, then close | Unhealthy (the client's parse error) |
//! | `oversized` | an endless body under a body condition | `body larger than 65536 bytes` |
//! | `tls-unknown-issuer` | HTTPS with a self-signed certificate | `tls: …UnknownIssuer…` |
//! | `tls-on-plain-port` | HTTPS to a plain HTTP server | `tls: …` |
//! | `dns` | a name that cannot resolve (`.invalid`) | `dns: …` (or the timeout, by resolver) |
//! | `grpc-not-serving` | tonic-health answering NOT_SERVING | `NOT_SERVING` |
//! | `grpc-no-health` | a gRPC server without the health service | `no health service` (UNIMPLEMENTED) |
//! | `grpc-not-grpc` | an HTTP server that is not gRPC (axum: h2c, `404`) | `no health service` |
//! | `grpc-garbage` | bytes that are not HTTP/2 | Unhealthy, `grpc status CODE: CAUSE` (the transport failure our side saw) |
//! | `grpc-hung` | accepts, never answers | `timed out after 150ms` (or `unavailable: operation timed out` when the channel's keep-alive ping, every 30 s, finds the connection dead first) |
//! | `tcp-refused` | TCP connection refused | `connection refused` |
//!
//! Prints each dependency's last verdict, then one `key=value` line (readings, readings where every dependency was right, the first
//! wrong one if any, RSS and fds at the baseline and at the end) and exits 1 if any reading was
//! wrong (RELIABILITY.md: correct health within timeout + 100 ms, RSS flat within 2 %).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[path = "support/proc.rs"]
mod proc;
#[path = "support/serve.rs"]
mod serve;
use proc::rss_kib;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT_MS: f64 = 150.0;

/// What a dependency's reading must show.
enum Expect {
    Healthy,
    /// Unhealthy, with a reason that contains this.
    Reason(&'static str),
    /// Unhealthy, with a reason that contains one of these.
    OneOf(&'static [&'static str]),
    /// Unhealthy, whatever the reason (the library's own words).
    Unhealthy,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: fault_matrix SECONDS COMMAND [ARGS…]";
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().ok_or(USAGE)?.parse()?;
    let program = args.next().ok_or(USAGE)?;
    let prefix: Vec<String> = args.collect();

    let healthy = serve_app(Router::new().route("/health", get(|| async { "ok" }))).await?;
    let refused = closed_port().await?;
    // Kept open and never accepted: the kernel completes handshakes until the queue is full.
    let never_accepted = std::net::TcpListener::bind("127.0.0.1:0")?;
    let hung = hold_forever().await?;
    let mid_body = serve_app(Router::new().route(
        "/health",
        get(|| async {
            let first = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b"{\"status\":"))
            });
            Body::from_stream(first.chain(futures_util::stream::pending()))
        }),
    ))
    .await?;
    let garbage = garbage_server().await?;
    let oversized = serve_app(Router::new().route(
        "/health",
        get(|| async {
            let chunks = futures_util::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; 16 * 1024]))
            });
            (
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(chunks),
            )
                .into_response()
        }),
    ))
    .await?;
    let self_signed = self_signed_tls_server().await?;
    let (_reporter, not_serving) = grpc_not_serving().await?;
    let no_health = grpc_without_health().await?;

    let deps: Vec<(&str, String, Expect)> = vec![
        (
            "healthy",
            http(&format!("http://{healthy}/health")),
            Expect::Healthy,
        ),
        (
            "refused",
            http(&format!("http://{refused}/health")),
            Expect::Reason("connection refused"),
        ),
        (
            "never-accepted",
            http(&format!("http://{}/health", never_accepted.local_addr()?)),
            Expect::Reason("timed out after 150ms"),
        ),
        (
            "hung-after-accept",
            http(&format!("http://{hung}/health")),
            Expect::Reason("timed out after 150ms"),
        ),
        (
            "hung-mid-body",
            http(&format!("http://{mid_body}/health")),
            Expect::Reason("timed out after 150ms"),
        ),
        (
            "garbage",
            http(&format!("http://{garbage}/health")),
            Expect::Unhealthy,
        ),
        (
            "oversized",
            format!(
                "{}body = [{{ contains = \"ok\" }}]\n",
                http(&format!("http://{oversized}/health"))
            ),
            Expect::Reason("body larger than 65536 bytes"),
        ),
        (
            "tls-unknown-issuer",
            http(&format!("https://localhost:{}/health", self_signed.port())),
            Expect::Reason("UnknownIssuer"),
        ),
        (
            "tls-on-plain-port",
            http(&format!("https://localhost:{}/health", healthy.port())),
            Expect::Reason("tls: "),
        ),
        (
            "dns",
            http("http://healthgate-fault.invalid/health"),
            Expect::OneOf(&["dns: ", "timed out after 150ms"]),
        ),
        (
            "grpc-not-serving",
            grpc(&format!("http://{not_serving}")),
            Expect::Reason("NOT_SERVING"),
        ),
        (
            "grpc-no-health",
            grpc(&format!("http://{no_health}")),
            Expect::Reason("no health service"),
        ),
        (
            "grpc-not-grpc",
            grpc(&format!("http://{healthy}")),
            Expect::Reason("no health service"),
        ),
        (
            "grpc-garbage",
            grpc(&format!("http://{garbage}")),
            Expect::Unhealthy,
        ),
        (
            "grpc-hung",
            grpc(&format!("http://{hung}")),
            Expect::OneOf(&["timed out after 150ms", "unavailable: operation timed out"]),
        ),
        (
            "tcp-refused",
            format!("kind = \"tcp\"\naddress = \"{refused}\"\n"),
            Expect::Reason("connection refused"),
        ),
    ];

    let dir = std::env::temp_dir().join(format!("hg-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("healthgate.toml");
    {
        let mut file = std::fs::File::create(&config)?;
        writeln!(
            file,
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             drain_delay = \"0s\"\n\n[defaults]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
             fall = 1\nrise = 1\njitter = 0.0\n"
        )?;
        for (name, spec, _) in &deps {
            writeln!(file, "[dependencies.{name}]\n{spec}")?;
        }
    }
    let (mut child, addrs) = serve::serve_listening(&program, &prefix, &config, &["http"]).await?;
    let pid = child.id();
    let http_addr: std::net::SocketAddr = addrs[0].parse()?;
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());

    // Past the first rounds (the first outcome of each dependency).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_at = Duration::from_secs(60.min(seconds / 2));
    let started = Instant::now();
    let (mut readings, mut right, mut first_wrong) = (0u64, 0u64, None::<String>);
    let mut baseline = None;
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        next += Duration::from_secs(1);
        let json = status_json(http_addr).await?;
        readings += 1;
        match check(&json, &deps) {
            Ok(()) => right += 1,
            Err(wrong) => {
                first_wrong.get_or_insert(wrong);
            }
        }
        if baseline.is_none() && started.elapsed() >= baseline_at {
            baseline = Some((rss_kib(pid)?, fds()?));
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let (rss1, fds1) = (rss_kib(pid)?, fds()?);
    let (rss0, fds0) = baseline.unwrap_or((rss1, fds1));
    // The last reading's verdicts, one line each, for the record.
    let last = status_json(http_addr).await?;
    for d in last["dependencies"].as_array().into_iter().flatten() {
        println!(
            "  {:20} {:9} {:>6} ms  {}",
            d["name"].as_str().unwrap_or(""),
            d["health"].as_str().unwrap_or(""),
            d["latency_ms"].as_f64().unwrap_or(0.0),
            d["reason"].as_str().unwrap_or("")
        );
    }
    println!(
        "dependencies={} seconds={seconds} readings={readings} all_right={right} \
         rss_kib_baseline={rss0} rss_kib_end={rss1} rss_growth_pct={:.2} fds_baseline={fds0} \
         fds_end={fds1} first_wrong={:?}",
        deps.len(),
        (rss1 as f64 - rss0 as f64) / rss0 as f64 * 100.0,
        first_wrong.as_deref().unwrap_or("none")
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    if right != readings {
        std::process::exit(1);
    }
    Ok(())
}

fn http(url: &str) -> String {
    format!("kind = \"http\"\nurl = \"{url}\"\n")
}

fn grpc(target: &str) -> String {
    format!("kind = \"grpc\"\ntarget = \"{target}\"\n")
}

/// Every dependency in `json` (a `/status.json`) as expected, or what was not.
fn check(json: &serde_json::Value, deps: &[(&str, String, Expect)]) -> Result<(), String> {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_millis() as f64;
    let listed = json["dependencies"].as_array().ok_or("no dependencies")?;
    for (name, _, expect) in deps {
        let d = listed
            .iter()
            .find(|d| d["name"] == *name)
            .ok_or_else(|| format!("{name}: missing"))?;
        let health = d["health"].as_str().unwrap_or("");
        let reason = d["reason"].as_str().unwrap_or("");
        let fine = match expect {
            Expect::Healthy => health == "healthy",
            Expect::Reason(part) => health == "unhealthy" && reason.contains(part),
            Expect::OneOf(parts) => {
                health == "unhealthy" && parts.iter().any(|p| reason.contains(p))
            }
            Expect::Unhealthy => health == "unhealthy" && !reason.is_empty(),
        };
        if !fine {
            return Err(format!("{name}: {health} {reason:?}"));
        }
        let latency = d["latency_ms"].as_f64().unwrap_or(f64::MAX);
        if latency > TIMEOUT_MS + 100.0 {
            return Err(format!("{name}: decided after {latency} ms"));
        }
        let checked = d["checked_at"].as_f64().unwrap_or(0.0);
        if now_ms - checked > 2_000.0 {
            return Err(format!("{name}: last checked {} ms ago", now_ms - checked));
        }
    }
    Ok(())
}

/// `GET /status.json` over HTTP/1.0 (no Host, the connection closes after the answer).
async fn status_json(
    addr: std::net::SocketAddr,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /status.json HTTP/1.0\r\n\r\n").await?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await?;
    let text = String::from_utf8(answer)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("status.json: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(serde_json::from_str(body)?)
}

async fn serve_app(app: Router) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn closed_port() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    listener.local_addr()
}

/// Accepts and never answers; each connection is dropped when its client closes it.
async fn hold_forever() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

/// Answers every connection with bytes that are neither HTTP/1.1 nor HTTP/2, then closes it.
async fn garbage_server() -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp
                    .write_all(b"\x16\x03\x01garbage\x00\xff\r\n\r\nnot a protocol\r\n")
                    .await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A TLS server for `localhost` whose certificate signs itself (no trusted issuer).
async fn self_signed_tls_server() -> Result<std::net::SocketAddr, Box<dyn std::error::Error>> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The client rejects the certificate: the handshake fails here too.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    Ok(addr)
}

/// tonic-health answering NOT_SERVING for `""`; the reporter must be kept alive.
async fn grpc_not_serving()
-> Result<(tonic_health::server::HealthReporter, std::net::SocketAddr), Box<dyn std::error::Error>>
{
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = tonic::transport::Server::builder().add_service(service);
    tokio::spawn(async move {
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    Ok((reporter, addr))
}

/// A gRPC server with one service that is not health (reflection): Health/Check is
/// UNIMPLEMENTED.
async fn grpc_without_health() -> Result<std::net::SocketAddr, Box<dyn std::error::Error>> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = tonic::transport::Server::builder().add_service(reflection);
    tokio::spawn(async move {
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    Ok(addr)
}
