//! Creating and destroying capsules: network slot → sandbox with envd as init → envd healthy.
//!
//! Every step that fails undoes the earlier ones, so a failed create leaves no netns, link,
//! sandbox or directory behind. Each capsule's durable state (`state.json` in its directory,
//! rewritten atomically on every transition) lets a restarted agent re-adopt it ([`Capsules::recover`]).

use crate::envd::{self, ENVD_PATH, ENVD_PORT, HealthTimeout};
use crate::id::CapsuleId;
use crate::layout::{DataDir, InvalidTemplateName};
use crate::network::{self, CapsuleNetwork, Network, NetworkError, SlotAddressing};
use crate::runtime::{FileMount, Limits, Runtime, RuntimeError, SandboxSpec};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

// Bounds of one capsule. They are per-host sanity limits (a 2-8 core host runs many capsules),
// not billing: vCPUs become a CPU quota, memory the OCI limit (exceeding it kills the sandbox).
pub const MAX_VCPUS: u32 = 8;
pub const MIN_MEMORY_MB: u64 = 128;
pub const MAX_MEMORY_MB: u64 = 16 * 1024;
/// Disk size is recorded and reported; gVisor's overlay has no size cap to enforce it with yet.
pub const MIN_DISK_MB: u64 = 512;
pub const MAX_DISK_MB: u64 = 100 * 1024;
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEMORY_MB: u64 = 512;
pub const DEFAULT_DISK_MB: u64 = 10 * 1024;
const STATE: &str = "state.json";
/// Granularity of the persisted last-activity time (see `Capsules::touch`); after an agent
/// restart an idle capsule may pause at most this much earlier than its timeout.
pub const ACTIVITY_PERSIST_STEP: Duration = Duration::from_secs(10);
/// How long a start or restore waits for envd before also checking whether the sandbox is still
/// there (`runsc state` costs a process start, so the common fast case skips it).
const EXIT_CHECK_AFTER: Duration = Duration::from_secs(1);
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(500);
pub(crate) const HOSTNAME: &str = "capsule";
pub(crate) const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum CapsuleError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    InvalidTemplate(#[from] InvalidTemplateName),
    #[error(
        "template {name:?} is not built ({path} has no envd); build it with `wrenn image build {name} --data-dir {data_dir}`"
    )]
    TemplateMissing {
        name: String,
        path: PathBuf,
        data_dir: PathBuf,
    },
    #[error("capsule {0} already exists")]
    AlreadyExists(CapsuleId),
    #[error("capsule {0} not found")]
    NotFound(CapsuleId),
    #[error("network: {0}")]
    Network(#[from] NetworkError),
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("{source}; envd log: {log}")]
    EnvdUnhealthy {
        #[source]
        source: HealthTimeout,
        log: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("capsule record {path}: {reason}")]
    Record { path: PathBuf, reason: String },
    #[error("capsule {0} is paused")]
    Paused(CapsuleId),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CapsuleError {
    let path = path.to_owned();
    move |source| CapsuleError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug, Clone)]
pub struct CapsuleRequest {
    pub id: CapsuleId,
    pub template: String,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub internet: bool,
    /// Inactivity timeout before auto-pause; 0 disables it.
    pub timeout_sec: u32,
    pub default_user: Option<String>,
    pub default_env: BTreeMap<String, String>,
    /// Control-plane ids of the template, when it was chosen by id (reported back as given).
    pub team_id: String,
    pub template_id: String,
}

impl CapsuleRequest {
    /// Defaults of the built-in `minimal` template: 1 vCPU, 512 MiB, internet on.
    pub fn new(id: CapsuleId, template: impl Into<String>) -> Self {
        Self {
            id,
            template: template.into(),
            vcpus: DEFAULT_VCPUS,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_mb: DEFAULT_DISK_MB,
            internet: true,
            timeout_sec: 0,
            default_user: None,
            default_env: BTreeMap::new(),
            team_id: String::new(),
            template_id: String::new(),
        }
    }

