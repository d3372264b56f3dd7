//! Pause/resume and snapshot templates (spec §H) on top of [`Runtime::checkpoint`] and
//! [`Runtime::restore`].
//!
//! On disk:
//! ```text
//! snapshots/<id>/image/          a paused capsule's checkpoint (with capsules/<id>/state.json
//!                                saying `paused`, this is all a restarted agent needs to resume)
//! images/<name>/template.json    a snapshot template: kind, limits, defaults, base template
//! images/<name>/image/           its checkpoint image
//! images/<name>/rootfs/          hard-linked copy of the source's rootfs (the restore's lower layer)
//! ```
//!
//! Decisions:
//! - **Writable layer.** gVisor's overlay upper layer lives in a memory-file-backed filestore
//!   (`--overlay2=root:dir=capsules/<id>/overlay`, an unlinked file), and `runsc checkpoint`
//!   saves it in `checkpoint.img` with memory and processes. So the image alone carries the
//!   capsule's file changes; the capsule dir keeps no data while paused. (Firecracker would move
//!   its CoW disk into the image dir: the same contract.)
//! - **Network.** Pause tears the capsule's netns/veth down and frees its slot. Resume sets up a
//!   fresh netns, preferring the old slot (same IP) and taking any free one otherwise: the IP
//!   may change and is reported in the returned [`Capsule`]. A fresh netns has its address
//!   configured, which is what runsc needs (it removes the address from a netns it ran in, so
//!   reusing one would need the address re-added); the restored stack adopts it.
//! - **Failed checkpoint = lost capsule.** gVisor kills a sandbox whose checkpoint fails; the
//!   capsule is destroyed (network, dirs) and [`SnapshotError::Lost`] returned. A failed quiesce
//!   (before any checkpoint) leaves the capsule running; a failed resume leaves it paused.
//! - **Snapshot template source.** A running source is paused, its image hard-linked into the
//!   template, then resumed (like [N]'s live snapshot: the caller's capsule keeps running; its IP
//!   may change). A paused source stays paused.
//! - **Clone identity.** Each clone gets `POST /init` with its own `sandboxId` (envd rewrites
//!   `WRENN_SANDBOX_ID` and `/run/wrenn/.WRENN_SANDBOX_ID`) and, if given, its own access token
//!   (else the token is cleared, so a template's token never carries over). gVisor serves
//!   `/dev/urandom` and `getrandom` from the host at call time, so clones draw different kernel
//!   randomness; what *is* duplicated is user-space state already in memory at snapshot time:
//!   envd's HashMap keys and any PRNG a user process seeded before the snapshot (and secrets it
//!   holds). Those cannot be re-keyed from outside; documented, not fixed.
//! - **Deleting a template** is refused while any capsule (running or paused) was created from
//!   it: their restores (and later resumes) read its rootfs as their lower layer.

