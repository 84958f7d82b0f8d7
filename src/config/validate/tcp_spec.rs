//! `kind = "tcp"`: the address, and an optional `tls` (the probe then completes a handshake).

use super::*;

impl Validator<'_> {
    pub(super) fn tcp(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<TcpSpec> {
        let Some(address) = raw.address.as_deref() else {
            self.problem(path, "missing key `address`");
            return None;
        };
        let apath = format!("{path}.address");
        let before = secrets.len();
        let raw_address = address;
        let address = self.expand(&apath, address, secrets)?;
        if secrets.len() > before {
            self.target_template = Some(raw_address.to_owned());
        }
        let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            // The address as written: an expanded value is a secret.
            self.problem(
                &apath,
                format!("invalid address {raw_address:?}: expected HOST:PORT"),
            );
            return None;
        }
        let tls = match &raw.tls {
            Some(t) => Some(Box::new(self.tls(&At(path, "tls"), Some(t))?)),
            None => None,
        };
        Some(TcpSpec { address, tls })
    }
}
