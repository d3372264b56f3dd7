//! The reconciler: every few seconds, each live host's `ListSandboxes` is compared with the
//! database (the agent is the source of truth for what runs, spec §1 of the design).
//!
//! - `running` in the database, `paused` on the agent → `paused` (reason `ttl_expired` when the
//!   agent reports it in `auto_paused_sandbox_ids`, else `host_state_sync`), `capsule.pause` by
//!   the system.
//! - `paused` in the database, `running` on the agent → `running`.
//! - `running`/`paused`/`missing` in the database, absent on the agent → `stopped`, reason
//!   `orphaned` (marked, audited and published: never silently lost).
//! - a transitional status (`starting`, `pausing`, …) older than [`STALE_AFTER`] (its task died
//!   with a restarted control plane) → whatever the agent says, else `error`/`stopped`.
//! - on the agent but `stopped`/`error` in the database for a while → destroyed on the agent.
//! - a host that cannot be listed [`UNREACHABLE_AFTER`] times in a row → `unreachable`, its
//!   running capsules `missing`; back to `online` on the next successful list.
//!
//! Rows changed after the list was taken are skipped (their task owns them), and every change is
//! a compare-and-set, so a user operation racing with the reconciler wins or is left alone.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use connectrpc::client::CallOptions;
use wrenn_proto::hostagent::v1::{DestroySandboxRequest, ListSandboxesRequest};

use super::{audit_system, cas, publish_capsule, publish_change};
use crate::audit::{AuditActor, AuditEvent};
use crate::db::hosts::HostRow;
use crate::db::sandboxes::{self, Changes};
use crate::db::{self};
use crate::events::{Event, EventKind};
use crate::ids::{CapsuleId, HostId};
use crate::state::AppState;

pub const INTERVAL: Duration = Duration::from_secs(3);
/// A transitional status this old has lost its task.
const STALE_AFTER: i64 = 600;
/// A terminal row's leftovers are destroyed on the agent after this many seconds.
const LEFTOVER_AFTER: i64 = 30;
const UNREACHABLE_AFTER: u32 = 3;

pub async fn run(state: AppState, interval: Duration) {
    let mut failures: HashMap<HostId, u32> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&state, &mut failures).await {
            tracing::warn!(error = %e, "reconcile pass failed");
        }
    }
}

/// One pass over every live host (public for tests and `wrenn up`'s start).
pub async fn pass(state: &AppState, failures: &mut HashMap<HostId, u32>) -> db::DbResult<()> {
    for host in db::hosts::list_live(state.pool()).await? {
        host_pass(state, &host, failures).await?;
    }
    Ok(())
}

