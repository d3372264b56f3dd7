//! The isolation runtime behind a capsule.
//!
//! A runtime turns a template root filesystem, limits and a prepared network namespace into a
//! running sandbox whose init is envd. gVisor (`runsc`) implements it today; a Firecracker runtime
//! will implement the same trait (rootfs → CoW block device, netns → TAP inside it).
//!
//! Pause/resume and snapshot templates are [`Runtime::checkpoint`] and [`Runtime::restore`]: a
//! checkpoint writes *everything* the runtime needs to bring the sandbox back (memory, processes,
//! the capsule's writable layer) into one opaque image directory, except the template rootfs it was
//! started on; a restore starts a sandbox from that image with a fresh [`SandboxSpec`] (new
//! netns, state dir, file mounts, possibly a new id). gVisor keeps its overlay upper layer inside
//! the checkpoint image; Firecracker would write its snapshot file, memory file and the CoW disk
//! into the image dir, and load them into a fresh VMM whose TAP lives in the spec's netns.
//!
//! The trait uses `impl Future` returns rather than `dyn`: the agent is generic over its runtime
//! (one per host, chosen at startup), which keeps the futures `Send` without boxing.

pub mod cpu_placement;
pub mod gvisor;

use crate::command::CommandError;
use crate::id::CapsuleId;
use std::future::Future;
use std::path::{Path, PathBuf};

/// Resource limits of one capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub vcpus: u32,
    pub memory_mb: u64,
    /// Cap of the capsule's writable layer (see [`Runtime::prepare_storage`]).
    pub disk_mb: u64,
}

/// A host file made visible at a path inside the capsule (resolv.conf, hosts, hostname).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub host: PathBuf,
    pub guest: PathBuf,
}

/// Everything a runtime needs to start one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub id: CapsuleId,
    /// The template's root filesystem; the runtime must never write to it.
    pub rootfs: PathBuf,
    /// A directory owned by this capsule alone, for the runtime's bundle, logs and CoW layer.
    pub state_dir: PathBuf,
    /// Path of the network namespace prepared by [`crate::network`].
    pub netns: PathBuf,
    pub limits: Limits,
    /// The init process: argv (argv[0] is an absolute path inside the rootfs) and environment.
    pub init_args: Vec<String>,
    pub init_env: Vec<String>,
    pub files: Vec<FileMount>,
    pub hostname: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub status: SandboxStatus,
    /// Host pid of the sandbox process, when it has one.
    pub pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "{runtime} {found} is too old: Wrenn needs {required} or newer (run scripts/install-runsc.sh)"
    )]
    UnsupportedVersion {
        runtime: &'static str,
        found: String,
        required: String,
    },
    #[error("cannot determine the {runtime} version from {output:?}")]
    UnknownVersion {
        runtime: &'static str,
        output: String,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("sandbox {id} failed to start: {reason}")]
    StartFailed { id: String, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox is gone after this (gVisor kills it on a failed checkpoint).
    #[error("checkpoint of sandbox {id} failed (sandbox lost): {reason}")]
    CheckpointFailed { id: String, reason: String },
    #[error("restoring sandbox {id} failed: {reason}")]
    RestoreFailed { id: String, reason: String },
    #[error("invalid sandbox spec: {0}")]
    Spec(String),
    #[error("unexpected runtime output: {0}")]
    Parse(String),
    #[error("capsule disk: {0}")]
    Disk(#[from] crate::disk::DiskError),
}

pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs and errors ("gvisor").
    fn name(&self) -> &'static str;

    /// Sets up the capsule's writable storage in `state_dir`, capped at `disk_mb`, before a
    /// [`Runtime::start`] or [`Runtime::restore`] with that state dir. It does not depend on the
    /// network, so callers run both at once. Undone by [`Runtime::release_storage`] (and by
    /// [`crate::capsule::remove_dir`] as a safety net).
    fn prepare_storage(
        &self,
        state_dir: &Path,
        disk_mb: u64,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Frees what [`Runtime::prepare_storage`] set up; the sandbox must be gone.
    fn release_storage(
        &self,
        state_dir: &Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates and starts a sandbox; on error nothing of it is left running.
    fn start(&self, spec: &SandboxSpec) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops and removes a sandbox; succeeds when it does not exist.
    fn destroy(&self, id: &CapsuleId) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Saves the sandbox's complete state into the (existing, empty) `image_dir` and stops it.
    /// On success and on error alike nothing of the sandbox keeps running, but its record may
    /// remain: call [`Runtime::destroy`] afterwards (it may run concurrently with the network
    /// teardown). Callers must treat an error as the capsule's loss (gVisor kills a sandbox whose
    /// checkpoint fails).
    fn checkpoint(
        &self,
        id: &CapsuleId,
        image_dir: &Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Starts `spec.id` from a checkpoint image written by [`Runtime::checkpoint`] (of this or
    /// another sandbox: one image may be restored many times at once). `spec.rootfs` must be the
    /// rootfs the checkpointed sandbox ran on; limits should match. The restored sandbox uses the
    /// address already configured in `spec.netns`. The image is only read. On error nothing of
    /// the new sandbox is left.
    fn restore(
        &self,
        spec: &SandboxSpec,
        image_dir: &Path,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The sandbox's state, or `None` when the runtime does not know it.
    fn state(
        &self,
        id: &CapsuleId,
    ) -> impl Future<Output = Result<Option<SandboxInfo>, RuntimeError>> + Send;

    /// Where the sandbox's init (envd) writes its stdout/stderr, for error reports.
    fn console_log(&self, state_dir: &Path) -> PathBuf;

    /// Every sandbox this runtime instance manages.
    fn list(&self) -> impl Future<Output = Result<Vec<SandboxInfo>, RuntimeError>> + Send;

    /// Removes every sandbox (and runtime leftovers) after a crash; returns how many were removed.
    fn reclaim(&self) -> impl Future<Output = Result<usize, RuntimeError>> + Send;
}
