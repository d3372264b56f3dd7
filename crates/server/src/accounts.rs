//! Account logic shared by the auth routes, the account routes and `bootstrap_admin`:
//! input rules, default teams, activation, issuing tokens.

use axum::http::StatusCode;
use serde::Serialize;
use sqlx::AnyConnection;

use crate::audit::{self, AuditEvent};
use crate::auth::jwt::{Claims, USER_TOKEN_TTL_SECS};
use crate::auth::{Actor, UserActor, random_hex};
use crate::db::teams::{Membership, Role, Team};
use crate::db::users::{User, UserStatus};
use crate::db::{DbResult, api_keys, teams, users};
use crate::error::{ApiError, ApiResult};
use crate::ids::{ApiKeyId, TeamId, UserId};
use crate::state::AppState;

/// `{"token","user_id","team_id","email","name"}` (spec §B.6).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthResponse {
    /// User JWT (HS256, valid 6 h); send as `Authorization: Bearer <token>`.
    pub token: String,
    pub user_id: UserId,
    pub team_id: TeamId,
    pub email: String,
    pub name: String,
}

pub fn normalize_email(raw: &str) -> ApiResult<String> {
    let email = raw.trim().to_lowercase();
    if email.len() < 3
        || email.len() > 254
        || !email.contains('@')
        || email.chars().any(char::is_whitespace)
    {
        return Err(ApiError::invalid("invalid email address"));
    }
    Ok(email)
}

pub fn validate_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    let len = name.chars().count();
    if !(1..=100).contains(&len) || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

pub fn validate_password(password: &str) -> ApiResult<()> {
    use crate::auth::password::{MAX_LEN, MIN_LEN};
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(ApiError::invalid(format!(
            "password must be at least {MIN_LEN} characters"
        )));
    }
    if password.len() > MAX_LEN {
        return Err(ApiError::invalid(format!(
            "password must be at most {MAX_LEN} bytes"
        )));
    }
    Ok(())
}

/// Team names: `^[A-Za-z0-9 _\-@']{1,128}$` after trimming (spec §B.9).
pub fn validate_team_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    let ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '@' | '\''));
    if !ok {
        return Err(ApiError::invalid(
            "team name must be 1 to 128 characters of letters, digits, space, _ - @ '",
        ));
    }
    Ok(name.to_owned())
}

/// `hhhhhh-hhhhhh` from 6 random bytes.
fn new_slug() -> String {
    let h = random_hex(6);
    format!("{}-{}", &h[..6], &h[6..])
}

pub async fn create_team(
    conn: &mut AnyConnection,
    owner: UserId,
    name: &str,
    is_default: bool,
    now: i64,
) -> DbResult<Team> {
    let team = Team {
        id: TeamId::random(),
        name: name.to_owned(),
        slug: new_slug(),
        is_byoc: false,
        created_at: now,
        deleted_at: None,
    };
    teams::insert(&mut *conn, &team).await?;
    teams::add_member(&mut *conn, team.id, owner, Role::Owner, is_default, now).await?;
    Ok(team)
}

/// The team a login lands in: the default membership, else the oldest, else a new
/// `<name>'s Team` (the user left or deleted all their teams).
pub async fn ensure_default_team(conn: &mut AnyConnection, user: &User) -> DbResult<Membership> {
    if let Some(m) = teams::of_user(&mut *conn, user.id)
        .await?
        .into_iter()
        .next()
    {
        return Ok(m);
    }
    let now = crate::time::now();
    let name = team_name_for(&user.name);
    let team = create_team(conn, user.id, &name, true, now).await?;
    Ok(Membership {
        team,
        role: Role::Owner,
        is_default: true,
        joined_at: now,
    })
}

/// `<name>'s Team`, reduced to the characters team names allow.
fn team_name_for(user_name: &str) -> String {
    let cleaned: String = user_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '@' | '\''))
        .take(100)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "My Team".into()
    } else {
        format!("{cleaned}'s Team")
    }
}

/// inactive → active: the first active user becomes platform admin; the default team is created.
pub async fn activate(conn: &mut AnyConnection, user: &mut User) -> DbResult<Membership> {
    let now = crate::time::now();
    users::set_status(&mut *conn, user.id, UserStatus::Active, now).await?;
    user.status = UserStatus::Active;
    if !users::any_admin(&mut *conn).await? {
        users::set_admin(&mut *conn, user.id, true, now).await?;
        user.is_admin = true;
        tracing::info!(email = %user.email, "first active user: granted platform admin");
    }
    let membership = ensure_default_team(conn, user).await?;
    let actor = Actor::User(UserActor {
        id: user.id,
        email: user.email.clone(),
        name: user.name.clone(),
        role: membership.role,
        is_admin: user.is_admin,
        session: None,
    });
    audit::record(
        &mut *conn,
        membership.team.id,
        &actor,
        AuditEvent::new("user", user.id.to_string(), "activate"),
    )
    .await?;
    Ok(membership)
}

/// A user token scoped to `team` with `role`.
pub fn issue_token(state: &AppState, user: &User, team: TeamId, role: Role) -> AuthResponse {
    let now = crate::time::now();
    let claims = Claims {
        sub: user.id.to_string(),
        team_id: team.to_string(),
        role: role.as_str().into(),
        email: user.email.clone(),
        name: user.name.clone(),
        is_admin: user.is_admin,
        iat: now,
        exp: now + USER_TOKEN_TTL_SECS,
        typ: None,
    };
    AuthResponse {
        token: state.jwt().sign(&claims),
        user_id: user.id,
        team_id: team,
        email: user.email.clone(),
        name: user.name.clone(),
    }
}

/// Login-time status checks, after the password matched.
pub fn check_can_login(user: &User) -> ApiResult<()> {
    match user.status {
        UserStatus::Active => Ok(()),
        UserStatus::Inactive => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_not_activated",
            "account not activated yet",
        )),
        UserStatus::Disabled => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "account disabled",
        )),
        UserStatus::Deleted => Err(ApiError::unauthorized("invalid email or password")),
    }
}

pub const DEFAULT_API_KEY_NAME: &str = "Unnamed API Key";

/// Creates a team API key; returns the record and the plaintext (shown once, never stored).
pub async fn create_api_key(
    conn: &mut AnyConnection,
    team: TeamId,
    name: &str,
    created_by: Option<UserId>,
) -> DbResult<(api_keys::ApiKey, String)> {
    let (plaintext, hash, prefix) = crate::auth::new_api_key();
    let key = api_keys::ApiKey {
        id: ApiKeyId::random(),
        team_id: team,
        name: name.to_owned(),
        key_prefix: prefix,
        created_by,
        created_at: crate::time::now(),
        last_used: None,
        creator_email: None,
    };
    api_keys::insert(&mut *conn, &key, &hash).await?;
    Ok((key, plaintext))
}
