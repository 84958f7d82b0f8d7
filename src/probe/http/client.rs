//! The HTTP probe's client: reqwest (hyper underneath), one per distinct [`ClientKey`], with
//! its keep-alive pool shared by every probe of that key.
//!
//! Set up for probing and nothing else: no proxies (a probe must reach the dependency itself),
//! no redirects (the probe follows same-origin ones itself), no content decoding (no reqwest
//! feature for it is compiled in), rustls with our own configuration (ALPN by
//! `http_version`), our own resolver (so DNS failures read `dns: …` and `tls.server_name`
//! can be honoured, below).
//!
//! `tls.server_name`: rustls and reqwest take the SNI and the verified name from the request
//! URL's host, and reqwest has no way to connect somewhere else. So the request goes to
//! `https://SERVER_NAME:PORT/…` and this client's resolver answers for `SERVER_NAME` with the
//! URL host's addresses — `curl --resolve` in effect: SNI, verified name and `Host` are the
//! configured name, the connection goes where the URL says (see crate::tls).

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use http::header::{self, HeaderMap, HeaderValue};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use super::{HttpSpec, HttpVersion};
use crate::probe::OWN_TIMEOUT_MARGIN;
use crate::tls::TlsSpec;
use crate::{net_error, tls};

/// An idle kept-alive connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// HTTP/2 receive windows: what a dependency may send before the probe reads it. Probe bodies
/// are small and capped (`max_body_bytes`); hyper's defaults (several MiB) would let each
/// connection buffer that much.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 256 * 1024;

const USER_AGENT: &str = concat!("healthgate/", env!("CARGO_PKG_VERSION"));

/// Everything a client is built from: probes with equal keys share one client and its
/// connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    /// `None` for `http://` URLs.
    tls: Option<TlsSpec>,
    version: HttpVersion,
    keep_alive: bool,
    /// The probe's timeout plus a margin: hyper divides it among a name's addresses, so one
    /// black-holed address does not use up the probe; the engine ends (and words) a run that
    /// takes the whole timeout.
    connect_timeout: Duration,
    /// `(tls.server_name, the URL's host)`, see the module docs.
    renamed: Option<(String, String)>,
}

impl ClientKey {
    /// The key for a probe of `spec` with this timeout.
    pub(crate) fn new(spec: &HttpSpec, timeout: Duration) -> ClientKey {
        let https = spec.url.scheme() == "https";
        let renamed = match (&spec.tls.server_name, spec.url.host()) {
            (Some(name), Some(host)) if https => Some((name.clone(), host_text(&host))),
            _ => None,
        };
        ClientKey {
            tls: https.then(|| spec.tls.clone()),
            version: spec.version,
            keep_alive: spec.keep_alive,
            connect_timeout: timeout.saturating_add(OWN_TIMEOUT_MARGIN),
            renamed,
        }
    }
}

/// A reqwest client set up for probes.
#[derive(Debug)]
pub(crate) struct Client {
    inner: reqwest::Client,
    /// The name requests are sent to instead of the URL's host.
    server_name: Option<String>,
}

/// A response as a probe sees it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: Vec<u8>,
    /// The body was longer than the cap; `body` holds its first `cap` bytes.
    pub(crate) truncated: bool,
    /// HTTPS: the peer certificate's `notAfter` (from the connection the response came on).
    pub(crate) not_after: Option<std::time::SystemTime>,
}

