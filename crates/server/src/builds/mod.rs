//! Template builds (spec §B.13, §G): recipes turned into platform templates.
//!
//! A build request is checked completely before anything starts (recipe syntax, healthcheck,
//! archive kind and entries, COPY sources present in the archive, names, bounds): bad input is
//! a 400 naming the line and the problem. An accepted build is a `pending` row in `builds` (the
//! archive, if any, stored under the build directory as `<build uuid>.<ext>`); `workers`
//! claim rows with a compare-and-set and run them with `executor`: a build capsule on a host
//! (no `sandboxes` row: it is nobody's capsule), the pre-build / recipe / post-build steps
//! through the agent's Exec, the healthcheck, then `CreateSnapshot` into a platform template.
//! A build with a healthcheck keeps its memory state (`snapshot` template: processes started
//! with START run in every capsule made from it); one without becomes a `base` template, made
//! the same way after every process but envd is stopped (gVisor has no host-side rootfs to
//! flatten, see the agent's FlattenRootfs), so new capsules start from its files alone.
//!
//! Submodules: `recipe` (parser, env expansion, healthcheck), `archive` (magic-byte detection
//! and traversal checks), `executor` (one build), `workers` (queue, restart recovery, cancel).

pub mod archive;
pub mod executor;
pub mod recipe;
pub mod workers;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::db::builds::{self, BuildRow};
use crate::db::templates;
use crate::error::{ApiError, ApiResult};
use crate::ids::{BuildId, CapsuleId, HostId, TeamId, UserId};
use crate::lifecycle::validate::{self, MAX_VCPUS, MEMORY_RANGE_MB};
use crate::state::AppState;

/// Steps added by the pre-build (3) and post-build (4) phases.
pub const PHASE_STEPS: usize = 7;
/// Longest recipe accepted.
pub const MAX_RECIPE_STEPS: usize = 500;

/// Queue-wide state of the build service, one per [`AppState`].
#[derive(Debug)]
pub struct Builds {
    dir: std::sync::RwLock<PathBuf>,
    workers: AtomicUsize,
    wake: Notify,
    /// Cancel switches of the builds this process runs.
    running: Mutex<HashMap<BuildId, watch::Sender<bool>>>,
}

