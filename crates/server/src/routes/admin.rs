//! `/v1/admin/*` (spec §B.13): platform administration for the dashboard: users (activate,
//! deactivate, grant or revoke admin), teams (list, delete) and templates (list all, delete a
//! platform template). Every route needs a user login whose `is_admin` flag is set in the
//! database at the time of the request ([`AdminPrincipal`]).

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::ts;
use crate::audit::{self, AuditActor, AuditEvent, Scope};
use crate::auth::{Principal, UserPrincipal};
use crate::db::teams::Role;
use crate::db::users::UserStatus;
use crate::db::{admin, sessions, teams, templates, users};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::ids::{TeamId, UserId};
use crate::lifecycle;
use crate::state::AppState;

/// Admin lists are paged, 100 rows a page (spec §B.0 "Pagination").
const PER_PAGE: i64 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(set_user_active))
        .routes(routes!(set_user_admin))
        .routes(routes!(list_teams))
        .routes(routes!(delete_team))
        .routes(routes!(list_templates))
        .routes(routes!(delete_template))
}

/// A user login (JWT or session) of an active platform admin. `is_admin` is re-read from the
/// database by [`UserPrincipal`] on every request, so a revoked admin loses access at once.
#[derive(Debug, Clone)]
pub struct AdminPrincipal(pub UserPrincipal);

impl<S> FromRequestParts<S> for AdminPrincipal
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let p = UserPrincipal::from_request_parts(parts, state).await?;
        if !p.user.is_admin {
            return Err(ApiError::forbidden("platform admins only"));
        }
        Ok(AdminPrincipal(p))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number (default 1).
    page: Option<i64>,
}

impl PageQuery {
    fn page(&self) -> ApiResult<i64> {
        match self.page {
            None => Ok(1),
            Some(p) if (1..=1_000_000).contains(&p) => Ok(p),
            Some(_) => Err(ApiError::invalid("page must be a positive integer")),
        }
    }
}

