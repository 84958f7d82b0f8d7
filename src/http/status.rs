//! The status page: `GET /` (complete HTML, readable without JavaScript), `/status.json` (the
//! same view as data, which the page polls to update itself without a reload), and the page's
//! own script and style at `/status.js` and `/status.css` — no external assets, so it works
//! air-gapped, and a strict `Content-Security-Policy` (`default-src 'none'`, script and style
//! only from these files, no inline code, no frames).
//!
//! Services first, then dependencies, worst first (Unhealthy, Unknown, Degraded, Healthy), then
//! by name, so 1,000 dependencies read from the top. Every string from config or from a
//! dependency is escaped in the HTML and set as text by the script. Reasons and targets
//! (hostnames, configured strings) appear only to callers that pass the detail auth.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use crate::Health;
use crate::snapshot::{DependencyState, History, Override, ServiceState, Snapshot};

/// The page's script.
pub(crate) const SCRIPT: &str = include_str!("status/page.js");

/// The page's style sheet.
pub(crate) const STYLE: &str = include_str!("status/page.css");

/// The policy sent with the page: nothing but this origin's script, style and JSON.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                              connect-src 'self'; img-src 'self'; base-uri 'none'; \
                              form-action 'none'; frame-ancestors 'none'";

/// How often the page asks for `/status.json`, in milliseconds.
pub(crate) const POLL_MS: u64 = 2_000;

/// Worst first: the order of rows.
fn rank(h: Health) -> u8 {
    match h {
        Health::Unhealthy => 0,
        Health::Unknown => 1,
        Health::Degraded => 2,
        Health::Healthy => 3,
    }
}

fn services(snapshot: &Snapshot) -> Vec<&ServiceState> {
    let mut out: Vec<&ServiceState> = snapshot.services.iter().map(|s| &**s).collect();
    out.sort_by(|a, b| (rank(a.status.health), &a.name).cmp(&(rank(b.status.health), &b.name)));
    out
}

fn dependencies(snapshot: &Snapshot) -> Vec<&DependencyState> {
    let mut out: Vec<&DependencyState> = snapshot.dependencies.iter().map(|d| &**d).collect();
    out.sort_by(|a, b| (rank(a.health), &a.name).cmp(&(rank(b.health), &b.name)));
    out
}

fn millis(t: SystemTime) -> u64 {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Latencies of the history in tenths of a millisecond, oldest first (the sparkline).
fn latencies(history: &History) -> Vec<u64> {
    history
        .outcomes()
        .map(|o| u64::try_from(o.latency().as_micros() / 100).unwrap_or(u64::MAX))
        .collect()
}

fn reason(d: &DependencyState) -> Option<std::borrow::Cow<'_, str>> {
    d.reason()
}

/// `orders → gateway` while a parent's failure is this one's root cause.
fn chain(d: &DependencyState) -> Option<String> {
    let caused_by = d.caused_by.as_deref()?;
    let mut names: Vec<&str> = vec![&d.name];
    names.extend(caused_by.iter().map(|n| &**n));
    Some(names.join(" → "))
}

/// How many of the latest transitions the page shows (and `/status.json` carries).
pub(crate) const SHOWN_TRANSITIONS: usize = 5;

#[derive(Serialize)]
struct PageJson<'a> {
    generation: u64,
    shutting_down: bool,
    reasons: bool,
    poll_ms: u64,
    services: Vec<ServiceJson<'a>>,
    dependencies: Vec<DependencyJson<'a>>,
}

#[derive(Serialize)]
struct ServiceJson<'a> {
    name: &'a str,
    health: &'static str,
    serving: bool,
    deciding: Vec<&'a str>,
    /// `[dependency, impact]` pairs.
    dependencies: Vec<(&'a str, &'static str)>,
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    forced: Option<OverrideJson<'a>>,
}

#[derive(Serialize)]
struct OverrideJson<'a> {
    health: &'static str,
    since: u64,
    until: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> OverrideJson<'a> {
    fn new(o: &'a Override, authorized: bool) -> OverrideJson<'a> {
        OverrideJson {
            health: o.health.as_str(),
            since: millis(o.since),
            until: millis(o.until),
            reason: authorized.then_some(o.reason.as_str()),
        }
    }
}

