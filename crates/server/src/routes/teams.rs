//! `/v1/teams/*` (spec §B.9): teams and their members.
//!
//! Routes on `/v1/teams/{id}` act on the team the caller's token is scoped to (another id →
//! 403 "use switch-team first"). Roles come from the database on every request.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{current_team, ts};
use crate::accounts;
use crate::audit::{self, AuditEvent, Scope};
use crate::auth::UserPrincipal;
use crate::db::teams::{Member, Role, Team};
use crate::db::users::UserStatus;
use crate::db::{api_keys, teams, users};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::ids::{TeamId, UserId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team, rename_team, delete_team))
        .routes(routes!(list_members, add_member))
        .routes(routes!(update_member, remove_member))
        .routes(routes!(leave_team))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamInfo {
    id: TeamId,
    name: String,
    slug: String,
    is_byoc: bool,
    created_at: String,
    /// The caller's role (absent inside `GET /v1/teams/{id}`'s `team`).
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
}

impl TeamInfo {
    fn new(team: Team, role: Option<Role>) -> Self {
        Self {
            id: team.id,
            name: team.name,
            slug: team.slug,
            is_byoc: team.is_byoc,
            created_at: ts(team.created_at),
            role,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MemberInfo {
    user_id: UserId,
    name: String,
    email: String,
    role: Role,
    joined_at: String,
}

impl From<Member> for MemberInfo {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            name: m.name,
            email: m.email,
            role: m.role,
            joined_at: ts(m.joined_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamDetail {
    team: TeamInfo,
    members: Vec<MemberInfo>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TeamName {
    /// `^[A-Za-z0-9 _\-@']{1,128}$` after trimming.
    name: String,
}

fn need_manager(p: &UserPrincipal) -> ApiResult<()> {
    if p.user.role.can_manage() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the team's owner or admins can do this",
        ))
    }
}

/// The caller's teams.
#[utoipa::path(get, path = "/v1/teams", tag = "teams", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<TeamInfo>)))]
async fn list_teams(
    State(state): State<AppState>,
    p: UserPrincipal,
) -> ApiResult<Json<Vec<TeamInfo>>> {
    let list = teams::of_user(state.pool(), p.user.id).await?;
    Ok(Json(
        list.into_iter()
            .map(|m| TeamInfo::new(m.team, Some(m.role)))
            .collect(),
    ))
}

/// Create a team; the caller becomes its owner.
#[utoipa::path(post, path = "/v1/teams", tag = "teams", request_body = TeamName,
    security(("bearer" = []), ("session" = [])),
    responses((status = 201, body = TeamInfo), (status = 400, body = ErrorBody)))]
async fn create_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<TeamName>,
) -> ApiResult<(StatusCode, Json<TeamInfo>)> {
    let name = accounts::validate_team_name(&req.name)?;
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let team = accounts::create_team(&mut tx, p.user.id, &name, false, crate::time::now()).await?;
    audit::record(
        &mut *tx,
        team.id,
        &p.actor(),
        AuditEvent::new("team", team.id.to_string(), "create")
            .metadata(serde_json::json!({ "name": name })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(TeamInfo::new(team, Some(Role::Owner))),
    ))
}

/// The current team and its members.
#[utoipa::path(get, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = TeamDetail), (status = 403, body = ErrorBody)))]
async fn get_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<TeamDetail>> {
    let team_id = current_team(&p, &id)?;
    let team = teams::by_id(state.pool(), team_id)
        .await?
        .ok_or_else(|| ApiError::not_found("team not found"))?;
    let members = teams::members(state.pool(), team_id).await?;
    Ok(Json(TeamDetail {
        team: TeamInfo::new(team, None),
        members: members.into_iter().map(MemberInfo::from).collect(),
    }))
}

