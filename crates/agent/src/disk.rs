//! A capsule's disk limit: a sparse ext4 image of the capsule's disk size, loop-mounted where the
//! runtime keeps the capsule's writable layer (gVisor: the overlay filestore dir). Writes past the
//! limit fail inside the capsule with ENOSPC; the sandbox keeps running. The image holds nothing
//! that outlives one sandbox (gVisor's filestore is an unlinked file whose contents go into
//! checkpoint images), so it is made fresh for each start or restore and dropped on pause and
//! destroy.
//!
//! Costs (measured here): truncate + `mkfs.ext4` without journal ≈ 15–20 ms idle and several
//! times that on a busy host, loop mount ≈ 10 ms; the image stays sparse (~4 MiB for 10 GiB).
//! [`Spares`] keeps a few formatted images of the default size ready so a create only mounts.
//! `noinit_itable` keeps the kernel from zeroing inode tables in the background, which would
//! un-sparse the file.

use crate::command::{self, CommandError};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The image file next to the mount point.
const IMAGE: &str = "disk.img";
/// Unique spare names within this process (the pid separates processes).
static SPARE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.to_owned();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// Makes `mount_point` a fresh, empty filesystem of `size_mb` MiB backed by an image in its
/// parent directory (a spare one when `spares` has one of that size). Whatever was mounted there
/// before is unmounted first.
pub async fn attach(
    mount_point: &Path,
    size_mb: u64,
    spares: Option<&std::sync::Arc<Spares>>,
) -> Result<(), DiskError> {
    detach(mount_point).await?;
    let image = image_path(mount_point);
    std::fs::create_dir_all(mount_point).map_err(io_error("creating", mount_point))?;
    let spare = spares.and_then(|s| s.take(size_mb, &image));
    if spare.is_none() {
        format(&image, size_mb).await?;
    }
    let mut mount = Command::new("mount");
    mount
        .args(["-t", "ext4", "-o", "loop,noatime,noinit_itable"])
        .arg(&image)
        .arg(mount_point);
    if let Err(e) = command::output(mount, None).await {
        let _ = std::fs::remove_file(&image);
        return Err(e.into());
    }
    Ok(())
}

/// Writes an empty ext4 image of `size_mb` MiB at `image` (removed again on failure).
async fn format(image: &Path, size_mb: u64) -> Result<(), DiskError> {
    let file = std::fs::File::create(image).map_err(io_error("creating", image))?;
    file.set_len(size_mb * 1024 * 1024)
        .map_err(io_error("sizing", image))?;
    drop(file);
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args([
        "-q",
        "-F",
        // A scratch layer rebuilt on every start needs no journal; no reserved root blocks,
        // no discard of a file that is sparse anyway.
        "-O",
        "^has_journal",
        "-m",
        "0",
        "-E",
        "nodiscard,lazy_itable_init=1",
    ])
    .arg(image);
    if let Err(e) = command::output(mkfs, None).await {
        let _ = std::fs::remove_file(image);
        return Err(e.into());
    }
    Ok(())
}

/// Formatted, never-mounted images of one size, kept in a directory of the data dir and refilled
/// in the background after each take. A spare is moved into a capsule's dir by rename (same
/// filesystem), so taking one costs no formatting.
pub struct Spares {
    dir: PathBuf,
    size_mb: u64,
    target: usize,
    ready: std::sync::Mutex<Vec<PathBuf>>,
    /// Serializes refills, so a burst of creates formats one image at a time behind them.
    refilling: tokio::sync::Mutex<()>,
}

impl Spares {
    /// Opens (creating) `dir`, keeps finished spares of `size_mb` from earlier runs, drops
    /// half-made ones, and starts filling up to `target`.
    pub fn open(
        dir: PathBuf,
        size_mb: u64,
        target: usize,
    ) -> Result<std::sync::Arc<Self>, DiskError> {
        std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        let mut ready = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(io_error("listing", &dir))?
            .flatten()
        {
            let path = entry.path();
            let finished = path.extension().is_some_and(|e| e == "img")
                && entry
                    .metadata()
                    .is_ok_and(|m| m.len() == size_mb * 1024 * 1024);
            if finished {
                ready.push(path);
            } else {
                // A spare interrupted mid-format, or of another size.
                let _ = std::fs::remove_file(&path);
            }
        }
        let spares = std::sync::Arc::new(Self {
            dir,
            size_mb,
            target,
            ready: std::sync::Mutex::new(ready),
            refilling: tokio::sync::Mutex::new(()),
        });
        spares.refill();
        Ok(spares)
    }

