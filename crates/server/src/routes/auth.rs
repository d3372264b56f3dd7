//! `/v1/auth/*` (spec §B.6): signup, activate, login, switch-team, logout; OAuth placeholders.
//!
//! Without SMTP a signup is activated at once (logged); `activate` still consumes activation
//! tokens so an email step can be added without changing the API.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::Message;
use crate::accounts::{self, AuthResponse};
use crate::auth::session::{self, SESSION_COOKIE};
use crate::auth::{UserPrincipal, sha256_hex};
use crate::db::tokens::{self, TokenKind};
use crate::db::users::{User, UserStatus};
use crate::db::{sessions, teams, users};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::ids::{TeamId, UserId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(activate))
        .routes(routes!(login))
        .routes(routes!(switch_team))
        .routes(routes!(logout))
        .routes(routes!(oauth_start))
        .routes(routes!(oauth_callback))
}

/// OAuth is not offered yet; these answer like upstream does for an unknown provider. Mounted
/// without the `/v1` prefix too (upstream serves `/auth/oauth/…`).
pub fn oauth_router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/auth/oauth/{provider}", axum::routing::get(oauth_start))
        .route(
            "/auth/oauth/{provider}/callback",
            axum::routing::get(oauth_callback),
        )
}

/// Signups younger than this block a re-signup of the same email (spec: `signup_cooldown`).
const SIGNUP_COOLDOWN_SECS: i64 = 30 * 60;
/// Activation tokens expire after 30 minutes (spec §B.6).
const ACTIVATION_TOKEN_TTL_SECS: i64 = 30 * 60;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignupRequest {
    email: String,
    /// At least 8 characters.
    password: String,
    /// 1 to 100 characters.
    name: String,
}

/// Create an account. With SMTP configured an activation mail goes out (503 `email_failed` when
/// it cannot); without, the account is active at once.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = Message), (status = 400, body = ErrorBody),
              (status = 409, description = "`email_taken` or `signup_cooldown`", body = ErrorBody)))]
async fn signup(
    State(state): State<AppState>,
    Json(req): Json<SignupRequest>,
) -> ApiResult<Response> {
    let email = accounts::normalize_email(&req.email)?;
    accounts::validate_password(&req.password)?;
    let name = accounts::validate_name(&req.name)?;
    let hash = crate::auth::password::hash(req.password)
        .await
        .map_err(ApiError::internal)?;
    let now = crate::time::now();

    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    if let Some(existing) = users::by_email(&mut *tx, &email).await? {
        if existing.status != UserStatus::Inactive {
            return Err(
                ApiError::conflict("an account with this email exists").with_code("email_taken")
            );
        }
        if now - existing.created_at < SIGNUP_COOLDOWN_SECS {
            return Err(
                ApiError::conflict("a signup for this email is pending; try again later")
                    .with_code("signup_cooldown"),
            );
        }
        users::delete(&mut *tx, existing.id).await?;
    }
    let mut user = User {
        id: UserId::random(),
        email,
        password_hash: Some(hash),
        name,
        is_admin: false,
        status: UserStatus::Inactive,
        created_at: now,
        updated_at: now,
    };
    match users::insert(&mut *tx, &user).await {
        Err(e) if e.is_unique_violation() => {
            return Err(
                ApiError::conflict("an account with this email exists").with_code("email_taken")
            );
        }
        other => other?,
    }
    if let Some(mailer) = state.mailer() {
        // Mailed before the commit: if the mail cannot go out, no half-made account is left.
        let token = crate::auth::random_hex(16);
        tokens::insert(
            &mut *tx,
            TokenKind::Activation,
            &sha256_hex(&token),
            user.id,
            now,
            now + ACTIVATION_TOKEN_TTL_SECS,
        )
        .await?;
        let body = format!(
            "Hello {},\n\nactivate your Wrenn account within 30 minutes:\n\n  {}\n\n\
             or send this token to POST /v1/auth/activate: {token}\n",
            user.name,
            mailer.link("/activate", &token),
        );
        if let Err(e) = mailer
            .send(&user.email, "Activate your Wrenn account", body)
            .await
        {
            tracing::warn!(email = %user.email, error = %e, "activation mail failed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "email_failed",
                "could not send the activation mail; try again later",
            ));
        }
        tx.commit().await.map_err(ApiError::internal)?;
        tracing::info!(email = %user.email, "signup: activation mail sent");
        return Ok(created("account created; check your email to activate it"));
    }
    // No SMTP: activate now instead of mailing a token.
    accounts::activate(&mut tx, &mut user).await?;
    tx.commit().await.map_err(ApiError::internal)?;
    tracing::info!(email = %user.email, "signup: account activated at once (no email service)");
    Ok(created("account created and activated; you can log in"))
}

