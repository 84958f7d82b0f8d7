//! rustls client configuration for probes, built with an explicit ring provider so the library
//! never depends on (or installs) a process-wide default.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsSpec;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls config for `spec`; `None` builds one for plain-HTTP clients that never use TLS
/// (no roots loaded, so start-up does not pay for reading the system store).
pub(crate) fn client_config(spec: Option<&TlsSpec>, alpn_h2: bool) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match spec {
        Some(spec) if spec.insecure => Arc::new(Unverified::accept_any(&provider)),
        Some(spec) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(spec)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?;
            match spec.server_name.as_deref() {
                Some(name) => Arc::new(RenamedServer {
                    inner: webpki,
                    name: ServerName::try_from(name.to_owned())
                        .map_err(|e| format!("invalid tls.server_name: {e}"))?,
                }),
                None => webpki,
            }
        }
        None => Arc::new(Unverified::reject_all(&provider)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match spec.and_then(TlsSpec::identity) {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
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

/// A verifier that does not look at the certificate chain: `accept_any` for
/// `tls.insecure = true`, `reject_all` for plain-HTTP clients that must never complete a TLS
/// handshake. Either way the handshake signature is checked against the presented key.
#[derive(Debug)]
pub(crate) struct Unverified {
    accept: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Unverified {
    pub(crate) fn accept_any(provider: &CryptoProvider) -> Unverified {
        Unverified {
            accept: true,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn reject_all(provider: &CryptoProvider) -> Unverified {
        Unverified {
            accept: false,
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
        if self.accept {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "no trusted roots for a plain-HTTP client".into(),
            ))
        }
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

/// Verifies the certificate against a configured name instead of the URL's host (for
/// dependencies addressed by IP whose certificate names a host).
#[derive(Debug)]
struct RenamedServer {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for RenamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
