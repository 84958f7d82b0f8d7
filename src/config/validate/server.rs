//! The `[server]`, `[telemetry]` and `[limits]` sections.

use super::*;

impl Validator<'_> {
    /// A listen address (`IP:PORT` or `unix:PATH`, relative paths against the config's
    /// directory) at `key`, if given and valid (else a problem naming an example with `port`).
    fn listen_address(&mut self, key: &str, raw: Option<&str>, port: u16) -> Option<ListenAddr> {
        let listen = raw?;
        match ListenAddr::parse(listen) {
            Ok(ListenAddr::Unix(path)) => {
                let full = match self.base_dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path,
                };
                self.parent_exists(key, &full)
                    .then_some(ListenAddr::Unix(full))
            }
            Ok(addr) => Some(addr),
            Err(e) => {
                self.problem(
                    key,
                    format!("invalid address {listen:?}: {e}, e.g. \"0.0.0.0:{port}\""),
                );
                None
            }
        }
    }

    /// A TCP listen address at `key`, if given and valid (else a problem naming an example
    /// with `port`).
    fn address(&mut self, key: &str, raw: Option<&str>, port: u16) -> Option<SocketAddr> {
        let listen = raw?;
        let parsed = listen.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            self.problem(
                key,
                format!("invalid address {listen:?}: expected IP:PORT, e.g. \"0.0.0.0:{port}\""),
            );
        }
        parsed
    }

    pub(super) fn server(&mut self, raw: &RawServer) -> Option<ServerConfig> {
        let mut server = ServerConfig::default();
        if let Some(addr) =
            self.listen_address("server.grpc_listen", raw.grpc_listen.as_deref(), 50051)
        {
            server.grpc_listen = addr;
        }
        server.http_listen =
            self.listen_address("server.http_listen", raw.http_listen.as_deref(), 9464);
        server.probe_listen =
            self.listen_address("server.probe_listen", raw.probe_listen.as_deref(), 9466);
        if let Some(mode) = &raw.unix_socket_mode {
            let parsed = match mode {
                RawMode::Number(n) => u32::try_from(*n).ok(),
                RawMode::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8).ok(),
            };
            match parsed {
                Some(m) if m <= 0o777 && m & 0o600 == 0o600 => server.unix_socket_mode = m,
                _ => self.problem(
                    "server.unix_socket_mode",
                    "expected a file mode such as \"0660\" (octal) or 0o660 that lets the owner read and write",
                ),
            }
        }
        server.grpc_tls = raw
            .grpc_tls
            .as_ref()
            .and_then(|t| self.server_tls("server.grpc_tls", t));
        server.http_tls = raw
            .http_tls
            .as_ref()
            .and_then(|t| self.server_tls("server.http_tls", t));
        server.detail_identities =
            self.identities("server.detail_identities", raw.detail_identities.as_deref());
        server.haproxy_agent_listen = self.address(
            "server.haproxy_agent_listen",
            raw.haproxy_agent_listen.as_deref(),
            9465,
        );
        if let Some(w) = self.number(
            "server.haproxy_agent_degraded_weight",
            raw.haproxy_agent_degraded_weight,
            1,
            100,
        ) {
            server.haproxy_agent_degraded_weight = w as u8;
        }
        match raw.http_failure_status {
            None => {}
            Some(code @ (500 | 503)) => server.http_failure_status = code as u16,
            Some(other) => self.problem(
                "server.http_failure_status",
                format!(
                    "{other} is not allowed: expected 503 (the default) or 500 (kube's own code)"
                ),
            ),
        }
        if let Some(d) = self.duration("server.drain_delay", raw.drain_delay.as_deref()) {
            server.drain_delay = d;
        }
        if let Some(d) = self.duration("server.drain_timeout", raw.drain_timeout.as_deref()) {
            server.drain_timeout = d;
        }
        if let Some(token) = &raw.detail_token {
            let token = self.expand("server.detail_token", token, &mut Vec::new())?;
            if token.is_empty() {
                self.problem(
                    "server.detail_token",
                    "must not be empty (omit it to allow anyone)",
                );
            }
            server.detail_token = Some(token);
        }
        server.state_file = raw.state_file.as_deref().and_then(|f| self.state_file(f));
        Some(server)
    }

    /// `[server.grpc_tls]` / `[server.http_tls]` at `key`: the files are read and the pair
    /// built now, so a missing file, a bad PEM or a key that is not the certificate's is a
    /// config error, not a failed start.
    fn server_tls(&mut self, key: &str, raw: &RawServerTls) -> Option<ServerTlsSpec> {
        let file =
            |this: &mut Self, name: &str, value: Option<&str>| -> Option<std::path::PathBuf> {
                match value {
                    Some("") => {
                        this.problem(format!("{key}.{name}"), "must not be empty");
                        None
                    }
                    Some(f) => Some(match this.base_dir {
                        Some(dir) => dir.join(f),
                        None => Path::new(f).to_path_buf(),
                    }),
                    None => None,
                }
            };
        let cert_file = file(self, "cert_file", raw.cert_file.as_deref());
        let key_file = file(self, "key_file", raw.key_file.as_deref());
        let client_ca_file = file(self, "client_ca_file", raw.client_ca_file.as_deref());
        if raw.cert_file.is_none() {
            self.problem(
                format!("{key}.cert_file"),
                "is required (a PEM certificate chain)",
            );
        }
        if raw.key_file.is_none() {
            self.problem(format!("{key}.key_file"), "is required (a PEM private key)");
        }
        let client_auth = match raw.client_auth.as_deref() {
            None if client_ca_file.is_some() => ClientAuth::Required,
            None | Some("none") => ClientAuth::None,
            Some("optional") => ClientAuth::Optional,
            Some("required") => ClientAuth::Required,
            Some(other) => {
                self.problem(
                    format!("{key}.client_auth"),
                    format!("{other:?} is not one of \"none\", \"optional\", \"required\""),
                );
                return None;
            }
        };
        if client_auth != ClientAuth::None && client_ca_file.is_none() {
            self.problem(
                format!("{key}.client_auth"),
                "client certificates need client_ca_file (the CA they are verified against)",
            );
            return None;
        }
        let spec = ServerTlsSpec {
            cert_file: cert_file?,
            key_file: key_file?,
            client_ca_file,
            client_auth,
        };
        if let Err(e) = crate::tls::server::build(&spec, &[]) {
            self.problem(key, e);
            return None;
        }
        Some(spec)
    }

    /// A list of client-certificate identities at `key`: each `scheme:rest` (a URI SAN such
    /// as `spiffe://…`, or `dns:NAME` for a DNS SAN).
    pub(super) fn identities(&mut self, key: &str, raw: Option<&[String]>) -> Vec<String> {
        let mut out = Vec::new();
        for id in raw.unwrap_or_default() {
            let valid = id.split_once(':').is_some_and(|(scheme, rest)| {
                !rest.is_empty()
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            });
            if valid {
                out.push(id.clone());
            } else {
                self.problem(
                    key,
                    format!(
                        "{id:?} is not an identity: expected a URI SAN such as \"spiffe://cluster.local/ns/ops/sa/admin\" or \"dns:NAME\""
                    ),
                );
            }
        }
        out
    }

    /// `server.state_file`: resolved against the config's directory; its directory must exist
    /// (the file itself is created at the first change).
    fn state_file(&mut self, file: &str) -> Option<std::path::PathBuf> {
        let key = "server.state_file";
        if file.is_empty() {
            self.problem(key, "must not be empty (omit it to keep no state)");
            return None;
        }
        let full = match self.base_dir {
            Some(dir) => dir.join(file),
            None => Path::new(file).to_path_buf(),
        };
        if full.is_dir() {
            self.problem(
                key,
                format!("{} is a directory, not a file", full.display()),
            );
            return None;
        }
        self.parent_exists(key, &full).then_some(full)
    }

    /// Whether the directory `file` goes in exists (else a problem at `key`).
    fn parent_exists(&mut self, key: &str, file: &Path) -> bool {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            self.problem(
                key,
                format!("the directory {} does not exist", dir.display()),
            );
            return false;
        }
        true
    }

    pub(super) fn telemetry(&mut self, raw: &RawTelemetry) -> TelemetryConfig {
        let mut t = TelemetryConfig::default();
        if let Some(endpoint) = &raw.otlp_endpoint {
            match Url::parse(endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {
                    t.otlp_endpoint = Some(endpoint.clone())
                }
                // Not echoed: it may carry user info.
                _ => self.problem(
                    "telemetry.otlp_endpoint",
                    "invalid endpoint: expected http(s)://host:port",
                ),
            }
        }
        t.service_name = raw.service_name.clone();
        if let Some(ratio) = raw.sample_ratio {
            if (0.0..=1.0).contains(&ratio) {
                t.sample_ratio = Some(ratio);
            } else {
                self.problem(
                    "telemetry.sample_ratio",
                    format!("{ratio} must be between 0 and 1"),
                );
            }
        }
        if let Some(d) = self.duration("telemetry.export_timeout", raw.export_timeout.as_deref()) {
            t.export_timeout = d;
        }
        if let Some(n) = self.number("telemetry.queue_size", raw.queue_size, 1, 1_000_000) {
            t.queue_size = n;
        }
        t
    }

    pub(super) fn limits(&mut self, raw: &RawLimits) -> Limits {
        let mut limits = Limits::default();
        let key = "limits.max_connections";
        if let Some(n) = self.number(key, raw.max_connections, 1, 1_000_000) {
            limits.max_connections = n;
        }
        let key = "limits.max_concurrent_streams";
        if let Some(n) = self.number(key, raw.max_concurrent_streams, 1, 10_000) {
            limits.max_concurrent_streams = n;
        }
        let ranged = |v: &mut Self, key: &str, raw: Option<&str>, min: Duration, max: Duration| {
            let d = v.duration(key, raw)?;
            if (min..=max).contains(&d) {
                Some(d)
            } else {
                v.problem(
                    key,
                    format!(
                        "{} must be between {} and {}",
                        humantime::format_duration(d),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                None
            }
        };
        if let Some(d) = ranged(
            self,
            "limits.first_request_timeout",
            raw.first_request_timeout.as_deref(),
            Duration::from_millis(100),
            Duration::from_secs(300),
        ) {
            limits.first_request_timeout = d;
        }
        if let Some(d) = ranged(
            self,
            "limits.idle_timeout",
            raw.idle_timeout.as_deref(),
            Duration::from_secs(1),
            Duration::from_secs(24 * 60 * 60),
        ) {
            limits.idle_timeout = d;
        }
        limits
    }
}
