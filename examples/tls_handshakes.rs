//! Benchmark helper: the cost of a new TLS connection. `tls_handshakes ADDR CA_PEM N` makes N
//! sequential connections to ADDR (TCP connect, a full TLS 1.3 handshake verifying the server
//! as `localhost` against CA_PEM with ALPN h2, then close) and prints
//! `handshakes=N p50_us=… p99_us=…` (client-observed, connect to handshake done). No session
//! resumption: each is a full handshake, the worst case (a kubelet or load balancer that
//! reconnects for every probe). The server's CPU per handshake is measured around it by
//! `bench/run.sh`.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(ca), Some(n)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: tls_handshakes ADDR CA_PEM N".into());
    };
    let n: usize = n.parse()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: every connection pays the full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost")?;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let tcp = tokio::net::TcpStream::connect(&addr).await?;
        let tls = connector.connect(name.clone(), tcp).await?;
        times.push(started.elapsed().as_micros() as u64);
        drop(tls);
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!("handshakes={n} p50_us={} p99_us={}", at(0.5), at(0.99));
    Ok(())
}
