//! The resource model, tried as a hostile or broken client would: a stream flood on one
//! connection (gRPC and h2c), oversized HTTP heads and never-read bodies, thousands of idle
//! Detail watchers, tens of thousands of Watch names, silent connections past the connection
//! cap and the open-file limit, idle connections. Each test runs the real binary (or the real
//! server in process) on 127.0.0.1:0 and asserts the bound.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{PATIENCE, channel, get_metrics, next_line, temp_dir, terminate};

const BIN: &str = env!("CARGO_BIN_EXE_healthgate");

/// `healthgate serve` as a child process, with what it printed and logged.
struct Served {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    logs: JoinHandle<String>,
}

impl Served {
    /// Starts the binary with `config` (which must listen on 127.0.0.1:0 for both), under an
    /// open-file limit when `nofile` is given.
    async fn start(config: &str, nofile: Option<u32>) -> Served {
        let file = temp_dir("limits").join("healthgate.toml");
        std::fs::write(&file, config).expect("write");
        let file = file.display().to_string();
        let mut command = match nofile {
            None => Command::new(BIN),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), BIN]);
                c
            }
        };
        command
            .args(["serve", "--config", &file])
            .env("RUST_LOG", "info")
            .env_remove("HEALTHGATE_WORKER_THREADS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawns");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = |line: String, prefix: &str| -> SocketAddr {
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .expect("an address")
        };
        let grpc = addr(next_line(&mut stdout).await, "grpc listening on ");
        let http = addr(next_line(&mut stdout).await, "http listening on ");
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let mut stderr = child.stderr.take().expect("piped");
        let logs = tokio::spawn(async move {
            let mut logs = String::new();
            let _ = stderr.read_to_string(&mut logs).await;
            logs
        });
        Served {
            child,
            grpc,
            http,
            logs,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident set size, KiB.
    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("linux /proc");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// User + system CPU time so far, in clock ticks (1/100 s on Linux).
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("linux /proc");
        // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
        let after = stat.rsplit_once(')').expect("comm").1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = get_metrics(self.http).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Waits until `Check("")` says SERVING (the first probe round is done).
    async fn serving(self) -> Served {
        let mut watch = HealthClient::new(channel(self.grpc).await)
            .watch(HealthCheckRequest::default())
            .await
            .expect("Watch")
            .into_inner();
        tokio::time::timeout(PATIENCE, async {
            while let Some(message) = watch.message().await.expect("stream") {
                if message.status == ServingStatus::Serving as i32 {
                    return;
                }
            }
        })
        .await
        .expect("SERVING in time");
        self
    }

    async fn stop(mut self) -> String {
        terminate(&mut self.child).await;
        self.logs.await.expect("logs")
    }
}

/// A TCP dependency that accepts and closes every connection.
async fn tcp_dependency() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr
}

fn config(limits: &str, dependencies: usize, target: SocketAddr) -> String {
    let mut out = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\ndrain_timeout = \"1s\"\n[limits]\n{limits}\n"
    );
    for i in 0..dependencies {
        out.push_str(&format!(
            "[dependencies.d{i}]\nkind = \"tcp\"\naddress = \"{target}\"\n\
             interval = \"1s\"\ntimeout = \"500ms\"\nfall = 1\nrise = 1\n"
        ));
    }
    out
}

/// One Check over a fresh connection: the status and how long it took.
async fn check(addr: SocketAddr) -> (ServingStatus, Duration) {
    let started = Instant::now();
    let response = tokio::time::timeout(PATIENCE, async {
        HealthClient::new(channel(addr).await)
            .check(HealthCheckRequest::default())
            .await
    })
    .await
    .expect("answered in time")
    .expect("Check succeeds");
    let status = ServingStatus::try_from(response.into_inner().status).expect("known status");
    (status, started.elapsed())
}

