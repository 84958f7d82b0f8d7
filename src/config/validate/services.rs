//! `[services.NAME]`: dependencies with impacts, quorums, the degraded policy.

use super::*;

impl Validator<'_> {
    pub(super) fn service(&mut self, name: &str, raw: &RawService) -> Option<ServiceSpec> {
        let path = format!("services.{}", key(name));
        let mut spec = ServiceSpec::default();
        for (dep, impact) in &raw.dependencies {
            match parse_impact(impact) {
                Some(i) => {
                    spec.dependencies.insert(dep.clone(), i);
                }
                None => self.problem(format!("{path}.dependencies.{}", key(dep)), format!("unknown impact {impact:?}: expected \"critical\", \"degrading\" or \"informational\"")),
            }
        }
        for (i, q) in raw.quorum.iter().enumerate() {
            let qpath = format!("{path}.quorum[{i}]");
            let impact = match q.impact.as_deref().map(parse_impact) {
                None => Impact::Critical,
                Some(Some(i)) => i,
                Some(None) => {
                    self.problem(
                        format!("{qpath}.impact"),
                        "unknown impact: expected \"critical\", \"degrading\" or \"informational\"",
                    );
                    continue;
                }
            };
            let Some(min) = q.min else {
                self.problem(&qpath, "missing key `min`");
                continue;
            };
            spec.quorums.push(Quorum {
                members: q.dependencies.clone(),
                min: usize::try_from(min).unwrap_or(0),
                impact,
            });
        }
        spec.degraded = match raw.degraded.as_deref() {
            None | Some("serving") => DegradedPolicy::Serving,
            Some("not_serving") => DegradedPolicy::NotServing,
            Some(other) => {
                self.problem(
                    format!("{path}.degraded"),
                    format!("unknown value {other:?}: expected \"serving\" or \"not_serving\""),
                );
                DegradedPolicy::Serving
            }
        };
        // Kept even when partly invalid, so its references are checked too: one pass reports
        // everything (the config as a whole fails anyway).
        Some(spec)
    }
}

fn parse_impact(s: &str) -> Option<Impact> {
    match s {
        "critical" => Some(Impact::Critical),
        "degrading" => Some(Impact::Degrading),
        "informational" => Some(Impact::Informational),
        _ => None,
    }
}