    fn validate(&self) -> Result<(), CapsuleError> {
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(CapsuleError::InvalidRequest(format!(
                "vcpus must be 1..={MAX_VCPUS}, got {}",
                self.vcpus
            )));
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(CapsuleError::InvalidRequest(format!(
                "memory_mb must be {MIN_MEMORY_MB}..={MAX_MEMORY_MB}, got {}",
                self.memory_mb
            )));
        }
        if !(MIN_DISK_MB..=MAX_DISK_MB).contains(&self.disk_mb) {
            return Err(CapsuleError::InvalidRequest(format!(
                "disk_size_mb must be {MIN_DISK_MB}..={MAX_DISK_MB}, got {}",
                self.disk_mb
            )));
        }
        Ok(())
    }
}

/// A capsule the agent owns (running, or paused with its state on disk).
#[derive(Debug, Clone)]
pub struct Capsule {
    pub id: CapsuleId,
    pub template: String,
    pub limits: Limits,
    pub network: CapsuleNetwork,
    pub dir: PathBuf,
    /// Time from the runtime start call until envd answered `/health` (zero when adopted).
    pub boot_time: Duration,
    /// What `state.json` holds; change it through [`Capsules::update_state`] so it is persisted.
    pub state: CapsuleState,
}

impl Capsule {
    pub fn envd_addr(&self) -> SocketAddr {
        envd::envd_addr(self.network.capsule_ip())
    }

    pub fn envd_url(&self) -> String {
        format!("http://{}", self.envd_addr())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Running,
    Paused,
}

impl CapsuleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }
}

/// `capsules/<id>/state.json`: what survives an agent restart about a capsule. Pause/resume
/// code coordinates through `status` (and the checkpoint in `snapshots/<id>/`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapsuleState {
    pub id: String,
    pub template: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub template_id: String,
    pub slot: u32,
    pub internet: bool,
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub timeout_sec: u32,
    #[serde(default)]
    pub default_user: Option<String>,
    #[serde(default)]
    pub default_env: BTreeMap<String, String>,
    pub status: CapsuleStatus,
    pub created_at_unix: i64,
    pub last_active_at_unix: i64,
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What [`Capsules::recover`] found after a restart.
#[derive(Debug, Default)]
pub struct RecoverReport {
    pub adopted: Vec<CapsuleId>,
    pub paused: Vec<CapsuleId>,
    /// Capsules whose sandbox was gone (or state unreadable): cleaned up.
    pub cleaned: Vec<String>,
    /// Sandboxes and network state no known capsule owned.
    pub orphan_sandboxes: usize,
    pub orphan_network: network::ReclaimReport,
}

pub struct Capsules<R: Runtime> {
    data_dir: DataDir,
    network: Network,
    runtime: R,
    health_timeout: Duration,
    live: Mutex<HashMap<CapsuleId, Capsule>>,
}

