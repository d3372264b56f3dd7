//! Runs host commands (`ip`, `nft`, `runsc`, `debootstrap`) with errors that say what failed.

use std::ffi::OsStr;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use tokio::process::Command;

/// How much of a failing command's stderr to keep in the error.
const STDERR_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl CommandError {
    pub fn stderr(&self) -> &str {
        match self {
            Self::Failed { stderr, .. } => stderr,
            Self::Spawn { .. } => "",
        }
    }
}

/// A printable form of a command line, for errors and logs.
pub struct CommandLine<'a>(pub &'a Command);

impl fmt::Display for CommandLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let std = self.0.as_std();
        write!(f, "{}", std.get_program().to_string_lossy())?;
        for arg in std.get_args() {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// Runs `program args…` with optional stdin and returns its stdout, or an error with stderr.
pub async fn run<I, S>(
    program: &str,
    args: I,
    stdin: Option<&[u8]>,
) -> Result<Vec<u8>, CommandError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    output(command, stdin).await
}

/// Runs a prepared command to completion, capturing stdout and stderr through pipes.
///
/// Only for commands that exit on their own: a detaching `runsc run` would hand the pipes to
/// the sandbox and this would never see EOF.
pub async fn output(mut command: Command, stdin: Option<&[u8]>) -> Result<Vec<u8>, CommandError> {
    use tokio::io::AsyncWriteExt;

    let line = CommandLine(&command).to_string();
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn(&mut command).map_err(|source| CommandError::Spawn {
        command: line.clone(),
        source,
    })?;
    let pid = child.id();
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's own failure below.
        let _ = pipe.write_all(input).await;
        drop(pipe);
    }
    let result = child.wait_with_output().await;
    if let Some(pid) = pid {
        crate::reaper::unregister(pid);
    }
    let out = result.map_err(|source| CommandError::Spawn {
        command: line.clone(),
        source,
    })?;
    if out.status.success() {
        tracing::trace!(command = %line, "ok");
        Ok(out.stdout)
    } else {
        Err(CommandError::Failed {
            command: line,
            status: out.status,
            stderr: truncate(&out.stderr),
        })
    }
}

/// Spawns so that the agent's reaper never steals this child's exit status.
pub fn spawn(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    crate::reaper::spawn_registered(|| command.spawn(), |child| child.id())
}

/// Waits for a child from [`spawn`] and releases its registration.
pub async fn wait(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    let status = child.wait().await;
    if let Some(pid) = pid {
        crate::reaper::unregister(pid);
    }
    status
}

pub(crate) fn truncate(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= STDERR_LIMIT {
        return text.to_owned();
    }
    let mut start = text.len() - STDERR_LIMIT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}
