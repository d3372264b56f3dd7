//! Capsule access for request handlers: id → team-scoped row → host → agent client.
//!
//! - [`running`]: routes that need a live guest (exec, processes, files, PTY, ping, proxy).
//!   Bad id → 400 `invalid_request`; absent or another team's → 404 `not_found` (never 403);
//!   status ≠ `running` → 409 `invalid_state` "sandbox is not running (status: X)"; running but
//!   without a reachable host address → 503 `host_unavailable`.
//! - [`any_status`]: routes also allowed on paused/stopped capsules (get, resume, snapshot,
//!   destroy, metrics). Same 400/404; the host is optional ([`CapsuleRef::host`]), and
//!   [`CapsuleRef::on_host`] turns it into a [`CapsuleHandle`] when an agent call is needed.
//! - [`by_id_unscoped`]: the subdomain proxy (spec §A.3: the capsule id is the capability).
//! - [`touch`]: bumps `last_active_at` after activity (the agent resets its own inactivity timer
//!   on every RPC it serves).
//!
//! Reads the `sandboxes` and `hosts` columns directly (small queries, no repository module).

use std::sync::Arc;

use axum::http::StatusCode;
use sqlx::any::AnyRow;

use crate::agent::AgentClient;
use crate::auth::Principal;
use crate::db::{self, DbResult, id, opt_id, opt_text, text};
use crate::error::{ApiError, ApiResult};
use crate::ids::{CapsuleId, HostId, TeamId};
use crate::state::AppState;

pub const RUNNING: &str = "running";

/// A running capsule and the agent that serves it.
#[derive(Clone)]
pub struct CapsuleHandle {
    pub id: CapsuleId,
    pub team_id: TeamId,
    pub status: String,
    pub host_id: HostId,
    /// `hosts.address` as stored (`host:port` or `http://host:port`).
    pub address: String,
    pub agent: Arc<AgentClient>,
}

impl std::fmt::Debug for CapsuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapsuleHandle")
            .field("id", &self.id)
            .field("team_id", &self.team_id)
            .field("status", &self.status)
            .field("host_id", &self.host_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl CapsuleHandle {
    /// The id as the agent knows it (`cl-…`, same wire form as the API).
    pub fn sandbox_id(&self) -> String {
        self.id.to_string()
    }

    /// Plain-HTTP base URL of the agent (for its `/proxy/{id}/{port}/…`).
    pub fn agent_base_url(&self) -> ApiResult<String> {
        Ok(crate::agent::base_url(&self.address)?)
    }
}

/// The host a capsule is placed on.
#[derive(Clone)]
pub struct HostLink {
    pub id: HostId,
    pub address: String,
    pub agent: Arc<AgentClient>,
}

impl std::fmt::Debug for HostLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLink")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A capsule in any status; `host` is `None` when it has no host or the host has no address.
#[derive(Debug, Clone)]
pub struct CapsuleRef {
    pub id: CapsuleId,
    pub team_id: TeamId,
    pub status: String,
    pub host: Option<HostLink>,
}

impl CapsuleRef {
    /// The capsule with its agent; 503 `host_unavailable` when it has none.
    pub fn on_host(self) -> ApiResult<CapsuleHandle> {
        let Some(host) = self.host else {
            return Err(no_host());
        };
        Ok(CapsuleHandle {
            id: self.id,
            team_id: self.team_id,
            status: self.status,
            host_id: host.id,
            address: host.address,
            agent: host.agent,
        })
    }
}

/// The raw row: capsule, team, status, host id, host address.
#[derive(Debug, Clone)]
pub struct CapsuleRow {
    pub id: CapsuleId,
    pub team_id: TeamId,
    pub status: String,
    pub host_id: Option<HostId>,
    pub host_address: Option<String>,
}

fn from_row(row: &AnyRow) -> DbResult<CapsuleRow> {
    Ok(CapsuleRow {
        id: id(row, "id")?,
        team_id: id(row, "team_id")?,
        status: text(row, "status")?,
        host_id: opt_id(row, "host_id")?,
        host_address: opt_text(row, "address")?,
    })
}

const SELECT: &str = "SELECT s.id, s.team_id, s.status, s.host_id, h.address \
     FROM sandboxes s LEFT JOIN hosts h ON h.id = s.host_id WHERE s.id = $1";
const SELECT_SCOPED: &str = "SELECT s.id, s.team_id, s.status, s.host_id, h.address \
     FROM sandboxes s LEFT JOIN hosts h ON h.id = s.host_id WHERE s.id = $1 AND s.team_id = $2";

/// The capsule row when it belongs to `team`.
pub async fn load(
    state: &AppState,
    team: TeamId,
    capsule: CapsuleId,
) -> DbResult<Option<CapsuleRow>> {
    let row = sqlx::query(SELECT_SCOPED)
        .bind(capsule.db())
        .bind(team.db())
        .fetch_optional(state.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The capsule row regardless of team (subdomain proxy only).
pub async fn by_id_unscoped(state: &AppState, capsule: CapsuleId) -> DbResult<Option<CapsuleRow>> {
    let row = sqlx::query(SELECT)
        .bind(capsule.db())
        .fetch_optional(state.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Parses `id` (400) and loads it for the caller's team (404).
async fn scoped(state: &AppState, principal: &Principal, id: &str) -> ApiResult<CapsuleRow> {
    let capsule = CapsuleId::parse(id)?;
    load(state, principal.team_id, capsule)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("capsule {capsule} not found")))
}

fn link(state: &AppState, row: &CapsuleRow) -> ApiResult<Option<HostLink>> {
    let (Some(host), Some(address)) = (row.host_id, row.host_address.as_deref()) else {
        return Ok(None);
    };
    if address.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(HostLink {
        id: host,
        address: address.to_owned(),
        agent: state.agents().client(address)?,
    }))
}

fn no_host() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "host_unavailable",
        "the capsule's host is not reachable",
    )
}

/// 409 `invalid_state` with the spec's message.
pub fn not_running(status: &str) -> ApiError {
    ApiError::invalid_state(format!("sandbox is not running (status: {status})"))
}

/// A running capsule of the caller's team, with its agent client.
pub async fn running(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<CapsuleHandle> {
    let row = scoped(state, principal, id).await?;
    handle_if_running(state, row)
}

/// Status check + agent lookup for a loaded row (shared with the proxy).
pub fn handle_if_running(state: &AppState, row: CapsuleRow) -> ApiResult<CapsuleHandle> {
    if row.status != RUNNING {
        return Err(not_running(&row.status));
    }
    let host = link(state, &row)?;
    CapsuleRef {
        id: row.id,
        team_id: row.team_id,
        status: row.status,
        host,
    }
    .on_host()
}

/// A capsule of the caller's team in any status.
pub async fn any_status(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<CapsuleRef> {
    let row = scoped(state, principal, id).await?;
    let host = link(state, &row)?;
    Ok(CapsuleRef {
        id: row.id,
        team_id: row.team_id,
        status: row.status,
        host,
    })
}

/// Records activity (`last_active_at` = now). Failures are logged, not returned: activity
/// bookkeeping must not fail the operation that already succeeded.
pub async fn touch(state: &AppState, capsule: CapsuleId) {
    let result = sqlx::query("UPDATE sandboxes SET last_active_at = $1 WHERE id = $2")
        .bind(crate::time::now())
        .bind(capsule.db())
        .execute(state.pool())
        .await;
    if let Err(e) = result {
        tracing::warn!(%capsule, error = %db::DbError::from(e), "updating last_active_at");
    }
}
