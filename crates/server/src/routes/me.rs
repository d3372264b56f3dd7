//! `/v1/me/*` (spec §B.7): the caller's own account.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::{self, AuthResponse};
use crate::auth::{UserPrincipal, random_hex, sha256_hex};
use crate::db::teams::Role;
use crate::db::tokens::{self, TokenKind};
use crate::db::users::UserStatus;
use crate::db::{api_keys, sessions, teams, users};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(connect_provider))
        .routes(routes!(disconnect_provider))
}

const RESET_TOKEN_TTL_SECS: i64 = 15 * 60;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    name: String,
    email: String,
    has_password: bool,
    /// Linked OAuth providers (none in this build).
    providers: Vec<String>,
    /// Wrenn additions for the dashboard: who the caller is and which team the credential is
    /// scoped to, with the role there and the platform admin flag (both read from the database).
    user_id: crate::ids::UserId,
    team_id: crate::ids::TeamId,
    role: crate::db::teams::Role,
    is_admin: bool,
}

async fn load_user(state: &AppState, p: &UserPrincipal) -> ApiResult<users::User> {
    users::by_id(state.pool(), p.user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown user"))
}

/// The caller's profile.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn get_me(State(state): State<AppState>, p: UserPrincipal) -> ApiResult<Json<Me>> {
    let user = load_user(&state, &p).await?;
    Ok(Json(Me {
        name: user.name,
        email: user.email,
        has_password: user.password_hash.is_some(),
        providers: Vec::new(),
        user_id: user.id,
        team_id: p.team_id,
        role: p.user.role,
        is_admin: p.user.is_admin,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct UpdateMe {
    /// 1 to 100 characters.
    name: String,
}

/// Rename yourself; answers a fresh token carrying the new name.
#[utoipa::path(patch, path = "/v1/me", tag = "me", request_body = UpdateMe,
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = AuthResponse), (status = 400, body = ErrorBody)))]
async fn update_me(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<UpdateMe>,
) -> ApiResult<Json<AuthResponse>> {
    let name = accounts::validate_name(&req.name)?;
    users::set_name(state.pool(), p.user.id, &name, crate::time::now()).await?;
    let user = load_user(&state, &p).await?;
    Ok(Json(accounts::issue_token(
        &state,
        &user,
        p.team_id,
        p.user.role,
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteMe {
    /// Your own email address, to confirm.
    confirmation: String,
}

/// Delete your account (soft delete). Refused while you own a team that has other members.
#[utoipa::path(delete, path = "/v1/me", tag = "me", request_body = DeleteMe,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody),
              (status = 409, description = "`owns_team_with_members`", body = ErrorBody)))]
async fn delete_me(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<DeleteMe>,
) -> ApiResult<StatusCode> {
    let user = load_user(&state, &p).await?;
    if !req.confirmation.trim().eq_ignore_ascii_case(&user.email) {
        return Err(ApiError::invalid("confirmation must be your email address"));
    }
    let now = crate::time::now();
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let memberships = teams::of_user(&mut *tx, user.id).await?;
    for m in memberships.iter().filter(|m| m.role == Role::Owner) {
        if teams::count_other_members(&mut *tx, m.team.id, user.id).await? > 0 {
            return Err(ApiError::conflict(format!(
                "you own team {:?}, which has other members; remove them or delete the team first",
                m.team.name
            ))
            .with_code("owns_team_with_members"));
        }
    }
    for m in &memberships {
        if m.role == Role::Owner {
            if !teams::active_capsules(&mut *tx, m.team.id)
                .await?
                .is_empty()
            {
                return Err(ApiError::conflict(format!(
                    "team {:?} still has capsules; destroy them first",
                    m.team.name
                ))
                .with_code("has_active_sandboxes"));
            }
            api_keys::delete_all_for_team(&mut *tx, m.team.id).await?;
            teams::soft_delete(&mut *tx, m.team.id, now).await?;
        }
        teams::remove_member(&mut *tx, m.team.id, user.id).await?;
    }
    sessions::delete_for_user(&mut *tx, user.id).await?;
    users::soft_delete(&mut *tx, user.id, now).await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChangePassword {
    /// Required when the account has a password.
    current_password: Option<String>,
    new_password: String,
    /// When given, must equal `new_password`.
    confirm_password: Option<String>,
}

/// Change (or, for an account without one, set) your password.
#[utoipa::path(post, path = "/v1/me/password", tag = "me", request_body = ChangePassword,
    security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody),
              (status = 401, description = "`wrong_password`", body = ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    let user = load_user(&state, &p).await?;
    if req
        .confirm_password
        .as_ref()
        .is_some_and(|c| *c != req.new_password)
    {
        return Err(ApiError::invalid("passwords do not match"));
    }
    accounts::validate_password(&req.new_password)?;
    if let Some(stored) = user.password_hash.clone() {
        let Some(current) = req.current_password else {
            return Err(ApiError::invalid("current_password is required"));
        };
        if !crate::auth::password::verify(current, Some(stored)).await {
            return Err(
                ApiError::unauthorized("current password is wrong").with_code("wrong_password")
            );
        }
    }
    let hash = crate::auth::password::hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    users::set_password_hash(state.pool(), user.id, &hash, crate::time::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordResetRequest {
    email: String,
}

/// Request a password reset. Always 204, whether the email is known or not. Without an email
/// service the reset token is written to the server log.
#[utoipa::path(post, path = "/v1/me/password/reset", tag = "me", request_body = PasswordResetRequest,
    responses((status = 204)))]
async fn request_password_reset(
    State(state): State<AppState>,
    Json(req): Json<PasswordResetRequest>,
) -> ApiResult<StatusCode> {
    let email = req.email.trim().to_lowercase();
    if let Some(user) = users::by_email(state.pool(), &email).await?
        && user.status == UserStatus::Active
    {
        let token = random_hex(16);
        let now = crate::time::now();
        tokens::insert(
            state.pool(),
            TokenKind::PasswordReset,
            &sha256_hex(&token),
            user.id,
            now,
            now + RESET_TOKEN_TTL_SECS,
        )
        .await?;
        match state.mailer() {
            Some(mailer) => {
                let body = format!(
                    "Hello {},\n\nreset your Wrenn password within 15 minutes:\n\n  {}\n\n\
                     or send this token to POST /v1/me/password/reset/confirm: {token}\n\n\
                     If you did not ask for this, ignore this mail.\n",
                    user.name,
                    mailer.link("/reset-password", &token),
                );
                // Always 204: the answer must not tell whether the address has an account.
                if let Err(e) = mailer
                    .send(&user.email, "Reset your Wrenn password", body)
                    .await
                {
                    tracing::warn!(email = %user.email, error = %e, "password reset mail failed");
                }
            }
            None => {
                tracing::info!(email = %user.email, %token, "password reset requested (no email service: token logged)")
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PasswordResetConfirm {
    token: String,
    new_password: String,
}

/// Set a new password with a reset token; signs out every browser session of the account.
#[utoipa::path(post, path = "/v1/me/password/reset/confirm", tag = "me", request_body = PasswordResetConfirm,
    responses((status = 204), (status = 400, description = "`invalid_token` or a too short password", body = ErrorBody)))]
async fn confirm_password_reset(
    State(state): State<AppState>,
    Json(req): Json<PasswordResetConfirm>,
) -> ApiResult<StatusCode> {
    accounts::validate_password(&req.new_password)?;
    let now = crate::time::now();
    let hash = crate::auth::password::hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let Some(user) = tokens::take(
        &mut *tx,
        TokenKind::PasswordReset,
        &sha256_hex(req.token.trim()),
        now,
    )
    .await?
    else {
        return Err(ApiError::invalid("invalid or expired token").with_code("invalid_token"));
    };
    users::set_password_hash(&mut *tx, user, &hash, now).await?;
    sessions::delete_for_user(&mut *tx, user).await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

fn provider_not_found(provider: &str) -> ApiError {
    ApiError::not_found(format!("OAuth provider {provider:?} is not configured"))
        .with_code("provider_not_found")
}

/// Link an OAuth provider. No provider is configured in this build.
#[utoipa::path(get, path = "/v1/me/providers/{provider}/connect", tag = "me",
    params(("provider" = String, Path)), security(("bearer" = []), ("session" = [])),
    responses((status = 404, body = ErrorBody)))]
async fn connect_provider(_p: UserPrincipal, Path(provider): Path<String>) -> ApiError {
    provider_not_found(&provider)
}

/// Unlink an OAuth provider. No provider is configured in this build.
#[utoipa::path(delete, path = "/v1/me/providers/{provider}", tag = "me",
    params(("provider" = String, Path)), security(("bearer" = []), ("session" = [])),
    responses((status = 404, body = ErrorBody)))]
async fn disconnect_provider(_p: UserPrincipal, Path(provider): Path<String>) -> ApiError {
    provider_not_found(&provider)
}
