//! The TCP probe: healthy when a connection opens: resolve, then each address in turn with a
//! share of the timeout. With `tls`, the connection must also complete a TLS handshake
//! (verified as for HTTPS), and the peer certificate's `notAfter` is recorded.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpStream, ToSocketAddrs};

use super::{Probe, ProbeContext, ProbeFuture};
use crate::tls::TlsSpec;
use crate::{Verdict, net_error};

/// A TCP connect probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
    /// When set, a TLS handshake follows the connect (verified against these settings; the
    /// name is `tls.server_name`, else the address's host).
    pub tls: Option<Box<TlsSpec>>,
}

/// Connects to `host:port` (and completes a TLS handshake, with `tls`) and closes the
/// connection at once.
pub(crate) struct TcpProbe {
    address: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// The latest run's peer certificate `notAfter`.
    not_after: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for TcpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProbe")
            .field("address", &self.address)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish_non_exhaustive()
    }
}

impl TcpProbe {
    pub(crate) fn new(spec: &TcpSpec) -> Result<TcpProbe, String> {
        let tls = match &spec.tls {
            None => None,
            Some(tls) => {
                let config = crate::tls::client_config(tls, &[])?;
                let host = spec
                    .address
                    .rsplit_once(':')
                    .map_or(spec.address.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = tls.server_name.as_deref().unwrap_or(host);
                let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|_| "tls: invalid server name".to_owned())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(TcpProbe {
            address: spec.address.clone(),
            tls,
            not_after: Mutex::new(None),
        })
    }

    async fn run(&self, ctx: ProbeContext) -> Verdict {
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let stream = match connect(self.address.as_str(), ctx.timeout).await {
            Ok(stream) => stream,
            Err(reason) => return Verdict::unhealthy(reason),
        };
        let Some((connector, name)) = &self.tls else {
            return Verdict::Healthy;
        };
        match connector.connect(name.clone(), stream).await {
            Ok(tls) => {
                let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                if let Some(info) = leaf.and_then(|c| crate::tls::server::certificate_info(c).ok())
                {
                    *self.not_after.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(info.not_after);
                }
                Verdict::Healthy
            }
            Err(e) => Verdict::unhealthy(format!("tls: {}", net_error::describe_io(&e))),
        }
    }
}

impl Probe for TcpProbe {
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(self.run(ctx))
    }

    fn certificate_expiry(&self) -> Option<SystemTime> {
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A TCP connection to `target` (resolved here; IP literals need no lookup), or a short reason
/// why not (`dns: …`, `connection refused`, …) that never quotes the target.
async fn connect(target: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target)
        .await
        .map_err(|e| format!("dns: {}", net_error::describe_io(&e)))?
        .collect();
    if addrs.is_empty() {
        return Err("dns: no addresses".to_owned());
    }
    connect_any(&addrs, timeout)
        .await
        .map_err(|e| net_error::describe_io(&e))
}

/// Connects to the first of `addrs` that accepts. With several addresses each attempt gets an
/// equal share of `timeout`, so one black-holed address (an IPv6 route that drops packets) does
/// not use up the probe. The error is the first address's.
async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> io::Result<TcpStream> {
    let share = timeout / u32::try_from(addrs.len()).unwrap_or(u32::MAX);
    let mut first_error = None;
    for addr in addrs {
        let attempt = TcpStream::connect(addr);
        let result = if addrs.len() == 1 {
            attempt.await
        } else {
            tokio::time::timeout(share, attempt)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| io::ErrorKind::AddrNotAvailable.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_black_holed_address_does_not_use_up_the_timeout() {
        // A listener that never accepts, with its accept queue full: further SYNs are dropped,
        // so a connect to it hangs like one to a black-holed route.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("literal"))
            .expect("bind");
        let hung = socket.listen(0).expect("listen");
        let hung_addr = hung.local_addr().expect("bound");
        let mut queued = Vec::new();
        while let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(hung_addr)).await
        {
            queued.push(c);
        }
        let good = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let good_addr = good.local_addr().expect("bound");

        let addrs = [hung_addr, good_addr];
        let connect = connect_any(&addrs, Duration::from_secs(2));
        let tcp = tokio::time::timeout(Duration::from_secs(30), connect)
            .await
            .expect("the second address was tried")
            .expect("connected");
        assert_eq!(tcp.peer_addr().expect("connected"), good_addr);

        let err = connect_any(&[hung_addr, hung_addr], Duration::from_millis(400))
            .await
            .expect_err("neither answers");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(queued);
    }
}
