//! `team_api_keys`: team credentials, stored as SHA-256 of the plaintext.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, id, int, opt_id, opt_int, opt_text, text};
use crate::ids::{ApiKeyId, TeamId, UserId};

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub team_id: TeamId,
    pub name: String,
    pub key_prefix: String,
    pub created_by: Option<UserId>,
    pub created_at: i64,
    pub last_used: Option<i64>,
    /// Only filled by [`list`].
    pub creator_email: Option<String>,
}

fn from_row(row: &AnyRow, with_email: bool) -> DbResult<ApiKey> {
    Ok(ApiKey {
        id: id(row, "id")?,
        team_id: id(row, "team_id")?,
        name: text(row, "name")?,
        key_prefix: text(row, "key_prefix")?,
        created_by: opt_id(row, "created_by")?,
        created_at: int(row, "created_at")?,
        last_used: opt_int(row, "last_used")?,
        creator_email: if with_email {
            opt_text(row, "creator_email")?
        } else {
            None
        },
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, key: &ApiKey, key_hash: &str) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO team_api_keys (id, team_id, name, key_hash, key_prefix, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.id.db())
    .bind(key.team_id.db())
    .bind(&key.name)
    .bind(key_hash)
    .bind(&key.key_prefix)
    .bind(key.created_by.map(|u| u.db()))
    .bind(key.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn list<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Vec<ApiKey>> {
    let rows = sqlx::query(
        "SELECT k.id, k.team_id, k.name, k.key_prefix, k.created_by, k.created_at, k.last_used, \
         u.email AS creator_email FROM team_api_keys k LEFT JOIN users u ON u.id = k.created_by \
         WHERE k.team_id = $1 ORDER BY k.created_at DESC, k.id",
    )
    .bind(team.db())
    .fetch_all(ex)
    .await?;
    rows.iter().map(|r| from_row(r, true)).collect()
}

/// Team-scoped: another team's key id deletes nothing (→ 404 upstream).
pub async fn delete<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    key: ApiKeyId,
) -> DbResult<Option<String>> {
    let row =
        sqlx::query("DELETE FROM team_api_keys WHERE id = $1 AND team_id = $2 RETURNING name")
            .bind(key.db())
            .bind(team.db())
            .fetch_optional(ex)
            .await?;
    row.as_ref().map(|r| text(r, "name")).transpose()
}

pub async fn delete_all_for_team<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<()> {
    sqlx::query("DELETE FROM team_api_keys WHERE team_id = $1")
        .bind(team.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// The key with this hash, if its team is live.
pub async fn by_hash<'e>(ex: impl AnyExecutor<'e>, key_hash: &str) -> DbResult<Option<ApiKey>> {
    let row = sqlx::query(
        "SELECT k.id, k.team_id, k.name, k.key_prefix, k.created_by, k.created_at, k.last_used \
         FROM team_api_keys k JOIN teams t ON t.id = k.team_id \
         WHERE k.key_hash = $1 AND t.deleted_at IS NULL",
    )
    .bind(key_hash)
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(|r| from_row(r, false)).transpose()
}

pub async fn touch<'e>(ex: impl AnyExecutor<'e>, key: ApiKeyId, now: i64) -> DbResult<()> {
    sqlx::query("UPDATE team_api_keys SET last_used = $1 WHERE id = $2")
        .bind(now)
        .bind(key.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Who created key `key` (admin checks on API-key callers).
pub async fn creator<'e>(ex: impl AnyExecutor<'e>, key: ApiKeyId) -> DbResult<Option<UserId>> {
    let row = sqlx::query("SELECT created_by FROM team_api_keys WHERE id = $1")
        .bind(key.db())
        .fetch_optional(ex)
        .await?;
    match row {
        Some(r) => opt_id(&r, "created_by"),
        None => Ok(None),
    }
}
