//! `sandboxes`: capsule rows. Status changes go through [`transition`], a compare-and-set on
//! the current status, so concurrent requests and background tasks never overwrite each other
//! (e.g. a destroy that lands while a create is still booting wins; the create task sees it).

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, id, int, json, opt_id, opt_int, text};
use crate::ids::{CapsuleId, HostId, TeamId, TemplateId};

/// Statuses that hold (or are about to hold) resources on a host.
pub const ACTIVE: &[&str] = &[
    "pending",
    "starting",
    "running",
    "pausing",
    "paused",
    "snapshotting",
    "resuming",
    "stopping",
    "hibernated",
    "missing",
];
/// Terminal statuses: excluded from lists, never left again.
pub const TERMINAL: &[&str] = &["stopped", "error"];

#[derive(Debug, Clone)]
pub struct SandboxRow {
    pub id: CapsuleId,
    pub team_id: TeamId,
    pub host_id: Option<HostId>,
    /// The template reference as requested (`minimal`, a snapshot name).
    pub template: String,
    pub template_id: Option<TemplateId>,
    pub template_team_id: Option<TeamId>,
    pub status: String,
    pub status_reason: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub timeout_sec: i64,
    pub disk_size_mb: i64,
    pub host_ip: String,
    /// String → string labels (user metadata and system keys).
    pub metadata: serde_json::Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub last_updated: i64,
}

const COLUMNS: &str = "id, team_id, host_id, template, template_id, template_team_id, status, \
     status_reason, vcpus, memory_mb, timeout_sec, disk_size_mb, host_ip, metadata, created_at, \
     started_at, last_active_at, last_updated";

fn from_row(row: &AnyRow) -> DbResult<SandboxRow> {
    Ok(SandboxRow {
        id: id(row, "id")?,
        team_id: id(row, "team_id")?,
        host_id: opt_id(row, "host_id")?,
        template: text(row, "template")?,
        template_id: opt_id(row, "template_id")?,
        template_team_id: opt_id(row, "template_team_id")?,
        status: text(row, "status")?,
        status_reason: text(row, "status_reason")?,
        vcpus: int(row, "vcpus")?,
        memory_mb: int(row, "memory_mb")?,
        timeout_sec: int(row, "timeout_sec")?,
        disk_size_mb: int(row, "disk_size_mb")?,
        host_ip: text(row, "host_ip")?,
        metadata: json(row, "metadata")?,
        created_at: int(row, "created_at")?,
        started_at: opt_int(row, "started_at")?,
        last_active_at: opt_int(row, "last_active_at")?,
        last_updated: int(row, "last_updated")?,
    })
}

pub async fn insert<'e>(ex: impl AnyExecutor<'e>, row: &SandboxRow) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, host_id, template, template_id, template_team_id, \
         status, status_reason, vcpus, memory_mb, timeout_sec, disk_size_mb, host_ip, metadata, \
         created_at, started_at, last_active_at, last_updated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(row.id.db())
    .bind(row.team_id.db())
    .bind(row.host_id.map(|h| h.db()))
    .bind(&row.template)
    .bind(row.template_id.map(|t| t.db()))
    .bind(row.template_team_id.map(|t| t.db()))
    .bind(&row.status)
    .bind(&row.status_reason)
    .bind(row.vcpus)
    .bind(row.memory_mb)
    .bind(row.timeout_sec)
    .bind(row.disk_size_mb)
    .bind(&row.host_ip)
    .bind(row.metadata.to_string())
    .bind(row.created_at)
    .bind(row.started_at)
    .bind(row.last_active_at)
    .bind(row.last_updated)
    .execute(ex)
    .await?;
    Ok(())
}

/// The capsule when it belongs to `team` (another team's is `None`: a 404, never a 403).
pub async fn get<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    capsule: CapsuleId,
) -> DbResult<Option<SandboxRow>> {
    let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1 AND team_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(capsule.db())
        .bind(team.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Background work only (reconciler, task completion): no team scoping.
pub async fn get_unscoped<'e>(
    ex: impl AnyExecutor<'e>,
    capsule: CapsuleId,
) -> DbResult<Option<SandboxRow>> {
    let sql = format!("SELECT {COLUMNS} FROM sandboxes WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(capsule.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The team's capsules that are not terminal, newest first.
pub async fn list_active<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Vec<SandboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE team_id = $1 AND status NOT IN ('stopped', 'error') \
         ORDER BY created_at DESC, id DESC"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(team.db())
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Every non-terminal capsule placed on `host` (reconciler).
pub async fn list_on_host<'e>(ex: impl AnyExecutor<'e>, host: HostId) -> DbResult<Vec<SandboxRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sandboxes WHERE host_id = $1 AND status NOT IN ('stopped', 'error')"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(host.db())
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Ids among `ids` whose rows are terminal (or absent) and unchanged since `before`: capsules an
/// agent still runs although the control plane is done with them.
pub async fn terminal_or_unknown<'e>(
    ex: impl AnyExecutor<'e>,
    ids: &[CapsuleId],
    before: i64,
) -> DbResult<Vec<CapsuleId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = String::from("SELECT id, status, last_updated FROM sandboxes WHERE id IN (");
    for i in 0..ids.len() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${}", i + 1));
    }
    sql.push(')');
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(id.db());
    }
    let rows = q.fetch_all(ex).await?;
    let mut known = std::collections::HashMap::new();
    for row in &rows {
        let capsule: CapsuleId = id(row, "id")?;
        known.insert(capsule, (text(row, "status")?, int(row, "last_updated")?));
    }
    Ok(ids
        .iter()
        .filter(|c| match known.get(c) {
            None => true,
            Some((status, updated)) => TERMINAL.contains(&status.as_str()) && *updated < before,
        })
        .copied()
        .collect())
}

