//! Entry points for the fuzz targets (`fuzz/`, cargo-afl) and their quick versions in
//! `cargo test` (`tests/it/fuzz_quick.rs`): each takes arbitrary bytes and drives one surface as
//! a client or an operator would. Hidden from the docs and not part of the API.
//!
//! The network targets run one real server (gRPC with the Admin service, HTTP with the twin,
//! the status page and push) on loopback in a background thread, started once per process, and
//! send each input over a fresh connection: the bytes go through the listener, hyper, h2, the
//! fast path, tonic and our handlers exactly as a client's would. A panic anywhere in the
//! server aborts the process (see [`init`]), so the fuzzer sees it as a crash rather than a
//! task quietly dying.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::Config;

/// The admin token of the fuzzing server (at least 16 characters, as the config requires).
pub const ADMIN_TOKEN: &str = "fuzzing-admin-token-0123";

/// How long one input may take before the driver gives up on the answer (a hang the fuzzer
/// reports with its own `-t` timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The config parser and validator: the bytes as a config file (`healthgate config validate`
/// and every reload go through the same path), then the capacity check.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_with_env(text, &|_| Some("value".into())) {
        let _ = crate::engine::capacity::warnings(config.dependencies.values());
    }
}

/// State-file loading: the bytes as the file, decoded and, when valid, restored into the
/// server's engine (as `serve` does at start).
pub fn state_file(data: &[u8]) {
    let Ok(kept) = crate::control::state::decode(data) else {
        return;
    };
    let servers = servers();
    let handle = servers.handle.clone();
    servers.runtime.block_on(async move {
        crate::control::state::restore(kept, &handle, None).await;
    });
}

/// The HTTP front (twin, status page, `/metrics`, `POST /push`): the bytes as everything a
/// client sends on one connection.
pub fn http(data: &[u8]) {
    exchange(servers().http, data);
}

/// The gRPC front (fast path, tonic, Health, Detail, reflection, Admin): the HTTP/2 preface
/// and an empty SETTINGS frame, then the bytes as the client's frames.
pub fn grpc(data: &[u8]) {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    bytes.extend_from_slice(data);
    exchange(servers().grpc, &bytes);
}

/// The Admin service: a well-formed, authenticated call whose method is chosen by the first
/// byte and whose message is the rest (gRPC-framed), so the fuzzer reaches the handlers
/// (report, override, add-dependency with a TOML spec, …) instead of the HTTP/2 layer.
pub fn admin(data: &[u8]) {
    const METHODS: [&str; 11] = [
        "Report",
        "Override",
        "Clear",
        "Refresh",
        "Reload",
        "AddDependency",
        "SetService",
        "RemoveDependency",
        "RemoveService",
        "Show",
        "Report",
    ];
    let Some((&selector, message)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(selector) % METHODS.len()];
    let path = format!("/healthgate.v1.Admin/{method}");
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let block = literal_headers(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "fuzz"),
        (":path", &path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("authorization", &authorization),
    ]);
    let mut body = vec![0];
    body.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    body.extend_from_slice(message);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    bytes.extend(frame(1, 0x4, 1, &block));
    // DATA frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    let chunks: Vec<&[u8]> = body.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        bytes.extend(frame(0, if last { 0x1 } else { 0 }, 1, chunk));
    }
    exchange(servers().grpc, &bytes);
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields without indexing, no Huffman (RFC 7541 §6.2.2); names and
/// values shorter than 127 bytes.
fn literal_headers(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        out.push(u8::try_from(name.len()).unwrap_or(126).min(126));
        out.extend_from_slice(name.as_bytes());
        out.push(u8::try_from(value.len()).unwrap_or(126).min(126));
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Sends `bytes` on a new connection to `addr`, ends the writing side, and reads whatever the
/// server answers until it closes (or [`READ_TIMEOUT`]).
fn exchange(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

/// Whether the fuzzing server still answers: a plain Check over gRPC and `GET /livez`.
pub fn still_serving() -> bool {
    let servers = servers();
    let mut http = Vec::new();
    let ok_http = TcpStream::connect(servers.http).is_ok_and(|mut s| {
        let _ = s.set_read_timeout(Some(READ_TIMEOUT));
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
            .is_ok()
            && s.read_to_end(&mut http).is_ok()
    }) && http.starts_with(b"HTTP/1.1 200");
    let block = literal_headers(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "fuzz"),
        (":path", "/grpc.health.v1.Health/Check"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    bytes.extend(frame(1, 0x4, 1, &block));
    bytes.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 0]));
    let mut answer = Vec::new();
    let ok_grpc = TcpStream::connect(servers.grpc).is_ok_and(|mut s| {
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = s.write_all(&bytes);
        let mut buf = [0u8; 4096];
        // Read until a HEADERS or DATA frame for stream 1 has come (the answer), or timeout.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if contains_stream_1_answer(&answer) {
                return true;
            }
        }
        contains_stream_1_answer(&answer)
    });
    ok_http && ok_grpc
}

