//! `templates`: base images and snapshot templates (spec §B.4). A team sees its own templates
//! and the platform team's; names are unique per team and a team may not reuse a platform name.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, id, int, json, text};
use crate::ids::{TeamId, TemplateId};

#[derive(Debug, Clone)]
pub struct TemplateRow {
    pub id: TemplateId,
    pub name: String,
    /// `base` | `snapshot`.
    pub kind: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub size_bytes: i64,
    pub team_id: TeamId,
    pub default_user: String,
    pub default_env: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

impl TemplateRow {
    pub fn is_platform(&self) -> bool {
        self.team_id == TeamId::PLATFORM
    }

    /// Built-in base images: platform templates of type `base` cannot be deleted through the
    /// team API.
    pub fn is_protected(&self) -> bool {
        self.is_platform() && self.kind == "base" && !self.is_built()
    }

    /// Made by a template build (`metadata.build_id`): stored on the agents as a checkpoint
    /// image under its id, like a snapshot template, whatever its type.
    pub fn is_built(&self) -> bool {
        self.metadata
            .get("build_id")
            .and_then(|v| v.as_str())
            .is_some()
    }

    /// Whether the agent finds it by team + id (`images/<uuid>/`) rather than by name.
    pub fn stored_by_id(&self) -> bool {
        self.kind == "snapshot" || self.is_built()
    }
}

const COLUMNS: &str = "id, name, type, vcpus, memory_mb, size_bytes, team_id, default_user, \
     default_env, metadata, created_at";

fn from_row(row: &AnyRow) -> DbResult<TemplateRow> {
    Ok(TemplateRow {
        id: id(row, "id")?,
        name: text(row, "name")?,
        kind: text(row, "type")?,
        vcpus: int(row, "vcpus")?,
        memory_mb: int(row, "memory_mb")?,
        size_bytes: int(row, "size_bytes")?,
        team_id: id(row, "team_id")?,
        default_user: text(row, "default_user")?,
        default_env: json(row, "default_env")?,
        metadata: json(row, "metadata")?,
        created_at: int(row, "created_at")?,
    })
}

/// `name` as `team` sees it: the team's own template first, then the platform's.
pub async fn resolve<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    name: &str,
) -> DbResult<Option<TemplateRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM templates WHERE name = $1 AND team_id IN ($2, $3) \
         ORDER BY CASE WHEN team_id = $2 THEN 0 ELSE 1 END LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(team.db())
        .bind(TeamId::PLATFORM.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The team's own and the platform's templates, newest first, optionally of one type.
pub async fn list_visible<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    kind: Option<&str>,
) -> DbResult<Vec<TemplateRow>> {
    let mut sql = format!("SELECT {COLUMNS} FROM templates WHERE team_id IN ($1, $2)");
    if kind.is_some() {
        sql.push_str(" AND type = $3");
    }
    sql.push_str(" ORDER BY created_at DESC, name");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(team.db())
        .bind(TeamId::PLATFORM.db());
    if let Some(kind) = kind {
        q = q.bind(kind);
    }
    let rows = q.fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}

/// Inserts; a taken `(team_id, name)` is a unique violation ([`super::DbError::is_unique_violation`]).
pub async fn insert<'e>(ex: impl AnyExecutor<'e>, t: &TemplateRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO templates (id, name, type, vcpus, memory_mb, size_bytes, team_id, \
         default_user, default_env, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(t.id.db())
    .bind(&t.name)
    .bind(&t.kind)
    .bind(t.vcpus)
    .bind(t.memory_mb)
    .bind(t.size_bytes)
    .bind(t.team_id.db())
    .bind(&t.default_user)
    .bind(t.default_env.to_string())
    .bind(t.metadata.to_string())
    .bind(t.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn set_size<'e>(ex: impl AnyExecutor<'e>, t: TemplateId, size: i64) -> DbResult<()> {
    sqlx::query("UPDATE templates SET size_bytes = $1 WHERE id = $2")
        .bind(size)
        .bind(t.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Deletes the team's template `t`; false when it was not there.
pub async fn delete<'e>(ex: impl AnyExecutor<'e>, team: TeamId, t: TemplateId) -> DbResult<bool> {
    let done = sqlx::query("DELETE FROM templates WHERE id = $1 AND team_id = $2")
        .bind(t.db())
        .bind(team.db())
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every template of every team (admin view), platform ones first, then newest first.
pub async fn list_all<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<TemplateRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM templates ORDER BY CASE WHEN team_id = $1 THEN 0 ELSE 1 END, \
         created_at DESC, name"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(TeamId::PLATFORM.db())
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The template `name` owned by `team` itself (no platform fallback).
pub async fn owned<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    name: &str,
) -> DbResult<Option<TemplateRow>> {
    let sql = format!("SELECT {COLUMNS} FROM templates WHERE team_id = $1 AND name = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(team.db())
        .bind(name)
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}
