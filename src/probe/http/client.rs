//! A lean HTTP/1.1 client for probes: one request at a time per connection, keep-alive
//! connections pooled per origin, TLS by rustls.
//!
//! Why not reqwest/hyper: a kept-alive hyper client connection holds ~37 KiB of heap while it
//! idles (a dispatch channel, a connection task, an 8 KiB read buffer; BENCHMARKS.md), and a
//! dependency on its own host keeps one such connection. Here an idle connection is only its
//! socket (and rustls state for TLS): buffers exist while a request is in flight and are freed
//! after it, so 1,000 dependencies on distinct hosts cost a few KiB each.
//!
//! What a probe needs and nothing else: no proxies (a probe must reach the dependency itself),
//! no request bodies, no content decoding, HTTP/1.1 only (TLS offers ALPN `http/1.1`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderMap, Method};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use url::{Host, Url};

use super::wire::{self, Decoder, Framing, MAX_HEAD_BYTES};
use crate::probe::{reason, tcp, tls};

/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often checking a connection in also closes every origin's expired ones.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Probe HTTP clients: connections for every origin, one TLS setting.
pub(crate) struct Client {
    /// `None` for plain-HTTP clients.
    tls: Option<TlsConnector>,
    /// `tls.server_name`: sent as SNI (and verified, by the config's verifier) instead of the
    /// URL's host.
    server_name: Option<ServerName<'static>>,
    pool: Mutex<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Idle connections by origin, most recently used last.
#[derive(Debug)]
struct Pool {
    idle: HashMap<Origin, Vec<Idle>>,
    last_sweep: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    host: Host,
    port: u16,
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A response as a probe sees it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: Vec<u8>,
    /// The body was longer than the cap; `body` holds its first `cap` bytes.
    pub(crate) truncated: bool,
}

/// Why a request failed, as a short reason that never quotes the URL or the response.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

/// How far an exchange got before it failed.
struct ExchangeError {
    reason: String,
    /// Nothing of a response had arrived: on a reused connection the server may have closed it
    /// while idle, and the request can go again on a fresh one.
    before_response: bool,
}

impl Client {
    /// A client for plain HTTP (`tls = None`) or for HTTPS with these TLS settings.
    pub(crate) fn new(tls: Option<&crate::config::TlsSpec>) -> Result<Client, String> {
        let server_name = match tls.and_then(|spec| spec.server_name.clone()) {
            Some(name) => Some(
                ServerName::try_from(name).map_err(|e| format!("invalid tls.server_name: {e}"))?,
            ),
            None => None,
        };
        let tls = match tls {
            Some(spec) => Some(TlsConnector::from(Arc::new(tls::client_config(
                spec,
                &[b"http/1.1"],
            )?))),
            None => None,
        };
        Ok(Client {
            tls,
            server_name,
            pool: Mutex::new(Pool {
                idle: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        })
    }

    /// Sends one request and reads the response, keeping at most `cap` body bytes. A body
    /// longer than that is not read further (its connection is closed, not drained). `timeout`
    /// is the probe's: a name with several addresses gives each connect attempt a share of it.
    pub(crate) async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        cap: usize,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let origin = origin(url)?;
        let request = wire::encode_request(method, url, headers);
        if let Some(conn) = self.checkout(&origin) {
            match self.exchange(conn, &origin, &request, method, cap).await {
                Err(e) if e.before_response => {} // stale: once more on a fresh connection
                done => return done.map_err(|e| Failure(e.reason)),
            }
        }
        let conn = self.connect(&origin, timeout).await?;
        self.exchange(conn, &origin, &request, method, cap)
            .await
            .map_err(|e| Failure(e.reason))
    }

    async fn exchange(
        &self,
        mut conn: Conn,
        origin: &Origin,
        request: &[u8],
        method: &Method,
        cap: usize,
    ) -> Result<Response, ExchangeError> {
        let early = |e: io::Error| ExchangeError {
            reason: reason::describe_io(&e),
            before_response: true,
        };
        conn.write_all(request).await.map_err(early)?;
        conn.flush().await.map_err(early)?;

        let mut buf = Vec::new();
        let head = loop {
            match wire::parse_head(&buf, method) {
                Ok(Some((used, head)))
                    if (100..200).contains(&head.status) && head.status != 101 =>
                {
                    buf.drain(..used); // interim response: the real one follows
                }
                Ok(Some((used, head))) => {
                    buf.drain(..used);
                    break head;
                }
                Ok(None) => {
                    let n = read_more(&mut conn, &mut buf)
                        .await
                        .map_err(|e| ExchangeError {
                            before_response: buf.is_empty(),
                            ..early(e)
                        })?;
                    if n == 0 {
                        return Err(ExchangeError {
                            reason: "connection closed before a response".to_owned(),
                            before_response: buf.is_empty(),
                        });
                    }
                }
                Err(wire::Invalid(what)) => {
                    return Err(ExchangeError {
                        reason: format!("invalid HTTP response: {what}"),
                        before_response: false,
                    });
                }
            }
        };

        let late = |reason: String| ExchangeError {
            reason: format!("reading body: {reason}"),
            before_response: false,
        };
        let mut decoder = Decoder::new(head.framing);
        let mut body = Vec::new();
        let mut truncated = false;
        while !decoder.is_done() {
            let (used, data) = decoder.decode(&buf).map_err(|e| late(e.0))?;
            let room = cap - body.len();
            if data.len() > room {
                body.extend_from_slice(&data[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(data);
            buf.drain(..used);
            if used > 0 || decoder.is_done() {
                continue;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(late("chunk metadata too long".to_owned()));
            }
            match read_more(&mut conn, &mut buf).await {
                // A close ends this body; over TLS without close_notify, as many servers do.
                Ok(0) if head.framing == Framing::UntilClose => break,
                Err(e)
                    if head.framing == Framing::UntilClose
                        && e.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    break;
                }
                Ok(0) => return Err(late("connection closed by peer".to_owned())),
                Ok(_) => {}
                Err(e) => return Err(late(reason::describe_io(&e))),
            }
        }
        // Reuse only a connection left exactly at the end of this response.
        if head.keep_alive && decoder.is_done() && !truncated && buf.is_empty() {
            self.checkin(origin.clone(), conn);
        }
        Ok(Response {
            status: head.status,
            location: head.location,
            body,
            truncated,
        })
    }

    /// A live idle connection to `origin`, if there is one. Expired connections, and ones the
    /// server closed or wrote to while idle, are dropped.
    fn checkout(&self, origin: &Origin) -> Option<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.idle.get_mut(origin)?;
        let now = Instant::now();
        let mut found = None;
        while let Some(entry) = idle.pop() {
            if now.duration_since(entry.since) < IDLE_TIMEOUT && entry.conn.is_idle() {
                found = Some(entry.conn);
                break;
            }
        }
        if idle.is_empty() {
            pool.idle.remove(origin);
        }
        found
    }

    fn checkin(&self, origin: Origin, conn: Conn) {
        let now = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.idle
            .entry(origin)
            .or_default()
            .push(Idle { conn, since: now });
        if now.duration_since(pool.last_sweep) >= SWEEP_EVERY {
            pool.last_sweep = now;
            pool.idle.retain(|_, conns| {
                conns.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT);
                !conns.is_empty()
            });
        }
    }

    /// A new connection ([`tcp::connect`]: the resolved addresses in turn), then the TLS
    /// handshake.
    async fn connect(&self, origin: &Origin, timeout: Duration) -> Result<Conn, Failure> {
        let port = origin.port;
        let tcp = match &origin.host {
            Host::Domain(name) => tcp::connect((name.as_str(), port), timeout).await,
            Host::Ipv4(ip) => tcp::connect((*ip, port), timeout).await,
            Host::Ipv6(ip) => tcp::connect((*ip, port), timeout).await,
        }
        .map_err(Failure)?;
        // Requests are written whole; do not hold them back for an ACK.
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Conn::Plain(tcp));
        }
        let Some(connector) = &self.tls else {
            return Err(Failure("https URL on a plain-HTTP client".to_owned()));
        };
        let name = match (&self.server_name, &origin.host) {
            (Some(configured), _) => configured.clone(),
            (None, Host::Domain(d)) => ServerName::try_from(d.clone())
                .map_err(|_| Failure("tls: invalid server name".to_owned()))?,
            (None, Host::Ipv4(ip)) => ServerName::from(std::net::IpAddr::from(*ip)),
            (None, Host::Ipv6(ip)) => ServerName::from(std::net::IpAddr::from(*ip)),
        };
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Failure(reason::describe_io(&e)))?;
        Ok(Conn::Tls(Box::new(tls)))
    }

    /// Idle connections held, for tests.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.idle.values().map(Vec::len).sum()
    }
}

