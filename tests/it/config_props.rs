//! No config input can panic or freeze the engine: random and mutated TOML through parse,
//! validation and engine start (proptest, on the stable toolchain). Inputs that once broke
//! something are kept as plain regression tests at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use healthgate::{Config, Engine, Health};
use proptest::prelude::*;

/// Durations around every edge: zero, tiny, the 365-day maximum and past it, sums that
/// overflow, values humantime cannot hold, garbage.
fn duration() -> impl Strategy<Value = String> {
    prop_oneof![4 => ordinary_duration(), 1 => edge_duration()]
}

/// Values that pass validation in most places, so that many configs start — the longest
/// ones included: `800days` once passed validation and stopped the reducer at the first
/// outcome (with the range checks disabled, this test finds that again).
fn ordinary_duration() -> impl Strategy<Value = String> {
    const VALUES: [&str; 8] = [
        "50ms", "300ms", "1s", "2s", "30s", "5m", "365days", "800days",
    ];
    proptest::sample::select(&VALUES[..]).prop_map(str::to_owned)
}

fn edge_duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0s".to_owned()),
        Just("1ns".to_owned()),
        Just("1ms".to_owned()),
        Just("100ms".to_owned()),
        Just("1s".to_owned()),
        Just("30s".to_owned()),
        Just("365days".to_owned()),
        Just("366days".to_owned()),
        Just("800days".to_owned()),
        Just("1000years".to_owned()),
        Just("18446744073709551615s".to_owned()),
        Just("99999999999999999999999ns".to_owned()),
        Just("-1s".to_owned()),
        (0u64..u64::MAX).prop_map(|n| format!("{n}ms")),
        "[a-z0-9 ]{0,8}",
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![4 => (1u32..=5).prop_map(|n| n.to_string()), 1 => edge_number()]
}

fn edge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("1000".to_owned()),
        Just("1001".to_owned()),
        Just("-1".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("0.5".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("http://127.0.0.1:1/health".to_owned()),
        Just("https://u:p@127.0.0.1:1/x?t=1&raw".to_owned()),
        Just("http://127.0.0.1:1".to_owned()),
        Just("127.0.0.1:1".to_owned()),
        Just("${HEALTHGATE_PROPTEST_UNSET}".to_owned()),
        Just("${".to_owned()),
        "[ -~]{0,16}",
    ]
    .prop_map(|s| format!("{s:?}"))
}