impl<R: Runtime> Capsules<R> {
    pub fn new(data_dir: DataDir, network: Network, runtime: R) -> Self {
        Self {
            data_dir,
            network,
            runtime,
            health_timeout: Duration::from_secs(30),
            live: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    pub fn get(&self, id: &CapsuleId) -> Option<Capsule> {
        self.lock_live().get(id).cloned()
    }

    /// Every capsule in the registry (running and paused), sorted by id.
    pub fn list(&self) -> Vec<Capsule> {
        let mut all: Vec<_> = self.lock_live().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// A running capsule, or why not (unknown → NotFound, paused → Paused).
    pub fn running(&self, id: &CapsuleId) -> Result<Capsule, CapsuleError> {
        match self.get(id) {
            Some(c) if c.state.status == CapsuleStatus::Running => Ok(c),
            Some(_) => Err(CapsuleError::Paused(id.clone())),
            None => Err(CapsuleError::NotFound(id.clone())),
        }
    }

    /// Changes a capsule's state and writes `state.json` atomically before returning.
    pub fn update_state(
        &self,
        id: &CapsuleId,
        change: impl FnOnce(&mut CapsuleState),
    ) -> Result<CapsuleState, CapsuleError> {
        let mut live = self.lock_live();
        let capsule = live
            .get_mut(id)
            .ok_or_else(|| CapsuleError::NotFound(id.clone()))?;
        let mut state = capsule.state.clone();
        change(&mut state);
        if state != capsule.state {
            write_state(&capsule.dir, &state)?;
            capsule.state = state.clone();
        }
        Ok(state)
    }

    /// Records activity (exec, PTY, process ops, ping) for the inactivity timer. The record on
    /// disk (read only after an agent restart) moves in steps of [`ACTIVITY_PERSIST_STEP`]:
    /// every write is two fsyncs under the registry lock, and execs come many per second.
    pub fn touch(&self, id: &CapsuleId) -> Result<(), CapsuleError> {
        let now = unix_now();
        self.update_state(id, |s| {
            if now >= s.last_active_at_unix + ACTIVITY_PERSIST_STEP.as_secs() as i64 {
                s.last_active_at_unix = now;
            }
        })
        .map(|_| ())
    }

    pub(crate) fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<CapsuleId, Capsule>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn create(&self, request: CapsuleRequest) -> Result<Capsule, CapsuleError> {
        request.validate()?;
        let rootfs = self.data_dir.template_rootfs(&request.template)?;
        if !rootfs.join(ENVD_PATH.trim_start_matches('/')).is_file() {
            return Err(CapsuleError::TemplateMissing {
                name: request.template.clone(),
                path: rootfs,
                data_dir: self.data_dir.root().to_owned(),
            });
        }
        let dir = self.data_dir.capsule(&request.id);
        std::fs::create_dir_all(self.data_dir.capsules())
            .map_err(io_error("creating", &self.data_dir.capsules()))?;
        // create_dir (not _all) is the claim: it fails if another create took this id.
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CapsuleError::AlreadyExists(request.id));
            }
            Err(source) => {
                return Err(CapsuleError::Io {
                    action: "creating",
                    path: dir,
                    source,
                });
            }
        }
        let result = self.create_in(&request, rootfs, &dir).await;
        if result.is_err() {
            remove_dir(&dir);
        }
        let capsule = result?;
        self.lock_live().insert(capsule.id.clone(), capsule.clone());
        tracing::info!(
            id = %capsule.id,
            ip = %capsule.network.capsule_ip(),
            boot_ms = capsule.boot_time.as_millis() as u64,
            "capsule running"
        );
        Ok(capsule)
    }

    async fn create_in(
        &self,
        request: &CapsuleRequest,
        rootfs: PathBuf,
        dir: &Path,
    ) -> Result<Capsule, CapsuleError> {
        let network = self
            .network_and_storage(request.internet, None, dir, request.disk_mb)
            .await?;
        let result = self.start_sandbox(request, rootfs, dir, &network).await;
        if result.is_err()
            && let Err(e) = self.network.teardown(&network).await
        {
            tracing::warn!(id = %request.id, error = %e, "network cleanup after failed create");
        }
        result
    }

    /// Sets up a network (the preferred slot if free) and the capsule's storage at once: they are
    /// independent, and the disk's mkfs + mount would otherwise add to every create. On error
    /// neither is left (storage is also released when the capsule dir is removed).
    pub(crate) async fn network_and_storage(
        &self,
        internet: bool,
        preferred_slot: Option<u32>,
        dir: &Path,
        disk_mb: u64,
    ) -> Result<CapsuleNetwork, CapsuleError> {
        let network = async {
            match preferred_slot {
                Some(slot) => self.network.setup_preferring(internet, slot).await,
                None => self.network.setup(internet).await,
            }
        };
        let (network, storage) = tokio::join!(network, self.runtime.prepare_storage(dir, disk_mb));
        match (network, storage) {
            (Ok(network), Ok(())) => Ok(network),
            (Ok(network), Err(e)) => {
                if let Err(te) = self.network.teardown(&network).await {
                    tracing::warn!(dir = %dir.display(), error = %te, "network cleanup after failed storage setup");
                }
                Err(e.into())
            }
            (Err(e), Ok(())) => {
                if let Err(re) = self.runtime.release_storage(dir).await {
                    tracing::warn!(dir = %dir.display(), error = %re, "storage cleanup after failed network setup");
                }
                Err(e.into())
            }
            // prepare_storage cleans up after itself.
            (Err(e), Err(_)) => Err(e.into()),
        }
    }