// === raw HTTP/2 ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `POST /grpc.health.v1.Health/{method}` with gRPC's headers, every field a
/// literal without indexing (no dynamic table state to keep).
fn grpc_headers(method: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    let mut literal = |prefix: &[u8], value: &str| {
        block.extend_from_slice(prefix);
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    };
    literal(&[0x04], &format!("/grpc.health.v1.Health/{method}")); // :path
    literal(&[0x01], "localhost"); // :authority
    literal(&[0x0f, 0x10], "application/grpc"); // content-type (static index 31)
    literal(&[0x00, 0x02, b't', b'e'], "trailers");
    block
}

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

/// Reads frames until the server closes or `deadline`; counts streams refused and whether a
/// GOAWAY came, and returns the SETTINGS the server advertised.
async fn read_frames(
    mut tcp: tokio::net::tcp::OwnedReadHalf,
    deadline: Duration,
) -> (usize, bool, Vec<(u16, u32)>) {
    let mut refused = 0;
    let mut goaway = false;
    let mut settings = Vec::new();
    let _ = tokio::time::timeout(deadline, async {
        let mut head = [0u8; 9];
        while tcp.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                break;
            }
            match head[3] {
                RST_STREAM if payload[..4] == REFUSED_STREAM.to_be_bytes() => refused += 1,
                GOAWAY => goaway = true,
                SETTINGS if head[4] & 1 == 0 => settings.extend(payload.chunks(6).map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })),
                _ => {}
            }
        }
    })
    .await;
    (refused, goaway, settings)
}

/// Opens `streams` streams on one new HTTP/2 connection to `addr`, each a HEADERS frame with
/// `block` and no END_STREAM (so each stays open, waiting for a body never sent), in one
/// write; then [`read_frames`] for `wait`.
async fn open_streams(
    addr: SocketAddr,
    block: &[u8],
    streams: u32,
    wait: Duration,
) -> (usize, bool, Vec<(u16, u32)>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = tcp.into_split();
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..streams {
        flood.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, block));
    }
    // The server may refuse and close before the whole flood is written (a reset then fails
    // the write): that is one of the outcomes the callers check, not a test failure.
    let _ = write.write_all(&flood).await;
    read_frames(read, wait).await
}

#[tokio::test]
async fn a_stream_flood_on_one_connection_is_refused_past_the_cap_and_memory_stays_bounded() {
    let target = tcp_dependency().await;
    let served = Served::start(&config("max_concurrent_streams = 100", 1, target), None)
        .await
        .serving()
        .await;
    check(served.grpc).await;
    let before = served.rss_kib();

    // Never-finished Checks: HEADERS without END_STREAM, far more than the cap, in one write.
    let block = grpc_headers("Check");
    let (refused, goaway, settings) =
        open_streams(served.grpc, &block, 20_000, Duration::from_secs(5)).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) is advertised.
    assert!(settings.contains(&(0x3, 100)), "settings: {settings:?}");
    assert!(
        refused >= 900 || goaway,
        "streams past the cap refused ({refused}) or the connection told off ({goaway})"
    );
    let during = served.rss_kib();
    let (status, took) = check(served.grpc).await;
    assert_eq!(status, ServingStatus::Serving);
    assert!(
        took < Duration::from_secs(2),
        "a second client's Check took {took:?}"
    );

    // Never-read Checks: complete requests on a connection whose client reads nothing.
    let tcp = TcpStream::connect(served.grpc).await.expect("connect");
    let (_read, mut write) = tcp.into_split();
    let mut flood = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: no response data can be sent to it at all.
    flood.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    for i in 0..20_000u32 {
        flood.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
        flood.extend(frame(DATA, END_STREAM, 2 * i + 1, &[0, 0, 0, 0, 0]));
    }
    // The server may stop reading (or close) once its limits are hit: that is the point.
    let _ = tokio::time::timeout(Duration::from_secs(5), write.write_all(&flood)).await;
    let (status, took) = check(served.grpc).await;
    assert_eq!(status, ServingStatus::Serving);
    assert!(
        took < Duration::from_secs(2),
        "a second client's Check took {took:?}"
    );
    let after = served.rss_kib();
    eprintln!(
        "stream flood: {refused} refused, GOAWAY {goaway}; RSS {before} -> {during} -> {after} KiB"
    );
    assert!(
        during.max(after) < before + 16 * 1024,
        "RSS grew from {before} KiB to {during} / {after} KiB"
    );
    served.stop().await;
}

