//! healthgate: probes what a service depends on and publishes one answer — can it take traffic?
#![allow(dead_code)]

pub mod config;
mod health;
mod outcome;
pub mod probe;
pub mod redact;

pub use config::Config;
pub use health::{Health, Impact};
pub use outcome::{MAX_REASON_LEN, Outcome, Reason, Verdict};
pub use probe::Probe;
