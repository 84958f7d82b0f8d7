//! The gRPC probe: calls the dependency's own `grpc.health.v1.Health/Check` over a channel kept
//! open (and reconnected by tonic) for the dependency's lifetime.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Probe, ProbeContext, ProbeFuture, reason, tls};
use crate::Verdict;
use crate::config::{GrpcSpec, TlsSpec};

/// tonic's connect timeout and request deadline are set this much beyond the probe's timeout, so that a run taking
/// too long is always ended — and worded, `timed out after …` — by the engine, in one place,
/// rather than by whichever of tonic's timers fires a moment earlier.
const OWN_TIMEOUT_MARGIN: Duration = Duration::from_millis(100);

/// HTTP/2 pings on the kept channel, so a dead connection is noticed between probes.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct GrpcProbe {
    client: HealthClient<Channel>,
    service: String,
    metadata: MetadataMap,
}

impl GrpcProbe {
    /// Builds the (lazily connecting) channel. Must run inside a Tokio runtime.
    pub(crate) fn new(spec: &GrpcSpec, timeout: Duration) -> Result<GrpcProbe, String> {
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
            .http2_keep_alive_interval(KEEP_ALIVE)
            .keep_alive_while_idle(true);
        if let Some(authority) = &spec.authority {
            let origin: Uri = format!("{}://{authority}", spec.target.scheme())
                .parse()
                .map_err(|e| format!("invalid authority: {e}"))?;
            endpoint = endpoint.origin(origin);
        }
        if spec.target.scheme() == "https" {
            endpoint = with_tls(endpoint, &spec.tls, spec.authority.as_deref())?;
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
            Ok(response) => match response.into_inner().status() {
                ServingStatus::Serving => Verdict::Healthy,
                ServingStatus::NotServing => Verdict::unhealthy("NOT_SERVING"),
                ServingStatus::ServiceUnknown => Verdict::unhealthy("service unknown"),
                ServingStatus::Unknown => Verdict::unhealthy("status UNKNOWN"),
            },
            Err(status) => Verdict::unhealthy(status_reason(&status)),
        }
    }
}

impl Probe for GrpcProbe {
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(self.run(ctx))
    }
}

/// The reason for a failed Check. The remote's status message is not used: it is the
/// dependency's free text, and may say anything.
fn status_reason(status: &tonic::Status) -> String {
    match status.code() {
        Code::NotFound => "service unknown".to_owned(),
        Code::Unimplemented => "no health service".to_owned(),
        Code::DeadlineExceeded => "timed out".to_owned(),
        Code::Unavailable => match reason::describe(status) {
            Some(cause) => format!("unavailable: {cause}"),
            None => "unavailable".to_owned(),
        },
        code => format!("grpc status {}", crate::grpc_code::code_name(code)),
    }
}

pub(crate) fn with_tls(
    endpoint: Endpoint,
    spec: &TlsSpec,
    authority: Option<&str>,
) -> Result<Endpoint, String> {
    let mut config = ClientTlsConfig::new();
    // The certificate is checked against tls.server_name, else the authority's host.
    let name = spec
        .server_name
        .as_deref()
        .or_else(|| authority.map(|a| a.rsplit_once(':').map_or(a, |(h, _)| h)));
    if let Some(name) = name {
        config = config.domain_name(name);
    }
    if let Some((cert, key)) = &spec.identity_pem {
        config = config.identity(Identity::from_pem(cert, key));
    }
    let endpoint = if spec.insecure {
        endpoint.tls_config_with_verifier(
            config,
            Arc::new(tls::Unverified::accept_any(&tls::provider())),
        )
    } else {
        config = match &spec.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        endpoint.tls_config(config)
    };
    endpoint.map_err(|e| reason::describe(&e).unwrap_or_else(|| e.to_string()))
}
