//! Directory watching on inotify.
//!
//! A [`DirWatcher`] owns one inotify instance; dropping it closes the
//! descriptor, which removes every watch it holds, so a watcher cannot leak
//! kernel watches. Recursive watching adds a watch per directory: the tree at
//! start, then every directory created in or moved into it. A directory
//! created after the watch started may get entries before its own watch is in
//! place, so its contents are scanned when the watch is added and reported as
//! created. Symlinked directories are not followed.
//!
//! Event mapping: `IN_CREATE` → create, `IN_MODIFY`/`IN_CLOSE_WRITE` → write
//! (one write per modification burst: the close after modifications is folded
//! into them), `IN_DELETE` → remove, `IN_MOVED_FROM`/`IN_MOVED_TO` → rename,
//! `IN_ATTRIB` → chmod. Event names are relative to the watched directory.

use super::creds;
use super::entry::{self, Names};
use super::error::{FsError, Kind};
use crate::users::Account;
use futures::StreamExt;
use inotify::{EventMask, EventOwned, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use wrenn_proto::filesystem::{EntryInfo, EventType, FilesystemEvent};

/// One reported filesystem event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Path relative to the watched directory.
    pub name: String,
    pub kind: EventType,
    pub entry: Option<EntryInfo>,
}

impl Event {
    pub fn into_proto(self) -> FilesystemEvent {
        FilesystemEvent {
            name: self.name,
            r#type: self.kind.into(),
            entry: self.entry.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The directory as the client named it (resolved); entries are reported
    /// under it.
    pub path: PathBuf,
    pub recursive: bool,
    pub include_entry: bool,
    pub allow_network_mounts: bool,
}

fn watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

pub struct DirWatcher {
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    /// Watch id → (descriptor, directory relative to the root).
    dirs: HashMap<i32, (WatchDescriptor, PathBuf)>,
    root_wd: i32,
    opts: WatchOptions,
    /// Credentials used to add watches on directories that appear later.
    account: Account,
    pending: VecDeque<Event>,
    /// Name whose last reported event was a write from `IN_MODIFY`, to fold
    /// the following modifications and the closing `IN_CLOSE_WRITE` into it.
    writing: Option<PathBuf>,
    ended: bool,
}

impl DirWatcher {
    /// Starts watching. Blocking (walks the tree when recursive): run it on
    /// the blocking pool, inside the runtime, with the caller's credentials
    /// already in effect (inotify checks read access when a watch is added).
    pub fn start(opts: WatchOptions, account: Account) -> Result<Self, FsError> {
        let path = &opts.path;
        let meta = fs::metadata(path).map_err(FsError::at("stat", path))?;
        if !meta.is_dir() {
            return Err(FsError::invalid(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        if !opts.allow_network_mounts && is_network_mount(path) {
            return Err(FsError::new(
                Kind::FailedPrecondition,
                format!(
                    "{} is on a network filesystem; watching it is unreliable (allow_network_mounts to force)",
                    path.display()
                ),
            ));
        }
        let inotify = Inotify::init().map_err(|e| inotify_error("inotify_init", e))?;
        let stream = inotify
            .into_event_stream(vec![0u8; 64 * 1024])
            .map_err(|e| inotify_error("inotify stream", e))?;
        let watches = stream.watches();
        let mut w = Self {
            stream,
            watches,
            dirs: HashMap::new(),
            root_wd: -1,
            opts,
            account,
            pending: VecDeque::new(),
            writing: None,
            ended: false,
        };
        // The root follows a symlink if the client named one.
        let root_mask = watch_mask() & !WatchMask::DONT_FOLLOW;
        let wd = w
            .watches
            .add(&w.opts.path, root_mask)
            .map_err(|e| inotify_error(&format!("watch {}", w.opts.path.display()), e))?;
        w.root_wd = wd.get_watch_descriptor_id();
        w.dirs.insert(w.root_wd, (wd, PathBuf::new()));
        if w.opts.recursive {
            let root = w.opts.path.clone();
            w.add_children(&root, Path::new(""), false);
        }
        Ok(w)
    }

    /// The next event; `Ok(None)` once the watched directory is gone.
    /// Cancel-safe: the only await is reading the inotify stream.
    pub async fn next(&mut self) -> io::Result<Option<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            if self.ended {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(raw)) => self.handle(raw),
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
    }

    fn handle(&mut self, raw: EventOwned) {
        if raw.mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!(path = %self.opts.path.display(), "inotify queue overflow: events lost");
            return;
        }
        let id = raw.wd.get_watch_descriptor_id();
        if raw.mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&id);
            if id == self.root_wd {
                self.ended = true;
            }
            return;
        }
        let Some((_, dir)) = self.dirs.get(&id) else {
            return;
        };
        let Some(name) = raw.name else {
            // Events on the directory itself: only the root's matter.
            if id == self.root_wd
                && raw
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF)
            {
                self.ended = true;
            }
            return;
        };
        let rel = dir.join(&name);
        let is_dir = raw.mask.contains(EventMask::ISDIR);
        let m = raw.mask;

        if m.contains(EventMask::MODIFY) {
            if self.writing.as_deref() != Some(rel.as_path()) {
                self.emit(&rel, EventType::EVENT_TYPE_WRITE);
                self.writing = Some(rel);
            }
            return;
        }
        if m.contains(EventMask::CLOSE_WRITE) {
            // A close right after modifications ends that write; a close with
            // no modification (an empty write, a truncate) is a write itself.
            if self.writing.take().as_deref() != Some(rel.as_path()) {
                self.emit(&rel, EventType::EVENT_TYPE_WRITE);
            }
            return;
        }
        self.writing = None;
        if m.contains(EventMask::CREATE) {
            self.emit(&rel, EventType::EVENT_TYPE_CREATE);
            if is_dir && self.opts.recursive {
                self.add_tree(&rel, true);
            }
        } else if m.contains(EventMask::MOVED_TO) {
            self.emit(&rel, EventType::EVENT_TYPE_RENAME);
            if is_dir && self.opts.recursive {
                self.add_tree(&rel, false);
            }
        } else if m.contains(EventMask::MOVED_FROM) {
            self.emit(&rel, EventType::EVENT_TYPE_RENAME);
            if is_dir && self.opts.recursive {
                self.drop_tree(&rel);
            }
        } else if m.contains(EventMask::DELETE) {
            self.emit(&rel, EventType::EVENT_TYPE_REMOVE);
        } else if m.contains(EventMask::ATTRIB) {
            self.emit(&rel, EventType::EVENT_TYPE_CHMOD);
        }
    }

