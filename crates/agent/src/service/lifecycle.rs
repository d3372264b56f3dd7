//! PauseSandbox, ResumeSandbox, CreateSnapshot, DeleteSnapshot, FlattenRootfs, GetTemplateSize,
//! GetSandboxMetrics, FlushSandboxMetrics, and the background tasks (metrics sampler, TTL
//! reaper).
//!
//! Pause is one code path for the RPC and the reaper ([`AgentService::pause_capsule`]):
//! untrack the timer → drain the proxy (new requests get 503) → stop sampling → drop the pooled
//! envd clients (open TCP connections block a checkpoint) → `Capsules::pause`. The capsule is
//! marked `pausing` for the whole operation, which the proxy resolver and envd calls see.
//! Resume is the mirror image: `Capsules::resume`, reopen the proxy, sample, track the timer.

use super::sandbox::resolve_template;
use super::{AgentService, Transitions, capsule_error, parse_id};
use crate::capsule::{Capsule, CapsuleError, CapsuleStatus};
use crate::id::CapsuleId;
use crate::metrics::{MetricPoint as Point, Range, SamplerHandle};
use crate::network::NetworkError;
use crate::runtime::Runtime;
use crate::snapshot::{PauseReport, ResumeOptions, SnapshotError};
use crate::ttl::{REAP_INTERVAL, ReaperHandle};
use connectrpc::ConnectError;
use std::sync::Arc;
use std::time::Duration;
use wrenn_proto::hostagent::v1::{
    CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, FlattenRootfsRequest,
    FlattenRootfsResponse, FlushSandboxMetricsResponse, GetSandboxMetricsRequest,
    GetSandboxMetricsResponse, GetTemplateSizeRequest, GetTemplateSizeResponse, MetricPoint,
    ResumeSandboxRequest, ResumeSandboxResponse,
};

/// How long a pause lets open proxied requests finish before closing them (spec §H).
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Longest inactivity timeout a resume accepts (as create: a week).
const MAX_TIMEOUT_SEC: i32 = 7 * 86_400;

/// Marks a capsule as in transition until dropped; a second transition is refused.
struct TransitionGuard {
    transitions: Transitions,
    id: CapsuleId,
}

impl TransitionGuard {
    fn set(&self, state: &'static str) {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.id.clone(), state);
    }
}

