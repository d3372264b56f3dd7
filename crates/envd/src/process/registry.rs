//! Running processes by pid and tag, plus a bounded cache of recently
//! finished ones so `Connect` can still report how they ended.

use super::error::ProcessError;
use super::output::{End, Hub};
use super::pty;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use wrenn_proto::process::ProcessConfig;
use wrenn_proto::process::process_selector::Selector;

/// Finished processes remembered for `Connect`: at most this many …
const FINISHED_CAPACITY: usize = 1024;
/// … for at most this long.
const FINISHED_TTL: Duration = Duration::from_secs(15 * 60);

/// How input reaches a process.
pub enum Input {
    /// `None` when stdin was disabled at start or has been closed since.
    Pipe {
        enabled: bool,
        writer: tokio::sync::Mutex<Option<pipe::Sender>>,
    },
    Pty(Arc<pty::Master>),
}

pub struct Proc {
    pub pid: u32,
    pub tag: Option<String>,
    /// As requested (cwd resolved), reported by `List`.
    pub config: ProcessConfig,
    pub hub: Hub,
    pub input: Input,
    seq: u64,
}

impl Proc {
    pub fn new(pid: u32, tag: Option<String>, config: ProcessConfig, input: Input) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        Self {
            pid,
            tag,
            config,
            hub: Hub::default(),
            input,
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn pty(&self) -> Option<&Arc<pty::Master>> {
        match &self.input {
            Input::Pty(m) => Some(m),
            Input::Pipe { .. } => None,
        }
    }

    /// Writes to stdin (or to the terminal of a PTY process).
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ProcessError> {
        match &self.input {
            Input::Pty(master) => write_pty(self.pid, master, data).await,
            Input::Pipe { enabled, writer } => {
                let mut writer = writer.lock().await;
                let Some(w) = writer.as_mut() else {
                    return Err(ProcessError::FailedPrecondition(if *enabled {
                        format!("stdin of process {} is closed", self.pid)
                    } else {
                        format!("process {} was started without stdin", self.pid)
                    }));
                };
                let result = match w.write_all(data).await {
                    Ok(()) => w.flush().await,
                    Err(e) => Err(e),
                };
                result.map_err(|e| match e.kind() {
                    std::io::ErrorKind::BrokenPipe => ProcessError::FailedPrecondition(format!(
                        "process {} closed its stdin",
                        self.pid
                    )),
                    _ => ProcessError::io(format!("writing to stdin of process {}", self.pid), e),
                })
            }
        }
    }

    pub async fn write_pty(&self, data: &[u8]) -> Result<(), ProcessError> {
        match &self.input {
            Input::Pty(master) => write_pty(self.pid, master, data).await,
            Input::Pipe { .. } => Err(ProcessError::FailedPrecondition(format!(
                "process {} has no pty; send stdin instead",
                self.pid
            ))),
        }
    }

    /// Sends EOF. Idempotent; a PTY has no separate stdin to close.
    pub async fn close_stdin(&self) -> Result<(), ProcessError> {
        match &self.input {
            Input::Pty(_) => Err(ProcessError::FailedPrecondition(format!(
                "process {} runs in a pty; send Ctrl-D (0x04) as pty input instead",
                self.pid
            ))),
            Input::Pipe { enabled: false, .. } => Err(ProcessError::FailedPrecondition(format!(
                "process {} was started without stdin",
                self.pid
            ))),
            Input::Pipe { writer, .. } => {
                writer.lock().await.take();
                Ok(())
            }
        }
    }

    /// Drops the stdin pipe once the process is gone.
    pub fn release_stdin(&self) {
        if let Input::Pipe { writer, .. } = &self.input
            && let Ok(mut w) = writer.try_lock()
        {
            w.take();
        }
    }
}

async fn write_pty(pid: u32, master: &pty::Master, data: &[u8]) -> Result<(), ProcessError> {
    master
        .write_all(data)
        .await
        .map_err(|e| ProcessError::io(format!("writing to the pty of process {pid}"), e))
}

struct Finished {
    pid: u32,
    tag: Option<String>,
    end: End,
    at: Instant,
}

pub enum Found {
    Running(Arc<Proc>),
    Finished { pid: u32, end: End },
}

#[derive(Default)]
pub struct Registry {
    running: Mutex<HashMap<u32, Arc<Proc>>>,
    finished: Mutex<VecDeque<Finished>>,
}

fn describe(selector: &Selector) -> String {
    match selector {
        Selector::Pid(pid) => format!("process with pid {pid} not found"),
        Selector::Tag(tag) => format!("process with tag '{tag}' not found"),
    }
}

impl Registry {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, VecDeque<Finished>> {
        let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        while f.front().is_some_and(|e| e.at.elapsed() > FINISHED_TTL) {
            f.pop_front();
        }
        f
    }

    pub fn insert(&self, proc: Arc<Proc>) {
        // A recycled pid makes the old finished entry meaningless.
        self.finished().retain(|f| f.pid != proc.pid);
        self.running().insert(proc.pid, proc);
    }

    /// Moves a process to the finished cache.
    pub fn finish(&self, proc: &Arc<Proc>, end: End) {
        {
            let mut running = self.running();
            // The pid may already belong to a newer process (reaped pids are
            // reusable at once); leave that one alone.
            if running.get(&proc.pid).is_some_and(|p| Arc::ptr_eq(p, proc)) {
                running.remove(&proc.pid);
            }
        }
        let pid = proc.pid;
        let mut finished = self.finished();
        if finished.len() >= FINISHED_CAPACITY {
            finished.pop_front();
        }
        finished.push_back(Finished {
            pid,
            tag: proc.tag.clone(),
            end,
            at: Instant::now(),
        });
    }

    /// Running processes, oldest first.
    pub fn list(&self) -> Vec<Arc<Proc>> {
        let mut procs: Vec<_> = self.running().values().cloned().collect();
        procs.sort_by_key(|p| p.seq);
        procs
    }

    pub fn running_count(&self) -> usize {
        self.running().len()
    }

    /// A running process; for a tag, the oldest one carrying it.
    pub fn get_running(&self, selector: &Selector) -> Result<Arc<Proc>, ProcessError> {
        let running = self.running();
        let found = match selector {
            Selector::Pid(pid) => running.get(pid).cloned(),
            Selector::Tag(tag) => running
                .values()
                .filter(|p| p.tag.as_deref() == Some(tag.as_str()))
                .min_by_key(|p| p.seq)
                .cloned(),
        };
        found.ok_or_else(|| ProcessError::NotFound(describe(selector)))
    }

    /// A running process, or else the most recent finished one.
    pub fn find(&self, selector: &Selector) -> Result<Found, ProcessError> {
        if let Ok(proc) = self.get_running(selector) {
            return Ok(Found::Running(proc));
        }
        self.finished()
            .iter()
            .rev()
            .find(|f| match selector {
                Selector::Pid(pid) => f.pid == *pid,
                Selector::Tag(tag) => f.tag.as_deref() == Some(tag.as_str()),
            })
            .map(|f| Found::Finished {
                pid: f.pid,
                end: f.end.clone(),
            })
            .ok_or_else(|| ProcessError::NotFound(describe(selector)))
    }
}
