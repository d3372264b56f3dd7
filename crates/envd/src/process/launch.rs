//! Starting a child with `clone(CLONE_VM | CLONE_VFORK)`: the child borrows envd's address space
//! until it execs, so nothing is copied. Under gVisor a plain `fork` of envd costs tens of
//! milliseconds (the sentry duplicates the whole address space; measured 46 ms vs 12 ms for a
//! vfork-style spawn from a 30 MB process), which dominated every `Start`. This is what
//! `posix_spawn` does, plus what `posix_spawn` cannot: switching to a user with supplementary
//! groups and taking a PTY as controlling terminal.
//!
//! The child shares memory with the parent until `execve`, so it only reads data prepared
//! beforehand and makes raw syscalls: no allocation, no locks, and no glibc `set*id` wrappers
//! (they signal every thread of the process to keep ids in sync, and those threads are envd's).

use std::ffi::{CString, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Signals 1..NSIG exist on Linux (64 of them, real-time ones included).
const NSIG: c_int = 65;
/// Enough for the child's few calls; it never recurses or allocates.
const CHILD_STACK: usize = 64 * 1024;

/// Everything the child needs, prepared by the parent.
pub struct Launch {
    /// Resolved path of the executable (no PATH search happens in the child).
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// Descriptors that become the child's stdin, stdout and stderr. The caller keeps them.
    pub stdio: [RawFd; 3],
    /// Make stdin (a PTY slave) the controlling terminal of the child's new session.
    pub controlling_tty: bool,
    /// uid, gid and supplementary groups to switch to.
    pub ids: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

/// What the child reads; every pointer points into the `Launch` or this struct's vectors,
/// which outlive the child's use of them (the parent is suspended until exec or exit).
struct ChildArgs<'a> {
    launch: &'a Launch,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    error_fd: RawFd,
}

/// Starts the child and returns its pid once it has exec'd; an error from any step before the
/// exec (chdir, setuid, execve…) is returned as that step's errno.
pub fn spawn(launch: &Launch) -> io::Result<libc::pid_t> {
    // Sources below 3 would be clobbered by the dup2s onto 0..=2 (envd may run with its own
    // stdio closed), so move them up first.
    let mut raised = Vec::new();
    let mut stdio = launch.stdio;
    for fd in &mut stdio {
        if *fd < 3 {
            // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller owns; the result is owned here.
            let new = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if new < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `new` is a fresh descriptor nobody else owns.
            raised.push(unsafe { OwnedFd::from_raw_fd(new) });
            *fd = new;
        }
    }
    let (error_read, error_write) = cloexec_pipe()?;
    let args = ChildArgs {
        launch,
        argv: pointers(&launch.argv),
        envp: pointers(&launch.envp),
        stdio,
        error_fd: error_write.as_raw_fd(),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down; x86-64 and aarch64 want 16-byte alignment.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;

    // Block every signal in this thread so no handler of envd's can run in the child while it
    // shares our memory; the child restores an empty mask right before exec.
    let mut old_mask = empty_sigset();
    let full = full_sigset();
    // SAFETY: valid sigset pointers.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &full, &mut old_mask) };
    // SAFETY: `child_main` only reads `args` (alive until clone returns, since CLONE_VFORK
    // suspends us until the child execs or exits) and runs on its own stack.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, ptr::null_mut()) };
    drop(stack);
    drop(raised);
    drop(error_write);
    if pid < 0 {
        return Err(clone_error);
    }
    // The child has exec'd (the pipe closed with it) or written its errno and exited; the
    // reaper collects an exited child like any other.
    let mut errno = [0u8; 4];
    let n = read_full(&error_read, &mut errno)?;
    if n == errno.len() {
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(pid)
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(got)
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the set.
    unsafe {
        let mut set = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

/// Runs in the child, on its own stack, in envd's memory. Returns only by exec or `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent passed; it stays alive while we run.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: raw syscalls on prepared data; see the module comment.
    let errno = unsafe { prepare_and_exec(args) };
    // SAFETY: reports the failed step's errno through the close-on-exec pipe, then exits
    // without running any of envd's exit handlers.
    unsafe {
        let bytes = errno.to_ne_bytes();
        libc::write(args.error_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Each step of the child; returns the errno of the first that fails (exec does not return).
unsafe fn prepare_and_exec(args: &ChildArgs) -> c_int {
    let launch = args.launch;
    let fail = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY (whole block): raw syscalls with pointers into memory the parent keeps alive.
    unsafe {
        // Caught signals must not run envd's handlers here; ignored ones (SIGPIPE, ignored by
        // the Rust runtime) must not stay ignored in the new program.
        for signal in 1..NSIG {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, ptr::null(), &mut action) == 0
                && action.sa_sigaction != libc::SIG_DFL
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, ptr::null_mut());
            }
        }
        // Its own session, so terminal signals aimed at envd never reach it.
        if libc::setsid() < 0 {
            return fail();
        }
        for (target, &source) in args.stdio.iter().enumerate() {
            if libc::dup2(source, target as c_int) < 0 {
                return fail();
            }
        }
        if launch.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return fail();
        }
        if let Some((uid, gid, groups)) = &launch.ids
            && (libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setgid, *gid) < 0
                || libc::syscall(libc::SYS_setuid, *uid) < 0)
        {
            return fail();
        }
        // As the target user, so a directory it cannot enter fails the start.
        if libc::chdir(launch.cwd.as_ptr()) < 0 {
            return fail();
        }
        // Descriptors envd holds without close-on-exec must not reach the program (best
        // effort: close_range needs Linux 5.11).
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        let empty = empty_sigset();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        libc::execve(launch.path.as_ptr(), args.argv.as_ptr(), args.envp.as_ptr());
        fail()
    }
}

/// Finds `program` the way `execvp` would, in the child's PATH: names with a slash are used as
/// they are; otherwise the first executable regular file in PATH wins.
pub fn resolve_program(program: &str, path_var: &str) -> io::Result<CString> {
    let to_c = |bytes: &[u8]| {
        CString::new(bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in program"))
    };
    if program.contains('/') {
        return to_c(program.as_bytes());
    }
    let mut denied = false;
    for dir in path_var.split(':') {
        // An empty PATH entry means the current directory, as in execvp.
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = std::path::Path::new(dir).join(program);
        let c = to_c(std::os::unix::ffi::OsStrExt::as_bytes(
            candidate.as_os_str(),
        ))?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
                return Ok(c);
            }
        } else if io::Error::last_os_error().kind() == io::ErrorKind::PermissionDenied {
            denied = true;
        }
    }
    Err(if denied {
        io::Error::from(io::ErrorKind::PermissionDenied)
    } else {
        io::Error::from(io::ErrorKind::NotFound)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        let path = "/nonexistent:/usr/bin:/bin";
        let sh = resolve_program("sh", path).unwrap();
        assert!(sh.to_bytes().ends_with(b"/sh"), "{sh:?}");
        assert_eq!(resolve_program("./x", path).unwrap().as_c_str(), c"./x");
        assert_eq!(
            resolve_program("no-such-program-here", path)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }
}
