//! Polling watchers (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`):
//! a background task per watcher buffers its events until they are drained.

use super::error::FsError;
use super::watch::DirWatcher;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::AbortHandle;
use wrenn_proto::filesystem::FilesystemEvent;

/// Events kept per watcher between drains; older ones are dropped beyond it.
const MAX_BUFFERED: usize = 10_000;

#[derive(Default)]
struct Buffer {
    events: VecDeque<FilesystemEvent>,
    dropped: u64,
    /// Why the watcher stopped, if it failed.
    error: Option<String>,
}

struct Polled {
    buffer: Arc<Mutex<Buffer>>,
    task: AbortHandle,
}

#[derive(Default)]
pub struct Registry {
    watchers: Mutex<HashMap<String, Polled>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a holder panicked; the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// Starts buffering `watcher`'s events; returns the new watcher's id.
    pub fn add(&self, mut watcher: DirWatcher) -> String {
        let id = new_id();
        let buffer = Arc::new(Mutex::new(Buffer::default()));
        let sink = Arc::clone(&buffer);
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            loop {
                match watcher.next().await {
                    Ok(Some(event)) => {
                        let mut b = lock(&sink);
                        if b.events.len() >= MAX_BUFFERED {
                            b.events.pop_front();
                            b.dropped += 1;
                            if b.dropped == 1 {
                                tracing::warn!(watcher = %task_id, "watcher buffer full, dropping oldest events");
                            }
                        }
                        b.events.push_back(event.into_proto());
                    }
                    Ok(None) => {
                        tracing::debug!(watcher = %task_id, "watched directory is gone");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(watcher = %task_id, error = %e, "watcher failed");
                        lock(&sink).error = Some(e.to_string());
                        break;
                    }
                }
            }
        });
        lock(&self.watchers).insert(
            id.clone(),
            Polled {
                buffer,
                task: task.abort_handle(),
            },
        );
        id
    }

    /// Takes the events buffered since the last call.
    pub fn drain(&self, id: &str) -> Result<Vec<FilesystemEvent>, FsError> {
        let buffer = lock(&self.watchers)
            .get(id)
            .map(|p| Arc::clone(&p.buffer))
            .ok_or_else(|| FsError::not_found(format!("watcher '{id}' not found")))?;
        let mut b = lock(&buffer);
        let events: Vec<_> = std::mem::take(&mut b.events).into();
        if events.is_empty()
            && let Some(e) = &b.error
        {
            return Err(FsError::internal(format!("watcher '{id}' failed: {e}")));
        }
        Ok(events)
    }

    /// Stops a watcher; its inotify instance is closed with its task.
    pub fn remove(&self, id: &str) -> Result<(), FsError> {
        let polled = lock(&self.watchers)
            .remove(id)
            .ok_or_else(|| FsError::not_found(format!("watcher '{id}' not found")))?;
        polled.task.abort();
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for (_, p) in lock(&self.watchers).drain() {
            p.task.abort();
        }
    }
}

/// 128 random bits, hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: writes at most `len` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never expected; fall back to time + counter (ids need only be unique).
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