/// Why a request failed, as a short reason that never quotes the URL or the response.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl Client {
    pub(crate) fn new(key: &ClientKey) -> Result<Client, String> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .tcp_nodelay(true)
            .connect_timeout(key.connect_timeout)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .http2_initial_stream_window_size(STREAM_WINDOW)
            .http2_initial_connection_window_size(CONNECTION_WINDOW)
            .dns_resolver(Resolver {
                renamed: key.renamed.clone(),
            });
        if !key.keep_alive {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder = match key.version {
            HttpVersion::Auto => builder,
            HttpVersion::Http1 => builder.http1_only(),
            HttpVersion::Http2 => builder.http2_prior_knowledge(),
        };
        let alpn: &[&[u8]] = match key.version {
            HttpVersion::Auto => &[b"h2", b"http/1.1"],
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
        };
        // Always a configuration of ours, also for plain HTTP (where it is never used): reqwest
        // would otherwise build its own from the process-wide rustls provider, which a library
        // must not require.
        let config = match &key.tls {
            Some(spec) => tls::client_config(spec, alpn)?,
            None => tls::unused_client_config()?,
        };
        let inner = builder
            .tls_info(key.tls.is_some())
            .tls_backend_preconfigured(config)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", describe(&e)))?;
        Ok(Client {
            inner,
            server_name: key.renamed.as_ref().map(|(name, _)| name.clone()),
        })
    }

    /// Sends one request and reads the response, keeping at most `cap` body bytes. A body
    /// longer than that is not read further (its HTTP/1 connection is closed, its HTTP/2 stream
    /// reset). User info in `url` is sent as Basic credentials unless `headers` has
    /// `Authorization`.
    pub(crate) async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        cap: usize,
    ) -> Result<Response, Failure> {
        let mut target = url.clone();
        let _ = target.set_username("");
        let _ = target.set_password(None);
        target.set_fragment(None);
        if let Some(name) = &self.server_name {
            target
                .set_host(Some(name))
                .map_err(|_| Failure("tls: invalid server name".to_owned()))?;
        }
        let mut headers = headers.clone();
        if !headers.contains_key(header::AUTHORIZATION)
            && let Some(basic) = basic_auth(url)
        {
            headers.insert(header::AUTHORIZATION, basic);
        }
        let mut response = self
            .inner
            .request(method.clone(), target)
            .headers(headers)
            .send()
            .await
            .map_err(|e| Failure(describe(&e)))?;
        let status = response.status().as_u16();
        let not_after = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .and_then(|der| {
                let der = rustls::pki_types::CertificateDer::from(der);
                crate::tls::server::certificate_info(&der).ok()
            })
            .map(|info| info.not_after);
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure(format!("reading body: {}", describe(&e))))?
        {
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            location,
            body,
            truncated,
            not_after,
        })
    }
}

/// A URL host as a resolver looks it up (IPv6 without brackets).
fn host_text(host: &Host<&str>) -> String {
    match host {
        Host::Domain(d) => (*d).to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

/// `Basic …` from the URL's user info (percent-decoded), if it has any; marked sensitive.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut plain = decode(url.username());
    plain.push(b':');
    plain.extend(decode(url.password().unwrap_or_default()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A short reason for a failed request. reqwest's own message quotes the URL, so only its
/// causes are used: our resolver's, hyper's parse errors, then the I/O or TLS cause.
fn describe(err: &reqwest::Error) -> String {
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(dns) = e.downcast_ref::<DnsError>() {
            return dns.0.clone();
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return format!("invalid HTTP response: {h}");
            }
            if h.is_incomplete_message() {
                return "connection closed before a response".to_owned();
            }
        }
        cause = e.source();
    }
    if err.is_connect() && err.is_timeout() {
        return "connect timed out".to_owned();
    }
    net_error::describe(err).unwrap_or_else(|| {
        if err.is_connect() {
            "connect failed".to_owned()
        } else {
            "request failed".to_owned()
        }
    })
}

/// A failed lookup, worded `dns: …`.
#[derive(Debug)]
struct DnsError(String);

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DnsError {}

/// Tokio's resolver (the system's, on the blocking pool, as hyper's default), with the
/// `tls.server_name` rename of the module docs.
#[derive(Debug)]
struct Resolver {
    renamed: Option<(String, String)>,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = match &self.renamed {
            Some((server_name, host)) if name.as_str() == server_name => host.clone(),
            _ => name.as_str().to_owned(),
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| DnsError(format!("dns: {}", net_error::describe_io(&e))))?
                .collect();
            if addrs.is_empty() {
                return Err(DnsError("dns: no addresses".to_owned()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
