//! `/v1/hosts` (spec §B.10), the read side: platform admins see every host, other users the
//! BYOC hosts of their team. Registration, tokens and heartbeats come with multi-host support.

use axum::extract::State;
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::ts;
use crate::auth::UserPrincipal;
use crate::db::hosts::{self, HostRow};
use crate::db::teams;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::ids::{HostId, TeamId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(get_host))
}

/// A host (spec §B.10 "Host object"); zero or empty optional fields are omitted.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Host {
    id: HostId,
    /// `regular` or `byoc`.
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<TeamId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_name: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    arch: String,
    #[serde(skip_serializing_if = "is_zero")]
    cpu_cores: i64,
    #[serde(skip_serializing_if = "is_zero")]
    memory_mb: i64,
    #[serde(skip_serializing_if = "is_zero")]
    disk_gb: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    address: String,
    /// `pending`, `online`, `offline`, `draining` or `unreachable`.
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_heartbeat_at: Option<String>,
    created_at: String,
    updated_at: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

async fn view(state: &AppState, h: HostRow) -> ApiResult<Host> {
    let team_name = match h.team_id {
        Some(t) => teams::by_id(state.pool(), t).await?.map(|t| t.name),
        None => None,
    };
    Ok(Host {
        id: h.id,
        kind: h.kind,
        team_id: h.team_id,
        team_name,
        arch: h.arch,
        cpu_cores: h.cpu_cores,
        memory_mb: h.memory_mb,
        disk_gb: h.disk_gb,
        address: h.address,
        status: h.status,
        last_heartbeat_at: h.last_heartbeat_at.map(ts),
        created_at: ts(h.created_at),
        updated_at: ts(h.updated_at),
    })
}

/// Hosts: all of them for platform admins, the team's BYOC hosts for everyone else.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<Host>), (status = 401, body = ErrorBody)))]
async fn list_hosts(State(state): State<AppState>, p: UserPrincipal) -> ApiResult<Json<Vec<Host>>> {
    let rows = if p.user.is_admin {
        hosts::list_all(state.pool()).await?
    } else {
        hosts::list_for_team(state.pool(), p.team_id).await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for h in rows {
        out.push(view(&state, h).await?);
    }
    Ok(Json(out))
}

/// One host (404 when it is not visible to the caller).
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Host), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_host(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Host>> {
    let id = HostId::parse(&id)?;
    match hosts::get(state.pool(), id).await? {
        Some(h) if p.user.is_admin || h.team_id == Some(p.team_id) => {
            Ok(Json(view(&state, h).await?))
        }
        _ => Err(ApiError::not_found("host not found")),
    }
}
