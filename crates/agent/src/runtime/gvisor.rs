//! gVisor runtime: one `runsc` sandbox per capsule.
//!
//! Choices (measured on the 2024-07-29 build, Debian 13's package):
//! - `--platform=systrap` by default: syscall-heavy code ~2.5× the host versus ~25× for ptrace,
//!   at an idle CPU cost; configurable per host ([`Platform`]). With capsules pinned to CPUs
//!   (`super::cpu_placement`) ptrace's tracer/tracee switches stay on one CPU and it closes most
//!   of that gap on a 2-vCPU VM (agent-bench `dd bs=1`: ptrace 0.64–0.70 s, systrap 0.52–1.36
//!   s; short commands alike) at a tenth of the idle CPU: a reasonable choice for small hosts.
//! - `--network=sandbox` inside the capsule's netns: runsc adopts the veth and its address/routes.
//! - `--overlay2=root:dir=<capsule>/overlay`: the root mount is the template directory with
//!   gVisor's own overlay on top. The upper layer lives in an (unlinked) filestore file in the
//!   capsule's directory, so writes never touch the template, no host mount exists to leak on a
//!   crash, and the overlay's contents are saved in checkpoint images (verified: a file written
//!   before `runsc checkpoint` is there after `runsc restore`). The default `root:self` would
//!   put the filestore inside the template directory, shared by every capsule.
//! - `run --detach` with stdio redirected to a log file: runsc hands its stdio to the sandbox, so
//!   a pipe would never see EOF.
//! - `--net-disconnect-ok` at *creation*: it is a property of the sandbox's network stack, read
//!   when the sandbox boots (passing it to `runsc checkpoint` alone changes nothing; measured:
//!   the checkpoint then fails on any open or TIME_WAIT TCP connection, and a failed checkpoint
//!   kills the sandbox). With it, connections still open at checkpoint are reset on restore.
//! - Checkpoint/restore: `runsc checkpoint --image-path` writes one `checkpoint.img` holding
//!   memory, processes and the overlay's upper layer (the filestore is memory-file backed), and
//!   leaves the container `stopped` (we delete it). `runsc restore --detach` takes a fresh bundle
//!   (new netns path, file mounts, state dir), the same global flags as `run` and a new filestore
//!   dir; several restores of one image may run at once. The restored stack adopts whatever
//!   address the new netns's `eth0` carries (a netns runsc ran in before has lost its address:
//!   the caller provides a configured one).
//! - On runsc older than 2024-08 and Linux ≥ 6, runsc mistakes the capsule's netns for the root
//!   netns ("cannot run with network enabled in root network namespace"). The workaround runs
//!   runsc in a private mount namespace with an empty tmpfs over `/proc/sys/net`.

use super::cpu_placement::CpuPlacement;
use super::{Limits, Runtime, RuntimeError, SandboxInfo, SandboxSpec, SandboxStatus};
use crate::command::{self, CommandError};
use crate::disk;
use crate::id::CapsuleId;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::process::Command;

