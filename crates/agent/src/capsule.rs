//! Creating and destroying capsules: network slot → sandbox with envd as init → envd healthy.
//!
//! Every step that fails undoes the earlier ones, so a failed create leaves no netns, link,
//! sandbox or directory behind. Each capsule's record (`capsule.json` in its directory) lets a
//! restarted agent find its slot again.

use crate::envd::{self, ENVD_PATH, ENVD_PORT, HealthTimeout};
use crate::id::CapsuleId;
use crate::layout::{DataDir, InvalidTemplateName};
use crate::network::{self, CapsuleNetwork, Network, NetworkError, SlotAddressing};
use crate::runtime::{FileMount, Limits, Runtime, RuntimeError, SandboxSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const MAX_VCPUS: u32 = 64;
pub const MIN_MEMORY_MB: u64 = 128;
pub const MAX_MEMORY_MB: u64 = 256 * 1024;
const RECORD: &str = "capsule.json";
const HOSTNAME: &str = "capsule";
const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    pub internet: bool,
}

impl CapsuleRequest {
    /// Defaults of the built-in `minimal` template: 1 vCPU, 512 MiB, internet on.
    pub fn new(id: CapsuleId, template: impl Into<String>) -> Self {
        Self {
            id,
            template: template.into(),
            vcpus: 1,
            memory_mb: 512,
            internet: true,
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
        Ok(())
    }
}

/// A running capsule.
#[derive(Debug, Clone)]
pub struct Capsule {
    pub id: CapsuleId,
    pub template: String,
    pub limits: Limits,
    pub network: CapsuleNetwork,
    pub dir: PathBuf,
    /// Time from the runtime start call until envd answered `/health`.
    pub boot_time: Duration,
}

impl Capsule {
    pub fn envd_addr(&self) -> SocketAddr {
        envd::envd_addr(self.network.capsule_ip())
    }

    pub fn envd_url(&self) -> String {
        format!("http://{}", self.envd_addr())
    }
}

/// What survives an agent restart about a capsule.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct CapsuleRecord {
    id: String,
    template: String,
    vcpus: u32,
    memory_mb: u64,
    slot: u32,
    internet: bool,
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

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<CapsuleId, Capsule>> {
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
        let network = self.network.setup(request.internet).await?;
        let result = self.start_sandbox(request, rootfs, dir, &network).await;
        if result.is_err()
            && let Err(e) = self.network.teardown(&network).await
        {
            tracing::warn!(id = %request.id, error = %e, "network cleanup after failed create");
        }
        result
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
        };
        let record = CapsuleRecord {
            id: request.id.to_string(),
            template: request.template.clone(),
            vcpus: limits.vcpus,
            memory_mb: limits.memory_mb,
            slot: network.slot(),
            internet: network.internet,
        };
        write_record(dir, &record)?;
        let files = write_etc_files(dir, network)?;
        let spec = SandboxSpec {
            id: request.id.clone(),
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
                format!("WRENN_SANDBOX_ID={}", request.id),
            ],
            files,
            hostname: HOSTNAME.to_owned(),
        };
        let started = std::time::Instant::now();
        self.runtime.start(&spec).await?;
        let addr = envd::envd_addr(network.capsule_ip());
        if let Err(source) = envd::wait_healthy(addr, self.health_timeout).await {
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
        })
    }

    /// Stops the sandbox and removes its network and directory. Works for capsules created by
    /// an earlier agent process too (their record is read from disk).
    pub async fn destroy(&self, id: &CapsuleId) -> Result<(), CapsuleError> {
        let dir = self.data_dir.capsule(id);
        let network = match self.get(id) {
            Some(capsule) => Some(capsule.network),
            None if dir.is_dir() => read_record(&dir).ok().map(|r| CapsuleNetwork {
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
        self.lock_live().remove(id);
        tracing::info!(%id, "capsule destroyed");
        Ok(())
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

fn write_record(dir: &Path, record: &CapsuleRecord) -> Result<(), CapsuleError> {
    let path = dir.join(RECORD);
    let json = serde_json::to_vec_pretty(record).map_err(|e| CapsuleError::Record {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&path, json).map_err(io_error("writing", &path))
}

fn read_record(dir: &Path) -> Result<CapsuleRecord, CapsuleError> {
    let path = dir.join(RECORD);
    let bytes = std::fs::read(&path).map_err(io_error("reading", &path))?;
    serde_json::from_slice(&bytes).map_err(|e| CapsuleError::Record {
        path,
        reason: e.to_string(),
    })
}

/// Per-capsule `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`, bind-mounted over the
/// template's so the template stays shared and untouched.
fn write_etc_files(dir: &Path, network: &CapsuleNetwork) -> Result<Vec<FileMount>, CapsuleError> {
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

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing capsule directory");
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
    }
}
