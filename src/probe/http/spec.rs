//! [`HttpSpec`]: what an HTTP probe requests and how it judges the answer (validated from
//! config by `config::validate::http`).

use std::fmt;
use std::ops::RangeInclusive;

use http::header::HeaderMap;
use url::Url;

use crate::redact::redact_url;
use crate::tls::TlsSpec;

/// Default body read cap for HTTP probes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// An HTTP probe.
#[derive(Clone, PartialEq)]
pub struct HttpSpec {
    /// The URL requested (may carry credentials: never print it, use [`redact_url`]).
    pub url: Url,
    /// The request method.
    pub method: http::Method,
    /// Request headers; secret values are marked sensitive.
    pub headers: HeaderMap,
    /// Statuses that count as success.
    pub expected_statuses: StatusSet,
    /// Statuses that count as degraded (checked before `expected_statuses`).
    pub degraded_statuses: StatusSet,
    /// Conditions on the response body, checked in order.
    pub body: Vec<BodyCondition>,
    /// The most body bytes read; the body is streamed and never buffered beyond this.
    pub max_body_bytes: usize,
    /// Follow same-origin redirects (never to another origin).
    pub follow_redirects: bool,
    /// TLS settings for `https://` URLs.
    pub tls: TlsSpec,
    /// Which HTTP versions the probe speaks.
    pub version: HttpVersion,
    /// Keep the connection open between probes (the default); `false` closes it after each
    /// probe, as the kubelet does.
    pub keep_alive: bool,
}

/// `http_version`: which HTTP versions an HTTP probe speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// `"auto"`: HTTP/1.1 on `http://`; on `https://` HTTP/2 or HTTP/1.1, as the server picks
    /// by ALPN.
    #[default]
    Auto,
    /// `"1.1"`: HTTP/1.1 only.
    Http1,
    /// `"2"`: HTTP/2 only; on `http://` with prior knowledge (h2c).
    Http2,
}

impl fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if v.is_sensitive() {
                        "[redacted]"
                    } else {
                        v.to_str().unwrap_or("[binary]")
                    },
                )
            })
            .collect();
        f.debug_struct("HttpSpec")
            .field("url", &redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("expected_statuses", &self.expected_statuses)
            .field("degraded_statuses", &self.degraded_statuses)
            .field("body", &self.body)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("follow_redirects", &self.follow_redirects)
            .field("version", &self.version)
            .field("keep_alive", &self.keep_alive)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A set of HTTP status codes, as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusSet(pub Vec<RangeInclusive<u16>>);

impl StatusSet {
    /// 200–299, the default expected statuses.
    pub fn success() -> StatusSet {
        StatusSet(vec![200..=299])
    }

    /// Whether `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

/// One condition on an HTTP response body.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyCondition {
    /// What must hold.
    pub matcher: BodyMatcher,
    /// What a mismatch means: Unhealthy (default) or Degraded.
    pub on_mismatch: crate::Health,
}

/// What a body condition checks.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyMatcher {
    /// The body contains this text.
    Contains(String),
    /// The body is JSON and the selected value equals `equals`.
    Json {
        /// Where the value is.
        selector: JsonSelector,
        /// What it must equal.
        equals: serde_json::Value,
    },
}

/// Where a value sits in a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonSelector {
    /// An RFC 6901 JSON pointer, e.g. `/status`.
    Pointer(String),
    /// An RFC 9535 JSONPath, e.g. `$.checks[0].status`; it must select exactly one value.
    Path(serde_json_path::JsonPath),
}