fn created(message: &str) -> Response {
    (
        StatusCode::CREATED,
        Json(Message {
            message: message.into(),
        }),
    )
        .into_response()
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ActivateRequest {
    token: String,
}

/// Activate an account with the token from the activation email.
#[utoipa::path(post, path = "/v1/auth/activate", tag = "auth", request_body = ActivateRequest,
    responses((status = 200, body = AuthResponse),
              (status = 400, description = "`invalid_token` or `already_activated`", body = ErrorBody)))]
async fn activate(
    State(state): State<AppState>,
    Json(req): Json<ActivateRequest>,
) -> ApiResult<Response> {
    let invalid = || ApiError::invalid("invalid or expired token").with_code("invalid_token");
    let now = crate::time::now();
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let user_id = tokens::take(
        &mut *tx,
        TokenKind::Activation,
        &sha256_hex(req.token.trim()),
        now,
    )
    .await?
    .ok_or_else(invalid)?;
    let mut user = users::by_id(&mut *tx, user_id).await?.ok_or_else(invalid)?;
    if user.status != UserStatus::Inactive {
        return Err(ApiError::invalid("account already activated").with_code("already_activated"));
    }
    let membership = accounts::activate(&mut tx, &mut user).await?;
    sign_in(&state, tx, &user, &membership).await
}

/// Starts a browser session inside `tx`, commits, and answers the JWT with the session cookies:
/// the end of every way in (login, activation).
async fn sign_in(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
    user: &User,
    membership: &teams::Membership,
) -> ApiResult<Response> {
    let cookies = session::start(
        &mut *tx,
        user.id,
        membership.team.id,
        state.secure_cookies(),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    let body = accounts::issue_token(state, user, membership.team.id, membership.role);
    Ok((
        AppendHeaders(cookies.map(|c| (header::SET_COOKIE, c))),
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    email: String,
    password: String,
}

/// Log in with email and password. Answers a JWT and also sets the browser session cookies
/// (`wrenn_sid`, `wrenn_csrf`).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody),
              (status = 403, description = "`account_not_activated` or `account_disabled`", body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    let wrong = || ApiError::unauthorized("invalid email or password");
    let email = req.email.trim().to_lowercase();
    let user = users::by_email(state.pool(), &email).await?;
    // Verify even for an unknown email (against a dummy hash): same answer, same time.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = crate::auth::password::verify(req.password, stored).await;
    let Some(user) = user.filter(|_| password_ok) else {
        return Err(wrong());
    };
    accounts::check_can_login(&user)?;

    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let membership = accounts::ensure_default_team(&mut tx, &user).await?;
    sessions::delete_expired(&mut *tx, crate::time::now()).await?;
    sign_in(&state, tx, &user, &membership).await
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SwitchTeamRequest {
    team_id: String,
}

/// Re-scope the caller to another of their teams: a new JWT (and, for a browser session, the
/// session itself moves).
#[utoipa::path(post, path = "/v1/auth/switch-team", tag = "auth", request_body = SwitchTeamRequest,
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = AuthResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn switch_team(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<SwitchTeamRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let team = TeamId::parse(req.team_id.trim())?;
    if teams::by_id(state.pool(), team).await?.is_none() {
        return Err(ApiError::not_found("team not found"));
    }
    let Some(membership) = teams::membership(state.pool(), team, p.user.id).await? else {
        return Err(ApiError::forbidden("not a member of this team"));
    };
    let Some(user) = users::by_id(state.pool(), p.user.id).await? else {
        return Err(ApiError::unauthorized("unknown user"));
    };
    if let Some(id_hash) = &p.user.session {
        sessions::set_team(state.pool(), id_hash, team).await?;
    }
    Ok(Json(accounts::issue_token(
        &state,
        &user,
        team,
        membership.role,
    )))
}

/// End the browser session (if any) and clear its cookies. JWTs simply expire.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", responses((status = 204)))]
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    // Deliberately no Principal: logging out must work with an expired or half-broken session.
    if let Some(sid) = session::cookie(&headers, SESSION_COOKIE).filter(|s| !s.is_empty()) {
        sessions::delete(state.pool(), &sha256_hex(sid)).await?;
    }
    let cookies = session::clear(state.secure_cookies());
    Ok((
        StatusCode::NO_CONTENT,
        AppendHeaders(cookies.map(|c| (header::SET_COOKIE, c))),
    )
        .into_response())
}

fn provider_not_found(provider: &str) -> ApiError {
    ApiError::not_found(format!("OAuth provider {provider:?} is not configured"))
        .with_code("provider_not_found")
}

/// Start an OAuth login. No provider is configured in this build.
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}", tag = "auth",
    params(("provider" = String, Path)), responses((status = 404, body = ErrorBody)))]
async fn oauth_start(Path(provider): Path<String>) -> ApiError {
    provider_not_found(&provider)
}

/// OAuth callback. No provider is configured in this build.
#[utoipa::path(get, path = "/v1/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path)), responses((status = 404, body = ErrorBody)))]
async fn oauth_callback(Path(provider): Path<String>) -> ApiError {
    provider_not_found(&provider)
}
