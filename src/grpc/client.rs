//! Connecting to a health server as a client (the `check` command, Rust clients): plain or TLS
//! channels, with the same TLS options as gRPC probes.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::net_error;
use crate::tls::{self, TlsSpec};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port`, or `:port` for localhost.
    pub addr: String,
    /// TLS settings; `None` for plaintext.
    pub tls: Option<TlsSpec>,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The `user-agent` to send.
    pub user_agent: Option<String>,
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address or TLS settings are unusable.
    #[error("{0}")]
    Invalid(String),
    /// No connection within the timeout.
    #[error("failed to connect within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The connection failed.
    #[error("failed to connect: {0}")]
    Failed(String),
}

/// Connects eagerly, so connection failures are told apart from RPC failures.
pub async fn connect(options: &ClientOptions) -> Result<Channel, ConnectError> {
    let addr = match options.addr.strip_prefix(':') {
        Some(port) => format!("localhost:{port}"),
        None => options.addr.clone(),
    };
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|_| {
            ConnectError::Invalid(format!(
                "invalid address {:?}: expected HOST:PORT",
                options.addr
            ))
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if let Some(agent) = &options.user_agent {
        endpoint = endpoint
            .user_agent(agent.clone())
            .map_err(|e| ConnectError::Invalid(format!("invalid user agent: {e}")))?;
    }
    if let Some(tls) = &options.tls {
        let name = tls.server_name.as_deref();
        endpoint = tls::tonic_endpoint(endpoint, tls, name).map_err(ConnectError::Invalid)?;
    }
    match tokio::time::timeout(options.connect_timeout, endpoint.connect()).await {
        Err(_) => Err(ConnectError::Timeout(options.connect_timeout)),
        Ok(Err(e)) => {
            let reason = net_error::describe(&e).unwrap_or_else(|| e.to_string());
            Err(ConnectError::Failed(reason))
        }
        Ok(Ok(channel)) => Ok(channel),
    }
}
