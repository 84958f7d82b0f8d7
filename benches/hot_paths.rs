//! Criterion micro-benchmarks of the hot paths, to catch regressions (never run by
//! `cargo test`):
//! - `check`: one grpc.health.v1 Check, request bytes in, response body and trailers out,
//!   answered by tonic's generated service (`tonic`, the baseline) and by healthgate's fast
//!   path in front of it (`fast`), from the same engine snapshot;
//! - `rollup`: a service relying on 1,000 dependencies, all healthy and one unhealthy;
//! - `publish`: a snapshot publication with 1,000 and 10,000 dependencies.
//!
//! ```sh
//! cargo bench --bench hot_paths -- --save-baseline main   # on the base commit
//! cargo bench --bench hot_paths -- --baseline main        # on the change: reports the ratio
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_main};
use healthgate::config::{DependencySpec, ServiceSpec};
use healthgate::engine::bench::{Publisher, rollup};
use healthgate::grpc::Front;
use healthgate::probe::{Probe, ProbeContext, ProbeFuture};
use healthgate::{Engine, Handle, Health, Impact, Verdict};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug)]
struct Healthy;

impl Probe for Healthy {
    fn check(&self, _ctx: ProbeContext) -> ProbeFuture<'_> {
        Box::pin(async { Verdict::Healthy })
    }
}

/// An engine with ten healthy dependencies, `""` and `readiness` relying on them.
fn engine(rt: &Runtime) -> Handle {
    rt.block_on(async {
        let names: Vec<String> = (0..10).map(|i| format!("dep-{i}")).collect();
        let mut builder = Engine::builder();
        for name in &names {
            builder = builder.dependency(
                name.clone(),
                DependencySpec::custom(Arc::new(Healthy), "healthy")
                    .every(Duration::from_secs(1), 0.1)
                    .with_timeout(Duration::from_millis(500)),
            );
        }
        let handle = builder
            .service("readiness", ServiceSpec::with_all(names, Impact::Critical))
            .start()
            .expect("engine starts");
        let mut rx = handle.watch_service("readiness");
        rx.wait_for(|s| s.is_some_and(|s| s.serving))
            .await
            .expect("engine alive");
        handle
    })
}

fn request(body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method("POST")
        .uri("http://localhost/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid request")
}

async fn call<S>(service: &mut S, body: &'static [u8]) -> Bytes
where
    S: Service<
            http::Request<Full<Bytes>>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .expect("ready");
    let response = service.call(request(body)).await.expect("answered");
    let collected = response.into_body().collect().await.expect("body");
    assert!(
        collected
            .trailers()
            .is_some_and(|t| t["grpc-status"] == "0")
    );
    collected.to_bytes()
}

fn check(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = engine(&rt);
    let front = Front::new(handle.clone());
    let health = front.health_server();
    let mut tonic = health.clone();
    let mut fast = front.fast_path().layer(health);
    let mut group = c.benchmark_group("check");
    for (name, body) in [
        ("overall", &b"\0\0\0\0\0"[..]),
        ("readiness", &b"\0\0\0\0\x0b\x0a\x09readiness"[..]),
    ] {
        group.bench_function(BenchmarkId::new("tonic", name), |b| {
            b.iter(|| black_box(rt.block_on(call(&mut tonic, body))))
        });
        group.bench_function(BenchmarkId::new("fast", name), |b| {
            b.iter(|| black_box(rt.block_on(call(&mut fast, body))))
        });
    }
    group.finish();
    rt.block_on(handle.shutdown());
}

fn rollups(c: &mut Criterion) {
    let names: Vec<String> = (0..1000).map(|i| format!("dependency-{i:04}")).collect();
    let spec = ServiceSpec::with_all(names.clone(), Impact::Critical);
    let mut health: HashMap<&str, Health> = names
        .iter()
        .map(|n| (n.as_str(), Health::Healthy))
        .collect();
    let mut group = c.benchmark_group("rollup_1000");
    group.bench_function("all_healthy", |b| {
        b.iter(|| {
            rollup(&spec, &|d| {
                health.get(d).copied().unwrap_or(Health::Unknown)
            })
        })
    });
    health.insert(names[500].as_str(), Health::Unhealthy);
    group.bench_function("one_unhealthy", |b| {
        b.iter(|| {
            rollup(&spec, &|d| {
                health.get(d).copied().unwrap_or(Health::Unknown)
            })
        })
    });
    group.finish();
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let mut group = c.benchmark_group("publish");
    for n in [1000, 10_000] {
        let mut publisher = Publisher::new(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(publisher.publish()))
        });
    }
    group.finish();
}

// The macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::check, super::rollups, super::publish);
}
criterion_main!(group::benches);
