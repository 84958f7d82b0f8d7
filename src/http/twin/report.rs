//! What an endpoint of the twin answers, computed from a snapshot: the status, the check lines
//! and the words around them, exactly as kube-apiserver words them (its `healthz` package),
//! plus our third state. Pure: no I/O, no clock.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::engine::rollup;
use crate::snapshot::{DependencyState, Override, ServiceHealth, ServiceState, Snapshot};
use crate::{Health, Impact};

/// How one check reads in the verbose list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line {
    /// `[+]NAME ok`
    Ok,
    /// `[+]NAME degraded: ok`: not healthy, and not failing the endpoint (a degraded
    /// dependency, a non-critical one that is down, a quorum member while the quorum holds).
    Degraded,
    /// `[+]NAME excluded: ok`
    Excluded,
    /// `[-]NAME failed: reason withheld`: one of the dependencies that fail the endpoint.
    Failed,
}

/// One check of an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Check<'a> {
    pub(crate) name: &'a str,
    pub(crate) line: Line,
    /// The dependency behind the check (absent from the snapshot: Unknown).
    pub(crate) state: Option<&'a DependencyState>,
    pub(crate) impact: Impact,
}

/// The answer of an endpoint (`/readyz`, `/services/NAME`, …) for one request.
#[derive(Debug, Clone)]
pub(crate) struct Report<'a> {
    /// The endpoint's word: `readyz`, `livez`, `healthz`, or the service's name.
    pub(crate) word: &'a str,
    /// The service answered for, if there is one (a `/livez` without a `liveness` service has
    /// none: alive while the process serves).
    pub(crate) service: Option<&'a str>,
    /// Health and wire answer, after exclusions.
    pub(crate) status: ServiceHealth,
    /// The checks, in the service's order.
    pub(crate) checks: Vec<Check<'a>>,
    /// Excluded names that matched no check, sorted.
    pub(crate) unmatched: Vec<&'a str>,
    /// Shutdown began.
    pub(crate) draining: bool,
    /// An operator's override of the service: it decides, whatever the checks say.
    pub(crate) forced: Option<&'a Override>,
}

impl Report<'_> {
    /// Whether the endpoint passes: its service serves.
    pub(crate) fn passed(&self) -> bool {
        self.status.serving
    }

    /// Whether a passing answer says `x-envoy-degraded`.
    pub(crate) fn degraded(&self) -> bool {
        self.passed() && self.status.health == Health::Degraded
    }

    /// The plain-text body: `ok`, or the verbose list (always on failure), as kube writes it.
    pub(crate) fn text(&self, verbose: bool) -> String {
        if self.passed() && !verbose {
            return "ok".to_owned();
        }
        let mut out = String::new();
        for check in &self.checks {
            let _ = match check.line {
                Line::Ok => write!(out, "[+]{} ok", check.name),
                Line::Degraded => write!(out, "[+]{} degraded: ok", check.name),
                Line::Excluded => write!(out, "[+]{} excluded: ok", check.name),
                Line::Failed => write!(out, "[-]{} failed: reason withheld", check.name),
            };
            if let Some(o) = check.state.and_then(|s| s.forced.as_deref()) {
                let _ = write!(out, " (override until {})", rfc3339(o.until));
            }
            out.push('\n');
        }
        if let Some(o) = self.forced {
            let until = rfc3339(o.until);
            let _ = if self.passed() {
                writeln!(out, "[+]override ok (until {until})")
            } else {
                writeln!(out, "[-]override failed: reason withheld (until {until})")
            };
        }
        if self.draining {
            out.push_str("[-]shutdown failed: reason withheld\n");
        }
        if !self.unmatched.is_empty() {
            let quoted: Vec<String> = self.unmatched.iter().map(|n| quote(n)).collect();
            let _ = writeln!(
                out,
                "warn: some health checks cannot be excluded: no matches for {}",
                quoted.join(",")
            );
        }
        let verdict = if self.passed() { "passed" } else { "failed" };
        let _ = writeln!(out, "{} check {verdict}", self.word);
        out
    }
}

