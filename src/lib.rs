//! healthgate tells meshes, orchestrators and load balancers whether a service can take
//! traffic, by probing the things it depends on.
//!
//! The library core is the [`Engine`]: it probes HTTP, gRPC, TCP and in-process
//! ([`Probe`]) dependencies in the background, damps flapping with rise/fall thresholds, rolls
//! dependency health up into named services (`""` overall, `readiness`, `liveness`, …) with a
//! three-state model (healthy, degraded, unhealthy, plus unknown), and publishes the result as
//! immutable [`Snapshot`]s that readers get in a pointer copy — never waiting on a probe.
//!
//! ```
//! use healthgate::{Config, Engine, Health};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A TCP listener stands in for a database.
//! let db = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = Config::from_toml(&format!(
//!     r#"
//!     [dependencies.db]
//!     kind = "tcp"
//!     address = "{}"
//!     interval = "1s"
//!     timeout = "500ms"
//!
//!     [services.readiness]
//!     dependencies = {{ db = "critical" }}
//!     "#,
//!     db.local_addr()?
//! ))?;
//! let engine = Engine::from_config(&config).start()?;
//!
//! // Wait for the first probe round, then read the snapshot.
//! let mut readiness = engine.watch_service("readiness");
//! readiness.wait_for(|s| s.is_some_and(|s| s.serving)).await?;
//! let snapshot = engine.snapshot();
//! assert_eq!(snapshot.dependency("db").map(|d| d.health), Some(Health::Healthy));
//! assert_eq!(snapshot.service("readiness").map(|s| s.status.health), Some(Health::Healthy));
//!
//! engine.shutdown().await; // every service NOT_SERVING, probes stopped
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! Imports point down this table (the floor first), never up and never in a circle;
//! `python3 .ci/imports.py` counts them and CI fails on either.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | floor | [`health`](Health), [`outcome`](Outcome) | [`Health`], [`Impact`]; [`Verdict`], [`Outcome`], [`Reason`] |
//! | floor | [`redact`], `net_error`, `auth`, `grpc_code`, `trace_context` | secrets kept out of everything printed; network errors as short reasons; bearer tokens; gRPC code names; W3C trace context |
//! | floor | `tls` | [`config::TlsSpec`], PEM parsing, the rustls (HTTP probe) and tonic (gRPC probe, `check`) client configurations |
//! | probe | [`probe`] | the [`Probe`] trait, and each kind beside its spec: `probe/http` (reqwest), `probe/grpc`, `probe/tcp` |
//! | config | [`config`] | TOML → validated [`Config`]: raw mirror, validation by concept with key paths, `${ENV}`, `[limits]` |
//! | snapshot | [`snapshot`] | the immutable published view, pure data |
//! | metrics | [`metrics`] | the registry and the engine's instruments; fronts register their own in it |
//! | engine | [`engine`] | [`Engine`] / [`Handle`]: the probe factory, probe tasks, on-demand cache, hysteresis, rollup, the reducer and its parts (dependency and service state, publication throttle, runtime-change checks, transitions) |
//! | listeners | [`listener`], `telemetry` | accepting connections under [`listener::Limits`], and the connection instruments; OTLP span export |
//! | fronts | [`grpc`] | `grpc.health.v1`, `healthgate.v1.Detail`, reflection, drain; [`grpc::Front`] for embedders; the only module that touches generated types |
//! | fronts | [`http`] | the HTTP front's server and `/metrics` |
//!
//! Data flows one way: probe tasks send outcomes to a single reducer task, which owns all state
//! and publishes `Arc<Snapshot>`s and per-service watch values. Nothing holds a lock across
//! `.await`, and the library installs no global state (no subscriber, no signal handler, no
//! TLS provider: `tls` builds every rustls config with an explicit ring provider).

mod auth;
pub mod config;
pub mod control;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
mod grpc_code;
mod health;
pub mod http;
pub mod listener;
pub mod metrics;
mod net_error;
mod outcome;
pub mod probe;
pub mod redact;
pub mod snapshot;
mod tls;
mod trace_context;

pub use config::Config;
pub use engine::{Engine, Handle};
pub use health::{Health, Impact};
pub use outcome::{MAX_REASON_LEN, Outcome, Reason, Verdict};
pub use probe::Probe;
pub use snapshot::Snapshot;
