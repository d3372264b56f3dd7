//! HTTP handlers, one module per resource. Each module exposes `router()`, an
//! `OpenApiRouter` whose handlers carry `#[utoipa::path]`, so the OpenAPI document is generated
//! from the same registrations that serve requests. Add a resource by writing a module with a
//! `router()` and merging it in [`api`].

pub mod admin;
pub mod admin_builds;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod capsules;
pub mod events;
pub mod exec;
pub mod files;
pub mod health;
pub mod hosts;
pub mod me;
pub mod prometheus;
pub mod snapshots;
pub mod teams;
pub mod terminal;
pub mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

/// Every API route (paths start with `/v1/…`, plus `/health`).
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(prometheus::router())
        .merge(auth::router())
        .merge(me::router())
        .merge(api_keys::router())
        .merge(teams::router())
        .merge(users::router())
        .merge(audit::router())
        .merge(capsules::router())
        .merge(snapshots::router())
        .merge(events::router())
        .merge(exec::router())
        .merge(files::router())
        .merge(terminal::router())
        .merge(admin_builds::router())
        .merge(admin::router())
        .merge(hosts::router())
}

/// Timestamps on the wire (spec §B.0).
pub(crate) fn ts(unix: i64) -> String {
    crate::time::format_rfc3339(unix)
}

/// `{"message": …}` bodies.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

/// A user route whose `{id}` must be the team the caller's token is scoped to.
pub(crate) fn current_team(
    p: &crate::auth::UserPrincipal,
    id: &str,
) -> Result<crate::ids::TeamId, ApiError> {
    let team = crate::ids::TeamId::parse(id)?;
    if team != p.team_id {
        return Err(ApiError::forbidden(
            "this token is scoped to another team; use switch-team first",
        ));
    }
    Ok(team)
}
