//! The HTTP probe against real servers on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use healthgate::{Health, Verdict};
use tokio::net::TcpListener;

use crate::support::{
    Answer, HttpServer, closed_port, garbage_server, probe_once, reason, rss_bytes, silent_server,
};

fn http(url: &str, extra: &str) -> String {
    format!("kind = \"http\"\nurl = \"{url}\"\n{extra}")
}

async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn status_codes_map_to_health() {
    let server = HttpServer::start().await;
    let dep = http(&server.url("/health"), "degraded_statuses = [429]");
    assert_eq!(probe_once(&dep).await.verdict, Verdict::Healthy);
    server.set(Answer {
        status: 503,
        ..Answer::default()
    });
    assert_eq!(
        probe_once(&dep).await.verdict,
        Verdict::unhealthy("HTTP 503")
    );
    server.set(Answer {
        status: 429,
        ..Answer::default()
    });
    assert_eq!(
        probe_once(&dep).await.verdict,
        Verdict::degraded("HTTP 429")
    );
    server.set(Answer {
        status: 204,
        ..Answer::default()
    });
    let strict = http(&server.url("/health"), "expected_statuses = [200]");
    assert_eq!(
        probe_once(&strict).await.verdict,
        Verdict::unhealthy("HTTP 204")
    );
}

#[tokio::test]
async fn slower_than_degraded_after_is_degraded() {
    let server = HttpServer::start().await;
    server.set(Answer {
        delay: Duration::from_millis(300),
        ..Answer::default()
    });
    let outcome = probe_once(&http(&server.url("/"), "degraded_after = \"100ms\"")).await;
    assert_eq!(outcome.health(), Health::Degraded);
    assert!(
        reason(&outcome).starts_with("slow: "),
        "{}",
        reason(&outcome)
    );
    assert!(outcome.latency >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_on_time() {
    let addr = silent_server().await;
    let outcome = probe_once(&http(&format!("http://{addr}/"), "timeout = \"500ms\"")).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("timed out after 500ms"));
    let late = outcome.latency.saturating_sub(Duration::from_millis(500));
    assert!(
        outcome.latency >= Duration::from_millis(500) && late < Duration::from_millis(100),
        "latency {:?}",
        outcome.latency
    );
}

#[tokio::test]
async fn refused_connection_and_garbage_are_unhealthy_with_a_reason() {
    let refused = closed_port().await;
    let outcome = probe_once(&http(&format!("http://{refused}/"), "")).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("connection refused"));

    let garbage = garbage_server().await;
    let url = format!("http://{garbage}/health");
    let outcome = probe_once(&http(&url, "")).await;
    assert_eq!(
        outcome.verdict,
        Verdict::unhealthy("invalid HTTP response: invalid HTTP version parsed")
    );
}

#[tokio::test]
async fn a_huge_body_is_not_downloaded() {
    const GIB: u64 = 1 << 30;
    const CHUNK: usize = 64 * 1024;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let app = Router::new().route(
        "/big",
        get(move || {
            let counter = counter.clone();
            async move {
                let chunks = futures_util::stream::iter(0..GIB / CHUNK as u64).map(move |_| {
                    counter.fetch_add(CHUNK as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(Bytes::from_static(&[b'x'; CHUNK]))
                });
                (
                    [(header::CONTENT_LENGTH, GIB.to_string())],
                    Body::from_stream(chunks),
                )
                    .into_response()
            }
        }),
    );
    let addr = serve(app).await;
    let rss_before = rss_bytes();
    let url = format!("http://{addr}/big");
    let plain = probe_once(&http(&url, "timeout = \"10s\"")).await;
    assert_eq!(
        plain.verdict,
        Verdict::Healthy,
        "no body conditions: the status decides"
    );
    let checked = probe_once(&http(
        &url,
        "timeout = \"10s\"\nbody = [{ contains = \"ok\" }]",
    ))
    .await;
    assert_eq!(
        checked.verdict,
        Verdict::unhealthy("body larger than 65536 bytes")
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < 64 << 20,
        "the server got to send {sent} bytes of 1 GiB: the probe kept reading"
    );
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
}

#[tokio::test]
async fn redirects_are_never_followed_to_another_origin() {
    let other = HttpServer::start().await;
    let target = other.url("/steal");
    let app = Router::new()
        .route(
            "/away",
            get(move || {
                let target = target.clone();
                async move { (StatusCode::FOUND, [(header::LOCATION, target)]) }
            }),
        )
        .route(
            "/here",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]) }),
        )
        .route("/ok", get(|| async { "ok" }));
    let addr = serve(app).await;

    let away = format!("http://{addr}/away");
    let outcome = probe_once(&http(&away, "follow_redirects = true")).await;
    assert_eq!(
        outcome.verdict,
        Verdict::unhealthy("HTTP 302 (redirect not followed)")
    );
    let outcome = probe_once(&http(&away, "")).await;
    assert_eq!(
        outcome.verdict,
        Verdict::unhealthy("HTTP 302 (redirect not followed)")
    );
    assert_eq!(
        other.requests.load(Ordering::SeqCst),
        0,
        "the other origin received nothing"
    );

    let here = format!("http://{addr}/here");
    assert_eq!(
        probe_once(&http(&here, "follow_redirects = true"))
            .await
            .verdict,
        Verdict::Healthy
    );
    assert_eq!(
        probe_once(&http(&here, "")).await.verdict,
        Verdict::unhealthy("HTTP 302 (redirect not followed)"),
        "off by default"
    );
}

