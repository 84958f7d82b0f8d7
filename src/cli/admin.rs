//! `healthgate admin [--addr HOST:PORT] [--token T] VERB …`: the control plane's CLI, a client
//! of `healthgate.v1.Admin`.
//!
//! Exit codes: 0 done, 1 bad arguments, 2 connection failure, 3 rejected by the server (its
//! reason on stderr, one problem per line; unauthenticated; unknown name).

use std::process::ExitCode;
use std::time::Duration;

use healthgate::grpc::pb::admin::admin_client::AdminClient;
use healthgate::grpc::pb::admin::{
    ChangeResponse, ClearRequest, OverrideRequest, PutRequest, RefreshRequest, ReloadRequest,
    RemoveRequest, ReportRequest, ShowRequest, TargetKind,
};
use healthgate::grpc::pb::detail::Health as PbHealth;
use tonic::transport::Endpoint;

#[derive(Debug, clap::Args)]
pub(crate) struct AdminArgs {
    /// The server's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// The admin token (`[admin] token`).
    #[arg(long, env = "HEALTHGATE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait for the connection and the answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Report a push dependency's health.
    Report {
        dependency: String,
        health: HealthArg,
        /// Why (degraded and unhealthy reports).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Force a dependency's or a service's health until it expires.
    Override {
        kind: KindArg,
        name: String,
        health: HealthArg,
        /// How long (at most 7d), e.g. 30m.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (required; shown in detail and the audit log).
        #[arg(long)]
        reason: String,
    },
    /// End an override now.
    Clear { kind: KindArg, name: String },
    /// Probe a dependency now (bypassing interval, cache and failure back-off).
    Refresh { dependency: String },
    /// Re-read the config file, as SIGHUP does.
    Reload,
    /// Add or replace a runtime dependency (not one the file defines).
    AddDependency {
        name: String,
        /// The keys of a `[dependencies.NAME]` table, e.g. 'kind = "tcp"\naddress = "db:5432"'.
        #[arg(long)]
        spec: String,
    },
    /// Add or replace a runtime service.
    SetService {
        name: String,
        /// The keys of a `[services.NAME]` table, e.g. 'dependencies = { db = "critical" }'.
        #[arg(long)]
        spec: String,
    },
    /// Remove a runtime dependency.
    RemoveDependency { name: String },
    /// Remove a runtime service.
    RemoveService { name: String },
    /// The configuration in force: each dependency and service, where it comes from, and
    /// every active override.
    Show,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum HealthArg {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Dependency,
    Service,
}

impl HealthArg {
    fn wire(self) -> i32 {
        (match self {
            HealthArg::Healthy => PbHealth::Healthy,
            HealthArg::Degraded => PbHealth::Degraded,
            HealthArg::Unhealthy => PbHealth::Unhealthy,
        }) as i32
    }
}

impl KindArg {
    fn wire(self) -> i32 {
        (match self {
            KindArg::Dependency => TargetKind::Dependency,
            KindArg::Service => TargetKind::Service,
        }) as i32
    }
}

pub(crate) async fn run(args: AdminArgs) -> ExitCode {
    let Some(token) = args.token.filter(|t| !t.is_empty()) else {
        eprintln!("error: an admin token is required (--token or HEALTHGATE_ADMIN_TOKEN)");
        return ExitCode::from(1);
    };
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let endpoint = match Endpoint::from_shared(url) {
        Ok(e) => e.connect_timeout(args.timeout).timeout(args.timeout),
        Err(e) => {
            eprintln!("error: bad --addr {:?}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to {}: {e}", args.addr);
            return ExitCode::from(2);
        }
    };
    let bearer = match format!("Bearer {token}").parse::<tonic::metadata::MetadataValue<_>>() {
        Ok(v) => v,
        Err(_) => {
            eprintln!("error: the token cannot be sent in a header");
            return ExitCode::from(1);
        }
    };
    let mut client = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    let result = match args.verb {
        Verb::Report {
            dependency,
            health,
            reason,
        } => client
            .report(ReportRequest {
                dependency: dependency.clone(),
                health: health.wire(),
                reason: reason.unwrap_or_default(),
            })
            .await
            .map(|_| format!("reported {dependency}")),
        Verb::Override {
            kind,
            name,
            health,
            duration,
            reason,
        } => {
            let Ok(duration) = prost_types::Duration::try_from(duration) else {
                eprintln!("error: --for is too long");
                return ExitCode::from(1);
            };
            client
                .r#override(OverrideRequest {
                    kind: kind.wire(),
                    name: name.clone(),
                    health: health.wire(),
                    duration: Some(duration),
                    reason,
                })
                .await
                .map(|r| {
                    let until = r
                        .into_inner()
                        .until
                        .and_then(|t| std::time::SystemTime::try_from(t).ok())
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_default();
                    format!("{name} overridden until {until}")
                })
        }
        Verb::Clear { kind, name } => client
            .clear(ClearRequest {
                kind: kind.wire(),
                name: name.clone(),
            })
            .await
            .map(|r| {
                if r.into_inner().was_active {
                    format!("override of {name} cleared")
                } else {
                    format!("{name} had no override")
                }
            }),
        Verb::Reload => client.reload(ReloadRequest {}).await.map(|r| {
            let r = r.into_inner();
            format!(
                "reloaded {}: {} added, {} replaced, {} removed, {} kept",
                r.hash,
                r.added_dependencies.len(),
                r.replaced_dependencies.len(),
                r.removed_dependencies.len(),
                r.kept_dependencies
            )
        }),
        Verb::AddDependency { name, spec } => client
            .add_dependency(PutRequest { name, spec })
            .await
            .map(|r| summary(&r.into_inner())),
        Verb::SetService { name, spec } => client
            .set_service(PutRequest { name, spec })
            .await
            .map(|r| summary(&r.into_inner())),
        Verb::RemoveDependency { name } => client
            .remove_dependency(RemoveRequest { name })
            .await
            .map(|r| summary(&r.into_inner())),
        Verb::RemoveService { name } => client
            .remove_service(RemoveRequest { name })
            .await
            .map(|r| summary(&r.into_inner())),
        Verb::Refresh { dependency } => client
            .refresh(RefreshRequest {
                dependency: dependency.clone(),
            })
            .await
            .map(|_| format!("probing {dependency} now")),
        Verb::Show => client
            .show(ShowRequest {})
            .await
            .map(|r| show(&r.into_inner())),
    };
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(status)
            if status.code() == tonic::Code::Unavailable
                && status.message().contains("connect") =>
        {
            eprintln!("error: cannot reach {}: {}", args.addr, status.message());
            ExitCode::from(2)
        }
        Err(status) => {
            for line in status.message().lines() {
                eprintln!("{line}");
            }
            if status.message().is_empty() {
                eprintln!("rejected: {:?}", status.code());
            }
            ExitCode::from(3)
        }
    }
}

