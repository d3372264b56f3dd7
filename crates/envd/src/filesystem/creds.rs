//! Acting on the filesystem with a user's permissions.
//!
//! envd runs as root, yet a file operation requested for user `alice` must
//! succeed or fail exactly as it would for alice, and whatever it creates must
//! belong to her. Linux checks file access against a per-thread *filesystem*
//! uid/gid (`setfsuid`/`setfsgid`) plus the thread's supplementary groups, and
//! gives new inodes that uid/gid. Switching the fsuid away from 0 also drops the
//! file capabilities (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`, `CAP_FOWNER`, …) of that
//! thread only; switching back restores them.
//!
//! [`as_user`] runs a closure with the account's filesystem credentials on the
//! calling thread and always restores envd's own afterwards (also on unwind).
//! Callers run it on a blocking thread (`spawn_blocking`) around plain
//! synchronous syscalls; an opened file descriptor keeps the access it was
//! opened with, so streaming from/to it later needs no credentials.
//!
//! Supplementary groups are per-thread in the kernel, but glibc's `setgroups()`
//! broadcasts to every thread of the process, so the raw syscall is used.
//!
//! When envd is not root (a developer running it unprivileged), it cannot take
//! on another user's identity: operations then run with envd's own
//! credentials, which never grant more than the process already has.

use crate::users::Account;
use nix::unistd::Uid;
use std::io;

/// Runs `f` with `account`'s filesystem credentials on this thread.
pub fn as_user<T, E>(account: &Account, f: impl FnOnce() -> Result<T, E>) -> Result<T, E>
where
    E: From<io::Error>,
{
    let _guard = FsCreds::enter(account)?;
    f()
}

/// Whether operations for `account` need a credential switch.
fn needs_switch(account: &Account) -> bool {
    Uid::effective().is_root() && !account.uid.is_root()
}

/// Saved credentials of the thread; dropping restores them.
struct FsCreds {
    fsuid: libc::uid_t,
    fsgid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl FsCreds {
    fn enter(account: &Account) -> io::Result<Option<Self>> {
        if !needs_switch(account) {
            return Ok(None);
        }
        let saved = Self {
            fsuid: current_fsuid(),
            fsgid: current_fsgid(),
            groups: current_groups()?,
        };
        let groups: Vec<libc::gid_t> = account.groups.iter().map(|g| g.as_raw()).collect();
        set_groups(&groups)?;
        // From here on, dropping `saved` puts everything back.
        set_fsgid(account.gid.as_raw())?;
        set_fsuid(account.uid.as_raw())?;
        Ok(Some(saved))
    }
}

impl Drop for FsCreds {
    fn drop(&mut self) {
        // The uid first: returning to fsuid 0 restores the capabilities the
        // other two need.
        let restored = set_fsuid(self.fsuid)
            .and_then(|()| set_fsgid(self.fsgid))
            .and_then(|()| set_groups(&self.groups));
        if let Err(e) = restored {
            // A pooled thread left with another user's credentials would make
            // later operations act as the wrong user. This cannot happen for a
            // root process; if it does, stopping is the only safe answer.
            tracing::error!(error = %e, "cannot restore filesystem credentials; aborting");
            std::process::abort();
        }
    }
}

// `setfsuid`/`setfsgid` return the previous value and never fail outright; an
// invalid id (-1) changes nothing, which is how the current value is read and
// how a switch is verified.
const QUERY: u32 = u32::MAX;

fn current_fsuid() -> libc::uid_t {
    // SAFETY: setfsuid with an invalid id only reads the thread's fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, QUERY) as libc::uid_t }
}

fn current_fsgid() -> libc::gid_t {
    // SAFETY: setfsgid with an invalid id only reads the thread's fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, QUERY) as libc::gid_t }
}

fn set_fsuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: plain syscall on integer arguments; affects this thread only.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    if current_fsuid() == uid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("setfsuid({uid}) was refused"),
        ))
    }
}

fn set_fsgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: plain syscall on integer arguments; affects this thread only.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    if current_fsgid() == gid {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("setfsgid({gid}) was refused"),
        ))
    }
}

fn current_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: a zero-sized query returns the count and writes nothing.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds exactly `n` entries.
    let got = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(got as usize);
    Ok(groups)
}

fn set_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the raw syscall reads `len` gids from the slice and changes the
    // calling thread's credentials only (unlike glibc's setgroups wrapper).
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_is_scoped_to_the_closure() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let Ok(nobody) = Account::lookup("nobody") else {
            eprintln!("skipped: no 'nobody' account");
            return;
        };
        let before = (current_fsuid(), current_fsgid(), current_groups().unwrap());
        let inside = as_user(&nobody, || -> io::Result<_> {
            Ok((current_fsuid(), current_fsgid()))
        })
        .unwrap();
        assert_eq!(inside, (nobody.uid.as_raw(), nobody.gid.as_raw()));
        let after = (current_fsuid(), current_fsgid(), current_groups().unwrap());
        assert_eq!(before, after);
    }

    #[test]
    fn user_cannot_read_root_only_file() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let Ok(nobody) = Account::lookup("nobody") else {
            eprintln!("skipped: no 'nobody' account");
            return;
        };
        let dir = std::env::temp_dir().join(format!("envd-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = as_user(&nobody, || std::fs::read(&secret)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        // Root still can, on the same thread, afterwards.
        assert_eq!(std::fs::read(&secret).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
