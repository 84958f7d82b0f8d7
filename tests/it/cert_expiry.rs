//! Certificate expiry of TLS dependencies, against real HTTPS servers whose certificates are
//! made at test time: one expiring in 3 days (Degraded, reason, metric, detail), one already
//! expired (Unhealthy), and the same over `kind = "tcp"` with `tls`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use healthgate::{Engine, Health, Verdict};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::{state_where, temp_dir};

/// A CA (written as `ca.pem` in `dir`) and a certificate for localhost signed by it that
/// expires `days` from now (negative: already expired): its PEM chain and key.
fn leaf(dir: &Path, days: i64) -> (String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "expiry test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["localhost".into()]).expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(days);
    let cert = params.signed_by(&key, &ca).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// A tonic server over TLS with tonic-health (everything SERVING), its certificate from [`leaf`].
async fn grpc_tls_server(dir: &Path, days: i64) -> SocketAddr {
    let (cert, key) = leaf(dir, days);
    let (_reporter, service) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert, key));
    let router = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(service);
    tokio::spawn(async move {
        std::mem::forget(_reporter);
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    addr
}

/// An HTTPS server for localhost, its certificate from [`leaf`].
async fn https_server(dir: &Path, days: i64) -> SocketAddr {
    let (cert, key) = leaf(dir, days);
    let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("pair");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let app = Router::new().route("/health", get(|| async { "ok" }));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                        .await;
                }
            });
        }
    });
    addr
}

fn engine(config: &str) -> (healthgate::Handle, Arc<healthgate::metrics::Metrics>) {
    let config = healthgate::Config::from_toml_with_env(config, &|_| None).expect("valid");
    let metrics = Arc::new(healthgate::metrics::Metrics::new());
    let handle = Engine::from_config(&config)
        .metrics(metrics.clone())
        .start()
        .expect("starts");
    (handle, metrics)
}

fn timing() -> &'static str {
    "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 1\nrise = 1\n"
}

#[tokio::test]
async fn a_certificate_expiring_in_3_days_degrades_with_a_reason_a_metric_and_detail() {
    let dir = temp_dir("expiry-3d");
    let addr = https_server(&dir, 3).await;
    let ca = dir.join("ca.pem").display().to_string();
    let port = addr.port();
    let config = format!(
        "[dependencies.web]\nkind = \"http\"\nurl = \"https://localhost:{port}/health\"\n{t}\
         tls = {{ ca_file = \"{ca}\" }}\n\n\
         [dependencies.lenient]\nkind = \"http\"\nurl = \"https://localhost:{port}/health\"\n{t}\
         tls = {{ ca_file = \"{ca}\", expiry_warning = \"1d\" }}\n\n\
         [dependencies.raw]\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{t}\
         tls = {{ ca_file = \"{ca}\", server_name = \"localhost\" }}\n",
        t = timing()
    );
    let (handle, metrics) = engine(&config);
    for name in ["web", "raw"] {
        let state = state_where(&handle, name, |d| d.health == Health::Degraded).await;
        let outcome = state.last_outcome.as_ref().expect("an outcome");
        assert_eq!(
            outcome.verdict,
            Verdict::degraded("certificate expires in 3d"),
            "{name}: no name from the certificate, only the time"
        );
        let expires = state.certificate_expires.expect("recorded");
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .expect("in the future")
            .as_secs_f64()
            / 86_400.0;
        assert!((2.9..=3.0).contains(&left), "{name}: {left} days");
    }
    // A warning window shorter than what is left: healthy, expiry still recorded.
    let lenient = state_where(&handle, "lenient", |d| d.health == Health::Healthy).await;
    assert!(lenient.certificate_expires.is_some());
    let text = metrics.encode();
    let series = text
        .lines()
        .find(|l| {
            l.starts_with(
                "healthgate_dependency_certificate_expiry_timestamp_seconds{dependency=\"web\"}",
            )
        })
        .unwrap_or_else(|| panic!("the expiry metric in:\n{text}"));
    let at: u64 = series
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("integer");
    let expected = handle
        .snapshot()
        .dependency("web")
        .and_then(|d| d.certificate_expires)
        .expect("recorded")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert_eq!(at, expected);
    // The detail RPC carries it.
    let snapshot = handle.snapshot();
    let json = healthgate::http::bench::status_json(&snapshot, true);
    assert!(json.contains("\"certificate_expires\":"), "{json}");
    handle.shutdown().await;
}

#[tokio::test]
async fn an_expired_certificate_is_unhealthy() {
    let dir = temp_dir("expiry-past");
    let addr = https_server(&dir, -1).await;
    let ca = dir.join("ca.pem").display().to_string();
    let port = addr.port();
    let config = format!(
        "[dependencies.web]\nkind = \"http\"\nurl = \"https://localhost:{port}/health\"\n{t}\
         tls = {{ ca_file = \"{ca}\" }}\n\n\
         [dependencies.raw]\nkind = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{t}\
         tls = {{ ca_file = \"{ca}\", server_name = \"localhost\" }}\n",
        t = timing()
    );
    let (handle, _) = engine(&config);
    for name in ["web", "raw"] {
        let state = state_where(&handle, name, |d| d.health == Health::Unhealthy).await;
        let reason = state
            .last_outcome
            .as_ref()
            .and_then(|o| o.verdict.reason())
            .map(|r| r.to_string())
            .unwrap_or_default();
        assert!(reason.contains("expired"), "{name}: {reason}");
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_grpc_dependency_over_tls_records_its_certificate_too() {
    let dir = temp_dir("expiry-grpc");
    let addr = grpc_tls_server(&dir, 3).await;
    let ca = dir.join("ca.pem").display().to_string();
    let port = addr.port();
    let config = format!(
        "[dependencies.rpc]\nkind = \"grpc\"\ntarget = \"https://localhost:{port}\"\n{t}\
         tls = {{ ca_file = \"{ca}\" }}\n",
        t = timing()
    );
    let (handle, _) = engine(&config);
    let state = state_where(&handle, "rpc", |d| d.health == Health::Degraded).await;
    assert_eq!(
        state.last_outcome.as_ref().map(|o| o.verdict.clone()),
        Some(Verdict::degraded("certificate expires in 3d"))
    );
    assert!(state.certificate_expires.is_some());
    handle.shutdown().await;
}
