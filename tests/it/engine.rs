//! Engine behaviour on a paused clock with scripted in-process probes: thresholds, staleness,
//! scheduling, on-demand single flight and backoff, runtime changes, shutdown.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use healthgate::config::{DegradedPolicy, DependencySpec, OnDemand, ServiceSpec};
use healthgate::engine::ChangeError;
use healthgate::probe::{Probe, ProbeContext, ProbeFuture};
use healthgate::snapshot::ServiceHealth;
use healthgate::{Engine, Handle, Health, Impact, Verdict};
use tokio::time::Instant;

use crate::support::state_where;

/// A probe the test scripts: its verdict, a delay, a hang or a panic; it records each run.
#[derive(Debug)]
struct Scripted {
    verdict: Mutex<Verdict>,
    delay: Mutex<Duration>,
    hang: AtomicBool,
    panic: AtomicBool,
    runs: Mutex<Vec<Instant>>,
}

impl Scripted {
    fn new(verdict: Verdict) -> Arc<Scripted> {
        Arc::new(Scripted {
            verdict: Mutex::new(verdict),
            delay: Mutex::new(Duration::ZERO),
            hang: AtomicBool::new(false),
            panic: AtomicBool::new(false),
            runs: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, verdict: Verdict) {
        *self.verdict.lock().expect("not poisoned") = verdict;
    }

    fn runs(&self) -> Vec<Instant> {
        self.runs.lock().expect("not poisoned").clone()
    }
}

impl Probe for Scripted {
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async move {
            self.runs.lock().expect("not poisoned").push(Instant::now());
            let delay = *self.delay.lock().expect("not poisoned");
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if self.panic.load(Ordering::SeqCst) {
                panic!("scripted panic");
            }
            self.verdict.lock().expect("not poisoned").clone()
        })
    }
}

const SECOND: Duration = Duration::from_secs(1);

fn every_second(probe: &Arc<Scripted>) -> DependencySpec {
    DependencySpec::custom(probe.clone(), "scripted")
        .every(SECOND, 0.0)
        .with_timeout(Duration::from_millis(500))
}

fn start_one(spec: DependencySpec) -> Handle {
    Engine::builder()
        .dependency("dep", spec)
        .start()
        .expect("engine starts")
}

