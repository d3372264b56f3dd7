//! `GET /v1/audit-logs` (spec §B.12): newest first, cursor-paginated, filterable.

use axum::extract::{RawQuery, State};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::ts;
use crate::auth::UserPrincipal;
use crate::db::audit::{AuditFilter, list};
use crate::error::{ApiError, ApiResult, ErrorBody, Json};
use crate::ids::AuditLogId;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(audit_logs))
}

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    id: AuditLogId,
    /// `user`, `api_key` or `system`.
    actor_type: String,
    actor_id: String,
    actor_name: String,
    resource_type: String,
    resource_id: String,
    action: String,
    /// `team` or `admin`.
    scope: String,
    /// `success`, `info`, `warning` or `error`.
    status: String,
    metadata: serde_json::Value,
    created_at: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `before` (with `before_id`) for the next page; absent on an empty page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before_id: Option<AuditLogId>,
}

/// The current team's audit log. Members see `team` events; owners and admins also `admin` ones.
#[utoipa::path(get, path = "/v1/audit-logs", tag = "audit",
    params(
        ("before" = Option<String>, Query, description = "RFC 3339 cursor: entries older than this"),
        ("before_id" = Option<String>, Query, description = "`log-…` tie-breaker for `before`"),
        ("limit" = Option<i64>, Query, description = "1..=200, default 50"),
        ("resource_type" = Option<Vec<String>>, Query, description = "repeatable or comma-separated, OR-matched"),
        ("action" = Option<Vec<String>>, Query, description = "repeatable or comma-separated, OR-matched"),
    ),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody)))]
async fn audit_logs(
    State(state): State<AppState>,
    p: UserPrincipal,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<AuditPage>> {
    // Parsed by hand: serde_urlencoded can't collect repeated keys into a Vec.
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))?;
    let mut filter = AuditFilter {
        team: p.team_id,
        scopes: if p.user.role.can_manage() {
            vec!["team", "admin"]
        } else {
            vec!["team"]
        },
        resource_types: Vec::new(),
        actions: Vec::new(),
        before: None,
        limit: DEFAULT_LIMIT,
    };
    let mut before = None;
    let mut before_id = None;
    for (key, value) in pairs {
        let values = || {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        match key.as_str() {
            "resource_type" => filter.resource_types.extend(values()),
            "action" => filter.actions.extend(values()),
            "limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| ApiError::invalid(format!("limit must be 1 to {MAX_LIMIT}")))?;
            }
            "before" => {
                before =
                    Some(crate::time::parse_rfc3339(&value).ok_or_else(|| {
                        ApiError::invalid("before must be an RFC 3339 timestamp")
                    })?);
            }
            "before_id" => before_id = Some(AuditLogId::parse(&value)?),
            _ => {}
        }
    }
    filter.before = match (before, before_id) {
        (Some(at), id) => Some((at, id)),
        (None, Some(_)) => return Err(ApiError::invalid("before_id needs before")),
        (None, None) => None,
    };
    let rows = list(state.pool(), &filter).await?;
    let last = rows.last().map(|r| (ts(r.created_at), r.id));
    Ok(Json(AuditPage {
        items: rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                actor_type: r.actor_type,
                actor_id: r.actor_id,
                actor_name: r.actor_name,
                resource_type: r.resource_type,
                resource_id: r.resource_id,
                action: r.action,
                scope: r.scope,
                status: r.status,
                metadata: r.metadata,
                created_at: ts(r.created_at),
            })
            .collect(),
        next_before: last.as_ref().map(|(t, _)| t.clone()),
        next_before_id: last.map(|(_, id)| id),
    }))
}