/// The report of `service` (or of a process that is alive while it serves, for `None`), with
/// the checks named in `exclude` taken out as if they were not there.
pub(crate) fn endpoint<'a>(
    snapshot: &'a Snapshot,
    word: &'a str,
    service: Option<&'a ServiceState>,
    exclude: &'a [String],
) -> Report<'a> {
    let draining = snapshot.shutting_down;
    let Some(service) = service else {
        // Alive while the process serves, draining included (kube's livez passes during a
        // graceful shutdown; the kubelet must not restart a container that is draining).
        let unmatched = unique(exclude.iter().map(String::as_str));
        return Report {
            word,
            service: None,
            status: ServiceHealth::new(Health::Healthy, Default::default(), false),
            checks: Vec::new(),
            unmatched,
            draining: false,
            forced: None,
        };
    };
    let mut seen = BTreeSet::new();
    let inputs: Vec<(&str, Impact)> = service
        .inputs
        .iter()
        .filter(|(d, _)| seen.insert(&**d))
        .map(|(d, i)| (&**d, *i))
        .collect();
    let excluded: BTreeSet<&str> = exclude
        .iter()
        .map(String::as_str)
        .filter(|e| seen.contains(e))
        .collect();
    let unmatched = unique(
        exclude
            .iter()
            .map(String::as_str)
            .filter(|e| !seen.contains(e)),
    );
    // An override decides the service whatever is excluded.
    let (status, deciding) = if excluded.is_empty() || service.forced.is_some() {
        (
            service.status,
            service.deciding.iter().map(|d| &**d).collect(),
        )
    } else {
        let health_of = |d: &str| snapshot.dependency(d).map_or(Health::Unknown, |s| s.health);
        let mut spec = (*service.spec).clone();
        spec.dependencies
            .retain(|d, _| !excluded.contains(d.as_str()));
        for q in &mut spec.quorums {
            q.members.retain(|m| !excluded.contains(m.as_str()));
            q.min = q.min.min(q.members.len());
        }
        spec.quorums.retain(|q| !q.members.is_empty());
        let rolled = if draining {
            rollup::Rolled {
                health: Health::Unhealthy,
                deciding: Vec::new(),
            }
        } else {
            rollup::rollup(&spec, &health_of)
        };
        let deciding: BTreeSet<&str> = rolled
            .deciding
            .iter()
            .filter_map(|d| seen.get(&**d).copied())
            .collect();
        (
            ServiceHealth::new(rolled.health, spec.degraded, draining),
            deciding,
        )
    };
    let passed = status.serving;
    let checks = inputs
        .into_iter()
        .map(|(name, impact)| {
            let state = snapshot.dependency(name);
            let health = state.map_or(Health::Unknown, |s| s.health);
            let line = if excluded.contains(name) {
                Line::Excluded
            } else if !passed && deciding.contains(name) {
                Line::Failed
            } else if health == Health::Healthy {
                Line::Ok
            } else {
                Line::Degraded
            };
            Check {
                name,
                line,
                state,
                impact,
            }
        })
        .collect();
    Report {
        word,
        service: Some(&service.name),
        status,
        checks,
        unmatched,
        draining,
        forced: service.forced.as_deref(),
    }
}

/// A time as the twin's lines write it: RFC 3339, UTC, seconds.
fn rfc3339(at: std::time::SystemTime) -> impl std::fmt::Display {
    humantime::format_rfc3339_seconds(at)
}

/// Sorted, without repeats (kube lists unmatched exclusions from a set).
fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    names.collect::<BTreeSet<_>>().into_iter().collect()
}

