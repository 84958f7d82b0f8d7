//! The IETF health-check response format (draft-inadarei-api-health-check,
//! `application/health+json`) of a [`Report`]: `status` `pass` | `warn` | `fail`, and one
//! `checks` entry per dependency (`NAME:responseTime`) with its status, time and latency.
//! Reasons appear only when the caller passed the detail auth.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::report::{Line, Report};
use crate::Health;
use crate::snapshot::Override;

/// The content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/health+json";

/// RFC 3339 with milliseconds, UTC.
pub(crate) fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// An override: the health it forces, since and until when, and (to callers who may see
/// reasons) why.
fn forced(o: &Override, reasons: bool) -> Value {
    let mut entry = Map::new();
    entry.insert("health".into(), o.health.as_str().into());
    entry.insert("since".into(), time(o.since).into());
    entry.insert("until".into(), time(o.until).into());
    if reasons {
        entry.insert("reason".into(), o.reason.as_str().into());
    }
    Value::Object(entry)
}

/// The report as the draft's JSON; `reasons` when the caller may see them.
pub(crate) fn render(report: &Report<'_>, reasons: bool) -> String {
    let status = if !report.passed() {
        "fail"
    } else if report.degraded() {
        "warn"
    } else {
        "pass"
    };
    let mut checks = Map::new();
    for check in &report.checks {
        let health = check.state.map_or(Health::Unknown, |s| s.health);
        let mut entry = Map::new();
        entry.insert("componentId".into(), check.name.into());
        if let Some(state) = check.state {
            entry.insert("componentType".into(), state.kind.into());
        }
        let word = match check.line {
            Line::Excluded => "pass",
            Line::Failed => "fail",
            Line::Ok | Line::Degraded => match health {
                Health::Healthy => "pass",
                // Not healthy, but not failing the endpoint.
                _ => "warn",
            },
        };
        entry.insert("status".into(), word.into());
        entry.insert("health".into(), health.as_str().into());
        entry.insert("impact".into(), check.impact.as_str().into());
        if check.line == Line::Excluded {
            entry.insert("output".into(), "excluded".into());
        }
        if let Some(outcome) = check.state.and_then(|s| s.last_outcome.as_ref()) {
            entry.insert("time".into(), time(outcome.finished_at).into());
            let ms = outcome.latency.as_secs_f64() * 1e3;
            entry.insert("observedValue".into(), json!((ms * 1e3).round() / 1e3));
            entry.insert("observedUnit".into(), "ms".into());
            if reasons
                && check.line != Line::Excluded
                && let Some(reason) = check.state.and_then(|s| s.reason())
            {
                entry.insert("output".into(), reason.into_owned().into());
            }
        }
        if let Some(chain) = check.state.and_then(|s| s.caused_by.as_deref()) {
            // The root cause, as names: ["gateway"] (this → gateway).
            let names: Vec<Value> = chain.iter().map(|n| Value::from(&**n)).collect();
            entry.insert("causedBy".into(), Value::Array(names));
        }
        if let Some(since) = check.state.and_then(|s| s.since()) {
            entry.insert("since".into(), time(since).into());
        }
        if let Some(o) = check.state.and_then(|s| s.forced.as_deref()) {
            entry.insert("override".into(), forced(o, reasons));
        }
        checks.insert(
            format!("{}:responseTime", check.name),
            Value::Array(vec![Value::Object(entry)]),
        );
    }
    let mut body = Map::new();
    body.insert("status".into(), status.into());
    body.insert("health".into(), report.status.health.as_str().into());
    if let Some(service) = report.service {
        body.insert("serviceId".into(), service.into());
    }
    body.insert("description".into(), report.word.into());
    if let Some(o) = report.forced {
        body.insert("override".into(), forced(o, reasons));
    }
    let mut notes: Vec<Value> = Vec::new();
    if report.draining {
        notes.push("shutting down".into());
    }
    if !report.unmatched.is_empty() {
        notes.push(
            format!(
                "some health checks cannot be excluded: no matches for {}",
                report.unmatched.join(",")
            )
            .into(),
        );
    }
    if !notes.is_empty() {
        body.insert("notes".into(), Value::Array(notes));
    }
    body.insert("checks".into(), Value::Object(checks));
    Value::Object(body).to_string()
}