    async fn start_sandbox(
        &self,
        request: &CapsuleRequest,
        rootfs: PathBuf,
        dir: &Path,
        network: &CapsuleNetwork,
    ) -> Result<Capsule, CapsuleError> {
        let limits = Limits {
            vcpus: request.vcpus,
            memory_mb: request.memory_mb,
            disk_mb: request.disk_mb,
        };
        let now = unix_now();
        let state = CapsuleState {
            id: request.id.to_string(),
            template: request.template.clone(),
            team_id: request.team_id.clone(),
            template_id: request.template_id.clone(),
            slot: network.slot(),
            internet: network.internet,
            vcpus: limits.vcpus,
            memory_mb: limits.memory_mb,
            disk_mb: request.disk_mb,
            timeout_sec: request.timeout_sec,
            default_user: request.default_user.clone(),
            default_env: request.default_env.clone(),
            status: CapsuleStatus::Running,
            created_at_unix: now,
            last_active_at_unix: now,
        };
        // Written before the sandbox starts: a crash from here on leaves a state file naming the
        // slot, so the next start can tear everything down.
        write_state(dir, &state)?;
        let spec = envd_sandbox_spec(&request.id, rootfs, dir, network, limits)?;
        let started = std::time::Instant::now();
        self.runtime.start(&spec).await?;
        let addr = envd::envd_addr(network.capsule_ip());
        if let Err(source) =
            wait_envd_up(&self.runtime, &request.id, addr, self.health_timeout).await
        {
            let log = std::fs::read(self.runtime.console_log(dir)).unwrap_or_default();
            if let Err(e) = self.runtime.destroy(&request.id).await {
                tracing::warn!(id = %request.id, error = %e, "sandbox cleanup after envd timeout");
            }
            return Err(CapsuleError::EnvdUnhealthy {
                source,
                log: crate::command::truncate(&log),
            });
        }
        Ok(Capsule {
            id: request.id.clone(),
            template: request.template.clone(),
            limits,
            network: network.clone(),
            dir: dir.to_owned(),
            boot_time: started.elapsed(),
            state,
        })
    }

    /// Stops the sandbox and removes its network and directory. Works for capsules created by
    /// an earlier agent process too (their record is read from disk).
    pub async fn destroy(&self, id: &CapsuleId) -> Result<(), CapsuleError> {
        let dir = self.data_dir.capsule(id);
        // A paused capsule holds no network: its recorded slot may belong to another capsule now.
        let network = match self.get(id) {
            Some(capsule) => {
                (capsule.state.status == CapsuleStatus::Running).then_some(capsule.network)
            }
            None if dir.is_dir() => read_state(&dir)
                .ok()
                .filter(|r| r.status == CapsuleStatus::Running)
                .map(|r| CapsuleNetwork {
                    addressing: SlotAddressing::new(r.slot),
                    internet: r.internet,
                }),
            None => return Err(CapsuleError::NotFound(id.clone())),
        };
        self.runtime.destroy(id).await?;
        if let Some(network) = network {
            self.network.teardown(&network).await?;
        }
        remove_dir(&dir);
        remove_dir(&self.data_dir.snapshot(id));
        self.lock_live().remove(id);
        tracing::info!(%id, "capsule destroyed");
        Ok(())
    }
}

