//! Platform-wide reads for the admin routes (spec §B.13): every user and team with counts,
//! every template. Nothing here is team-scoped; callers check the platform admin flag first.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, flag, id, int, opt_int, text};
use crate::db::users::UserStatus;
use crate::ids::{TeamId, UserId};

#[derive(Debug, Clone)]
pub struct UserSummary {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub is_admin: bool,
    pub status: String,
    pub created_at: i64,
    pub teams_joined: i64,
    pub teams_owned: i64,
}

#[derive(Debug, Clone)]
pub struct TeamSummary {
    pub id: TeamId,
    pub name: String,
    pub slug: String,
    pub is_byoc: bool,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
    pub member_count: i64,
    pub owner_name: Option<String>,
    pub owner_email: Option<String>,
    pub active_sandbox_count: i64,
}

/// Users other than deleted ones, oldest first, `limit` from `offset`; plus the total count.
pub async fn users<'e>(
    ex: impl AnyExecutor<'e> + Copy,
    limit: i64,
    offset: i64,
) -> DbResult<(Vec<UserSummary>, i64)> {
    let deleted = UserStatus::Deleted.as_str();
    let total = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE status <> $1")
        .bind(deleted)
        .fetch_one(ex)
        .await?;
    let rows = sqlx::query(
        "SELECT u.id, u.email, u.name, u.is_admin, u.status, u.created_at, \
           (SELECT COUNT(*) FROM users_teams m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id = u.id AND t.deleted_at IS NULL) AS teams_joined, \
           (SELECT COUNT(*) FROM users_teams m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id = u.id AND m.role = 'owner' AND t.deleted_at IS NULL) AS teams_owned \
         FROM users u WHERE u.status <> $1 ORDER BY u.created_at, u.id LIMIT $2 OFFSET $3",
    )
    .bind(deleted)
    .bind(limit)
    .bind(offset)
    .fetch_all(ex)
    .await?;
    let list = rows.iter().map(user_from_row).collect::<DbResult<_>>()?;
    Ok((list, int(&total, "n")?))
}

fn user_from_row(row: &AnyRow) -> DbResult<UserSummary> {
    Ok(UserSummary {
        id: id(row, "id")?,
        email: text(row, "email")?,
        name: text(row, "name")?,
        is_admin: flag(row, "is_admin")?,
        status: text(row, "status")?,
        created_at: int(row, "created_at")?,
        teams_joined: int(row, "teams_joined")?,
        teams_owned: int(row, "teams_owned")?,
    })
}

/// Active platform admins.
pub async fn count_admins<'e>(ex: impl AnyExecutor<'e>) -> DbResult<i64> {
    let row =
        sqlx::query("SELECT COUNT(*) AS n FROM users WHERE is_admin = 1 AND status = 'active'")
            .fetch_one(ex)
            .await?;
    int(&row, "n")
}

/// Every team except the platform team (deleted ones included, with `deleted_at`), oldest
/// first, `limit` from `offset`; plus the total count.
pub async fn teams<'e>(
    ex: impl AnyExecutor<'e> + Copy,
    limit: i64,
    offset: i64,
) -> DbResult<(Vec<TeamSummary>, i64)> {
    let platform = TeamId::PLATFORM.db();
    let total = sqlx::query("SELECT COUNT(*) AS n FROM teams WHERE id <> $1")
        .bind(platform.clone())
        .fetch_one(ex)
        .await?;
    let rows = sqlx::query(
        "SELECT t.id, t.name, t.slug, t.is_byoc, t.created_at, t.deleted_at, \
           (SELECT COUNT(*) FROM users_teams m WHERE m.team_id = t.id) AS member_count, \
           (SELECT u.name FROM users_teams m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = t.id AND m.role = 'owner' LIMIT 1) AS owner_name, \
           (SELECT u.email FROM users_teams m JOIN users u ON u.id = m.user_id \
             WHERE m.team_id = t.id AND m.role = 'owner' LIMIT 1) AS owner_email, \
           (SELECT COUNT(*) FROM sandboxes s WHERE s.team_id = t.id \
             AND s.status NOT IN ('stopped', 'error')) AS active_sandbox_count \
         FROM teams t WHERE t.id <> $1 ORDER BY t.created_at, t.id LIMIT $2 OFFSET $3",
    )
    .bind(platform)
    .bind(limit)
    .bind(offset)
    .fetch_all(ex)
    .await?;
    let list = rows.iter().map(team_from_row).collect::<DbResult<_>>()?;
    Ok((list, int(&total, "n")?))
}

fn team_from_row(row: &AnyRow) -> DbResult<TeamSummary> {
    Ok(TeamSummary {
        id: id(row, "id")?,
        name: text(row, "name")?,
        slug: text(row, "slug")?,
        is_byoc: flag(row, "is_byoc")?,
        created_at: int(row, "created_at")?,
        deleted_at: opt_int(row, "deleted_at")?,
        member_count: int(row, "member_count")?,
        owner_name: super::opt_text(row, "owner_name")?,
        owner_email: super::opt_text(row, "owner_email")?,
        active_sandbox_count: int(row, "active_sandbox_count")?,
    })
}

/// Deletes the API keys `user` created (on deactivation).
pub async fn delete_keys_created_by<'e>(ex: impl AnyExecutor<'e>, user: UserId) -> DbResult<u64> {
    let done = sqlx::query("DELETE FROM team_api_keys WHERE created_by = $1")
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}
