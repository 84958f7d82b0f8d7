//! The gRPC front: `grpc.health.v1.Health` ([`HealthService`]), `healthgate.v1.Detail`
//! ([`DetailService`]), reflection, and [`serve`] with the drain sequence. The only part of the
//! crate that touches generated types.

mod admin;
pub mod client;
mod convert;
mod detail;
mod fast_path;
mod front;
mod health;
mod metrics;
mod observe;
pub mod pb;
mod server;

pub use admin::AdminService;
pub use detail::{DetailService, DetailStream, MAX_DETAIL_FEEDS};

/// The largest request message any of our RPCs accepts, decompressed (tonic's default is
/// 4 MiB): requests are service names. A bigger one is `RESOURCE_EXHAUSTED`.
pub const MAX_REQUEST_MESSAGE: usize = 16 * 1024;
pub use fast_path::{FastPath, FastPathLayer};
pub use front::Front;
pub use health::{HEALTH_STATE_KEY, HealthService, LIST_LIMIT, WatchStream};
pub use server::{ProbeListener, ServeError, ServeOptions, serve};
