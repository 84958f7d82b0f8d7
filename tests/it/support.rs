//! Real dependencies on 127.0.0.1:0 for the tests: an HTTP server whose answer the test
//! controls, raw TCP servers that hang or talk garbage, TLS and mTLS servers with certificates
//! made on the fly, tonic health servers; and helpers that run an engine and wait on events.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use healthgate::snapshot::DependencyState;
use healthgate::{Config, Engine, Handle, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Long enough for anything on loopback; only reached when a test is failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// What the controllable HTTP server answers.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

impl Default for Answer {
    fn default() -> Answer {
        Answer {
            status: 200,
            body: "ok".into(),
            delay: Duration::ZERO,
        }
    }
}

/// An axum server whose answer the test can change, recording what it received.
#[derive(Debug, Clone)]
pub(crate) struct HttpServer {
    pub(crate) addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    pub(crate) requests: Arc<AtomicUsize>,
    pub(crate) last_headers: Arc<Mutex<Option<HeaderMap>>>,
    /// Path and query of the first requests received (at most 1,000).
    seen: Arc<Mutex<Vec<String>>>,
}

impl HttpServer {
    pub(crate) async fn start() -> HttpServer {
        let server = HttpServer {
            addr: "127.0.0.1:0".parse().expect("literal"),
            answer: Arc::default(),
            requests: Arc::default(),
            last_headers: Arc::default(),
            seen: Arc::default(),
        };
        let listener = TcpListener::bind(server.addr).await.expect("bind loopback");
        let server = HttpServer {
            addr: listener.local_addr().expect("bound"),
            ..server
        };
        let app = server.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    pub(crate) fn router(&self) -> Router {
        Router::new().fallback(any(answer)).with_state(self.clone())
    }

    pub(crate) fn set(&self, answer: Answer) {
        *self.answer.lock().expect("not poisoned") = answer;
    }

    /// Path and query of the requests received so far.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.seen.lock().expect("not poisoned").clone()
    }

    /// The headers of the last request received; panics if none arrived.
    pub(crate) fn headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .expect("not poisoned")
            .clone()
            .expect("a request was received")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn answer(
    State(server): State<HttpServer>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> impl IntoResponse {
    server.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut seen = server.seen.lock().expect("not poisoned");
        if seen.len() < 1000 {
            seen.push(uri.path_and_query().map_or("", |p| p.as_str()).to_owned());
        }
    }
    *server.last_headers.lock().expect("not poisoned") = Some(headers);
    let answer = server.answer.lock().expect("not poisoned").clone();
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    (
        StatusCode::from_u16(answer.status).expect("valid test status"),
        answer.body,
    )
}

/// A TCP server that accepts connections and never says anything.
pub(crate) async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A TCP server that reads a request and answers with bytes that are not HTTP.
pub(crate) async fn garbage_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"\x00\x01garbage\xff\xfe not http at all\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

/// A loopback port with nothing listening.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("bound")
    // dropped here: connections are refused
}

/// A fresh directory for files a test writes (certificates).
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "healthgate-it-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Starts an engine from config text (env lookups see nothing).
pub(crate) fn start(toml: &str) -> Handle {
    let config = Config::from_toml_with_env(toml, &|_| None).expect("valid test config");
    Engine::from_config(&config).start().expect("engine starts")
}

/// Waits until `dependency` has a first outcome and returns it.
pub(crate) async fn first_outcome(handle: &Handle, dependency: &str) -> Outcome {
    state_where(handle, dependency, |d| d.last_outcome.is_some())
        .await
        .last_outcome
        .expect("checked above")
}

/// Waits until the dependency's published state satisfies `pred`, and returns that state.
pub(crate) async fn state_where(
    handle: &Handle,
    dependency: &str,
    pred: impl Fn(&DependencyState) -> bool,
) -> DependencyState {
    let mut rx = handle.subscribe();
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let snapshot = rx.borrow_and_update().clone();
            if let Some(d) = snapshot.dependency(dependency)
                && pred(d)
            {
                return d.clone();
            }
            rx.changed().await.expect("engine alive");
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "dependency {dependency} never reached the expected state: {:#?}",
            handle.snapshot().dependency(dependency)
        )
    })
}

/// Runs a single-dependency engine until its first outcome.
pub(crate) async fn probe_once(dependency_toml: &str) -> Outcome {
    let handle = start(&format!(
        "[dependencies.dep]\n{dependency_toml}\ninterval = \"30s\"\njitter = 0.0\n"
    ));
    let outcome = first_outcome(&handle, "dep").await;
    handle.shutdown().await;
    outcome
}

/// The reason of an outcome, or "" when healthy.
pub(crate) fn reason(outcome: &Outcome) -> &str {
    outcome.verdict.reason().map_or("", |r| r.as_str())
}

/// Resident set size of this process, in bytes (Linux).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("linux /proc");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm rss field");
    pages * 4096
}

