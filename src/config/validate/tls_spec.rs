//! `tls = { … }` for HTTP, gRPC and TCP dependencies: key material is read and parsed here, so a
//! bad file is a config error.

use super::*;

impl Validator<'_> {
    pub(super) fn tls(
        &mut self,
        path: &(impl std::fmt::Display + ?Sized),
        raw: Option<&RawTls>,
    ) -> Option<TlsSpec> {
        let Some(raw) = raw else {
            return Some(TlsSpec::default());
        };
        let before = self.problems.len();
        let ca_pem = raw.ca_file.as_deref().and_then(|f| {
            let pem = self.read_file(&format!("{path}.ca_file"), f)?;
            tls::parse_certs(&pem)
                .map_err(|e| self.problem(format!("{path}.ca_file"), format!("{f}: {e}")))
                .ok()?;
            Some(pem)
        });
        let identity_pem = match (&raw.cert_file, &raw.key_file) {
            (None, None) => None,
            (Some(cert), Some(key_file)) => {
                let cert_pem = self
                    .read_file(&format!("{path}.cert_file"), cert)
                    .and_then(|pem| {
                        tls::parse_certs(&pem)
                            .map_err(|e| {
                                self.problem(format!("{path}.cert_file"), format!("{cert}: {e}"))
                            })
                            .ok()?;
                        Some(pem)
                    });
                let key_pem = self
                    .read_file(&format!("{path}.key_file"), key_file)
                    .and_then(|pem| {
                        tls::check_key(&pem)
                            .map_err(|e| {
                                self.problem(format!("{path}.key_file"), format!("{key_file}: {e}"))
                            })
                            .ok()?;
                        Some(pem)
                    });
                cert_pem.zip(key_pem)
            }
            _ => {
                self.problem(
                    path.to_string(),
                    "cert_file and key_file must be set together",
                );
                None
            }
        };
        if let Some(name) = &raw.server_name {
            // Checked here, not at the first probe: it becomes the SNI, the verified name and
            // the request's host.
            let valid = rustls::pki_types::ServerName::try_from(name.as_str()).is_ok()
                && url::Host::parse(name).is_ok();
            if !valid {
                self.problem(
                    format!("{path}.server_name"),
                    format!("invalid server name {name:?}: expected a DNS name or an IP address"),
                );
            }
        }
        let insecure = raw.insecure.unwrap_or(false);
        if insecure && raw.ca_file.is_some() {
            self.problem(path.to_string(), "insecure = true and ca_file contradict each other: a CA is pointless when nothing is verified");
        }
        let expiry_warning = self
            .duration(&At(path, "expiry_warning"), raw.expiry_warning.as_deref())
            .unwrap_or(tls::DEFAULT_EXPIRY_WARNING);
        (self.problems.len() == before).then(|| TlsSpec {
            ca_pem,
            identity_pem,
            server_name: raw.server_name.clone(),
            insecure,
            expiry_warning,
        })
    }
}
