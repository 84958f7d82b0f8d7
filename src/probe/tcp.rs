//! The TCP probe: healthy when a connection opens.

use tokio::net::TcpStream;

use super::{Probe, ProbeContext, ProbeFuture, reason};
use crate::Verdict;

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
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async move {
            match TcpStream::connect(&self.address).await {
                Ok(_) => Verdict::Healthy,
                Err(e) => Verdict::unhealthy(reason::describe_io(&e)),
            }
        })
    }
}
