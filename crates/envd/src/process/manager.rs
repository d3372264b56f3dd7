//! The process table shared by every RPC, the boot command and shutdown.

use super::error::ProcessError;
use super::identity;
use super::output::{Attach, Subscription};
use super::reaper::Reaper;
use super::registry::{Input, Proc, Registry};
use super::spawn::{self, Io, PtySize, Spec};
use super::supervisor::{self, Supervision};
use crate::paths;
use crate::state::Envd;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wrenn_proto::process::ProcessConfig;

/// Tag of the process started by `--cmd`.
pub const INIT_CMD_TAG: &str = "init-cmd";
/// How long processes get to exit after SIGTERM when envd shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub struct Manager {
    pub(super) reaper: Arc<Reaper>,
    pub(super) registry: Arc<Registry>,
}

impl Manager {
    /// The process-wide manager. The first call starts the reaper, so make it
    /// early in `main` (inside the runtime), before anything forks.
    pub fn global() -> Arc<Manager> {
        static MANAGER: OnceLock<Arc<Manager>> = OnceLock::new();
        Arc::clone(MANAGER.get_or_init(|| {
            Arc::new(Manager {
                reaper: Reaper::start(),
                registry: Arc::default(),
            })
        }))
    }

    /// Turns a request into a spawn plan: user, cwd, environment.
    pub(super) fn plan(
        envd: &Envd,
        requested_user: Option<&str>,
        config: &ProcessConfig,
        pty: Option<PtySize>,
        stdin: bool,
    ) -> Result<Spec, ProcessError> {
        if config.cmd.is_empty() {
            return Err(ProcessError::InvalidArgument(
                "process cmd is empty".to_owned(),
            ));
        }
        let defaults = envd.defaults();
        let run_as = identity::resolve(requested_user, &defaults.user)?;
        let explicit_cwd = config.cwd.as_deref().filter(|c| !c.is_empty());
        let mut cwd = paths::resolve(
            explicit_cwd.unwrap_or(""),
            &run_as.account.home,
            defaults.workdir.as_deref(),
        )
        .map_err(|e| ProcessError::InvalidArgument(e.to_string()))?;
        if let Err(e) = spawn::check_cwd(&cwd) {
            if explicit_cwd.is_some() {
                return Err(e);
            }
            // An account without a home (or a stale default workdir) should
            // not make every command fail.
            tracing::debug!(cwd = %cwd.display(), "default cwd missing; using /");
            cwd = PathBuf::from("/");
        }
        let env = spawn::environment(
            &run_as,
            &defaults.env_vars,
            config.envs.iter().map(|(k, v)| (k.clone(), v.clone())),
            pty.is_some(),
        );
        Ok(Spec {
            program: config.cmd.clone(),
            args: config.args.clone(),
            env,
            cwd,
            run_as,
            stdin,
            pty,
        })
    }

    /// Starts a planned process. With `attach`, the returned subscription is
    /// in place before the first byte of output can be read.
    pub(super) fn start(
        &self,
        mut config: ProcessConfig,
        tag: Option<String>,
        spec: Spec,
        attach: bool,
        deadline: Option<std::time::Instant>,
    ) -> Result<(Arc<Proc>, Option<Subscription>), ProcessError> {
        let spawned = spawn::spawn(&self.reaper, &spec)?;
        let (input, io) = match spawned.io {
            Io::Pipes {
                stdin,
                stdout,
                stderr,
            } => (
                Input::Pipe {
                    enabled: spec.stdin,
                    writer: tokio::sync::Mutex::new(stdin),
                },
                Io::Pipes {
                    stdin: None,
                    stdout,
                    stderr,
                },
            ),
            Io::Pty(master) => (Input::Pty(Arc::clone(&master)), Io::Pty(master)),
        };
        config.cwd = Some(spec.cwd.to_string_lossy().into_owned());
        let proc = Arc::new(Proc::new(spawned.pid, tag, config, input));
        let sub = match attach.then(|| proc.hub.subscribe()) {
            Some(Attach::Live(sub)) => Some(sub),
            _ => None,
        };
        self.registry.insert(Arc::clone(&proc));
        tokio::spawn(supervisor::supervise(
            Arc::clone(&proc),
            Supervision {
                io,
                exit: spawned.exit,
                deadline: deadline.map(tokio::time::Instant::from_std),
                registry: Arc::clone(&self.registry),
                reaper: Arc::clone(&self.reaper),
            },
        ));
        tracing::debug!(pid = proc.pid, tag = ?proc.tag, cmd = %spec.program, user = %spec.run_as.account.name, "process started");
        Ok((proc, sub))
    }

    /// SIGTERM to every process (all of them when envd is PID 1), a short
    /// grace period, then SIGKILL to the ones envd started that are left.
    pub async fn terminate_all(&self) {
        let signalled = if std::process::id() == 1 {
            // kill(-1) reaches every process but PID 1 itself.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), Signal::SIGTERM).is_ok()
        } else {
            self.reaper.signal_all(Signal::SIGTERM) > 0
        };
        if signalled {
            tracing::info!("sent SIGTERM to processes; waiting up to {SHUTDOWN_GRACE:?}");
        }
        if !self.wait_for_exits(SHUTDOWN_GRACE).await {
            let killed = self.reaper.signal_all(Signal::SIGKILL);
            tracing::warn!(killed, "processes outlived the grace period; sent SIGKILL");
            self.wait_for_exits(Duration::from_secs(1)).await;
        }
    }

    /// Waits until the processes envd started have exited and their end
    /// events were published.
    async fn wait_for_exits(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.reaper.tracked_count() == 0 && self.registry.running_count() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Starts `--cmd` through `/bin/sh -c` as the default user, tagged `init-cmd`.
pub fn start_init_cmd(envd: &Envd, cmd: &str) -> Result<u32, ProcessError> {
    let config = ProcessConfig {
        cmd: "/bin/sh".to_owned(),
        args: vec!["-c".to_owned(), cmd.to_owned()],
        ..Default::default()
    };
    let spec = Manager::plan(envd, None, &config, None, false)?;
    let (proc, _) =
        Manager::global().start(config, Some(INIT_CMD_TAG.to_owned()), spec, false, None)?;
    tracing::info!(pid = proc.pid, "started init command");
    Ok(proc.pid)
}

/// Resolves on SIGTERM or SIGINT after the processes were terminated; envd
/// then exits. (As PID 1 these signals would otherwise be ignored.)
pub async fn shutdown_on_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    Manager::global().terminate_all().await;
}