/// Oldest runsc accepted: the first Debian build with the systrap platform and the checkpoint
/// fixes the agent relies on.
pub const MIN_RUNSC_DATE: u32 = 20240729;
/// First release that detects a non-root network namespace correctly on Linux ≥ 6.
const NETNS_DETECTION_FIXED_DATE: u32 = 20240801;
const CPU_PERIOD_US: u64 = 100_000;
const OPEN_FILES_LIMIT: u64 = 1 << 20;
/// A sandbox that has not started within this is treated as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Generous: a checkpoint writes the sandbox's whole memory (≈0.4 s per 200 MB measured).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// Fast syscalls via seccomp traps; costs some idle CPU per sandbox.
    #[default]
    Systrap,
    /// Slow but idle-free; for dense hosts of mostly idle capsules.
    Ptrace,
    /// Needs /dev/kvm (hangs without hardware virtualization).
    Kvm,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systrap => "systrap",
            Self::Ptrace => "ptrace",
            Self::Kvm => "kvm",
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "systrap" => Ok(Self::Systrap),
            "ptrace" => Ok(Self::Ptrace),
            "kvm" => Ok(Self::Kvm),
            other => Err(format!(
                "unknown gVisor platform {other:?} (systrap, ptrace or kvm)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GvisorConfig {
    /// The runsc binary (a bare name is looked up in PATH).
    pub runsc: PathBuf,
    /// runsc's `--root`: its container state. Owned by this agent alone.
    pub root_dir: PathBuf,
    pub platform: Platform,
    /// Forces the `/proc/sys/net` workaround on or off; `None` decides from version and kernel.
    pub hide_proc_sys_net: Option<bool>,
    /// Where pre-formatted capsule disks of [`crate::capsule::DEFAULT_DISK_MB`] wait
    /// ([`disk::Spares`]); `None` formats each disk during its create.
    pub disk_spares_dir: Option<PathBuf>,
    /// runsc `--debug`, its logs in `<dir>/<capsule id>/` (one file per runsc command and
    /// sandbox process; kept after the capsule is gone). Verbose: for diagnosing only.
    pub debug_log_dir: Option<PathBuf>,
    /// With `debug_log_dir`: also runsc `--strace`, every syscall of the sandbox in those logs.
    pub strace: bool,
    /// Pin each sandbox to its own host CPUs once it runs ([`super::cpu_placement`]).
    pub cpu_pinning: bool,
}

impl GvisorConfig {
    pub fn new(root_dir: impl Into<PathBuf>) -> Self {
        Self {
            runsc: PathBuf::from("runsc"),
            root_dir: root_dir.into(),
            platform: Platform::default(),
            hide_proc_sys_net: None,
            disk_spares_dir: None,
            debug_log_dir: None,
            strace: false,
            cpu_pinning: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunscVersion {
    /// Release date as YYYYMMDD.
    pub date: u32,
    pub raw: String,
}

/// Reads the release date from `runsc --version` output: "runsc version release-20240729.0"
/// (upstream) or "runsc version 0.0~20240729.0" (Debian).
pub fn parse_runsc_version(output: &str) -> Option<RunscVersion> {
    let line = output.lines().find(|l| l.starts_with("runsc version"))?;
    let raw = line.trim_start_matches("runsc version").trim().to_owned();
    let bytes = raw.as_bytes();
    let date = (0..bytes.len().saturating_sub(7)).find_map(|start| {
        let window = &bytes[start..start + 8];
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_digit();
        let after_ok = bytes.get(start + 8).is_none_or(|b| !b.is_ascii_digit());
        (before_ok && after_ok && window.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(window).ok()?.parse::<u32>().ok())
            .flatten()
    })?;
    (19000101..=29991231)
        .contains(&date)
        .then_some(RunscVersion { date, raw })
}

/// Major and minor numbers of a kernel release string such as "6.18.44-fc".
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether runsc must run with `/proc/sys/net` hidden (see the module docs).
pub fn needs_proc_sys_net_workaround(version: &RunscVersion, kernel: Option<(u32, u32)>) -> bool {
    version.date < NETNS_DETECTION_FIXED_DATE && kernel.is_some_and(|(major, _)| major >= 6)
}

pub struct GvisorRuntime {
    config: GvisorConfig,
    version: RunscVersion,
    hide_proc_sys_net: bool,
    spares: Option<std::sync::Arc<disk::Spares>>,
    /// `None` when pinning is off or the host has no cpuset cgroups.
    placement: Option<CpuPlacement>,
    /// A pinning failure was logged at warn level already: a host that refuses it (read-only
    /// cgroupfs in a container) refuses it for every capsule.
    pin_failure_logged: AtomicBool,
}

/// Formatted disks kept ready: enough for a small burst of creates while one more is formatted.
const DISK_SPARES: usize = 3;

impl GvisorRuntime {
    /// Checks the installed runsc, prepares the root dir and makes this process a subreaper.
    pub async fn new(config: GvisorConfig) -> Result<Self, RuntimeError> {
        let runsc = config.runsc.to_string_lossy().into_owned();
        let stdout = command::run(&runsc, ["--version"], None).await?;
        let output = String::from_utf8_lossy(&stdout).into_owned();
        let version = parse_runsc_version(&output).ok_or(RuntimeError::UnknownVersion {
            runtime: "runsc",
            output: output.trim().to_owned(),
        })?;
        if version.date < MIN_RUNSC_DATE {
            return Err(RuntimeError::UnsupportedVersion {
                runtime: "runsc",
                found: version.raw,
                required: format!("release {MIN_RUNSC_DATE}"),
            });
        }
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel_release(&u.release().to_string_lossy()));
        let hide_proc_sys_net = config
            .hide_proc_sys_net
            .unwrap_or_else(|| needs_proc_sys_net_workaround(&version, kernel));
        create_dir(&config.root_dir)?;
        crate::reaper::install().map_err(|e| RuntimeError::Io {
            action: "setting up",
            path: PathBuf::from("PR_SET_CHILD_SUBREAPER"),
            source: std::io::Error::other(e.to_string()),
        })?;
        tracing::info!(
            version = %version.raw,
            platform = config.platform.as_str(),
            hide_proc_sys_net,
            cpu_pinning = config.cpu_pinning,
            "gVisor runtime ready"
        );
        let spares = config
            .disk_spares_dir
            .clone()
            .map(|dir| disk::Spares::open(dir, crate::capsule::DEFAULT_DISK_MB, DISK_SPARES))
            .transpose()?;
        let placement = if config.cpu_pinning {
            let placement = CpuPlacement::detect();
            if placement.is_none() {
                tracing::warn!("no cpuset cgroup hierarchy: capsules are not pinned to CPUs");
            }
            placement
        } else {
            None
        };
        Ok(Self {
            config,
            version,
            hide_proc_sys_net,
            spares,
            placement,
            pin_failure_logged: AtomicBool::new(false),
        })
    }

    pub fn version(&self) -> &RunscVersion {
        &self.version
    }

    pub fn config(&self) -> &GvisorConfig {
        &self.config
    }

    /// A `runsc --root <ours>` command, for subcommands that need no other global flags.
    pub fn runsc(&self) -> Command {
        let mut command = Command::new(&self.config.runsc);
        command.arg("--root").arg(&self.config.root_dir);
        command
    }

    /// Global flags for creating a sandbox; the same set is needed again to restore it.
    pub fn sandbox_flags(&self, spec: &SandboxSpec) -> Vec<OsString> {
        let mut overlay = OsString::from("root:dir=");
        overlay.push(overlay_dir(&spec.state_dir));
        let mut log = OsString::from("--log=");
        log.push(spec.state_dir.join("runsc.log"));
        // Go runtime crashes and panics of the sandbox land here (cheap; debug logs are not).
        let mut panic_log = OsString::from("--panic-log=");
        panic_log.push(spec.state_dir.join("runsc-panic.log"));
        let mut flags = vec![
            OsString::from("--root"),
            self.config.root_dir.clone().into_os_string(),
            OsString::from(format!("--platform={}", self.config.platform.as_str())),
            OsString::from("--network=sandbox"),
            // Lets checkpoints succeed with TCP connections open or in TIME_WAIT (module docs).
            OsString::from("--net-disconnect-ok"),
            OsString::from("--overlay2"),
            overlay,
            // Inside, nproc follows the vCPU quota (runsc rounds up to at least 2).
            OsString::from("--cpu-num-from-quota"),
            log,
            panic_log,
        ];
        if let Some(dir) = &self.config.debug_log_dir {
            // A trailing slash makes runsc create one file per command (boot, gofer, restore…).
            let mut debug_log = OsString::from("--debug-log=");
            debug_log.push(dir.join(spec.id.as_str()));
            debug_log.push("/");
            flags.push(OsString::from("--debug"));
            flags.push(debug_log);
            if self.config.strace {
                flags.push(OsString::from("--strace"));
            }
        }
        flags
    }

    /// Writes the sandbox's bundle (`config.json`) and overlay dir under its state dir; returns
    /// the bundle dir.
    pub fn write_bundle(&self, spec: &SandboxSpec) -> Result<PathBuf, RuntimeError> {
        let bundle = spec.state_dir.join("bundle");
        create_dir(&bundle)?;
        create_dir(&overlay_dir(&spec.state_dir))?;
        let config = oci_spec(spec)?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| RuntimeError::Spec(format!("serializing config.json: {e}")))?;
        let config_path = bundle.join("config.json");
        std::fs::write(&config_path, json).map_err(|source| RuntimeError::Io {
            action: "writing",
            path: config_path,
            source,
        })?;
        Ok(bundle)
    }

    /// `runsc` with [`Self::sandbox_flags`] (and the `/proc/sys/net` workaround when needed):
    /// append `run`/`restore` and their arguments.
    pub fn sandbox_command(&self, spec: &SandboxSpec) -> Command {
        let mut cmd = Command::new(&self.config.runsc);
        cmd.args(self.sandbox_flags(spec));
        if self.hide_proc_sys_net {
            hide_proc_sys_net(&mut cmd);
        }
        cmd
    }

    /// `runsc run` (no image) or `runsc restore` from `image`, detached.
    async fn launch(&self, spec: &SandboxSpec, image: Option<&Path>) -> Result<(), RuntimeError> {
        let bundle = self.write_bundle(spec)?;

        // Never a pipe: the sandbox inherits these and would hold a pipe open forever. Appended
        // on restore, so a resumed capsule keeps its earlier log.
        let console_path = console_log(&spec.state_dir);
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console_path)
            .map_err(|source| RuntimeError::Io {
                action: "creating",
                path: console_path.clone(),
                source,
            })?;
        let console_err = console.try_clone().map_err(|source| RuntimeError::Io {
            action: "duplicating",
            path: console_path.clone(),
            source,
        })?;

        let mut cmd = self.sandbox_command(spec);
        match image {
            Some(image) => cmd.arg("restore").arg("--image-path").arg(image),
            None => cmd.arg("run"),
        };
        cmd.arg("--detach")
            .arg("--bundle")
            .arg(&bundle)
            .arg(spec.id.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(console_err))
            .kill_on_drop(true);
        let line = command::CommandLine(&cmd).to_string();
        tracing::debug!(command = %line, "starting sandbox");
        let mut child = command::spawn(&mut cmd).map_err(|source| CommandError::Spawn {
            command: line.clone(),
            source,
        })?;
        let status = tokio::time::timeout(START_TIMEOUT, command::wait(&mut child)).await;
        let failure = match status {
            Ok(Ok(status)) if status.success() => {
                self.place_cpus(spec);
                return Ok(());
            }
            Ok(Ok(status)) => format!("runsc exited with {status}"),
            Ok(Err(e)) => format!("waiting for runsc: {e}"),
            Err(_) => format!("runsc did not finish within {START_TIMEOUT:?}"),
        };
        let console = std::fs::read(&console_path).unwrap_or_default();
        let id = spec.id.to_string();
        let reason = format!("{failure}: {}", command::truncate(&console));
        Err(match image {
            Some(_) => RuntimeError::RestoreFailed { id, reason },
            None => RuntimeError::StartFailed { id, reason },
        })
    }

    /// Pins a running sandbox to its own CPUs ([`super::cpu_placement`]). A failure only costs
    /// speed, so it is logged, not returned.
    pub fn place_cpus(&self, spec: &SandboxSpec) {
        let Some(placement) = &self.placement else {
            return;
        };
        match placement.place(&spec.id, spec.limits.vcpus) {
            Ok(Some(cpus)) => tracing::debug!(id = %spec.id, ?cpus, "sandbox pinned"),
            Ok(None) => {}
            Err(e) if !self.pin_failure_logged.swap(true, Ordering::Relaxed) => {
                tracing::warn!(id = %spec.id, error = %e, "pinning the sandbox to CPUs failed; capsules run unpinned (--cpu-pinning false silences this)")
            }
            Err(e) => tracing::debug!(id = %spec.id, error = %e, "pinning the sandbox to CPUs"),
        }
    }

    /// Runs `runsc checkpoint`; the sandbox is left stopped (success) or dead (failure).
    async fn run_checkpoint(&self, id: &CapsuleId, image_dir: &Path) -> Result<(), RuntimeError> {
        // runsc's output goes to an unlinked file in our root dir: not the image dir, whose
        // filesystem may be the very thing that failed (full disk), and never a pipe.
        let log_path = self
            .config
            .root_dir
            .join(format!(".checkpoint-{id}-{}.log", std::process::id()));
        let io = |action: &'static str| {
            let path = log_path.clone();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        let mut log = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(io("creating"))?;
        let _ = std::fs::remove_file(&log_path);
        let log_out = log.try_clone().map_err(io("duplicating"))?;
        let log_err = log.try_clone().map_err(io("duplicating"))?;
        let mut cmd = self.runsc();
        cmd.arg("checkpoint")
            .arg("--image-path")
            .arg(image_dir)
            .arg(id.as_str())
            // A file, not a pipe: runsc may hand its stdio to the sandbox (as --leave-running does).
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_out))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let line = command::CommandLine(&cmd).to_string();
        tracing::debug!(command = %line, "checkpointing sandbox");
        let mut child = command::spawn(&mut cmd).map_err(|source| CommandError::Spawn {
            command: line.clone(),
            source,
        })?;
        let failure =
            match tokio::time::timeout(CHECKPOINT_TIMEOUT, command::wait(&mut child)).await {
                Ok(Ok(status)) if status.success() => return Ok(()),
                Ok(Ok(status)) => format!("runsc exited with {status}"),
                Ok(Err(e)) => format!("waiting for runsc: {e}"),
                Err(_) => format!("runsc did not finish within {CHECKPOINT_TIMEOUT:?}"),
            };
        let mut output = String::new();
        {
            use std::io::{Read, Seek};
            if log.rewind().is_ok() {
                let _ = log.read_to_string(&mut output);
            }
        }
        Err(RuntimeError::CheckpointFailed {
            id: id.to_string(),
            reason: format!("{failure}: {}", checkpoint_failure_summary(&output)),
        })
    }
}

