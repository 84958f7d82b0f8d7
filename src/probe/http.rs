//! The HTTP probe: one request, status and body checked, body read as a stream and never
//! buffered beyond `max_body_bytes`. Its spec is beside it (`spec`); requests go through
//! reqwest (`client`), HTTP/1.1 or HTTP/2.

mod client;
mod spec;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use client::{Client, ClientKey};
use http::{HeaderValue, Method};
pub use spec::{
    BodyCondition, BodyMatcher, DEFAULT_MAX_BODY_BYTES, HttpSpec, HttpVersion, JsonSelector,
    StatusSet,
};

use super::{Probe, ProbeContext, ProbeFuture};
use crate::{Health, Verdict};

/// The most redirects followed (same origin only) when `follow_redirects = true`.
const MAX_REDIRECTS: usize = 5;

/// An HTTP/1.1 probe asks its server to close the kept-alive connection (`Connection: close`)
/// on every this-many-th request, and the next probe opens a fresh one.
///
/// Why: hyper's client connection grows its request channel (a tokio mpsc of 32-slot blocks)
/// by ~9 KiB at its 32nd and again at its 64th request, and does not give that back while the
/// connection lives. Measured with `engine_scale 1000 620 distinct` (reqwest, no rotation): RSS
/// 36.7 MiB at 30 s, 44.3 at 60 s, 49.2 at 90 s, 50.9 at 630 s — memory that depends on
/// uptime, and 15 % growth from minute 1 to minute 10. Rotating first keeps every connection
/// in its first block. It costs one connect per dependency every 25 probes (a TCP handshake,
/// and a TLS one for https), and it also spreads probes over the backends behind a load
/// balancer, as nginx's `keepalive_requests` and Envoy's `max_requests_per_connection` do.
pub(crate) const MAX_REQUESTS_PER_CONNECTION: u64 = 25;

/// Probes one URL.
#[derive(Debug)]
pub(crate) struct HttpProbe {
    spec: HttpSpec,
    client: Arc<Client>,
    runs: AtomicU64,
    /// HTTPS: the latest run's peer certificate `notAfter`.
    not_after: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl HttpProbe {
    pub(crate) fn new(spec: HttpSpec, client: Arc<Client>) -> HttpProbe {
        HttpProbe {
            spec,
            client,
            runs: AtomicU64::new(0),
            not_after: std::sync::Mutex::new(None),
        }
    }

    fn set_not_after(&self, at: Option<std::time::SystemTime>) {
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    async fn run(&self) -> Verdict {
        self.set_not_after(None);
        let mut headers = self.spec.headers.clone();
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        if self.spec.keep_alive
            && self.spec.version != HttpVersion::Http2
            && run % MAX_REQUESTS_PER_CONNECTION == MAX_REQUESTS_PER_CONNECTION - 1
            && !headers.contains_key(http::header::CONNECTION)
        {
            // Ignored (stripped by hyper) if the connection turns out to be HTTP/2.
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some((parent, state)) = crate::trace_context::current() {
            for (name, value) in [("traceparent", Some(parent)), ("tracestate", state)] {
                if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                    headers.insert(name, value);
                }
            }
        }
        let cap = self.spec.max_body_bytes;
        let mut method = self.spec.method.clone();
        let mut url = self.spec.url.clone();
        let mut redirects = 0;
        let response = loop {
            let sent = self.client.send(&method, &url, &headers, cap);
            let response = match sent.await {
                Ok(r) => r,
                Err(failure) => return Verdict::unhealthy(failure.0),
            };
            self.set_not_after(response.not_after);
            let next = match (&response.location, response.status) {
                (Some(location), 301 | 302 | 303 | 307 | 308) if self.spec.follow_redirects => {
                    url.join(location).ok()
                }
                _ => None,
            };
            // Only to the same origin (the credentials and headers go along), and not forever:
            // otherwise the 3xx itself is the answer.
            match next {
                Some(next) if next.origin() == url.origin() && redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    if response.status == 303 && method != Method::HEAD
                        || matches!(response.status, 301 | 302) && method == Method::POST
                    {
                        method = Method::GET;
                    }
                    url = next;
                }
                _ => break response,
            }
        };
        let status = response.status;
        if self.spec.degraded_statuses.contains(status) {
            return Verdict::degraded(format!("HTTP {status}"));
        }
        if !self.spec.expected_statuses.contains(status) {
            return Verdict::unhealthy(if (300..400).contains(&status) {
                format!("HTTP {status} (redirect not followed)")
            } else {
                format!("HTTP {status}")
            });
        }
        let body = Body {
            bytes: response.body,
            truncated: response.truncated,
        };
        check_body(&self.spec.body, &body, cap)
    }
}

impl Probe for HttpProbe {
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        // The engine enforces the timeout; the client's connect timeout is set from it.
        Box::pin(self.run())
    }

