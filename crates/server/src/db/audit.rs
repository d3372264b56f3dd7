//! `audit_logs`: one row per action, newest first, cursor-paginated.

use sqlx::any::AnyRow;
use sqlx::{AnyExecutor, AssertSqlSafe};

use super::{DbResult, id, int, json, text};
use crate::ids::{AuditLogId, TeamId};

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: AuditLogId,
    pub team_id: TeamId,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_name: String,
    pub resource_type: String,
    pub resource_id: String,
    pub action: String,
    pub scope: String,
    pub status: String,
    pub metadata: serde_json::Value,
    pub created_at: i64,
}

fn from_row(row: &AnyRow) -> DbResult<AuditRow> {
    Ok(AuditRow {
        id: id(row, "id")?,
        team_id: id(row, "team_id")?,
        actor_type: text(row, "actor_type")?,
        actor_id: text(row, "actor_id")?,
        actor_name: text(row, "actor_name")?,
        resource_type: text(row, "resource_type")?,
        resource_id: text(row, "resource_id")?,
        action: text(row, "action")?,
        scope: text(row, "scope")?,
        status: text(row, "status")?,
        metadata: json(row, "metadata")?,
        created_at: int(row, "created_at")?,
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, row: &AuditRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO audit_logs (id, team_id, actor_type, actor_id, actor_name, resource_type, \
         resource_id, action, scope, status, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(row.id.db())
    .bind(row.team_id.db())
    .bind(&row.actor_type)
    .bind(&row.actor_id)
    .bind(&row.actor_name)
    .bind(&row.resource_type)
    .bind(&row.resource_id)
    .bind(&row.action)
    .bind(&row.scope)
    .bind(&row.status)
    .bind(row.metadata.to_string())
    .bind(row.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct AuditFilter {
    pub team: TeamId,
    /// Scopes the caller may see (`team`, plus `admin` for owners/admins).
    pub scopes: Vec<&'static str>,
    /// OR-matched; empty = any.
    pub resource_types: Vec<String>,
    pub actions: Vec<String>,
    /// Rows strictly older than this `(created_at, id)` position.
    pub before: Option<(i64, Option<AuditLogId>)>,
    pub limit: i64,
}

/// Builds the statement with numbered placeholders (the filter lists vary in length).
pub async fn list<'e>(ex: impl AnyExecutor<'e>, f: &AuditFilter) -> DbResult<Vec<AuditRow>> {
    let mut sql = String::from(
        "SELECT id, team_id, actor_type, actor_id, actor_name, resource_type, resource_id, action, \
         scope, status, metadata, created_at FROM audit_logs WHERE team_id = $1",
    );
    let mut binds: Vec<String> = vec![f.team.db()];
    let in_list = |sql: &mut String, column: &str, values: &[String], binds: &mut Vec<String>| {
        if values.is_empty() {
            return;
        }
        sql.push_str(&format!(" AND {column} IN ("));
        for (i, v) in values.iter().enumerate() {
            binds.push(v.clone());
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", binds.len()));
        }
        sql.push(')');
    };
    let scopes: Vec<String> = f.scopes.iter().map(|s| s.to_string()).collect();
    in_list(&mut sql, "scope", &scopes, &mut binds);
    in_list(&mut sql, "resource_type", &f.resource_types, &mut binds);
    in_list(&mut sql, "action", &f.actions, &mut binds);
    let n = binds.len();
    match f.before {
        None => {}
        Some((_, None)) => sql.push_str(&format!(" AND created_at < ${}", n + 1)),
        Some((_, Some(_))) => sql.push_str(&format!(
            " AND (created_at < ${a} OR (created_at = ${a} AND id < ${b}))",
            a = n + 1,
            b = n + 2
        )),
    }
    let limit_at = n
        + 1
        + match f.before {
            None => 0,
            Some((_, None)) => 1,
            Some((_, Some(_))) => 2,
        };
    sql.push_str(&format!(
        " ORDER BY created_at DESC, id DESC LIMIT ${limit_at}"
    ));

    let mut query = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    if let Some((at, before_id)) = f.before {
        query = query.bind(at);
        if let Some(before_id) = before_id {
            query = query.bind(before_id.db());
        }
    }
    let rows = query.bind(f.limit).fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}