/// A name quoted the way Go's `%q` does for the characters names can hold: `"`, `\` and
/// control characters escaped, everything else as is.
fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{DegradedPolicy, Quorum, ServiceSpec};
    use crate::snapshot::Thresholds;

    fn dep(name: &str, health: Health) -> Arc<DependencyState> {
        Arc::new(DependencyState {
            name: Arc::from(name),
            kind: "tcp",
            target: Arc::from("127.0.0.1:1"),
            health,
            computed: health,
            forced: None,
            last_outcome: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_success: None,
            last_failure: None,
            reported_at: None,
            thresholds: Thresholds {
                mode: "background",
                period: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(1),
                fall: 1,
                rise: 1,
                degraded_after: None,
                stale_after: std::time::Duration::from_secs(9),
            },
            history: Arc::default(),
            parents: Arc::from([]),
            caused_by: None,
            certificate_expires: None,
        })
    }

    fn snapshot(spec: ServiceSpec, deps: &[(&str, Health)], draining: bool) -> Snapshot {
        let health_of = |d: &str| {
            deps.iter()
                .find(|(n, _)| *n == d)
                .map_or(Health::Unknown, |(_, h)| *h)
        };
        let rolled = rollup::rollup(&spec, &health_of);
        let mut dependencies: Vec<_> = deps.iter().map(|(n, h)| dep(n, *h)).collect();
        dependencies.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            shutting_down: draining,
            services: vec![Arc::new(ServiceState {
                name: Arc::from("readiness"),
                status: ServiceHealth::new(
                    if draining {
                        Health::Unhealthy
                    } else {
                        rolled.health
                    },
                    spec.degraded,
                    draining,
                ),
                degraded: spec.degraded,
                deciding: if draining {
                    Vec::new()
                } else {
                    rolled.deciding
                },
                inputs: rollup::inputs(&spec),
                spec: Arc::new(spec),
                forced: None,
            })],
            dependencies,
            ..Snapshot::default()
        }
    }

    fn spec(deps: &[(&str, Impact)]) -> ServiceSpec {
        ServiceSpec {
            dependencies: deps.iter().map(|(d, i)| (d.to_string(), *i)).collect(),
            ..ServiceSpec::default()
        }
    }

    fn text(s: &Snapshot, exclude: &[&str], verbose: bool) -> (bool, bool, String) {
        let exclude: Vec<String> = exclude.iter().map(|e| e.to_string()).collect();
        let r = endpoint(s, "readyz", s.service("readiness"), &exclude);
        (r.passed(), r.degraded(), r.text(verbose))
    }

    use Health::*;
    use Impact::*;

    #[test]
    fn healthy_is_ok_and_verbose_lists_every_check_in_order() {
        let s = snapshot(
            spec(&[("db", Critical), ("cache", Degrading)]),
            &[("db", Healthy), ("cache", Healthy)],
            false,
        );
        assert_eq!(text(&s, &[], false), (true, false, "ok".to_owned()));
        let (_, _, verbose) = text(&s, &[], true);
        assert_eq!(verbose, "[+]cache ok\n[+]db ok\nreadyz check passed\n");
    }

    #[test]
    fn a_degraded_endpoint_passes_says_so_and_fails_when_strict() {
        let s = snapshot(
            spec(&[("db", Critical), ("cache", Degrading)]),
            &[("db", Healthy), ("cache", Unhealthy)],
            false,
        );
        let (passed, degraded, verbose) = text(&s, &[], true);
        assert!(passed && degraded);
        assert_eq!(
            verbose,
            "[+]cache degraded: ok\n[+]db ok\nreadyz check passed\n"
        );

        let mut strict = spec(&[("db", Critical), ("cache", Degrading)]);
        strict.degraded = DegradedPolicy::NotServing;
        let s = snapshot(strict, &[("db", Healthy), ("cache", Unhealthy)], false);
        assert_eq!(
            text(&s, &[], false),
            (
                false,
                false,
                "[-]cache failed: reason withheld\n[+]db ok\nreadyz check failed\n".to_owned()
            )
        );
    }

    #[test]
    fn failure_is_always_verbose_and_marks_only_what_decided_it() {
        let s = snapshot(
            spec(&[
                ("db", Critical),
                ("cache", Degrading),
                ("audit", Informational),
            ]),
            &[
                ("db", Unhealthy),
                ("cache", Unhealthy),
                ("audit", Unhealthy),
            ],
            false,
        );
        let (passed, _, body) = text(&s, &[], false);
        assert!(!passed);
        assert_eq!(
            body,
            "[+]audit degraded: ok\n[+]cache degraded: ok\n[-]db failed: reason withheld\n\
             readyz check failed\n"
        );
    }

    #[test]
    fn exclude_recomputes_as_if_the_check_were_not_there_and_warns_on_no_match() {
        let s = snapshot(
            spec(&[("db", Critical), ("a,b", Critical)]),
            &[("db", Unhealthy), ("a,b", Healthy)],
            false,
        );
        let (passed, _, body) = text(&s, &["db", "zz", "x\"y", "zz"], true);
        assert!(passed, "{body}");
        assert_eq!(
            body,
            "[+]a,b ok\n[+]db excluded: ok\n\
             warn: some health checks cannot be excluded: no matches for \"x\\\"y\",\"zz\"\n\
             readyz check passed\n"
        );
        // A comma is part of a name: "a" and "b" match nothing.
        let (passed, _, body) = text(&s, &["a", "b"], false);
        assert!(!passed, "{body}");
        assert!(body.contains("no matches for \"a\",\"b\""), "{body}");
    }

    #[test]
    fn excluding_a_quorum_member_shrinks_the_group() {
        let s = snapshot(
            ServiceSpec {
                quorums: vec![Quorum {
                    members: vec!["r1".into(), "r2".into(), "r3".into()],
                    min: 3,
                    impact: Critical,
                }],
                ..ServiceSpec::default()
            },
            &[("r1", Healthy), ("r2", Healthy), ("r3", Unhealthy)],
            false,
        );
        assert!(!text(&s, &[], false).0);
        let (passed, degraded, body) = text(&s, &["r3"], true);
        assert!(passed && !degraded, "{body}");
    }

    #[test]
    fn draining_fails_with_a_shutdown_line_even_with_exclusions() {
        let s = snapshot(spec(&[("db", Critical)]), &[("db", Healthy)], true);
        for exclude in [&[][..], &["db"][..]] {
            let (passed, _, body) = text(&s, exclude, false);
            assert!(!passed);
            assert!(
                body.ends_with("[-]shutdown failed: reason withheld\nreadyz check failed\n"),
                "{body}"
            );
        }
    }

    #[test]
    fn without_a_service_the_process_is_alive_even_while_draining() {
        let s = snapshot(spec(&[("db", Critical)]), &[("db", Unhealthy)], true);
        let r = endpoint(&s, "livez", None, &[]);
        assert!(r.passed());
        assert_eq!(r.text(true), "livez check passed\n");
    }

    #[test]
    fn overrides_show_on_their_lines_and_a_service_override_decides_over_exclusions() {
        use std::time::{Duration, UNIX_EPOCH};
        let forced = |health| {
            Arc::new(Override {
                health,
                since: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                until: UNIX_EPOCH + Duration::from_secs(1_800_003_600),
                reason: crate::Reason::new("maintenance, ticket 42"),
            })
        };
        let mut s = snapshot(
            spec(&[("db", Critical), ("cache", Degrading)]),
            &[("db", Healthy), ("cache", Healthy)],
            false,
        );
        let db = Arc::make_mut(&mut s.dependencies[1]);
        assert_eq!(&*db.name, "db");
        db.computed = Unhealthy;
        db.forced = Some(forced(Healthy));
        let (passed, _, verbose) = text(&s, &[], true);
        assert!(passed);
        assert_eq!(
            verbose,
            "[+]cache ok\n[+]db ok (override until 2027-01-15T09:00:00Z)\nreadyz check passed\n"
        );
        assert!(
            !verbose.contains("maintenance"),
            "no reason in the twin's lines"
        );

        let service = Arc::make_mut(&mut s.services[0]);
        service.forced = Some(forced(Unhealthy));
        service.status = ServiceHealth::new(Unhealthy, DegradedPolicy::Serving, false);
        let (passed, _, body) = text(&s, &["db", "cache"], false);
        assert!(!passed, "excluding every check does not lift a drain");
        assert_eq!(
            body,
            "[+]cache excluded: ok\n[+]db excluded: ok (override until 2027-01-15T09:00:00Z)\n\
             [-]override failed: reason withheld (until 2027-01-15T09:00:00Z)\nreadyz check failed\n"
        );
    }
}
