//! The HAProxy agent port (`[server] haproxy_agent_listen`): HAProxy's `agent-check` connects,
//! reads one line and the connection ends. The line is a fixed vocabulary — never names or
//! reasons — for service `readiness` (else `""`):
//!
//! | state | line |
//! |---|---|
//! | healthy | `ready up 100%` |
//! | degraded and serving | `ready up W%` (`haproxy_agent_degraded_weight`, default 50) |
//! | degraded on a strict service | `ready down#degraded` |
//! | unhealthy | `ready down#unhealthy` |
//! | unknown | `ready down#unknown` |
//! | draining (after SIGTERM) | `drain` |
//!
//! Nothing is read from the client. At most `max_connections` lines are being written at
//! once (the newest connection past that is closed), and a line that cannot be written
//! within [`WRITE_TIMEOUT`] is abandoned, so a client that never reads holds nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::READINESS;
use crate::{Handle, Health};

/// The longest the agent waits to write its line.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The weight a degraded (and serving) service asks for, in percent, unless configured.
pub const DEFAULT_DEGRADED_WEIGHT: u8 = 50;

/// The agent's line for the current snapshot.
pub fn agent_line(handle: &Handle, degraded_weight: u8) -> String {
    let snapshot = handle.snapshot();
    if snapshot.shutting_down {
        return "drain\n".to_owned();
    }
    let service = snapshot.service(READINESS).or_else(|| snapshot.service(""));
    let Some(service) = service else {
        return "ready down#unknown\n".to_owned();
    };
    match (service.status.health, service.status.serving) {
        (Health::Healthy, true) => "ready up 100%\n".to_owned(),
        (Health::Degraded, true) => format!("ready up {degraded_weight}%\n"),
        (health, _) => format!("ready down#{}\n", health.as_str()),
    }
}

/// Serves the agent line on `listener` until `shutdown` resolves, with at most
/// `max_connections` connections being answered at once.
pub async fn serve_agent(
    listener: TcpListener,
    handle: Handle,
    degraded_weight: u8,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let mut stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "agent port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // the newest past the cap is refused
            continue;
        };
        handle.wake_on_demand();
        let line = agent_line(&handle, degraded_weight);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                stream.write_all(line.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}
