//! `teams` and `users_teams` (membership with a role).

use serde::{Deserialize, Serialize};
use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbError, DbResult, flag, id, int, opt_int, text};
use crate::ids::{TeamId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "member" => Role::Member,
            _ => return None,
        })
    }

    /// Owners and admins manage the team (rename, members, keys of others).
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub slug: String,
    pub is_byoc: bool,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Membership {
    pub team: Team,
    pub role: Role,
    pub is_default: bool,
    pub joined_at: i64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: UserId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub joined_at: i64,
}

macro_rules! team_cols {
    () => {
        "t.id, t.name, t.slug, t.is_byoc, t.created_at, t.deleted_at"
    };
}

fn team_from_row(row: &AnyRow) -> DbResult<Team> {
    Ok(Team {
        id: id(row, "id")?,
        name: text(row, "name")?,
        slug: text(row, "slug")?,
        is_byoc: flag(row, "is_byoc")?,
        created_at: int(row, "created_at")?,
        deleted_at: opt_int(row, "deleted_at")?,
    })
}

fn role(row: &AnyRow) -> DbResult<Role> {
    Role::parse(&text(row, "role")?).ok_or(DbError::Corrupt("role"))
}

fn membership_from_row(row: &AnyRow) -> DbResult<Membership> {
    Ok(Membership {
        team: team_from_row(row)?,
        role: role(row)?,
        is_default: flag(row, "is_default")?,
        joined_at: int(row, "joined_at")?,
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, team: &Team) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO teams (id, name, slug, is_byoc, created_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(team.id.db())
    .bind(&team.name)
    .bind(&team.slug)
    .bind(i64::from(team.is_byoc))
    .bind(team.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

/// A live (not deleted) team.
pub async fn by_id<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Option<Team>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        team_cols!(),
        " FROM teams t WHERE t.id = $1 AND t.deleted_at IS NULL"
    ))
    .bind(team.db())
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(team_from_row).transpose()
}

pub async fn add_member<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    user: UserId,
    role: Role,
    is_default: bool,
    now: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO users_teams (team_id, user_id, is_default, role, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(team.db())
    .bind(user.db())
    .bind(i64::from(is_default))
    .bind(role.as_str())
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// The user's membership of a live team, if any.
pub async fn membership<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    user: UserId,
) -> DbResult<Option<Membership>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        team_cols!(),
        ", m.role, m.is_default, m.created_at AS joined_at FROM users_teams m \
         JOIN teams t ON t.id = m.team_id \
         WHERE m.team_id = $1 AND m.user_id = $2 AND t.deleted_at IS NULL"
    ))
    .bind(team.db())
    .bind(user.db())
    .fetch_optional(ex)
    .await?;
    row.as_ref().map(membership_from_row).transpose()
}

/// The user's live teams: the default one first, then oldest membership first.
pub async fn of_user<'e>(ex: impl AnyExecutor<'e>, user: UserId) -> DbResult<Vec<Membership>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        team_cols!(),
        ", m.role, m.is_default, m.created_at AS joined_at FROM users_teams m \
         JOIN teams t ON t.id = m.team_id \
         WHERE m.user_id = $1 AND t.deleted_at IS NULL \
         ORDER BY m.is_default DESC, m.created_at ASC, t.id ASC"
    ))
    .bind(user.db())
    .fetch_all(ex)
    .await?;
    rows.iter().map(membership_from_row).collect()
}

pub async fn members<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Vec<Member>> {
    let rows = sqlx::query(
        "SELECT u.id, u.name, u.email, m.role, m.created_at AS joined_at FROM users_teams m \
         JOIN users u ON u.id = m.user_id \
         WHERE m.team_id = $1 AND u.status <> 'deleted' \
         ORDER BY m.created_at ASC, u.email ASC",
    )
    .bind(team.db())
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Member {
                user_id: id(row, "id")?,
                name: text(row, "name")?,
                email: text(row, "email")?,
                role: role(row)?,
                joined_at: int(row, "joined_at")?,
            })
        })
        .collect()
}

/// Number of members other than `except` (an owner with members can't delete their account).
pub async fn count_other_members<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    except: UserId,
) -> DbResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM users_teams WHERE team_id = $1 AND user_id <> $2")
            .bind(team.db())
            .bind(except.db())
            .fetch_one(ex)
            .await?,
    )
}

pub async fn set_role<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    user: UserId,
    role: Role,
) -> DbResult<bool> {
    let done = sqlx::query("UPDATE users_teams SET role = $1 WHERE team_id = $2 AND user_id = $3")
        .bind(role.as_str())
        .bind(team.db())
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn remove_member<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    user: UserId,
) -> DbResult<bool> {
    let done = sqlx::query("DELETE FROM users_teams WHERE team_id = $1 AND user_id = $2")
        .bind(team.db())
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn rename<'e>(ex: impl AnyExecutor<'e>, team: TeamId, name: &str) -> DbResult<()> {
    sqlx::query("UPDATE teams SET name = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(name)
        .bind(team.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Soft delete: the row (and its slug) stays reserved.
pub async fn soft_delete<'e>(ex: impl AnyExecutor<'e>, team: TeamId, now: i64) -> DbResult<()> {
    sqlx::query("UPDATE teams SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(now)
        .bind(team.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Ids of the team's capsules that still hold resources on a host.
pub async fn active_capsules<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
) -> DbResult<Vec<crate::ids::CapsuleId>> {
    let rows = sqlx::query(
        "SELECT id FROM sandboxes WHERE team_id = $1 AND status NOT IN ('stopped', 'error') \
         ORDER BY created_at",
    )
    .bind(team.db())
    .fetch_all(ex)
    .await?;
    rows.iter().map(|row| id(row, "id")).collect()
}