fn origin(url: &Url) -> Result<Origin, Failure> {
    Ok(Origin {
        tls: url.scheme() == "https",
        host: url
            .host()
            .ok_or_else(|| Failure("URL has no host".to_owned()))?
            .to_owned(),
        port: url
            .port_or_known_default()
            .ok_or_else(|| Failure("URL has no port".to_owned()))?,
    })
}

/// Reads what the socket has (up to [`READ_CHUNK`]) onto the end of `buf`.
async fn read_more(conn: &mut Conn, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    conn.read_buf(buf).await
}

/// A connection, plain or TLS.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the connection is still open with nothing unread: the server has neither closed
    /// it nor sent anything since the last response. Never waits.
    fn is_idle(&self) -> bool {
        let tcp = match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        };
        let mut byte = [0u8; 1];
        tcp.peek(&mut byte).now_or_never().is_none()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A raw HTTP/1.1 server answering each request on a connection with the next of
    /// `answers` (all written at once), then closing; it counts connections.
    async fn scripted(answers: Vec<&'static str>) -> (Url, Arc<std::sync::atomic::AtomicUsize>) {
        let (url, accepted, _) = scripted_on(answers, None).await;
        (url, accepted)
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// [`scripted`], over TLS when given an acceptor (then it also records the SNI it saw).
    /// After its last answer it drops the connection without a TLS close_notify.
    async fn scripted_on(
        answers: Vec<&'static str>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (
        Url,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<Mutex<Option<String>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sni = Arc::new(Mutex::new(None));
        let (counter, seen_sni) = (accepted.clone(), sni.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                let mut socket: Box<dyn Io> = match &tls {
                    None => Box::new(tcp),
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            let name = stream.get_ref().1.server_name().map(str::to_owned);
                            *seen_sni.lock().expect("not poisoned") = name;
                            Box::new(stream)
                        }
                        Err(_) => continue,
                    },
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    for answer in answers {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let end = seen
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .expect("checked")
                            + 4;
                        seen.drain(..end);
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let url = Url::parse(&format!("{scheme}://localhost:{}/h", addr.port())).expect("url");
        (url, accepted, sni)
    }

    async fn get(client: &Client, url: &Url, cap: usize) -> Result<Response, Failure> {
        let timeout = Duration::from_secs(10);
        client
            .send(&Method::GET, url, &HeaderMap::new(), cap, timeout)
            .await
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused_and_stale_ones_retried() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        // Two answers per connection, then the server closes it.
        let (url, accepted) = scripted(vec![ok, chunked]).await;
        let client = Client::new(None).expect("client");
        for round in 0..4 {
            let r = get(&client, &url, 1024).await.expect("answered");
            assert_eq!((r.status, &r.body[..]), (200, &b"ok"[..]), "round {round}");
        }
        // Requests 1+2 on the first connection; the server closed it, the third request went
        // on a new one (no failure seen by the probe).
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

        // The server reads the second request on a connection and closes it unanswered (its
        // idle timeout fired as the request arrived): the request goes again on a new one.
        let (url, accepted) = scripted(vec![ok, ""]).await;
        for round in 0..3 {
            let r = get(&client, &url, 1024)
                .await
                .expect("answered after a retry");
            assert_eq!(r.status, 200, "round {round}");
        }
        // Rounds 2 and 3 each found their connection closed and went again on a new one.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (url, accepted) = scripted(vec![
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        for _ in 0..3 {
            get(&client, &url, 1024).await.expect("answered");
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "Connection: close is honoured"
        );
        assert_eq!(client.idle_count(), 2, "the first two servers' connections");
    }

    /// A TLS acceptor with a fresh self-signed certificate for `localhost`.
    fn acceptor() -> tokio_rustls::TlsAcceptor {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn tls_connections_are_reused_and_a_close_without_close_notify_ends_a_body() {
        let spec = crate::config::TlsSpec {
            insecure: true,
            server_name: Some("dependency.internal".to_owned()),
            ..Default::default()
        };
        let client = Client::new(Some(&spec)).expect("client");
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (url, accepted, sni) = scripted_on(vec![ok, ok, ok], Some(acceptor())).await;
        for _ in 0..3 {
            assert_eq!(get(&client, &url, 16).await.expect("answered").body, b"ok");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            sni.lock().expect("not poisoned").as_deref(),
            Some("dependency.internal"),
            "tls.server_name is the SNI"
        );

        let (url, _, _) =
            scripted_on(vec!["HTTP/1.1 200 OK\r\n\r\nuntil close"], Some(acceptor())).await;
        let r = get(&client, &url, 64).await.expect("a close ends the body");
        assert_eq!(r.body, b"until close");
    }

    #[tokio::test]
    async fn bodies_are_capped_and_truncated_connections_dropped() {
        let (url, accepted) = scripted(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        ])
        .await;
        let client = Client::new(None).expect("client");
        let r = get(&client, &url, 4).await.expect("answered");
        assert_eq!((&r.body[..], r.truncated), (&b"0123"[..], true));
        assert_eq!(
            client.idle_count(),
            0,
            "a half-read connection is not reused"
        );
        let r = get(&client, &url, 10).await.expect("answered");
        assert_eq!((&r.body[..], r.truncated), (&b"0123456789"[..], false));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_short_bodies_fail() {
        let (url, _) = scripted(vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let client = Client::new(None).expect("client");
        let r = get(&client, &url, 16).await.expect("answered");
        assert_eq!(r.status, 204);

        let (url, _) = scripted(vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let err = get(&client, &url, 16).await.expect_err("cut short");
        assert_eq!(err.0, "reading body: connection closed by peer");

        let (url, _) = scripted(vec!["HTTP/1.1 200 OK\r\n\r\nuntil close"]).await;
        let r = get(&client, &url, 64).await.expect("answered");
        assert_eq!(r.body, b"until close");
    }
}