/// The useful part of a failed checkpoint's output: runsc prints the error, then a Go panic
/// trace of the sentry's encoder; keep the lines before the first goroutine dump.
fn checkpoint_failure_summary(output: &str) -> String {
    let summary: Vec<&str> = output
        .lines()
        .take_while(|l| !l.starts_with("goroutine "))
        .filter(|l| !l.trim().is_empty())
        .collect();
    command::truncate(summary.join("\n").as_bytes())
}

impl Runtime for GvisorRuntime {
    fn name(&self) -> &'static str {
        "gvisor"
    }

    /// The overlay filestore dir becomes a loop-mounted ext4 of the disk size: gVisor allocates
    /// the overlay's pages in that file, so writes past the size fail with ENOSPC inside the
    /// capsule and the sandbox keeps running (verified). See [`crate::disk`].
    async fn prepare_storage(&self, state_dir: &Path, disk_mb: u64) -> Result<(), RuntimeError> {
        Ok(disk::attach(&overlay_dir(state_dir), disk_mb, self.spares.as_ref()).await?)
    }

    async fn release_storage(&self, state_dir: &Path) -> Result<(), RuntimeError> {
        Ok(disk::detach(&overlay_dir(state_dir)).await?)
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<(), RuntimeError> {
        let result = self.launch(spec, None).await;
        if result.is_err() {
            // runsc may have registered the container before failing; leave nothing behind.
            if let Err(e) = self.destroy(&spec.id).await {
                tracing::warn!(id = %spec.id, error = %e, "cleanup after failed start");
            }
        }
        result
    }

    async fn destroy(&self, id: &CapsuleId) -> Result<(), RuntimeError> {
        let mut cmd = self.runsc();
        cmd.args(["delete", "--force", id.as_str()]);
        match command::output(cmd, None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn checkpoint(&self, id: &CapsuleId, image_dir: &Path) -> Result<(), RuntimeError> {
        // Success leaves a `stopped` container, failure a dead sandbox that runsc may still list
        // as running; the caller's destroy removes either.
        self.run_checkpoint(id, image_dir).await
    }

    async fn restore(&self, spec: &SandboxSpec, image_dir: &Path) -> Result<(), RuntimeError> {
        let mut result = self.launch(spec, Some(image_dir)).await;
        if let Err(RuntimeError::RestoreFailed { reason, .. }) = &result
            && reason.contains("already exists")
        {
            // A checkpointed container whose delete was lost (agent crash): remove it, retry.
            self.destroy(&spec.id).await?;
            result = self.launch(spec, Some(image_dir)).await;
        }
        if result.is_err()
            && let Err(e) = self.destroy(&spec.id).await
        {
            tracing::warn!(id = %spec.id, error = %e, "cleanup after failed restore");
        }
        result
    }

    async fn state(&self, id: &CapsuleId) -> Result<Option<SandboxInfo>, RuntimeError> {
        let mut cmd = self.runsc();
        cmd.args(["state", id.as_str()]);
        match command::output(cmd, None).await {
            Ok(stdout) => parse_state(&stdout).map(Some),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn console_log(&self, state_dir: &Path) -> PathBuf {
        console_log(state_dir)
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let mut cmd = self.runsc();
        cmd.args(["list", "--format=json"]);
        parse_list(&command::output(cmd, None).await?)
    }

    async fn reclaim(&self) -> Result<usize, RuntimeError> {
        let sandboxes = self.list().await?;
        for sandbox in &sandboxes {
            let mut cmd = self.runsc();
            cmd.args(["delete", "--force", &sandbox.id]);
            if let Err(e) = command::output(cmd, None).await
                && !is_not_found(&e)
            {
                return Err(e.into());
            }
            tracing::info!(id = %sandbox.id, "reclaimed leftover sandbox");
        }
        remove_cgroup_leftovers();
        Ok(sandboxes.len())
    }
}

fn overlay_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("overlay")
}

/// envd's stdout/stderr and runsc's own startup errors.
pub fn console_log(state_dir: &Path) -> PathBuf {
    state_dir.join("console.log")
}

/// Parent cgroup of every sandbox, under each controller hierarchy.
const CGROUP_PARENT: &str = "wrenn";

fn cgroups_path(id: &CapsuleId) -> PathBuf {
    PathBuf::from(format!("/{CGROUP_PARENT}/{id}"))
}

/// Removes empty per-sandbox cgroups that a crashed runsc left under `/sys/fs/cgroup/*/wrenn`.
fn remove_cgroup_leftovers() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut candidates = vec![PathBuf::from("/sys/fs/cgroup").join(CGROUP_PARENT)];
    candidates.extend(hierarchies.flatten().map(|h| h.path().join(CGROUP_PARENT)));
    for parent in candidates {
        let Ok(children) = std::fs::read_dir(&parent) else {
            continue;
        };
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            // rmdir fails on cgroups that still hold processes; those are not leftovers.
            let _ = std::fs::remove_dir(child.path());
        }
    }
}

/// runsc's wording for an unknown container id.
fn is_not_found(error: &CommandError) -> bool {
    let stderr = error.stderr();
    stderr.contains("does not exist") || stderr.contains("cannot load container")
}

fn create_dir(path: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(path).map_err(|source| RuntimeError::Io {
        action: "creating",
        path: path.to_owned(),
        source,
    })
}

/// Runs the command in a private mount namespace where `/proc/sys/net` is an empty read-only
/// tmpfs, so runsc's root-netns check cannot misfire (module docs).
fn hide_proc_sys_net(cmd: &mut Command) {
    // Allocated before fork: only raw syscalls run in the child.
    let (Ok(root), Ok(target), Ok(tmpfs), Ok(options)) = (
        CString::new("/"),
        CString::new("/proc/sys/net"),
        CString::new("tmpfs"),
        CString::new("size=4k,mode=0555"),
    ) else {
        return;
    };
    // SAFETY: the closure only calls async-signal-safe syscalls (unshare, mount) on
    // pre-allocated C strings, as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                options.as_ptr().cast(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Capabilities of envd (root) inside the sandbox. They are enforced by gVisor's kernel, not the
/// host's, so root in a capsule gets what root in a VM would need for everyday work.
const CAPABILITIES: &[Capability] = &[
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::Kill,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysChroot,
    Capability::SysNice,
    Capability::SysPtrace,
    Capability::SysResource,
];

fn spec_error(e: oci_spec::OciSpecError) -> RuntimeError {
    RuntimeError::Spec(e.to_string())
}

/// The OCI runtime configuration (`config.json`) of one sandbox.
pub fn oci_spec(spec: &SandboxSpec) -> Result<Spec, RuntimeError> {
    validate(spec)?;
    let caps: HashSet<Capability> = CAPABILITIES.iter().copied().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(spec_error)?;
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(OPEN_FILES_LIMIT)
        .hard(OPEN_FILES_LIMIT)
        .build()
        .map_err(spec_error)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(0u32)
                .gid(0u32)
                .build()
                .map_err(spec_error)?,
        )
        .args(spec.init_args.clone())
        .env(spec.init_env.clone())
        .cwd("/")
        .capabilities(capabilities)
        .rlimits(vec![nofile])
        .no_new_privileges(false)
        .build()
        .map_err(spec_error)?;
    let root = RootBuilder::default()
        .path(&spec.rootfs)
        .readonly(false)
        .build()
        .map_err(spec_error)?;

    let mut mounts = base_mounts()?;
    for file in &spec.files {
        mounts.push(
            MountBuilder::default()
                .destination(&file.guest)
                .typ("bind")
                .source(&file.host)
                .options(vec!["bind".to_owned(), "rw".to_owned()])
                .build()
                .map_err(spec_error)?,
        );
    }

    let namespace = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    let namespaces = vec![
        namespace(LinuxNamespaceType::Pid).map_err(spec_error)?,
        namespace(LinuxNamespaceType::Ipc).map_err(spec_error)?,
        namespace(LinuxNamespaceType::Uts).map_err(spec_error)?,
        namespace(LinuxNamespaceType::Mount).map_err(spec_error)?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(&spec.netns)
            .build()
            .map_err(spec_error)?,
    ];
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(spec.limits)?)
        .cgroups_path(cgroups_path(&spec.id))
        .build()
        .map_err(spec_error)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .hostname(spec.hostname.clone())
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_error)
}