impl Default for Builds {
    fn default() -> Self {
        Self {
            dir: std::sync::RwLock::new(std::env::temp_dir().join("wrenn-builds")),
            workers: AtomicUsize::new(1),
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl Builds {
    /// Where uploaded archives wait for their build (`<data_dir>/builds`).
    pub fn set_dir(&self, dir: PathBuf) {
        *self.dir.write().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Number of builds run at once (`WRENN_BUILD_WORKERS`, default 1).
    pub fn set_workers(&self, n: usize) {
        self.workers.store(n.max(1), Ordering::Relaxed);
    }

    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    pub(crate) fn archive_path(&self, id: BuildId, kind: &str) -> PathBuf {
        self.dir().join(format!("{}.{kind}", id.db()))
    }

    fn wake(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    pub(crate) fn register(&self, id: BuildId) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        rx
    }

    pub(crate) fn unregister(&self, id: BuildId) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Signals a build this process runs; false when it runs nowhere here.
    fn signal_cancel(&self, id: BuildId) -> bool {
        match self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            Some(tx) => {
                tx.send_replace(true);
                true
            }
            None => false,
        }
    }

    fn is_running_here(&self, id: BuildId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }
}

/// `POST /v1/admin/builds` body (or the multipart `config` part).
#[derive(Debug, Default, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct BuildRequest {
    /// Template name (SafeName), required.
    pub name: Option<String>,
    /// Template to start from; default `minimal`.
    pub base_template: Option<String>,
    /// Instructions, one per entry (spec §G), at least one.
    pub recipe: Option<Vec<String>>,
    /// `[--interval=…] [--timeout=…] [--start-period=…] [--retries=…] <command>`; given →
    /// a `snapshot` template, absent → `base`.
    pub healthcheck: Option<String>,
    /// Default 1.
    pub vcpus: Option<i64>,
    /// Default 512.
    pub memory_mb: Option<i64>,
    /// Skip the pre-build and post-build phases.
    #[serde(default)]
    pub skip_pre_post: bool,
}

/// The Build object (spec §B.13).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BuildView {
    pub id: BuildId,
    pub name: String,
    pub base_template: String,
    pub recipe: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<String>,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub skip_pre_post: bool,
    /// `pending|running|success|failed|cancelled`.
    pub status: String,
    pub current_step: i64,
    pub total_steps: i64,
    /// `{step, phase, cmd, stdout, stderr, exit, ok, elapsed_ms}` per finished step.
    #[schema(value_type = Vec<Object>)]
    pub logs: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<CapsuleId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<HostId>,
    /// `base` (no healthcheck) or `snapshot`.
    pub template_type: String,
    pub default_user: String,
    #[schema(value_type = Object)]
    pub default_env: serde_json::Value,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

impl From<&BuildRow> for BuildView {
    fn from(b: &BuildRow) -> Self {
        let ts = crate::time::format_rfc3339;
        BuildView {
            id: b.id,
            name: b.name.clone(),
            base_template: b.base_template.clone(),
            recipe: b.recipe.clone(),
            healthcheck: b.healthcheck.clone(),
            vcpus: b.vcpus,
            memory_mb: b.memory_mb,
            skip_pre_post: b.skip_pre_post,
            status: b.status.clone(),
            current_step: b.current_step,
            total_steps: b.total_steps,
            logs: b.logs.clone(),
            error: b.error.clone(),
            sandbox_id: b.sandbox_id,
            host_id: b.host_id,
            template_type: if b.healthcheck.is_some() {
                "snapshot".into()
            } else {
                "base".into()
            },
            default_user: b.default_user.clone(),
            default_env: b.default_env.clone(),
            created_at: ts(b.created_at),
            started_at: b.started_at.map(ts),
            completed_at: b.completed_at.map(ts),
        }
    }
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Validated {
    pub row: BuildRow,
    pub archive: Option<(archive::ArchiveKind, Vec<u8>)>,
}

/// Checks a request (and its archive) without touching anything.
pub async fn validate(
    state: &AppState,
    req: BuildRequest,
    upload: Option<Vec<u8>>,
    created_by: Option<UserId>,
) -> ApiResult<Validated> {
    let name = match req.name.as_deref().map(str::trim) {
        None | Some("") => return Err(ApiError::invalid("name is required")),
        Some(n) => validate::safe_name("name", n)?,
    };
    let base_template = match req.base_template.as_deref().map(str::trim) {
        None | Some("") => validate::DEFAULT_TEMPLATE.to_owned(),
        Some(t) => validate::safe_name("base_template", t)?,
    };
    let recipe = req.recipe.unwrap_or_default();
    if recipe.is_empty() {
        return Err(ApiError::invalid(
            "recipe must hold at least one instruction",
        ));
    }
    if recipe.len() > MAX_RECIPE_STEPS {
        return Err(ApiError::invalid(format!(
            "recipe has {} instructions; at most {MAX_RECIPE_STEPS}",
            recipe.len()
        )));
    }
    let instructions =
        recipe::parse_recipe(&recipe).map_err(|e| ApiError::invalid(format!("recipe {e}")))?;
    let healthcheck = match req.healthcheck.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) => {
            recipe::parse_healthcheck(h).map_err(ApiError::invalid)?;
            Some(h.to_owned())
        }
    };
    let vcpus = match req.vcpus {
        None | Some(0) => validate::DEFAULT_VCPUS,
        Some(v) if (1..=MAX_VCPUS).contains(&v) => v,
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "vcpus must be 1..={MAX_VCPUS}, got {v}"
            )));
        }
    };
    let memory_mb = match req.memory_mb {
        None | Some(0) => validate::DEFAULT_MEMORY_MB,
        Some(m) if MEMORY_RANGE_MB.contains(&m) => m,
        Some(m) => {
            return Err(ApiError::invalid(format!(
                "memory_mb must be {}..={}, got {m}",
                MEMORY_RANGE_MB.start(),
                MEMORY_RANGE_MB.end()
            )));
        }
    };
    let listing = match &upload {
        Some(data) => {
            Some(archive::inspect(data).map_err(|e| ApiError::invalid(format!("archive: {e}")))?)
        }
        None => None,
    };
    for (i, ins) in instructions.iter().enumerate() {
        if let recipe::Instruction::Copy { sources, .. } = ins {
            let Some(listing) = &listing else {
                return Err(ApiError::invalid(format!(
                    "recipe line {}: COPY needs an uploaded archive (multipart part `archive`)",
                    i + 1
                )));
            };
            for src in sources {
                if !listing.has(&recipe::normalize_source(src)) {
                    return Err(ApiError::invalid(format!(
                        "recipe line {}: COPY source {src:?} is not in the archive",
                        i + 1
                    )));
                }
            }
        }
    }
    if templates::resolve(state.pool(), TeamId::PLATFORM, &base_template)
        .await?
        .filter(|t| t.is_platform())
        .is_none()
    {
        return Err(ApiError::invalid(format!(
            "base_template {base_template:?} is not a platform template"
        )));
    }
    if let Some(existing) = templates::resolve(state.pool(), TeamId::PLATFORM, &name).await?
        && existing.is_platform()
    {
        return Err(ApiError::conflict(format!(
            "a platform template named {name:?} already exists"
        ))
        .with_code("template_name_taken"));
    }
    let active = builds::with_status(state.pool(), &["pending", "running"]).await?;
    if active.iter().any(|b| b.name == name) {
        return Err(ApiError::conflict(format!(
            "a build of {name:?} is already queued or running"
        )));
    }
    let total_steps = recipe.len() + if req.skip_pre_post { 0 } else { PHASE_STEPS };
    let archive = match (listing, upload) {
        (Some(l), Some(data)) => Some((l.kind, data)),
        _ => None,
    };
    let row = BuildRow {
        id: BuildId::random(),
        name,
        base_template,
        recipe,
        healthcheck,
        vcpus,
        memory_mb,
        skip_pre_post: req.skip_pre_post,
        archive_kind: archive.as_ref().map(|(k, _)| k.ext().to_owned()),
        status: "pending".into(),
        current_step: 0,
        total_steps: total_steps as i64,
        logs: serde_json::json!([]),
        error: None,
        sandbox_id: None,
        host_id: None,
        template_id: None,
        default_user: "root".into(),
        default_env: serde_json::json!({}),
        created_by,
        created_at: crate::time::now(),
        started_at: None,
        completed_at: None,
    };
    Ok(Validated { row, archive })
}

