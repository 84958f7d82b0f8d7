//! HTTP/1.1 on the wire, without I/O: encoding a probe request, parsing a response head, and
//! decoding a body framed by length, chunks or connection close (RFC 9112).

use std::fmt::Write as _;

use http::Method;
use http::header::{self, HeaderMap};
use url::Url;

/// The largest response head (status line and headers) or chunked-body metadata we buffer.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The most response headers parsed.
const MAX_HEADERS: usize = 100;

/// A response that is not HTTP/1.x as we can read it. The text never quotes the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid(pub(super) String);

impl Invalid {
    fn new(what: impl Into<String>) -> Invalid {
        Invalid(what.into())
    }
}

/// The request bytes for one probe: `method` on `url`'s path and query, `headers` as given, and
/// `Host`, `User-Agent`, `Accept` and Basic credentials from the URL's user info unless
/// `headers` sets them. The fragment is never sent.
pub(super) fn encode_request(method: &Method, url: &Url, headers: &HeaderMap) -> Vec<u8> {
    let mut head = String::with_capacity(256);
    let _ = write!(head, "{method} {}", url.path());
    if let Some(query) = url.query() {
        let _ = write!(head, "?{query}");
    }
    head.push_str(" HTTP/1.1\r\n");
    let mut out = head.into_bytes();
    let mut line = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    if !headers.contains_key(header::HOST) {
        let host = url.host_str().unwrap_or_default();
        match url.port() {
            Some(port) => line("host", format!("{host}:{port}").as_bytes()),
            None => line("host", host.as_bytes()),
        }
    }
    if !headers.contains_key(header::USER_AGENT) {
        line("user-agent", USER_AGENT.as_bytes());
    }
    if !headers.contains_key(header::ACCEPT) {
        line("accept", b"*/*");
    }
    if !headers.contains_key(header::AUTHORIZATION)
        && let Some(basic) = basic_auth(url)
    {
        line("authorization", basic.as_bytes());
    }
    for (name, value) in headers {
        line(name.as_str(), value.as_bytes());
    }
    if expects_body(method) && !headers.contains_key(header::CONTENT_LENGTH) {
        line("content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
    out
}

const USER_AGENT: &str = concat!("healthgate/", env!("CARGO_PKG_VERSION"));

/// Methods whose requests normally carry a body: an empty one is declared, or servers wait.
fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// `Basic …` from the URL's user info (percent-decoded), if it has any.
fn basic_auth(url: &Url) -> Option<String> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).collect::<Vec<u8>>();
    let mut plain = decode(url.username());
    plain.push(b':');
    plain.extend(decode(url.password().unwrap_or_default()));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(plain)
    ))
}

/// What the status line and headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) status: u16,
    /// The `Location` header, for redirects.
    pub(super) location: Option<String>,
    /// How the body ends.
    pub(super) framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub(super) keep_alive: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// Parses a response head from the start of `buf`: `Ok(None)` if more bytes are needed, else
