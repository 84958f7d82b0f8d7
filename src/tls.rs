//! TLS, in one room: [`TlsSpec`] (how a client verifies a server's certificate and proves its
//! own identity), PEM parsing for validation, and the client configurations built from a spec
//! for the HTTP probe (rustls), the gRPC probe and the `check` command (tonic). Key material is
//! read and parsed during validation, so a bad file is a config error, not a probe failure at
//! 3 a.m.
//!
//! `server_name` means the same on every path: it is the name the dependency is addressed by —
//! sent as SNI, verified in the certificate, and the request's authority (`Host`, `:authority`,
//! unless a gRPC `authority` is set) — while the URL or target says where to connect.

mod client;
pub(crate) mod server;

use std::fmt;
use std::hash::{Hash, Hasher};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub(crate) use client::{client_config, tonic_endpoint, unused_client_config};

/// TLS settings for an `https://` HTTP or gRPC dependency.
///
/// The default verifies the server against the system's roots. Two specs that are equal share
/// one HTTP client (and its connection pool).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// Extra trust anchors (PEM) that replace the system roots when set.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key (PEM), for mTLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the certificate against (and send as SNI) instead of the URL's host.
    pub server_name: Option<String>,
    /// Accept any certificate. Logged as a warning when the probe starts.
    pub insecure: bool,
    /// A successful run whose peer certificate expires within this is Degraded
    /// (`certificate expires in 3d`). Default [`DEFAULT_EXPIRY_WARNING`].
    pub expiry_warning: std::time::Duration,
}

/// How long before its certificate's expiry a TLS dependency turns Degraded, by default.
pub const DEFAULT_EXPIRY_WARNING: std::time::Duration =
    std::time::Duration::from_secs(14 * 24 * 3600);

impl Default for TlsSpec {
    fn default() -> TlsSpec {
        TlsSpec {
            ca_pem: None,
            identity_pem: None,
            server_name: None,
            insecure: false,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
        }
    }
}

impl Hash for TlsSpec {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ca_pem.hash(state);
        self.identity_pem.hash(state);
        self.server_name.hash(state);
        self.insecure.hash(state);
        self.expiry_warning.hash(state);
    }
}

impl fmt::Debug for TlsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TlsSpec")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_identity", &self.identity_pem.is_some())
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .field("expiry_warning", &self.expiry_warning)
            .finish()
    }
}

impl TlsSpec {
    /// Whether this is the default (system roots, no client certificate).
    pub fn is_default(&self) -> bool {
        *self == TlsSpec::default()
    }

    /// The custom CA certificates, parsed.
    pub(crate) fn ca_certs(&self) -> Vec<CertificateDer<'static>> {
        self.ca_pem
            .as_deref()
            .map(|pem| parse_certs(pem).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The client identity, parsed.
    pub(crate) fn identity(
        &self,
    ) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let (cert, key) = self.identity_pem.as_ref()?;
        Some((
            parse_certs(cert).ok()?,
            PrivateKeyDer::from_pem_slice(key).ok()?,
        ))
    }
}

/// Every certificate in a PEM file; an error when there is none or one is malformed.
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".to_owned());
    }
    Ok(certs)
}

/// Checks that a PEM file holds a private key.
pub(crate) fn check_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| format!("no usable PEM private key ({e})"))
}