/// What a successful transition also sets.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub started_now: bool,
    pub host_ip: Option<String>,
    pub disk_size_mb: Option<i64>,
    pub reason: Option<String>,
}

/// Compare-and-set: `from` (any of) → `to`. Returns whether the row changed (false: absent or
/// in another status). `last_updated` is always bumped; `started_now` also sets `started_at`
/// and `last_active_at`.
pub async fn transition<'e>(
    ex: impl AnyExecutor<'e>,
    capsule: CapsuleId,
    from: &[&str],
    to: &str,
    changes: &Changes,
    now: i64,
) -> DbResult<bool> {
    let mut sql = String::from("UPDATE sandboxes SET status = $1, last_updated = $2");
    let mut n = 2;
    let mut binds: Vec<String> = Vec::new();
    if changes.started_now {
        sql.push_str(", started_at = $2, last_active_at = $2");
    }
    if let Some(ip) = &changes.host_ip {
        n += 1;
        sql.push_str(&format!(", host_ip = ${n}"));
        binds.push(ip.clone());
    }
    if let Some(disk) = changes.disk_size_mb {
        // An integer, formatted into the statement: binds below are all text.
        sql.push_str(&format!(", disk_size_mb = {disk}"));
    }
    if let Some(reason) = &changes.reason {
        n += 1;
        sql.push_str(&format!(", status_reason = ${n}"));
        binds.push(reason.clone());
    }
    n += 1;
    sql.push_str(&format!(" WHERE id = ${n} AND status IN ("));
    binds.push(capsule.db());
    for (i, status) in from.iter().enumerate() {
        n += 1;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("${n}"));
        binds.push((*status).to_owned());
    }
    sql.push(')');
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to).bind(now);
    for b in binds {
        q = q.bind(b);
    }
    Ok(q.execute(ex).await?.rows_affected() == 1)
}

/// Records activity (ping).
pub async fn touch<'e>(ex: impl AnyExecutor<'e>, capsule: CapsuleId, now: i64) -> DbResult<()> {
    sqlx::query("UPDATE sandboxes SET last_active_at = $1 WHERE id = $2")
        .bind(now)
        .bind(capsule.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Non-terminal capsules (any team) still referencing template `template`.
pub async fn count_using_template<'e>(
    ex: impl AnyExecutor<'e>,
    template: TemplateId,
) -> DbResult<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM sandboxes WHERE template_id = $1 \
         AND status NOT IN ('stopped', 'error')",
    )
    .bind(template.db())
    .fetch_one(ex)
    .await?;
    int(&row, "n")
}

/// Reservations of a host's active capsules (scheduler): (vcpus, memory_mb) summed over
/// capsules that hold or are about to hold resources; paused ones hold only disk.
pub async fn host_reservations<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<(HostId, i64, i64)>> {
    let rows = sqlx::query(
        "SELECT host_id, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) AS mem \
         FROM sandboxes WHERE host_id IS NOT NULL \
         AND status IN ('pending', 'starting', 'running', 'pausing', 'resuming', 'snapshotting', 'missing') \
         GROUP BY host_id",
    )
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| Ok((id(r, "host_id")?, int(r, "vcpus")?, int(r, "mem")?)))
        .collect()
}

/// Live reservation figures of a team (spec §B.2 stats `current`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

pub async fn reserved<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Reserved> {
    // running|starting count fully; paused capsules hold half their memory (spec §B.2 stats).
    let row = sqlx::query(
        "SELECT \
           CAST(COALESCE(SUM(CASE WHEN status IN ('running', 'starting') THEN 1 ELSE 0 END), 0) AS BIGINT) AS n, \
           CAST(COALESCE(SUM(CASE WHEN status IN ('running', 'starting') THEN vcpus ELSE 0 END), 0) AS BIGINT) AS v, \
           CAST(COALESCE(SUM(CASE WHEN status IN ('running', 'starting') THEN memory_mb \
                             WHEN status = 'paused' THEN (memory_mb + 1) / 2 ELSE 0 END), 0) AS BIGINT) AS m \
         FROM sandboxes WHERE team_id = $1",
    )
    .bind(team.db())
    .fetch_one(ex)
    .await?;
    Ok(Reserved {
        running_count: int(&row, "n")?,
        vcpus: int(&row, "v")?,
        memory_mb: int(&row, "m")?,
    })
}

/// Teams with at least one non-terminal capsule (stats sampler).
pub async fn active_teams<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<TeamId>> {
    let rows = sqlx::query(
        "SELECT DISTINCT team_id FROM sandboxes WHERE status NOT IN ('stopped', 'error')",
    )
    .fetch_all(ex)
    .await?;
    rows.iter().map(|r| id(r, "team_id")).collect()
}
