//! The HTTP twin of `grpc.health.v1`: kube-apiserver's `/livez` `/readyz` `/healthz` byte for
//! byte (its `healthz` package), with our third state for Envoy and HAProxy.
//!
//! | path | answers for |
//! |---|---|
//! | `/healthz` | service `""` |
//! | `/readyz` | service `readiness`, else `""` |
//! | `/livez` | service `liveness`, else alive while the process serves (even while draining) |
//! | `/healthz/NAME`, `/readyz/NAME`, `/livez/NAME` | one dependency among that endpoint's checks |
//! | `/services/NAME` | any configured service, like `/readyz` (`/services/` is `""`) |
//! | `OPTIONS /` | as `/healthz` (HAProxy's default `option httpchk`) |
//!
//! Names are percent-decoded after the prefix and may contain `/`. GET, HEAD and OPTIONS answer
//! alike; other methods are `405`. Passing: `200`, plus `x-envoy-degraded: true` when degraded.
//! Failing: `503` (or `[server] http_failure_status = 500`, kube's own code), plus
//! `x-envoy-immediate-health-check-fail: true` while draining. Every answer carries
//! `x-health-state`. Reasons appear only on the per-dependency paths and in the JSON, and only
//! to callers that pass the detail auth (`detail_token`, when set).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

mod json;
mod report;

use super::status;

use report::{Check, Line, Report};

use crate::config::LIVENESS;
use crate::health::HEALTH_STATE_KEY;
use crate::listener::Peer;
use crate::snapshot::{ServiceHealth, Snapshot};
use crate::{Handle, Health, auth};

/// The service `/readyz` answers for, when it is configured.
pub const READINESS: &str = "readiness";

/// The header Envoy's HTTP health checker reads to mark a host degraded.
pub const ENVOY_DEGRADED: &str = "x-envoy-degraded";

/// The header that makes Envoy take a host out of rotation at once (draining).
pub const ENVOY_IMMEDIATE_FAIL: &str = "x-envoy-immediate-health-check-fail";

const TEXT: &str = "text/plain; charset=utf-8";

/// How the twin answers.
#[derive(Clone, Default)]
pub struct TwinOptions {
    /// When set, reasons need `Authorization: Bearer TOKEN` (as the detail RPCs do).
    pub detail_token: Option<String>,
    /// The status of a failing answer: `503` (default) or `500`.
    pub failure_status: Option<StatusCode>,
    /// Client-certificate identities that may see reasons besides `detail_token`.
    pub detail_identities: Vec<String>,
    /// The probe port's twin: `/livez` `/readyz` `/healthz` (and their per-check paths) only,
    /// never reasons, the status page, its JSON or `/services/`.
    pub probe_only: bool,
}

impl std::fmt::Debug for TwinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinOptions")
            .field(
                "detail_token",
                &self.detail_token.as_ref().map(|_| crate::redact::REDACTED),
            )
            .field("failure_status", &self.failure_status)
            .field("detail_identities", &self.detail_identities)
            .field("probe_only", &self.probe_only)
            .finish()
    }
}

struct Twin {
    handle: Handle,
    access: auth::Access,
    probe_only: bool,
    failure: StatusCode,
    /// The latest plain answer per endpoint, with the generation it was rendered from.
    cache: Mutex<HashMap<CacheKey, (u64, Answer)>>,
    /// The latest page and JSON per caller kind (with or without the detail auth): four at most.
    pages: Mutex<HashMap<PageKey, (u64, Bytes)>>,
}

/// A router answering the twin's paths from `handle`'s snapshots (merge it with the metrics
/// router; it is a fallback, so it answers every path the other routes do not).
pub fn twin_router(handle: Handle, options: TwinOptions) -> axum::Router {
    let twin = Arc::new(Twin {
        handle,
        access: if options.probe_only {
            auth::Access::nobody()
        } else {
            auth::Access::new(options.detail_token, options.detail_identities)
        },
        probe_only: options.probe_only,
        failure: options
            .failure_status
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        cache: Mutex::default(),
        pages: Mutex::default(),
    });
    axum::Router::new().fallback(answer).with_state(twin)
}