#[tokio::test]
async fn silent_connections_are_closed_by_the_deadline_and_the_newest_past_the_cap_is_refused() {
    let target = tcp_dependency().await;
    let limits = "max_connections = 20\nfirst_request_timeout = \"1s\"";
    let served = Served::start(&config(limits, 1, target), None)
        .await
        .serving()
        .await;
    // The connection `serving` used must be gone first, or it holds one of the 20 slots.
    let open = "healthgate_connections_open{listener=\"grpc\"}";
    tokio::time::timeout(PATIENCE, async {
        while served.metric(open).await > 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no connection left open");
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(served.grpc).await.expect("connect"));
    }
    // The 21st is accepted and closed at once, before the server says anything.
    let mut newest = TcpStream::connect(served.grpc).await.expect("connect");
    let mut said = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(900), newest.read_to_end(&mut said))
        .await
        .expect("closed before the deadline: refused, not timed out");
    assert!(
        said.is_empty(),
        "the refused connection was served: {said:?}"
    );
    // The silent ones (each sent the server's SETTINGS) are closed by the deadline, and
    // then new clients get through.
    let started = Instant::now();
    for mut tcp in silent {
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut Vec::new()))
            .await
            .expect("closed by the server");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(check(served.grpc).await.0, ServingStatus::Serving);
    let metric = |s: &str| format!("healthgate_connections_{s}");
    assert!(
        served
            .metric(&metric("refused_total{listener=\"grpc\"}"))
            .await
            >= 1.0
    );
    assert!(
        served
            .metric(&metric(
                "closed_total{listener=\"grpc\",reason=\"first_request_timeout\"}"
            ))
            .await
            >= 20.0
    );
    // The HTTP listener keeps the same deadline.
    let mut tcp = TcpStream::connect(served.http).await.expect("connect");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .expect("half a head");
    let n = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut Vec::new()))
        .await
        .expect("closed by the server");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    drop(n);
    // And the same cap: the 21st HTTP connection is closed at once, not at the deadline.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(served.http).await.expect("connect"));
    }
    let mut newest = TcpStream::connect(served.http).await.expect("connect");
    tokio::time::timeout(
        Duration::from_millis(900),
        newest.read_to_end(&mut Vec::new()),
    )
    .await
    .expect("refused at once, not closed by the deadline")
    .ok();
    for mut tcp in silent {
        let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut Vec::new()))
            .await
            .expect("closed by the server");
    }
    assert!(
        served
            .metric("healthgate_connections_refused_total{listener=\"http\"}")
            .await
            >= 1.0
    );
    served.stop().await;
}