/// Rename the current team (owner or admin).
#[utoipa::path(patch, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)), request_body = TeamName,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn rename_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
    Json(req): Json<TeamName>,
) -> ApiResult<StatusCode> {
    let team = current_team(&p, &id)?;
    need_manager(&p)?;
    let name = accounts::validate_team_name(&req.name)?;
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    teams::rename(&mut *tx, team, &name).await?;
    audit::record(
        &mut *tx,
        team,
        &p.actor(),
        AuditEvent::new("team", team.to_string(), "rename")
            .metadata(serde_json::json!({ "name": name })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete the current team (owner only): its API keys go, the team is soft-deleted.
///
/// While the team still has capsules this answers 409 `has_active_sandboxes` (with
/// `sandbox_ids`/`capsule_ids`): destroying them belongs to the capsule service.
#[utoipa::path(delete, path = "/v1/teams/{id}", tag = "teams", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let team = current_team(&p, &id)?;
    if p.user.role != Role::Owner {
        return Err(ApiError::forbidden("only the team's owner can delete it"));
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    delete_team_in(
        &mut tx,
        team,
        &p.actor(),
        AuditEvent::new("team", team.to_string(), "delete"),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The team delete shared by its owner and platform admins, inside the caller's transaction:
/// 409 `has_active_sandboxes` (with `sandbox_ids`/`capsule_ids`) while capsules remain, else
/// the API keys go, the team is soft-deleted and `event` is audited.
pub(crate) async fn delete_team_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    team: TeamId,
    actor: &crate::auth::Actor,
    event: AuditEvent,
) -> ApiResult<()> {
    let active = teams::active_capsules(&mut **tx, team).await?;
    if !active.is_empty() {
        let ids = serde_json::json!(active.iter().map(ToString::to_string).collect::<Vec<_>>());
        return Err(
            ApiError::conflict("the team still has capsules; destroy them first")
                .with_code("has_active_sandboxes")
                .with_extra("sandbox_ids", ids.clone())
                .with_extra("capsule_ids", ids),
        );
    }
    api_keys::delete_all_for_team(&mut **tx, team).await?;
    teams::soft_delete(&mut **tx, team, crate::time::now()).await?;
    audit::record(&mut **tx, team, actor, event).await?;
    Ok(())
}

/// Members of the current team.
#[utoipa::path(get, path = "/v1/teams/{id}/members", tag = "teams", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<MemberInfo>), (status = 403, body = ErrorBody)))]
async fn list_members(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<MemberInfo>>> {
    let team = current_team(&p, &id)?;
    let members = teams::members(state.pool(), team).await?;
    Ok(Json(members.into_iter().map(MemberInfo::from).collect()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct AddMember {
    email: String,
}

/// Add an existing user to the current team as `member` (owner or admin).
#[utoipa::path(post, path = "/v1/teams/{id}/members", tag = "teams", params(("id" = String, Path)),
    request_body = AddMember, security(("bearer" = []), ("session" = [])),
    responses((status = 201, body = MemberInfo), (status = 400, description = "already a member", body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, description = "no such user", body = ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
    Json(req): Json<AddMember>,
) -> ApiResult<(StatusCode, Json<MemberInfo>)> {
    let team = current_team(&p, &id)?;
    need_manager(&p)?;
    let email = req.email.trim().to_lowercase();
    let user = users::by_email(state.pool(), &email)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(|| ApiError::not_found("no active user with this email"))?;
    let now = crate::time::now();
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    if teams::membership(&mut *tx, team, user.id).await?.is_some() {
        return Err(ApiError::invalid("this user is already a member"));
    }
    match teams::add_member(&mut *tx, team, user.id, Role::Member, false, now).await {
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::invalid("this user is already a member"));
        }
        other => other?,
    }
    audit::record(
        &mut *tx,
        team,
        &p.actor(),
        AuditEvent::new("member", user.id.to_string(), "add")
            .scope(Scope::Admin)
            .metadata(serde_json::json!({ "email": user.email, "role": "member" })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(MemberInfo {
            user_id: user.id,
            name: user.name,
            email: user.email,
            role: Role::Member,
            joined_at: ts(now),
        }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateMember {
    /// `admin` or `member` (ownership is not transferable here).
    role: Role,
}

/// Change a member's role (owner or admin; the owner's role is fixed).
#[utoipa::path(patch, path = "/v1/teams/{id}/members/{uid}", tag = "teams",
    params(("id" = String, Path), ("uid" = String, Path)), request_body = UpdateMember,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_member(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path((id, uid)): Path<(String, String)>,
    Json(req): Json<UpdateMember>,
) -> ApiResult<StatusCode> {
    let team = current_team(&p, &id)?;
    let target = UserId::parse(&uid)?;
    need_manager(&p)?;
    if req.role == Role::Owner {
        return Err(ApiError::invalid("role must be admin or member"));
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let member = teams::membership(&mut *tx, team, target)
        .await?
        .ok_or_else(|| ApiError::not_found("not a member of this team"))?;
    if member.role == Role::Owner {
        return Err(ApiError::forbidden("the owner's role cannot be changed"));
    }
    teams::set_role(&mut *tx, team, target, req.role).await?;
    audit::record(
        &mut *tx,
        team,
        &p.actor(),
        AuditEvent::new("member", target.to_string(), "role_update")
            .scope(Scope::Admin)
            .metadata(serde_json::json!({ "from": member.role, "to": req.role })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member (owner or admin; the owner cannot be removed).
#[utoipa::path(delete, path = "/v1/teams/{id}/members/{uid}", tag = "teams",
    params(("id" = String, Path), ("uid" = String, Path)), security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path((id, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let team = current_team(&p, &id)?;
    let target = UserId::parse(&uid)?;
    need_manager(&p)?;
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let member = teams::membership(&mut *tx, team, target)
        .await?
        .ok_or_else(|| ApiError::not_found("not a member of this team"))?;
    if member.role == Role::Owner {
        return Err(ApiError::forbidden("the team's owner cannot be removed"));
    }
    teams::remove_member(&mut *tx, team, target).await?;
    audit::record(
        &mut *tx,
        team,
        &p.actor(),
        AuditEvent::new("member", target.to_string(), "remove").scope(Scope::Admin),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Leave the current team (not as its owner).
#[utoipa::path(post, path = "/v1/teams/{id}/leave", tag = "teams", params(("id" = String, Path)),
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 403, body = ErrorBody)))]
async fn leave_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let team = current_team(&p, &id)?;
    if p.user.role == Role::Owner {
        return Err(ApiError::forbidden(
            "the owner cannot leave the team; delete it instead",
        ));
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    teams::remove_member(&mut *tx, team, p.user.id).await?;
    audit::record(
        &mut *tx,
        team,
        &p.actor(),
        AuditEvent::new("member", p.user.id.to_string(), "leave").scope(Scope::Admin),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
