//! Placement of new capsules on hosts (spec §J "scheduling admission").
//!
//! [`Scheduler`] is a pure choice over a snapshot of host loads, so policies are testable without
//! a database; [`place`] loads that snapshot (live hosts + what their active capsules reserve)
//! and asks the scheduler in [`crate::AppState`]. Every create goes through [`place`].

use axum::http::StatusCode;

use crate::db::{self, hosts::HostRow};
use crate::error::{ApiError, ApiResult};
use crate::ids::{HostId, TeamId};
use crate::state::AppState;

/// What a new capsule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub vcpus: i64,
    pub memory_mb: i64,
}

/// A host as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct HostLoad {
    pub id: HostId,
    pub address: String,
    /// Usable capacity (after overcommit and the host's own reserve).
    pub cpu_capacity: i64,
    pub memory_capacity_mb: i64,
    /// Reserved by capsules placed there that hold resources (not paused/stopped).
    pub vcpus_reserved: i64,
    pub memory_reserved_mb: i64,
}

impl HostLoad {
    fn free_memory(&self) -> i64 {
        self.memory_capacity_mb - self.memory_reserved_mb
    }

    fn free_cpu(&self) -> i64 {
        self.cpu_capacity - self.vcpus_reserved
    }
}

pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// The host for `demand` among `hosts` (all live and eligible for the team), or `None`
    /// when none fits.
    fn choose(&self, hosts: &[HostLoad], demand: Demand) -> Option<HostId>;
}

/// Least loaded: among hosts with room for the capsule's memory and vCPUs, the one whose
/// smaller free fraction (memory or CPU) is largest.
///
/// Capacity is overcommitted on purpose: a gVisor capsule's memory limit is a ceiling, not an
/// allocation (an idle capsule uses tens of MiB), and vCPUs are CPU shares.
#[derive(Debug, Clone)]
pub struct LeastLoaded {
    /// Memory the host keeps for itself (agent, page cache), MiB.
    pub reserve_memory_mb: i64,
    /// Schedulable memory = (physical − reserve) × this.
    pub memory_overcommit: i64,
    /// Schedulable vCPUs = cores × this.
    pub cpu_overcommit: i64,
}

impl Default for LeastLoaded {
    fn default() -> Self {
        Self {
            reserve_memory_mb: 512,
            memory_overcommit: 4,
            cpu_overcommit: 8,
        }
    }
}

impl LeastLoaded {
    /// Usable capacity of `host` under this policy.
    pub fn capacity(&self, host: &HostRow) -> (i64, i64) {
        let cores = host.cpu_cores.max(1);
        let memory = (host.memory_mb - self.reserve_memory_mb).max(host.memory_mb / 2);
        (
            cores * self.cpu_overcommit,
            memory.max(0) * self.memory_overcommit,
        )
    }
}

impl Scheduler for LeastLoaded {
    fn choose(&self, hosts: &[HostLoad], demand: Demand) -> Option<HostId> {
        let score = |h: &HostLoad| -> f64 {
            let mem =
                (h.free_memory() - demand.memory_mb) as f64 / h.memory_capacity_mb.max(1) as f64;
            let cpu = (h.free_cpu() - demand.vcpus) as f64 / h.cpu_capacity.max(1) as f64;
            mem.min(cpu)
        };
        hosts
            .iter()
            .filter(|h| h.free_memory() >= demand.memory_mb && h.free_cpu() >= demand.vcpus)
            .max_by(|a, b| score(a).total_cmp(&score(b)))
            .map(|h| h.id)
    }
}

/// 503 `no_hosts_available` (spec §B.2).
pub fn no_hosts(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_hosts_available",
        message,
    )
}

/// Picks a host for a capsule of `team`: online platform hosts (BYOC hosts only serve their own
/// team), loads from the database, the state's scheduler decides.
pub async fn place(state: &AppState, team: TeamId, demand: Demand) -> ApiResult<HostRow> {
    let hosts: Vec<HostRow> = db::hosts::list_live(state.pool())
        .await?
        .into_iter()
        .filter(|h| h.status == "online")
        .filter(|h| match h.kind.as_str() {
            "byoc" => h.team_id == Some(team),
            _ => true,
        })
        .collect();
    if hosts.is_empty() {
        return Err(no_hosts("no host agent is online"));
    }
    let reserved = db::sandboxes::host_reservations(state.pool()).await?;
    let policy = LeastLoaded::default();
    let loads: Vec<HostLoad> = hosts
        .iter()
        .map(|h| {
            let (v, m) = reserved
                .iter()
                .find(|(id, _, _)| *id == h.id)
                .map(|(_, v, m)| (*v, *m))
                .unwrap_or((0, 0));
            let (cpu, mem) = policy.capacity(h);
            HostLoad {
                id: h.id,
                address: h.address.clone(),
                cpu_capacity: cpu,
                memory_capacity_mb: mem,
                vcpus_reserved: v,
                memory_reserved_mb: m,
            }
        })
        .collect();
    let chosen = state
        .scheduler()
        .choose(&loads, demand)
        .ok_or_else(|| no_hosts("no host has room for this capsule (memory or vCPUs)"))?;
    hosts
        .into_iter()
        .find(|h| h.id == chosen)
        .ok_or_else(|| ApiError::internal("scheduler chose an unknown host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(n: u128, cpu: i64, mem: i64, v: i64, m: i64) -> HostLoad {
        HostLoad {
            id: HostId(uuid::Uuid::from_u128(n)),
            address: format!("10.0.0.{n}:50051"),
            cpu_capacity: cpu,
            memory_capacity_mb: mem,
            vcpus_reserved: v,
            memory_reserved_mb: m,
        }
    }

    #[test]
    fn least_loaded_and_admission() {
        let s = LeastLoaded::default();
        let d = Demand {
            vcpus: 1,
            memory_mb: 512,
        };
        let hosts = [host(1, 16, 8192, 8, 6000), host(2, 16, 8192, 2, 1024)];
        assert_eq!(s.choose(&hosts, d), Some(hosts[1].id));
        // CPU is the tighter resource on host 2 now.
        let hosts = [host(1, 16, 8192, 2, 4096), host(2, 16, 8192, 15, 0)];
        assert_eq!(s.choose(&hosts, d), Some(hosts[0].id));
        // Nothing fits.
        let hosts = [host(1, 16, 8192, 16, 0), host(2, 16, 8192, 0, 8000)];
        assert_eq!(s.choose(&hosts, d), None);
        assert_eq!(s.choose(&[], d), None);
    }
}