/// Stores the archive, queues the build and wakes a worker.
pub async fn submit(state: &AppState, v: Validated) -> ApiResult<BuildRow> {
    let Validated { row, archive } = v;
    let mut stored = None;
    if let Some((kind, data)) = archive {
        let path = state.builds().archive_path(row.id, kind.ext());
        let dir = state.builds().dir();
        let write = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&path, &data)
            })
        };
        write
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("storing the archive: {e}")))?;
        stored = Some(path);
    }
    if let Err(e) = builds::insert(state.pool(), &row).await {
        if let Some(path) = stored {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    tracing::info!(build = %row.id, name = %row.name, steps = row.total_steps, "build queued");
    state.builds().wake();
    Ok(row)
}

pub async fn load(state: &AppState, id: &str) -> ApiResult<BuildRow> {
    let id = BuildId::parse(id)?;
    builds::get(state.pool(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("build {id} not found")))
}

/// `POST …/cancel`: a pending build ends at once; a running one is stopped and its capsule
/// destroyed before this returns (up to a minute); a finished one is a 400.
pub async fn cancel(state: &AppState, id: &str) -> ApiResult<BuildRow> {
    let row = load(state, id).await?;
    if row.is_terminal() {
        return Err(ApiError::invalid(format!(
            "build {} already ended ({})",
            row.id, row.status
        )));
    }
    let outcome = builds::Outcome {
        status: "cancelled",
        error: Some("cancelled by an admin".into()),
        ..Default::default()
    };
    let now = crate::time::now();
    if !builds::finish(state.pool(), row.id, &["pending", "running"], &outcome, now).await? {
        let now_row = load(state, id).await?;
        return Err(ApiError::invalid(format!(
            "build {} already ended ({})",
            now_row.id, now_row.status
        )));
    }
    tracing::info!(build = %row.id, from = %row.status, "build cancelled");
    if row.status == "pending" {
        if let Some(kind) = &row.archive_kind {
            let _ = std::fs::remove_file(state.builds().archive_path(row.id, kind));
        }
    } else if state.builds().signal_cancel(row.id) {
        // Wait for the worker to tear the build capsule down.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while state.builds().is_running_here(row.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    } else {
        // Claimed by a worker of another process (or orphaned): clean up what it left.
        workers::destroy_build_capsule(state, &row).await;
    }
    load(state, id).await
}

/// `default_env` of a finished recipe, as stored.
pub(crate) fn env_json(env: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::to_value(env).unwrap_or_else(|_| serde_json::json!({}))
}