/// A healthgate gRPC server running in-process on 127.0.0.1:0.
pub(crate) struct Front {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<Result<(), healthgate::grpc::ServeError>>,
}

impl Front {
    pub(crate) async fn start(handle: Handle, options: healthgate::grpc::ServeOptions) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(healthgate::grpc::serve(listener, handle, options, async {
            let _ = rx.await;
        }));
        Front {
            addr,
            shutdown: Some(tx),
            done,
        }
    }

    /// Starts the drain sequence, as SIGTERM does.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub(crate) async fn channel(&self) -> tonic::transport::Channel {
        channel(self.addr).await
    }
}

/// An in-process probe whose verdict the test flips; with fall = rise = 1 and a short interval
/// the dependency follows within one interval.
#[derive(Debug)]
pub(crate) struct Switch(Mutex<healthgate::Verdict>);

impl Switch {
    pub(crate) fn new() -> Arc<Switch> {
        Arc::new(Switch(Mutex::new(healthgate::Verdict::Healthy)))
    }

    pub(crate) fn set(&self, v: healthgate::Verdict) {
        *self.0.lock().expect("not poisoned") = v;
    }

    pub(crate) fn spec(self: &Arc<Switch>) -> healthgate::config::DependencySpec {
        healthgate::config::DependencySpec::custom(self.clone(), "switch")
            .every(Duration::from_millis(50), 0.0)
            .with_timeout(Duration::from_millis(40))
            .with_thresholds(1, 1)
    }
}

impl healthgate::Probe for Switch {
    fn check(&self, _ctx: healthgate::probe::ProbeContext) -> healthgate::probe::ProbeFuture<'_> {
        let v = self.0.lock().expect("not poisoned").clone();
        Box::pin(async move { v })
    }
}

/// Waits until the service's published health is `health`.
pub(crate) async fn service_is(handle: &Handle, service: &str, health: healthgate::Health) {
    let mut rx = handle.watch_service(service);
    tokio::time::timeout(
        PATIENCE,
        rx.wait_for(|s| s.is_some_and(|s| s.health == health)),
    )
    .await
    .unwrap_or_else(|_| panic!("service {service:?} never became {health}"))
    .expect("engine alive");
}

/// `GET /metrics` over a plain HTTP/1.1 connection; the whole response, status line included.
pub(crate) async fn get_metrics(addr: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    out
}

/// Sends SIGTERM to a child process and waits for a successful exit; returns how long it took.
pub(crate) async fn terminate(child: &mut tokio::process::Child) -> Duration {
    let pid = child.id().expect("running").to_string();
    let started = tokio::time::Instant::now();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits")
        .expect("waited");
    assert!(status.success(), "{status:?}");
    started.elapsed()
}

/// The next line a child process prints, within PATIENCE.
pub(crate) async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> String {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("a line in time")
        .expect("readable")
        .expect("a line before the stream ended")
}

/// A connected tonic channel to a server on `addr`.
pub(crate) async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid url")
        .connect()
        .await
        .expect("server accepts connections")
}

/// Runs `healthgate serve` with `config` (and extra environment), returning the process, its
/// gRPC address and, when the config sets `http_listen`, its HTTP address.
pub(crate) async fn serve_with(
    config: &str,
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, SocketAddr, Option<SocketAddr>) {
    let file = temp_dir("serve").join("healthgate.toml");
    std::fs::write(&file, config).expect("write");
    serve_file(&file, &[], env, stderr).await
}

/// `healthgate serve --config FILE ARGS…`: the child, its gRPC address and (when the file has
/// `http_listen`) its HTTP address.
pub(crate) async fn serve_file(
    file: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, SocketAddr, Option<SocketAddr>) {
    let config = std::fs::read_to_string(file).expect("config file");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"));
    command.args(["serve", "--config", &file.display().to_string()]);
    command.args(args);
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        child.stdout.take().expect("piped"),
    ));
    let mut read = Vec::new();
    for _ in 0..if config.contains("http_listen") { 2 } else { 1 } {
        let line = next_line(&mut lines).await;
        read.push(line);
    }
    let addr = read[0]
        .strip_prefix("grpc listening on ")
        .expect("the grpc line")
        .parse()
        .expect("an address");
    let http = read.get(1).map(|l| {
        l.strip_prefix("http listening on ")
            .expect("the http line")
            .parse()
            .expect("an address")
    });
    (child, addr, http)
}

/// SIGTERM, a successful exit, then everything the child wrote to its (piped) stderr.
pub(crate) async fn terminate_and_read_logs(child: &mut tokio::process::Child) -> String {
    terminate(child).await;
    let mut logs = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut logs)
            .await
            .expect("logs");
    }
    logs
}

/// `Check(service)` on `client`: the serving status.
pub(crate) async fn serving_status(
    client: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("check")
        .into_inner()
        .status()
}

/// `METHOD path` over HTTP/1.1 (`Connection: close`), with a bearer token when given: the
/// status code and the body. A raw client, so the tests need no curl.
pub(crate) async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: hg\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}