impl<R: Runtime> Capsules<R> {
    /// After an agent restart (crash included): re-adopts every capsule whose `state.json` says
    /// running and whose sandbox runs in its netns, keeps paused ones that have a checkpoint,
    /// cleans up the rest, then removes sandboxes and `wrenn-` network state no capsule owns.
    /// Call once, before serving, instead of [`reclaim`].
    pub async fn recover(&self) -> Result<RecoverReport, CapsuleError> {
        let mut report = RecoverReport::default();
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(self.data_dir.capsules()) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(CapsuleError::Io {
                    action: "listing",
                    path: self.data_dir.capsules(),
                    source,
                });
            }
        };
        entries.sort();
        for dir in entries {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = name.parse::<CapsuleId>().ok();
            let state = read_state(&dir);
            match (id, state) {
                (Some(id), Ok(state)) if state.id == id.as_str() => {
                    if self.recover_one(&id, &dir, state, &mut report).await? {
                        continue;
                    }
                }
                (id, state) => {
                    tracing::warn!(dir = %dir.display(), state = ?state.err(), "capsule dir without usable state; removing");
                    if let Some(id) = id {
                        self.runtime.destroy(&id).await?;
                    }
                    remove_dir(&dir);
                    report.cleaned.push(name);
                }
            }
        }

        let known: HashSet<String> = self.lock_live().keys().map(|id| id.to_string()).collect();
        for sandbox in self.runtime.list().await? {
            if known.contains(&sandbox.id) {
                continue;
            }
            match sandbox.id.parse::<CapsuleId>() {
                Ok(id) => self.runtime.destroy(&id).await?,
                Err(_) => {
                    tracing::warn!(id = %sandbox.id, "unknown sandbox id in runsc root; leaving it");
                    continue;
                }
            }
            tracing::info!(id = %sandbox.id, "removed sandbox no capsule owns");
            report.orphan_sandboxes += 1;
        }
        let owned: HashSet<u32> = self
            .lock_live()
            .values()
            // Paused capsules released their slot (see snapshot.rs).
            .filter(|c| c.state.status == CapsuleStatus::Running)
            .map(|c| c.network.slot())
            .collect();
        report.orphan_network = self.network.reclaim_orphans(&owned).await?;
        tracing::info!(
            adopted = report.adopted.len(),
            paused = report.paused.len(),
            cleaned = report.cleaned.len(),
            orphan_sandboxes = report.orphan_sandboxes,
            "recovered capsules from disk"
        );
        Ok(report)
    }

    /// Adopts or keeps one capsule (true), or cleans it up (false, after cleanup).
    async fn recover_one(
        &self,
        id: &CapsuleId,
        dir: &Path,
        state: CapsuleState,
        report: &mut RecoverReport,
    ) -> Result<bool, CapsuleError> {
        let network = CapsuleNetwork {
            addressing: SlotAddressing::new(state.slot),
            internet: state.internet,
        };
        let netns_exists = network.netns_path().exists();
        let capsule = Capsule {
            id: id.clone(),
            template: state.template.clone(),
            limits: Limits {
                vcpus: state.vcpus,
                memory_mb: state.memory_mb,
                disk_mb: state.disk_mb,
            },
            network: network.clone(),
            dir: dir.to_owned(),
            boot_time: Duration::ZERO,
            state: state.clone(),
        };
        let keep = match state.status {
            CapsuleStatus::Running => {
                let sandbox = self.runtime.state(id).await?;
                let running = sandbox
                    .as_ref()
                    .is_some_and(|s| s.status == crate::runtime::SandboxStatus::Running);
                if running && netns_exists {
                    let addr = envd::envd_addr(network.capsule_ip());
                    if let Err(e) = envd::wait_healthy(addr, Duration::from_secs(2)).await {
                        tracing::warn!(%id, error = %e, "adopted capsule's envd not answering yet");
                    }
                    report.adopted.push(id.clone());
                    true
                } else {
                    tracing::warn!(%id, ?sandbox, netns_exists, "capsule's sandbox is gone; cleaning up");
                    false
                }
            }
            CapsuleStatus::Paused => {
                let snapshot = self.data_dir.snapshot(id);
                let has_checkpoint = std::fs::read_dir(&snapshot)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if has_checkpoint {
                    report.paused.push(id.clone());
                    true
                } else {
                    tracing::warn!(%id, "paused capsule has no checkpoint; cleaning up");
                    remove_dir(&snapshot);
                    false
                }
            }
        };
        if keep {
            if netns_exists {
                self.network.adopt(state.slot);
            }
            self.lock_live().insert(id.clone(), capsule);
            return Ok(true);
        }
        self.runtime.destroy(id).await?;
        // A paused capsule released its slot; it may be another capsule's by now.
        if state.status == CapsuleStatus::Running {
            self.network.teardown(&network).await?;
        }
        remove_dir(dir);
        report.cleaned.push(id.to_string());
        Ok(false)
    }
}

