//! The HTTP twin on a real listener (`healthgate::http::serve` on 127.0.0.1:0, and the binary):
//! kube-apiserver's bytes, our third state, exclusions, per-dependency answers with reasons
//! behind the detail token, the health+json format, methods, HTTP/1.0 without Host, h2c, and
//! the drain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use healthgate::config::{DegradedPolicy, ServiceSpec};
use healthgate::http::TwinOptions;
use healthgate::listener::Limits;
use healthgate::{Engine, Handle, Health, Impact, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{HttpServer, PATIENCE, Switch, serve_with, service_is};

/// A parsed HTTP/1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Sends `request` as written (raw bytes) and reads the response to the end of the connection.
async fn raw(addr: SocketAddr, request: &str) -> Reply {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let text = String::from_utf8(bytes).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close` and extra header lines.
async fn get(addr: SocketAddr, path: &str, extra: &str) -> Reply {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: hg\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

async fn twin(handle: Handle, options: TwinOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let router = healthgate::http::twin_router(handle, options);
    tokio::spawn(healthgate::http::serve(
        listener,
        "http",
        router,
        Limits::default(),
        None,
        None,
        std::future::pending(),
    ));
    addr
}

/// readiness: `db` critical, `cache` degrading, `a/b c` critical; all three switches.
struct Setup {
    handle: Handle,
    db: Arc<Switch>,
    cache: Arc<Switch>,
}

fn setup(degraded: DegradedPolicy) -> Setup {
    let (db, cache, odd) = (Switch::new(), Switch::new(), Switch::new());
    let readiness = ServiceSpec {
        dependencies: [
            ("db".to_owned(), Impact::Critical),
            ("cache".to_owned(), Impact::Degrading),
            ("a/b c".to_owned(), Impact::Critical),
        ]
        .into_iter()
        .collect(),
        degraded,
        ..ServiceSpec::default()
    };
    let handle = Engine::builder()
        .dependency("db", db.spec())
        .dependency("cache", cache.spec())
        .dependency("a/b c", odd.spec())
        .service("readiness", readiness)
        .service("orders", ServiceSpec::with_all(["cache"], Impact::Critical))
        .start()
        .expect("starts");
    Setup { handle, db, cache }
}

#[tokio::test]
async fn healthy_answers_are_kube_apiserver_bytes() {
    let s = setup(DegradedPolicy::Serving);
    service_is(&s.handle, "readiness", Health::Healthy).await;
    let addr = twin(s.handle.clone(), TwinOptions::default()).await;

    let r = get(addr, "/readyz", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok", "no newline");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-health-state"), Some("healthy"));
    assert_eq!(r.header("x-envoy-degraded"), None);

    // Presence only: verbose=false is verbose too.
    for query in [
        "?verbose",
        "?verbose=false",
        "?verbose&exclude=nothing-here",
    ] {
        let r = get(addr, &format!("/readyz{query}"), "").await;
        assert_eq!(r.status, 200);
        assert!(
            r.body.starts_with("[+]a/b c ok\n[+]cache ok\n[+]db ok\n"),
            "{query}: {}",
            r.body
        );
        assert!(r.body.ends_with("readyz check passed\n"), "{}", r.body);
    }
    let r = get(addr, "/readyz?verbose&exclude=nothing-here", "").await;
    assert!(r.body.contains(
        "warn: some health checks cannot be excluded: no matches for \"nothing-here\"\n"
    ));

    // /healthz is "" (every dependency, critical); /livez has no liveness service: alive.
    let r = get(addr, "/healthz?verbose", "").await;
    assert!(r.body.ends_with("healthz check passed\n"), "{}", r.body);
    let r = get(addr, "/livez?verbose", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "livez check passed\n"));
    // Any service, by name.
    let r = get(addr, "/services/orders?verbose", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "[+]cache ok\norders check passed\n")
    );
    for unknown in [
        "/services/nope",
        "/readyz/nope",
        "/livez/db",
        "/nope",
        "/readyz/",
    ] {
        let r = get(addr, unknown, "").await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (404, "404 page not found\n"),
            "{unknown}"
        );
        assert_eq!(r.header("x-health-state"), Some("unknown"));
    }
    s.handle.shutdown().await;
}

#[tokio::test]
async fn failing_degraded_and_excluded_answers() {
    let s = setup(DegradedPolicy::Serving);
    let token = "twin-s3cret";
    let addr = twin(
        s.handle.clone(),
        TwinOptions {
            detail_token: Some(token.to_owned()),
            ..TwinOptions::default()
        },
    )
    .await;

    // A degrading dependency down: passes, degraded for Envoy.
    s.cache
        .set(Verdict::unhealthy("HTTP 503 from cache.internal"));
    service_is(&s.handle, "readiness", Health::Degraded).await;
    let r = get(addr, "/readyz?verbose", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-envoy-degraded"), Some("true"));
    assert_eq!(r.header("x-health-state"), Some("degraded"));
    assert!(r.body.contains("[+]cache degraded: ok\n"), "{}", r.body);
    // orders depends on cache critically: failing, always verbose, no reason in the text.
    let r = get(addr, "/services/orders", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "[-]cache failed: reason withheld\norders check failed\n"
    );
    assert_eq!(r.header("x-envoy-degraded"), None);

    // A critical dependency down.
    s.db.set(Verdict::unhealthy("connection refused by db.internal"));
    service_is(&s.handle, "readiness", Health::Unhealthy).await;
    let r = get(addr, "/readyz", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-health-state"), Some("unhealthy"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.body,
        "[+]a/b c ok\n[+]cache degraded: ok\n[-]db failed: reason withheld\nreadyz check failed\n"
    );
    assert!(!r.body.contains("db.internal"));

    // Exclusion recomputes without the check.
    let r = get(addr, "/readyz?exclude=db&exclude=db,cache", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-envoy-degraded"), Some("true"));
    assert_eq!(r.body, "ok");
    let r = get(addr, "/readyz?exclude=db&verbose", "").await;
    assert!(r.body.contains("[+]db excluded: ok\n"), "{}", r.body);

    // One dependency: names percent-decoded, `/` allowed; reasons only with the token.
    let r = get(addr, "/readyz/db", "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "internal server error: reason withheld\n")
    );
    let auth = format!("Authorization: Bearer {token}\r\n");
    let r = get(addr, "/readyz/db", &auth).await;
    assert_eq!(
        r.body,
        "internal server error: connection refused by db.internal\n"
    );
    let r = get(addr, "/readyz/db", "Authorization: Bearer wrong\r\n").await;
    assert!(r.body.contains("reason withheld"));
    for path in ["/readyz/a/b%20c", "/readyz/a%2Fb%20c", "/healthz/a%2fb%20c"] {
        let r = get(addr, path, "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
        assert_eq!(r.header("x-health-state"), Some("healthy"));
    }
    let r = get(addr, "/readyz/cache", "").await;
    assert_eq!(r.status, 503, "unhealthy itself: {}", r.body);

    // The page's JSON is cached per generation and per caller kind: reasons never leak to a
    // caller without the token, whichever asked first.
    for _ in 0..2 {
        let open = get(addr, "/status.json", "").await;
        let authed = get(addr, "/status.json", &auth).await;
        assert!(!open.body.contains("db.internal"), "{}", open.body);
        assert!(authed.body.contains("connection refused by db.internal"));
        assert_eq!(
            open.header("content-security-policy")
                .map(|c| c.starts_with("default-src 'none'")),
            Some(true)
        );
    }
    s.handle.shutdown().await;
}

#[tokio::test]
async fn a_strict_service_fails_when_degraded_and_the_failure_code_is_configurable() {
    let s = setup(DegradedPolicy::NotServing);
    s.cache.set(Verdict::unhealthy("slow"));
    service_is(&s.handle, "readiness", Health::Degraded).await;
    let addr = twin(
        s.handle.clone(),
        TwinOptions {
            failure_status: Some(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
            ..TwinOptions::default()
        },
    )
    .await;
    let r = get(addr, "/readyz", "").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-health-state"), Some("degraded"));
    assert_eq!(r.header("x-envoy-degraded"), None);
    assert!(
        r.body.contains("[-]cache failed: reason withheld\n"),
        "{}",
        r.body
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn health_json_carries_checks_and_reasons_only_behind_the_token() {
    let s = setup(DegradedPolicy::Serving);
    s.db.set(Verdict::unhealthy("HTTP 503 from db.internal"));
    service_is(&s.handle, "readiness", Health::Unhealthy).await;
    let addr = twin(
        s.handle.clone(),
        TwinOptions {
            detail_token: Some("tok".into()),
            ..TwinOptions::default()
        },
    )
    .await;
    for accept in [
        "application/health+json",
        "text/html, application/json;q=0.9",
    ] {
        let r = get(addr, "/readyz", &format!("Accept: {accept}\r\n")).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("content-type"), Some("application/health+json"));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["status"], "fail");
        assert_eq!(v["serviceId"], "readiness");
        let db = &v["checks"]["db:responseTime"][0];
        assert_eq!(db["status"], "fail", "{v}");
        assert_eq!(db["componentType"], "custom");
        assert_eq!(db["observedUnit"], "ms");
        assert!(
            db["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{db}"
        );
        assert!(
            db.get("output").is_none(),
            "no reason without the token: {db}"
        );
        assert_eq!(v["checks"]["cache:responseTime"][0]["status"], "pass");
    }
    let r = get(
        addr,
        "/readyz",
        "Accept: application/health+json\r\nAuthorization: Bearer tok\r\n",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(
        v["checks"]["db:responseTime"][0]["output"],
        "HTTP 503 from db.internal"
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn head_options_http10_without_host_and_h2c_all_work() {
    let s = setup(DegradedPolicy::Serving);
    service_is(&s.handle, "readiness", Health::Healthy).await;
    let addr = twin(s.handle.clone(), TwinOptions::default()).await;

    // HAProxy's plain `option httpchk`.
    let r = raw(addr, "OPTIONS / HTTP/1.0\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = raw(addr, "GET /readyz HTTP/1.0\r\n\r\n").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = raw(
        addr,
        "HEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.header("x-health-state"), Some("healthy"));
    let r = raw(
        addr,
        "OPTIONS /readyz?verbose HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.body.ends_with("readyz check passed\n"), "{}", r.body);
    let r = raw(
        addr,
        "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(
        r.header("x-health-state"),
        Some("unknown"),
        "every answer carries it"
    );

    // h2c with prior knowledge (HAProxy's `proto h2` server line).
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{addr}/readyz?verbose"))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-health-state"], "healthy");
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.expect("data"));
    }
    assert!(String::from_utf8_lossy(&text).ends_with("readyz check passed\n"));
    s.handle.shutdown().await;
}

#[tokio::test]
async fn the_binary_serves_the_twin_and_drains_it() {
    let dependency = HttpServer::start().await;
    let config = format!(
        r#"
[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
drain_delay = "3s"
drain_timeout = "1s"

[dependencies.web]
kind = "http"
url = "{}"
interval = "100ms"
timeout = "90ms"

[services.readiness]
dependencies = {{ web = "critical" }}
"#,
        dependency.url("/")
    );
    let (mut child, _, http) = serve_with(&config, &[], Stdio::null()).await;
    let http = http.expect("http_listen");
    tokio::time::timeout(PATIENCE, async {
        while get(http, "/readyz", "").await.status != 200 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("ready");
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let draining = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = get(http, "/readyz", "").await;
            if r.status == 503 {
                return r;
            }
        }
    })
    .await
    .expect("the twin fails while draining");
    assert_eq!(
        draining.header("x-envoy-immediate-health-check-fail"),
        Some("true")
    );
    assert!(
        draining
            .body
            .ends_with("[-]shutdown failed: reason withheld\nreadyz check failed\n"),
        "{}",
        draining.body
    );
    // Alive while draining: the kubelet must not restart a container that is shutting down.
    let r = get(http, "/livez", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert!(child.wait().await.expect("exits").success());
}

#[tokio::test]
async fn history_reaches_detail_on_request_and_survives_a_replace() {
    use healthgate::grpc::pb::detail::DetailRequest;
    use healthgate::grpc::pb::detail::detail_client::DetailClient;

    let s = setup(DegradedPolicy::Serving);
    service_is(&s.handle, "readiness", Health::Healthy).await;
    s.db.set(Verdict::unhealthy("HTTP 503"));
    service_is(&s.handle, "readiness", Health::Unhealthy).await;
    s.db.set(Verdict::Healthy);
    let before = crate::support::state_where(&s.handle, "db", |d| {
        d.health == Health::Healthy && d.history.outcomes().len() >= 5
    })
    .await;
    let transitions: Vec<(Health, Health)> = before
        .history
        .transitions()
        .map(|t| (t.from(), t.to()))
        .collect();
    assert_eq!(
        transitions,
        [
            (Health::Unknown, Health::Healthy),
            (Health::Healthy, Health::Unhealthy),
            (Health::Unhealthy, Health::Healthy)
        ]
    );

    // The same spec again (what a reload with the dependency unchanged does): history kept.
    s.handle
        .replace_dependency("db", s.db.spec())
        .await
        .expect("replaced");
    let after = crate::support::state_where(&s.handle, "db", |d| {
        d.history.outcomes().len() > before.history.outcomes().len()
    })
    .await;
    assert_eq!(
        after.history.transitions().len(),
        3,
        "kept across the replace"
    );

    let front = crate::support::Front::start(s.handle.clone(), Default::default()).await;
    let mut client = DetailClient::new(front.channel().await);
    let plain = client
        .get(DetailRequest {
            services: vec!["readiness".into()],
            history: false,
        })
        .await
        .expect("get")
        .into_inner();
    let db = plain
        .dependencies
        .iter()
        .find(|d| d.name == "db")
        .expect("db");
    assert!(
        db.history.is_empty() && db.transitions.is_empty(),
        "opt-in only"
    );
    assert!(db.since.is_some());
    let full = client
        .get(DetailRequest {
            services: vec!["readiness".into()],
            history: true,
        })
        .await
        .expect("get")
        .into_inner();
    let db = full
        .dependencies
        .iter()
        .find(|d| d.name == "db")
        .expect("db");
    assert!(db.history.len() >= 5, "{:?}", db.history.len());
    assert_eq!(db.transitions.len(), 3);
    assert_eq!(db.transitions[1].reason, "HTTP 503");
    assert!(
        db.history
            .iter()
            .all(|o| o.latency.is_some() && o.finished_at.is_some())
    );
    s.handle.shutdown().await;
}

#[tokio::test]
async fn an_override_shows_on_the_twin_the_json_and_the_page_its_reason_only_with_the_token() {
    use healthgate::engine::Target;
    let s = setup(DegradedPolicy::Serving);
    s.db.set(Verdict::unhealthy("connection refused"));
    service_is(&s.handle, "readiness", Health::Unhealthy).await;
    let token = "page-t0ken";
    let addr = twin(
        s.handle.clone(),
        TwinOptions {
            detail_token: Some(token.into()),
            ..TwinOptions::default()
        },
    )
    .await;
    let forced = s
        .handle
        .set_override(
            Target::Dependency("db".into()),
            Health::Healthy,
            std::time::Duration::from_secs(1800),
            "<b>vendor</b> maintenance",
        )
        .await
        .expect("set");
    service_is(&s.handle, "readiness", Health::Healthy).await;
    let until = humantime::format_rfc3339_seconds(forced.until).to_string();
    let r = get(addr, "/readyz?verbose", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .contains(&format!("[+]db ok (override until {until})\n")),
        "{}",
        r.body
    );
    let auth = format!("Authorization: Bearer {token}\r\n");
    let open = get(addr, "/status.json", "").await;
    let json: serde_json::Value = serde_json::from_str(&open.body).expect("json");
    let db = json["dependencies"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "db"))
        .expect("db");
    assert_eq!(
        (db["health"].as_str(), db["computed"].as_str()),
        (Some("healthy"), Some("unhealthy"))
    );
    assert_eq!(db["override"]["health"], "healthy");
    assert!(db["override"].get("reason").is_none(), "{db}");
    let authed = get(addr, "/status.json", &auth).await;
    assert!(authed.body.contains("\\u003cb\\u003evendor") || authed.body.contains("<b>vendor"));
    let page = get(addr, "/", "").await;
    assert!(
        page.body
            .contains(&format!("override until {until}</small>")),
        "{}",
        page.body
    );
    assert!(!page.body.contains("vendor"));
    let page = get(addr, "/", &auth).await;
    assert!(
        page.body.contains("override until")
            && page.body.contains("&lt;b&gt;vendor&lt;/b&gt; maintenance"),
        "escaped: {}",
        page.body
    );
    s.handle.shutdown().await;
}
