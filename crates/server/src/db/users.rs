//! `users`: accounts. Emails are stored lower-cased and trimmed.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, flag, id, int, opt_text, text};
use crate::ids::UserId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Inactive,
    Active,
    Disabled,
    Deleted,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Inactive => "inactive",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
            UserStatus::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inactive" => UserStatus::Inactive,
            "active" => UserStatus::Active,
            "disabled" => UserStatus::Disabled,
            "deleted" => UserStatus::Deleted,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub password_hash: Option<String>,
    pub name: String,
    pub is_admin: bool,
    pub status: UserStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! cols {
    () => {
        "id, email, password_hash, name, is_admin, status, created_at, updated_at"
    };
}

fn from_row(row: &AnyRow) -> DbResult<User> {
    Ok(User {
        id: id(row, "id")?,
        email: text(row, "email")?,
        password_hash: opt_text(row, "password_hash")?,
        name: text(row, "name")?,
        is_admin: flag(row, "is_admin")?,
        status: UserStatus::parse(&text(row, "status")?)
            .ok_or(super::DbError::Corrupt("status"))?,
        created_at: int(row, "created_at")?,
        updated_at: int(row, "updated_at")?,
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, user: &User) -> DbResult<()> {
    sqlx::query(concat!(
        "INSERT INTO users (",
        cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(user.id.db())
    .bind(&user.email)
    .bind(user.password_hash.clone())
    .bind(&user.name)
    .bind(i64::from(user.is_admin))
    .bind(user.status.as_str())
    .bind(user.created_at)
    .bind(user.updated_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn by_id<'e>(ex: impl AnyExecutor<'e>, user: UserId) -> DbResult<Option<User>> {
    let row = sqlx::query(concat!("SELECT ", cols!(), " FROM users WHERE id = $1"))
        .bind(user.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_email<'e>(ex: impl AnyExecutor<'e>, email: &str) -> DbResult<Option<User>> {
    let row = sqlx::query(concat!("SELECT ", cols!(), " FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Active users whose email starts with `prefix` (LIKE metacharacters escaped).
pub async fn search_by_email_prefix<'e>(
    ex: impl AnyExecutor<'e>,
    prefix: &str,
    limit: i64,
) -> DbResult<Vec<User>> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    let rows = sqlx::query(concat!(
        "SELECT ",
        cols!(),
        " FROM users WHERE email LIKE $1 ESCAPE '\\' AND status = 'active' ORDER BY email LIMIT $2"
    ))
    .bind(pattern)
    .bind(limit)
    .fetch_all(ex)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn set_status<'e>(
    ex: impl AnyExecutor<'e>,
    user: UserId,
    status: UserStatus,
    now: i64,
) -> DbResult<()> {
    sqlx::query("UPDATE users SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(now)
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn set_admin<'e>(
    ex: impl AnyExecutor<'e>,
    user: UserId,
    admin: bool,
    now: i64,
) -> DbResult<()> {
    sqlx::query("UPDATE users SET is_admin = $1, updated_at = $2 WHERE id = $3")
        .bind(i64::from(admin))
        .bind(now)
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn set_name<'e>(
    ex: impl AnyExecutor<'e>,
    user: UserId,
    name: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3")
        .bind(name)
        .bind(now)
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

pub async fn set_password_hash<'e>(
    ex: impl AnyExecutor<'e>,
    user: UserId,
    hash: &str,
    now: i64,
) -> DbResult<()> {
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Marks the account deleted and frees its email for a new signup.
pub async fn soft_delete<'e>(ex: impl AnyExecutor<'e>, user: UserId, now: i64) -> DbResult<()> {
    sqlx::query(
        "UPDATE users SET status = 'deleted', deleted_at = $1, updated_at = $1, \
         email = $2, password_hash = NULL WHERE id = $3",
    )
    .bind(now)
    .bind(format!("deleted+{}@invalid", user.0.simple()))
    .bind(user.db())
    .execute(ex)
    .await?;
    Ok(())
}

/// Removes an account outright (an expired, never-activated signup being re-created).
pub async fn delete<'e>(ex: impl AnyExecutor<'e>, user: UserId) -> DbResult<()> {
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Whether any platform admin exists (the first activated user becomes one).
pub async fn any_admin<'e>(ex: impl AnyExecutor<'e>) -> DbResult<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1 AND status = 'active'")
            .fetch_one(ex)
            .await?;
    Ok(n > 0)
}