fn total_pages(total: i64) -> i64 {
    (total + PER_PAGE - 1) / PER_PAGE
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminUser {
    id: UserId,
    email: String,
    name: String,
    is_admin: bool,
    /// `inactive`, `active` or `disabled`.
    status: String,
    created_at: String,
    teams_joined: i64,
    teams_owned: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminUserPage {
    users: Vec<AdminUser>,
    total: i64,
    page: i64,
    per_page: i64,
    total_pages: i64,
}

/// Every account (deleted ones excepted), 100 a page.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", params(PageQuery),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = AdminUserPage), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<AdminUserPage>> {
    let page = q.page()?;
    let (rows, total) = admin::users(state.pool(), PER_PAGE, (page - 1) * PER_PAGE).await?;
    Ok(Json(AdminUserPage {
        users: rows
            .into_iter()
            .map(|u| AdminUser {
                id: u.id,
                email: u.email,
                name: u.name,
                is_admin: u.is_admin,
                status: u.status,
                created_at: ts(u.created_at),
                teams_joined: u.teams_joined,
                teams_owned: u.teams_owned,
            })
            .collect(),
        total,
        page,
        per_page: PER_PAGE,
        total_pages: total_pages(total),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetActive {
    active: bool,
}

async fn target_user(state: &AppState, id: &str) -> ApiResult<users::User> {
    let id = UserId::parse(id)?;
    match users::by_id(state.pool(), id).await? {
        Some(u) if u.status != UserStatus::Deleted => Ok(u),
        _ => Err(ApiError::not_found("user not found")),
    }
}

/// Activate or deactivate an account. Deactivating ends the user's sessions, deletes the API
/// keys they created and destroys the capsules of the teams they own; admins cannot deactivate
/// themselves (400).
#[utoipa::path(put, path = "/v1/admin/users/{id}/active", tag = "admin",
    params(("id" = String, Path)), request_body = SetActive,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn set_user_active(
    State(state): State<AppState>,
    AdminPrincipal(p): AdminPrincipal,
    Path(id): Path<String>,
    Json(req): Json<SetActive>,
) -> ApiResult<StatusCode> {
    let user = target_user(&state, &id).await?;
    if user.id == p.user.id && !req.active {
        return Err(ApiError::invalid("you cannot deactivate your own account"));
    }
    let now = crate::time::now();
    let (status, action) = if req.active {
        (UserStatus::Active, "activate")
    } else {
        (UserStatus::Disabled, "deactivate")
    };
    if user.status == status {
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    if req.active && user.status == UserStatus::Inactive {
        // First activation: the same path as the activation link (default team etc.).
        let mut user = user.clone();
        crate::accounts::activate(&mut tx, &mut user).await?;
    } else {
        users::set_status(&mut *tx, user.id, status, now).await?;
    }
    let mut owned = Vec::new();
    if !req.active {
        sessions::delete_for_user(&mut *tx, user.id).await?;
        admin::delete_keys_created_by(&mut *tx, user.id).await?;
        for m in teams::of_user(&mut *tx, user.id).await? {
            if m.role == Role::Owner {
                owned.push(m.team.id);
            }
        }
    }
    audit::record(
        &mut *tx,
        TeamId::PLATFORM,
        &p.actor(),
        AuditEvent::new("user", user.id.to_string(), action)
            .scope(Scope::Admin)
            .metadata(serde_json::json!({ "email": user.email })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    for team in owned {
        destroy_team_capsules(&state, &p, team).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Starts destroying every active capsule of `team` on the admin's behalf; failures are logged
/// (the reconciler settles what is left).
async fn destroy_team_capsules(state: &AppState, p: &UserPrincipal, team: TeamId) {
    let ids = match teams::active_capsules(state.pool(), team).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(%team, error = %e, "listing capsules to destroy failed");
            return;
        }
    };
    let principal = Principal {
        team_id: team,
        actor: p.actor(),
    };
    for id in ids {
        if let Err(e) = lifecycle::destroy(state, &principal, &id.to_string()).await {
            tracing::warn!(capsule = %id, error = ?e, "admin: destroying capsule failed");
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetAdmin {
    admin: bool,
}

/// Grant or revoke platform admin. The last active admin cannot be revoked (400).
#[utoipa::path(put, path = "/v1/admin/users/{id}/admin", tag = "admin",
    params(("id" = String, Path)), request_body = SetAdmin,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn set_user_admin(
    State(state): State<AppState>,
    AdminPrincipal(p): AdminPrincipal,
    Path(id): Path<String>,
    Json(req): Json<SetAdmin>,
) -> ApiResult<StatusCode> {
    let user = target_user(&state, &id).await?;
    if user.is_admin == req.admin {
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    if !req.admin && user.status == UserStatus::Active && admin::count_admins(&mut *tx).await? <= 1
    {
        return Err(ApiError::invalid("cannot revoke the last platform admin"));
    }
    users::set_admin(&mut *tx, user.id, req.admin, crate::time::now()).await?;
    audit::record(
        &mut *tx,
        TeamId::PLATFORM,
        &p.actor(),
        AuditEvent::new(
            "user",
            user.id.to_string(),
            if req.admin {
                "grant_admin"
            } else {
                "revoke_admin"
            },
        )
        .scope(Scope::Admin)
        .metadata(serde_json::json!({ "email": user.email })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminTeam {
    id: TeamId,
    name: String,
    slug: String,
    is_byoc: bool,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_at: Option<String>,
    member_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_email: Option<String>,
    active_sandbox_count: i64,
    /// Notification channels are not implemented; always 0.
    channel_count: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminTeamPage {
    teams: Vec<AdminTeam>,
    total: i64,
    page: i64,
    per_page: i64,
    total_pages: i64,
}

/// Every team but the platform team (deleted ones too, with `deleted_at`), 100 a page.
#[utoipa::path(get, path = "/v1/admin/teams", tag = "admin", params(PageQuery),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = AdminTeamPage), (status = 403, body = ErrorBody)))]
async fn list_teams(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(q): Query<PageQuery>,
) -> ApiResult<Json<AdminTeamPage>> {
    let page = q.page()?;
    let (rows, total) = admin::teams(state.pool(), PER_PAGE, (page - 1) * PER_PAGE).await?;
    Ok(Json(AdminTeamPage {
        teams: rows
            .into_iter()
            .map(|t| AdminTeam {
                id: t.id,
                name: t.name,
                slug: t.slug,
                is_byoc: t.is_byoc,
                created_at: ts(t.created_at),
                deleted_at: t.deleted_at.map(ts),
                member_count: t.member_count,
                owner_name: t.owner_name,
                owner_email: t.owner_email,
                active_sandbox_count: t.active_sandbox_count,
                channel_count: 0,
            })
            .collect(),
        total,
        page,
        per_page: PER_PAGE,
        total_pages: total_pages(total),
    }))
}

/// Delete (soft) any team. Like the owner's delete: 409 `has_active_sandboxes` while it still
/// has capsules; the platform team cannot be deleted (403).
#[utoipa::path(delete, path = "/v1/admin/teams/{id}", tag = "admin", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn delete_team(
    State(state): State<AppState>,
    AdminPrincipal(p): AdminPrincipal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let team = TeamId::parse(&id)?;
    if team == TeamId::PLATFORM {
        return Err(ApiError::forbidden("the platform team cannot be deleted"));
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    match teams::by_id(&mut *tx, team).await? {
        Some(t) if t.deleted_at.is_none() => {}
        _ => return Err(ApiError::not_found("team not found")),
    }
    super::teams::delete_team_in(
        &mut tx,
        team,
        &p.actor(),
        AuditEvent::new("team", team.to_string(), "delete").scope(Scope::Admin),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AdminTemplate {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    vcpus: i64,
    memory_mb: i64,
    size_bytes: i64,
    team_id: TeamId,
    created_at: String,
    platform: bool,
    protected: bool,
}

/// Every template of every team.
#[utoipa::path(get, path = "/v1/admin/templates", tag = "admin",
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<AdminTemplate>), (status = 403, body = ErrorBody)))]
async fn list_templates(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
) -> ApiResult<Json<Vec<AdminTemplate>>> {
    let rows = templates::list_all(state.pool()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|t| AdminTemplate {
                platform: t.is_platform(),
                protected: t.is_protected(),
                name: t.name,
                kind: t.kind,
                vcpus: t.vcpus,
                memory_mb: t.memory_mb,
                size_bytes: t.size_bytes,
                team_id: t.team_id,
                created_at: ts(t.created_at),
            })
            .collect(),
    ))
}

/// Delete a platform template (and its images on every host). Built-in base templates are
/// protected (403); templates with capsules still made from them answer 409.
#[utoipa::path(delete, path = "/v1/admin/templates/{name}", tag = "admin",
    params(("name" = String, Path)), security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_template(
    State(state): State<AppState>,
    AdminPrincipal(p): AdminPrincipal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let name = lifecycle::validate::safe_name("name", &name)?;
    let template = templates::owned(state.pool(), TeamId::PLATFORM, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("platform template {name:?} not found")))?;
    if template.is_protected() {
        return Err(ApiError::forbidden(format!(
            "{name:?} is a built-in template and cannot be deleted"
        )));
    }
    lifecycle::delete_template(
        &state,
        TeamId::PLATFORM,
        AuditActor::from(&p.actor()),
        &template,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
