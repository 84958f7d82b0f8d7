//! The TCP probe.

use healthgate::Verdict;

use crate::support::{closed_port, silent_server};

#[tokio::test]
async fn open_port_is_healthy_and_closed_port_is_refused() {
    let open = silent_server().await;
    let outcome =
        crate::support::probe_once(&format!("kind = \"tcp\"\naddress = \"{open}\"\n")).await;
    assert_eq!(outcome.verdict, Verdict::Healthy);
    let closed = closed_port().await;
    let outcome =
        crate::support::probe_once(&format!("kind = \"tcp\"\naddress = \"{closed}\"\n")).await;
    assert_eq!(outcome.verdict, Verdict::unhealthy("connection refused"));
}
