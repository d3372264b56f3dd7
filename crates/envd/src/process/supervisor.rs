//! One task per process: pumps its output into the hub, waits for its exit
//! status, drains what is left, then publishes the end event exactly once.
//!
//! The end must follow all output, yet a background grandchild may keep the
//! pipes (or the pty) open forever; waiting for EOF alone is how a Start
//! stream ends up never closing. So after the exit, reading continues only
//! while data keeps coming: until EOF, a read idle for [`DRAIN_IDLE`], or
//! [`DRAIN_MAX`] more bytes.

use super::output::{End, Output};
use super::pty;
use super::reaper::{ExitStatus, Reaper};
use super::registry::{Proc, Registry};
use super::spawn::Io;
use bytes::Bytes;
use nix::sys::signal::Signal;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

const PIPE_CHUNK: usize = 32 * 1024;
const PTY_CHUNK: usize = 16 * 1024;
/// After the exit, a read that waits this long means only lingering
/// descendants hold the output open. (Also covers pty data still in flight
/// through the line discipline.)
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// After the exit, stop reading a stream past this much (a descendant that
/// writes forever).
const DRAIN_MAX: usize = 16 * 1024 * 1024;

/// Everything a supervisor needs besides the process itself.
pub struct Supervision {
    pub io: Io,
    pub exit: oneshot::Receiver<ExitStatus>,
    /// When to SIGKILL the process (E2B treats the Start call's timeout as
    /// the process's lifetime).
    pub deadline: Option<Instant>,
    pub registry: Arc<Registry>,
    pub reaper: Arc<Reaper>,
}

pub async fn supervise(proc: Arc<Proc>, sup: Supervision) {
    let Supervision {
        io,
        mut exit,
        deadline,
        registry,
        reaper,
    } = sup;
    let (exited_tx, exited_rx) = watch::channel(false);
    let pid = proc.pid;
    let wait = async move {
        let status = match deadline {
            None => exit.await.ok(),
            Some(deadline) => tokio::select! {
                status = &mut exit => status.ok(),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::info!(pid, "process outlived its timeout; killing it");
                    if let Err(e) = reaper.signal(pid, Signal::SIGKILL) {
                        tracing::warn!(pid, error = %e, "killing timed-out process failed");
                    }
                    exit.await.ok()
                }
            },
        };
        let _ = exited_tx.send(true);
        status
    };
    let status = match io {
        Io::Pipes { stdout, stderr, .. } => {
            let out = pump(
                PipeSource(stdout),
                PIPE_CHUNK,
                Output::Stdout,
                &proc,
                exited_rx.clone(),
            );
            let err = pump(
                PipeSource(stderr),
                PIPE_CHUNK,
                Output::Stderr,
                &proc,
                exited_rx,
            );
            let (status, (), ()) = tokio::join!(wait, out, err);
            status
        }
        Io::Pty(master) => {
            let out = pump(PtySource(master), PTY_CHUNK, Output::Pty, &proc, exited_rx);
            let (status, ()) = tokio::join!(wait, out);
            status
        }
    };
    let end = end_of(status);
    tracing::debug!(pid = proc.pid, status = %end.status, "process ended");
    proc.release_stdin();
    registry.finish(&proc, end.clone());
    proc.hub.finish(end).await;
}

/// Converts a wait status the way E2B reports it (Go's `ProcessState`).
pub fn end_of(status: Option<ExitStatus>) -> End {
    match status {
        Some(ExitStatus::Code(code)) => End {
            exit_code: code,
            exited: true,
            status: format!("exit status {code}"),
            error: None,
        },
        Some(ExitStatus::Signal {
            signal,
            core_dumped,
        }) => End {
            exit_code: -1,
            exited: false,
            status: format!(
                "signal: {}{}",
                signal_name(signal),
                if core_dumped { " (core dumped)" } else { "" }
            ),
            error: None,
        },
        None => End {
            exit_code: -1,
            exited: false,
            status: "unknown".to_owned(),
            error: Some("the exit status of the process was lost".to_owned()),
        },
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "file size limit exceeded",
        libc::SIGVTALRM => "virtual timer expired",
        libc::SIGPROF => "profiling timer expired",
        libc::SIGSYS => "bad system call",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

trait Source {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

struct PipeSource(pipe::Receiver);

impl Source for PipeSource {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> io::Result<usize> {
        loop {
            self.0.readable().await?;
            match self.0.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

struct PtySource(Arc<pty::Master>);

impl Source for PtySource {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }
}

/// Copies one output stream into the hub until EOF (or the drain limits).
async fn pump(
    mut src: impl Source,
    chunk: usize,
    wrap: fn(Bytes) -> Output,
    proc: &Proc,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; chunk];
    let mut drained = 0usize;
    loop {
        let n = if *exited.borrow() {
            match tokio::time::timeout(DRAIN_IDLE, src.read(&mut buf)).await {
                Ok(r) => r,
                Err(_idle) => return,
            }
        } else {
            tokio::select! {
                biased;
                r = src.read(&mut buf) => r,
                // Re-enter the loop in drain mode; `read` is cancel-safe.
                _ = exited.changed() => continue,
            }
        };
        match n {
            Ok(0) => return,
            Ok(n) => {
                if *exited.borrow() {
                    drained += n;
                    if drained > DRAIN_MAX {
                        tracing::debug!(
                            pid = proc.pid,
                            "output still flowing after exit; stop reading"
                        );
                        return;
                    }
                }
                proc.hub
                    .publish(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(pid = proc.pid, error = %e, "reading process output failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_match_go_process_state() {
        let e = end_of(Some(ExitStatus::Code(3)));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (3, true, "exit status 3")
        );
        let e = end_of(Some(ExitStatus::Signal {
            signal: libc::SIGKILL,
            core_dumped: false,
        }));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (-1, false, "signal: killed")
        );
        let e = end_of(Some(ExitStatus::Signal {
            signal: libc::SIGSEGV,
            core_dumped: true,
        }));
        assert_eq!(e.status, "signal: segmentation fault (core dumped)");
        assert_eq!(signal_name(40), "signal 40");
    }
}
