//! The `Principal` extractor: who is calling, on behalf of which team.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::{HeaderMap, Method, StatusCode, header, request::Parts};

use super::session::{CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, cookie};
use super::{constant_time_eq, looks_like_api_key, sha256_hex};
use crate::db::teams::Role;
use crate::db::users::UserStatus;
use crate::db::{api_keys, sessions, teams, users};
use crate::error::ApiError;
use crate::ids::{ApiKeyId, TeamId, UserId};
use crate::state::AppState;

/// An authenticated caller. Every team-owned query takes `team_id` from here.
#[derive(Debug, Clone)]
pub struct Principal {
    pub team_id: TeamId,
    pub actor: Actor,
}

#[derive(Debug, Clone)]
pub enum Actor {
    User(UserActor),
    ApiKey(ApiKeyActor),
}

/// A user acting through a JWT or a session. `role` and `is_admin` come from the database on
/// every request (the JWT's copies are hints for the UI).
#[derive(Debug, Clone)]
pub struct UserActor {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub is_admin: bool,
    /// SHA-256 of the session id when authenticated by cookie (switch-team re-scopes it).
    pub session: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyActor {
    pub id: ApiKeyId,
    pub name: String,
}

impl Principal {
    pub fn user(&self) -> Option<&UserActor> {
        match &self.actor {
            Actor::User(u) => Some(u),
            Actor::ApiKey(_) => None,
        }
    }
}

/// A caller that must be a user (JWT or session): account, team, key and audit routes.
#[derive(Debug, Clone)]
pub struct UserPrincipal {
    pub team_id: TeamId,
    pub user: UserActor,
}

impl UserPrincipal {
    pub fn actor(&self) -> Actor {
        Actor::User(self.user.clone())
    }
}

impl<S> FromRequestParts<S> for Principal
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let state = AppState::from_ref(state);
        let principal = authenticate(&state, &parts.method, &parts.headers).await?;
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

impl<S> FromRequestParts<S> for UserPrincipal
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let p = Principal::from_request_parts(parts, state).await?;
        match p.actor {
            Actor::User(user) => Ok(UserPrincipal {
                team_id: p.team_id,
                user,
            }),
            Actor::ApiKey(_) => Err(ApiError::unauthorized(
                "this route needs a user login (bearer token or session), not an API key",
            )),
        }
    }
}

async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let now = crate::time::now();
    // The API key wins when both are present (spec §B.0).
    if let Some(key) = headers.get("x-api-key") {
        let key = key.to_str().unwrap_or_default().trim();
        if !looks_like_api_key(key) {
            return Err(ApiError::unauthorized("invalid API key"));
        }
        let Some(record) = api_keys::by_hash(state.pool(), &sha256_hex(key)).await? else {
            return Err(ApiError::unauthorized("invalid API key"));
        };
        api_keys::touch(state.pool(), record.id, now).await?;
        return Ok(Principal {
            team_id: record.team_id,
            actor: Actor::ApiKey(ApiKeyActor {
                id: record.id,
                name: record.name,
            }),
        });
    }

    if let Some(authz) = headers.get(header::AUTHORIZATION) {
        let authz = authz.to_str().unwrap_or_default();
        let token = match authz.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "expected `Authorization: Bearer <token>`",
                ));
            }
        };
        let claims = state
            .jwt()
            .verify(token, now)
            .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
        let (Ok(user), Ok(team)) = (UserId::parse(&claims.sub), TeamId::parse(&claims.team_id))
        else {
            return Err(ApiError::unauthorized("invalid token: bad subject or team"));
        };
        return user_principal(state, user, team, None).await;
    }

    if let Some(sid) = cookie(headers, SESSION_COOKIE).filter(|s| !s.is_empty()) {
        let id_hash = sha256_hex(sid);
        let Some(session) = sessions::get(state.pool(), &id_hash, now).await? else {
            return Err(ApiError::unauthorized(
                "session expired or unknown; log in again",
            ));
        };
        // Double-submit CSRF check on anything that may change state.
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let header = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let cookie = cookie(headers, CSRF_COOKIE).unwrap_or_default();
            let ok = !header.is_empty()
                && constant_time_eq(header.as_bytes(), cookie.as_bytes())
                && constant_time_eq(sha256_hex(header).as_bytes(), session.csrf_hash.as_bytes());
            if !ok {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "auth_csrf_failed",
                    "missing or wrong X-CSRF-Token header",
                ));
            }
        }
        return user_principal(state, session.user_id, session.team_id, Some(id_hash)).await;
    }

    Err(ApiError::unauthorized(
        "missing credentials: send X-API-Key or Authorization: Bearer <token>",
    ))
}

/// Re-reads the user's status, admin flag and team role: a disabled user or a removed member
/// loses access at once, not when the token expires.
async fn user_principal(
    state: &AppState,
    user_id: UserId,
    team_id: TeamId,
    session: Option<String>,
) -> Result<Principal, ApiError> {
    let Some(user) = users::by_id(state.pool(), user_id).await? else {
        return Err(ApiError::unauthorized("unknown user"));
    };
    match user.status {
        UserStatus::Active => {}
        UserStatus::Deleted => return Err(ApiError::unauthorized("unknown user")),
        UserStatus::Inactive | UserStatus::Disabled => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "account_deactivated",
                "this account is not active",
            ));
        }
    }
    let Some(membership) = teams::membership(state.pool(), team_id, user_id).await? else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_team",
            "not a member of this team (any more); log in again or switch team",
        ));
    };
    Ok(Principal {
        team_id,
        actor: Actor::User(UserActor {
            id: user.id,
            email: user.email,
            name: user.name,
            role: membership.role,
            is_admin: user.is_admin,
            session,
        }),
    })
}
