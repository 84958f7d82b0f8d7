//! The gRPC probe: calls the dependency's own `grpc.health.v1.Health/Check` over a channel kept
//! open (and reconnected by tonic) for the dependency's lifetime.

use std::fmt;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use url::Url;

use super::{OWN_TIMEOUT_MARGIN, Probe, ProbeContext, ProbeFuture, SubscribeFuture, Subscription};
use crate::redact::redact_url;
use crate::tls::{self, TlsSpec};
use crate::{Verdict, net_error};

/// HTTP/2 pings on the kept channel, so a dead connection is noticed between probes (watch
/// mode pings every `interval` instead, see [`GrpcProbe::new`]).
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A gRPC health probe.
#[derive(Clone)]
pub struct GrpcSpec {
    /// The server, `http://host:port` or `https://host:port`.
    pub target: Url,
    /// The service name sent in `HealthCheckRequest` (`""` for the whole server).
    pub service: String,
    /// Overrides `:authority` (and the TLS server name unless `tls.server_name` is set).
    pub authority: Option<String>,
    /// Request metadata; secret values are redacted wherever shown.
    pub metadata: MetadataMap,
    /// Keys of `metadata` whose values are secret.
    pub secret_metadata: Vec<String>,
    /// TLS settings for `https://` targets.
    pub tls: TlsSpec,
}

impl fmt::Debug for GrpcSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .metadata
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str(),
            })
            .collect();
        f.debug_struct("GrpcSpec")
            .field("target", &redact_url(&self.target))
            .field("service", &self.service)
            .field("authority", &self.authority)
            .field("metadata_keys", &keys)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Equal settings: the metadata compared as headers (`MetadataMap` has no `PartialEq`).
impl PartialEq for GrpcSpec {
    fn eq(&self, other: &GrpcSpec) -> bool {
        self.target == other.target
            && self.service == other.service
            && self.authority == other.authority
            && self.secret_metadata == other.secret_metadata
            && self.tls == other.tls
            && self.metadata.clone().into_headers() == other.metadata.clone().into_headers()
    }
}

#[derive(Debug)]
pub(crate) struct GrpcProbe {
    client: HealthClient<Channel>,
    service: String,
    metadata: MetadataMap,
    /// `https://` targets: reads the server's certificate (see [`CertificateCheck`]).
    certificate: Option<CertificateCheck>,
}

/// How often a gRPC-over-TLS dependency's certificate is read again.
pub(crate) const CERTIFICATE_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// tonic's channel does not show its peer's certificate, so a gRPC-over-TLS dependency's is
/// read by a TLS handshake of its own (same trust settings and name, ALPN h2), beside the
/// first probe run and then once per [`CERTIFICATE_CHECK_EVERY`]: one extra handshake an hour
/// per dependency. The `notAfter` it saw stands until the next one.
struct CertificateCheck {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
    host: String,
    port: u16,
    last: std::sync::Mutex<(Option<tokio::time::Instant>, Option<std::time::SystemTime>)>,
}

impl fmt::Debug for CertificateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CertificateCheck {
    fn due(&self) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.0
            .is_none_or(|at| at.elapsed() >= CERTIFICATE_CHECK_EVERY)
    }

    /// One handshake; records the leaf's `notAfter` (a failure is the Check's to report).
    async fn read(&self) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(tokio::time::Instant::now());
        let Ok(tcp) = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await else {
            return;
        };
        let Ok(tls) = self.connector.connect(self.name.clone(), tcp).await else {
            return;
        };
        let not_after = (tls.get_ref().1.peer_certificates())
            .and_then(|c| c.first())
            .and_then(|c| crate::tls::server::certificate_info(c).ok())
            .map(|i| i.not_after);
        if not_after.is_some() {
            self.last.lock().unwrap_or_else(|e| e.into_inner()).1 = not_after;
        }
    }
}

