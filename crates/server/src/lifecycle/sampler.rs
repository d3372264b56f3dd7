//! Per-team reservation samples every [`INTERVAL`] (spec §B.2 stats: `sandbox_metrics_snapshots`,
//! 60-day retention), and the stats / usage figures computed from them.

use std::time::Duration;

use crate::db::{metrics, sandboxes};
use crate::error::{ApiError, ApiResult};
use crate::ids::TeamId;
use crate::state::AppState;

pub const INTERVAL: Duration = Duration::from_secs(10);
const RETENTION_SECS: i64 = 60 * 86_400;

pub async fn run(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = sample(&state).await {
            tracing::warn!(error = %e, "stats sample failed");
        }
        n += 1;
        if n % 360 == 1
            && let Err(e) =
                metrics::prune_samples(state.pool(), crate::time::now() - RETENTION_SECS).await
        {
            tracing::warn!(error = %e, "pruning stats samples");
        }
    }
}

/// One sample of every team with active capsules.
pub async fn sample(state: &AppState) -> crate::db::DbResult<()> {
    let now = crate::time::now();
    for team in sandboxes::active_teams(state.pool()).await? {
        let r = sandboxes::reserved(state.pool(), team).await?;
        metrics::insert_sample(
            state.pool(),
            team,
            &metrics::Sample {
                sampled_at: now,
                running_count: r.running_count,
                vcpus: r.vcpus,
                memory_mb: r.memory_mb,
            },
        )
        .await?;
    }
    Ok(())
}

/// Stats ranges → (bucket width, lookback) in seconds (spec §B.2).
pub fn stats_range(range: &str) -> Option<(i64, i64)> {
    Some(match range {
        "5m" => (3, 300),
        "1h" => (30, 3_600),
        "6h" => (180, 6 * 3_600),
        "24h" => (720, 86_400),
        "30d" => (21_600, 30 * 86_400),
        _ => return None,
    })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatsCurrent {
    pub running_count: i64,
    pub vcpus_reserved: i64,
    pub memory_mb_reserved: i64,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatsPeaks {
    pub running_count: i64,
    pub vcpus: i64,
    pub memory_mb: i64,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatsSeries {
    /// Bucket starts, RFC 3339.
    pub labels: Vec<String>,
    pub running: Vec<i64>,
    pub vcpus: Vec<i64>,
    pub memory_mb: Vec<i64>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub range: String,
    pub current: StatsCurrent,
    pub peaks: StatsPeaks,
    pub series: StatsSeries,
}

pub async fn stats(state: &AppState, team: TeamId, range: &str) -> ApiResult<Stats> {
    let (width, lookback) = stats_range(range)
        .ok_or_else(|| ApiError::invalid("range must be one of 5m, 1h, 6h, 24h, 30d"))?;
    let now = crate::time::now();
    let current = sandboxes::reserved(state.pool(), team).await?;
    let peak_samples = metrics::samples(state.pool(), team, now - 30 * 86_400, now + 1).await?;
    let peaks = StatsPeaks {
        running_count: peak_samples
            .iter()
            .map(|s| s.running_count)
            .chain([current.running_count])
            .max()
            .unwrap_or(0),
        vcpus: peak_samples
            .iter()
            .map(|s| s.vcpus)
            .chain([current.vcpus])
            .max()
            .unwrap_or(0),
        memory_mb: peak_samples
            .iter()
            .map(|s| s.memory_mb)
            .chain([current.memory_mb])
            .max()
            .unwrap_or(0),
    };
    let buckets = (lookback / width) as usize;
    let start = (now - lookback).div_euclid(width) * width + width;
    let mut series = StatsSeries {
        labels: (0..buckets)
            .map(|i| crate::time::format_rfc3339(start + i as i64 * width))
            .collect(),
        running: vec![0; buckets],
        vcpus: vec![0; buckets],
        memory_mb: vec![0; buckets],
    };
    for s in peak_samples.iter().filter(|s| s.sampled_at >= start) {
        let i = ((s.sampled_at - start) / width) as usize;
        if i < buckets {
            series.running[i] = series.running[i].max(s.running_count);
            series.vcpus[i] = series.vcpus[i].max(s.vcpus);
            series.memory_mb[i] = series.memory_mb[i].max(s.memory_mb);
        }
    }
    Ok(Stats {
        range: range.to_owned(),
        current: StatsCurrent {
            running_count: current.running_count,
            vcpus_reserved: current.vcpus,
            memory_mb_reserved: current.memory_mb,
        },
        peaks,
        series,
    })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UsagePoint {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub cpu_minutes: f64,
    pub ram_mb_minutes: f64,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub from: String,
    pub to: String,
    pub points: Vec<UsagePoint>,
}

/// Longest usage span (spec §B.2, §J).
const MAX_USAGE_DAYS: i64 = 92;

/// Daily vCPU and memory reservation (minutes) from the samples: each sample stands for one
/// sampling interval.
pub async fn usage(
    state: &AppState,
    team: TeamId,
    from: Option<&str>,
    to: Option<&str>,
) -> ApiResult<Usage> {
    let parse = |field: &str, s: &str| {
        crate::time::parse_date(s)
            .ok_or_else(|| ApiError::invalid(format!("{field} must be a date YYYY-MM-DD")))
    };
    let today = crate::time::now().div_euclid(86_400) * 86_400;
    let to = match to {
        Some(s) if !s.is_empty() => parse("to", s)?,
        _ => today,
    };
    let from = match from {
        Some(s) if !s.is_empty() => parse("from", s)?,
        _ => to - 29 * 86_400,
    };
    if from > to {
        return Err(ApiError::invalid("from must not be after to"));
    }
    if (to - from) / 86_400 > MAX_USAGE_DAYS {
        return Err(ApiError::invalid(format!(
            "the range spans more than {MAX_USAGE_DAYS} days"
        )));
    }
    let samples = metrics::samples(state.pool(), team, from, to + 86_400).await?;
    let days = ((to - from) / 86_400 + 1) as usize;
    let minutes = INTERVAL.as_secs_f64() / 60.0;
    let mut points: Vec<UsagePoint> = (0..days)
        .map(|i| UsagePoint {
            date: crate::time::format_date(from + i as i64 * 86_400),
            cpu_minutes: 0.0,
            ram_mb_minutes: 0.0,
        })
        .collect();
    for s in samples {
        let i = ((s.sampled_at - from) / 86_400) as usize;
        if let Some(p) = points.get_mut(i) {
            p.cpu_minutes += s.vcpus as f64 * minutes;
            p.ram_mb_minutes += s.memory_mb as f64 * minutes;
        }
    }
    Ok(Usage {
        from: crate::time::format_date(from),
        to: crate::time::format_date(to),
        points,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        assert_eq!(super::stats_range("1h"), Some((30, 3600)));
        assert_eq!(super::stats_range("10m"), None);
    }
}
