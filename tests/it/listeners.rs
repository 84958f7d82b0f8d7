//! The listeners through the real binary: TLS and mTLS on the gRPC and HTTP ports with
//! identities for admin and detail, certificate rotation under an open Watch stream, the
//! plaintext probe port, and Unix sockets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{HttpServer, PATIENCE, next_line, temp_dir, terminate_and_read_logs};

const ADMIN_ID: &str = "spiffe://healthgate.test/ns/ops/sa/admin";
const READER_ID: &str = "dns:reader.healthgate.test";

/// A test CA and the certificates the tests need, as PEM files in one directory.
struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "healthgate listeners test CA");
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let dir = temp_dir(name);
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
        Pki { dir, ca }
    }

    /// A leaf signed by the CA with these SANs, `serial`, expiring in `days`.
    fn leaf(&self, sans: Vec<SanType>, serial: u64, days: i64) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from(serial.to_be_bytes().to_vec()));
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.ca).expect("signed");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server_leaf(&self, serial: u64, days: i64) -> Leaf {
        self.leaf(
            vec![
                SanType::DnsName("localhost".try_into().expect("name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            serial,
            days,
        )
    }

    fn client_leaf(&self, san: &str, serial: u64) -> Leaf {
        let san = match san.strip_prefix("dns:") {
            Some(dns) => SanType::DnsName(dns.try_into().expect("name")),
            None => SanType::URI(san.try_into().expect("uri")),
        };
        self.leaf(vec![san], serial, 30)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Writes `leaf` as `NAME.pem` and `NAME.key` (atomically, as cert-manager's renames do).
    fn write(&self, name: &str, leaf: &Leaf) {
        for (ext, text) in [("key", &leaf.key), ("pem", &leaf.cert)] {
            let tmp = self.path(&format!(".{name}.{ext}.tmp"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, self.path(&format!("{name}.{ext}"))).expect("rename");
        }
    }
}

/// A running `healthgate serve`: its listeners by name (`grpc`, `http`, `probe`), as printed.
struct Served {
    child: Child,
    listening: HashMap<String, String>,
}

/// Runs `healthgate serve` with `config` (written into `dir`) and waits for `listeners`'
/// "NAME listening on ADDR" lines.
async fn serve(dir: &Path, config: &str, listeners: &[&str]) -> Served {
    let file = dir.join("healthgate.toml");
    std::fs::write(&file, config).expect("write");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"))
        .args(["serve", "--config", &file.display().to_string()])
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut listening = HashMap::new();
    while listening.len() < listeners.len() {
        let line = next_line(&mut lines).await;
        if let Some((name, addr)) = line.split_once(" listening on ") {
            listening.insert(name.to_owned(), addr.to_owned());
        }
    }
    for name in listeners {
        assert!(listening.contains_key(*name), "{name} in {listening:?}");
    }
    Served { child, listening }
}

impl Served {
    fn addr(&self, name: &str) -> &str {
        &self.listening[name]
    }
}

/// A gRPC channel over TLS to `addr`, verifying the server as `localhost` against the CA,
/// with `client` as the client certificate when given.
async fn tls_channel(
    addr: &str,
    pki: &Pki,
    client: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()))
        .domain_name("localhost");
    if let Some(leaf) = client {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)?
        .connect_timeout(PATIENCE)
        .connect()
        .await
}

async fn check(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner().status())
}

/// A rustls client config trusting the CA, offering `alpn`.
fn rustls_client(pki: &Pki, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from(pki.ca.der().to_vec());
    roots.add(ca).expect("CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A rustls client config trusting the CA with `leaf` as its client certificate.
fn rustls_client_with(pki: &Pki, leaf: &Leaf) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(pki.ca.der().to_vec()))
        .expect("CA");
    let certs = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `GET path` over HTTPS/1.1 with `config`: the whole answer.
async fn https_get(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    accept: &str,
) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: hg\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, tls.read_to_string(&mut out))
        .await
        .expect("answered")
        .ok();
    out
}

#[tokio::test]
async fn https_with_optional_client_certificates_shows_reasons_to_an_allowed_identity_only() {
    let pki = Pki::new("listeners-https-identity");
    pki.write("server", &pki.server_leaf(0x5001, 90));
    let reader = pki.client_leaf(READER_ID, 0x5002);
    let stranger = pki.client_leaf("dns:stranger.healthgate.test", 0x5003);
    let dependency = HttpServer::start().await;
    dependency.set(crate::support::Answer {
        status: 503,
        ..Default::default()
    });
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\ndetail_token = \"a-detail-token\"\n\
         detail_identities = [\"{READER_ID}\"]\n\n{}\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n",
        tls_section("http", &pki, Some("optional")),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc", "http"]).await;
    let addr = served.addr("http").to_owned();
    let json = "application/health+json";
    let failing = async {
        loop {
            let out = https_get(&addr, rustls_client_with(&pki, &reader), "/healthz", json).await;
            if out.contains("x-health-state: unhealthy") {
                break out;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let as_reader = tokio::time::timeout(PATIENCE, failing)
        .await
        .expect("the dependency fails");
    assert!(
        as_reader.contains("\"output\""),
        "the reader sees reasons:\n{as_reader}"
    );
    let as_stranger = https_get(&addr, rustls_client_with(&pki, &stranger), "/healthz", json).await;
    assert!(as_stranger.starts_with("HTTP/1.1 503"), "{as_stranger}");
    assert!(
        !as_stranger.contains("\"output\""),
        "a verified but not allowed identity sees none:\n{as_stranger}"
    );
    // Optional: a client without a certificate is served, without reasons.
    let anonymous = https_get(&addr, rustls_client(&pki, &[b"http/1.1"]), "/healthz", json).await;
    assert!(
        anonymous.starts_with("HTTP/1.1 503") && !anonymous.contains("\"output\""),
        "{anonymous}"
    );
    terminate_and_read_logs(&mut served.child).await;
}

/// A TLS handshake with `addr`: the serial (hex) of the certificate the server presented and
/// the protocol ALPN chose, and the open stream.
async fn handshake(
    addr: &str,
    pki: &Pki,
    alpn: &[&[u8]],
) -> (
    String,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(rustls_client(pki, alpn));
    let name = ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (_, conn) = tls.get_ref();
    let cert = &conn.peer_certificates().expect("a certificate")[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).expect("x509");
    let serial = parsed.raw_serial_as_string().replace(':', "");
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    (serial, alpn, tls)
}

/// A serial as x509-parser prints it: minimal big-endian bytes, hex.
fn serial_hex(serial: u64) -> String {
    let hex = format!("{serial:x}");
    if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    }
}

fn tls_section(name: &str, pki: &Pki, client_auth: Option<&str>) -> String {
    let mut section = format!(
        "[server.{name}_tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    if let Some(auth) = client_auth {
        section.push_str(&format!(
            "client_ca_file = \"{}\"\nclient_auth = \"{auth}\"\n",
            pki.path("ca.pem").display()
        ));
    }
    section
}

#[tokio::test]
async fn grpc_mtls_admits_by_identity_refuses_without_a_certificate_and_audits_the_identity() {
    let pki = Pki::new("listeners-mtls");
    pki.write("server", &pki.server_leaf(1, 90));
    let admin = pki.client_leaf(ADMIN_ID, 2);
    let reader = pki.client_leaf(READER_ID, 3);
    let stranger = pki.client_leaf("spiffe://healthgate.test/ns/other/sa/x", 4);
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\
         detail_identities = [\"{READER_ID}\"]\n\n{}\n\
         [admin]\nallowed_identities = [\"{ADMIN_ID}\"]\n\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n",
        tls_section("grpc", &pki, Some("required")),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc"]).await;
    let addr = served.addr("grpc").to_owned();

    // Required mTLS: no client certificate, no handshake (so no RPC).
    let refused = match tls_channel(&addr, &pki, None).await {
        Err(_) => true,
        Ok(channel) => check(channel).await.is_err(),
    };
    assert!(refused, "a client without a certificate is refused");

    // The standard Health service needs no credentials beyond the handshake.
    let channel = tls_channel(&addr, &pki, Some(&stranger))
        .await
        .expect("connects");
    let serving = async {
        while check(channel.clone()).await.ok() != Some(ServingStatus::Serving) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("SERVING over mTLS");

    // Detail: the reader's DNS identity is allowed, the admin's URI identity is not.
    let detail = |channel: Channel| async move {
        let mut client = healthgate::grpc::pb::detail::detail_client::DetailClient::new(channel);
        client
            .get(healthgate::grpc::pb::detail::DetailRequest::default())
            .await
            .map(drop)
    };
    let as_reader = tls_channel(&addr, &pki, Some(&reader))
        .await
        .expect("connects");
    let as_admin = tls_channel(&addr, &pki, Some(&admin))
        .await
        .expect("connects");
    detail(as_reader.clone())
        .await
        .expect("the reader reads detail");
    assert_eq!(
        detail(as_admin.clone())
            .await
            .expect_err("not a reader")
            .code(),
        tonic::Code::Unauthenticated
    );

    // Admin: the admin's identity is allowed (no token configured at all), the reader's not.
    let refresh = |channel: Channel| async move {
        let mut client = healthgate::grpc::pb::admin::admin_client::AdminClient::new(channel);
        client
            .refresh(healthgate::grpc::pb::admin::RefreshRequest {
                dependency: "api".into(),
            })
            .await
            .map(drop)
    };
    refresh(as_admin.clone())
        .await
        .expect("the admin may refresh");
    assert_eq!(
        refresh(as_reader).await.expect_err("not the admin").code(),
        tonic::Code::Unauthenticated
    );

    // The CLI's grpc_health_probe TLS flags work against it.
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"))
        .args(["check", "--addr", &addr, "-tls"])
        .arg("-tls-ca-cert")
        .arg(pki.path("ca.pem"))
        .arg("-tls-server-name")
        .arg("localhost")
        .arg("-tls-client-cert")
        .arg(write_leaf(&pki, "cli", &stranger).0)
        .arg("-tls-client-key")
        .arg(write_leaf(&pki, "cli", &stranger).1)
        .output()
        .await
        .expect("runs");
    assert!(status.status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("SERVING"));

    let logs = terminate_and_read_logs(&mut served.child).await;
    let audit = logs
        .lines()
        .find(|l| l.contains("action=\"refresh\"") && l.contains(ADMIN_ID))
        .unwrap_or_else(|| panic!("an audit line naming the identity in:\n{logs}"));
    assert!(audit.contains("127.0.0.1"), "{audit}");
    assert!(
        logs.lines()
            .any(|l| l.contains("admin call refused") && l.contains(READER_ID)),
        "the refusal names who tried:\n{logs}"
    );
}

fn write_leaf(pki: &Pki, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    pki.write(name, leaf);
    (
        pki.path(&format!("{name}.pem")),
        pki.path(&format!("{name}.key")),
    )
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_while_an_open_watch_keeps_streaming() {
    let pki = Pki::new("listeners-rotate");
    pki.write("server", &pki.server_leaf(0x1001, 90));
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n{}\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\nfall = 1\nrise = 1\n",
        tls_section("grpc", &pki, None),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc", "http"]).await;
    let addr = served.addr("grpc").to_owned();
    let http = served.addr("http").parse().expect("an address");
    assert_eq!(handshake(&addr, &pki, &[b"h2"]).await.0, serial_hex(0x1001));
    // SIGHUP reads the TLS files again too (no file changed, so only the signal can count).
    let pid = served.child.id().expect("running") as i32;
    let pid = rustix::process::Pid::from_raw(pid).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let reread = async {
        let success = "healthgate_tls_reloads_total{listener=\"grpc\",result=\"success\"} 1";
        while !crate::support::get_metrics(http).await.contains(success) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, reread)
        .await
        .expect("SIGHUP re-read the TLS files");

    let channel = tls_channel(&addr, &pki, None).await.expect("connects");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(PATIENCE, watch.message())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a message")
            .status()
    };
    let mut status = next().await;
    while status != ServingStatus::Serving {
        status = next().await;
    }

    // cert-manager renews: new files, same names.
    pki.write("server", &pki.server_leaf(0x1002, 90));
    let rotated = async {
        while handshake(&addr, &pki, &[b"h2"]).await.0 != serial_hex(0x1002) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, rotated)
        .await
        .expect("new handshakes see the new certificate");
    // The stream opened before the rotation still carries changes.
    dependency.set(crate::support::Answer {
        status: 503,
        ..Default::default()
    });
    assert_eq!(next().await, ServingStatus::NotServing);
    let metrics = crate::support::get_metrics(http).await;
    let expiry = metrics
        .lines()
        .find(|l| {
            l.starts_with("healthgate_certificate_expiry_timestamp_seconds{listener=\"grpc\"}")
        })
        .unwrap_or_else(|| panic!("the expiry metric in:\n{metrics}"));
    let at: f64 = expiry
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    let in_days = (at
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_secs_f64())
        / 86_400.0;
    assert!(
        (89.0..=90.5).contains(&in_days),
        "the new certificate's expiry: {in_days} days"
    );

    // A broken rotation (the new certificate with a key that is not its own) keeps the one in
    // force, and is counted.
    let other = pki.server_leaf(0x1003, 90);
    let broken = Leaf {
        cert: other.cert,
        key: pki.server_leaf(0x1004, 90).key,
    };
    pki.write("server", &broken);
    let counted = async {
        loop {
            let metrics = crate::support::get_metrics(http).await;
            if metrics
                .contains("healthgate_tls_reloads_total{listener=\"grpc\",result=\"failure\"} 1")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, counted)
        .await
        .expect("the failed rotation is counted");
    assert_eq!(
        handshake(&addr, &pki, &[b"h2"]).await.0,
        serial_hex(0x1002),
        "the certificate in force stays"
    );
    let logs = terminate_and_read_logs(&mut served.child).await;
    assert!(
        logs.contains("TLS certificate reload failed"),
        "logged:\n{logs}"
    );
}

#[tokio::test]
async fn https_speaks_h2_and_http1_by_alpn_and_a_soon_expiring_certificate_is_warned_of() {
    let pki = Pki::new("listeners-https");
    pki.write("server", &pki.server_leaf(0x2001, 3));
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n{}\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\n",
        tls_section("http", &pki, None),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc", "http"]).await;
    let addr = served.addr("http").to_owned();
    for (alpn, expected) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let (serial, chosen, stream) = handshake(&addr, &pki, alpn).await;
        assert_eq!(serial, serial_hex(0x2001));
        assert_eq!(chosen.as_deref(), Some(expected));
        if expected == b"http/1.1" {
            let mut stream = stream;
            stream
                .write_all(b"GET /livez HTTP/1.1\r\nHost: hg\r\nConnection: close\r\n\r\n")
                .await
                .expect("write");
            let mut out = String::new();
            tokio::time::timeout(PATIENCE, stream.read_to_string(&mut out))
                .await
                .expect("answered")
                .ok();
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            assert!(out.ends_with("\r\n\r\nok"), "{out}");
        }
    }
    let logs = terminate_and_read_logs(&mut served.child).await;
    assert!(
        logs.lines()
            .any(|l| l.contains("expires soon") && l.contains("http")),
        "a warning within 14 days of expiry:\n{logs}"
    );
}

#[tokio::test]
async fn the_probe_port_serves_health_and_the_probe_paths_and_nothing_else() {
    let pki = Pki::new("listeners-probe");
    pki.write("server", &pki.server_leaf(0x3001, 90));
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nprobe_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n{}\n\
         [admin]\ntoken = \"a-long-enough-admin-token\"\n\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n\
         [dependencies.job]\nkind = \"push\"\nttl = \"1h\"\n\
         [services.readiness]\ndependencies = {{ api = \"critical\" }}\n",
        tls_section("grpc", &pki, Some("required")),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc", "probe"]).await;
    let probe: std::net::SocketAddr = served.addr("probe").parse().expect("an address");
    // Plaintext gRPC health on the probe port while the main port requires mTLS.
    let channel = crate::support::channel(probe).await;
    let serving = async {
        loop {
            let mut client = HealthClient::new(channel.clone());
            let status = client
                .check(HealthCheckRequest {
                    service: "readiness".into(),
                })
                .await
                .map(|r| r.into_inner().status());
            if status.ok() == Some(ServingStatus::Serving) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("SERVING on the probe port");
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .expect("Watch is served too")
        .into_inner();
    assert!(watch.message().await.expect("a message").is_some());
    // Never detail or admin.
    let detail = healthgate::grpc::pb::detail::detail_client::DetailClient::new(channel.clone())
        .get(healthgate::grpc::pb::detail::DetailRequest::default())
        .await
        .expect_err("no detail on the probe port");
    assert_eq!(detail.code(), tonic::Code::Unimplemented, "{detail:?}");
    let mut admin = healthgate::grpc::pb::admin::admin_client::AdminClient::new(channel);
    let mut show = tonic::Request::new(healthgate::grpc::pb::admin::ShowRequest::default());
    show.metadata_mut().insert(
        "authorization",
        "Bearer a-long-enough-admin-token".parse().expect("value"),
    );
    let refused = admin
        .show(show)
        .await
        .expect_err("no admin on the probe port");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    // HTTP: the probe paths answer; the page, its JSON, metrics, services and push do not.
    let (status, body) = crate::support::http_call(probe, "GET", "/readyz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = crate::support::http_call(probe, "GET", "/livez?verbose", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = crate::support::http_call(probe, "GET", "/healthz/api", None).await;
    assert_eq!(status, 200, "{body}");
    for path in ["/", "/status.json", "/metrics", "/services/readiness"] {
        let (status, _) = crate::support::http_call(probe, "GET", path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = crate::support::http_call(
        probe,
        "POST",
        "/push/job",
        Some("a-long-enough-admin-token"),
    )
    .await;
    assert!(status >= 400, "no push on the probe port: {status}");
    let (_, verbose) = crate::support::http_call(probe, "GET", "/healthz?verbose", None).await;
    assert!(
        verbose.contains("[-]job failed: reason withheld"),
        "the job was never reported (so push did nothing), and reasons stay withheld:\n{verbose}"
    );
    terminate_and_read_logs(&mut served.child).await;
}

/// One request over a Unix socket, HTTP/1.1: the status line and body.
async fn unix_http(path: &Path, request: &str) -> String {
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut out))
        .await
        .expect("answered")
        .expect("read");
    out
}

#[tokio::test]
async fn unix_sockets_replace_a_stale_file_take_the_mode_serve_grpc_and_http_and_go_at_exit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("listeners-unix");
    let grpc = dir.join("grpc.sock");
    let http = dir.join("http.sock");
    // A stale socket file, as a SIGKILLed run leaves it.
    drop(std::os::unix::net::UnixListener::bind(&grpc).expect("bind"));
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"unix:grpc.sock\"\nhttp_listen = \"unix:{}\"\n\
         unix_socket_mode = \"0600\"\ndrain_delay = \"0s\"\n\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n",
        http.display(),
        dependency.url("/health")
    );
    let mut served = serve(&dir, &config, &["grpc", "http"]).await;
    assert_eq!(served.addr("grpc"), format!("unix:{}", grpc.display()));
    for path in [&grpc, &http] {
        let mode = std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    // gRPC over the socket, as grpcio's unix: targets connect.
    let socket = grpc.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("connects over the socket");
    let serving = async {
        while check(channel.clone()).await.ok() != Some(ServingStatus::Serving) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, serving)
        .await
        .expect("SERVING over unix:");
    let answer = unix_http(
        &http,
        "GET /readyz HTTP/1.1\r\nHost: hg\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nok"),
        "{answer}"
    );
    // curl's --unix-socket, as operators use it.
    if let Ok(out) = tokio::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&http)
        .arg("http://localhost/livez")
        .output()
        .await
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    }
    // A second server cannot take a live socket.
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"))
        .args(["serve", "--config"])
        .arg(dir.join("healthgate.toml"))
        .output()
        .await
        .expect("runs");
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another process accepts connections"),
        "{second:?}"
    );
    assert!(grpc.exists(), "the live socket was left alone");
    terminate_and_read_logs(&mut served.child).await;
    assert!(
        !grpc.exists() && !http.exists(),
        "the socket files go at exit"
    );
}

#[tokio::test]
async fn listener_config_errors_name_the_key_and_exit_2() {
    let pki = Pki::new("listeners-config");
    pki.write("server", &pki.server_leaf(0x4001, 90));
    // A key that is not the certificate's.
    let other = pki.server_leaf(0x4002, 90);
    std::fs::write(pki.path("other.key"), &other.key).expect("write");
    let cases = [
        (
            "[server.grpc_tls]\ncert_file = \"server.pem\"\nkey_file = \"other.key\"\n".to_owned(),
            "server.grpc_tls",
            "do not make a usable pair",
        ),
        (
            "[server.http_tls]\ncert_file = \"missing.pem\"\nkey_file = \"server.key\"\n".to_owned(),
            "server.http_tls",
            "cannot read",
        ),
        (
            "[server.grpc_tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_auth = \"required\"\n".to_owned(),
            "server.grpc_tls.client_auth",
            "client_ca_file",
        ),
        (
            "[admin]\nallowed_identities = [\"spiffe://x/y\"]\n".to_owned(),
            "admin.allowed_identities",
            "client certificates",
        ),
        (
            "[server]\ndetail_identities = [\"just-a-name\"]\n".to_owned(),
            "server.detail_identities",
            "not an identity",
        ),
        (
            "[server]\nprobe_listen = \"unix:/nonexistent-dir/probe.sock\"\n".to_owned(),
            "server.probe_listen",
            "does not exist",
        ),
        (
            "[server]\nunix_socket_mode = \"0044\"\n".to_owned(),
            "server.unix_socket_mode",
            "owner read and write",
        ),
    ];
    for (config, key, reason) in cases {
        let file = pki.path("bad.toml");
        std::fs::write(&file, &config).expect("write");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_healthgate"))
            .args(["serve", "--config"])
            .arg(&file)
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}\n{stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(reason),
            "{config}: expected {key} and {reason:?} in\n{stderr}"
        );
    }
}

#[tokio::test]
async fn the_probe_port_has_the_same_limits_silent_clients_are_cut_and_the_newest_refused() {
    let dir = temp_dir("listeners-probe-abuse");
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nprobe_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n[limits]\nmax_connections = 8\nfirst_request_timeout = \"1s\"\n\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\ntimeout = \"80ms\"\n",
        dependency.url("/health")
    );
    let mut served = serve(&dir, &config, &["grpc", "probe"]).await;
    let probe: std::net::SocketAddr = served.addr("probe").parse().expect("an address");
    // Fill the probe port's slots with clients that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(
            tokio::net::TcpStream::connect(probe)
                .await
                .expect("connect"),
        );
    }
    // The newest is accepted and closed at once, before the deadline: refused.
    let mut newest = tokio::net::TcpStream::connect(probe)
        .await
        .expect("connect");
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_millis(900), newest.read_to_end(&mut said))
        .await
        .expect("closed at once, not at the deadline")
        .ok();
    assert!(said.is_empty(), "the refused client was served: {said:?}");
    // The main gRPC port is not affected by the probe port's abuse.
    let main: std::net::SocketAddr = served.addr("grpc").parse().expect("an address");
    let channel = crate::support::channel(main).await;
    assert!(
        check(channel).await.is_ok(),
        "the main port keeps answering"
    );
    // The silent ones are cut by the first-request deadline; then a kubelet gets through.
    let started = std::time::Instant::now();
    for mut tcp in silent {
        tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut Vec::new()))
            .await
            .expect("closed by the server")
            .ok();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = crate::support::http_call(probe, "GET", "/livez", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    terminate_and_read_logs(&mut served.child).await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_tls_handshake_is_cut_at_the_first_request_deadline() {
    let pki = Pki::new("listeners-tls-silent");
    pki.write("server", &pki.server_leaf(0x6001, 90));
    let dependency = HttpServer::start().await;
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
         drain_delay = \"0s\"\n\n{}\n[limits]\nfirst_request_timeout = \"500ms\"\n\n\
         [dependencies.api]\nkind = \"http\"\nurl = \"{}\"\n",
        tls_section("grpc", &pki, None),
        dependency.url("/health")
    );
    let mut served = serve(&pki.dir, &config, &["grpc", "http"]).await;
    let addr = served.addr("grpc").to_owned();
    let http = served.addr("http").parse().expect("an address");
    // Half a ClientHello's worth of nothing: a TCP connection that never speaks TLS.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = std::time::Instant::now();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut Vec::new()))
        .await
        .expect("closed by the server")
        .ok();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "cut at the deadline, not before or long after: {took:?}"
    );
    let metrics = crate::support::get_metrics(http).await;
    assert!(
        metrics.contains("healthgate_tls_handshake_failures_total{listener=\"grpc\"} 1"),
        "counted:\n{metrics}"
    );
    // Everyone else is served meanwhile and after.
    assert_eq!(handshake(&addr, &pki, &[b"h2"]).await.0, serial_hex(0x6001));
    terminate_and_read_logs(&mut served.child).await;
}
