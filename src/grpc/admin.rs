//! `healthgate.v1.Admin`: the control plane over gRPC (DESIGN §10) — push reports, overrides,
//! reloads. Served only with `[admin] token`; every call must carry
//! `authorization: Bearer TOKEN` (compared in constant time; a refusal is counted by the RPC
//! metrics as `UNAUTHENTICATED` and logged without the token), and every accepted call is
//! audited at info level: action, target, parameters, reason, caller (peer address).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::convert;
use super::pb::admin::admin_server::{Admin, AdminServer};
use super::pb::admin::{
    ChangeResponse, ClearRequest, ClearResponse, Input, OverrideRequest, OverrideResponse,
    PutRequest, RefreshRequest, RefreshResponse, ReloadRequest, ReloadResponse, RemoveRequest,
    ReportRequest, ReportResponse, ShowRequest, ShowResponse, ShownDependency, ShownService,
    TargetKind,
};
use crate::control::{ChangeRefused, ReloadError, Reloader, StateFile};
use crate::engine::Applied;
use crate::engine::{ChangeError, Reporter, Target};
use crate::{Handle, Health, auth};

/// The `healthgate.v1.Admin` implementation.
#[derive(Clone)]
pub struct AdminService {
    handle: Handle,
    access: auth::Access,
    reloader: Option<Arc<Reloader>>,
    state: Option<Arc<StateFile>>,
}

impl std::fmt::Debug for AdminService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminService")
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl AdminService {
    /// The service over `handle`, for callers presenting `token` or a client certificate
    /// with one of `identities` (when both are absent, nobody is admitted); `reloader` serves
    /// `Reload` (without one, `Reload` is `FAILED_PRECONDITION`: nothing was loaded from a
    /// file).
    pub fn new(
        handle: Handle,
        token: Option<String>,
        identities: Vec<String>,
        reloader: Option<Arc<Reloader>>,
    ) -> AdminService {
        let access = if token.is_none() && identities.is_empty() {
            // Never open: an admin service without credentials admits no one.
            auth::Access::nobody()
        } else {
            auth::Access::new(token, identities)
        };
        AdminService {
            handle,
            access,
            reloader,
            state: None,
        }
    }

    /// Overrides, clears and reports are written to `state` before they are answered (a
    /// runtime change is written by the reloader, which keeps the same file).
    pub fn keeping_state(mut self, state: Option<Arc<StateFile>>) -> AdminService {
        self.state = state;
        self
    }

    /// Waits until the state file holds what just changed; `INTERNAL` when it cannot be
    /// written (the change applied in memory, and the message says so).
    async fn saved(&self) -> Result<(), Status> {
        match &self.state {
            Some(state) => (state.save().await)
                .map_err(|e| Status::internal(format!("the change applied, but {e}"))),
            None => Ok(()),
        }
    }

    /// The tonic server.
    pub fn into_server(self) -> AdminServer<AdminService> {
        AdminServer::new(self).max_decoding_message_size(super::MAX_REQUEST_MESSAGE)
    }

    /// The caller, for the audit line: its peer address, and the client-certificate identity
    /// that admitted it.
    fn authorize<T>(&self, request: &Request<T>, action: &str) -> Result<String, Status> {
        let peer = request.extensions().get::<crate::listener::Peer>();
        let address = request
            .remote_addr()
            .map_or_else(|| "local socket".to_owned(), |a| a.to_string());
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.access.check(authorization, peer) {
            Some(auth::Granted::Identity(id)) => Ok(format!("{address} identity {id}")),
            Some(_) => Ok(address),
            None => {
                let caller = match peer.and_then(|p| p.identities.first()) {
                    Some(id) => format!("{address} identity {id}"),
                    None => address,
                };
                warn!(
                    action,
                    caller, "admin call refused: missing or wrong token, no allowed identity"
                );
                Err(Status::unauthenticated(
                    "a valid admin bearer token or an allowed client certificate is required",
                ))
            }
        }
    }
}

fn target(kind: i32, name: String) -> Result<Target, Status> {
    match TargetKind::try_from(kind) {
        Ok(TargetKind::Dependency) => Ok(Target::Dependency(name)),
        Ok(TargetKind::Service) => Ok(Target::Service(name)),
        _ => Err(Status::invalid_argument(
            "kind must be TARGET_KIND_DEPENDENCY or TARGET_KIND_SERVICE",
        )),
    }
}

fn health(h: i32) -> Result<Health, Status> {
    convert::from_health(h)
        .filter(|h| *h != Health::Unknown)
        .ok_or_else(|| Status::invalid_argument("health must be healthy, degraded or unhealthy"))
}

