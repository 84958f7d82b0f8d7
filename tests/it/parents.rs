//! Root causes: `parents`. Real HTTP dependencies that fail together; the children's reasons
//! and the service's deciding list name the parent; children keep being probed; cycles are
//! config errors.

use std::time::Duration;

use healthgate::Health;

use crate::support::{Answer, HttpServer, state_where};

fn failing() -> Answer {
    Answer {
        status: 503,
        ..Default::default()
    }
}

fn dependency(name: &str, server: &HttpServer, parents: &[&str]) -> String {
    let parents: Vec<String> = parents.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[dependencies.{name}]\nkind = \"http\"\nurl = \"{}\"\ninterval = \"100ms\"\n\
         timeout = \"80ms\"\nfall = 1\nrise = 1\nparents = [{}]\n\n",
        server.url("/health"),
        parents.join(", ")
    )
}

#[tokio::test]
async fn children_failing_with_their_parent_name_it_as_the_root_cause() {
    let (gateway, proxy, orders, payments) = (
        HttpServer::start().await,
        HttpServer::start().await,
        HttpServer::start().await,
        HttpServer::start().await,
    );
    let config = [
        dependency("gateway", &gateway, &[]),
        dependency("proxy", &proxy, &["gateway"]),
        dependency("orders", &orders, &["gateway"]),
        dependency("payments", &payments, &["proxy"]),
        "[services.readiness]\ndependencies = { orders = \"critical\", payments = \"critical\" }\n"
            .to_owned(),
    ]
    .concat();
    let handle = crate::support::start(&config);
    for name in ["gateway", "proxy", "orders", "payments"] {
        state_where(&handle, name, |d| d.health == Health::Healthy).await;
    }
    // The gateway fails, and everything behind it with it.
    for server in [&gateway, &proxy, &orders, &payments] {
        server.set(failing());
    }
    let orders_state = state_where(&handle, "orders", |d| d.caused_by.is_some()).await;
    assert_eq!(orders_state.health, Health::Unhealthy);
    assert_eq!(
        orders_state.reason().as_deref(),
        Some("parent gateway unhealthy")
    );
    let own = orders_state
        .last_outcome
        .as_ref()
        .and_then(|o| o.verdict.reason())
        .map(|r| r.to_string())
        .unwrap_or_default();
    assert!(
        !own.is_empty() && !own.starts_with("parent"),
        "its own reason is kept: {own}"
    );
    // Two levels: payments → proxy → gateway.
    let payments_state = state_where(&handle, "payments", |d| {
        d.caused_by.as_deref().is_some_and(|c| c.len() == 2)
    })
    .await;
    let chain: Vec<&str> = payments_state
        .caused_by
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|n| &**n)
        .collect();
    assert_eq!(chain, ["proxy", "gateway"]);
    assert_eq!(payments_state.root_cause().map(|r| &**r), Some("gateway"));
    // The root cause itself has none.
    assert!(
        handle
            .snapshot()
            .dependency("gateway")
            .expect("there")
            .caused_by
            .is_none()
    );
    // The service is decided by the root cause, named once — not by each failing child.
    let deciding = async {
        loop {
            let snapshot = handle.snapshot();
            let readiness = snapshot.service("readiness").expect("configured");
            let names: Vec<String> = readiness.deciding.iter().map(|d| d.to_string()).collect();
            if names == ["gateway"] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(crate::support::PATIENCE, deciding)
        .await
        .expect("readiness decided by gateway alone");

    // The status page's JSON and the twin's JSON show the chain.
    let snapshot = handle.snapshot();
    let json = healthgate::http::bench::status_json(&snapshot, true);
    assert!(
        json.contains("\"chain\":\"payments → proxy → gateway\""),
        "{json}"
    );
    assert!(
        json.contains("\"reason\":\"parent gateway unhealthy\""),
        "{json}"
    );
    let html = healthgate::http::bench::status_html(&snapshot, true);
    assert!(html.contains("orders → gateway"), "{html}");

    // Children keep being probed: orders recovers on its own while the gateway is down.
    let before = orders.requests.load(std::sync::atomic::Ordering::SeqCst);
    orders.set(Answer::default());
    let recovered = state_where(&handle, "orders", |d| d.health == Health::Healthy).await;
    assert!(
        recovered.caused_by.is_none(),
        "a healthy child has no root cause"
    );
    assert!(orders.requests.load(std::sync::atomic::Ordering::SeqCst) > before);
    // The gateway back, the proxy still failing: the proxy is the root cause now.
    gateway.set(Answer::default());
    state_where(&handle, "gateway", |d| d.health == Health::Healthy).await;
    let payments_state = state_where(&handle, "payments", |d| {
        d.root_cause().is_some_and(|r| &**r == "proxy")
    })
    .await;
    assert_eq!(
        payments_state.reason().as_deref(),
        Some("parent proxy unhealthy")
    );
    // The proxy back too: a child still failing shows its own reason.
    proxy.set(Answer::default());
    let payments_state = state_where(&handle, "payments", |d| d.caused_by.is_none()).await;
    assert_eq!(payments_state.health, Health::Unhealthy, "its own failure");
    assert!(
        !payments_state
            .reason()
            .unwrap_or_default()
            .starts_with("parent"),
        "{:?}",
        payments_state.reason()
    );
    handle.shutdown().await;
}

#[test]
fn a_parent_cycle_or_an_unknown_parent_is_a_config_error() {
    let dep = |name: &str, parents: &str| {
        format!(
            "[dependencies.{name}]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nparents = [{parents}]\n"
        )
    };
    let config = [dep("a", "\"b\""), dep("b", "\"c\""), dep("c", "\"a\"")].concat();
    let err = healthgate::Config::from_toml(&config).expect_err("a cycle");
    assert!(
        err.to_string()
            .contains("parents form a cycle: a → b → c → a"),
        "{err}"
    );
    let err = healthgate::Config::from_toml(&dep("a", "\"a\"")).expect_err("its own parent");
    assert!(err.to_string().contains("a → a"), "{err}");
    let err = healthgate::Config::from_toml(&dep("a", "\"nope\"")).expect_err("unknown");
    assert!(
        err.to_string().contains("dependencies.a.parents")
            && err.to_string().contains("no dependency \"nope\""),
        "{err}"
    );
    // A DAG with a shared parent is fine.
    let ok = [dep("g", ""), dep("x", "\"g\""), dep("y", "\"g\", \"x\"")].concat();
    healthgate::Config::from_toml(&ok).expect("a DAG");
}
