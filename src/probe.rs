//! probes
use crate::Verdict;
use std::future::Future;
use std::pin::Pin;
/// f
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;
/// p
pub trait Probe: Send + Sync + 'static {
    /// c
    fn check(&self) -> ProbeFuture<'_>;
}
