//! The listeners' TLS as data (`[server.grpc_tls]`, `[server.http_tls]`): the spec, the rustls
//! server config built from its PEM files (also by config validation, so a bad pair is a config
//! error), a certificate's facts and a verified client certificate's identities. The running,
//! rotating side is `crate::listener::ServerTls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Whether and how clients present certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one (verified against the client CA); without one it is served
    /// as any other client, with no identity.
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

/// A listener's TLS files and client policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsSpec {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Trust anchors for client certificates, PEM.
    pub client_ca_file: Option<PathBuf>,
    /// Default `None`, or `Required` when a client CA is given.
    pub client_auth: ClientAuth,
}

impl ServerTlsSpec {
    /// Every file the config is built from.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert_file.as_path(), self.key_file.as_path()];
        files.extend(self.client_ca_file.as_deref());
        files
    }
}

/// What a loaded certificate says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// `notAfter` of the leaf.
    pub not_after: SystemTime,
    /// The leaf's serial number, hex.
    pub serial: String,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The rustls config of `spec` and its certificate's facts.
pub(crate) fn build(
    spec: &ServerTlsSpec,
    alpn: &[Vec<u8>],
) -> Result<(ServerConfig, CertificateInfo), String> {
    let certs = super::parse_certs(&read(&spec.cert_file)?)
        .map_err(|e| format!("{}: {e}", spec.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&spec.key_file)?).map_err(|e| {
        format!(
            "{}: no usable PEM private key ({e})",
            spec.key_file.display()
        )
    })?;
    let info =
        certificate_info(&certs[0]).map_err(|e| format!("{}: {e}", spec.cert_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&spec.client_ca_file, spec.client_auth) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => return Err("client_auth needs client_ca_file".to_owned()),
        (Some(ca), auth) => {
            let mut roots = RootCertStore::empty();
            for cert in
                super::parse_certs(&read(ca)?).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {} do not make a usable pair: {e}",
            spec.cert_file.display(),
            spec.key_file.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok((config, info))
}

/// `notAfter` and serial of a certificate.
pub(crate) fn certificate_info(cert: &CertificateDer<'_>) -> Result<CertificateInfo, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).unwrap_or(0));
    Ok(CertificateInfo {
        not_after,
        serial: parsed.raw_serial_as_string().replace(':', ""),
    })
}

/// The identities of a verified client certificate: its URI SANs as they are (e.g.
/// `spiffe://cluster.local/ns/ops/sa/admin`) and its DNS SANs as `dns:NAME`.
pub(crate) fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::DNSName(dns) => Some(format!("dns:{dns}")),
            _ => None,
        })
        .collect()
}