#[tokio::test(start_paused = true)]
async fn fall_and_rise_thresholds_damp_flapping() {
    let probe = Scripted::new(Verdict::Healthy);
    let handle = start_one(every_second(&probe).with_thresholds(3, 2));
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;

    probe.set(Verdict::unhealthy("down"));
    let d = state_where(&handle, "dep", |d| d.consecutive_failures == 2).await;
    assert_eq!(
        d.health,
        Health::Healthy,
        "two failures are not enough with fall = 3"
    );
    let d = state_where(&handle, "dep", |d| d.consecutive_failures == 3).await;
    assert_eq!(d.health, Health::Unhealthy);
    assert_eq!(
        d.last_outcome
            .expect("ran")
            .verdict
            .reason()
            .map(|r| r.as_str().to_owned()),
        Some("down".into())
    );

    probe.set(Verdict::Healthy);
    let d = state_where(&handle, "dep", |d| d.consecutive_successes == 1).await;
    assert_eq!(
        d.health,
        Health::Unhealthy,
        "one success is not enough with rise = 2"
    );
    let d = state_where(&handle, "dep", |d| d.consecutive_successes == 2).await;
    assert_eq!(d.health, Health::Healthy);
    assert!(d.last_success.is_some() && d.last_failure.is_some());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn first_outcome_applies_at_once_and_services_follow() {
    let probe = Scripted::new(Verdict::unhealthy("refused"));
    let handle = start_one(every_second(&probe));
    let overall = handle
        .snapshot()
        .service("")
        .expect("default overall service")
        .status;
    assert_eq!(
        overall.health,
        Health::Unknown,
        "nothing known before the first outcome"
    );
    assert!(!overall.serving);
    let d = state_where(&handle, "dep", |d| d.last_outcome.is_some()).await;
    assert_eq!(
        d.health,
        Health::Unhealthy,
        "the first outcome applies without waiting for fall"
    );
    let snapshot = handle.snapshot();
    let overall = snapshot.service("").expect("overall");
    assert_eq!(overall.status.health, Health::Unhealthy);
    assert_eq!(
        overall.deciding.iter().map(|d| &**d).collect::<Vec<_>>(),
        ["dep"]
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn scheduling_spreads_the_first_run_and_keeps_the_interval_within_jitter() {
    let probe = Scripted::new(Verdict::Healthy);
    let start = Instant::now();
    let spec =
        DependencySpec::custom(probe.clone(), "scripted").every(Duration::from_secs(10), 0.1);
    let handle = start_one(spec);
    state_where(&handle, "dep", |d| d.consecutive_successes == 6).await;
    let runs = probe.runs();
    assert!(
        runs[0] - start <= SECOND,
        "first run within 10% of the interval: {:?}",
        runs[0] - start
    );
    for pair in runs.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (Duration::from_secs(9)..=Duration::from_secs(11)).contains(&gap),
            "gap {gap:?}"
        );
    }
    let gaps: Vec<_> = runs.windows(2).map(|p| p[1] - p[0]).collect();
    assert!(
        gaps.windows(2).any(|g| g[0] != g[1]),
        "jitter varies the gaps: {gaps:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn hung_probe_times_out_and_panicking_probe_keeps_running() {
    let hung = Scripted::new(Verdict::Healthy);
    hung.hang.store(true, Ordering::SeqCst);
    let crashing = Scripted::new(Verdict::Healthy);
    crashing.panic.store(true, Ordering::SeqCst);
    let handle = Engine::builder()
        .dependency("hung", every_second(&hung))
        .dependency("crashing", every_second(&crashing))
        .start()
        .expect("starts");
    let d = state_where(&handle, "hung", |d| d.consecutive_failures == 2).await;
    let outcome = d.last_outcome.expect("ran");
    assert_eq!(outcome.verdict, Verdict::unhealthy("timed out after 500ms"));
    assert_eq!(outcome.latency, Duration::from_millis(500));
    let d = state_where(&handle, "crashing", |d| d.consecutive_failures == 3).await;
    assert_eq!(
        d.last_outcome.expect("ran").verdict,
        Verdict::unhealthy("probe panicked")
    );
    assert_eq!(crashing.runs().len(), 3, "the task survived each panic");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn slow_success_is_degraded() {
    let probe = Scripted::new(Verdict::Healthy);
    *probe.delay.lock().expect("not poisoned") = Duration::from_millis(300);
    let mut spec = every_second(&probe);
    spec.degraded_after = Some(Duration::from_millis(200));
    let handle = start_one(spec);
    let d = state_where(&handle, "dep", |d| d.last_outcome.is_some()).await;
    assert_eq!(d.health, Health::Degraded);
    assert_eq!(
        d.last_outcome.expect("ran").verdict,
        Verdict::degraded("slow: 300ms (degraded after 200ms)")
    );
    handle.shutdown().await;
}

fn on_demand(
    probe: &Arc<Scripted>,
    ttl: Duration,
    failure_ttl: Duration,
    max_failure_ttl: Duration,
) -> DependencySpec {
    DependencySpec::custom(probe.clone(), "scripted")
        .with_timeout(Duration::from_millis(500))
        .on_demand(OnDemand {
            ttl,
            failure_ttl,
            max_failure_ttl,
        })
}

#[tokio::test(start_paused = true)]
async fn on_demand_refresh_is_single_flight_for_a_thousand_readers() {
    let probe = Scripted::new(Verdict::Healthy);
    *probe.delay.lock().expect("not poisoned") = Duration::from_millis(100);
    let handle = start_one(on_demand(
        &probe,
        Duration::from_secs(10),
        SECOND,
        Duration::from_secs(30),
    ));
    state_where(&handle, "dep", |d| d.last_outcome.is_some()).await;
    assert_eq!(probe.runs().len(), 1, "one warm-up run at start");

    // Fresh cache: readers trigger nothing.
    for _ in 0..100 {
        handle.wake_on_demand();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.runs().len(), 1, "no background probing while fresh");

    tokio::time::sleep(Duration::from_secs(6)).await;
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle.wake_on_demand();
                handle.snapshot().generation
            })
        })
        .collect();
    for r in readers {
        r.await.expect("reader finished");
    }
    // More readers while that refresh is in flight (the probe takes 100 ms).
    for _ in 0..50 {
        handle.wake_on_demand();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    state_where(&handle, "dep", |d| d.consecutive_successes == 2).await;
    // More readers while the new result is fresh: still nothing.
    for _ in 0..1000 {
        handle.wake_on_demand();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        probe.runs().len(),
        2,
        "1,000 concurrent readers of an expired cache caused one probe"
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn on_demand_failures_back_off_exponentially() {
    let probe = Scripted::new(Verdict::unhealthy("down"));
    let handle = start_one(on_demand(
        &probe,
        Duration::from_secs(10),
        SECOND,
        Duration::from_secs(8),
    ));
    state_where(&handle, "dep", |d| d.last_outcome.is_some()).await;
    // A reader every 100 ms for 40 s: without backoff that would be a probe per second.
    for _ in 0..400 {
        handle.wake_on_demand();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = probe.runs();
    let gaps: Vec<u64> = runs
        .windows(2)
        .map(|p| (p[1] - p[0]).as_millis() as u64)
        .collect();
    let expected = [1000, 2000, 4000, 8000, 8000];
    assert!(gaps.len() >= expected.len(), "{gaps:?}");
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(
            (want..=want + 100).contains(gap),
            "gaps {gaps:?}, expected about {expected:?}"
        );
    }
    assert!(runs.len() <= 8, "{} runs in 40 s", runs.len());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dependency_without_fresh_outcomes_becomes_unknown() {
    // On-demand and never read: the warm-up outcome ages until stale_after.
    let probe = Scripted::new(Verdict::Healthy);
    let mut spec = on_demand(&probe, SECOND, SECOND, SECOND);
    spec.stale_after = Duration::from_secs(5);
    let handle = start_one(spec);
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;
    let started = Instant::now();
    let mut rx = handle.subscribe(); // subscribing does not refresh on-demand dependencies
    rx.wait_for(|s| {
        s.dependency("dep")
            .is_some_and(|d| d.health == Health::Unknown)
    })
    .await
    .expect("alive");
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(4)..=Duration::from_secs(6)).contains(&waited),
        "stale after {waited:?}"
    );
    assert_eq!(
        handle
            .snapshot()
            .service("")
            .expect("overall")
            .status
            .health,
        Health::Unknown
    );
    // Reading snapshots is pure: it probes nothing.
    let runs = probe.runs().len();
    for _ in 0..100 {
        handle.snapshot();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        probe.runs().len(),
        runs,
        "snapshot() woke an on-demand dependency"
    );
    // Asked explicitly, the dependency probes, and the new outcome applies at once.
    handle.wake_on_demand();
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn service_watch_fires_only_on_change() {
    let probe = Scripted::new(Verdict::Healthy);
    let handle = start_one(every_second(&probe));
    let mut rx = handle.watch_service("");
    rx.wait_for(|s| s.is_some_and(|s| s.health == Health::Healthy))
        .await
        .expect("alive");
    rx.borrow_and_update();
    // Ten more healthy rounds publish snapshots but change nothing for the service.
    state_where(&handle, "dep", |d| d.consecutive_successes >= 11).await;
    assert!(
        !rx.has_changed().expect("alive"),
        "no notification without a change"
    );
    probe.set(Verdict::degraded("429"));
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("told in time")
        .expect("alive");
    assert_eq!(
        *rx.borrow(),
        Some(ServiceHealth {
            health: Health::Degraded,
            serving: true
        })
    );
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn runtime_changes_apply_at_once_and_rejected_ones_change_nothing() {
    let db = Scripted::new(Verdict::Healthy);
    let handle = Engine::builder()
        .service("liveness", ServiceSpec::default())
        .start()
        .expect("starts");
    let mut readiness = handle.watch_service("readiness");
    assert_eq!(*readiness.borrow(), None, "unknown name");

    handle
        .add_dependency("db", every_second(&db))
        .await
        .expect("added");
    let spec = ServiceSpec::with_all(["db"], Impact::Critical);
    handle
        .set_service("readiness", spec.clone())
        .await
        .expect("service set");
    readiness
        .wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("alive");

    let before = handle.snapshot();
    let err = handle
        .add_dependency("db", every_second(&db))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, ChangeError::DuplicateDependency(ref n) if n == "db"),
        "{err}"
    );
    let bad = every_second(&db).with_timeout(Duration::from_secs(2));
    let err = handle
        .add_dependency("other", bad)
        .await
        .expect_err("timeout above interval");
    assert_eq!(
        err.to_string(),
        "invalid change to \"other\": dependencies.other: timeout (2s) must be less than interval (1s)"
    );
    let err = handle
        .set_service("x", ServiceSpec::with_all(["nope"], Impact::Critical))
        .await
        .expect_err("missing dep");
    assert!(matches!(err, ChangeError::Invalid { .. }), "{err}");
    let err = handle.remove_dependency("db").await.expect_err("in use");
    assert!(
        matches!(err, ChangeError::DependencyInUse { ref services, .. } if services == &["readiness".to_owned()]),
        "{err}"
    );
    let after = handle.snapshot();
    assert_eq!(
        after.generation, before.generation,
        "rejected changes publish nothing"
    );
    assert!(after.dependency("other").is_none() && after.service("x").is_none());

    // Replacing keeps the known health: no flap through Unknown.
    handle
        .replace_dependency("db", every_second(&db).with_thresholds(1, 1))
        .await
        .expect("replaced");
    assert_eq!(
        handle.snapshot().dependency("db").expect("db").health,
        Health::Healthy
    );
    assert_eq!(
        handle
            .snapshot()
            .dependency("db")
            .expect("db")
            .thresholds
            .fall,
        1
    );

    handle.remove_service("readiness").await.expect("removed");
    readiness
        .wait_for(Option::is_none)
        .await
        .expect("watchers see the name vanish");
    // `""` was built before db existed, so nothing relies on db any more.
    handle
        .remove_dependency("db")
        .await
        .expect("unused dependency removed");
    assert!(handle.snapshot().dependency("db").is_none());
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn applying_a_whole_configuration_keeps_what_did_not_change_and_is_all_or_nothing() {
    use std::collections::BTreeMap;
    let (a, b, c) = (
        Scripted::new(Verdict::Healthy),
        Scripted::new(Verdict::Healthy),
        Scripted::new(Verdict::Healthy),
    );
    let readiness = ServiceSpec::with_all(["a", "b"], Impact::Critical);
    let handle = Engine::builder()
        .dependency("a", every_second(&a))
        .dependency("b", every_second(&b))
        .service("readiness", readiness.clone())
        .service("x", ServiceSpec::with_all(["b"], Impact::Critical))
        .start()
        .expect("starts");
    let mut x = handle.watch_service("x");
    let mut y = handle.watch_service("y");
    assert_eq!(*y.borrow(), None);
    x.wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("x serves");
    tokio::time::sleep(3 * SECOND).await;
    let history_before = handle
        .snapshot()
        .dependency("a")
        .expect("a")
        .history
        .clone();
    let a_runs = a.runs();

    let deps = |b_fall: u32| {
        BTreeMap::from([
            ("a".to_owned(), every_second(&a)),
            ("b".to_owned(), every_second(&b).with_thresholds(b_fall, 1)),
            ("c".to_owned(), every_second(&c)),
        ])
    };
    let services = BTreeMap::from([
        ("readiness".to_owned(), readiness.clone()),
        (
            "y".to_owned(),
            ServiceSpec::with_all(["c"], Impact::Critical),
        ),
    ]);

    // Rejected: every problem named, nothing changes, nothing is published.
    let before = handle.snapshot();
    let mut bad = deps(1);
    bad.insert("slow".to_owned(), every_second(&c).with_timeout(2 * SECOND));
    let mut bad_services = services.clone();
    bad_services.insert(
        "z".to_owned(),
        ServiceSpec::with_all(["nope"], Impact::Critical),
    );
    let err = handle.apply(bad, bad_services).await.expect_err("invalid");
    let ChangeError::InvalidConfig(problems) = &err else {
        panic!("{err}");
    };
    assert_eq!(problems.len(), 2, "{err}");
    assert!(
        err.to_string().contains("dependencies.slow: timeout"),
        "{err}"
    );
    assert!(err.to_string().contains("nope"), "{err}");
    let now = handle.snapshot();
    assert!(now.dependency("c").is_none() && now.service("z").is_none());
    assert!(now.service("x").is_some() && now.service("y").is_none());
    assert_eq!(
        now.dependency("b").expect("b").thresholds,
        before.dependency("b").expect("b").thresholds
    );

    let applied = handle.apply(deps(1), services).await.expect("applied");
    assert_eq!(applied.kept_dependencies, 1, "{applied:?}");
    assert_eq!(applied.replaced_dependencies, ["b"]);
    assert_eq!(applied.added_dependencies, ["c"]);
    assert!(applied.removed_dependencies.is_empty());
    assert_eq!(applied.removed_services, ["x"]);
    assert_eq!(applied.added_services, ["y"]);
    // `""` is the default (every dependency): it changed, since c joined.
    assert_eq!(applied.changed_services, [""]);
    assert_eq!(applied.kept_services, 1);

    let after = handle.snapshot();
    let history = &after.dependency("a").expect("a").history;
    assert!(
        history.outcomes().count() >= history_before.outcomes().count()
            && history.outcomes().next() == history_before.outcomes().next(),
        "an unchanged dependency keeps its history"
    );
    let b_state = after.dependency("b").expect("b");
    assert_eq!(
        (b_state.health, b_state.thresholds.fall),
        (Health::Healthy, 1)
    );
    assert_eq!(
        after.service("readiness").expect("kept").status.health,
        Health::Healthy,
        "no flap through Unknown"
    );
    x.wait_for(Option::is_none).await.expect("x is gone");
    y.wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("y appears to its watcher");
    // a keeps its own schedule: its next run is a second after its last one, not at the swap.
    let last = *a_runs.last().expect("a ran");
    tokio::time::sleep(2 * SECOND).await;
    let next = a.runs()[a_runs.len()];
    assert!(next >= last + SECOND, "re-probed early: {:?}", next - last);

    // The same configuration again changes nothing.
    let services = BTreeMap::from([
        ("readiness".to_owned(), readiness),
        (
            "y".to_owned(),
            ServiceSpec::with_all(["c"], Impact::Critical),
        ),
    ]);
    let again = handle.apply(deps(1), services).await.expect("applied");
    assert!(again.is_empty(), "{again:?}");
    assert_eq!((again.kept_dependencies, again.kept_services), (3, 3));
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn overrides_decide_until_they_expire_then_the_computed_health_applies_at_once() {
    use healthgate::engine::{MAX_OVERRIDE, Target};
    let db = Scripted::new(Verdict::unhealthy("down"));
    let readiness = ServiceSpec::with_all(["db"], Impact::Critical);
    let handle = Engine::builder()
        .dependency("db", every_second(&db))
        .service("readiness", readiness.clone())
        .start()
        .expect("starts");
    let mut watch = handle.watch_service("readiness");
    watch
        .wait_for(|s| s.is_some_and(|s| s.health == Health::Unhealthy))
        .await
        .expect("down");
    let dep = || Target::Dependency("db".to_owned());
    let service = || Target::Service("readiness".to_owned());

    // Refused: every rule named; nothing changes.
    for (health, duration, reason, says) in [
        (Health::Healthy, Duration::ZERO, "m", "above zero"),
        (Health::Healthy, MAX_OVERRIDE + SECOND, "m", "maximum"),
        (
            Health::Unknown,
            SECOND,
            "m",
            "healthy, degraded or unhealthy",
        ),
        (Health::Healthy, SECOND, "  ", "reason"),
    ] {
        let err = handle
            .set_override(dep(), health, duration, reason)
            .await
            .expect_err("invalid");
        assert!(err.to_string().contains(says), "{err}");
    }
    let err = handle
        .set_override(
            Target::Dependency("nope".into()),
            Health::Healthy,
            SECOND,
            "m",
        )
        .await
        .expect_err("unknown");
    assert!(matches!(err, ChangeError::UnknownDependency(_)), "{err}");
    assert!(
        handle
            .snapshot()
            .dependency("db")
            .expect("db")
            .forced
            .is_none()
    );

    // A maintenance mute on the dependency: the service serves, the computed health shows.
    let muted = handle
        .set_override(dep(), Health::Healthy, 10 * SECOND, "maintenance")
        .await
        .expect("set");
    watch
        .wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("muted");
    let state = handle.snapshot();
    let db_state = state.dependency("db").expect("db");
    assert_eq!(
        (db_state.health, db_state.computed),
        (Health::Healthy, Health::Unhealthy)
    );
    assert_eq!(db_state.forced.as_deref(), Some(&*muted));
    assert_eq!(muted.reason.as_str(), "maintenance");
    assert_eq!(
        muted.until.duration_since(muted.since).ok(),
        Some(10 * SECOND)
    );

    // A manual drain of the service decides over its dependencies, and expires first.
    let started = Instant::now();
    handle
        .set_override(service(), Health::Unhealthy, 5 * SECOND, "drain for deploy")
        .await
        .expect("set");
    watch
        .wait_for(|s| s.is_some_and(|s| !s.serving))
        .await
        .expect("drained");
    assert!(
        handle
            .snapshot()
            .service("readiness")
            .expect("r")
            .forced
            .is_some()
    );
    // A reload that keeps both keeps both overrides (the service's spec changes).
    let mut changed = readiness.clone();
    changed.degraded = DegradedPolicy::NotServing;
    handle
        .apply(
            [("db".to_owned(), every_second(&db))].into(),
            [("readiness".to_owned(), changed)].into(),
        )
        .await
        .expect("applied");
    assert!(
        handle
            .snapshot()
            .service("readiness")
            .expect("r")
            .forced
            .is_some()
    );
    watch
        .wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("the service's override expired; the muted dependency decides");
    let waited = Instant::now() - started;
    assert!(
        (5 * SECOND..6 * SECOND).contains(&waited),
        "expired at its time: {waited:?}"
    );
    assert!(
        handle
            .snapshot()
            .service("readiness")
            .expect("r")
            .forced
            .is_none()
    );
    watch
        .wait_for(|s| s.is_some_and(|s| !s.serving))
        .await
        .expect("the dependency's override expired: its computed health applies at once");
    let waited = Instant::now() - started;
    assert!((10 * SECOND..11 * SECOND).contains(&waited), "{waited:?}");
    assert!(
        handle
            .snapshot()
            .dependency("db")
            .expect("db")
            .forced
            .is_none()
    );

    // Clearing ends one now; clearing again says there was none.
    handle
        .set_override(dep(), Health::Degraded, 60 * SECOND, "flaky, known")
        .await
        .expect("set");
    watch
        .wait_for(|s| s.is_some_and(|s| s.health == Health::Degraded))
        .await
        .expect("degraded");
    assert!(handle.clear_override(dep()).await.expect("cleared"));
    assert!(
        !handle
            .clear_override(dep())
            .await
            .expect("nothing to clear")
    );
    watch
        .wait_for(|s| s.is_some_and(|s| s.health == Health::Unhealthy))
        .await
        .expect("computed again");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn push_dependencies_take_reports_and_a_missing_report_fails_at_once() {
    use healthgate::engine::Reporter;
    let ttl = 30 * SECOND;
    let mut nightly = DependencySpec::push(ttl, Some("job-t0ken".into()));
    nightly.fall = 3; // damps reports, never the missing one
    let db = Scripted::new(Verdict::Healthy);
    let started = Instant::now();
    let handle = Engine::builder()
        .dependency("nightly", nightly)
        .dependency("db", every_second(&db))
        .service(
            "backups",
            ServiceSpec::with_all(["nightly"], Impact::Critical),
        )
        .start()
        .expect("starts");
    let state = || {
        handle
            .snapshot()
            .dependency("nightly")
            .cloned()
            .expect("nightly")
    };
    assert_eq!(state().health, Health::Unknown, "before the first report");
    assert_eq!(state().kind, "push");

    // Never reported: Unhealthy once the ttl has passed since it appeared.
    let missed = state_where(&handle, "nightly", |d| d.health == Health::Unhealthy).await;
    assert!(Instant::now() - started >= ttl);
    let reason = missed.last_outcome.expect("recorded").verdict;
    assert_eq!(
        reason.reason().map(|r| r.as_str()),
        Some("no report for 30s")
    );

    // Who may report.
    let token = |t: &str| Reporter::Token(t.to_owned());
    let err = handle
        .report("nightly", Health::Healthy, None, token("wrong"))
        .await
        .expect_err("wrong token");
    assert!(matches!(err, ChangeError::Unauthenticated(_)), "{err}");
    let err = handle
        .report("db", Health::Healthy, None, Reporter::Admin)
        .await
        .expect_err("not push");
    assert!(matches!(err, ChangeError::NotPush(_)), "{err}");
    let err = handle
        .report("nope", Health::Healthy, None, Reporter::Admin)
        .await
        .expect_err("unknown");
    assert!(matches!(err, ChangeError::UnknownDependency(_)), "{err}");
    let err = handle
        .report("nightly", Health::Unknown, None, Reporter::Admin)
        .await
        .expect_err("unknown is no report");
    assert!(matches!(err, ChangeError::InvalidReport), "{err}");
    assert_eq!(
        state().health,
        Health::Unhealthy,
        "refused reports change nothing"
    );

    // A report is an outcome: the first after a miss applies at once.
    handle
        .report("nightly", Health::Healthy, None, token("job-t0ken"))
        .await
        .expect("reported");
    assert_eq!(state().health, Health::Healthy);
    let reported_at = Instant::now();
    // Unhealthy reports are damped by fall (3 here) and carry the reporter's reason.
    for _ in 0..2 {
        handle
            .report(
                "nightly",
                Health::Unhealthy,
                Some("disk full".into()),
                Reporter::Admin,
            )
            .await
            .expect("reported");
    }
    assert_eq!(state().health, Health::Healthy, "damped");
    handle
        .report(
            "nightly",
            Health::Unhealthy,
            Some("disk full".into()),
            Reporter::Admin,
        )
        .await
        .expect("reported");
    let down = state();
    assert_eq!(down.health, Health::Unhealthy);
    assert_eq!(
        down.last_outcome
            .expect("o")
            .verdict
            .reason()
            .map(|r| r.as_str()),
        Some("disk full")
    );
    // Healthy again, then silence: Unhealthy at once when the ttl passes (not after 3 misses).
    for _ in 0..1 {
        handle
            .report("nightly", Health::Healthy, None, Reporter::Admin)
            .await
            .expect("reported");
    }
    state_where(&handle, "nightly", |d| d.health == Health::Healthy).await;
    let last = Instant::now();
    state_where(&handle, "nightly", |d| d.health == Health::Unhealthy).await;
    let silent = Instant::now() - last;
    assert!((ttl..ttl + SECOND).contains(&silent), "{silent:?}");
    assert!(last >= reported_at);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restored_state_keeps_override_times_and_the_rest_of_each_push_ttl() {
    use healthgate::engine::{Saved, SavedReport, Target};
    use healthgate::snapshot::Override;
    use std::time::SystemTime;
    let ttl = 30 * SECOND;
    let db = Scripted::new(Verdict::Healthy);
    let handle = Engine::builder()
        .dependency("fresh", DependencySpec::push(ttl, None))
        .dependency("old", DependencySpec::push(ttl, None))
        .dependency("never", DependencySpec::push(ttl, None))
        .dependency("db", every_second(&db))
        .service("shop", ServiceSpec::with_all(["db"], Impact::Critical))
        .start()
        .expect("starts");
    // The wall clock does not pause: times are made relative to it.
    let now = SystemTime::now();
    let drain = Override {
        health: Health::Unhealthy,
        since: now - 60 * SECOND,
        until: now + 10 * SECOND,
        reason: healthgate::Reason::new("drain for upgrade".to_owned()),
    };
    let report = |name: &str, health, age| SavedReport {
        dependency: name.to_owned(),
        health,
        reason: (health != Health::Healthy).then(|| "slow".to_owned()),
        at: now - age,
    };
    let saved = Saved {
        overrides: vec![
            (Target::Service("shop".into()), drain.clone()),
            (
                Target::Dependency("db".into()),
                Override {
                    until: now - SECOND,
                    ..drain.clone()
                },
            ),
            (Target::Dependency("ghost".into()), drain.clone()),
        ],
        reports: vec![
            report("fresh", Health::Degraded, 20 * SECOND),
            report("old", Health::Healthy, 40 * SECOND),
            report("db", Health::Healthy, SECOND),
        ],
    };
    let started = Instant::now();
    let mut dropped = handle.restore(saved).await.expect("restored");
    dropped.sort();
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert!(dropped[0].contains("\"db\": expired"), "{dropped:?}");
    assert!(dropped[1].contains("\"ghost\""), "{dropped:?}");
    assert!(
        dropped[2].contains("\"db\": no longer a push"),
        "{dropped:?}"
    );

    let snapshot = handle.snapshot();
    let shop = snapshot.service("shop").expect("shop");
    assert_eq!(
        shop.status.health,
        Health::Unhealthy,
        "the override decides"
    );
    assert_eq!(shop.forced.as_deref(), Some(&drain), "since and until kept");
    let fresh = snapshot.dependency("fresh").expect("fresh");
    assert_eq!(fresh.health, Health::Degraded, "the saved health");
    assert_eq!(fresh.reported_at, Some(now - 20 * SECOND));
    let old = snapshot.dependency("old").expect("old");
    assert_eq!(old.health, Health::Unhealthy, "older than its ttl: missing");
    assert_eq!(
        old.last_outcome
            .as_ref()
            .and_then(|o| o.verdict.reason())
            .map(|r| r.as_str()),
        Some("no report for 30s")
    );
    assert_eq!(
        snapshot.dependency("never").expect("never").health,
        Health::Unknown
    );

    // What is saved now is what was restored (minus what was dropped).
    let again = handle.saved().await.expect("saved");
    assert_eq!(
        again.overrides,
        vec![(Target::Service("shop".into()), drain)]
    );
    assert_eq!(
        again
            .reports
            .iter()
            .map(|r| (r.dependency.as_str(), r.health))
            .collect::<Vec<_>>(),
        [("fresh", Health::Degraded), ("old", Health::Unhealthy)]
    );

    // The ttl runs on from the report: missing 10 s after the restore, not 30.
    state_where(&handle, "fresh", |d| d.health == Health::Unhealthy).await;
    let missed = Instant::now() - started;
    assert!((10 * SECOND..11 * SECOND).contains(&missed), "{missed:?}");
    // And the override ends at its own expiry.
    let mut shop = handle.watch_service("shop");
    shop.wait_for(|s| s.is_some_and(|s| s.health == Health::Healthy))
        .await
        .expect("expired");
    assert!(Instant::now() - started < 11 * SECOND);
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn refresh_probes_now_bypassing_interval_cache_and_back_off() {
    let slow = Scripted::new(Verdict::Healthy);
    let cached = Scripted::new(Verdict::unhealthy("down"));
    let minute = 60 * SECOND;
    let handle = Engine::builder()
        .dependency(
            "slow",
            DependencySpec::custom(slow.clone(), "s").every(minute, 0.0),
        )
        .dependency("cached", on_demand(&cached, minute, minute, 10 * minute))
        .dependency("job", DependencySpec::push(minute, None))
        .start()
        .expect("starts");
    state_where(&handle, "slow", |d| d.last_outcome.is_some()).await;
    state_where(&handle, "cached", |d| d.last_outcome.is_some()).await;
    let (slow_runs, cached_runs) = (slow.runs().len(), cached.runs().len());
    let asked = Instant::now();
    handle.refresh("slow").await.expect("refresh");
    handle.refresh("cached").await.expect("refresh");
    state_where(&handle, "slow", |d| d.consecutive_successes == 2).await;
    state_where(&handle, "cached", |d| d.consecutive_failures == 2).await;
    assert_eq!(
        (slow.runs().len(), cached.runs().len()),
        (slow_runs + 1, cached_runs + 1)
    );
    assert!(
        slow.runs()[slow_runs] - asked < SECOND,
        "now, not in a minute"
    );
    assert!(
        cached.runs()[cached_runs] - asked < SECOND,
        "whatever the cache and back-off say"
    );
    let err = handle.refresh("job").await.expect_err("push");
    assert!(matches!(err, ChangeError::NotProbed(_)), "{err}");
    let err = handle.refresh("nope").await.expect_err("unknown");
    assert!(matches!(err, ChangeError::UnknownDependency(_)), "{err}");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_freezes_every_service_not_serving_and_stops_probing() {
    let probe = Scripted::new(Verdict::Healthy);
    let handle = Engine::builder()
        .dependency("dep", every_second(&probe))
        .service("liveness", ServiceSpec::default())
        .service(
            "readiness",
            ServiceSpec {
                degraded: DegradedPolicy::NotServing,
                ..ServiceSpec::with_all(["dep"], Impact::Critical)
            },
        )
        .start()
        .expect("starts");
    let mut liveness = handle.watch_service("liveness");
    liveness
        .wait_for(|s| s.is_some_and(|s| s.serving))
        .await
        .expect("alive");
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;

    handle.shutdown().await;
    assert_eq!(
        *liveness.borrow_and_update(),
        Some(ServiceHealth {
            health: Health::Unhealthy,
            serving: false
        })
    );
    let snapshot = handle.snapshot();
    assert!(snapshot.shutting_down);
    assert!(
        snapshot
            .services
            .iter()
            .all(|s| !s.status.serving && s.status.health == Health::Unhealthy)
    );
    let runs = probe.runs().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(probe.runs().len(), runs, "no probe runs after shutdown");
    let err = handle
        .add_dependency("late", every_second(&probe))
        .await
        .expect_err("frozen");
    assert!(matches!(err, ChangeError::ShuttingDown), "{err}");
    assert!(
        !handle.snapshot().services.iter().any(|s| s.status.serving),
        "nothing turns back to serving"
    );
    handle.shutdown().await; // idempotent
}

#[tokio::test(start_paused = true)]
async fn detail_only_outcomes_share_publications_and_health_changes_are_published_at_once() {
    let probe = Scripted::new(Verdict::Healthy);
    let every_10ms = DependencySpec::custom(probe.clone(), "scripted")
        .every(Duration::from_millis(10), 0.0)
        .with_timeout(Duration::from_millis(5))
        .with_thresholds(1, 1);
    let handle = start_one(every_10ms);
    state_where(&handle, "dep", |d| d.health == Health::Healthy).await;

    // A second of outcomes that change nothing but counts and latency.
    let (generation, runs) = (handle.snapshot().generation, probe.runs().len());
    tokio::time::sleep(SECOND).await;
    let publications = handle.snapshot().generation - generation;
    let outcomes = probe.runs().len() - runs;
    assert!(outcomes >= 95, "{outcomes} outcomes in a second");
    assert!(
        (9..=11).contains(&publications),
        "{outcomes} detail-only outcomes took {publications} publications, not one per 100 ms"
    );
    // What is published is never more than one interval behind.
    let seen = handle
        .snapshot()
        .dependency("dep")
        .expect("dep")
        .consecutive_successes;
    let ran = probe.runs().len() as u32 - 1; // every run so far but the first failed none
    assert!(ran - seen <= 11, "published {seen} successes of {ran}");

    // A change of health goes out with the outcome that makes it, not at the next interval.
    probe.set(Verdict::unhealthy("down"));
    let flipped = Instant::now();
    let mut rx = handle.watch_service("");
    rx.wait_for(|s| s.is_some_and(|s| !s.serving))
        .await
        .expect("engine alive");
    let first_run = *probe
        .runs()
        .iter()
        .find(|r| **r >= flipped)
        .expect("a run after the flip");
    assert_eq!(
        Instant::now(),
        first_run,
        "published at the instant of the outcome"
    );
    handle.shutdown().await;
}

/// Counts its runs in flight and the most seen at once; each run takes 150 ms.
#[derive(Debug, Default)]
struct Crowd {
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

impl Probe for Crowd {
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Verdict::Healthy
        })
    }
}

#[tokio::test]
async fn at_most_1024_probe_runs_are_in_flight_and_waiting_for_a_turn_does_not_time_out() {
    let crowd = Arc::new(Crowd::default());
    let mut builder = Engine::builder();
    // 2,200 first runs due at once (no jitter), each 150 ms long, with a 250 ms timeout: the
    // last 152 wait ~300 ms for a turn and still pass, because the timeout starts with the run.
    for i in 0..2200 {
        builder = builder.dependency(
            format!("d{i}"),
            DependencySpec::custom(crowd.clone(), "crowd")
                .every(Duration::from_secs(5), 0.0)
                .with_timeout(Duration::from_millis(250)),
        );
    }
    let handle = builder.start().expect("starts");
    // `""` relies on every dependency: healthy once all 2,200 first runs passed.
    crate::support::service_is(&handle, "", Health::Healthy).await;
    assert_eq!(crowd.most.load(Ordering::SeqCst), 1024);
    let snapshot = handle.snapshot();
    let failed: Vec<&str> = snapshot
        .dependencies
        .iter()
        .filter(|d| d.last_failure.is_some())
        .map(|d| &*d.name)
        .collect();
    assert!(failed.is_empty(), "waiting for a turn failed {failed:?}");
    handle.shutdown().await;
}