/// One `key = value` line of a dependency.
fn dependency_line() -> impl Strategy<Value = String> {
    const DURATIONS: [&str; 7] = [
        "interval",
        "timeout",
        "stale_after",
        "degraded_after",
        "ttl",
        "failure_ttl",
        "max_failure_ttl",
    ];
    prop_oneof![
        (proptest::sample::select(&DURATIONS[..]), duration())
            .prop_map(|(k, v)| format!("{k} = {v:?}")),
        (
            proptest::sample::select(&["fall", "rise", "max_body_bytes"][..]),
            number()
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        (
            proptest::sample::select(&["url", "target", "address", "service"][..]),
            text()
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
        proptest::sample::select(
            &[
                "mode = \"on_demand\"",
                "mode = \"background\"",
                "mode = \"sometimes\"",
                "follow_redirects = true",
                "expected_statuses = [200, \"300-399\", 99, \"x\"]",
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

fn config() -> impl Strategy<Value = String> {
    // Mostly no jitter, so that valid configs probe at once and the reducer handles real
    // outcomes within the run below.
    let jitter = prop_oneof![3 => Just("0.0".to_owned()), 1 => edge_number()];
    let dependency = (
        proptest::sample::select(&["tcp", "http", "grpc", "push", ""][..]),
        proptest::collection::vec(dependency_line(), 0..4),
        jitter,
    );
    (
        proptest::collection::vec(dependency, 0..4),
        proptest::collection::vec(
            (
                proptest::sample::select(
                    &[
                        "server.drain_delay",
                        "server.drain_timeout",
                        "limits.first_request_timeout",
                        "limits.idle_timeout",
                    ][..],
                ),
                duration(),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                proptest::sample::select(
                    &["limits.max_connections", "limits.max_concurrent_streams"][..],
                ),
                number(),
            ),
            0..2,
        ),
    )
        .prop_map(|(deps, durations, numbers)| {
            // Each table once, each key once (first value wins): repeated keys would make
            // nearly every input a TOML error and none would reach the engine.
            let mut tables: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
            let quoted = durations.into_iter().map(|(k, v)| (k, format!("{v:?}")));
            for (key, value) in quoted.chain(numbers) {
                let (table, key) = key.split_once('.').expect("dotted");
                tables.entry(table).or_default().entry(key).or_insert(value);
            }
            let mut out = String::new();
            for (table, entries) in tables {
                out.push_str(&format!("[{table}]\n"));
                for (key, value) in entries {
                    out.push_str(&format!("{key} = {value}\n"));
                }
            }
            for (i, (kind, lines, jitter)) in deps.iter().enumerate() {
                // A valid target for the kind, so that many configs get past validation and
                // start; the random lines vary everything else.
                let target = match *kind {
                    "tcp" => "address = \"127.0.0.1:1\"",
                    "http" => "url = \"http://127.0.0.1:1/health\"",
                    "grpc" => "target = \"http://127.0.0.1:1\"",
                    _ => "",
                };
                out.push_str(&format!(
                    "[dependencies.d{i}]\nkind = {kind:?}\njitter = {jitter}\n{target}\n"
                ));
                let mut keys: Vec<&str> =
                    vec!["kind", "jitter", target.split(' ').next().unwrap_or("")];
                for line in lines {
                    let key = line.split(' ').next().unwrap_or("");
                    if !keys.contains(&key) {
                        keys.push(key);
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
            out
        })
}

/// Validates `text`; when valid, starts the engine, lets it take its first outcomes and checks
/// that it is still alive (not failed) and shuts down in time.
/// Returns how many dependencies had an outcome, so a strategy that never gets past
/// validation shows.
fn validate_and_run(text: &str) -> usize {
    let Ok(config) = Config::from_toml(text) else {
        return 0;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let Ok(handle) = Engine::from_config(&config).start() else {
            return 0;
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let outcomes = handle
            .snapshot()
            .dependencies
            .iter()
            .filter(|d| d.last_outcome.is_some())
            .count();
        assert!(
            tokio::time::timeout(Duration::from_millis(1), handle.failed())
                .await
                .is_err(),
            "the engine failed on:\n{text}"
        );
        tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
            .await
            .expect("shuts down in time");
        outcomes
    })
}

#[test]
fn random_configs_never_panic_or_freeze_the_engine() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1024,
        ..ProptestConfig::default()
    });
    // `run` takes an `Fn`: count through a cell.
    let outcomes = std::cell::Cell::new(0);
    runner
        .run(&config(), |text| {
            outcomes.set(outcomes.get() + validate_and_run(&text));
            Ok(())
        })
        .expect("no failing input");
    let outcomes = outcomes.get();
    eprintln!("random configs: {outcomes} dependencies reached an outcome");
    assert!(
        outcomes > 0,
        "no random config ever reached a probe outcome"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_toml_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12)
    ) {
        let mut bytes = SAMPLE.as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            match byte % 3 {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        validate_and_run(&String::from_utf8_lossy(&bytes));
    }
}

const SAMPLE: &str = r#"
[server]
drain_delay = "1s"
[limits]
max_connections = 64
idle_timeout = "30s"
[defaults]
interval = "1s"
timeout = "500ms"
[dependencies.db]
kind = "tcp"
address = "127.0.0.1:1"
stale_after = "10s"
[dependencies.cache]
kind = "tcp"
address = "127.0.0.1:1"
mode = "on_demand"
ttl = "5s"
failure_ttl = "1s"
max_failure_ttl = "10s"
[services.readiness]
dependencies = { db = "critical", cache = "degrading" }
"#;

// === regressions: inputs that once broke something ===

/// `stale_after` past about two years made the reducer panic at the first outcome (tokio's
/// `DelayQueue` limit), freezing health at NOT_SERVING; and on-demand `ttl` / `failure_ttl`
/// of hundreds of days overflowed. Validation now refuses them; the longest accepted values
/// run.
#[tokio::test]
async fn the_longest_durations_accepted_keep_the_engine_alive() {
    let db = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = db.local_addr().expect("bound");
    let config = Config::from_toml(&format!(
        "[dependencies.long]\nkind = \"tcp\"\naddress = \"{addr}\"\ninterval = \"1s\"\n\
         timeout = \"500ms\"\nstale_after = \"365days\"\njitter = 0.0\n\
         [dependencies.cached]\nkind = \"tcp\"\naddress = \"{addr}\"\nmode = \"on_demand\"\n\
         ttl = \"365days\"\nfailure_ttl = \"365days\"\nmax_failure_ttl = \"365days\"\n"
    ))
    .expect("a year is accepted");
    let handle = Engine::from_config(&config).start().expect("starts");
    crate::support::service_is(&handle, "", Health::Healthy).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1), handle.failed())
            .await
            .is_err()
    );
    for (text, key) in [
        ("stale_after = \"800days\"", "stale_after"),
        ("stale_after = \"99999999999999999999s\"", "stale_after"),
        ("interval = \"18446744073709551615s\"", "interval"),
    ] {
        let err = Config::from_toml(&format!(
            "[dependencies.x]\nkind = \"tcp\"\naddress = \"{addr}\"\n{text}\n"
        ))
        .expect_err("refused");
        assert!(
            err.to_string().contains(&format!("dependencies.x.{key}: ")),
            "{err}"
        );
    }
    handle.shutdown().await;
}

/// A default `stale_after` longer than the timer wheel holds (three periods of a year) is
/// waited out in steps: not Unknown after the first step, Unknown at the end.
#[tokio::test(start_paused = true)]
async fn a_default_stale_after_beyond_the_timer_limit_expires_on_time() {
    use healthgate::config::{MAX_DURATION, OnDemand};
    let switch = crate::support::Switch::new();
    let spec =
        healthgate::config::DependencySpec::custom(switch.clone(), "switch").on_demand(OnDemand {
            ttl: MAX_DURATION,
            failure_ttl: Duration::from_secs(1),
            max_failure_ttl: MAX_DURATION,
        });
    let stale_after = spec.stale_after;
    assert!(stale_after > 2 * MAX_DURATION, "{stale_after:?}");
    let handle = Engine::builder()
        .dependency("long", spec)
        .start()
        .expect("starts");
    // Watching does not touch on-demand dependencies: only the warm-up run happens.
    let mut overall = handle.watch_service("");
    overall
        .wait_for(|s| s.is_some_and(|s| s.health == Health::Healthy))
        .await
        .expect("healthy after warm-up");
    tokio::time::sleep(MAX_DURATION + Duration::from_secs(1)).await;
    assert_eq!(
        overall.borrow().map(|s| s.health),
        Some(Health::Healthy),
        "not stale after the first timer step"
    );
    tokio::time::timeout(
        stale_after,
        overall.wait_for(|s| s.is_some_and(|s| s.health == Health::Unknown)),
    )
    .await
    .expect("stale by stale_after")
    .expect("engine alive");
    assert!(
        tokio::time::timeout(Duration::from_millis(1), handle.failed())
            .await
            .is_err()
    );
    handle.shutdown().await;
}
