//! healthgate: probes what a service depends on and publishes one answer — can it take traffic?

pub mod config;
pub mod engine;
mod health;
mod outcome;
pub mod probe;
pub mod redact;
pub mod snapshot;

pub use config::Config;
pub use engine::{Engine, Handle};
pub use health::{Health, Impact};
pub use outcome::{MAX_REASON_LEN, Outcome, Reason, Verdict};
pub use probe::Probe;
pub use snapshot::Snapshot;