#[derive(Debug, Default)]
pub struct ReclaimReport {
    pub sandboxes: usize,
    pub network: network::ReclaimReport,
    pub capsule_dirs: usize,
}

/// Removes everything a crashed agent left: sandboxes in the runtime's root, every `wrenn-`
/// netns/link and the nft table, and capsule directories. Call before [`Network::new`].
pub async fn reclaim<R: Runtime>(
    data_dir: &DataDir,
    runtime: &R,
) -> Result<ReclaimReport, CapsuleError> {
    // Sandboxes first: they hold the network namespaces open.
    let sandboxes = runtime.reclaim().await?;
    let network = Network::reclaim().await?;
    let mut capsule_dirs = 0;
    if let Ok(entries) = std::fs::read_dir(data_dir.capsules()) {
        for entry in entries.flatten() {
            crate::disk::unmount_all_under(&entry.path())
                .map_err(|e| CapsuleError::Runtime(e.into()))?;
            std::fs::remove_dir_all(entry.path()).map_err(io_error("removing", &entry.path()))?;
            capsule_dirs += 1;
        }
    }
    Ok(ReclaimReport {
        sandboxes,
        network,
        capsule_dirs,
    })
}

/// Temp file + fsync + rename: after a crash `state.json` is either the old or the new state.
pub fn write_state(dir: &Path, state: &CapsuleState) -> Result<(), CapsuleError> {
    use std::io::Write;
    let path = dir.join(STATE);
    let tmp = dir.join(".state.json.tmp");
    let json = serde_json::to_vec_pretty(state).map_err(|e| CapsuleError::Record {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let mut file = std::fs::File::create(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(&json).map_err(io_error("writing", &tmp))?;
    file.sync_all().map_err(io_error("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error("renaming", &tmp))?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<CapsuleState, CapsuleError> {
    let path = dir.join(STATE);
    let bytes = std::fs::read(&path).map_err(io_error("reading", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| CapsuleError::Record {
        path,
        reason: e.to_string(),
    })
}

/// The sandbox of a capsule with envd as init (cold start and restore alike): writes the
/// capsule's `/etc` files into `dir` and returns the spec. Public so benchmarks can drive the
/// runtime's own bundle with raw `runsc`.
pub fn envd_sandbox_spec(
    id: &CapsuleId,
    rootfs: PathBuf,
    dir: &Path,
    network: &CapsuleNetwork,
    limits: Limits,
) -> Result<SandboxSpec, CapsuleError> {
    let files = write_etc_files(dir, network)?;
    Ok(SandboxSpec {
        id: id.clone(),
        rootfs,
        state_dir: dir.to_owned(),
        netns: network.netns_path(),
        limits,
        init_args: vec![
            ENVD_PATH.to_owned(),
            "--port".to_owned(),
            ENVD_PORT.to_string(),
        ],
        init_env: vec![
            format!("PATH={INIT_PATH}"),
            "HOME=/root".to_owned(),
            format!("WRENN_SANDBOX_ID={id}"),
        ],
        files,
        hostname: HOSTNAME.to_owned(),
    })
}

/// Per-capsule `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, bind-mounted over the
/// template's so the template stays shared and untouched.
pub(crate) fn write_etc_files(
    dir: &Path,
    network: &CapsuleNetwork,
) -> Result<Vec<FileMount>, CapsuleError> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(io_error("creating", &etc))?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        ("resolv.conf", network::capsule_resolv_conf(&host_resolv)),
        (
            "hosts",
            format!(
                "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{} {HOSTNAME}\n",
                network.capsule_ip()
            ),
        ),
        ("hostname", format!("{HOSTNAME}\n")),
    ];
    let mut mounts = Vec::with_capacity(files.len());
    for (name, content) in files {
        let host = etc.join(name);
        std::fs::write(&host, content).map_err(io_error("writing", &host))?;
        mounts.push(FileMount {
            host,
            guest: PathBuf::from("/etc").join(name),
        });
    }
    Ok(mounts)
}

/// Removes a capsule's directory, unmounting its disk (or anything else mounted inside) first.
pub(crate) fn remove_dir(dir: &Path) {
    if let Err(e) = crate::disk::unmount_all_under(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "unmounting inside capsule directory");
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing capsule directory");
    }
}

/// [`envd::wait_healthy`] that gives up as soon as the sandbox has exited: an init that died
/// (e.g. a crash right after a restore) would otherwise cost the whole timeout.
pub(crate) async fn wait_envd_up<R: Runtime>(
    runtime: &R,
    id: &CapsuleId,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Duration, HealthTimeout> {
    let start = std::time::Instant::now();
    let exited = async {
        tokio::time::sleep(EXIT_CHECK_AFTER).await;
        loop {
            match runtime.state(id).await {
                Ok(None) => return "the sandbox is gone",
                Ok(Some(info)) if info.status == crate::runtime::SandboxStatus::Stopped => {
                    return "the sandbox exited";
                }
                _ => {}
            }
            tokio::time::sleep(EXIT_CHECK_INTERVAL).await;
        }
    };
    tokio::select! {
        healthy = envd::wait_healthy(addr, timeout) => healthy,
        reason = exited => Err(HealthTimeout {
            addr,
            waited: start.elapsed(),
            last_error: format!("{reason} before envd answered"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bounds() {
        let id = CapsuleId::from_u128(1);
        assert!(
            CapsuleRequest::new(id.clone(), "minimal")
                .validate()
                .is_ok()
        );
        let mut r = CapsuleRequest::new(id.clone(), "minimal");
        r.vcpus = 0;
        assert!(r.validate().is_err());
        r.vcpus = MAX_VCPUS + 1;
        assert!(r.validate().is_err());
        let mut r = CapsuleRequest::new(id, "minimal");
        r.memory_mb = MIN_MEMORY_MB - 1;
        assert!(r.validate().is_err());
        r.memory_mb = MAX_MEMORY_MB + 1;
        assert!(r.validate().is_err());
        let mut r = CapsuleRequest::new(CapsuleId::from_u128(2), "minimal");
        r.disk_mb = MIN_DISK_MB - 1;
        assert!(r.validate().is_err());
        r.disk_mb = MAX_DISK_MB + 1;
        assert!(r.validate().is_err());
        r.disk_mb = MAX_DISK_MB;
        assert!(r.validate().is_ok());
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("wrenn-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut state = CapsuleState {
            id: CapsuleId::from_u128(3).to_string(),
            template: "minimal".into(),
            team_id: String::new(),
            template_id: String::new(),
            slot: 7,
            internet: false,
            vcpus: 2,
            memory_mb: 1024,
            disk_mb: 2048,
            timeout_sec: 60,
            default_user: Some("user".into()),
            default_env: [("A".to_owned(), "b".to_owned())].into_iter().collect(),
            status: CapsuleStatus::Running,
            created_at_unix: 1,
            last_active_at_unix: 2,
        };
        write_state(&dir, &state).unwrap();
        state.status = CapsuleStatus::Paused;
        write_state(&dir, &state).unwrap();
        assert_eq!(read_state(&dir).unwrap(), state);
        let json = std::fs::read_to_string(dir.join(STATE)).unwrap();
        assert!(json.contains("\"status\": \"paused\""), "{json}");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [STATE], "temp file left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