/// Whether `bytes` (server frames) hold a HEADERS frame on stream 1.
fn contains_stream_1_answer(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let kind = bytes[at + 3];
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]])
                & 0x7fff_ffff;
        if kind == 1 && stream == 1 {
            return true;
        }
        at += 9 + len;
    }
    false
}

/// The fuzzing server, started once per process.
struct Servers {
    runtime: tokio::runtime::Runtime,
    handle: crate::Handle,
    grpc: SocketAddr,
    http: SocketAddr,
}

/// Makes a panic on any thread abort the process, as the fuzzer needs to see it (server
/// tasks' panics are otherwise caught by tokio). The fuzz targets call it first; the quick
/// versions in `cargo test` count panics instead. Harmless to call again.
pub fn init() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            std::process::abort();
        }));
    });
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let config = Config::from_toml_with_env(
            &format!(
                "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
                 drain_delay = \"0s\"\ndetail_token = \"fuzzing-detail-token\"\n\n\
                 [admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n\
                 [dependencies.db]\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n\
                 interval = \"1s\"\ntimeout = \"100ms\"\n\n\
                 [dependencies.job]\nkind = \"push\"\nttl = \"1h\"\ntoken = \"fuzzing-job-token\"\n\n\
                 [services.readiness]\ndependencies = {{ db = \"critical\", job = \"degrading\" }}\n"
            ),
            &|_| None,
        )
        .expect("the fuzzing config is valid");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let (handle, grpc, http) = runtime.block_on(async {
            let metrics = Arc::new(crate::metrics::Metrics::new());
            let handle = crate::Engine::from_config(&config)
                .metrics(metrics.clone())
                .start()
                .expect("the engine starts");
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let http = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let (grpc_addr, http_addr) = (
                grpc.local_addr().expect("bound"),
                http.local_addr().expect("bound"),
            );
            let router = crate::http::metrics_router(metrics.clone())
                .merge(crate::http::push_router(
                    handle.clone(),
                    Some(ADMIN_TOKEN.to_owned()),
                    None,
                ))
                .merge(crate::http::twin_router(
                    handle.clone(),
                    crate::http::TwinOptions {
                        detail_token: Some("fuzzing-detail-token".into()),
                        ..Default::default()
                    },
                ));
            tokio::spawn(crate::http::serve(
                http,
                "http",
                router,
                config.limits,
                Some(metrics.clone()),
                None,
                std::future::pending(),
            ));
            let options = crate::grpc::ServeOptions {
                detail_token: Some("fuzzing-detail-token".into()),
                admin_token: Some(ADMIN_TOKEN.to_owned()),
                metrics: Some(metrics),
                limits: config.limits,
                ..Default::default()
            };
            tokio::spawn(crate::grpc::serve(
                grpc,
                handle.clone(),
                options,
                std::future::pending(),
            ));
            (handle, grpc_addr, http_addr)
        });
        Servers {
            runtime,
            handle,
            grpc,
            http,
        }
    })
}