    /// Moves a spare of `size_mb` to `to`; `None` when there is none (other size, pool empty).
    fn take(self: &std::sync::Arc<Self>, size_mb: u64, to: &Path) -> Option<()> {
        if size_mb != self.size_mb {
            return None;
        }
        let taken = loop {
            let spare = self.lock().pop()?;
            if std::fs::rename(&spare, to).is_ok() {
                break Some(());
            }
            // Gone or unmovable: try the next one.
        };
        self.refill();
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts filling the pool up to its target in the background.
    pub fn refill(self: &std::sync::Arc<Self>) {
        let me = std::sync::Arc::clone(self);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { me.fill().await });
        }
    }

    async fn fill(&self) {
        let _one_at_a_time = self.refilling.lock().await;
        while self.lock().len() < self.target {
            let name = format!(
                "spare-{}-{}",
                std::process::id(),
                SPARE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let tmp = self.dir.join(format!("{name}.tmp"));
            let done = self.dir.join(format!("{name}.img"));
            if let Err(e) = format(&tmp, self.size_mb).await {
                tracing::warn!(error = %e, "formatting a spare capsule disk");
                return;
            }
            if let Err(e) = std::fs::rename(&tmp, &done) {
                tracing::warn!(error = %e, "finishing a spare capsule disk");
                let _ = std::fs::remove_file(&tmp);
                return;
            }
            self.lock().push(done);
        }
    }
}

/// Unmounts `mount_point` if something is mounted there and removes its image. The loop device
/// goes with the mount (mount sets it to auto-clear).
pub async fn detach(mount_point: &Path) -> Result<(), DiskError> {
    for target in mounts_under(mount_point) {
        unmount(&target)?;
    }
    let image = image_path(mount_point);
    match std::fs::remove_file(&image) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DiskError::Io {
            action: "removing",
            path: image,
            source,
        }),
    }
}

/// Unmounts every mount at or below `dir` (deepest first), e.g. before removing a capsule
/// directory or after a crash. Returns how many were unmounted.
pub fn unmount_all_under(dir: &Path) -> Result<usize, DiskError> {
    let mut targets = mounts_under(dir);
    // Deepest first, so nested mounts come off before their parents.
    targets.sort_by_key(|t| std::cmp::Reverse(t.components().count()));
    for target in &targets {
        unmount(target)?;
    }
    Ok(targets.len())
}

fn unmount(target: &Path) -> Result<(), DiskError> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Something still holds it (a runsc process that has not exited yet): detach it now,
        // the kernel frees it, and the loop device with it, once the last user is gone.
        Err(nix::errno::Errno::EBUSY) => {
            nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io_error("unmounting", target)(e.into()))
        }
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_error("unmounting", target)(e.into())),
    }
}

fn image_path(mount_point: &Path) -> PathBuf {
    mount_point.parent().unwrap_or(Path::new("/")).join(IMAGE)
}

/// Mount points at or below `dir`, from this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points(&table)
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// The mount point column (5th) of each mountinfo line, with the kernel's octal escapes
/// (`\040` for a space, …) decoded.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| {
            use std::os::unix::ffi::OsStringExt;
            let bytes = escaped.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let octal = bytes.get(i + 1..i + 4).and_then(|d| {
                    std::str::from_utf8(d)
                        .ok()
                        .and_then(|d| u8::from_str_radix(d, 8).ok())
                });
                match (bytes[i], octal) {
                    (b'\\', Some(byte)) => {
                        out.push(byte);
                        i += 4;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from_vec(out))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_ready(spares: &Spares, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while spares.lock().len() < n {
            assert!(std::time::Instant::now() < deadline, "spares not refilled");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn spares_are_formatted_taken_and_refilled() {
        let dir = std::env::temp_dir().join(format!("wrenn-spares-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A half-made spare from a crash is dropped on open.
        std::fs::write(dir.join("spare-1-1.tmp"), b"x").unwrap();
        let spares = Spares::open(dir.clone(), 16, 2).unwrap();
        wait_ready(&spares, 2).await;
        assert!(!dir.join("spare-1-1.tmp").exists());

        let to = dir.join("taken.img");
        assert!(
            spares.take(32, &to).is_none(),
            "another size is never served"
        );
        assert!(spares.take(16, &to).is_some());
        // An ext4 image of the size asked for, still sparse.
        let meta = std::fs::metadata(&to).unwrap();
        assert_eq!(meta.len(), 16 * 1024 * 1024);
        let image = std::fs::read(&to).unwrap();
        assert_eq!(
            &image[1024 + 56..1024 + 58],
            &[0x53, 0xef],
            "ext4 superblock magic"
        );
        wait_ready(&spares, 2).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_mount_points_with_escapes() {
        let table = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                     90 22 7:0 / /var/lib/wrenn/capsules/cl-1/overlay rw,noatime - ext4 /dev/loop0 rw\n\
                     91 22 0:5 / /tmp/a\\040b rw - tmpfs tmpfs rw\n";
        let points: Vec<PathBuf> = mount_points(table).collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/"),
                PathBuf::from("/var/lib/wrenn/capsules/cl-1/overlay"),
                PathBuf::from("/tmp/a b"),
            ]
        );
    }
}
