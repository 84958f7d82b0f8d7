//! TLS dependencies: a server whose certificate chains to a test CA fails verification unless
//! that CA is configured (or `insecure` is set), and an mTLS server refuses probes without the
//! client certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use healthgate::{Health, Verdict};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{probe_once, reason, temp_dir};

/// A test CA, a server certificate for localhost/127.0.0.1 and a client certificate, all
/// written as PEM files into a fresh directory.
pub(crate) struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    server_pem: (String, String),
}

pub(crate) fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "healthgate test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        (cert, key)
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["probe.healthgate.test".into()]);
    let dir = temp_dir("pki");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("client.pem"), client_cert.pem()).expect("write");
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).expect("write");
    std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
    Pki {
        dir,
        ca: ca.der().clone(),
        server_cert: server_cert.der().clone(),
        server_key: server_key.serialize_der(),
        server_pem: (server_cert.pem(), server_key.serialize_pem()),
    }
}

impl Pki {
    pub(crate) fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub(crate) fn server_cert(&self) -> CertificateDer<'static> {
        self.server_cert.clone()
    }

    /// The server's private key, PKCS#8 DER.
    pub(crate) fn server_key(&self) -> Vec<u8> {
        self.server_key.clone()
    }
}

/// An HTTPS server answering 200 "ok", optionally requiring a client certificate from the CA.
async fn tls_server(pki: &Pki, require_client_cert: bool) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocols");
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).expect("CA");
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let key = PrivateKeyDer::Pkcs8(pki.server_key.clone().into());
    let mut config = builder
        .with_single_cert(vec![pki.server_cert.clone()], key)
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
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

fn https(addr: SocketAddr, tls: &str) -> String {
    format!(
        "kind = \"http\"\nurl = \"https://localhost:{}/health\"\ntimeout = \"5s\"\n{tls}",
        addr.port()
    )
}

#[tokio::test]
async fn unknown_issuer_fails_unless_its_ca_is_configured() {
    let pki = pki();
    let addr = tls_server(&pki, false).await;
    let outcome = probe_once(&https(addr, "")).await;
    assert_eq!(outcome.health(), Health::Unhealthy);
    assert_eq!(
        reason(&outcome),
        "tls: invalid peer certificate: UnknownIssuer"
    );

    let with_ca = format!("tls = {{ ca_file = {:?} }}", pki.file("ca.pem"));
    assert_eq!(
        probe_once(&https(addr, &with_ca)).await.verdict,
        Verdict::Healthy
    );
}

#[tokio::test]
async fn insecure_skips_verification() {
    let pki = pki();
    let addr = tls_server(&pki, false).await;
    assert_eq!(
        probe_once(&https(addr, "tls = { insecure = true }"))
            .await
            .verdict,
        Verdict::Healthy
    );
}

#[tokio::test]
async fn server_name_override_verifies_against_the_configured_name() {
    let pki = pki();
    let addr = tls_server(&pki, false).await;
    let ca = pki.file("ca.pem");
    let wrong = format!("tls = {{ ca_file = {ca:?}, server_name = \"other.example\" }}");
    let outcome = probe_once(&https(addr, &wrong)).await;
    assert!(
        reason(&outcome)
            .starts_with("tls: invalid peer certificate: certificate not valid for name"),
        "{}",
        reason(&outcome)
    );
    let right = format!("tls = {{ ca_file = {ca:?}, server_name = \"localhost\" }}");
    assert_eq!(
        probe_once(&https(addr, &right)).await.verdict,
        Verdict::Healthy
    );
}

#[tokio::test]
async fn mtls_server_refuses_probes_without_the_client_certificate() {
    let pki = pki();
    let addr = tls_server(&pki, true).await;
    let ca = pki.file("ca.pem");
    let outcome = probe_once(&https(addr, &format!("tls = {{ ca_file = {ca:?} }}"))).await;
    assert_eq!(outcome.health(), Health::Unhealthy, "no client certificate");
    assert_eq!(
        reason(&outcome),
        "tls: received fatal alert: CertificateRequired"
    );

    let with_identity = format!(
        "tls = {{ ca_file = {ca:?}, cert_file = {:?}, key_file = {:?} }}",
        pki.file("client.pem"),
        pki.file("client.key")
    );
    assert_eq!(
        probe_once(&https(addr, &with_identity)).await.verdict,
        Verdict::Healthy
    );
}

/// A tonic health server over TLS (tonic's own server TLS), SERVING for `""`.
async fn grpc_tls_server(pki: &Pki) -> SocketAddr {
    use tonic::transport::{Identity, Server, ServerTlsConfig};
    let (_reporter, service) = tonic_health::server::health_reporter();
    let identity = Identity::from_pem(&pki.server_pem.0, &pki.server_pem.1);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let router = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .expect("tls config")
        .add_service(service);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn grpc_over_tls_verifies_against_the_configured_ca() {
    let pki = pki();
    let addr = grpc_tls_server(&pki).await;
    let dep = |tls: &str| {
        format!(
            "kind = \"grpc\"\ntarget = \"https://localhost:{}\"\ntimeout = \"5s\"\n{tls}",
            addr.port()
        )
    };
    let outcome = probe_once(&dep(&format!(
        "tls = {{ ca_file = {:?} }}",
        pki.file("ca.pem")
    )))
    .await;
    assert_eq!(outcome.verdict, Verdict::Healthy);
    let outcome = probe_once(&dep("tls = { insecure = true }")).await;
    assert_eq!(outcome.verdict, Verdict::Healthy);
    // Without the CA (system roots only), the handshake fails.
    let outcome = probe_once(&dep("")).await;
    assert_eq!(outcome.health(), Health::Unhealthy);
    assert!(
        reason(&outcome).contains("UnknownIssuer"),
        "{}",
        reason(&outcome)
    );
}