/// A refusal as a status: what the caller can act on, in its words.
fn refused(e: ChangeError) -> Status {
    let message = e.to_string();
    match e {
        ChangeError::UnknownDependency(_) | ChangeError::UnknownService(_) => {
            Status::not_found(message)
        }
        ChangeError::NotPush(_) => Status::failed_precondition(message),
        ChangeError::ShuttingDown => Status::unavailable(message),
        ChangeError::Unauthenticated(_) => Status::unauthenticated(message),
        _ => Status::invalid_argument(message),
    }
}

fn changed(applied: Applied) -> ChangeResponse {
    ChangeResponse {
        added_dependencies: applied.added_dependencies,
        replaced_dependencies: applied.replaced_dependencies,
        removed_dependencies: applied.removed_dependencies,
        added_services: applied.added_services,
        changed_services: applied.changed_services,
        removed_services: applied.removed_services,
    }
}

fn change_refused(e: ChangeRefused) -> Status {
    match e {
        ChangeRefused::Invalid(e) => Status::invalid_argument(e.to_string()),
        e @ ChangeRefused::InFile { .. } => Status::failed_precondition(e.to_string()),
        e @ ChangeRefused::Unknown { .. } => Status::not_found(e.to_string()),
        e @ ChangeRefused::Full { .. } => Status::resource_exhausted(e.to_string()),
        ChangeRefused::Rejected(e) => refused(e),
        e @ ChangeRefused::NotSaved(_) => Status::internal(e.to_string()),
    }
}

impl AdminService {
    fn reloader(&self) -> Result<&Reloader, Status> {
        self.reloader.as_deref().ok_or_else(|| {
            Status::failed_precondition("this server was not started from a config file")
        })
    }

    /// Audits and answers a runtime change.
    fn audited(
        &self,
        action: &str,
        name: &str,
        caller: &str,
        result: Result<Applied, ChangeRefused>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let applied = result.map_err(change_refused)?;
        info!(action, name, caller, "admin");
        Ok(Response::new(changed(applied)))
    }
}

