//! The churn promise's quick version (the heavy run: `examples/churn.rs`, RELIABILITY.md):
//! connect/Check/close cycles and Watch/Detail.Watch open/cancel cycles leave the server's file
//! descriptors where they were.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{PATIENCE, serve_with, terminate};

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc")
        .count()
}

#[tokio::test]
async fn connection_and_stream_churn_gives_every_descriptor_back() {
    let target = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target_addr = target.local_addr().expect("bound");
    tokio::spawn(async move { while target.accept().await.is_ok() {} });
    let config = format!(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndrain_delay = \"0s\"\n\n\
         [dependencies.db]\nkind = \"tcp\"\naddress = \"{target_addr}\"\ninterval = \"1s\"\n\
         timeout = \"500ms\"\n"
    );
    let (mut child, addr, _) = serve_with(&config, &[], std::process::Stdio::null()).await;
    let pid = child.id().expect("running");
    let url = format!("http://{addr}");
    let check_once = || async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects");
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect("check");
    };
    check_once().await;
    let settle = || async {
        // The server closes a connection when it sees the client's close: poll until it has.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    settle().await;
    let before = fds(pid);
    for _ in 0..1_000 {
        check_once().await;
    }
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    for _ in 0..500 {
        let mut watch = HealthClient::new(channel.clone())
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch")
            .into_inner();
        watch.message().await.expect("a message");
        let mut detail =
            healthgate::grpc::pb::detail::detail_client::DetailClient::new(channel.clone())
                .watch(healthgate::grpc::pb::detail::DetailRequest::default())
                .await
                .expect("detail watch")
                .into_inner();
        detail.message().await.expect("a message");
    }
    drop(channel);
    let back = tokio::time::timeout(PATIENCE, async {
        loop {
            let now = fds(pid);
            if now <= before {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "descriptors not given back: {} before, {} now",
            before,
            fds(pid)
        )
    });
    assert!(back <= before);
    terminate(&mut child).await;
}
