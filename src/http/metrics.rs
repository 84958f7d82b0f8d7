//! `GET /metrics`: the registry in the OpenMetrics text format to clients that accept it
//! (Prometheus asks for it), the classic Prometheus text format to everyone else.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::metrics::Metrics;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`encode_classic`]'s output.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A router serving `GET /metrics` from `metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let metrics = metrics.clone();
            async move {
                let open_metrics = headers
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                if open_metrics {
                    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
                } else {
                    let classic = encode_classic(&metrics);
                    ([(header::CONTENT_TYPE, CLASSIC_CONTENT_TYPE)], classic)
                }
            }
        }),
    )
}

/// The metrics in the classic Prometheus text format (0.0.4, [`CLASSIC_CONTENT_TYPE`]), for
/// scrapers and tools that do not speak OpenMetrics (`promtool check metrics`, curl).
///
/// The two differ here only in that OpenMetrics names a counter family without `_total`
/// (its samples carry it) and has `# UNIT` and `# EOF` lines.
pub fn encode_classic(metrics: &Metrics) -> String {
    classic(&metrics.encode())
}

fn classic(open: &str) -> String {
    let counters: BTreeSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| Some((*p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                out.push_str(&format!("{prefix}{name} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_format_names_counter_families_with_total_and_drops_openmetrics_lines() {
        let open = "# HELP healthgate_grpc_requests gRPC requests.\n\
                    # TYPE healthgate_grpc_requests counter\n\
                    healthgate_grpc_requests_total{code=\"OK\"} 1\n\
                    # HELP healthgate_probe_duration_seconds Probe run duration.\n\
                    # TYPE healthgate_probe_duration_seconds histogram\n\
                    # UNIT healthgate_probe_duration_seconds seconds\n\
                    # EOF\n";
        let classic = classic(open);
        assert!(
            classic.contains("# HELP healthgate_grpc_requests_total gRPC requests."),
            "{classic}"
        );
        assert!(classic.contains("# TYPE healthgate_grpc_requests_total counter"));
        assert!(classic.contains("healthgate_grpc_requests_total{code=\"OK\"} 1"));
        assert!(classic.contains("# TYPE healthgate_probe_duration_seconds histogram"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        assert!(Metrics::new().encode().ends_with("# EOF\n"));
    }
}