/// What a runtime change did, one line.
fn summary(r: &ChangeResponse) -> String {
    let part = |what: &str, names: &[String]| {
        let names: Vec<&str> = (names.iter())
            .map(|n| if n.is_empty() { "\"\"" } else { n.as_str() })
            .collect();
        (!names.is_empty()).then(|| format!("{what} {}", names.join(", ")))
    };
    let parts: Vec<String> = [
        part("added dependency", &r.added_dependencies),
        part("replaced dependency", &r.replaced_dependencies),
        part("removed dependency", &r.removed_dependencies),
        part("added service", &r.added_services),
        part("changed service", &r.changed_services),
        part("removed service", &r.removed_services),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "nothing changed".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The configuration in force as text: one line per item.
fn show(r: &healthgate::grpc::pb::admin::ShowResponse) -> String {
    let forced = |o: &Option<healthgate::grpc::pb::detail::Override>| {
        o.as_ref().map_or(String::new(), |o| {
            let until = o
                .until
                .and_then(|t| std::time::SystemTime::try_from(t).ok())
                .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                .unwrap_or_default();
            format!(
                "  override {} until {until}: {}",
                o.health()
                    .as_str_name()
                    .trim_start_matches("HEALTH_")
                    .to_lowercase(),
                o.reason
            )
        })
    };
    let mut out = format!("config {}\ndependencies:\n", r.config_hash);
    for d in &r.dependencies {
        out.push_str(&format!(
            "  {} [{}] {} {} ({}){}\n",
            d.name,
            d.origin,
            d.kind,
            d.target,
            d.settings,
            forced(&d.forced)
        ));
    }
    out.push_str("services:\n");
    for s in &r.services {
        let inputs: Vec<String> = s
            .inputs
            .iter()
            .map(|i| {
                format!(
                    "{} {}",
                    i.dependency,
                    i.impact()
                        .as_str_name()
                        .trim_start_matches("IMPACT_")
                        .to_lowercase()
                )
            })
            .collect();
        let name = if s.name.is_empty() { "\"\"" } else { &s.name };
        out.push_str(&format!(
            "  {name} [{}] {{ {} }}{}\n",
            s.origin,
            inputs.join(", "),
            forced(&s.forced)
        ));
    }
    out.trim_end().to_owned()
}
