//! Binding a [`ListenAddr`]: a TCP listener, or a Unix socket whose file is ours for as long as
//! the listener lives.
//!
//! Unix sockets: a socket file left by a crashed run (nothing accepts on it: connecting is
//! refused) is replaced; a live one (another process accepts on it) is an error, as is a path
//! that exists and is not a socket — healthgate never deletes anything else. The file gets
//! `mode` (default `DEFAULT_SOCKET_MODE`, 0660: the owner and its group, so a sidecar in the
//! same group can connect) and is removed when the listener is dropped (at exit).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::either::Either;

#[cfg(test)]
use crate::config::DEFAULT_SOCKET_MODE;
use crate::config::ListenAddr;

/// An accepted connection before TLS: TCP or Unix.
pub type Io = Either<TcpStream, UnixStream>;

/// A bound listener.
#[derive(Debug)]
pub struct Bound {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Tcp(TcpListener),
    // The file is declared after the listener: the socket closes before its file goes.
    Unix(UnixListener, SocketFile),
}

impl From<TcpListener> for Bound {
    fn from(listener: TcpListener) -> Bound {
        Bound {
            inner: Inner::Tcp(listener),
        }
    }
}

/// Binds `addr`; a Unix socket gets file `mode`. The error says what went wrong with which
/// address.
pub async fn bind(addr: &ListenAddr, mode: u32) -> io::Result<Bound> {
    match addr {
        ListenAddr::Tcp(a) => TcpListener::bind(a).await.map(Bound::from),
        ListenAddr::Unix(path) => {
            clear_stale(path)?;
            let listener = UnixListener::bind(path)?;
            let file = SocketFile(path.clone());
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(Bound {
                inner: Inner::Unix(listener, file),
            })
        }
    }
}

/// Removes a socket file nothing accepts on; refuses a live socket or any other file.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket (not removed)",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process accepts connections on this socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

impl Bound {
    /// Where it listens (the port chosen, for port 0).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Inner::Unix(_, file) => Ok(ListenAddr::Unix(file.0.clone())),
        }
    }

    /// The next connection and, for TCP, its peer and local addresses.
    pub(crate) async fn accept(&self) -> io::Result<(Io, Option<(SocketAddr, SocketAddr)>)> {
        match &self.inner {
            Inner::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let local = stream.local_addr()?;
                Ok((Either::Left(stream), Some((peer, local))))
            }
            Inner::Unix(l, _) => {
                let (stream, _) = l.accept().await?;
                Ok((Either::Right(stream), None))
            }
        }
    }
}

/// A Unix socket's file, removed when dropped.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!(path = %self.0.display(), error = %e, "removing the socket file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hg-bind-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn a_unix_socket_replaces_a_stale_file_keeps_a_live_one_and_is_removed_when_dropped() {
        let dir = temp_dir("unix");
        let path = dir.join("hg.sock");
        let addr = ListenAddr::Unix(path.clone());
        // A stale socket: bound by a listener that is gone (its file stays, as after SIGKILL).
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists(), "a stale file");
        let bound = bind(&addr, 0o600).await.expect("replaces the stale file");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Live: a second bind must not steal it.
        let err = bind(&addr, DEFAULT_SOCKET_MODE).await.expect_err("in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let client = UnixStream::connect(&path).await.expect("connects");
        let (accepted, peer) = bound.accept().await.expect("accepts");
        assert!(peer.is_none() && matches!(accepted, Either::Right(_)));
        drop(client);
        drop(bound);
        assert!(!path.exists(), "removed with the listener");
        // Anything else at the path is never removed.
        std::fs::write(&path, "data").expect("a file");
        let err = bind(&addr, DEFAULT_SOCKET_MODE)
            .await
            .expect_err("not a socket");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("kept"), b"data");
        let _ = std::fs::remove_dir_all(dir);
    }
}