use crate::capsule::{self, Capsule, CapsuleError, CapsuleState, CapsuleStatus, Capsules};
use crate::envd::{self, EnvdCallError, HealthTimeout};
use crate::id::CapsuleId;
use crate::layout::InvalidTemplateName;
use crate::network::{CapsuleNetwork, NetworkError};
use crate::runtime::{Limits, Runtime, RuntimeError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Marks a template directory as a snapshot template.
pub const TEMPLATE_META: &str = "template.json";
/// The checkpoint image inside `snapshots/<id>/` and `images/<name>/`.
/// Restore attempts per resume (see `resume`).
const RESUME_ATTEMPTS: u32 = 2;
const IMAGE: &str = "image";
/// envd answers prepare at once; [R6] allows 30 s.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(30);
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
const RESTORE_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Capsule(#[from] CapsuleError),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error(transparent)]
    InvalidTemplate(#[from] InvalidTemplateName),
    #[error("capsule {0} is not paused")]
    NotPaused(CapsuleId),
    #[error("capsule {0} has no checkpoint at {1}")]
    NoCheckpoint(CapsuleId, PathBuf),
    #[error("capsule {id} was lost while pausing (it has been cleaned up): {source}")]
    Lost {
        id: CapsuleId,
        #[source]
        source: RuntimeError,
    },
    #[error("quiescing capsule {id} failed (it keeps running): {source}")]
    Quiesce {
        id: CapsuleId,
        #[source]
        source: EnvdCallError,
    },
    #[error("{source}; envd log: {log}")]
    EnvdUnhealthy {
        #[source]
        source: HealthTimeout,
        log: String,
    },
    #[error(transparent)]
    Init(#[from] EnvdCallError),
    #[error("template {0:?} already exists")]
    TemplateExists(String),
    #[error("template {0:?} not found")]
    TemplateNotFound(String),
    #[error("template {0:?} is not a snapshot template")]
    NotSnapshotTemplate(String),
    #[error("template {name:?} is in use by capsules {users:?}")]
    TemplateInUse { name: String, users: Vec<CapsuleId> },
    #[error("template metadata {path}: {reason}")]
    Meta { path: PathBuf, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// Overrides applied on resume (spec §E `ResumeSandbox`); unset fields keep the capsule's.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    pub timeout_sec: Option<u32>,
    pub default_user: Option<String>,
    /// Merged into the capsule's default env.
    pub default_env: BTreeMap<String, String>,
}

/// A new capsule from a snapshot template. vCPUs and memory are the template's (spec §H).
#[derive(Debug, Clone)]
pub struct CloneRequest {
    pub id: CapsuleId,
    pub template: String,
    pub timeout_sec: u32,
    pub internet: bool,
    pub default_user: Option<String>,
    /// Merged over the template's default env.
    pub default_env: BTreeMap<String, String>,
    /// envd access token for this clone; `None` clears any token the source had.
    pub access_token: Option<String>,
    pub team_id: String,
    pub template_id: String,
}

impl CloneRequest {
    pub fn new(id: CapsuleId, template: impl Into<String>) -> Self {
        Self {
            id,
            template: template.into(),
            timeout_sec: 0,
            internet: true,
            default_user: None,
            default_env: BTreeMap::new(),
            access_token: None,
            team_id: String::new(),
            template_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    Snapshot,
}

/// `images/<name>/template.json` of a snapshot template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateMeta {
    pub kind: TemplateKind,
    pub name: String,
    /// The template the source capsule ran on (its rootfs is hard-linked here).
    pub base_template: String,
    pub source_capsule: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    #[serde(default)]
    pub default_user: Option<String>,
    #[serde(default)]
    pub default_env: BTreeMap<String, String>,
    pub created_at_unix: i64,
    /// Size of the checkpoint image.
    pub image_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PauseReport {
    pub elapsed: Duration,
    pub image_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct TemplateReport {
    pub meta: TemplateMeta,
    /// The source after the snapshot: running again (possibly with a new IP) or still paused.
    pub source: Capsule,
}

/// The `/init` body (camelCase, spec §D.1).
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct InitBody {
    sandbox_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    template_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_user: Option<String>,
    env_vars: BTreeMap<String, String>,
    /// `Some("")` clears a token restored from a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
}

impl InitBody {
    fn for_state(state: &CapsuleState, access_token: Option<String>) -> Self {
        Self {
            sandbox_id: state.id.clone(),
            template_id: if state.template_id.is_empty() {
                state.template.clone()
            } else {
                state.template_id.clone()
            },
            default_user: state.default_user.clone(),
            env_vars: state.default_env.clone(),
            access_token,
        }
    }
}

impl<R: Runtime> Capsules<R> {
    /// Quiesces envd, checkpoints the capsule into `snapshots/<id>/image`, releases its sandbox
    /// and network, and marks it paused (module docs for failure handling).
    pub async fn pause(&self, id: &CapsuleId) -> Result<PauseReport, SnapshotError> {
        let started = Instant::now();
        let capsule = self.running(id)?;
        let snapshot_dir = self.data_dir().snapshot(id);
        let image = snapshot_dir.join(IMAGE);
        capsule::remove_dir(&snapshot_dir);
        std::fs::create_dir_all(&image).map_err(io_error("creating", &image))?;

        // envd stops its port forwarder and closes its connections; the call's own connection
        // is closed by the time it returns. The agent holds no other envd connection.
        if let Err(source) = envd::post(
            capsule.envd_addr(),
            "/snapshot/prepare",
            b"",
            PREPARE_TIMEOUT,
        )
        .await
        {
            capsule::remove_dir(&snapshot_dir);
            // A /health ends a (partial) quiesce.
            let _ = envd::wait_healthy(capsule.envd_addr(), Duration::from_secs(2)).await;
            return Err(SnapshotError::Quiesce {
                id: id.clone(),
                source,
            });
        }

        if let Err(source) = self.runtime().checkpoint(id, &image).await {
            tracing::error!(%id, error = %source, "checkpoint failed; the capsule is lost");
            if let Err(e) = self.destroy(id).await {
                tracing::warn!(%id, error = %e, "cleanup of a lost capsule");
            }
            return Err(SnapshotError::Lost {
                id: id.clone(),
                source,
            });
        }
        // From here the checkpoint is the capsule: errors below keep it paused.
        self.update_state(id, |s| s.status = CapsuleStatus::Paused)?;
        // Independent, so concurrent: runsc's delete of the stopped container (~0.12 s) and the
        // network teardown.
        let (deleted, released) = tokio::join!(
            self.runtime().destroy(id),
            self.network().teardown(&capsule.network)
        );
        if let Err(e) = deleted {
            // A stopped container runs nothing; the next recover removes unknown ones.
            tracing::warn!(%id, error = %e, "removing the checkpointed sandbox");
        }
        // The writable layer is inside the checkpoint image: a paused capsule holds no disk.
        if let Err(e) = self.runtime().release_storage(&capsule.dir).await {
            tracing::warn!(%id, error = %e, "releasing the disk of a paused capsule");
        }
        if let Err(e) = released {
            // Leftover links/netns are reclaimed by the next recover.
            tracing::warn!(%id, error = %e, "releasing the network of a paused capsule");
        }
        let image_bytes = dir_size(&image);
        let elapsed = started.elapsed();
        tracing::info!(%id, elapsed_ms = elapsed.as_millis() as u64, image_bytes, "capsule paused");
        Ok(PauseReport {
            elapsed,
            image_bytes,
        })
    }

    /// Restores a paused capsule (same slot if free), waits for envd and re-applies its defaults
    /// via `/init`. A failure leaves it paused.
    pub async fn resume(
        &self,
        id: &CapsuleId,
        options: ResumeOptions,
    ) -> Result<Capsule, SnapshotError> {
        let capsule = self
            .get(id)
            .ok_or_else(|| CapsuleError::NotFound(id.clone()))?;
        if capsule.state.status != CapsuleStatus::Paused {
            return Err(SnapshotError::NotPaused(id.clone()));
        }
        let snapshot_dir = self.data_dir().snapshot(id);
        let image = snapshot_dir.join(IMAGE);
        if !image.join("checkpoint.img").is_file() && !has_entries(&image) {
            return Err(SnapshotError::NoCheckpoint(id.clone(), image));
        }
        let mut state = capsule.state.clone();
        if let Some(timeout) = options.timeout_sec {
            state.timeout_sec = timeout;
        }
        if options.default_user.is_some() {
            state.default_user = options.default_user;
        }
        state.default_env.extend(options.default_env);
        let rootfs = self.data_dir().template_rootfs(&state.template)?;
        let init = InitBody::for_state(&state, None);
        // runsc restore occasionally dies (seen: a SIGSEGV right after it starts, then envd never
        // answers). The image is intact after a failed attempt, so one retry in a fresh netns
        // (runsc strips the address from the one it used) turns that into a slower resume.
        let mut attempt = 1;
        let network = loop {
            let network = if attempt == 1 {
                self.network_and_storage(
                    state.internet,
                    Some(state.slot),
                    &capsule.dir,
                    state.disk_mb,
                )
                .await?
            } else {
                match self
                    .network()
                    .setup_preferring(state.internet, state.slot)
                    .await
                {
                    Ok(network) => network,
                    Err(e) => {
                        if let Err(se) = self.runtime().release_storage(&capsule.dir).await {
                            tracing::warn!(%id, error = %se, "storage cleanup after failed resume");
                        }
                        return Err(CapsuleError::from(e).into());
                    }
                }
            };
            let restored = self
                .restore_into(
                    id,
                    rootfs.clone(),
                    &capsule.dir,
                    &network,
                    capsule.limits,
                    &image,
                    &init,
                )
                .await;
            match restored {
                Ok(()) => break network,
                Err(e) => {
                    if let Err(te) = self.network().teardown(&network).await {
                        tracing::warn!(%id, error = %te, "network cleanup after failed resume");
                    }
                    if attempt == RESUME_ATTEMPTS {
                        if let Err(se) = self.runtime().release_storage(&capsule.dir).await {
                            tracing::warn!(%id, error = %se, "storage cleanup after failed resume");
                        }
                        return Err(e);
                    }
                    tracing::warn!(%id, attempt, error = %e, "restore failed; retrying");
                    attempt += 1;
                }
            }
        };
        if let Some(live) = self.lock_live().get_mut(id) {
            live.network = network.clone();
        }
        let now = capsule::unix_now();
        self.update_state(id, |s| {
            *s = CapsuleState {
                slot: network.slot(),
                status: CapsuleStatus::Running,
                last_active_at_unix: now,
                ..state
            }
        })?;
        // The image is consumed: gVisor has no diff snapshots to chain onto it.
        capsule::remove_dir(&snapshot_dir);
        let capsule = self
            .get(id)
            .ok_or_else(|| CapsuleError::NotFound(id.clone()))?;
        tracing::info!(%id, ip = %network.capsule_ip(), "capsule resumed");
        Ok(capsule)
    }

    /// Restores `image` as sandbox `id` in `network`, waits for envd and sends `/init`. On
    /// error the sandbox is gone (network and dirs are the caller's).
    #[allow(clippy::too_many_arguments)]
    async fn restore_into(
        &self,
        id: &CapsuleId,
        rootfs: PathBuf,
        dir: &Path,
        network: &CapsuleNetwork,
        limits: Limits,
        image: &Path,
        init: &InitBody,
    ) -> Result<(), SnapshotError> {
        // Same shape as a cold start (capsule.rs); init args/env only matter to runsc's checks,
        // the restored envd keeps its memory.
        let spec = capsule::envd_sandbox_spec(id, rootfs, dir, network, limits)?;
        self.runtime().restore(&spec, image).await?;
        let addr = envd::envd_addr(network.capsule_ip());
        let ready = async {
            // The first /health after a restore also ends envd's quiesce.
            capsule::wait_envd_up(self.runtime(), id, addr, RESTORE_HEALTH_TIMEOUT)
                .await
                .map_err(|source| SnapshotError::EnvdUnhealthy {
                    log: crate::command::truncate(
                        &std::fs::read(self.runtime().console_log(dir)).unwrap_or_default(),
                    ),
                    source,
                })?;
            let body = serde_json::to_vec(init).map_err(|e| SnapshotError::Meta {
                path: PathBuf::from("/init"),
                reason: e.to_string(),
            })?;
            envd::post(addr, "/init", &body, INIT_TIMEOUT).await?;
            Ok(())
        };
        let result = ready.await;
        if result.is_err()
            && let Err(e) = self.runtime().destroy(id).await
        {
            tracing::warn!(%id, error = %e, "sandbox cleanup after failed restore");
        }
        result
    }

    /// Makes snapshot template `name` from a running or paused capsule (module docs).
    pub async fn snapshot_template(
        &self,
        id: &CapsuleId,
        name: &str,
    ) -> Result<TemplateReport, SnapshotError> {
        let template_dir = self.data_dir().template(name)?;
        if template_dir.exists() {
            return Err(SnapshotError::TemplateExists(name.to_owned()));
        }
        let capsule = self
            .get(id)
            .ok_or_else(|| CapsuleError::NotFound(id.clone()))?;
        let was_running = capsule.state.status == CapsuleStatus::Running;
        // Staged beside the final dir and renamed into place: a crash never leaves a
        // half-written template under a valid name. create_dir is the claim on the name.
        let staging = self.data_dir().images().join(format!(".{name}.building"));
        std::fs::create_dir_all(self.data_dir().images())
            .map_err(io_error("creating", &self.data_dir().images()))?;
        match std::fs::create_dir(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::TemplateExists(name.to_owned()));
            }
            Err(e) => return Err(io_error("creating", &staging)(e)),
        }
        let result = self.build_template(&capsule, name, &staging).await;
        let meta = match result {
            Ok(meta) => meta,
            Err(e) => {
                capsule::remove_dir(&staging);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&staging, &template_dir) {
            capsule::remove_dir(&staging);
            return Err(io_error("renaming", &staging)(e));
        }
        tracing::info!(%id, template = name, "snapshot template created");
        let source = if was_running {
            self.resume(id, ResumeOptions::default()).await?
        } else {
            self.get(id)
                .ok_or_else(|| CapsuleError::NotFound(id.clone()))?
        };
        Ok(TemplateReport { meta, source })
    }

    async fn build_template(
        &self,
        capsule: &Capsule,
        name: &str,
        staging: &Path,
    ) -> Result<TemplateMeta, SnapshotError> {
        if capsule.state.status == CapsuleStatus::Running {
            self.pause(&capsule.id).await?;
        }
        let source_image = self.data_dir().snapshot(&capsule.id).join(IMAGE);
        let image = staging.join(IMAGE);
        link_or_copy_dir(&source_image, &image)?;
        // The restore's lower layer must be the exact tree the source ran on; hard links make
        // the template independent of its base (deletable) at no space cost. Nothing writes
        // template files in place (image builds replace files by rename).
        let base_rootfs = self.data_dir().template_rootfs(&capsule.state.template)?;
        let rootfs = staging.join("rootfs");
        crate::command::run(
            "cp",
            [
                std::ffi::OsStr::new("-a"),
                std::ffi::OsStr::new("--link"),
                base_rootfs.as_os_str(),
                rootfs.as_os_str(),
            ],
            None,
        )
        .await
        .map_err(RuntimeError::from)?;
        let state = &capsule.state;
        let meta = TemplateMeta {
            kind: TemplateKind::Snapshot,
            name: name.to_owned(),
            base_template: state.template.clone(),
            source_capsule: state.id.clone(),
            vcpus: state.vcpus,
            memory_mb: state.memory_mb,
            disk_mb: state.disk_mb,
            default_user: state.default_user.clone(),
            default_env: state.default_env.clone(),
            created_at_unix: capsule::unix_now(),
            image_bytes: dir_size(&image),
        };
        write_meta(staging, &meta)?;
        Ok(meta)
    }

    /// The metadata of snapshot template `name`.
    pub fn snapshot_template_meta(&self, name: &str) -> Result<TemplateMeta, SnapshotError> {
        let dir = self.data_dir().template(name)?;
        if !dir.is_dir() {
            return Err(SnapshotError::TemplateNotFound(name.to_owned()));
        }
        let path = dir.join(TEMPLATE_META);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotSnapshotTemplate(name.to_owned()));
            }
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Meta {
            path,
            reason: e.to_string(),
        })
    }

    /// Starts a new capsule from snapshot template `request.template`: its processes and files
    /// as they were at the snapshot, re-identified via `/init`. Safe to call concurrently.
    pub async fn create_from_template(
        &self,
        request: CloneRequest,
    ) -> Result<Capsule, SnapshotError> {
        let meta = self.snapshot_template_meta(&request.template)?;
        let template_dir = self.data_dir().template(&request.template)?;
        let image = template_dir.join(IMAGE);
        let rootfs = template_dir.join("rootfs");
        let dir = self.data_dir().capsule(&request.id);
        std::fs::create_dir_all(self.data_dir().capsules())
            .map_err(io_error("creating", &self.data_dir().capsules()))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CapsuleError::AlreadyExists(request.id).into());
            }
            Err(e) => return Err(io_error("creating", &dir)(e)),
        }
        let result = self.clone_in(&request, &meta, &image, rootfs, &dir).await;
        match result {
            Ok(capsule) => {
                self.lock_live().insert(capsule.id.clone(), capsule.clone());
                tracing::info!(id = %capsule.id, template = %request.template, ip = %capsule.network.capsule_ip(), "capsule created from snapshot template");
                Ok(capsule)
            }
            Err(e) => {
                capsule::remove_dir(&dir);
                Err(e)
            }
        }
    }

    async fn clone_in(
        &self,
        request: &CloneRequest,
        meta: &TemplateMeta,
        image: &Path,
        rootfs: PathBuf,
        dir: &Path,
    ) -> Result<Capsule, SnapshotError> {
        let limits = Limits {
            vcpus: meta.vcpus,
            memory_mb: meta.memory_mb,
            disk_mb: meta.disk_mb,
        };
        let network = self
            .network_and_storage(request.internet, None, dir, meta.disk_mb)
            .await?;
        let now = capsule::unix_now();
        let mut default_env = meta.default_env.clone();
        default_env.extend(request.default_env.clone());
        let state = CapsuleState {
            id: request.id.to_string(),
            template: request.template.clone(),
            team_id: request.team_id.clone(),
            template_id: request.template_id.clone(),
            slot: network.slot(),
            internet: network.internet,
            vcpus: limits.vcpus,
            memory_mb: limits.memory_mb,
            disk_mb: meta.disk_mb,
            timeout_sec: request.timeout_sec,
            default_user: request
                .default_user
                .clone()
                .or_else(|| meta.default_user.clone()),
            default_env,
            status: CapsuleStatus::Running,
            created_at_unix: now,
            last_active_at_unix: now,
        };
        let started = Instant::now();
        let result = async {
            // Before the sandbox exists, like create: a crash leaves a state naming the slot.
            capsule::write_state(dir, &state)?;
            let init = InitBody::for_state(
                &state,
                Some(request.access_token.clone().unwrap_or_default()),
            );
            self.restore_into(&request.id, rootfs, dir, &network, limits, image, &init)
                .await
        }
        .await;
        if let Err(e) = result {
            if let Err(te) = self.network().teardown(&network).await {
                tracing::warn!(id = %request.id, error = %te, "network cleanup after failed clone");
            }
            return Err(e);
        }
        Ok(Capsule {
            id: request.id.clone(),
            template: request.template.clone(),
            limits,
            network,
            dir: dir.to_owned(),
            boot_time: started.elapsed(),
            state,
        })
    }

    /// Removes snapshot template `name` and all its files; refused while capsules created from
    /// it exist (running or paused), since their restores read its rootfs.
    pub async fn delete_template(&self, name: &str) -> Result<(), SnapshotError> {
        self.snapshot_template_meta(name)?;
        let users: Vec<CapsuleId> = self
            .list()
            .into_iter()
            .filter(|c| c.state.template == name)
            .map(|c| c.id)
            .collect();
        if !users.is_empty() {
            return Err(SnapshotError::TemplateInUse {
                name: name.to_owned(),
                users,
            });
        }
        let dir = self.data_dir().template(name)?;
        // Renamed first so the name disappears atomically, then removed.
        let doomed = self.data_dir().images().join(format!(".{name}.deleting"));
        std::fs::rename(&dir, &doomed).map_err(io_error("renaming", &dir))?;
        std::fs::remove_dir_all(&doomed).map_err(io_error("removing", &doomed))?;
        tracing::info!(template = name, "snapshot template deleted");
        Ok(())
    }
}

