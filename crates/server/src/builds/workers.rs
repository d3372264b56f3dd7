//! The build queue's workers and restart recovery.
//!
//! At start, builds left `running` by a previous process are marked `failed` ("the control
//! plane restarted while the build was running") and their capsules destroyed; `pending` ones
//! stay queued. Then `workers()` tasks claim the oldest pending build with a compare-and-set
//! (several control planes on one PostgreSQL never run a build twice) and run it; a submit
//! wakes them, and they poll every few seconds anyway.

use std::time::Duration;

use connectrpc::ErrorCode;
use connectrpc::client::CallOptions;
use wrenn_proto::hostagent::v1::DestroySandboxRequest;

use crate::agent::AgentClient;
use crate::db::builds::{self, BuildRow, Outcome};
use crate::ids::CapsuleId;
use crate::state::AppState;

const POLL: Duration = Duration::from_secs(3);
pub const RESTART_REASON: &str = "the control plane restarted while the build was running";

/// Recovery, then the workers; abort the task to stop them all.
pub fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        recover(&state).await;
        let n = state.builds().workers();
        tracing::info!(workers = n, "build workers started");
        let workers = (0..n).map(|i| worker(state.clone(), i));
        futures::future::join_all(workers).await;
    })
}

/// Fails the builds a previous process was running and destroys their capsules.
pub async fn recover(state: &AppState) {
    let stale = match builds::with_status(state.pool(), &["running"]).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "listing builds to recover");
            return;
        }
    };
    for row in stale {
        let outcome = Outcome {
            status: "failed",
            error: Some(RESTART_REASON.into()),
            ..Default::default()
        };
        match builds::finish(
            state.pool(),
            row.id,
            &["running"],
            &outcome,
            crate::time::now(),
        )
        .await
        {
            Ok(true) => {
                tracing::warn!(build = %row.id, "build interrupted by a restart: failed");
                destroy_build_capsule(state, &row).await;
                if let Some(kind) = &row.archive_kind {
                    let _ = std::fs::remove_file(state.builds().archive_path(row.id, kind));
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(build = %row.id, error = %e, "failing an interrupted build"),
        }
    }
}

async fn worker(state: AppState, n: usize) {
    loop {
        match next(&state).await {
            Some(build) => {
                let id = build.id;
                tracing::info!(worker = n, build = %id, name = %build.name, "build started");
                let cancel = state.builds().register(id);
                super::executor::run(state.clone(), build, cancel).await;
                state.builds().unregister(id);
            }
            None => {
                let _ = tokio::time::timeout(POLL, state.builds().wake.notified()).await;
            }
        }
    }
}

/// Claims the oldest pending build.
async fn next(state: &AppState) -> Option<BuildRow> {
    let pending = match builds::with_status(state.pool(), &["pending"]).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "listing pending builds");
            return None;
        }
    };
    for mut row in pending {
        let now = crate::time::now();
        match builds::claim(state.pool(), row.id, now).await {
            Ok(true) => {
                row.status = "running".into();
                row.started_at = Some(now);
                return Some(row);
            }
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(build = %row.id, error = %e, "claiming a build");
                return None;
            }
        }
    }
    None
}

/// Destroys the capsule a build row points at (restart recovery, cancel from elsewhere).
pub async fn destroy_build_capsule(state: &AppState, row: &BuildRow) {
    let (Some(capsule), Some(host)) = (row.sandbox_id, row.host_id) else {
        return;
    };
    let host = match crate::db::hosts::get(state.pool(), host).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    if let Ok(agent) = state.agents().client(&host.address) {
        destroy_capsule(&agent, capsule).await;
    }
}

/// DestroySandbox, a few tries; gone already counts as done.
pub async fn destroy_capsule(agent: &AgentClient, capsule: CapsuleId) {
    for attempt in 0..3u64 {
        let request = DestroySandboxRequest {
            sandbox_id: capsule.to_string(),
            ..Default::default()
        };
        match agent
            .destroy_sandbox_with_options(
                request,
                CallOptions::default().with_timeout(Duration::from_secs(90)),
            )
            .await
        {
            Ok(_) => return,
            Err(e) if e.code == ErrorCode::NotFound => return,
            Err(e) => {
                tracing::warn!(%capsule, error = %e, "destroying the build capsule");
                tokio::time::sleep(Duration::from_secs(1 + attempt * 2)).await;
            }
        }
    }
}
