//! One service as the reducer holds it: its spec and its published state, and how a rollup of
//! its dependencies' health changes that state (logging the transition when its health moves).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::dependency::Dependency;
use super::rollup::{self, Rolled};
use super::transition::{Kind, deciding_reasons, transition};
use crate::Health;
use crate::config::ServiceSpec;
use crate::metrics::Metrics;
use crate::snapshot::{Override, ServiceHealth, ServiceState};
use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Service {
    pub(crate) spec: Arc<ServiceSpec>,
    pub(crate) state: Arc<ServiceState>,
    /// An active override and when (on the reducer's clock) it expires.
    pub(crate) forced: Option<(Arc<Override>, Instant)>,
}

impl Service {
    /// A new service, Unknown until its first rollup.
    pub(crate) fn new(name: Arc<str>, spec: ServiceSpec, shutting_down: bool) -> Service {
        let spec = Arc::new(spec);
        let state = Arc::new(ServiceState {
            name,
            status: ServiceHealth::new(Health::Unknown, spec.degraded, shutting_down),
            degraded: spec.degraded,
            deciding: Vec::new(),
            inputs: rollup::inputs(&spec),
            spec: spec.clone(),
            forced: None,
        });
        Service {
            spec,
            state,
            forced: None,
        }
    }

    /// Rolls the service up from `deps` (Unhealthy for everyone once shutting down), and
    /// rebuilds its state if the status or the deciding dependencies changed. A change of
    /// health outside shutdown is a transition, logged with the deciding reasons.
    pub(crate) fn roll_up(
        &mut self,
        deps: &BTreeMap<Arc<str>, Dependency>,
        shutting_down: bool,
        metrics: Option<&Metrics>,
    ) {
        let health_of = |d: &str| deps.get(d).map_or(Health::Unknown, Dependency::health);
        let Rolled { health, deciding } = if shutting_down {
            Rolled {
                health: Health::Unhealthy,
                deciding: Vec::new(),
            }
        } else if let Some((o, _)) = &self.forced {
            Rolled {
                health: o.health,
                deciding: Vec::new(),
            }
        } else {
            let mut rolled = rollup::rollup(&self.spec, &health_of);
            // A child failing because of its parent is named by its root cause, once.
            let mut named: Vec<Arc<str>> = Vec::with_capacity(rolled.deciding.len());
            for d in rolled.deciding {
                let root = deps
                    .get(&d)
                    .and_then(|dep| dep.cause().and_then(|c| c.last().cloned()))
                    .unwrap_or(d);
                if !named.contains(&root) {
                    named.push(root);
                }
            }
            rolled.deciding = named;
            rolled
        };
        let status = ServiceHealth::new(health, self.spec.degraded, shutting_down);
        let forced = self.forced.as_ref().map(|(o, _)| o.clone());
        if status == self.state.status
            && deciding == self.state.deciding
            && forced == self.state.forced
        {
            return;
        }
        let from = self.state.status.health;
        if status.health != from && !shutting_down {
            let why = match &forced {
                Some(o) => format!("override: {}", o.reason),
                None => deciding_reasons(&deciding, deps),
            };
            transition(
                Kind::Service,
                &self.state.name,
                from,
                health,
                Some(&why),
                metrics,
            );
        }
        self.state = Arc::new(ServiceState {
            status,
            deciding,
            forced,
            ..(*self.state).clone()
        });
    }
}