fn validate(spec: &SandboxSpec) -> Result<(), RuntimeError> {
    let absolute = |what: &str, path: &Path| {
        if path.is_absolute() {
            Ok(())
        } else {
            Err(RuntimeError::Spec(format!(
                "{what} must be an absolute path, got {}",
                path.display()
            )))
        }
    };
    absolute("rootfs", &spec.rootfs)?;
    absolute("state dir", &spec.state_dir)?;
    absolute("netns", &spec.netns)?;
    for file in &spec.files {
        absolute("mount source", &file.host)?;
        absolute("mount destination", &file.guest)?;
    }
    match spec.init_args.first() {
        Some(argv0) if argv0.starts_with('/') => {}
        _ => {
            return Err(RuntimeError::Spec(
                "init needs an absolute argv[0]".to_owned(),
            ));
        }
    }
    if spec.limits.vcpus == 0 || spec.limits.memory_mb == 0 {
        return Err(RuntimeError::Spec(format!(
            "limits must be positive: {:?}",
            spec.limits
        )));
    }
    Ok(())
}

fn resources(limits: Limits) -> Result<oci_spec::runtime::LinuxResources, RuntimeError> {
    let quota = i64::from(limits.vcpus) * CPU_PERIOD_US as i64;
    let memory_bytes = i64::try_from(limits.memory_mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1024 * 1024))
        .ok_or_else(|| RuntimeError::Spec(format!("memory {} MiB too large", limits.memory_mb)))?;
    LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(spec_error)?,
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(memory_bytes)
                .build()
                .map_err(spec_error)?,
        )
        .build()
        .map_err(spec_error)
}

