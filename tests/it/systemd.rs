//! systemd's notifications through the real binary. A unix datagram socket stands in for
//! systemd's `NOTIFY_SOCKET` (the protocol is one datagram per notification, `KEY=VALUE`
//! lines): readiness once the listeners answer, reload and stop, and the watchdog's pings.

use std::time::Duration;

use tokio::net::UnixDatagram;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{PATIENCE, channel, serve_file, serving_status, silent_server, temp_dir};

/// The next notification other than a watchdog ping, and how many pings came before it.
async fn next(socket: &UnixDatagram) -> (String, usize) {
    let mut pings = 0;
    loop {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
            .await
            .expect("a notification in time")
            .expect("received");
        let text = String::from_utf8(buf[..n].to_vec()).expect("text");
        if text == "WATCHDOG=1\n" {
            pings += 1;
            continue;
        }
        return (text, pings);
    }
}

fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn serve_tells_systemd_it_is_ready_reloading_and_stopping_and_pings_the_watchdog() {
    let dep = silent_server().await;
    let dir = temp_dir("systemd");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind");
    let file = dir.join("healthgate.toml");
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
         [dependencies.db]\nkind = \"tcp\"\naddress = \"{dep}\"\n"
    );
    std::fs::write(&file, &config).expect("write");
    let notify = socket_path.display().to_string();
    let (mut child, addr, _) = serve_file(
        &file,
        &[],
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "200000")],
        std::process::Stdio::null(),
    )
    .await;

    let (ready, _) = next(&socket).await;
    assert_eq!(ready, "READY=1\nSTATUS=serving\n");
    // Ready means answering.
    let mut client = HealthClient::new(channel(addr).await);
    serving_status(&mut client, "").await;

    // The watchdog: WatchdogSec=200ms, a ping every 100 ms.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while pings < 5 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
            .await
            .expect("a ping in time")
            .expect("received");
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
        pings += 1;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "5 pings in {took:?}: at half the period"
    );

    // A reload: RELOADING=1 with the monotonic clock, then READY=1.
    signal(&child, "-HUP");
    let (reloading, _) = next(&socket).await;
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"));
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    assert!(usec > 0);
    let (done, _) = next(&socket).await;
    assert_eq!(done, "READY=1\nSTATUS=serving; config reloaded\n");
    // A broken file: refused, and systemd is still told the service is ready.
    std::fs::write(&file, "[dependencies.db]\nkind = \"nope\"\n").expect("write");
    signal(&child, "-HUP");
    assert!(next(&socket).await.0.starts_with("RELOADING=1\n"));
    let (refused, _) = next(&socket).await;
    assert_eq!(
        refused,
        "READY=1\nSTATUS=serving; config reload rejected, the running config stays\n"
    );

    // The drain.
    signal(&child, "-TERM");
    let (stopping, _) = next(&socket).await;
    assert_eq!(stopping, "STOPPING=1\nSTATUS=draining\n");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits")
        .expect("waited");
    assert!(status.success(), "{status:?}");
}