/// A dependency's settings in one line, from its published thresholds.
fn settings(t: &crate::snapshot::Thresholds) -> String {
    let f = |d: Duration| humantime::format_duration(d).to_string();
    match t.mode {
        "push" => format!(
            "push, ttl {}, fall {}, rise {}",
            f(t.period),
            t.fall,
            t.rise
        ),
        "on_demand" => format!(
            "on demand, ttl {}, timeout {}, fall {}, rise {}",
            f(t.period),
            f(t.timeout),
            t.fall,
            t.rise
        ),
        _ => format!(
            "every {}, timeout {}, fall {}, rise {}",
            f(t.period),
            f(t.timeout),
            t.fall,
            t.rise
        ),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_dependency(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = self.authorize(&request, "add-dependency")?;
        let r = request.into_inner();
        let result = self.reloader()?.put_dependency(&r.name, &r.spec).await;
        self.audited("add-dependency", &r.name, &caller, result)
    }

    async fn set_service(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = self.authorize(&request, "set-service")?;
        let r = request.into_inner();
        let result = self.reloader()?.put_service(&r.name, &r.spec).await;
        self.audited("set-service", &r.name, &caller, result)
    }

    async fn remove_dependency(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = self.authorize(&request, "remove-dependency")?;
        let r = request.into_inner();
        let result = self.reloader()?.remove_dependency(&r.name).await;
        self.audited("remove-dependency", &r.name, &caller, result)
    }

    async fn remove_service(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<ChangeResponse>, Status> {
        let caller = self.authorize(&request, "remove-service")?;
        let r = request.into_inner();
        let result = self.reloader()?.remove_service(&r.name).await;
        self.audited("remove-service", &r.name, &caller, result)
    }

    async fn show(&self, request: Request<ShowRequest>) -> Result<Response<ShowResponse>, Status> {
        self.authorize(&request, "show")?;
        let reloader = self.reloader()?;
        let (dependency_origins, service_origins) = reloader.origins();
        let snapshot = self.handle.snapshot();
        let origin = |map: &std::collections::BTreeMap<String, crate::control::Origin>, n: &str| {
            map.get(n).map_or("library", |o| o.as_str()).to_owned()
        };
        Ok(Response::new(ShowResponse {
            config_hash: reloader.status().hash,
            dependencies: snapshot
                .dependencies
                .iter()
                .map(|d| ShownDependency {
                    name: d.name.to_string(),
                    origin: origin(&dependency_origins, &d.name),
                    kind: d.kind.to_owned(),
                    target: d.target.to_string(),
                    settings: settings(&d.thresholds),
                    forced: d.forced.as_deref().map(convert::forced),
                })
                .collect(),
            services: snapshot
                .services
                .iter()
                .map(|s| ShownService {
                    name: s.name.to_string(),
                    origin: origin(&service_origins, &s.name),
                    inputs: s
                        .inputs
                        .iter()
                        .map(|(d, i)| Input {
                            dependency: d.to_string(),
                            impact: convert::impact(*i),
                        })
                        .collect(),
                    degraded_serves: s.degraded == crate::config::DegradedPolicy::Serving,
                    forced: s.forced.as_deref().map(convert::forced),
                })
                .collect(),
        }))
    }
    async fn report(
        &self,
        request: Request<ReportRequest>,
    ) -> Result<Response<ReportResponse>, Status> {
        let caller = self.authorize(&request, "report")?;
        let r = request.into_inner();
        let health = health(r.health)?;
        let reason = (!r.reason.is_empty()).then_some(r.reason);
        self.handle
            .report(&r.dependency, health, reason.clone(), Reporter::Admin)
            .await
            .map_err(refused)?;
        self.saved().await?;
        info!(
            action = "report",
            dependency = %r.dependency,
            health = %health,
            reason = reason.as_deref().unwrap_or(""),
            caller,
            "admin"
        );
        Ok(Response::new(ReportResponse {}))
    }

    async fn r#override(
        &self,
        request: Request<OverrideRequest>,
    ) -> Result<Response<OverrideResponse>, Status> {
        let caller = self.authorize(&request, "override")?;
        let r = request.into_inner();
        let target = target(r.kind, r.name)?;
        let health = health(r.health)?;
        let duration = r
            .duration
            .and_then(|d| Duration::try_from(d).ok())
            .ok_or_else(|| Status::invalid_argument("a duration above zero is required"))?;
        let forced = self
            .handle
            .set_override(target.clone(), health, duration, r.reason)
            .await
            .map_err(refused)?;
        self.saved().await?;
        info!(
            action = "override",
            kind = target.kind(),
            name = target.name(),
            health = %health,
            duration = %humantime::format_duration(duration),
            until = %humantime::format_rfc3339_seconds(forced.until),
            reason = %forced.reason,
            caller,
            "admin"
        );
        Ok(Response::new(OverrideResponse {
            until: Some(convert::timestamp(forced.until)),
        }))
    }

    async fn clear(
        &self,
        request: Request<ClearRequest>,
    ) -> Result<Response<ClearResponse>, Status> {
        let caller = self.authorize(&request, "clear")?;
        let r = request.into_inner();
        let target = target(r.kind, r.name)?;
        let was_active = self
            .handle
            .clear_override(target.clone())
            .await
            .map_err(refused)?;
        self.saved().await?;
        info!(
            action = "clear",
            kind = target.kind(),
            name = target.name(),
            was_active,
            caller,
            "admin"
        );
        Ok(Response::new(ClearResponse { was_active }))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let caller = self.authorize(&request, "refresh")?;
        let name = request.into_inner().dependency;
        self.handle.refresh(&name).await.map_err(|e| match e {
            e @ ChangeError::NotProbed(_) => Status::failed_precondition(e.to_string()),
            e => refused(e),
        })?;
        info!(action = "refresh", dependency = %name, caller, "admin");
        Ok(Response::new(RefreshResponse {}))
    }

    async fn reload(
        &self,
        request: Request<ReloadRequest>,
    ) -> Result<Response<ReloadResponse>, Status> {
        let caller = self.authorize(&request, "reload")?;
        let Some(reloader) = &self.reloader else {
            return Err(Status::failed_precondition(
                "this server was not started from a config file",
            ));
        };
        info!(action = "reload", caller, "admin");
        let applied = reloader.reload("admin").await.map_err(|e| match e {
            ReloadError::ShuttingDown => Status::unavailable("shutting down"),
            e => Status::invalid_argument(e.to_string()),
        })?;
        Ok(Response::new(ReloadResponse {
            hash: reloader.status().hash,
            added_dependencies: applied.added_dependencies,
            replaced_dependencies: applied.replaced_dependencies,
            removed_dependencies: applied.removed_dependencies,
            kept_dependencies: u32::try_from(applied.kept_dependencies).unwrap_or(u32::MAX),
            added_services: applied.added_services,
            changed_services: applied.changed_services,
            removed_services: applied.removed_services,
        }))
    }
}