#[tokio::test]
async fn under_a_low_open_file_limit_the_cap_fits_and_new_clients_get_through() {
    let target = tcp_dependency().await;
    let limits = "first_request_timeout = \"1s\"";
    let served = Served::start(&config(limits, 2, target), Some(128))
        .await
        .serving()
        .await;
    // Far more silent connections than descriptors: the cap refuses them, the process never
    // runs out of descriptors for its probes and listeners.
    let mut silent = Vec::new();
    for _ in 0..150 {
        if let Ok(tcp) = TcpStream::connect(served.grpc).await {
            silent.push(tcp);
        }
    }
    let started = Instant::now();
    loop {
        // Once the deadline has closed the silent ones, a Check gets through.
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), async {
            HealthClient::new(channel(served.grpc).await)
                .check(HealthCheckRequest::default())
                .await
        })
        .await
        {
            assert_eq!(response.into_inner().status, ServingStatus::Serving as i32);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no Check got through"
        );
    }
    drop(silent);
    let logs = served.stop().await;
    assert!(
        logs.contains("max_connections lowered to fit the open-file limit"),
        "{logs}"
    );
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[tokio::test]
async fn idle_connections_are_closed_but_watch_streams_keep_theirs() {
    let target = tcp_dependency().await;
    let limits = "idle_timeout = \"1s\"";
    let served = Served::start(&config(limits, 1, target), None)
        .await
        .serving()
        .await;
    let h2 = |addr| async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        (client, tokio::spawn(connection))
    };
    let request = |method: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost/grpc.health.v1.Health/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("valid request")
    };
    // One Check, then silence: the server closes the connection after about a second.
    let (client, idle) = h2(served.grpc).await;
    let mut client = client.ready().await.expect("ready");
    let (response, mut body) = client.send_request(request("Check"), false).expect("sent");
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let mut response = response.await.expect("answered").into_body();
    while response.data().await.is_some() {}
    drop((client, response));
    // A Watch on another connection stays open across several idle periods.
    let (client, watching) = h2(served.grpc).await;
    let mut client = client.ready().await.expect("ready");
    let (response, mut body) = client.send_request(request("Watch"), false).expect("sent");
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let mut stream = response.await.expect("answered").into_body();
    let first = stream
        .data()
        .await
        .expect("the current status")
        .expect("data");
    assert_eq!(&first[..], &[0, 0, 0, 0, 2, 8, 1]); // SERVING
    let _ = stream.flow_control().release_capacity(first.len());

    tokio::time::timeout(Duration::from_secs(10), idle)
        .await
        .expect("the idle connection was closed")
        .expect("joined")
        .expect("closed cleanly, with GOAWAY");
    // The idle one went after 1–1.25 s; the watching one outlives it by more than a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!watching.is_finished(), "the Watch connection was closed");
    assert!(
        served
            .metric(
                "healthgate_connections_closed_total{listener=\"grpc\",reason=\"idle_timeout\"}"
            )
            .await
            >= 1.0
    );
    drop(stream);
    served.stop().await;
}

/// CPU ticks the server uses over `window`.
async fn cpu_over(served: &Served, window: Duration) -> u64 {
    let before = served.cpu_ticks();
    tokio::time::sleep(window).await;
    served.cpu_ticks() - before
}