    fn emit(&mut self, rel: &Path, kind: EventType) {
        let entry = if self.opts.include_entry && kind != EventType::EVENT_TYPE_REMOVE {
            entry::build(&self.opts.path.join(rel), &mut Names::default()).ok()
        } else {
            None
        };
        self.pending.push_back(Event {
            name: rel.to_string_lossy().into_owned(),
            kind,
            entry,
        });
    }

    /// Watches a directory that appeared (`rel`) and everything below it.
    /// `report` emits creates for what it already contains.
    fn add_tree(&mut self, rel: &Path, report: bool) {
        let abs = self.opts.path.join(rel);
        let account = self.account.clone();
        let watches = &mut self.watches;
        let added = creds::as_user(&account, || watches.add(&abs, watch_mask()));
        match added {
            Ok(wd) => {
                self.dirs
                    .insert(wd.get_watch_descriptor_id(), (wd, rel.to_path_buf()));
            }
            Err(e) => {
                // Gone already, not a directory any more, or not readable.
                tracing::debug!(path = %abs.display(), error = %e, "not watching");
                return;
            }
        }
        self.add_children(&abs, rel, report);
    }

    fn add_children(&mut self, abs: &Path, rel: &Path, report: bool) {
        let account = self.account.clone();
        let listed = creds::as_user(&account, || -> io::Result<Vec<(PathBuf, bool)>> {
            let mut out = Vec::new();
            for child in fs::read_dir(abs)?.flatten() {
                let is_dir = child.file_type().map(|t| t.is_dir()).unwrap_or(false);
                out.push((rel.join(child.file_name()), is_dir));
            }
            Ok(out)
        });
        let children = match listed {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(path = %abs.display(), error = %e, "cannot list for watching");
                return;
            }
        };
        for (child_rel, is_dir) in children {
            if report {
                self.emit(&child_rel, EventType::EVENT_TYPE_CREATE);
            }
            if is_dir {
                self.add_tree(&child_rel, report);
            }
        }
    }

    /// Stops watching a directory moved out of place and everything below it.
    fn drop_tree(&mut self, rel: &Path) {
        let gone: Vec<i32> = self
            .dirs
            .iter()
            .filter(|(_, (_, p))| p.starts_with(rel))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some((wd, _)) = self.dirs.remove(&id) {
                let _ = self.watches.remove(wd);
            }
        }
    }

    /// Number of directories currently watched (for tests and logs).
    pub fn watched_dirs(&self) -> usize {
        self.dirs.len()
    }
}

fn inotify_error(op: &str, e: io::Error) -> FsError {
    match e.raw_os_error() {
        // ENOSPC from inotify_add_watch / EMFILE from init: out of watches.
        Some(libc::ENOSPC | libc::EMFILE) => {
            FsError::new(Kind::NoSpace, format!("{op}: inotify limit reached ({e})"))
        }
        _ => FsError::new(super::error::classify(&e), format!("{op}: {e}")),
    }
}

/// NFS, SMB/CIFS and FUSE mounts, where inotify sees only local changes.
fn is_network_mount(path: &Path) -> bool {
    const NFS: i64 = 0x6969;
    const SMB: i64 = 0x517B;
    const CIFS: i64 = 0xFF53_4D42;
    const SMB2: i64 = 0xFE53_4D42;
    const FUSE: i64 = 0x6573_5546;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is a C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as i64) & 0xFFFF_FFFF;
    matches!(magic, NFS | SMB | CIFS | SMB2 | FUSE)
}
