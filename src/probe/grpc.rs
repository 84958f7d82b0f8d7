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
        if spec.target.scheme() == "https" {
            // Verified and sent as SNI: `server_name`, else the configured authority's host.
            let name = server_name.or_else(|| {
                let a = spec.authority.as_deref()?;
                Some(a.rsplit_once(':').map_or(a, |(host, _)| host))
            });
            endpoint = tls::tonic_endpoint(endpoint, &spec.tls, name)?;
        }
        Ok(GrpcProbe {
            client: HealthClient::new(endpoint.connect_lazy()),
            service: spec.service.clone(),
            metadata: spec.metadata.clone(),
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
        match self.client.clone().check(request).await {
            Ok(response) => verdict_of(response.into_inner().status()),
            Err(status) => Verdict::unhealthy(status_reason(&status)),
        }
    }

    /// Opens `Watch(service)` on the kept channel.
    async fn watch(&self) -> Subscription {
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
}

/// The reason for a failed Check. The remote's status message is not used: it is the
/// dependency's free text, and may say anything.
fn status_reason(status: &tonic::Status) -> String {
    match status.code() {
        Code::NotFound => "service unknown".to_owned(),
        Code::Unimplemented => "no health service".to_owned(),
        Code::DeadlineExceeded => "timed out".to_owned(),
        Code::Unavailable => match net_error::describe(status) {
            Some(cause) => format!("unavailable: {cause}"),
            None => "unavailable".to_owned(),
        },
        code => format!("grpc status {}", crate::grpc_code::code_name(code)),
    }
}