// The arms' `if cas(..)` are state changes, not match guards: keep them out of the patterns.
#[allow(clippy::collapsible_match)]
async fn host_pass(
    state: &AppState,
    host: &HostRow,
    failures: &mut HashMap<HostId, u32>,
) -> db::DbResult<()> {
    let agent = match state.agents().client(&host.address) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(host = %host.id, error = %e, "bad host address");
            return Ok(());
        }
    };
    let started = crate::time::now();
    let listed = agent
        .list_sandboxes_with_options(
            ListSandboxesRequest::default(),
            CallOptions::default().with_timeout(Duration::from_secs(10)),
        )
        .await;
    let list = match listed {
        Ok(l) => l.into_owned(),
        Err(e) => {
            let n = failures.entry(host.id).or_default();
            *n += 1;
            tracing::debug!(host = %host.id, error = %e, failures = *n, "listing capsules failed");
            if *n >= UNREACHABLE_AFTER && host.status == "online" {
                tracing::warn!(host = %host.id, error = %e, "host unreachable");
                db::hosts::set_status(state.pool(), host.id, "unreachable", false, started).await?;
                mark_missing(state, host.id).await?;
            }
            return Ok(());
        }
    };
    failures.remove(&host.id);
    if host.status != "online" {
        tracing::info!(host = %host.id, "host reachable again");
    }
    db::hosts::set_status(state.pool(), host.id, "online", true, started).await?;

    let on_agent: HashMap<String, String> = list
        .sandboxes
        .iter()
        .map(|s| (s.sandbox_id.clone(), s.status.clone()))
        .collect();
    let auto_paused: HashSet<&str> = list
        .auto_paused_sandbox_ids
        .iter()
        .map(String::as_str)
        .collect();

    for row in sandboxes::list_on_host(state.pool(), host.id).await? {
        // Changed since the list was taken: the task that changed it is in charge.
        if row.last_updated >= started {
            continue;
        }
        let key = row.id.to_string();
        let agent_status = on_agent.get(&key).map(String::as_str);
        let stale = started - row.last_updated > STALE_AFTER;
        match (row.status.as_str(), agent_status) {
            ("running", Some("paused")) => {
                let reason = if auto_paused.contains(key.as_str()) {
                    "ttl_expired"
                } else {
                    "host_state_sync"
                };
                if cas(state, row.id, &["running"], "paused", Changes::default()).await {
                    tracing::info!(capsule = %row.id, reason, "capsule paused by its host");
                    audit_system(
                        state,
                        row.team_id,
                        AuditEvent::new("sandbox", key.clone(), "pause")
                            .metadata(serde_json::json!({ "reason": reason })),
                    )
                    .await;
                    publish_capsule(
                        state,
                        Event::new(
                            EventKind::CapsulePause,
                            row.team_id,
                            AuditActor::system(),
                            "sandbox",
                            key.clone(),
                        )
                        .meta("reason", reason),
                        row.id,
                    )
                    .await;
                }
            }
            ("paused", Some("running")) | ("missing", Some("running")) => {
                let changes = Changes {
                    started_now: row.status == "missing",
                    ..Default::default()
                };
                if cas(state, row.id, &[row.status.as_str()], "running", changes).await {
                    publish_change(
                        state,
                        &row,
                        &row.status,
                        "running",
                        Some("host_state_sync"),
                        None,
                    )
                    .await;
                }
            }
            ("missing", Some("paused")) => {
                if cas(state, row.id, &["missing"], "paused", Changes::default()).await {
                    publish_change(
                        state,
                        &row,
                        "missing",
                        "paused",
                        Some("host_state_sync"),
                        None,
                    )
                    .await;
                }
            }
            ("running" | "paused" | "missing", None) => {
                if orphaned(state, &row.id, &row.status, "orphaned").await {
                    publish_change(state, &row, &row.status, "stopped", Some("orphaned"), None)
                        .await;
                }
            }
            (transitional, found) if stale && is_transitional(transitional) => {
                let to = match found {
                    Some(s @ ("running" | "paused")) if transitional != "stopping" => s,
                    Some(_) if transitional == "stopping" => {
                        // Its destroy task died: finish the job.
                        destroy(state, &agent, row.id).await;
                        "stopped"
                    }
                    _ if transitional == "starting" || transitional == "pending" => "error",
                    _ => "stopped",
                };
                let changes = Changes {
                    reason: Some(format!("{transitional} did not finish")),
                    ..Default::default()
                };
                if cas(state, row.id, &[transitional], to, changes).await {
                    tracing::warn!(capsule = %row.id, from = transitional, to, "stale transition settled");
                    publish_change(state, &row, transitional, to, Some("host_state_sync"), None)
                        .await;
                }
            }
            _ => {}
        }
    }

    // Capsules the control plane is done with but the host still runs.
    let ids: Vec<CapsuleId> = list
        .sandboxes
        .iter()
        .filter_map(|s| CapsuleId::parse(&s.sandbox_id).ok())
        .collect();
    let leftovers =
        sandboxes::terminal_or_unknown(state.pool(), &ids, started - LEFTOVER_AFTER).await?;
    for id in leftovers {
        match sandboxes::get_unscoped(state.pool(), id).await? {
            // A capsule this database never knew: another control plane's, or older than the
            // database. Not ours to destroy.
            None => tracing::debug!(capsule = %id, host = %host.id, "unknown capsule on host"),
            Some(_) => {
                tracing::info!(capsule = %id, host = %host.id, "destroying a leftover capsule");
                destroy(state, &agent, id).await;
            }
        }
    }
    Ok(())
}

fn is_transitional(status: &str) -> bool {
    matches!(
        status,
        "pending" | "starting" | "pausing" | "resuming" | "snapshotting" | "stopping"
    )
}

async fn destroy(_state: &AppState, agent: &crate::agent::AgentClient, id: CapsuleId) {
    let request = DestroySandboxRequest {
        sandbox_id: id.to_string(),
        ..Default::default()
    };
    if let Err(e) = agent
        .destroy_sandbox_with_options(
            request,
            CallOptions::default().with_timeout(Duration::from_secs(90)),
        )
        .await
        && e.code != connectrpc::ErrorCode::NotFound
    {
        tracing::warn!(capsule = %id, error = %e, "destroying a leftover capsule failed");
    }
}

/// `stopped` with `reason`, audited; false when the row had moved on.
async fn orphaned(state: &AppState, id: &CapsuleId, from: &str, reason: &str) -> bool {
    let changes = Changes {
        reason: Some(reason.to_owned()),
        ..Default::default()
    };
    let changed = cas(state, *id, &[from], "stopped", changes).await;
    if changed {
        tracing::warn!(capsule = %id, from, reason, "capsule gone from its host; marked stopped");
        if let Ok(Some(row)) = sandboxes::get_unscoped(state.pool(), *id).await {
            audit_system(
                state,
                row.team_id,
                AuditEvent::new("sandbox", id.to_string(), "destroy")
                    .status(crate::audit::Status::Warning)
                    .metadata(serde_json::json!({ "reason": reason, "from": from })),
            )
            .await;
        }
    }
    changed
}

/// Host lost: its running capsules become `missing` until it answers again.
async fn mark_missing(state: &AppState, host: HostId) -> db::DbResult<()> {
    for row in sandboxes::list_on_host(state.pool(), host).await? {
        if matches!(row.status.as_str(), "running" | "starting")
            && cas(
                state,
                row.id,
                &[row.status.as_str()],
                "missing",
                Changes::default(),
            )
            .await
        {
            publish_change(
                state,
                &row,
                &row.status,
                "missing",
                Some("host_failure"),
                None,
            )
            .await;
        }
    }
    Ok(())
}