/// the head and the bytes it took. Interim (1xx) responses are returned like any other; the
/// caller skips them.
pub(super) fn parse_head(buf: &[u8], method: &Method) -> Result<Option<(usize, Head)>, Invalid> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Invalid::new(format!(
                "response head larger than {} KiB",
                MAX_HEAD_BYTES / 1024
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Invalid::new(e.to_string())),
    };
    let status = response.code.unwrap_or_default();
    let http11 = response.version == Some(1);
    let mut location = None;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = !http11;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Invalid::new("invalid content-length"))?;
            if length.is_some_and(|prev| prev != n) {
                return Err(Invalid::new("conflicting content-length headers"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; anything but chunked last is read until close.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("location") {
            location = std::str::from_utf8(h.value).ok().map(str::to_owned);
        }
    }
    let framing = if *method == Method::HEAD || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let keep_alive = !close && framing != Framing::UntilClose && status != 101;
    Ok(Some((
        len,
        Head {
            status,
            location,
            framing,
            keep_alive,
        },
    )))
}

/// Decodes a body from successive input slices.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left (`Framing::Length`).
    Length(u64),
    /// Everything until EOF.
    UntilClose,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// Reading trailer lines until the empty one.
    Trailers,
    Done,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// Whether the whole body has been decoded.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input`: the number of input bytes used and the body bytes
    /// among them (a sub-slice of `input`). Using nothing means more input is needed.
    pub(super) fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), Invalid> {
        match self.state {
            State::Done => Ok((0, &[])),
            State::UntilClose => Ok((input.len(), input)),
            State::Length(left) | State::ChunkData(left) => {
                let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - n as u64;
                self.state = match (self.state, left) {
                    (State::Length(_), 0) => State::Done,
                    (State::Length(_), _) => State::Length(left),
                    (_, 0) => State::ChunkEnd,
                    (_, _) => State::ChunkData(left),
                };
                Ok((n, &input[..n]))
            }
            State::ChunkSize => match httparse::parse_chunk_size(input) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    self.state = State::Trailers;
                    Ok((used, &[]))
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    self.state = State::ChunkData(size);
                    Ok((used, &[]))
                }
                Ok(httparse::Status::Partial) => Ok((0, &[])),
                Err(_) => Err(Invalid::new("invalid chunk size")),
            },
            State::ChunkEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::ChunkSize;
                    Ok((2, &[]))
                }
                [] | [b'\r'] => Ok((0, &[])),
                _ => Err(Invalid::new("chunk not followed by CRLF")),
            },
            State::Trailers => match input.windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.state = State::Done;
                    Ok((2, &[]))
                }
                Some(end) => Ok((end + 2, &[])),
                None => Ok((0, &[])),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("ascii request")
    }

    #[test]
    fn requests_carry_defaults_unless_configured() {
        let mut headers = HeaderMap::new();
        headers.insert("x-probe", HeaderValue::from_static("1"));
        let req = encode_request(
            &Method::GET,
            &url("http://h.example:8080/a/b?x=1#frag"),
            &headers,
        );
        assert_eq!(
            text(&req),
            format!(
                "GET /a/b?x=1 HTTP/1.1\r\nhost: h.example:8080\r\nuser-agent: {USER_AGENT}\r\n\
                 accept: */*\r\nx-probe: 1\r\n\r\n"
            )
        );

        headers.insert(header::USER_AGENT, HeaderValue::from_static("mine"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let req = encode_request(&Method::POST, &url("https://u:p@[::1]/"), &headers);
        let req = text(&req);
        assert!(
            req.starts_with("POST / HTTP/1.1\r\nhost: [::1]\r\n"),
            "{req}"
        );
        assert!(req.contains("user-agent: mine\r\n") && !req.contains("healthgate/"));
        assert!(req.contains("authorization: Bearer t\r\n") && !req.contains("Basic"));
        assert!(req.ends_with("content-length: 0\r\n\r\n"), "{req}");
    }

    #[test]
    fn url_user_info_becomes_basic_auth() {
        // RFC 7617's example, with the password percent-encoded in the URL.
        let req = encode_request(
            &Method::GET,
            &url("http://Aladdin:open%20sesame@h/"),
            &HeaderMap::new(),
        );
        assert!(text(&req).contains("authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"));
    }

    fn head(raw: &str, method: &Method) -> Head {
        let (used, head) = parse_head(raw.as_bytes(), method)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, raw.find("\r\n\r\n").expect("test head") + 4);
        head
    }

    #[test]
    fn heads_decide_framing_and_reuse() {
        let get = &Method::GET;
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello", get);
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Length(12), true)
        );
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            get,
        );
        assert_eq!(h.framing, Framing::Chunked, "chunked wins over a length");
        let h = head(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            get,
        );
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n", get);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", get);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let h = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            get,
        );
        assert!(h.keep_alive);
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n", get);
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 100 Continue\r\n\r\n", get);
        assert_eq!((h.status, h.framing), (100, Framing::Empty));
        let h = head(
            "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n",
            get,
        );
        assert_eq!(h.location.as_deref(), Some("/ok"));
    }

    #[test]
    fn bad_heads_are_refused_without_quoting_them() {
        let get = &Method::GET;
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Len", get),
            Ok(None),
            "partial"
        );
        assert_eq!(
            parse_head(b"\x00\x01garbage\r\n\r\n", get),
            Err(Invalid::new("invalid HTTP version"))
        );
        for bad in ["-1", "1 2", "", "0x10", "99999999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                parse_head(raw.as_bytes(), get),
                Err(Invalid::new("invalid content-length")),
                "{bad:?}"
            );
        }
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(parse_head(raw, get).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse_head(huge.as_bytes(), get),
            Err(Invalid::new("response head larger than 64 KiB"))
        );
    }

    /// Feeds `input` one byte at a time (the worst split) and returns the body.
    fn decode_bytewise(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, usize), Invalid> {
        let mut decoder = Decoder::new(framing);
        let mut body = Vec::new();
        let (mut pending, mut consumed) = (Vec::new(), 0);
        for &b in input {
            if decoder.is_done() {
                break;
            }
            pending.push(b);
            loop {
                let (used, data) = decoder.decode(&pending)?;
                body.extend_from_slice(data);
                consumed += used;
                pending.drain(..used);
                if used == 0 || decoder.is_done() {
                    break;
                }
            }
        }
        assert!(decoder.is_done() || framing == Framing::UntilClose);
        Ok((body, consumed))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, used) = decode_bytewise(Framing::Chunked, wire).expect("valid");
        assert_eq!(body, b"hello, world");
        assert_eq!(used, wire.len() - 4, "stops before the next response");
        let (body, _) = decode_bytewise(Framing::Length(3), b"abcdef").expect("valid");
        assert_eq!(body, b"abc");
        assert!(decode_bytewise(Framing::Chunked, b"zz\r\n").is_err());
        assert!(decode_bytewise(Framing::Chunked, b"1\r\nab\r\n").is_err());
    }
}
