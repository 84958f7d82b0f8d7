//! Restoring what a state file kept: overrides with their own times, push reports with the rest
//! of their ttl.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::info;

use super::Reducer;
use crate::config::Mode;
use crate::engine::change::{MAX_OVERRIDE, Saved, SavedReport, Target};
use crate::engine::transition;
use crate::snapshot::Override;
use crate::{Health, Outcome, Reason, Verdict};

impl Reducer {
    /// What a state file keeps: every active override, every push dependency's last report.
    pub(super) fn saved(&self) -> Saved {
        let dependencies = (self.dependencies.iter())
            .filter_map(|(n, d)| Some((Target::Dependency(n.to_string()), d.forced()?)));
        let services = (self.services.iter())
            .filter_map(|(n, s)| Some((Target::Service(n.to_string()), &s.forced.as_ref()?.0)));
        Saved {
            overrides: dependencies
                .chain(services)
                .map(|(t, o)| (t, Override::clone(o)))
                .collect(),
            reports: (self.dependencies.iter())
                .filter_map(|(n, d)| d.saved_report(n))
                .collect(),
        }
    }

    /// Applies `saved`; returns what was dropped, one line each.
    pub(super) fn restore(&mut self, saved: Saved) -> Vec<String> {
        let now = SystemTime::now();
        let mut dropped = Vec::new();
        for (target, forced) in saved.overrides {
            let what = format!("override of {} {:?}", target.kind(), target.name());
            let left = forced.until.duration_since(now).unwrap_or_default();
            if left.is_zero() {
                dropped.push(format!("{what}: expired"));
                continue;
            }
            if forced.health == Health::Unknown || forced.reason.as_str().trim().is_empty() {
                dropped.push(format!("{what}: not a valid override"));
                continue;
            }
            let until = forced.until;
            match self.force(&target, Arc::new(forced), left.min(MAX_OVERRIDE)) {
                Ok(()) => info!(
                    kind = target.kind(),
                    name = target.name(),
                    until = %humantime::format_rfc3339_seconds(until),
                    "override restored"
                ),
                Err(e) => dropped.push(format!("{what}: {e}")),
            }
        }
        for report in saved.reports {
            if let Err(why) = self.restore_report(&report, now) {
                dropped.push(format!("report of {:?}: {why}", report.dependency));
            }
        }
        self.health_may_change();
        dropped
    }

    fn restore_report(&mut self, report: &SavedReport, now: SystemTime) -> Result<(), String> {
        let name = report.dependency.as_str();
        let Some(key) = self
            .dependencies
            .get_key_value(name)
            .map(|(k, _)| k.clone())
        else {
            return Err("no such dependency".to_owned());
        };
        let Some(dep) = self.dependencies.get_mut(&key) else {
            return Err("no such dependency".to_owned());
        };
        let Mode::Push { ttl } = dep.spec.mode else {
            return Err("no longer a push dependency".to_owned());
        };
        // A report from the future (the clock went back) counts as made now.
        let age = now.duration_since(report.at).unwrap_or_default();
        dep.last_report = Some(report.at);
        let metrics = self.metrics.as_deref();
        if age >= ttl {
            // Older than its ttl: the report is missing, as it would have been had we run on.
            let reason = Reason::new(format!("no report for {}", humantime::format_duration(ttl)));
            self.stale.clear(&mut dep.stale_key);
            if let Some(before) = dep.miss(&key, reason.clone()) {
                transition::dependency(
                    &key,
                    before,
                    Health::Unhealthy,
                    Some(reason.as_str()),
                    metrics,
                );
            }
            return Ok(());
        }
        let reason = || {
            Reason::new(
                report
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("reported {}", report.health)),
            )
        };
        let verdict = match report.health {
            Health::Healthy => Verdict::Healthy,
            Health::Degraded => Verdict::Degraded(reason()),
            Health::Unhealthy => Verdict::Unhealthy(reason()),
            Health::Unknown => return Err("no health was known".to_owned()),
        };
        let outcome = Outcome {
            verdict,
            latency: Duration::ZERO,
            finished_at: report.at,
        };
        let reason = outcome.verdict.reason().cloned();
        let applied = dep.apply(&key, outcome);
        let left = ttl - age;
        dep.stale_in_at_most(left);
        self.stale.set(&mut dep.stale_key, &key, left);
        if applied.before != applied.after {
            let reason = reason.as_ref().map(|r| r.as_str());
            transition::dependency(&key, applied.before, applied.after, reason, metrics);
        }
        info!(dependency = %key, health = %report.health, "push report restored");
        Ok(())
    }
}
