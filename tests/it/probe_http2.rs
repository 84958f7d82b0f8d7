//! HTTP probes over HTTP/2 (by ALPN over TLS, and h2c with `http_version = "2"`), the
//! `tls.server_name` rename, and `keep_alive = false`, against hyper servers that record what
//! they saw — and against nghttpd, a third-party HTTP/2-only server, where it is installed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Version};
use axum::routing::get;
use healthgate::Verdict;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{PATIENCE, probe_once, reason, start, state_where};
use crate::tls::{Pki, pki};

/// What a [`recording_server`] saw.
#[derive(Debug, Default)]
struct Seen {
    connections: AtomicUsize,
    versions: Mutex<Vec<Version>>,
    hosts: Mutex<Vec<String>>,
    sni: Mutex<Vec<Option<String>>>,
}

/// A server answering 200 "ok" on every path that records connections, request versions,
/// `Host`/`:authority` and SNI. With `tls`, it offers exactly those ALPN protocols; with
/// `h2_only`, it speaks nothing but HTTP/2.
async fn recording_server(tls: Option<(&Pki, &[&[u8]])>, h2_only: bool) -> (SocketAddr, Arc<Seen>) {
    let acceptor = tls.map(|(pki, alpn)| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(pki.server_key().into());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![pki.server_cert()], key)
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    });
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .fallback(get(
            |State(seen): State<Arc<Seen>>,
             version: Version,
             uri: axum::http::Uri,
             headers: HeaderMap| async move {
                seen.versions.lock().expect("not poisoned").push(version);
                let host = uri
                    .authority()
                    .map(|a| a.to_string())
                    .or_else(|| {
                        headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                seen.hosts.lock().expect("not poisoned").push(host);
                "ok"
            },
        ))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let recorder = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            recorder.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, app, recorder) = (acceptor.clone(), app.clone(), recorder.clone());
            tokio::spawn(async move {
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if h2_only {
                    builder = builder.http2_only();
                }
                let service = TowerToHyperService::new(app);
                let _ = match acceptor {
                    None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().map(str::to_owned);
                        recorder.sni.lock().expect("not poisoned").push(sni);
                        builder.serve_connection(TokioIo::new(tls), service).await
                    }
                };
            });
        }
    });
    (addr, seen)
}

fn dependency(url: &str, extra: &str) -> String {
    format!("kind = \"http\"\nurl = \"{url}\"\ntimeout = \"5s\"\n{extra}")
}

#[tokio::test]
async fn an_http2_only_tls_dependency_is_healthy_by_alpn() {
    let pki = pki();
    let ca = format!("tls = {{ ca_file = {:?} }}", pki.file("ca.pem"));
    let (addr, seen) = recording_server(Some((&pki, &[b"h2"])), true).await;
    let url = format!("https://localhost:{}/health", addr.port());
    let outcome = probe_once(&dependency(&url, &ca)).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
    assert_eq!(
        *seen.versions.lock().expect("not poisoned"),
        [Version::HTTP_2]
    );

    // Restricted to HTTP/1.1, the probe offers only `http/1.1` and the server refuses it.
    let only_11 = format!("{ca}\nhttp_version = \"1.1\"");
    let outcome = probe_once(&dependency(&url, &only_11)).await;
    assert!(
        reason(&outcome).starts_with("tls: "),
        "ALPN mismatch is a TLS failure: {outcome:?}"
    );
}

#[tokio::test]
async fn auto_speaks_http1_to_a_tls_server_that_offers_only_http1() {
    let pki = pki();
    let ca = format!("tls = {{ ca_file = {:?} }}", pki.file("ca.pem"));
    let (addr, seen) = recording_server(Some((&pki, &[b"http/1.1"])), false).await;
    let url = format!("https://localhost:{}/health", addr.port());
    let outcome = probe_once(&dependency(&url, &ca)).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
    assert_eq!(
        *seen.versions.lock().expect("not poisoned"),
        [Version::HTTP_11]
    );
}

#[tokio::test]
async fn an_h2c_dependency_is_healthy_with_http_version_2() {
    let (addr, seen) = recording_server(None, true).await;
    let url = format!("http://{addr}/health");
    let outcome = probe_once(&dependency(&url, "http_version = \"2\"")).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
    assert_eq!(
        *seen.versions.lock().expect("not poisoned"),
        [Version::HTTP_2]
    );

    // Without the option a plaintext probe speaks HTTP/1.1, which this server cannot read.
    let outcome = probe_once(&dependency(&url, "")).await;
    assert_ne!(outcome.verdict, Verdict::Healthy);
}

