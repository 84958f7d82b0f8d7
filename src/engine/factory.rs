//! Building probes from dependency specs: the one place that knows every probe kind (adding a
//! kind is its room under `probe/` plus one arm here). HTTP probes with equal client keys share
//! one client and its connection pool.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{DependencySpec, ProbeSpec};
use crate::probe::grpc::GrpcProbe;
use crate::probe::http::{Client, ClientKey, HttpProbe};
use crate::probe::tcp::TcpProbe;
use crate::probe::{BuildError, Probe};
use crate::tls::TlsSpec;

/// Builds probes, sharing one HTTP client per distinct [`ClientKey`].
#[derive(Debug, Default)]
pub(crate) struct ProbeFactory {
    http_clients: HashMap<ClientKey, Arc<Client>>,
}

impl ProbeFactory {
    /// The probe for `spec`. Must run inside a Tokio runtime (gRPC channels connect lazily on
    /// it).
    pub(crate) fn build(&mut self, spec: &DependencySpec) -> Result<Arc<dyn Probe>, BuildError> {
        let kind = spec.kind();
        let fail = |reason: String| BuildError { kind, reason };
        Ok(match &spec.probe {
            ProbeSpec::Http(s) => {
                let key = ClientKey::new(s, spec.timeout);
                let client = match self.http_clients.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(Client::new(&key).map_err(fail)?);
                        self.http_clients.insert(key, c.clone());
                        c
                    }
                };
                warn_insecure(&s.tls);
                Arc::new(HttpProbe::new((**s).clone(), client))
            }
            ProbeSpec::Grpc(s) => {
                warn_insecure(&s.tls);
                let keep_alive = match spec.mode {
                    crate::config::Mode::Watch { interval } => interval,
                    _ => crate::probe::grpc::KEEP_ALIVE,
                };
                Arc::new(GrpcProbe::new(s, spec.timeout, keep_alive).map_err(fail)?)
            }
            ProbeSpec::Tcp(s) => {
                if let Some(tls) = &s.tls {
                    warn_insecure(tls);
                }
                Arc::new(TcpProbe::new(s).map_err(fail)?)
            }
            ProbeSpec::Custom { probe, .. } => probe.clone(),
            // Never run (push dependencies have no task); a probe that says so if it were.
            ProbeSpec::Push(_) => Arc::new(NoProbe),
        })
    }
}

/// The probe of a push dependency: it has no task, so this never runs.
#[derive(Debug)]
struct NoProbe;

impl crate::probe::Probe for NoProbe {
    fn check(&self, _ctx: crate::probe::ProbeContext) -> crate::probe::ProbeFuture<'_> {
        Box::pin(async { crate::Verdict::unhealthy("a push dependency is not probed") })
    }
}

fn warn_insecure(tls: &TlsSpec) {
    if tls.insecure {
        tracing::warn!(
            "TLS certificate verification is disabled for a dependency (tls.insecure = true)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[tokio::test]
    async fn http_probes_share_a_client_per_key() {
        let config = Config::from_toml_with_env(
            r#"
[dependencies.a]
kind = "http"
url = "http://127.0.0.1:1/a"
[dependencies.b]
kind = "http"
url = "http://127.0.0.1:2/b"
[dependencies.c]
kind = "http"
url = "http://127.0.0.1:3/c"
follow_redirects = true
[dependencies.d]
kind = "http"
url = "https://127.0.0.1:4/d"
tls = { insecure = true }
[dependencies.e]
kind = "http"
url = "https://127.0.0.1:5/e"
tls = { insecure = true }
[dependencies.f]
kind = "http"
url = "http://127.0.0.1:6/f"
keep_alive = false
[dependencies.g]
kind = "http"
url = "http://127.0.0.1:7/g"
http_version = "2"
[dependencies.h]
kind = "http"
url = "http://127.0.0.1:8/h"
timeout = "1s"
[dependencies.i]
kind = "http"
url = "https://127.0.0.1:9/i"
tls = { insecure = true, server_name = "i.internal" }
"#,
            &|_| None,
        )
        .expect("valid");
        let mut factory = ProbeFactory::default();
        for spec in config.dependencies.values() {
            factory.build(spec).expect("builds");
        }
        // a, b and c share a plain client (redirects are per probe); d+e share an insecure TLS
        // client; f (no keep-alive), g (h2c), h (another connect timeout) and i (renamed) each
        // have their own.
        assert_eq!(factory.http_clients.len(), 6);
    }
}
