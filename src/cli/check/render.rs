//! The `--detail` output: a table for people, and the JSON object scripts rely on (DESIGN §8:
//! `generation`, `services`, `dependencies`), from one `DetailResponse`.

use std::time::{Duration, UNIX_EPOCH};

use healthgate::grpc::pb::detail::{DetailResponse, Health as PbHealth};
use healthgate::grpc::pb::health::health_check_response::ServingStatus;
use serde_json::json;

fn health_name(h: i32) -> &'static str {
    match PbHealth::try_from(h) {
        Ok(PbHealth::Healthy) => "healthy",
        Ok(PbHealth::Degraded) => "degraded",
        Ok(PbHealth::Unhealthy) => "unhealthy",
        _ => "unknown",
    }
}

fn status_name(s: i32) -> &'static str {
    ServingStatus::try_from(s).map_or("UNKNOWN", |s| s.as_str_name())
}

fn rfc3339(t: &prost_types::Timestamp) -> String {
    let at = UNIX_EPOCH
        + Duration::new(
            u64::try_from(t.seconds).unwrap_or(0),
            u32::try_from(t.nanos).unwrap_or(0),
        );
    humantime::format_rfc3339_millis(at).to_string()
}

fn latency_ms(d: &prost_types::Duration) -> f64 {
    d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
}

/// The `--detail --json` object (DESIGN.md §8).
pub(super) fn detail_json(r: &DetailResponse) -> serde_json::Value {
    let services: Vec<_> = r
        .services
        .iter()
        .map(|s| json!({ "name": s.name, "health": health_name(s.health), "serving_status": status_name(s.serving_status), "deciding": s.deciding }))
        .collect();
    let dependencies: Vec<_> = r
        .dependencies
        .iter()
        .map(|d| {
            let outcome = d.last_outcome.as_ref();
            json!({
                "name": d.name,
                "kind": d.kind,
                "target": d.target,
                "health": health_name(d.health),
                "latency_ms": outcome.and_then(|o| o.latency.as_ref()).map(latency_ms),
                "reason": outcome.map(|o| o.reason.as_str()).filter(|r| !r.is_empty()),
                "checked_at": outcome.and_then(|o| o.finished_at.as_ref()).map(rfc3339),
                "consecutive_successes": d.consecutive_successes,
                "consecutive_failures": d.consecutive_failures,
            })
        })
        .collect();
    json!({ "generation": r.generation, "shutting_down": r.shutting_down, "services": services, "dependencies": dependencies })
}

pub(super) fn detail_table(r: &DetailResponse) -> String {
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "HEALTH".into(),
        "STATUS".into(),
        "DECIDED BY".into(),
    ]];
    for s in &r.services {
        rows.push([
            format!("{:?}", s.name),
            health_name(s.health).into(),
            status_name(s.serving_status).into(),
            s.deciding.join(", "),
        ]);
    }
    let mut out = table(&rows);
    out.push('\n');
    let mut rows = vec![[
        "DEPENDENCY".to_owned(),
        "KIND".into(),
        "HEALTH".into(),
        "LATENCY".into(),
        "REASON".into(),
        "TARGET".into(),
    ]];
    for d in &r.dependencies {
        let outcome = d.last_outcome.as_ref();
        let latency = outcome
            .and_then(|o| o.latency.as_ref())
            .map(|l| format!("{:.1}ms", latency_ms(l)))
            .unwrap_or_else(|| "-".into());
        let reason = outcome
            .map(|o| o.reason.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "-".into());
        rows.push([
            d.name.clone(),
            d.kind.clone(),
            health_name(d.health).into(),
            latency,
            reason,
            d.target.clone(),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// Left-aligned columns separated by two spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use healthgate::grpc::pb::detail::{DependencyDetail, Outcome, ServiceDetail};

    use super::*;

    fn response() -> DetailResponse {
        DetailResponse {
            generation: 7,
            shutting_down: false,
            config: None,
            services: vec![ServiceDetail {
                name: String::new(),
                health: PbHealth::Unhealthy as i32,
                serving_status: ServingStatus::NotServing as i32,
                deciding: vec!["db".into()],
                ..ServiceDetail::default()
            }],
            dependencies: vec![DependencyDetail {
                name: "db".into(),
                kind: "tcp".into(),
                target: "${DB}".into(),
                health: PbHealth::Unhealthy as i32,
                last_outcome: Some(Outcome {
                    reason: "connection refused".into(),
                    latency: Some(prost_types::Duration {
                        seconds: 0,
                        nanos: 1_500_000,
                    }),
                    finished_at: Some(prost_types::Timestamp {
                        seconds: 1_800_000_000,
                        nanos: 0,
                    }),
                    ..Outcome::default()
                }),
                consecutive_failures: 3,
                ..DependencyDetail::default()
            }],
        }
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = detail_json(&response());
        assert_eq!(v["generation"], 7);
        assert_eq!(v["services"][0]["name"], "");
        assert_eq!(v["services"][0]["health"], "unhealthy");
        assert_eq!(v["services"][0]["serving_status"], "NOT_SERVING");
        assert_eq!(v["services"][0]["deciding"][0], "db");
        let d = &v["dependencies"][0];
        assert_eq!(d["target"], "${DB}");
        assert_eq!(d["latency_ms"], 1.5);
        assert_eq!(d["reason"], "connection refused");
        assert_eq!(d["checked_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(d["consecutive_failures"], 3);
    }

    #[test]
    fn the_table_aligns_columns_and_marks_missing_values() {
        let mut r = response();
        r.dependencies.push(DependencyDetail {
            name: "cache-long-name".into(),
            kind: "http".into(),
            target: "http://c/".into(),
            ..DependencyDetail::default()
        });
        assert_eq!(
            detail_table(&r),
            "SERVICE  HEALTH     STATUS       DECIDED BY\n\
             \"\"       unhealthy  NOT_SERVING  db\n\
             \n\
             DEPENDENCY       KIND  HEALTH     LATENCY  REASON              TARGET\n\
             db               tcp   unhealthy  1.5ms    connection refused  ${DB}\n\
             cache-long-name  http  unknown    -        -                   http://c/\n"
        );
    }
}