/// What a path asks for.
enum Target {
    /// An endpoint: its word and the service it answers for (`None`: alive while serving).
    Endpoint(String, Option<String>),
    /// One dependency among an endpoint's checks.
    Check(&'static str, String),
    NotFound,
}

fn target(path: &str, method: &Method, snapshot: &Snapshot) -> Target {
    let endpoint = |word: &'static str| -> Option<String> {
        match word {
            "healthz" => Some(String::new()),
            "readyz" if snapshot.service(READINESS).is_some() => Some(READINESS.to_owned()),
            "readyz" => Some(String::new()),
            _ => snapshot.service(LIVENESS).map(|_| LIVENESS.to_owned()),
        }
    };
    if path == "/" && method == Method::OPTIONS {
        return Target::Endpoint("healthz".to_owned(), Some(String::new()));
    }
    for word in ["healthz", "readyz", "livez"] {
        let Some(rest) = path.strip_prefix('/').and_then(|p| p.strip_prefix(word)) else {
            continue;
        };
        if rest.is_empty() {
            return Target::Endpoint(word.to_owned(), endpoint(word));
        }
        return match rest.strip_prefix('/').and_then(decode) {
            Some(name) if !name.is_empty() => Target::Check(word, name),
            _ => Target::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/services/") {
        return match decode(rest) {
            Some(name) if name.is_empty() => Target::Endpoint("healthz".to_owned(), Some(name)),
            Some(name) => Target::Endpoint(name.clone(), Some(name)),
            None => Target::NotFound,
        };
    }
    Target::NotFound
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The query as Go's `url.ParseQuery` reads it: `verbose` present, and every `exclude` value.
fn query(request: &Request) -> (bool, Vec<String>) {
    let mut verbose = false;
    let mut exclude = Vec::new();
    for (key, value) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
    {
        match &*key {
            "verbose" => verbose = true,
            "exclude" => exclude.push(value.into_owned()),
            _ => {}
        }
    }
    (verbose, exclude)
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|range| range.split(';').next().unwrap_or("").trim())
        .any(|t| {
            t.eq_ignore_ascii_case(json::CONTENT_TYPE) || t.eq_ignore_ascii_case("application/json")
        })
}

impl Twin {
    /// Whether the caller may see reasons: the detail auth is open, or the caller has the
    /// bearer token or an allowed client-certificate identity (never on the probe port).
    fn authorized(&self, headers: &HeaderMap, peer: Option<&Peer>) -> bool {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.access.check(authorization, peer).is_some()
    }
}

async fn answer(State(twin): State<Arc<Twin>>, request: Request) -> Response {
    let method = request.method().clone();
    if ![Method::GET, Method::HEAD, Method::OPTIONS].contains(&method) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        response
            .headers_mut()
            .insert(HEALTH_STATE_KEY, HeaderValue::from_static("unknown"));
        return response;
    }
    twin.handle.wake_on_demand();
    let snapshot = twin.handle.snapshot();
    let peer = request.extensions().get::<Peer>();
    if twin.probe_only {
        if request.uri().path().starts_with("/services/") {
            return not_found();
        }
    } else if method != Method::OPTIONS
        && let Some(response) = twin.page(request.uri().path(), request.headers(), peer, &snapshot)
    {
        return response;
    }
    let (verbose, exclude) = query(&request);
    let json = wants_json(request.headers());
    match target(request.uri().path(), &method, &snapshot) {
        Target::NotFound => not_found(),
        Target::Endpoint(word, service) => {
            let service = match service.as_deref().map(|s| snapshot.service(s)) {
                Some(None) => return not_found(),
                Some(Some(s)) => Some(s),
                None => None,
            };
            // Plain answers without exclusions are the same for every caller until the next
            // publication: rendered once per generation (a failing answer is a verbose list).
            let key = (!json && exclude.is_empty())
                .then(|| (word.clone(), service.map(|s| s.name.to_string()), verbose));
            if let Some(key) = &key
                && let Some(answer) = twin.cached(key, snapshot.generation)
            {
                return twin.respond(answer);
            }
            let report = report::endpoint(&snapshot, &word, service, &exclude);
            let body = if json {
                json::render(&report, twin.authorized(request.headers(), peer))
            } else {
                report.text(verbose)
            };
            let answer = twin.answer(&report, body, json);
            if let Some(key) = key {
                twin.remember(key, snapshot.generation, &answer, snapshot.services.len());
            }
            twin.respond(answer)
        }
        Target::Check(word, name) => {
            let service = match word {
                "healthz" => snapshot.service(""),
                "readyz" => snapshot.service(READINESS).or_else(|| snapshot.service("")),
                _ => snapshot.service(LIVENESS),
            };
            let Some(service) = service else {
                return not_found();
            };
            let Some(&(_, impact)) = service.inputs.iter().find(|(d, _)| **d == *name) else {
                return not_found();
            };
            let state = snapshot.dependency(&name);
            let health = state.map_or(Health::Unknown, |s| s.health);
            let draining = snapshot.shutting_down;
            let status = ServiceHealth::new(health, Default::default(), draining);
            let line = if status.serving {
                if health == Health::Healthy {
                    Line::Ok
                } else {
                    Line::Degraded
                }
            } else {
                Line::Failed
            };
            let report = Report {
                word: &name,
                service: None,
                status,
                checks: vec![Check {
                    name: &name,
                    line,
                    state,
                    impact,
                }],
                unmatched: Vec::new(),
                draining,
                forced: None,
            };
            let reasons = twin.authorized(request.headers(), peer);
            let body = if json {
                json::render(&report, reasons)
            } else if report.passed() {
                "ok".to_owned()
            } else {
                let reason = if !reasons {
                    "reason withheld".to_owned()
                } else if draining {
                    "shutting down".to_owned()
                } else {
                    state
                        .and_then(|s| s.last_outcome.as_ref())
                        .and_then(|o| o.verdict.reason())
                        .map_or_else(|| health.as_str().to_owned(), |r| r.to_string())
                };
                format!("internal server error: {reason}\n")
            };
            twin.respond(twin.answer(&report, body, json))
        }
    }
}