/// /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and a read-only /sys. No host cgroupfs:
/// gVisor serves its own.
fn base_mounts() -> Result<Vec<Mount>, RuntimeError> {
    let mount = |destination: &str, typ: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(typ)
            .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
            .build()
            .map_err(spec_error)
    };
    Ok(vec![
        mount("/proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", &["nosuid", "strictatime", "mode=755"])?,
        mount(
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777"],
        )?,
        mount("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ])
}

#[derive(serde::Deserialize)]
struct RunscState {
    id: String,
    status: String,
    #[serde(default)]
    pid: i64,
}

fn to_info(state: RunscState) -> Result<SandboxInfo, RuntimeError> {
    let status = match state.status.as_str() {
        "creating" => SandboxStatus::Creating,
        "created" => SandboxStatus::Created,
        "running" => SandboxStatus::Running,
        "paused" => SandboxStatus::Paused,
        "stopped" => SandboxStatus::Stopped,
        other => {
            return Err(RuntimeError::Parse(format!(
                "unknown sandbox status {other:?}"
            )));
        }
    };
    Ok(SandboxInfo {
        id: state.id,
        status,
        pid: u32::try_from(state.pid).ok().filter(|&p| p > 0),
    })
}

fn parse_state(stdout: &[u8]) -> Result<SandboxInfo, RuntimeError> {
    let state: RunscState = serde_json::from_slice(stdout)
        .map_err(|e| RuntimeError::Parse(format!("runsc state: {e}")))?;
    to_info(state)
}

fn parse_list(stdout: &[u8]) -> Result<Vec<SandboxInfo>, RuntimeError> {
    // An empty root prints `null`.
    let states: Option<Vec<RunscState>> = serde_json::from_slice(stdout)
        .map_err(|e| RuntimeError::Parse(format!("runsc list: {e}")))?;
    states
        .unwrap_or_default()
        .into_iter()
        .map(to_info)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::FileMount;

    fn sample_spec() -> SandboxSpec {
        SandboxSpec {
            id: CapsuleId::from_u128(7),
            rootfs: PathBuf::from("/data/images/minimal/rootfs"),
            state_dir: PathBuf::from("/data/capsules/cl-0000000000000000000000007"),
            netns: PathBuf::from("/run/netns/wrenn-ns-3"),
            limits: Limits {
                vcpus: 2,
                memory_mb: 512,
                disk_mb: 1024,
            },
            init_args: vec![
                "/usr/local/bin/envd".into(),
                "--port".into(),
                "49983".into(),
            ],
            init_env: vec!["PATH=/usr/bin:/bin".into()],
            files: vec![FileMount {
                host: PathBuf::from("/data/capsules/x/etc/resolv.conf"),
                guest: PathBuf::from("/etc/resolv.conf"),
            }],
            hostname: "capsule".into(),
        }
    }

    #[test]
    fn parses_debian_and_upstream_versions() {
        let debian = parse_runsc_version("runsc version 0.0~20240729.0\nspec: 1.2.0\n").unwrap();
        assert_eq!(debian.date, 20240729);
        assert_eq!(debian.raw, "0.0~20240729.0");
        let upstream =
            parse_runsc_version("runsc version release-20250512.0\nspec: 1.1.0").unwrap();
        assert_eq!(upstream.date, 20250512);
        let old = parse_runsc_version("runsc version 0.0~20221219.0").unwrap();
        assert!(old.date < MIN_RUNSC_DATE);
        assert_eq!(parse_runsc_version("runsc version unknown"), None);
        assert_eq!(parse_runsc_version(""), None);
        // Nine digits is not a date.
        assert_eq!(parse_runsc_version("runsc version 202407290"), None);
    }

    #[test]
    fn workaround_only_for_old_runsc_on_new_kernels() {
        let old = parse_runsc_version("runsc version 0.0~20240729.0").unwrap();
        let new = parse_runsc_version("runsc version release-20240807.0").unwrap();
        assert_eq!(parse_kernel_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert!(needs_proc_sys_net_workaround(&old, Some((6, 1))));
        assert!(!needs_proc_sys_net_workaround(&old, Some((5, 10))));
        assert!(!needs_proc_sys_net_workaround(&new, Some((6, 18))));
    }

    #[test]
    fn oci_spec_has_envd_init_netns_limits_and_mounts() {
        let spec = sample_spec();
        let json = serde_json::to_value(oci_spec(&spec).unwrap()).unwrap();
        assert_eq!(json["root"]["path"], "/data/images/minimal/rootfs");
        assert_eq!(json["root"]["readonly"], false);
        assert_eq!(json["hostname"], "capsule");
        assert_eq!(
            json["process"]["args"],
            serde_json::json!(["/usr/local/bin/envd", "--port", "49983"])
        );
        assert_eq!(json["process"]["user"]["uid"], 0);
        assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
        let net = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ns| ns["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/netns/wrenn-ns-3");
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 200_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(
            json["linux"]["resources"]["memory"]["limit"],
            512 * 1024 * 1024
        );
        assert_eq!(
            json["linux"]["cgroupsPath"],
            "/wrenn/cl-0000000000000000000000007"
        );
        let mounts = json["mounts"].as_array().unwrap();
        let resolv = mounts
            .iter()
            .find(|m| m["destination"] == "/etc/resolv.conf")
            .unwrap();
        assert_eq!(resolv["type"], "bind");
        assert_eq!(resolv["source"], "/data/capsules/x/etc/resolv.conf");
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
        assert!(!mounts.iter().any(|m| m["destination"] == "/sys/fs/cgroup"));
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"));
    }

    #[test]
    fn oci_spec_rejects_relative_paths_and_zero_limits() {
        let mut spec = sample_spec();
        spec.rootfs = PathBuf::from("images/minimal/rootfs");
        assert!(matches!(oci_spec(&spec), Err(RuntimeError::Spec(_))));
        let mut spec = sample_spec();
        spec.limits.memory_mb = 0;
        assert!(matches!(oci_spec(&spec), Err(RuntimeError::Spec(_))));
        let mut spec = sample_spec();
        spec.init_args = vec!["envd".into()];
        assert!(matches!(oci_spec(&spec), Err(RuntimeError::Spec(_))));
    }

    #[test]
    fn checkpoint_failure_keeps_the_error_not_the_trace() {
        let output = "checkpoint failed: encoding error: save rejected due to unsupported networking state\ngoroutine 234 [running]:\ngvisor.dev/gvisor/pkg/state.safely.func1()\n";
        assert_eq!(
            checkpoint_failure_summary(output),
            "checkpoint failed: encoding error: save rejected due to unsupported networking state"
        );
    }

    #[test]
    fn parses_state_and_list() {
        let state = parse_state(
            br#"{"ociVersion":"1.2.0","id":"cl-0000000000000000000000007","status":"running","pid":4242,"bundle":"/b"}"#,
        )
        .unwrap();
        assert_eq!(state.status, SandboxStatus::Running);
        assert_eq!(state.pid, Some(4242));
        let stopped = parse_state(br#"{"id":"x","status":"stopped","pid":-1}"#).unwrap();
        assert_eq!(stopped.pid, None);
        assert!(parse_list(b"null\n").unwrap().is_empty());
        assert_eq!(
            parse_list(br#"[{"id":"a","status":"created","pid":1}]"#)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_state(br#"{"id":"x","status":"weird"}"#).is_err());
    }

    #[test]
    fn sandbox_flags_put_overlay_and_logs_in_the_capsule_dir() {
        let runtime = GvisorRuntime {
            config: GvisorConfig::new("/data/runsc"),
            version: parse_runsc_version("runsc version 0.0~20240729.0").unwrap(),
            hide_proc_sys_net: true,
            spares: None,
            placement: None,
            pin_failure_logged: AtomicBool::new(false),
        };
        let flags: Vec<String> = runtime
            .sandbox_flags(&sample_spec())
            .into_iter()
            .map(|f| f.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&flags[..2], ["--root", "/data/runsc"]);
        assert!(flags.contains(&"--platform=systrap".to_owned()));
        assert!(flags.contains(&"--network=sandbox".to_owned()));
        assert!(flags.contains(&"--net-disconnect-ok".to_owned()));
        assert!(
            flags.contains(
                &"root:dir=/data/capsules/cl-0000000000000000000000007/overlay".to_owned()
            )
        );
    }
}
