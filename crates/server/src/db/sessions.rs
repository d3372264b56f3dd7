//! `sessions`: browser sessions behind the `wrenn_sid` cookie.

use sqlx::AnyExecutor;

use super::{DbResult, id, text};
use crate::ids::{TeamId, UserId};

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: UserId,
    pub team_id: TeamId,
    pub csrf_hash: String,
}

pub async fn insert<'e>(
    ex: impl AnyExecutor<'e>,
    id_hash: &str,
    session: &Session,
    now: i64,
    expires_at: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, team_id, csrf_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id_hash)
    .bind(session.user_id.db())
    .bind(session.team_id.db())
    .bind(&session.csrf_hash)
    .bind(now)
    .bind(expires_at)
    .execute(ex)
    .await?;
    Ok(())
}

/// A session that has not expired.
pub async fn get<'e>(
    ex: impl AnyExecutor<'e>,
    id_hash: &str,
    now: i64,
) -> DbResult<Option<Session>> {
    let row = sqlx::query(
        "SELECT user_id, team_id, csrf_hash FROM sessions WHERE id_hash = $1 AND expires_at > $2",
    )
    .bind(id_hash)
    .bind(now)
    .fetch_optional(ex)
    .await?;
    row.map(|row| {
        Ok(Session {
            user_id: id(&row, "user_id")?,
            team_id: id(&row, "team_id")?,
            csrf_hash: text(&row, "csrf_hash")?,
        })
    })
    .transpose()
}

pub async fn set_team<'e>(ex: impl AnyExecutor<'e>, id_hash: &str, team: TeamId) -> DbResult<()> {
    sqlx::query("UPDATE sessions SET team_id = $1 WHERE id_hash = $2")
        .bind(team.db())
        .bind(id_hash)
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn delete<'e>(ex: impl AnyExecutor<'e>, id_hash: &str) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn delete_for_user<'e>(ex: impl AnyExecutor<'e>, user: UserId) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn delete_expired<'e>(ex: impl AnyExecutor<'e>, now: i64) -> DbResult<()> {
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(ex)
        .await?;
    Ok(())
}