impl GrpcProbe {
    /// Builds the (lazily connecting) channel, pinging every `keep_alive` (a ping unanswered
    /// within `timeout` breaks the connection, and a Watch stream on it). Must run inside a
    /// Tokio runtime.
    pub(crate) fn new(
        spec: &GrpcSpec,
        timeout: Duration,
        keep_alive: Duration,
    ) -> Result<GrpcProbe, String> {
        let host = spec.target.host_str().unwrap_or_default();
        let port = spec.target.port_or_known_default().unwrap_or(80);
        // Only scheme, host and port: user info or a query never reach tonic.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let uri = format!("{}://{host}:{port}", spec.target.scheme());
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("invalid target: {e}"))?
            .connect_timeout(timeout + OWN_TIMEOUT_MARGIN)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(keep_alive)
            .keep_alive_timeout(timeout + OWN_TIMEOUT_MARGIN)
            .keep_alive_while_idle(true);
        // The `:authority`: as configured, else `tls.server_name` (the name the dependency is
        // addressed by, see crate::tls), else the target's host.
        let server_name = spec.tls.server_name.as_deref();
        let authority = match (&spec.authority, server_name) {
            (Some(authority), _) => Some(authority.clone()),
            (None, Some(name)) if spec.target.scheme() == "https" => Some(format!("{name}:{port}")),
            _ => None,
        };
        if let Some(authority) = &authority {
            let origin: Uri = format!("{}://{authority}", spec.target.scheme())
                .parse()
                .map_err(|e| format!("invalid authority: {e}"))?;
            endpoint = endpoint.origin(origin);
        }
        let mut certificate = None;
        if spec.target.scheme() == "https" {
            // Verified and sent as SNI: `server_name`, else the configured authority's host.
            let name = server_name.or_else(|| {
                let a = spec.authority.as_deref()?;
                Some(a.rsplit_once(':').map_or(a, |(host, _)| host))
            });
            endpoint = tls::tonic_endpoint(endpoint, &spec.tls, name)?;
            let config = tls::client_config(&spec.tls, &[b"h2"])?;
            let target_host = spec.target.host_str().unwrap_or_default();
            let name = name.unwrap_or(target_host.trim_start_matches('[').trim_end_matches(']'));
            let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                .map_err(|_| "tls: invalid server name".to_owned())?;
            certificate = Some(CertificateCheck {
                connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
                name,
                host: target_host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port,
                last: std::sync::Mutex::new((None, None)),
            });
        }
        Ok(GrpcProbe {
            client: HealthClient::new(endpoint.connect_lazy()),
            service: spec.service.clone(),
            metadata: spec.metadata.clone(),
            certificate,
        })
    }

    async fn run(&self, ctx: ProbeContext) -> Verdict {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        *request.metadata_mut() = self.metadata.clone();
        if let Some((parent, state)) = crate::trace_context::current() {
            for (name, value) in [("traceparent", Some(parent)), ("tracestate", state)] {
                if let Some(value) = value.and_then(|v| v.parse().ok()) {
                    request.metadata_mut().insert(name, value);
                }
            }
        }
        // tonic enforces this deadline on the client side too: a margin past ours, so the engine
        // ends (and words) a run that is too slow. The dependency sees it as its deadline.
        request.set_timeout(ctx.timeout + OWN_TIMEOUT_MARGIN);
        let certificate = async {
            if let Some(c) = self.certificate.as_ref().filter(|c| c.due()) {
                c.read().await;
            }
        };
        let mut client = self.client.clone();
        let (checked, ()) = tokio::join!(client.check(request), certificate);
        match checked {
            Ok(response) => verdict_of(response.into_inner().status()),
            Err(status) => Verdict::unhealthy(status_reason(&status)),
        }
    }

    /// Opens `Watch(service)` on the kept channel (and reads the certificate when due).
    async fn watch(&self) -> Subscription {
        if let Some(c) = self.certificate.as_ref().filter(|c| c.due()) {
            c.read().await;
        }
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        *request.metadata_mut() = self.metadata.clone();
        match self.client.clone().watch(request).await {
            Ok(response) => {
                // After an error nothing follows: the engine reconnects.
                let stream = futures_util::stream::unfold(Some(response.into_inner()), |s| async {
                    let mut s = s?;
                    match s.message().await {
                        Ok(Some(m)) => Some((Ok(verdict_of(m.status())), Some(s))),
                        Ok(None) => None,
                        Err(status) => {
                            Some((Err(format!("watch: {}", status_reason(&status))), None))
                        }
                    }
                });
                Subscription::Open(Box::pin(stream))
            }
            Err(status) if status.code() == Code::Unimplemented => Subscription::Unsupported,
            Err(status) => Subscription::Failed(Verdict::unhealthy(status_reason(&status))),
        }
    }
}

/// A `HealthCheckResponse` status as a verdict (Check and Watch alike).
fn verdict_of(status: ServingStatus) -> Verdict {
    match status {
        ServingStatus::Serving => Verdict::Healthy,
        ServingStatus::NotServing => Verdict::unhealthy("NOT_SERVING"),
        ServingStatus::ServiceUnknown => Verdict::unhealthy("service unknown"),
        ServingStatus::Unknown => Verdict::unhealthy("status UNKNOWN"),
    }
}

impl Probe for GrpcProbe {
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(self.run(ctx))
    }

    fn subscribe(&self, _ctx: ProbeContext) -> SubscribeFuture<'_> {
        Box::pin(self.watch())
    }

    fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        let c = self.certificate.as_ref()?;
        c.last.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// The reason for a failed Check. The remote's status message is not used: it is the
/// dependency's free text, and may say anything. A status our own side made from a transport
/// failure (a peer that is not HTTP/2, a connection reset mid-call) carries that failure as
/// its source, and the reason names it (`grpc status UNKNOWN: …`): the code alone is tonic's
/// mapping and tells an operator nothing. A status the dependency sent has no source.
fn status_reason(status: &tonic::Status) -> String {
    match status.code() {
        Code::NotFound => "service unknown".to_owned(),
        Code::Unimplemented => "no health service".to_owned(),
        Code::DeadlineExceeded => "timed out".to_owned(),
        Code::Unavailable => match net_error::describe(status) {
            Some(cause) => format!("unavailable: {cause}"),
            None => "unavailable".to_owned(),
        },
        code => {
            let code = crate::grpc_code::code_name(code);
            match net_error::describe(status) {
                Some(cause) => format!("grpc status {code}: {cause}"),
                None => format!("grpc status {code}"),
            }
        }
    }
}