    fn certificate_expiry(&self) -> Option<std::time::SystemTime> {
        *self.not_after.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A response body read up to a cap.
struct Body {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Applies body conditions in order; the first that fails decides.
fn check_body(conditions: &[BodyCondition], body: &Body, cap: usize) -> Verdict {
    if conditions.is_empty() {
        return Verdict::Healthy;
    }
    if body.truncated {
        return Verdict::unhealthy(format!("body larger than {cap} bytes"));
    }
    let mut json = None;
    for condition in conditions {
        let failure = match &condition.matcher {
            BodyMatcher::Contains(needle) => (!contains(&body.bytes, needle.as_bytes()))
                .then(|| format!("body does not contain {needle:?}")),
            BodyMatcher::Json { selector, equals } => {
                let parsed = json.get_or_insert_with(|| {
                    serde_json::from_slice::<serde_json::Value>(&body.bytes)
                });
                match parsed {
                    Err(_) => Some("body is not valid JSON".to_owned()),
                    Ok(value) => json_mismatch(value, selector, equals),
                }
            }
        };
        if let Some(reason) = failure {
            return match condition.on_mismatch {
                Health::Degraded => Verdict::degraded(reason),
                _ => Verdict::unhealthy(reason),
            };
        }
    }
    Verdict::Healthy
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Why the selected JSON value does not equal `equals`, or `None` if it does. The reason names
/// the selector and the expected value, never the body's value.
fn json_mismatch(
    value: &serde_json::Value,
    selector: &JsonSelector,
    equals: &serde_json::Value,
) -> Option<String> {
    let (found, name) = match selector {
        JsonSelector::Pointer(p) => (value.pointer(p), p.clone()),
        JsonSelector::Path(p) => (p.query(value).exactly_one().ok(), p.to_string()),
    };
    match found {
        None => Some(format!("body has no single value at {name}")),
        Some(v) if v == equals => None,
        Some(_) => Some(format!("body {name} is not {equals}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Body {
        Body {
            bytes: text.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn json(sel: &str, equals: serde_json::Value, on_mismatch: Health) -> BodyCondition {
        let selector = if sel.starts_with('/') {
            JsonSelector::Pointer(sel.to_owned())
        } else {
            JsonSelector::Path(serde_json_path::JsonPath::parse(sel).expect("valid test path"))
        };
        BodyCondition {
            matcher: BodyMatcher::Json { selector, equals },
            on_mismatch,
        }
    }

    #[test]
    fn body_conditions_decide_in_order() {
        let up = r#"{"status":"UP","checks":[{"db":"ok"}]}"#;
        let c = [
            json("/status", "UP".into(), Health::Unhealthy),
            json("$.checks[0].db", "ok".into(), Health::Degraded),
        ];
        assert_eq!(check_body(&c, &body(up), 1024), Verdict::Healthy);
        let slow_db = r#"{"status":"UP","checks":[{"db":"slow"}]}"#;
        assert_eq!(
            check_body(&c, &body(slow_db), 1024).health(),
            Health::Degraded
        );
        let down = r#"{"status":"DOWN"}"#;
        let v = check_body(&c, &body(down), 1024);
        assert_eq!(v, Verdict::unhealthy("body /status is not \"UP\""));
        assert!(
            !v.reason()
                .expect("unhealthy has a reason")
                .as_str()
                .contains("DOWN"),
            "never echo the body"
        );
        assert_eq!(
            check_body(&c, &body("<html>"), 1024),
            Verdict::unhealthy("body is not valid JSON")
        );
    }

    #[test]
    fn truncated_body_fails_conditions_but_not_plain_probes() {
        let big = Body {
            bytes: vec![b'a'; 10],
            truncated: true,
        };
        let c = [BodyCondition {
            matcher: BodyMatcher::Contains("a".into()),
            on_mismatch: Health::Unhealthy,
        }];
        assert_eq!(
            check_body(&c, &big, 10),
            Verdict::unhealthy("body larger than 10 bytes")
        );
        assert_eq!(check_body(&[], &big, 10), Verdict::Healthy);
    }

    #[test]
    fn status_sets_hold_ranges_and_codes() {
        let s = StatusSet(vec![200..=204, 301..=301]);
        assert!(s.contains(204) && s.contains(301) && !s.contains(302));
    }
}
