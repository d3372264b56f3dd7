//! Turning a request into a running process: credentials, environment, cwd,
//! stdio or PTY (the clone+exec itself is in `launch`).

use super::error::ProcessError;
use super::identity::RunAs;
use super::launch;
use super::pty;
use super::reaper::{ExitStatus, Reaper};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
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
    // The locale envd was started with (the host agent gives C.UTF-8): without one, shells
    // and line editors treat every non-ASCII byte as a control or meta key.
    if let Ok(lang) = std::env::var("LANG") {
        env.insert("LANG".to_owned(), lang);
    }
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
    let mut argv = vec![cstring("cmd", spec.program.as_bytes())?];
    for arg in &spec.args {
        argv.push(cstring("argument", arg.as_bytes())?);
    }
    let mut envp = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(ProcessError::InvalidArgument(format!(
                "invalid env var name '{k}'"
            )));
        }
        envp.push(cstring("env var", format!("{k}={v}").as_bytes())?);
    }
    // PATH lookup uses the process's own PATH, as a shell started with that
    // environment would.
    let path_var = spec.env.get("PATH").map_or(FALLBACK_PATH, String::as_str);
    let path =
        launch::resolve_program(&spec.program, path_var).map_err(|e| spawn_error(spec, e))?;
    let ids = spec.run_as.switch.then(|| {
        let a = &spec.run_as.account;
        let groups: Vec<libc::gid_t> = a.groups.iter().map(|g| g.as_raw()).collect();
        (a.uid.as_raw(), a.gid.as_raw(), groups)
    });

    // The child's ends of its stdio; they are closed here once it has exec'd.
    let child_ends: [OwnedFd; 3];
    let io = match spec.pty {
        Some(size) => {
            let (master, slave) = pty::open(size.cols, size.rows)
                .map_err(|e| ProcessError::io("allocating a pty", e))?;
            let dup = |f: &std::fs::File| {
                f.try_clone()
                    .map(OwnedFd::from)
                    .map_err(|e| ProcessError::io("duplicating the pty", e))
            };
            child_ends = [dup(&slave)?, dup(&slave)?, OwnedFd::from(slave)];
            Io::Pty(Arc::new(master))
        }
        None => {
            let pipe_err = |e| ProcessError::io("setting up process pipes", e);
            let (stdin_read, stdin) = if spec.stdin {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| pipe_err(e.into()))?;
                (
                    read,
                    Some(pipe::Sender::from_owned_fd(write).map_err(pipe_err)?),
                )
            } else {
                let null = std::fs::File::open("/dev/null").map_err(pipe_err)?;
                (OwnedFd::from(null), None)
            };
            let (stdout, stdout_write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| pipe_err(e.into()))?;
            let (stderr, stderr_write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| pipe_err(e.into()))?;
            child_ends = [stdin_read, stdout_write, stderr_write];
            Io::Pipes {
                stdin,
                stdout: pipe::Receiver::from_owned_fd(stdout).map_err(pipe_err)?,
                stderr: pipe::Receiver::from_owned_fd(stderr).map_err(pipe_err)?,
            }
        }
    };
    let plan = launch::Launch {
        path,
        argv,
        envp,
        cwd,
        stdio: child_ends.each_ref().map(|fd| fd.as_raw_fd()),
        controlling_tty: matches!(io, Io::Pty(_)),
        ids,
    };
    let (pid, exit) = reaper
        .track(|| launch::spawn(&plan))
        .map_err(|e| spawn_error(spec, e))?;
    // Closing our copies of the child's ends: reading the pipes or the pty
    // master reports EOF once the process side is gone.
    drop(child_ends);
    Ok(Spawned {
        pid: pid as u32,
        io,
        exit,
    })
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
