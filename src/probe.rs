//! The [`Probe`] trait and the built-in probes: `http`, `grpc` and `tcp`.
//!
//! A probe answers one question once: is the dependency fine right now? It returns a
//! [`Verdict`]; the engine owns everything around it (timeout, latency, `degraded_after`, panics,
//! scheduling, hysteresis). Failures are verdicts with short reasons built from classified
//! errors (`reason`), never from URLs, header values or bodies.

pub(crate) mod grpc;
mod http;
mod reason;
mod tcp;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Verdict;
use crate::config::{DependencySpec, ProbeSpec, TlsSpec};

/// A short reason for a network error (its TLS or I/O cause), never quoting URLs.
pub(crate) use reason::describe as describe_error;

/// The future a probe returns.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// What the engine tells a probe about the run it asks for.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ProbeContext {
    /// The engine abandons the run after this long; probes that can pass a deadline on (gRPC's
    /// `grpc-timeout`) should.
    pub timeout: Duration,
}

impl ProbeContext {
    /// A context with the given timeout.
    pub fn new(timeout: Duration) -> ProbeContext {
        ProbeContext { timeout }
    }
}

/// One way of checking a dependency. Implement it for in-process checks (a pool, a queue, a
/// cache) and register them with [`DependencySpec::custom`].
///
/// The engine runs at most one check per dependency at a time, cancels it (drops the future) at
/// the timeout, and turns a panic into an Unhealthy outcome.
///
/// ```
/// use healthgate::probe::{Probe, ProbeContext, ProbeFuture};
/// use healthgate::Verdict;
///
/// #[derive(Debug)]
/// struct QueueDepth(std::sync::Arc<std::sync::atomic::AtomicUsize>);
///
/// impl Probe for QueueDepth {
///     fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
///         Box::pin(async move {
///             match self.0.load(std::sync::atomic::Ordering::Relaxed) {
///                 0..=999 => Verdict::Healthy,
///                 1000..=9999 => Verdict::degraded("queue over 1000"),
///                 _ => Verdict::unhealthy("queue over 10000"),
///             }
///         })
///     }
/// }
/// ```
pub trait Probe: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one check.
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_>;
}

/// A probe could not be built from its spec (e.g. the TLS configuration was refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot build {kind} probe: {reason}")]
pub struct BuildError {
    kind: &'static str,
    reason: String,
}

/// Builds probes, sharing one HTTP client (and connection pool) per distinct TLS setting.
#[derive(Debug, Default)]
pub(crate) struct ProbeFactory {
    http_clients: HashMap<http::ClientKey, Arc<http::Client>>,
}

impl ProbeFactory {
    pub(crate) fn build(&mut self, spec: &DependencySpec) -> Result<Arc<dyn Probe>, BuildError> {
        let kind = spec.kind();
        let fail = |reason: String| BuildError { kind, reason };
        Ok(match &spec.probe {
            ProbeSpec::Http(s) => {
                let key = http::client_key(s);
                let client = match self.http_clients.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(http::Client::new(key.as_ref()).map_err(fail)?);
                        self.http_clients.insert(key, c.clone());
                        c
                    }
                };
                warn_insecure(&s.tls);
                Arc::new(http::HttpProbe::new((**s).clone(), client))
            }
            ProbeSpec::Grpc(s) => {
                warn_insecure(&s.tls);
                Arc::new(grpc::GrpcProbe::new(s, spec.timeout).map_err(fail)?)
            }
            ProbeSpec::Tcp(s) => Arc::new(tcp::TcpProbe::new(s.address.clone())),
            ProbeSpec::Custom { probe, .. } => probe.clone(),
        })
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
    async fn http_probes_share_a_client_per_tls_setting() {
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
"#,
            &|_| None,
        )
        .expect("valid");
        let mut factory = ProbeFactory::default();
        for spec in config.dependencies.values() {
            factory.build(spec).expect("builds");
        }
        // a, b and c share a plain client (redirects are per probe); d+e share an insecure
        // TLS client.
        assert_eq!(factory.http_clients.len(), 2);
    }
}
