//! `one_time_tokens`: activation and password-reset tokens (hash only), consumed atomically.

use sqlx::AnyExecutor;

use super::{DbResult, id, int};
use crate::ids::UserId;

#[derive(Debug, Clone, Copy)]
pub enum TokenKind {
    Activation,
    PasswordReset,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Activation => "activation",
            TokenKind::PasswordReset => "password_reset",
        }
    }
}

pub async fn insert<'e>(
    ex: impl AnyExecutor<'e>,
    kind: TokenKind,
    token_hash: &str,
    user: UserId,
    now: i64,
    expires_at: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO one_time_tokens (token_hash, kind, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(kind.as_str())
    .bind(user.db())
    .bind(now)
    .bind(expires_at)
    .execute(ex)
    .await?;
    Ok(())
}

/// Deletes the token and returns its user if it was still valid: a token works once even when
/// two requests race (DELETE … RETURNING is atomic on both databases).
pub async fn take<'e>(
    ex: impl AnyExecutor<'e>,
    kind: TokenKind,
    token_hash: &str,
    now: i64,
) -> DbResult<Option<UserId>> {
    let row = sqlx::query(
        "DELETE FROM one_time_tokens WHERE token_hash = $1 AND kind = $2 RETURNING user_id, expires_at",
    )
    .bind(token_hash)
    .bind(kind.as_str())
    .fetch_optional(ex)
    .await?;
    match row {
        Some(row) if int(&row, "expires_at")? > now => Ok(Some(id(&row, "user_id")?)),
        _ => Ok(None),
    }
}