#[tokio::test]
async fn server_name_is_the_sni_the_verified_name_and_the_host() {
    let pki = pki();
    // Connect by IP; the certificate is verified as "localhost", which is also the SNI and
    // the Host.
    let (addr, seen) = recording_server(Some((&pki, &[b"http/1.1"])), false).await;
    let tls = format!(
        "tls = {{ ca_file = {:?}, server_name = \"localhost\" }}",
        pki.file("ca.pem")
    );
    let url = format!("https://127.0.0.1:{}/health", addr.port());
    let outcome = probe_once(&dependency(&url, &tls)).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
    assert_eq!(
        *seen.sni.lock().expect("not poisoned"),
        [Some("localhost".to_owned())]
    );
    assert_eq!(
        *seen.hosts.lock().expect("not poisoned"),
        [format!("localhost:{}", addr.port())]
    );
}

/// Probes a recording server every 50 ms until `probes` have succeeded; returns the
/// connections the server accepted meanwhile.
async fn connections_for(probes: u32, extra: &str) -> usize {
    let (addr, seen) = recording_server(None, false).await;
    let handle = start(&format!(
        "[dependencies.dep]\nkind = \"http\"\nurl = \"http://{addr}/health\"\ninterval = \"50ms\"\ntimeout = \"40ms\"\njitter = 0.0\n{extra}\n"
    ));
    state_where(&handle, "dep", |d| d.consecutive_successes >= probes).await;
    handle.shutdown().await;
    seen.connections.load(Ordering::SeqCst)
}

#[tokio::test]
async fn keep_alive_false_opens_a_connection_per_probe() {
    assert_eq!(connections_for(3, "").await, 1, "kept alive");
    assert!(
        connections_for(3, "keep_alive = false").await >= 3,
        "one connection per probe"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_carries_at_most_25_probes() {
    // Probes 1-25 on the first connection (the 25th asks to close it), 26-50 on the second.
    assert_eq!(connections_for(30, "").await, 2);
}

/// Runs nghttpd (Debian `nghttp2-server`) if it is installed. CI installs it and sets
/// `HEALTHGATE_REQUIRE_TOOLS=1`, which makes its absence a failure; elsewhere the test says
/// it was skipped.
async fn nghttpd(args: &[&str]) -> Option<(SocketAddr, tokio::process::Child)> {
    let Ok(path) = which("nghttpd") else {
        assert!(
            std::env::var_os("HEALTHGATE_REQUIRE_TOOLS").is_none(),
            "nghttpd is required (apt-get install nghttp2-server)"
        );
        eprintln!("skipped: nghttpd is not installed (Debian nghttp2-server)");
        return None;
    };
    let dir = crate::support::temp_dir("nghttpd");
    std::fs::write(dir.join("health"), "ok").expect("write");
    // A port the kernel calls free now; nghttpd cannot report one it picked itself.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("bound")
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("literal");
    let htdocs = format!("--htdocs={}", dir.display());
    let mut command = tokio::process::Command::new(path);
    command
        .args(["--address=127.0.0.1", htdocs.as_str()])
        .args(args.iter().map(|a| a.replace("PORT", &port.to_string())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = command.spawn().expect("nghttpd starts");
    tokio::time::timeout(PATIENCE, async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("nghttpd listens");
    Some((addr, child))
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test]
async fn nghttpd_h2_only_over_tls_and_h2c_are_healthy() {
    let pki = pki();
    let (cert, key) = (pki.file("server.pem"), pki.file("server.key"));
    let Some((addr, _tls)) = nghttpd(&["PORT", key.as_str(), cert.as_str()]).await else {
        return;
    };
    let ca = format!("tls = {{ ca_file = {:?} }}", pki.file("ca.pem"));
    let url = format!("https://localhost:{}/health", addr.port());
    let outcome = probe_once(&dependency(&url, &ca)).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
    let missing = format!("https://localhost:{}/missing", addr.port());
    let outcome = probe_once(&dependency(&missing, &ca)).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("HTTP 404"));

    let Some((addr, _h2c)) = nghttpd(&["--no-tls", "PORT"]).await else {
        return;
    };
    let url = format!("http://{addr}/health");
    let outcome = probe_once(&dependency(&url, "http_version = \"2\"")).await;
    assert_eq!(outcome.verdict, Verdict::Healthy, "{}", reason(&outcome));
}
