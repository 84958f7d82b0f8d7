//! Where a listener listens: a TCP address or a Unix socket (`unix:/path`), as the config
//! says it (bound by `crate::listener::bind`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A listen address: `IP:PORT`, or `unix:PATH` for a Unix domain socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

/// The file mode of a Unix socket unless `[server] unix_socket_mode` says otherwise: the owner
/// and its group (so a sidecar in the same group can connect).
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// The prefix of a Unix socket address.
pub const UNIX_PREFIX: &str = "unix:";

impl ListenAddr {
    /// `IP:PORT` or `unix:PATH` (a non-empty path); the error says what was expected.
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            // grpcio's `unix:///abs` form names the same file as `unix:/abs`.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(
                    "a unix: address needs a path, e.g. \"unix:/run/healthgate/grpc.sock\"".into(),
                );
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse::<SocketAddr>()
            .map(ListenAddr::Tcp)
            .map_err(|_| "expected IP:PORT or unix:PATH".to_owned())
    }

    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Tcp(addr)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => a.fmt(f),
            ListenAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_forms() {
        assert_eq!(
            ListenAddr::parse("127.0.0.1:50051"),
            Ok(ListenAddr::Tcp(
                "127.0.0.1:50051".parse().expect("an address")
            ))
        );
        assert_eq!(
            ListenAddr::parse("[::1]:0").map(|a| a.to_string()),
            Ok("[::1]:0".to_owned())
        );
        for text in ["unix:/run/hg.sock", "unix:///run/hg.sock"] {
            assert_eq!(
                ListenAddr::parse(text),
                Ok(ListenAddr::Unix("/run/hg.sock".into())),
                "{text}"
            );
        }
        assert_eq!(
            ListenAddr::parse("unix:rel/hg.sock").map(|a| a.to_string()),
            Ok("unix:rel/hg.sock".to_owned())
        );
        for bad in ["unix:", "unix://", "localhost:80", "nowhere", ""] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
