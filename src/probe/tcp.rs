//! The TCP probe: healthy when a connection opens: resolve, then each address in turn with a
//! share of the timeout.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};

use super::{Probe, ProbeContext, ProbeFuture};
use crate::{Verdict, net_error};

/// A TCP connect probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// `host:port`.
    pub address: String,
}

/// Connects to `host:port` and closes the connection at once.
#[derive(Debug)]
pub(crate) struct TcpProbe {
    address: String,
}

impl TcpProbe {
    pub(crate) fn new(address: String) -> TcpProbe {
        TcpProbe { address }
    }
}

impl Probe for TcpProbe {
    fn check(&self, ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async move {
            match connect(self.address.as_str(), ctx.timeout).await {
                Ok(_) => Verdict::Healthy,
                Err(reason) => Verdict::unhealthy(reason),
            }
        })
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