fn write_meta(dir: &Path, meta: &TemplateMeta) -> Result<(), SnapshotError> {
    let path = dir.join(TEMPLATE_META);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| SnapshotError::Meta {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&path, json).map_err(io_error("writing", &path))
}

/// Hard-links every file of a flat directory (a checkpoint image) into `to`, copying when
/// links are impossible (another filesystem). Restores only read images, so sharing is safe.
fn link_or_copy_dir(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(to).map_err(io_error("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(io_error("reading", from))? {
        let entry = entry.map_err(io_error("reading", from))?;
        let target = to.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(io_error("copying", &entry.path()))?;
        }
    }
    Ok(())
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Total size of the regular files directly in `dir`.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_body_re_identifies_and_clears_tokens() {
        let state = CapsuleState {
            id: "cl-0000000000000000000000001".into(),
            template: "snap".into(),
            team_id: String::new(),
            template_id: String::new(),
            slot: 1,
            internet: true,
            vcpus: 1,
            memory_mb: 512,
            disk_mb: 1024,
            timeout_sec: 0,
            default_user: Some("user".into()),
            default_env: BTreeMap::from([("A".into(), "1".into())]),
            status: CapsuleStatus::Running,
            created_at_unix: 0,
            last_active_at_unix: 0,
        };
        let json = serde_json::to_value(InitBody::for_state(&state, Some(String::new()))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sandboxId": "cl-0000000000000000000000001",
                "templateId": "snap",
                "defaultUser": "user",
                "envVars": {"A": "1"},
                "accessToken": ""
            })
        );
        let resume = serde_json::to_value(InitBody::for_state(&state, None)).unwrap();
        assert!(resume.get("accessToken").is_none());
    }

    #[test]
    fn template_meta_round_trips() {
        let meta = TemplateMeta {
            kind: TemplateKind::Snapshot,
            name: "snap".into(),
            base_template: "minimal".into(),
            source_capsule: "cl-0000000000000000000000001".into(),
            vcpus: 1,
            memory_mb: 512,
            disk_mb: 1024,
            default_user: None,
            default_env: BTreeMap::new(),
            created_at_unix: 1,
            image_bytes: 2,
        };
        let json = serde_json::to_string(&meta).unwrap();
        assert!(json.contains(r#""kind":"snapshot""#));
        assert_eq!(serde_json::from_str::<TemplateMeta>(&json).unwrap(), meta);
    }
}
