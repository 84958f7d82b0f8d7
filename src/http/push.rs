//! `POST /push/NAME`: a job reports its push dependency's health (DESIGN §4, §10).
//!
//! `Authorization: Bearer TOKEN` — the dependency's own `token`, or the admin token — then
//! `?status=healthy|degraded|unhealthy` (default `healthy`: a bare POST is a heartbeat) and
//! `&reason=TEXT` (sanitized and capped like every reason). Answers: `200` reported, `400` a bad
//! query, `401` no or a wrong token (nothing changes), `404` no such dependency and `409` not a
//! push dependency (to the admin token only: a dependency's token gets `401` for other names),
//! `405` another method, `503` shutting down. The body is never read; a request head is bounded by the listener (32 KiB), so a report costs no more than a Check.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::control::StateFile;
use crate::engine::{ChangeError, Reporter};
use crate::{Handle, Health, auth};

/// The push route's state.
#[derive(Debug)]
struct Push {
    handle: Handle,
    admin_token: Option<Arc<str>>,
    state: Option<Arc<StateFile>>,
}

/// The `/push/NAME` route for `handle`; `admin_token`, when set, may report any push
/// dependency. With `state`, a report is answered once the state file holds it (`500` when
/// it cannot be written: the report applied in memory, and the answer says so).
pub fn push_router(
    handle: Handle,
    admin_token: Option<String>,
    state: Option<Arc<StateFile>>,
) -> axum::Router {
    let push = Arc::new(Push {
        handle,
        admin_token: admin_token.map(Arc::from),
        state,
    });
    axum::Router::new()
        .route("/push/{*name}", axum::routing::any(report))
        .with_state(push)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn report(State(push): State<Arc<Push>>, request: Request) -> Response {
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let raw = request.uri().path().strip_prefix("/push/").unwrap_or("");
    let Some(name) = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .filter(|n| !n.is_empty())
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let (health, reason) = match query(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer_token);
    let Some(given) = given else {
        return unauthorized();
    };
    let reporter = match &push.admin_token {
        Some(admin) if auth::constant_time_eq(given.as_bytes(), admin.as_bytes()) => {
            Reporter::Admin
        }
        _ => Reporter::Token(given.to_owned()),
    };
    match push.handle.report(&*name, health, reason, reporter).await {
        Ok(()) => match push.state.as_deref().map(StateFile::save) {
            Some(saving) => match saving.await {
                Ok(()) => text(StatusCode::OK, format!("reported {health}\n")),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the report applied, but {e}\n"),
                ),
            },
            None => text(StatusCode::OK, format!("reported {health}\n")),
        },
        Err(ChangeError::Unauthenticated(_)) => unauthorized(),
        Err(ChangeError::UnknownDependency(_)) => {
            text(StatusCode::NOT_FOUND, "no such dependency\n")
        }
        Err(ChangeError::NotPush(_)) => text(StatusCode::CONFLICT, "not a push dependency\n"),
        Err(ChangeError::ShuttingDown) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn unauthorized() -> Response {
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required\n",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `status` (default healthy) and `reason` from a query string; unknown keys are refused so a
/// typo (`?state=unhealthy`) is not a silent heartbeat.
fn query(q: &str) -> Result<(Health, Option<String>), String> {
    let mut health = Health::Healthy;
    let mut reason = None;
    for (key, value) in url::form_urlencoded::parse(q.as_bytes()) {
        match &*key {
            "status" => {
                health = match &*value {
                    "healthy" => Health::Healthy,
                    "degraded" => Health::Degraded,
                    "unhealthy" => Health::Unhealthy,
                    other => {
                        return Err(format!(
                            "status {:?}: expected healthy, degraded or unhealthy",
                            other.chars().take(40).collect::<String>()
                        ));
                    }
                }
            }
            "reason" => reason = Some(value.into_owned()),
            other => {
                return Err(format!(
                    "unknown parameter {:?}: expected status and reason",
                    other.chars().take(40).collect::<String>()
                ));
            }
        }
    }
    Ok((health, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_defaults_to_a_heartbeat_and_refuses_typos() {
        assert_eq!(query(""), Ok((Health::Healthy, None)));
        assert_eq!(
            query("status=unhealthy&reason=disk%20full+now"),
            Ok((Health::Unhealthy, Some("disk full now".to_owned())))
        );
        assert!(query("status=unknown").is_err());
        assert!(query("state=unhealthy").is_err());
    }
}