#[derive(Serialize)]
struct DependencyJson<'a> {
    name: &'a str,
    kind: &'static str,
    health: &'static str,
    latency_ms: Option<f64>,
    checked_at: Option<u64>,
    since: Option<u64>,
    /// Tenths of a millisecond, oldest first.
    latencies: Vec<u64>,
    /// Latest first, at most [`SHOWN_TRANSITIONS`].
    transitions: Vec<TransitionJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<std::borrow::Cow<'a, str>>,
    /// `orders → gateway` while a parent's failure is the root cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<String>,
    /// TLS dependencies: the peer certificate's `notAfter`, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_expires: Option<u64>,
    /// The health from probes alone (differs from `health` under an override).
    computed: &'static str,
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    forced: Option<OverrideJson<'a>>,
}

#[derive(Serialize)]
struct TransitionJson<'a> {
    at: u64,
    from: &'static str,
    to: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The page's data: `/status.json`. Serialized from borrowed structs, no intermediate tree:
/// 1,000 dependencies with full histories are about 1 MB (see `examples/status_json.rs`).
pub(crate) fn json(snapshot: &Snapshot, authorized: bool) -> String {
    let services = services(snapshot)
        .into_iter()
        .map(|s| ServiceJson {
            name: &s.name,
            health: s.status.health.as_str(),
            serving: s.status.serving,
            deciding: s.deciding.iter().map(|d| &**d).collect(),
            dependencies: s.inputs.iter().map(|(d, i)| (&**d, i.as_str())).collect(),
            forced: s
                .forced
                .as_deref()
                .map(|o| OverrideJson::new(o, authorized)),
        })
        .collect();
    let dependencies = dependencies(snapshot)
        .into_iter()
        .map(|d| DependencyJson {
            name: &d.name,
            kind: d.kind,
            health: d.health.as_str(),
            latency_ms: d
                .last_outcome
                .as_ref()
                .map(|o| (o.latency.as_micros() as f64 / 100.0).round() / 10.0),
            checked_at: d.last_outcome.as_ref().map(|o| millis(o.finished_at)),
            since: d.since().map(millis),
            latencies: latencies(&d.history),
            transitions: d
                .history
                .transitions()
                .rev()
                .take(SHOWN_TRANSITIONS)
                .map(|t| TransitionJson {
                    at: millis(t.at()),
                    from: t.from().as_str(),
                    to: t.to().as_str(),
                    reason: t.reason().filter(|_| authorized).map(|r| r.as_str()),
                })
                .collect(),
            target: authorized.then_some(&*d.target),
            reason: reason(d).filter(|_| authorized),
            chain: chain(d),
            certificate_expires: d.certificate_expires.map(millis),
            computed: d.computed.as_str(),
            forced: d
                .forced
                .as_deref()
                .map(|o| OverrideJson::new(o, authorized)),
        })
        .collect();
    let page = PageJson {
        generation: snapshot.generation,
        shutting_down: snapshot.shutting_down,
        reasons: authorized,
        poll_ms: POLL_MS,
        services,
        dependencies,
    };
    serde_json::to_string(&page).unwrap_or_else(|_| "{}".to_owned())
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "\"\" (server)"
    } else {
        name
    }
}

/// A time as the server renders it: absolute (UTC, seconds), so a rendered page stays true
/// while it is cached for a generation; the script shows "… ago" instead.
fn at(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// ` override until T` (with the operator's reason for callers who may see reasons), or
/// nothing.
fn forced_note(o: Option<&Override>, authorized: bool) -> String {
    let Some(o) = o else {
        return String::new();
    };
    let reason = if authorized {
        format!(": {}", escape(o.reason.as_str()))
    } else {
        String::new()
    };
    format!(
        " <small class=\"override\">override until {}{reason}</small>",
        at(Some(o.until))
    )
}

/// An SVG polyline of the latencies (the same drawing the script makes).
fn sparkline(history: &History) -> String {
    let values = latencies(history);
    if values.len() < 2 {
        return String::new();
    }
    let max = values.iter().copied().max().unwrap_or(1).max(1) as f64;
    let step = 120.0 / (values.len() - 1) as f64;
    let mut points = String::new();
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            points,
            "{:.1},{:.1} ",
            i as f64 * step,
            20.0 - (*v as f64 / max) * 18.0
        );
    }
    format!(
        "<svg class=\"spark\" width=\"120\" height=\"20\" viewBox=\"0 0 120 20\" aria-hidden=\"true\">\
         <polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1\" points=\"{}\"/></svg>",
        points.trim_end()
    )
}