/// The median of `n` sequential Checks on one kept channel.
async fn median_check(addr: SocketAddr, n: usize) -> Duration {
    let mut client = HealthClient::new(channel(addr).await);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .check(HealthCheckRequest::default())
            .await
            .expect("Check");
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn thousands_of_idle_detail_watchers_cost_nothing_while_nothing_changes() {
    use healthgate::grpc::pb::detail::DetailRequest;
    use healthgate::grpc::pb::detail::detail_client::DetailClient;

    let target = tcp_dependency().await;
    let served = Served::start(&config("", 100, target), None)
        .await
        .serving()
        .await;
    // Every dependency is probed each second, so snapshots are published all the time; only
    // latencies change.
    let window = Duration::from_secs(3);
    let baseline_cpu = cpu_over(&served, window).await;
    let baseline_check = median_check(served.grpc, 50).await;

    let mut watchers = Vec::new();
    // Computing the answer per watcher and publication saturated the server long before
    // 2,000 watchers were open (checked by breaking the shared feeds): bounded, not hung.
    let opening = tokio::time::timeout(PATIENCE, async {
        for _ in 0..20 {
            let channel = channel(served.grpc).await;
            for i in 0..100 {
                // Two distinct requests: all watchers, and those of one service.
                let services = if i % 2 == 0 {
                    vec![]
                } else {
                    vec![String::new()]
                };
                let mut stream = DetailClient::new(channel.clone())
                    .watch(DetailRequest {
                        services,
                        history: false,
                    })
                    .await
                    .expect("Watch")
                    .into_inner();
                let first = stream
                    .message()
                    .await
                    .expect("stream")
                    .expect("first answer");
                assert_eq!(first.dependencies.len(), 100);
                watchers.push(stream);
            }
        }
    });
    opening.await.expect("2,000 watchers opened in time");
    let watched_cpu = cpu_over(&served, window).await;
    let watched_check = median_check(served.grpc, 50).await;
    eprintln!(
        "2,000 idle Detail watchers: CPU {baseline_cpu} -> {watched_cpu} ticks per {window:?}, \
         median Check {baseline_check:?} -> {watched_check:?}"
    );
    assert!(
        watched_cpu <= 2 * baseline_cpu + 30,
        "CPU {baseline_cpu} ticks without watchers, {watched_cpu} with"
    );
    assert!(
        watched_check <= 3 * baseline_check + Duration::from_millis(20),
        "median Check {baseline_check:?} without watchers, {watched_check:?} with"
    );
    drop(watchers);
    served.stop().await;
}

#[tokio::test]
async fn watch_on_tens_of_thousands_of_distinct_unknown_names_is_linear_and_check_stays_fast() {
    let target = tcp_dependency().await;
    let served = Served::start(&config("", 1, target), None)
        .await
        .serving()
        .await;
    let mut clients = Vec::new();
    let mut streams = Vec::new();
    let mut batches = Vec::new();
    // 160 connections × 125 streams (the server allows 128 per connection).
    for batch in 0..10 {
        let started = Instant::now();
        for c in 0..16 {
            let tcp = TcpStream::connect(served.grpc).await.expect("connect");
            let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
            tokio::spawn(connection);
            let mut pending = Vec::new();
            for i in 0..125 {
                let name = format!("nobody-{batch}-{c}-{i}");
                let mut message = vec![
                    0,
                    0,
                    0,
                    0,
                    0,
                    0x0a,
                    u8::try_from(name.len()).expect("short"),
                ];
                message[4] = u8::try_from(name.len() + 2).expect("short");
                message.extend_from_slice(name.as_bytes());
                let request = http::Request::builder()
                    .method("POST")
                    .uri("http://localhost/grpc.health.v1.Health/Watch")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())
                    .expect("valid request");
                let mut client = client.clone().ready().await.expect("ready");
                let (response, mut body) = client.send_request(request, false).expect("sent");
                body.send_data(Bytes::from(message), true).expect("body");
                pending.push((response, body));
            }
            for (response, body) in pending {
                let mut stream = response.await.expect("answered").into_body();
                let first = stream.data().await.expect("a message").expect("data");
                assert_eq!(&first[..], &[0, 0, 0, 0, 2, 8, 3]); // SERVICE_UNKNOWN
                streams.push((stream, body));
            }
            clients.push(client);
        }
        batches.push(started.elapsed());
    }
    let (status, took) = check(served.grpc).await;
    eprintln!("20,000 unknown-name watches, per batch of 2,000: {batches:?}; Check {took:?}");
    assert_eq!(status, ServingStatus::Serving);
    assert!(took < Duration::from_secs(1), "Check took {took:?}");
    let first = batches[0];
    let last = batches[batches.len() - 1];
    assert!(
        last <= 3 * first + Duration::from_millis(500),
        "not linear: the first 2,000 took {first:?}, the last {last:?}"
    );
    drop((streams, clients));
    served.stop().await;
}

