//! `hosts`: machines running a host agent (spec §B.10). Today the only writer is
//! [`register_local`] (the agent `wrenn up` / `wrenn server --agent-url` runs next to the
//! control plane); registration tokens and heartbeats come later.

use sqlx::AnyExecutor;
use sqlx::any::AnyRow;

use super::{DbResult, id, int, opt_id, opt_int, text};
use crate::ids::{HostId, TeamId};

#[derive(Debug, Clone)]
pub struct HostRow {
    pub id: HostId,
    /// `regular` | `byoc`.
    pub kind: String,
    pub team_id: Option<TeamId>,
    pub arch: String,
    pub cpu_cores: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    /// Agent address (`host:port` or `http://host:port`).
    pub address: String,
    /// `pending|online|offline|draining|unreachable`.
    pub status: String,
    pub last_heartbeat_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, type, team_id, arch, cpu_cores, memory_mb, disk_gb, address, status, \
     last_heartbeat_at, created_at, updated_at";

fn from_row(row: &AnyRow) -> DbResult<HostRow> {
    Ok(HostRow {
        id: id(row, "id")?,
        kind: text(row, "type")?,
        team_id: opt_id(row, "team_id")?,
        arch: text(row, "arch")?,
        cpu_cores: int(row, "cpu_cores")?,
        memory_mb: int(row, "memory_mb")?,
        disk_gb: int(row, "disk_gb")?,
        address: text(row, "address")?,
        status: text(row, "status")?,
        last_heartbeat_at: opt_int(row, "last_heartbeat_at")?,
        created_at: int(row, "created_at")?,
        updated_at: int(row, "updated_at")?,
    })
}

/// What a host offers.
#[derive(Debug, Clone, Default)]
pub struct Capacity {
    pub arch: String,
    pub cpu_cores: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
}

/// Registers (or refreshes) the platform host at `address`: one row per address, `online`.
pub async fn register_local<'e>(
    ex: impl AnyExecutor<'e> + Copy,
    address: &str,
    capacity: &Capacity,
    now: i64,
) -> DbResult<HostRow> {
    let updated = sqlx::query(
        "UPDATE hosts SET status = 'online', arch = $1, cpu_cores = $2, memory_mb = $3, \
         disk_gb = $4, last_heartbeat_at = $5, updated_at = $5 WHERE address = $6",
    )
    .bind(&capacity.arch)
    .bind(capacity.cpu_cores)
    .bind(capacity.memory_mb)
    .bind(capacity.disk_gb)
    .bind(now)
    .bind(address)
    .execute(ex)
    .await?;
    if updated.rows_affected() == 0 {
        sqlx::query(
            "INSERT INTO hosts (id, type, arch, cpu_cores, memory_mb, disk_gb, address, status, \
             last_heartbeat_at, created_at, updated_at) \
             VALUES ($1, 'regular', $2, $3, $4, $5, $6, 'online', $7, $7, $7)",
        )
        .bind(HostId::random().db())
        .bind(&capacity.arch)
        .bind(capacity.cpu_cores)
        .bind(capacity.memory_mb)
        .bind(capacity.disk_gb)
        .bind(address)
        .bind(now)
        .execute(ex)
        .await?;
    }
    let sql = format!("SELECT {COLUMNS} FROM hosts WHERE address = $1 ORDER BY created_at LIMIT 1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(address)
        .fetch_one(ex)
        .await?;
    from_row(&row)
}

pub async fn get<'e>(ex: impl AnyExecutor<'e>, host: HostId) -> DbResult<Option<HostRow>> {
    let sql = format!("SELECT {COLUMNS} FROM hosts WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(host.db())
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Hosts the scheduler and the reconciler work with: `online` and `unreachable` ones (the
/// latter to notice when they come back).
pub async fn list_live<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<HostRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM hosts WHERE status IN ('online', 'unreachable') AND address <> '' \
         ORDER BY created_at"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}

/// Sets the status; `seen` also records a heartbeat.
pub async fn set_status<'e>(
    ex: impl AnyExecutor<'e>,
    host: HostId,
    status: &str,
    seen: bool,
    now: i64,
) -> DbResult<()> {
    let sql = if seen {
        "UPDATE hosts SET status = $1, last_heartbeat_at = $2, updated_at = $2 WHERE id = $3"
    } else {
        "UPDATE hosts SET status = $1, updated_at = $2 WHERE id = $3"
    };
    sqlx::query(sql)
        .bind(status)
        .bind(now)
        .bind(host.db())
        .execute(ex)
        .await?;
    Ok(())
}

/// Every host, oldest first (admin view).
pub async fn list_all<'e>(ex: impl AnyExecutor<'e>) -> DbResult<Vec<HostRow>> {
    let sql = format!("SELECT {COLUMNS} FROM hosts ORDER BY created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(ex).await?;
    rows.iter().map(from_row).collect()
}

/// The hosts of `team` (BYOC hosts), oldest first.
pub async fn list_for_team<'e>(ex: impl AnyExecutor<'e>, team: TeamId) -> DbResult<Vec<HostRow>> {
    let sql = format!("SELECT {COLUMNS} FROM hosts WHERE team_id = $1 ORDER BY created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(team.db())
        .fetch_all(ex)
        .await?;
    rows.iter().map(from_row).collect()
}
