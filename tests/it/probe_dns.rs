//! A name that does not resolve, for every probe kind that takes one.
//!
//! `.invalid` is reserved (RFC 6761 §6.4): no resolver may answer it, so the lookup fails on
//! every machine. *How* it fails is the resolver's choice: one that answers NXDOMAIN fails at
//! once (the reason is then `dns: …`), one that cannot reach a name server fails when its own
//! timeout ends (the probe's timeout decides first: `timed out after 400ms`). Either is the
//! correct health within timeout + 100 ms, and neither reason may quote the name.

use std::time::Duration;

use healthgate::{Health, Outcome};

use crate::support::{probe_once, reason};

const NAME: &str = "healthgate-fault.invalid";
const TIMEOUT: Duration = Duration::from_millis(400);

/// `prefix`: what the kind puts before a connection's failure (gRPC: `unavailable: `).
fn assert_dns_failure(outcome: &Outcome, prefix: &str) {
    assert_eq!(outcome.verdict.health(), Health::Unhealthy, "{outcome:?}");
    let reason = reason(outcome);
    let cause = reason.strip_prefix(prefix).unwrap_or(reason);
    assert!(
        cause.starts_with("dns: ") || reason == "timed out after 400ms",
        "a DNS reason or the probe's timeout: {reason:?}"
    );
    assert!(
        !reason.contains(NAME),
        "the reason quotes the name: {reason:?}"
    );
    assert!(
        outcome.latency < TIMEOUT + Duration::from_millis(100),
        "decided after {:?}",
        outcome.latency
    );
}

#[tokio::test]
async fn an_http_dependency_whose_name_does_not_resolve_is_unhealthy_in_time() {
    let outcome = probe_once(&format!(
        "kind = \"http\"\nurl = \"http://{NAME}/health\"\ntimeout = \"400ms\"\n"
    ))
    .await;
    assert_dns_failure(&outcome, "");
}

#[tokio::test]
async fn a_grpc_dependency_whose_name_does_not_resolve_is_unhealthy_in_time() {
    let outcome = probe_once(&format!(
        "kind = \"grpc\"\ntarget = \"http://{NAME}:50051\"\ntimeout = \"400ms\"\n"
    ))
    .await;
    assert_dns_failure(&outcome, "unavailable: ");
}

#[tokio::test]
async fn a_tcp_dependency_whose_name_does_not_resolve_is_unhealthy_in_time() {
    let outcome = probe_once(&format!(
        "kind = \"tcp\"\naddress = \"{NAME}:5432\"\ntimeout = \"400ms\"\n"
    ))
    .await;
    assert_dns_failure(&outcome, "");
}