#[tokio::test]
async fn distinct_detail_watch_requests_past_the_cap_are_refused_and_shared_ones_get_in() {
    use healthgate::grpc::pb::detail::DetailRequest;
    use healthgate::grpc::pb::detail::detail_client::DetailClient;
    use healthgate::grpc::{MAX_DETAIL_FEEDS, ServeOptions};

    let switch = crate::support::Switch::new();
    let handle = healthgate::Engine::builder()
        .dependency("db", switch.spec())
        .start()
        .expect("starts");
    let front = crate::support::Front::start(handle.clone(), ServeOptions::default()).await;
    let client = DetailClient::new(front.channel().await);
    let watch = |services: Vec<String>| {
        let mut client = client.clone();
        async move {
            client
                .watch(DetailRequest {
                    services,
                    history: false,
                })
                .await
        }
    };
    let mut open = Vec::new();
    for i in 0..MAX_DETAIL_FEEDS {
        open.push(watch(vec![format!("s{i}")]).await.expect("under the cap"));
    }
    let refused = watch(vec!["one-too-many".into()])
        .await
        .expect_err("past the cap");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    // A request already open shares its feed, whatever the order or repetition of names.
    let mut shared = watch(vec!["s0".into(), "s0".into()])
        .await
        .expect("shared")
        .into_inner();
    assert!(shared.message().await.expect("stream").is_some());
    // A feed goes with its last watcher, and its slot is free again.
    drop(open.pop());
    tokio::time::timeout(PATIENCE, async {
        while watch(vec!["newcomer".into()]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a slot came free");
    drop((open, shared));
    handle.shutdown().await;
}

/// HPACK for `GET {path}` over h2c, every field a literal without indexing.
fn http_get_headers(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http (static table)
    for (prefix, value) in [(0x04u8, path), (0x01, "localhost")] {
        block.push(prefix);
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// `GET /readyz` from a well-behaved client on a fresh connection: it must answer 200 fast
/// whatever the abusive clients are doing.
async fn readyz_answers(http: SocketAddr) {
    let started = Instant::now();
    let (code, body) = crate::support::http_call(http, "GET", "/readyz", None).await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a second client's /readyz took {took:?}"
    );
}

#[tokio::test]
async fn the_http_listener_bounds_heads_bodies_and_streams_and_keeps_answering_others() {
    let target = tcp_dependency().await;
    let served = Served::start(&config("max_concurrent_streams = 100", 1, target), None)
        .await
        .serving()
        .await;
    readyz_answers(served.http).await;
    let before = served.rss_kib();

    // A request head past the 32 KiB HTTP/1 buffer is refused: `431`, or a reset when the
    // server closes with the rest of the head unread. Never an answer: without the bound
    // this request would succeed (an `exclude` that matches nothing is only a warning).
    let mut tcp = TcpStream::connect(served.http).await.expect("connect");
    let head = format!(
        "GET /readyz?exclude={} HTTP/1.1\r\nHost: hg\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let mut said = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut said))
        .await
        .expect("closed by the server");
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 431"),
        "an oversized head was answered: {said:.80}"
    );
    readyz_answers(served.http).await;

    // A push with a 1 GiB body: the answer comes from the head alone and the body is never
    // read, so the writer is cut off once the socket buffers are full, not after a gigabyte.
    let tcp = TcpStream::connect(served.http).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let head = "POST /push/d0 HTTP/1.1\r\nHost: hg\r\nContent-Length: 1073741824\r\n\r\n";
        write.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0usize;
        while written < 256 * 1024 * 1024 {
            match tokio::time::timeout(PATIENCE, write.write_all(&chunk)).await {
                Ok(Ok(())) => written += chunk.len(),
                Ok(Err(_)) => return (written, true),
                // Blocked: the server reads nothing more and has not closed yet.
                Err(_) => return (written, false),
            }
        }
        (written, false)
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, read.read_to_end(&mut answer))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    readyz_answers(served.http).await;
    let (written, cut) = writer.await.expect("writer");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 401"),
        "push without a token: {answer:.80}"
    );
    assert!(
        cut && written < 64 * 1024 * 1024,
        "the body was read: {written} bytes written, cut off: {cut}"
    );

    // h2c: a stream flood past the advertised cap is refused on the HTTP listener too.
    let block = http_get_headers("/readyz");
    let (refused, goaway, settings) =
        open_streams(served.http, &block, 400, Duration::from_secs(2)).await;
    assert!(settings.contains(&(0x3, 100)), "settings: {settings:?}");
    assert!(
        refused >= 300 || goaway,
        "streams past the cap refused ({refused}) or the connection told off ({goaway})"
    );
    readyz_answers(served.http).await;

    let after = served.rss_kib();
    eprintln!(
        "http abuse: {written} body bytes before the cut, {refused} streams refused; RSS {before} -> {after} KiB"
    );
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    served.stop().await;
}
