//! Fork+exec of a requested process: credentials, environment, cwd, stdio or PTY.

use super::error::ProcessError;
use super::identity::RunAs;
use super::pty;
use super::reaper::{ExitStatus, Reaper};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// PATH for processes when envd itself has none (e.g. started by the kernel as PID 1).
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug)]
pub struct Spec {
    pub program: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub run_as: RunAs,
    pub stdin: bool,
    pub pty: Option<PtySize>,
}

pub enum Io {
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    Pty(Arc<pty::Master>),
}

pub struct Spawned {
    pub pid: u32,
    pub io: Io,
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// The environment of a new process: cleared, then the account's basics, then
/// envd's default vars, then the request's own (later layers win).
pub fn environment(
    run_as: &RunAs,
    defaults: &HashMap<String, String>,
    request: impl IntoIterator<Item = (String, String)>,
    pty: bool,
) -> BTreeMap<String, String> {
    let account = &run_as.account;
    let mut env = BTreeMap::new();
    let path = std::env::var("PATH").unwrap_or_else(|_| FALLBACK_PATH.to_owned());
    env.insert("PATH".to_owned(), path);
    env.insert(
        "HOME".to_owned(),
        account.home.to_string_lossy().into_owned(),
    );
    env.insert("USER".to_owned(), account.name.clone());
    env.insert("LOGNAME".to_owned(), account.name.clone());
    if !account.shell.as_os_str().is_empty() {
        env.insert(
            "SHELL".to_owned(),
            account.shell.to_string_lossy().into_owned(),
        );
    }
    if pty {
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    }
    env.extend(defaults.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(request);
    env
}

/// Checks that a resolved working directory is usable before forking, so the
/// client gets InvalidArgument instead of an opaque exec failure.
pub fn check_cwd(cwd: &Path) -> Result<(), ProcessError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ProcessError::InvalidArgument(format!(
            "cwd '{}' is not a directory",
            cwd.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ProcessError::InvalidArgument(
            format!("cwd '{}' does not exist", cwd.display()),
        )),
        Err(e) => Err(ProcessError::InvalidArgument(format!(
            "cwd '{}': {e}",
            cwd.display()
        ))),
    }
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, ProcessError> {
    CString::new(s)
        .map_err(|_| ProcessError::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// Starts the process. The child gets its own session (so terminal signals
/// aimed at envd never reach it) and, with a PTY, that terminal as its
/// controlling tty.
pub fn spawn(reaper: &Reaper, spec: &Spec) -> Result<Spawned, ProcessError> {
    let cwd = cstring("cwd", spec.cwd.as_os_str().as_bytes())?;
    cstring("cmd", spec.program.as_bytes())?;
    for arg in &spec.args {
        cstring("argument", arg.as_bytes())?;
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(ProcessError::InvalidArgument(format!(
                "invalid env var name '{k}'"
            )));
        }
        cstring("env var", k.as_bytes())?;
        cstring("env var", v.as_bytes())?;
    }
    let ids = spec.run_as.switch.then(|| {
        let a = &spec.run_as.account;
        let groups: Vec<libc::gid_t> = a.groups.iter().map(|g| g.as_raw()).collect();
        (a.uid.as_raw(), a.gid.as_raw(), groups)
    });

    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).env_clear().envs(&spec.env);

    let master = match spec.pty {
        Some(size) => {
            let (master, slave) = pty::open(size.cols, size.rows)
                .map_err(|e| ProcessError::io("allocating a pty", e))?;
            let dup = |f: &std::fs::File| {
                f.try_clone()
                    .map_err(|e| ProcessError::io("duplicating the pty", e))
            };
            cmd.stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            Some(Arc::new(master))
        }
        None => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            None
        }
    };
    let ctty = master.is_some();

    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls on data prepared above (no allocation).
    // Credentials are changed here rather than with `CommandExt::uid` because
    // std would drop supplementary groups and chdir before switching user.
    unsafe {
        cmd.pre_exec(move || {
            // Descriptors envd inherited without close-on-exec must not reach
            // the process. (Best effort: needs Linux 5.11.)
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid, groups)) = &ids
                && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                    || libc::setgid(*gid) < 0
                    || libc::setuid(*uid) < 0)
            {
                return Err(io::Error::last_os_error());
            }
            // As the target user, so a directory it cannot enter fails the start.
            if libc::chdir(cwd.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }

    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| spawn_error(spec, e))?;
    // Dropping the command closes our copies of the pty slave, so reading the
    // master reports EOF once the process side is gone.
    drop(cmd);
    let pid = child.id();
    let io = match master {
        Some(master) => Io::Pty(master),
        None => {
            let pipe_err = |e| ProcessError::io("setting up process pipes", e);
            let stdin = child
                .stdin
                .take()
                .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
                .transpose()
                .map_err(pipe_err)?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| pipe_err(io::Error::other("missing stdout pipe")))?;
            let stderr = child
                .stderr
                .take()
                .ok_or_else(|| pipe_err(io::Error::other("missing stderr pipe")))?;
            Io::Pipes {
                stdin,
                stdout: pipe::Receiver::from_owned_fd(OwnedFd::from(stdout)).map_err(pipe_err)?,
                stderr: pipe::Receiver::from_owned_fd(OwnedFd::from(stderr)).map_err(pipe_err)?,
            }
        }
    };
    // Never waited on: the reaper delivers the status through `exit`.
    drop(child);
    Ok(Spawned { pid, io, exit })
}

fn spawn_error(spec: &Spec, e: io::Error) -> ProcessError {
    let user = &spec.run_as.account.name;
    match e.kind() {
        io::ErrorKind::NotFound => ProcessError::InvalidArgument(format!(
            "cannot start '{}': no such file or directory (searched PATH={})",
            spec.program,
            spec.env.get("PATH").map_or("", String::as_str)
        )),
        io::ErrorKind::PermissionDenied => ProcessError::PermissionDenied(format!(
            "cannot start '{}' as user '{user}' in '{}': {e}",
            spec.program,
            spec.cwd.display()
        )),
        _ => ProcessError::io(format!("starting '{}' as user '{user}'", spec.program), e),
    }
}
