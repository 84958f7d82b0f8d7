//! Client TLS configurations from a [`TlsSpec`]: rustls for the HTTP probe, tonic's for gRPC
//! channels. Built with an explicit ring provider, so the library never depends on (or
//! installs) a process-wide default.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::TlsSpec;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls config for `spec`, offering the `alpn` protocols (HTTP probe).
pub(crate) fn client_config(spec: &TlsSpec, alpn: &[&[u8]]) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match spec {
        spec if spec.insecure => Arc::new(Unverified::accept_any(&provider)),
        spec => {
            // The name verified is the one the connection is made for: the HTTP probe puts
            // `server_name` in the request URL, so rustls checks (and sends as SNI) that name.
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots(spec)?), provider.clone())
                .build()
                .map_err(|e| e.to_string())?
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match spec.identity() {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A configuration for clients that never make a TLS connection (the HTTP probe's plain-HTTP
/// clients, which reqwest still builds a TLS connector for): no trust anchors at all.
pub(crate) fn unused_client_config() -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The trust anchors: the configured CA, or the system's roots.
fn roots(spec: &TlsSpec) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    if spec.ca_pem.is_some() {
        roots.add_parsable_certificates(spec.ca_certs());
    } else {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if roots.is_empty() {
        return Err("no trusted root certificates (set tls.ca_file)".to_owned());
    }
    Ok(roots)
}

/// A verifier that does not look at the certificate chain, for `tls.insecure = true`. The
/// handshake signature is still checked against the presented key.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Unverified {
    fn accept_any(provider: &CryptoProvider) -> Unverified {
        Unverified {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `endpoint` with TLS from `spec` (gRPC probe and the `check` command). The certificate is
/// verified against, and SNI set to, `name` when given (`tls.server_name`, or the host of a
/// gRPC `authority`), else the endpoint's host.
pub(crate) fn tonic_endpoint(
    endpoint: Endpoint,
    spec: &TlsSpec,
    name: Option<&str>,
) -> Result<Endpoint, String> {
    let mut config = ClientTlsConfig::new();
    if let Some(name) = name {
        config = config.domain_name(name);
    }
    if let Some((cert, key)) = &spec.identity_pem {
        config = config.identity(Identity::from_pem(cert, key));
    }
    let endpoint = if spec.insecure {
        endpoint.tls_config_with_verifier(config, Arc::new(Unverified::accept_any(&provider())))
    } else {
        config = match &spec.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        endpoint.tls_config(config)
    };
    endpoint.map_err(|e| crate::net_error::describe(&e).unwrap_or_else(|| e.to_string()))
}
