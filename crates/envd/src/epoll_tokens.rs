//! Which epoll registrations are live, so that events for deleted ones can be dropped.
//!
//! Why: gVisor (runsc 20240729, the release we run) can deliver, right after `runsc restore`,
//! events for epoll interests the process had deleted (`EPOLL_CTL_DEL`) before the checkpoint:
//! on load, every saved interest object is marked ready, including deleted ones still reachable
//! in the saved state. Seen with `runsc --strace`: the first `epoll_wait` after a restore returned
//! `EPOLLHUP` for a child's stderr pipe that had been deleted and closed 130 ms before the
//! checkpoint. tokio's I/O driver takes an event's data as the address of the source's state,
//! freed at deregistration; when that memory had been reused, envd (PID 1) crashed in
//! `ScheduledIo::wake` within milliseconds of the restore, taking the capsule with it.
//!
//! envd's binary routes `epoll_ctl`/`epoll_wait` through [`table`] (linker `--wrap`, see
//! `main.rs`): registrations are recorded by descriptor, and events whose data no live
//! registration carries are removed before the caller sees them. A descriptor is assumed to be
//! registered with one epoll instance at a time, which holds for mio (tokio, inotify watchers).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// The registrations of the whole process.
#[derive(Debug, Default)]
pub struct LiveTokens {
    /// The data each registered descriptor carries.
    by_fd: HashMap<RawFd, u64>,
    /// How many registrations carry each data value (small integers like mio's wakeup token can
    /// repeat across epoll instances).
    counts: HashMap<u64, u32>,
}

impl LiveTokens {
    /// After a successful `EPOLL_CTL_ADD` or `EPOLL_CTL_MOD`. On ADD, a descriptor number
    /// already in the table belonged to a closed file (the kernel drops interests of closed
    /// files without a DEL): replaced, like MOD's old data.
    pub fn set(&mut self, fd: RawFd, data: u64) {
        if let Some(old) = self.by_fd.insert(fd, data) {
            self.release(old);
        }
        *self.counts.entry(data).or_insert(0) += 1;
    }

    /// After a successful `EPOLL_CTL_DEL`.
    pub fn deleted(&mut self, fd: RawFd) {
        if let Some(old) = self.by_fd.remove(&fd) {
            self.release(old);
        }
    }

    fn release(&mut self, data: u64) {
        if let Some(count) = self.counts.get_mut(&data) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&data);
            }
        }
    }

    /// True once tokio runs only if the binary was linked without the wrappers.
    pub fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }

    pub fn is_live(&self, data: u64) -> bool {
        self.counts.contains_key(&data)
    }

    /// Moves the events of live registrations to the front of `events` (order kept) and returns
    /// how many there are; the rest are counted in [`dropped`].
    pub fn retain_live(&self, events: &mut [libc::epoll_event]) -> usize {
        let mut kept = 0;
        for i in 0..events.len() {
            // Copied out: the struct is packed on x86-64, so no references into it.
            let data = events[i].u64;
            if self.is_live(data) {
                events[kept] = events[i];
                kept += 1;
            }
        }
        DROPPED.fetch_add((events.len() - kept) as u64, Ordering::Relaxed);
        kept
    }
}

static TABLE: LazyLock<Mutex<LiveTokens>> = LazyLock::new(Mutex::default);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The process-wide table. A poisoned lock is taken over: every update is a few map operations
/// that leave the table consistent.
pub fn table() -> MutexGuard<'static, LiveTokens> {
    TABLE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Events dropped so far because no live registration carried their data.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: u64) -> libc::epoll_event {
        libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: data,
        }
    }

    fn datas(events: &[libc::epoll_event]) -> Vec<u64> {
        events.iter().map(|e| e.u64).collect()
    }

    #[test]
    fn events_of_deleted_registrations_are_dropped_and_order_is_kept() {
        let mut t = LiveTokens::default();
        t.set(7, 0x1000);
        t.set(8, 0x2000);
        t.set(9, 0x3000);
        t.deleted(8);
        let mut events = [event(0x3000), event(0x2000), event(0x1000), event(0x9999)];
        let kept = t.retain_live(&mut events);
        assert_eq!(datas(&events[..kept]), [0x3000, 0x1000]);
    }

    #[test]
    fn a_reused_descriptor_number_replaces_the_closed_files_data() {
        let mut t = LiveTokens::default();
        t.set(7, 0x1000);
        // fd 7 was closed without a DEL and its number reused.
        t.set(7, 0x2000);
        assert!(!t.is_live(0x1000));
        assert!(t.is_live(0x2000));
        t.deleted(7);
        assert!(!t.is_live(0x2000));
    }

    #[test]
    fn shared_small_tokens_stay_live_until_every_registration_is_gone() {
        let mut t = LiveTokens::default();
        t.set(3, 0);
        t.set(4, 0);
        t.deleted(3);
        assert!(t.is_live(0));
        t.deleted(4);
        assert!(!t.is_live(0));
    }

    #[test]
    fn a_new_data_value_replaces_the_old_one() {
        let mut t = LiveTokens::default();
        t.set(5, 1);
        t.set(5, 2);
        assert!(!t.is_live(1));
        assert!(t.is_live(2));
    }
}
