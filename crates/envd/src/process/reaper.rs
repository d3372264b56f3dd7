//! The only place in envd that waits for children.
//!
//! envd may be PID 1 (and is a child subreaper otherwise), so orphans get
//! reparented to it and must be reaped. A `waitpid(-1)` loop would steal the
//! statuses of children someone else waits for, so every child envd starts is
//! started through [`Reaper::track`] and its status is routed back to it here;
//! statuses of untracked pids (orphans) are discarded. Nothing else in envd may
//! call `Child::wait`/`output`/`status` or use `tokio::process`.

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// How a tracked child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    fn from_raw(status: libc::c_int) -> Option<Self> {
        if libc::WIFEXITED(status) {
            Some(Self::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Self::Signal {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }
}

pub struct Reaper {
    /// pid → where its status goes. Reaping happens only while this lock is
    /// held, and spawning holds it across fork+exec, so a child can never be
    /// reaped before it is registered (nor can std's own wait on a failed exec
    /// be raced).
    tracked: Mutex<Table>,
    /// Wakes the reaper whenever the lock is released, in case a SIGCHLD
    /// arrived while it was held (the reaper never blocks on it).
    kick: Notify,
}

impl Reaper {
    /// Creates the reaper and its task. Must run inside the tokio runtime,
    /// before any child is started.
    pub fn start() -> Arc<Self> {
        if std::process::id() != 1 {
            // Orphans of our processes come back to us instead of to init.
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                tracing::warn!(error = %e, "PR_SET_CHILD_SUBREAPER failed");
            }
        }
        let reaper = Arc::new(Self {
            tracked: Mutex::new(HashMap::new()),
            kick: Notify::new(),
        });
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child());
        let task = Arc::clone(&reaper);
        tokio::spawn(async move {
            match sigchld {
                Ok(mut sigchld) => loop {
                    tokio::select! {
                        _ = sigchld.recv() => {}
                        () = task.kick.notified() => {}
                    }
                    task.reap();
                },
                Err(e) => {
                    // Practically impossible; polling keeps children from piling up.
                    tracing::error!(error = %e, "cannot watch SIGCHLD; polling for exits");
                    let mut tick = tokio::time::interval(Duration::from_millis(50));
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            () = task.kick.notified() => {}
                        }
                        task.reap();
                    }
                }
            }
        });
        reaper
    }

    /// Locks the table; the reaper is kicked once the lock is released, since
    /// a SIGCHLD that arrived meanwhile found it taken.
    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: ManuallyDrop::new(self.tracked.lock().unwrap_or_else(|e| e.into_inner())),
            kick: &self.kick,
        }
    }

    /// Runs `start` (which creates a child and returns its pid) with the
    /// table locked, registering the child before anything can reap it. Its
    /// status arrives on the receiver.
    pub fn track(
        &self,
        start: impl FnOnce() -> std::io::Result<libc::pid_t>,
    ) -> std::io::Result<(libc::pid_t, oneshot::Receiver<ExitStatus>)> {
        let mut tracked = self.lock();
        let pid = start()?;
        let (tx, rx) = oneshot::channel();
        tracked.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Sends `signal` to a tracked child. Returns false if it was already
    /// reaped, so a recycled pid is never signalled by mistake.
    pub fn signal(&self, pid: u32, signal: Signal) -> nix::Result<bool> {
        let tracked = self.lock();
        if !tracked.contains_key(&(pid as i32)) {
            return Ok(false);
        }
        match nix::sys::signal::kill(Pid::from_raw(pid as i32), signal) {
            Ok(()) => Ok(true),
            // Exited but not reaped yet: as good as gone.
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal` to every tracked child; returns how many were signalled.
    pub fn signal_all(&self, signal: Signal) -> usize {
        let tracked = self.lock();
        tracked
            .keys()
            .filter(|pid| nix::sys::signal::kill(Pid::from_raw(**pid), signal).is_ok())
            .count()
    }

    pub fn tracked_count(&self) -> usize {
        self.lock().len()
    }

    fn reap(&self) {
        let mut tracked = match self.tracked.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            // A spawn is in progress; it kicks us when done.
            Err(TryLockError::WouldBlock) => return,
        };
        loop {
            let mut raw: libc::c_int = 0;
            // SAFETY: plain syscall with a valid out-pointer. libc directly
            // (not nix) because nix rejects real-time signal numbers and the
            // status would be lost after the child was already reaped.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid == 0 {
                return;
            }
            if pid < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    _ => return, // ECHILD: nothing left to reap
                }
            }
            let Some(status) = ExitStatus::from_raw(raw) else {
                continue;
            };
            match tracked.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => tracing::debug!(pid, ?status, "reaped orphan"),
            }
        }
    }
}

type Table = HashMap<i32, oneshot::Sender<ExitStatus>>;

struct Locked<'a> {
    guard: ManuallyDrop<MutexGuard<'a, Table>>,
    kick: &'a Notify,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here, and never touched afterwards.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        self.kick.notify_one();
    }
}
