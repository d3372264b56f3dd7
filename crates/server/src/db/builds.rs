//! `builds`: the template build queue (spec §B.13, §G). Platform-wide (admins only), so no
//! team scoping. Workers claim `pending` rows with a compare-and-set to `running`; every later
//! change is a CAS on the status too, so a cancel and a finishing worker cannot both win.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, flag, id, int, json, opt_id, opt_int, opt_text, text};
use crate::ids::{BuildId, CapsuleId, HostId, TemplateId, UserId};

#[derive(Debug, Clone)]
pub struct BuildRow {
    pub id: BuildId,
    pub name: String,
    pub base_template: String,
    pub recipe: Vec<String>,
    pub healthcheck: Option<String>,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub skip_pre_post: bool,
    /// `tar` | `tar.gz` | `zip` when an archive was uploaded.
    pub archive_kind: Option<String>,
    pub status: String,
    pub current_step: i64,
    pub total_steps: i64,
    pub logs: serde_json::Value,
    pub error: Option<String>,
    pub sandbox_id: Option<CapsuleId>,
    pub host_id: Option<HostId>,
    pub template_id: Option<TemplateId>,
    pub default_user: String,
    pub default_env: serde_json::Value,
    pub created_by: Option<UserId>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
}

impl BuildRow {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failed" | "cancelled")
    }
}

const COLUMNS: &str = "id, name, base_template, recipe, healthcheck, vcpus, memory_mb, \
     skip_pre_post, archive_kind, status, current_step, total_steps, logs, error, sandbox_id, \
     host_id, template_id, default_user, default_env, created_by, created_at, started_at, \
     completed_at";

fn from_row(row: &AnyRow) -> DbResult<BuildRow> {
    let recipe: Vec<String> = serde_json::from_value(json(row, "recipe")?)
        .map_err(|_| super::DbError::Corrupt("recipe"))?;
    Ok(BuildRow {
        id: id(row, "id")?,
        name: text(row, "name")?,
        base_template: text(row, "base_template")?,
        recipe,
        healthcheck: opt_text(row, "healthcheck")?,
        vcpus: int(row, "vcpus")?,
        memory_mb: int(row, "memory_mb")?,
        skip_pre_post: flag(row, "skip_pre_post")?,
        archive_kind: opt_text(row, "archive_kind")?,
        status: text(row, "status")?,
        current_step: int(row, "current_step")?,
        total_steps: int(row, "total_steps")?,
        logs: json(row, "logs")?,
        error: opt_text(row, "error")?,
        sandbox_id: opt_id(row, "sandbox_id")?,
        host_id: opt_id(row, "host_id")?,
        template_id: opt_id(row, "template_id")?,
        default_user: text(row, "default_user")?,
        default_env: json(row, "default_env")?,
        created_by: opt_id(row, "created_by")?,
        created_at: int(row, "created_at")?,
        started_at: opt_int(row, "started_at")?,
        completed_at: opt_int(row, "completed_at")?,
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, b: &BuildRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO builds (id, name, base_template, recipe, healthcheck, vcpus, memory_mb, \
         skip_pre_post, archive_kind, status, current_step, total_steps, logs, default_user, \
         default_env, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(b.id.db())
    .bind(&b.name)
    .bind(&b.base_template)
    .bind(serde_json::Value::from(b.recipe.clone()).to_string())
    .bind(b.healthcheck.clone())
    .bind(b.vcpus)
    .bind(b.memory_mb)
    .bind(i64::from(b.skip_pre_post))
    .bind(b.archive_kind.clone())
    .bind(&b.status)
    .bind(b.current_step)
    .bind(b.total_steps)
    .bind(b.logs.to_string())
    .bind(&b.default_user)
    .bind(b.default_env.to_string())
    .bind(b.created_by.map(|u| u.db()))
    .bind(b.created_at)
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn get<'e>(ex: impl AnyExecutor<'e>, b: BuildId) -> DbResult<Option<BuildRow>> {
    let sql = format!("SELECT {COLUMNS} FROM builds WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(b.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Newest first.
pub async fn list<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<BuildRow>> {
    let sql = format!("SELECT {COLUMNS} FROM builds ORDER BY created_at DESC, id DESC");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}

/// Rows in `statuses`, oldest first.
pub async fn with_status<'e>(
    ex: impl AnyExecutor<'e>,
    statuses: &[&str],
) -> DbResult<Vec<BuildRow>> {
    let marks: Vec<String> = (1..=statuses.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM builds WHERE status IN ({}) ORDER BY created_at, id",
        marks.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for s in statuses {
        q = q.bind(*s);
    }
    let rows = q.fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}

/// `pending` → `running` for one build; false when another worker (or a cancel) won.
pub async fn claim<'e>(ex: impl AnyExecutor<'e>, b: BuildId, now: i64) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE builds SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(b.db())
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Progress of a running build: the step being run and the log so far.
pub async fn progress<'e>(
    ex: impl AnyExecutor<'e>,
    b: BuildId,
    current_step: i64,
    logs: &serde_json::Value,
) -> DbResult<()> {
    sqlx::query(
        "UPDATE builds SET current_step = $1, logs = $2 WHERE id = $3 AND status = 'running'",
    )
    .bind(current_step)
    .bind(logs.to_string())
    .bind(b.db())
    .execute(ex)
    .await?;
    Ok(())
}

/// Records the build capsule (before it is created, so a crash leaves a trail to clean up).
pub async fn set_capsule<'e>(
    ex: impl AnyExecutor<'e>,
    b: BuildId,
    sandbox: CapsuleId,
    host: HostId,
) -> DbResult<()> {
    sqlx::query("UPDATE builds SET sandbox_id = $1, host_id = $2 WHERE id = $3")
        .bind(sandbox.db())
        .bind(host.db())
        .bind(b.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// The end of a build.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: &'static str,
    pub error: Option<String>,
    pub template_id: Option<TemplateId>,
    pub default_user: Option<String>,
    pub default_env: Option<serde_json::Value>,
}

/// CAS from one of `from` to the outcome's terminal status; false when it had moved on.
pub async fn finish<'e>(
    ex: impl AnyExecutor<'e>,
    b: BuildId,
    from: &[&str],
    outcome: &Outcome,
    now: i64,
) -> DbResult<bool> {
    let marks: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 7)).collect();
    let sql = format!(
        "UPDATE builds SET status = $1, error = $2, template_id = COALESCE($3, template_id), \
         default_user = COALESCE($4, default_user), default_env = COALESCE($5, default_env), \
         completed_at = $6 WHERE status IN ({}) AND id = ${}",
        marks.join(", "),
        from.len() + 7
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(outcome.status)
        .bind(outcome.error.clone())
        .bind(outcome.template_id.map(|t| t.db()))
        .bind(outcome.default_user.clone())
        .bind(outcome.default_env.as_ref().map(|v| v.to_string()))
        .bind(now);
    for s in from {
        q = q.bind(*s);
    }
    let done = q.bind(b.db()).execute(ex).await?;
    Ok(done.rows_affected() == 1)
}