impl Drop for TransitionGuard {
    fn drop(&mut self) {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The agent's background tasks; stop them with [`Background::shutdown`].
pub struct Background {
    sampler: SamplerHandle,
    reaper: ReaperHandle,
}

impl Background {
    /// Stops the reaper (pauses it started run to completion) and the sampler.
    pub async fn shutdown(self) {
        self.reaper.shutdown().await;
        self.sampler.shutdown().await;
    }
}

/// Maps pause/resume/snapshot errors to Connect codes.
pub(super) fn snapshot_error(error: SnapshotError) -> ConnectError {
    let message = error.to_string();
    match error {
        SnapshotError::Capsule(e) => capsule_error(e),
        SnapshotError::InvalidTemplate(_) => ConnectError::invalid_argument(message),
        SnapshotError::NotPaused(_)
        | SnapshotError::NoCheckpoint(..)
        | SnapshotError::NotSnapshotTemplate(_)
        | SnapshotError::TemplateInUse { .. } => ConnectError::failed_precondition(message),
        SnapshotError::TemplateExists(_) => ConnectError::already_exists(message),
        SnapshotError::TemplateNotFound(_) => ConnectError::not_found(message),
        // The capsule keeps running (quiesce) or did not come up (restore): retryable.
        SnapshotError::Quiesce { .. } | SnapshotError::EnvdUnhealthy { .. } => {
            ConnectError::unavailable(message)
        }
        SnapshotError::Network(NetworkError::SlotsExhausted(_)) => {
            ConnectError::resource_exhausted(message)
        }
        _ => ConnectError::internal(message),
    }
}

/// The template name a snapshot request names: `template_id` (a non-zero UUID, stored as
/// `images/<id>/` like CreateSandbox resolves it) or else `name`.
fn snapshot_name(name: &str, team_id: &str, template_id: &str) -> Result<String, ConnectError> {
    if template_id.is_empty() && name.is_empty() {
        return Err(ConnectError::invalid_argument(
            "a snapshot needs a name or a template_id",
        ));
    }
    let resolved = resolve_template(name, team_id, template_id)?;
    if !template_id.is_empty() && resolved != template_id {
        return Err(ConnectError::invalid_argument(
            "the all-zero template_id is the built-in minimal image",
        ));
    }
    Ok(resolved)
}

fn point(p: &Point) -> MetricPoint {
    MetricPoint {
        timestamp_unix: p.timestamp_unix,
        cpu_pct: p.cpu_pct,
        mem_bytes: p.mem_bytes,
        disk_bytes: p.disk_bytes,
        ..Default::default()
    }
}

fn points(ps: &[Point]) -> Vec<MetricPoint> {
    ps.iter().map(point).collect()
}

/// Allocated bytes under `dir` (st_blocks, hard links counted once, symlinks not followed).
fn disk_usage(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

impl<R: Runtime> AgentService<R> {
    /// Claims `id` for a transition (`state` is what callers see), or refuses if one runs.
    fn begin(&self, id: &CapsuleId, state: &'static str) -> Result<TransitionGuard, ConnectError> {
        let mut transitions = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(current) = transitions.get(id) {
            return Err(ConnectError::failed_precondition(format!(
                "capsule {id} is {current}"
            )));
        }
        transitions.insert(id.clone(), state);
        Ok(TransitionGuard {
            transitions: self.transitions.clone(),
            id: id.clone(),
        })
    }

    /// The pause path shared by `PauseSandbox` and the TTL reaper.
    pub async fn pause_capsule(&self, id: &CapsuleId) -> Result<PauseReport, ConnectError> {
        self.capsules.running(id).map_err(capsule_error)?;
        let _guard = self.begin(id, "pausing")?;
        self.pause_inner(id).await
    }

    /// Pause steps; the caller holds the transition guard.
    async fn pause_inner(&self, id: &CapsuleId) -> Result<PauseReport, ConnectError> {
        // Untracked first: the reaper must not pick it (or destroy it) while this runs.
        self.ttl.untrack(id);
        let drained = self.connections.drain(id, DRAIN_GRACE).await;
        if drained.forced > 0 {
            tracing::info!(%id, forced = drained.forced, "closed proxied connections for pause");
        }
        self.metrics.stop(id);
        self.forget_client(id);
        match self.capsules.pause(id).await {
            Ok(report) => Ok(report),
            Err(e) => {
                match self.capsules.get(id) {
                    // Quiesce failed: it runs on, back in service (and retried by the timer).
                    Some(c) if c.state.status == CapsuleStatus::Running => {
                        self.connections.reopen(id);
                        self.track(&c);
                    }
                    // Checkpointed, then a later step failed: it is paused.
                    Some(_) => {}
                    // Lost (checkpoint failed; Capsules::pause cleaned it up).
                    None => self.forget(id),
                }
                Err(snapshot_error(e))
            }
        }
    }

    /// Resume steps; the caller holds the transition guard.
    async fn resume_inner(
        &self,
        id: &CapsuleId,
        options: ResumeOptions,
    ) -> Result<Capsule, ConnectError> {
        let capsule = self
            .capsules
            .resume(id, options)
            .await
            .map_err(snapshot_error)?;
        self.connections.reopen(id);
        self.track(&capsule);
        Ok(capsule)
    }

    /// The TTL reaper's destroy after a failed auto-pause. Gone already counts as done; a
    /// capsule another operation is working on is left alone.
    async fn destroy_after_failed_pause(&self, id: &CapsuleId) -> Result<(), ConnectError> {
        if let Some(state) = self.transition(id) {
            return Err(ConnectError::failed_precondition(format!(
                "capsule {id} is {state}; not destroying it"
            )));
        }
        self.forget(id);
        match self.capsules.destroy(id).await {
            Ok(()) | Err(CapsuleError::NotFound(_)) => Ok(()),
            Err(e) => Err(capsule_error(e)),
        }
    }

    /// Starts the metrics sampler and the TTL reaper (which pauses through
    /// [`AgentService::pause_capsule`]).
    pub fn spawn_background(self: &Arc<Self>) -> Background {
        let sampler = self.metrics.spawn();
        let for_pause = self.clone();
        let for_destroy = self.clone();
        let reaper = self.ttl.spawn_reaper(
            REAP_INTERVAL,
            move |id: CapsuleId| {
                let agent = for_pause.clone();
                async move { agent.pause_capsule(&id).await }
            },
            move |id: CapsuleId| {
                let agent = for_destroy.clone();
                async move { agent.destroy_after_failed_pause(&id).await }
            },
        );
        Background { sampler, reaper }
    }

    /// Waits (up to `limit`) until no pause/resume/snapshot is in progress: at shutdown, so a
    /// reaper-started checkpoint is not cut off half-way. Returns whether all settled.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let busy = self
                .transitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len();
            if busy == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(busy, "capsule transitions still running at shutdown");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn pause_impl(&self, sandbox_id: &str) -> Result<(), ConnectError> {
        let id = parse_id(sandbox_id)?;
        self.pause_capsule(&id).await.map(|_| ())
    }

    pub(super) async fn resume_impl(
        &self,
        req: ResumeSandboxRequest,
    ) -> Result<ResumeSandboxResponse, ConnectError> {
        let id = parse_id(&req.sandbox_id)?;
        if !(0..=MAX_TIMEOUT_SEC).contains(&req.timeout_sec) {
            return Err(ConnectError::invalid_argument(format!(
                "timeout_sec must be 0..={MAX_TIMEOUT_SEC}, got {}",
                req.timeout_sec
            )));
        }
        let options = ResumeOptions {
            // 0 keeps the capsule's own timeout.
            timeout_sec: (req.timeout_sec > 0).then_some(req.timeout_sec as u32),
            default_user: (!req.default_user.is_empty()).then_some(req.default_user),
            default_env: req.default_env.into_iter().collect(),
        };
        if self.capsules.get(&id).is_none() {
            return Err(capsule_error(CapsuleError::NotFound(id)));
        }
        let _guard = self.begin(&id, "resuming")?;
        let capsule = self.resume_inner(&id, options).await?;
        Ok(ResumeSandboxResponse {
            sandbox_id: id.to_string(),
            status: capsule.state.status.as_str().to_owned(),
            host_ip: capsule.network.capsule_ip().to_string(),
            ..Default::default()
        })
    }

    /// A snapshot template from a running (paused, snapshotted, resumed) or paused capsule.
    pub(super) async fn create_snapshot_impl(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse, ConnectError> {
        let id = parse_id(&req.sandbox_id)?;
        let name = snapshot_name(&req.name, &req.team_id, &req.template_id)?;
        let capsule = self
            .capsules
            .get(&id)
            .ok_or_else(|| capsule_error(CapsuleError::NotFound(id.clone())))?;
        // Checked before pausing a running capsule for nothing (snapshot_template re-checks).
        let dir = self
            .capsules
            .data_dir()
            .template(&name)
            .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
        if dir.exists() {
            return Err(snapshot_error(SnapshotError::TemplateExists(name)));
        }
        let guard = self.begin(&id, "snapshotting")?;
        let was_running = capsule.state.status == CapsuleStatus::Running;
        if was_running {
            // Through the service's pause, so the proxy, sampler and timer stay in step;
            // snapshot_template then sees a paused source and leaves resuming to us.
            self.pause_inner(&id).await?;
        }
        let result = self.capsules.snapshot_template(&id, &name).await;
        if was_running {
            guard.set("resuming");
            if let Err(e) = self.resume_inner(&id, ResumeOptions::default()).await {
                // The template (if made) is fine; the source stays paused and says so in List.
                tracing::warn!(%id, error = %e, "resuming the snapshot source failed");
            }
        }
        let report = result.map_err(snapshot_error)?;
        Ok(CreateSnapshotResponse {
            name,
            size_bytes: report.meta.image_bytes as i64,
            ..Default::default()
        })
    }

    pub(super) async fn delete_snapshot_impl(
        &self,
        req: DeleteSnapshotRequest,
    ) -> Result<(), ConnectError> {
        let name = snapshot_name(&req.name, &req.team_id, &req.template_id)?;
        self.capsules
            .delete_template(&name)
            .await
            .map_err(snapshot_error)
    }

    /// Not on gVisor: the capsule's writable layer is runsc's memory-backed overlay filestore
    /// (an unlinked file only the sandbox can read, saved only inside a checkpoint image), so
    /// the host has no tree to turn into a base template.
    pub(super) async fn flatten_rootfs_impl(
        &self,
        req: FlattenRootfsRequest,
    ) -> Result<FlattenRootfsResponse, ConnectError> {
        parse_id(&req.sandbox_id)?;
        Err(ConnectError::unimplemented(
            "FlattenRootfs is not supported by the gVisor runtime: a capsule's file changes live \
             in runsc's memory-backed overlay (saved only inside a checkpoint image), so there \
             is no host-side filesystem to flatten; use CreateSnapshot instead",
        ))
    }

    pub(super) async fn template_size_impl(
        &self,
        req: GetTemplateSizeRequest,
    ) -> Result<GetTemplateSizeResponse, ConnectError> {
        let name = resolve_template("", &req.team_id, &req.template_id)?;
        let dir = self
            .capsules
            .data_dir()
            .template(&name)
            .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
        if !dir.is_dir() {
            return Err(ConnectError::not_found(format!(
                "template {name:?} not found"
            )));
        }
        let walk = dir.clone();
        let size = tokio::task::spawn_blocking(move || disk_usage(&walk))
            .await
            .map_err(|e| ConnectError::internal(format!("sizing {}: {e}", dir.display())))?
            .map_err(|e| ConnectError::internal(format!("sizing {}: {e}", dir.display())))?;
        Ok(GetTemplateSizeResponse {
            size_bytes: size as i64,
            ..Default::default()
        })
    }

    /// Known capsule id, or not_found (a paused or flushed capsule may have no series).
    fn known(&self, sandbox_id: &str) -> Result<CapsuleId, ConnectError> {
        let id = parse_id(sandbox_id)?;
        if self.capsules.get(&id).is_none() {
            return Err(capsule_error(CapsuleError::NotFound(id)));
        }
        Ok(id)
    }

    pub(super) fn metrics_impl(
        &self,
        req: GetSandboxMetricsRequest,
    ) -> Result<GetSandboxMetricsResponse, ConnectError> {
        let range: Range = req
            .range
            .parse()
            .map_err(|e: crate::metrics::InvalidRange| {
                ConnectError::invalid_argument(e.to_string())
            })?;
        let id = self.known(&req.sandbox_id)?;
        let found = self.metrics.query(&id, range).unwrap_or_default();
        Ok(GetSandboxMetricsResponse {
            points: points(&found),
            ..Default::default()
        })
    }

    pub(super) fn flush_metrics_impl(
        &self,
        sandbox_id: &str,
    ) -> Result<FlushSandboxMetricsResponse, ConnectError> {
        let id = self.known(sandbox_id)?;
        let flushed = self.metrics.flush(&id).unwrap_or_default();
        Ok(FlushSandboxMetricsResponse {
            points_10m: points(&flushed.points_10m),
            points_2h: points(&flushed.points_2h),
            points_24h: points(&flushed.points_24h),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names() {
        assert_eq!(snapshot_name("snap-1", "", "").unwrap(), "snap-1");
        let id = "0123abcd-0000-4000-8000-00000000beef";
        assert_eq!(snapshot_name("ignored", "", id).unwrap(), id);
        let zero = "00000000-0000-0000-0000-000000000000";
        for (name, template_id) in [("", ""), ("../x", ""), ("", zero), ("", "nope")] {
            assert!(snapshot_name(name, "", template_id).is_err(), "{name:?}");
        }
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = std::env::temp_dir().join(format!("wrenn-du-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/f"), vec![1u8; 64 * 1024]).unwrap();
        let one = disk_usage(&dir).unwrap();
        std::fs::hard_link(dir.join("a/f"), dir.join("g")).unwrap();
        assert_eq!(disk_usage(&dir).unwrap(), one);
        assert!(one >= 64 * 1024);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
