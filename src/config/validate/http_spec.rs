//! `kind = "http"`: URL, method, headers, statuses, body conditions, HTTP version.

use super::*;

impl Validator<'_> {
    pub(super) fn http(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<HttpSpec> {
        let url = self.url(&format!("{path}.url"), raw.url.as_deref(), "url", secrets);
        let method = match raw.method.as_deref() {
            None => Some(http::Method::GET),
            Some(m) => match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => Some(method),
                Err(_) => {
                    self.problem(format!("{path}.method"), format!("invalid method {m:?}"));
                    None
                }
            },
        };
        let secret_names = lowercase_all(raw.secret_headers.as_deref());
        let mut headers = HeaderMap::new();
        for (name, value) in raw.headers.iter().flatten() {
            let hpath = format!("{path}.headers.{}", key(name));
            let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
                self.problem(&hpath, "invalid header name");
                continue;
            };
            let before = secrets.len();
            let Some(text) = self.expand(&hpath, value, secrets) else {
                continue;
            };
            let secret = secrets.len() > before
                || SECRET_HEADERS.contains(&hname.as_str())
                || secret_names.iter().any(|s| s == hname.as_str());
            match HeaderValue::from_str(&text) {
                Ok(mut v) => {
                    if secret {
                        v.set_sensitive(true);
                        secrets.push(text);
                    }
                    headers.append(hname, v);
                }
                Err(_) => self.problem(&hpath, "invalid header value (control characters?)"),
            }
        }
        let expected_statuses = self.statuses(
            &At(path, "expected_statuses"),
            raw.expected_statuses.as_deref(),
        );
        let degraded_statuses = self.statuses(
            &At(path, "degraded_statuses"),
            raw.degraded_statuses.as_deref(),
        );
        let body = self.body(path, raw.body.as_deref());
        let max_body_bytes = match raw.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) if (1..=64 * 1024 * 1024).contains(&n) => n as usize,
            Some(n) => {
                self.problem(
                    format!("{path}.max_body_bytes"),
                    format!("{n} must be between 1 and 67108864 (64 MiB)"),
                );
                DEFAULT_MAX_BODY_BYTES
            }
        };
        let version = match raw.http_version.as_deref() {
            None | Some("auto") => HttpVersion::Auto,
            Some("1.1") => HttpVersion::Http1,
            Some("2") => HttpVersion::Http2,
            Some(other) => {
                self.problem(
                    format!("{path}.http_version"),
                    format!("unknown version {other:?}: expected \"auto\", \"1.1\" or \"2\""),
                );
                HttpVersion::Auto
            }
        };
        let tls = self.tls(&At(path, "tls"), raw.tls.as_ref());
        let url = url?;
        if raw.tls.is_some() && url.scheme() != "https" {
            self.problem(format!("{path}.tls"), "has no effect on an http:// url");
        }
        Some(HttpSpec {
            url,
            method: method?,
            headers,
            expected_statuses: expected_statuses?.unwrap_or_else(StatusSet::success),
            degraded_statuses: degraded_statuses?.unwrap_or_default(),
            body: body?,
            max_body_bytes,
            follow_redirects: raw.follow_redirects.unwrap_or(false),
            tls: tls?,
            version,
            keep_alive: raw.keep_alive.unwrap_or(true),
        })
    }

    /// Status lists: numbers (`503`) and ranges (`"200-299"`).
    fn statuses(
        &mut self,
        path: &(impl std::fmt::Display + ?Sized),
        raw: Option<&[toml::Value]>,
    ) -> Option<Option<StatusSet>> {
        let Some(raw) = raw else { return Some(None) };
        let mut set = Vec::new();
        let mut ok = true;
        for (i, v) in raw.iter().enumerate() {
            let range = match v {
                toml::Value::Integer(n) => u16::try_from(*n).ok().map(|n| n..=n),
                toml::Value::String(s) => s.split_once('-').and_then(|(a, b)| {
                    Some(a.trim().parse::<u16>().ok()?..=b.trim().parse::<u16>().ok()?)
                }),
                _ => None,
            };
            match range {
                Some(r)
                    if (100..=599).contains(r.start())
                        && (100..=599).contains(r.end())
                        && r.start() <= r.end() =>
                {
                    set.push(r)
                }
                _ => {
                    ok = false;
                    self.problem(format!("{path}[{i}]"), format!("invalid status {v}: expected a code 100-599 or a range like \"200-299\""));
                }
            }
        }
        ok.then_some(Some(StatusSet(set)))
    }

    fn body(&mut self, path: &str, raw: Option<&[RawBodyCondition]>) -> Option<Vec<BodyCondition>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, c) in raw.unwrap_or_default().iter().enumerate() {
            let cpath = format!("{path}.body[{i}]");
            let on_mismatch = match c.on_mismatch.as_deref() {
                None | Some("unhealthy") => Health::Unhealthy,
                Some("degraded") => Health::Degraded,
                Some(other) => {
                    ok = false;
                    self.problem(
                        format!("{cpath}.on_mismatch"),
                        format!("unknown value {other:?}: expected \"unhealthy\" or \"degraded\""),
                    );
                    continue;
                }
            };
            let matcher = match (&c.contains, &c.json, &c.equals) {
                (Some(text), None, None) => BodyMatcher::Contains(text.clone()),
                (None, Some(sel), Some(equals)) => {
                    let selector = if sel.starts_with('/') || sel.is_empty() {
                        JsonSelector::Pointer(sel.clone())
                    } else {
                        match serde_json_path::JsonPath::parse(sel) {
                            Ok(p) => JsonSelector::Path(p),
                            Err(e) => {
                                ok = false;
                                self.problem(
                                    format!("{cpath}.json"),
                                    format!("invalid JSONPath {sel:?}: {e}"),
                                );
                                continue;
                            }
                        }
                    };
                    let equals = serde_json::to_value(equals).unwrap_or(serde_json::Value::Null);
                    BodyMatcher::Json { selector, equals }
                }
                _ => {
                    ok = false;
                    self.problem(&cpath, "expected either `contains = \"text\"` or `json = \"$.path\"` with `equals = value`");
                    continue;
                }
            };
            out.push(BodyCondition {
                matcher,
                on_mismatch,
            });
        }
        ok.then_some(out)
    }
}