#[tokio::test]
async fn body_conditions_read_the_real_response() {
    let server = HttpServer::start().await;
    let dep = http(
        &server.url("/status"),
        r#"body = [{ json = "/status", equals = "UP" }, { json = "$.db.latency_ms", equals = 3, on_mismatch = "degraded" }]"#,
    );
    server.set(Answer {
        body: r#"{"status":"UP","db":{"latency_ms":3}}"#.into(),
        ..Answer::default()
    });
    assert_eq!(probe_once(&dep).await.verdict, Verdict::Healthy);
    server.set(Answer {
        body: r#"{"status":"UP","db":{"latency_ms":900}}"#.into(),
        ..Answer::default()
    });
    assert_eq!(
        probe_once(&dep).await.verdict,
        Verdict::degraded("body $.db.latency_ms is not 3")
    );
    server.set(Answer {
        body: r#"{"status":"DOWN"}"#.into(),
        ..Answer::default()
    });
    assert_eq!(
        probe_once(&dep).await.verdict,
        Verdict::unhealthy("body /status is not \"UP\"")
    );
    server.set(Answer {
        body: "<html>oops</html>".into(),
        ..Answer::default()
    });
    assert_eq!(
        probe_once(&dep).await.verdict,
        Verdict::unhealthy("body is not valid JSON")
    );
}

#[tokio::test]
async fn configured_method_and_headers_are_sent() {
    let server = HttpServer::start().await;
    let dep = http(
        &server.url("/"),
        "method = \"head\"\nheaders = { X-Probe = \"healthgate\" }",
    );
    assert_eq!(probe_once(&dep).await.verdict, Verdict::Healthy);
    let headers = server.headers();
    assert_eq!(headers["x-probe"], "healthgate");
    assert!(
        headers["user-agent"]
            .to_str()
            .expect("ascii")
            .starts_with("healthgate/")
    );
}

#[tokio::test]
async fn url_user_info_is_sent_as_basic_credentials() {
    let server = HttpServer::start().await;
    let url = format!("http://probe:s%20cret@{}/health", server.addr);
    assert_eq!(probe_once(&http(&url, "")).await.verdict, Verdict::Healthy);
    let headers = server.headers();
    // base64("probe:s cret")
    assert_eq!(headers["authorization"], "Basic cHJvYmU6cyBjcmV0");

    // A configured Authorization header wins over the URL's user info.
    let dep = http(&url, "headers = { Authorization = \"Bearer t0ken\" }");
    assert_eq!(probe_once(&dep).await.verdict, Verdict::Healthy);
    let sent = server.headers();
    assert_eq!(sent.get_all("authorization").iter().count(), 1);
    assert_eq!(sent["authorization"], "Bearer t0ken");
}

#[tokio::test]
async fn a_server_that_hangs_mid_body_times_out_on_time() {
    // Headers and the first bytes of the body at once, then nothing: the probe must still end
    // at its timeout, whatever condition it would check on the body.
    let app = Router::new().route(
        "/health",
        get(|| async {
            let first = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(Bytes::from_static(b"{\"status\":"))
            });
            Body::from_stream(first.chain(futures_util::stream::pending()))
        }),
    );
    let addr = serve(app).await;
    let extra = "timeout = \"400ms\"\nbody = [{ json = \"$.status\", equals = \"up\" }]";
    let outcome = probe_once(&http(&format!("http://{addr}/health"), extra)).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("timed out after 400ms"));
    let late = outcome.latency.saturating_sub(Duration::from_millis(400));
    assert!(
        outcome.latency >= Duration::from_millis(400) && late < Duration::from_millis(100),
        "latency {:?}",
        outcome.latency
    );
}