/// The page, completely rendered.
pub(crate) fn html(snapshot: &Snapshot, authorized: bool) -> String {
    let mut out = String::with_capacity(4_096 + 512 * snapshot.dependencies.len());
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>healthgate status</title><link rel=\"stylesheet\" href=\"/status.css\">\
         <script src=\"/status.js\" defer></script></head><body>\n",
    );
    let overall = snapshot
        .service("")
        .map_or(Health::Unknown, |s| s.status.health);
    let _ = writeln!(
        out,
        "<header><h1>healthgate</h1><p id=\"overall\" class=\"h-{h}\">{h}{drain}</p>\
         <p class=\"meta\">generation <span id=\"generation\">{g}</span> · \
         <span id=\"updated\">rendered by the server</span></p></header>",
        h = overall.as_str(),
        g = snapshot.generation,
        drain = if snapshot.shutting_down {
            " · draining"
        } else {
            ""
        },
    );
    out.push_str(
        "<section><h2>Services</h2><table id=\"services\"><thead><tr><th>service</th>\
         <th>health</th><th>serving</th><th>decided by</th><th>dependencies</th></tr></thead><tbody>\n",
    );
    for s in services(snapshot) {
        let deps: Vec<String> = s
            .inputs
            .iter()
            .map(|(d, i)| format!("{} ({})", escape(d), i.as_str()))
            .collect();
        let deciding: Vec<String> = s.deciding.iter().map(|d| escape(d)).collect();
        let _ = writeln!(
            out,
            "<tr class=\"h-{h}\" data-name=\"{n}\"><td>{n}</td><td>{h}{forced}</td><td>{serving}</td>\
             <td>{deciding}</td><td>{deps}</td></tr>",
            h = s.status.health.as_str(),
            forced = forced_note(s.forced.as_deref(), authorized),
            n = escape(display_name(&s.name)),
            serving = if s.status.serving {
                "SERVING"
            } else {
                "NOT_SERVING"
            },
            deciding = deciding.join(", "),
            deps = deps.join(", "),
        );
    }
    out.push_str("</tbody></table></section>\n");
    out.push_str(
        "<section><h2>Dependencies</h2><table id=\"dependencies\"><thead><tr><th>dependency</th>\
         <th>health</th><th>latency</th><th>reason</th><th>since</th><th>last transitions</th>\
         <th>latency, last outcomes</th></tr></thead><tbody>\n",
    );
    for d in dependencies(snapshot) {
        let latency = d.last_outcome.as_ref().map_or("—".to_owned(), |o| {
            format!("{:.1} ms", o.latency.as_secs_f64() * 1e3)
        });
        let reason = if authorized {
            escape(reason(d).as_deref().unwrap_or(""))
        } else if d.health == Health::Healthy {
            String::new()
        } else {
            "reason withheld".to_owned()
        };
        let transitions: Vec<String> = d
            .history
            .transitions()
            .rev()
            .take(SHOWN_TRANSITIONS)
            .map(|t| {
                format!(
                    "{} → {} {}",
                    t.from().as_str(),
                    t.to().as_str(),
                    at(Some(t.at()))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr class=\"h-{h}\" data-name=\"{n}\"><td>{n} <small>{kind}</small>{chain}</td><td>{h}{forced}</td>\
             <td>{latency}</td><td>{reason}</td><td>{since}</td><td>{transitions}</td><td>{spark}</td></tr>",
            h = d.health.as_str(),
            forced = forced_note(d.forced.as_deref(), authorized),
            n = escape(&d.name),
            kind = d.kind,
            chain = chain(d).map_or(String::new(), |c| {
                format!(" <small class=\"chain\">{}</small>", escape(&c))
            }) + &d.certificate_expires.map_or(String::new(), |t| {
                format!(
                    " <small class=\"cert\">certificate until {}</small>",
                    at(Some(t))
                )
            }),
            since = at(d.since()),
            transitions = transitions.join("<br>"),
            spark = sparkline(&d.history),
        );
    }
    out.push_str("</tbody></table></section>\n</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape("<img src=x onerror=\"alert('1')\">&"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }

    #[test]
    fn the_policy_allows_no_inline_code_and_no_other_origin() {
        assert!(CSP.starts_with("default-src 'none'"));
        assert!(!CSP.contains("unsafe"));
        assert!(!CSP.contains("http"));
    }
}
