//! `sandbox_metric_points` (metrics of paused capsules) and `sandbox_metrics_snapshots`
//! (per-team reservation samples behind stats and usage).

use sqlx::AnyExecutor;

use super::{DbResult, float, int};
use crate::ids::{CapsuleId, TeamId};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub ts: i64,
    pub cpu_pct: f64,
    pub mem_bytes: i64,
    pub disk_bytes: i64,
}

/// Stores points of one tier (`10m|2h|24h`); points already stored are kept.
pub async fn insert_points(
    pool: &sqlx::AnyPool,
    capsule: CapsuleId,
    tier: &str,
    points: &[Point],
) -> DbResult<()> {
    if points.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for p in points {
        sqlx::query(
            "INSERT INTO sandbox_metric_points (sandbox_id, tier, ts, cpu_pct, mem_bytes, disk_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sandbox_id, tier, ts) DO NOTHING",
        )
        .bind(capsule.db())
        .bind(tier)
        .bind(p.ts)
        .bind(p.cpu_pct)
        .bind(p.mem_bytes)
        .bind(p.disk_bytes)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn points<'e>(
    ex: impl AnyExecutor<'e>,
    capsule: CapsuleId,
    tier: &str,
    since: i64,
) -> DbResult<Vec<Point>> {
    let rows = sqlx::query(
        "SELECT ts, cpu_pct, mem_bytes, disk_bytes FROM sandbox_metric_points \
         WHERE sandbox_id = $1 AND tier = $2 AND ts >= $3 ORDER BY ts",
    )
    .bind(capsule.db())
    .bind(tier)
    .bind(since)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Point {
                ts: int(r, "ts")?,
                cpu_pct: float(r, "cpu_pct")?,
                mem_bytes: int(r, "mem_bytes")?,
                disk_bytes: int(r, "disk_bytes")?,
            })
        })
        .collect()
}

pub async fn delete_points<'e>(ex: impl AnyExecutor<'e>, capsule: CapsuleId) -> DbResult<()> {
    sqlx::query("DELETE FROM sandbox_metric_points WHERE sandbox_id = $1")
        .bind(capsule.db())
        .execute(ex)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub sampled_at: i64,
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

pub async fn insert_sample<'e>(ex: impl AnyExecutor<'e>, team: TeamId, s: &Sample) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO sandbox_metrics_snapshots (team_id, sampled_at, running_count, \
         vcpus_reserved, memory_mb_reserved) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (team_id, sampled_at) DO NOTHING",
    )
    .bind(team.db())
    .bind(s.sampled_at)
    .bind(s.running_count)
    .bind(s.vcpus)
    .bind(s.memory_mb)
    .execute(ex)
    .await?;
    Ok(())
}

/// The team's samples in `[from, to)`, oldest first.
pub async fn samples<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    from: i64,
    to: i64,
) -> DbResult<Vec<Sample>> {
    let rows = sqlx::query(
        "SELECT sampled_at, running_count, vcpus_reserved, memory_mb_reserved \
         FROM sandbox_metrics_snapshots WHERE team_id = $1 AND sampled_at >= $2 AND sampled_at < $3 \
         ORDER BY sampled_at",
    )
    .bind(team.db())
    .bind(from)
    .bind(to)
    .fetch_all(ex)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Sample {
                sampled_at: int(r, "sampled_at")?,
                running_count: int(r, "running_count")?,
                vcpus: int(r, "vcpus_reserved")?,
                memory_mb: int(r, "memory_mb_reserved")?,
            })
        })
        .collect()
}

/// Drops samples older than `before` (retention).
pub async fn prune_samples<'e>(ex: impl AnyExecutor<'e>, before: i64) -> DbResult<u64> {
    let done = sqlx::query("DELETE FROM sandbox_metrics_snapshots WHERE sampled_at < $1")
        .bind(before)
        .execute(ex)
        .await?;
    Ok(done.rows_affected())
}
