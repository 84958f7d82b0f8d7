//! Benchmark helper: how long the status page's JSON (`/status.json`) and HTML (`/`) take to
//! produce for N dependencies with full histories (120 outcomes, 20 transitions each). Prints
//! one `key=value` line: medians and maxima over 200 renderings, and the JSON's size.
//! Usage: `status_json [N]` (default 1000).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use healthgate::config::ServiceSpec;
use healthgate::snapshot::{
    DependencyState, History, ServiceHealth, ServiceState, Snapshot, Thresholds,
};
use healthgate::{Health, Impact, Outcome, Reason, Verdict};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let now = SystemTime::now();
    let mut dependencies: Vec<Arc<DependencyState>> = (0..n)
        .map(|i| {
            let mut history = History::default();
            for k in 0..120u64 {
                history.record_outcome(&Outcome {
                    verdict: Verdict::Healthy,
                    latency: Duration::from_micros(900 + (k * 37 + i as u64) % 2_000),
                    finished_at: now - Duration::from_secs(120 - k),
                });
            }
            for k in 0..20u64 {
                let (from, to) = if k % 2 == 0 {
                    (Health::Healthy, Health::Unhealthy)
                } else {
                    (Health::Unhealthy, Health::Healthy)
                };
                let reason = (to != Health::Healthy).then(|| Reason::new("HTTP 503"));
                history.record_transition(now - Duration::from_secs(600 - k), from, to, reason);
            }
            let health = if i % 10 == 0 {
                Health::Unhealthy
            } else {
                Health::Healthy
            };
            Arc::new(DependencyState {
                name: Arc::from(format!("dependency-{i:04}")),
                kind: "http",
                target: Arc::from(format!("http://10.0.{}.{}:8080/health", i / 256, i % 256)),
                health,
                computed: health,
                forced: None,
                last_outcome: Some(Outcome {
                    verdict: if health == Health::Healthy {
                        Verdict::Healthy
                    } else {
                        Verdict::unhealthy("HTTP 503")
                    },
                    latency: Duration::from_micros(1_234),
                    finished_at: now,
                }),
                consecutive_successes: 3,
                consecutive_failures: 0,
                last_success: Some(now),
                last_failure: None,
                reported_at: None,
                thresholds: Thresholds {
                    mode: "background",
                    period: Duration::from_secs(1),
                    timeout: Duration::from_millis(500),
                    fall: 3,
                    rise: 2,
                    degraded_after: None,
                    stale_after: Duration::from_secs(4),
                },
                history: Arc::new(history),
                parents: Arc::from([]),
                caused_by: None,
                certificate_expires: None,
            })
        })
        .collect();
    dependencies.sort_by(|a, b| a.name.cmp(&b.name));
    let spec = ServiceSpec::with_all(
        dependencies.iter().map(|d| d.name.to_string()),
        Impact::Critical,
    );
    let service = Arc::new(ServiceState {
        name: Arc::from(""),
        status: ServiceHealth::new(Health::Unhealthy, spec.degraded, false),
        degraded: spec.degraded,
        deciding: Vec::new(),
        inputs: spec
            .dependencies
            .iter()
            .map(|(d, i)| (Arc::from(d.as_str()), *i))
            .collect(),
        spec: Arc::new(spec),
        forced: None,
    });
    let snapshot = Snapshot {
        generation: 1,
        services: vec![service],
        dependencies,
        ..Snapshot::default()
    };
    let time = |f: &dyn Fn() -> usize| {
        let mut samples: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(f());
                started.elapsed()
            })
            .collect();
        samples.sort();
        (samples[100], samples[199])
    };
    let bytes = healthgate::http::bench::status_json(&snapshot, true).len();
    let (json_p50, json_max) =
        time(&|| healthgate::http::bench::status_json(&snapshot, true).len());
    let (html_p50, html_max) =
        time(&|| healthgate::http::bench::status_html(&snapshot, true).len());
    println!(
        "deps={n} json_ms_p50={:.2} json_ms_max={:.2} json_bytes={bytes} html_ms_p50={:.2} html_ms_max={:.2}",
        json_p50.as_secs_f64() * 1e3,
        json_max.as_secs_f64() * 1e3,
        html_p50.as_secs_f64() * 1e3,
        html_max.as_secs_f64() * 1e3,
    );
}