impl Twin {
    /// The page or its JSON for `snapshot`, rendered once per generation and caller kind and
    /// shared (one allocation) by every response of that generation: with 1,000 dependencies
    /// the HTML takes ~14 ms and the JSON ~2 ms of the runtime's thread and ~1 MB, so rendering
    /// per request would let a client loop on `/` stall Checks and slow readers pin a copy each.
    fn page_body(
        &self,
        path: &'static str,
        snapshot: &Snapshot,
        authorized: bool,
        render: fn(&Snapshot, bool) -> String,
    ) -> Bytes {
        let key = (path, authorized);
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((generation, body)) = pages.get(&key)
            && *generation == snapshot.generation
        {
            return body.clone();
        }
        let body = Bytes::from(render(snapshot, authorized));
        pages.insert(key, (snapshot.generation, body.clone()));
        body
    }

    /// The status page and its parts, if `path` is one of them.
    fn page(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer: Option<&Peer>,
        snapshot: &Snapshot,
    ) -> Option<Response> {
        let (content_type, body) = match path {
            "/" => (
                "text/html; charset=utf-8",
                self.page_body("/", snapshot, self.authorized(headers, peer), status::html),
            ),
            "/status.json" => (
                "application/json",
                self.page_body(
                    "/status.json",
                    snapshot,
                    self.authorized(headers, peer),
                    status::json,
                ),
            ),
            "/status.js" => (
                "text/javascript; charset=utf-8",
                Bytes::from_static(status::SCRIPT.as_bytes()),
            ),
            "/status.css" => (
                "text/css; charset=utf-8",
                Bytes::from_static(status::STYLE.as_bytes()),
            ),
            _ => return None,
        };
        let mut response = plain(StatusCode::OK, body);
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(status::CSP),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        let overall = snapshot
            .service("")
            .map_or(Health::Unknown, |s| s.status.health);
        h.insert(HEALTH_STATE_KEY, HeaderValue::from_static(overall.as_str()));
        Some(response)
    }

    fn answer(&self, report: &Report<'_>, body: String, json: bool) -> Answer {
        Answer {
            status: if report.passed() {
                StatusCode::OK
            } else {
                self.failure
            },
            health: report.status.health,
            degraded: report.degraded(),
            immediate_fail: report.draining && !report.passed(),
            json,
            body: Bytes::from(body),
        }
    }

    fn cached(&self, key: &CacheKey, generation: u64) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(g, _)| *g == generation)
            .map(|(_, a)| a.clone())
    }

    /// Keeps `answer` for `key`; entries of services removed at runtime are dropped when the
    /// cache outgrows the configuration (two per service, plus the three endpoints).
    fn remember(&self, key: CacheKey, generation: u64, answer: &Answer, services: usize) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= 2 * (services + 3) {
            cache.retain(|_, (g, _)| *g == generation);
        }
        cache.insert(key, (generation, answer.clone()));
    }

    fn respond(&self, answer: Answer) -> Response {
        let mut response = plain(answer.status, answer.body);
        let headers = response.headers_mut();
        if answer.json {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(json::CONTENT_TYPE),
            );
        }
        headers.insert(
            HEALTH_STATE_KEY,
            HeaderValue::from_static(answer.health.as_str()),
        );
        if answer.degraded {
            headers.insert(ENVOY_DEGRADED, HeaderValue::from_static("true"));
        }
        if answer.immediate_fail {
            headers.insert(ENVOY_IMMEDIATE_FAIL, HeaderValue::from_static("true"));
        }
        response
    }
}

/// A cached page: its path and whether the caller passed the detail auth.
type PageKey = (&'static str, bool);

/// A rendered twin answer.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    health: Health,
    degraded: bool,
    immediate_fail: bool,
    json: bool,
    body: Bytes,
}

/// A cached plain answer: the endpoint's word, its service (configured services only: an
/// unknown one is a 404 before the cache, so the cache is bounded by the configuration) and
/// `?verbose`.
type CacheKey = (String, Option<String>, bool);

fn plain(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Go's `http.NotFound`, as kube answers an unknown path or check.
fn not_found() -> Response {
    let mut response = plain(StatusCode::NOT_FOUND, "404 page not found\n");
    response
        .headers_mut()
        .insert(HEALTH_STATE_KEY, HeaderValue::from_static("unknown"));
    response
}
