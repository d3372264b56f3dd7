//! Makes the agent a child subreaper and reaps the runsc processes it adopts.
//!
//! `runsc run --detach` exits after starting the sandbox; the sandbox and gofer processes are then
//! re-parented to the nearest subreaper. Without one they go to the host's init, and when nobody
//! reaps their exited helpers promptly, `runsc kill/delete` takes 1-2 s instead of ~0.1 s.
//!
//! Commands the agent spawns itself are reaped by tokio (`Child::wait`), so the reaper must never
//! `waitpid(-1)`: it would steal their exit status. Instead [`spawn`](crate::command) registers
//! each pid under a read lock and the reaper, holding the write lock, only waits on children that
//! are not registered (i.e. adopted ones).

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

static SPAWN_LOCK: RwLock<()> = RwLock::new(());
static MANAGED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("cannot become a child subreaper: {0}")]
pub struct ReaperError(String);

/// Sets `PR_SET_CHILD_SUBREAPER` and starts the reaping thread; later calls are no-ops.
pub fn install() -> Result<(), ReaperError> {
    INSTALLED
        .get_or_init(|| {
            // SAFETY: prctl with integer arguments has no memory-safety preconditions.
            let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            std::thread::Builder::new()
                .name("wrenn-reaper".into())
                .spawn(reap_loop)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(ReaperError)
}

/// Runs `spawn` so the resulting child cannot be reaped by the reaper thread before it is
/// registered; returns the spawn result. The caller must call [`unregister`] after waiting.
pub(crate) fn spawn_registered<T>(
    spawn: impl FnOnce() -> std::io::Result<T>,
    pid_of: impl FnOnce(&T) -> Option<u32>,
) -> std::io::Result<T> {
    let _guard = SPAWN_LOCK.read().unwrap_or_else(|e| e.into_inner());
    let child = spawn()?;
    if let Some(pid) = pid_of(&child) {
        lock_managed()
            .get_or_insert_with(HashSet::new)
            .insert(pid as i32);
    }
    Ok(child)
}

pub(crate) fn unregister(pid: u32) {
    if let Some(set) = lock_managed().as_mut() {
        set.remove(&(pid as i32));
    }
}

fn lock_managed() -> std::sync::MutexGuard<'static, Option<HashSet<i32>>> {
    MANAGED.lock().unwrap_or_else(|e| e.into_inner())
}

fn reap_loop() {
    let me = std::process::id();
    loop {
        std::thread::sleep(POLL_INTERVAL);
        reap_adopted(me);
    }
}

fn reap_adopted(me: u32) {
    let _guard = SPAWN_LOCK.write().unwrap_or_else(|e| e.into_inner());
    let children = children_of(me);
    let managed = lock_managed().clone().unwrap_or_default();
    for pid in children.into_iter().filter(|pid| !managed.contains(pid)) {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(status) => tracing::debug!(pid, ?status, "reaped adopted process"),
        }
    }
}

/// Direct children of this process, from `/proc/<pid>/task/<tid>/children` of every thread.
fn children_of(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    children
}
