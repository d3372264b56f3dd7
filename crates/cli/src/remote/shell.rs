//! `wrenn capsule shell`: the local terminal ↔ the PTY WebSocket (spec §C.3).
//!
//! The local terminal goes to raw mode (every key, Ctrl-C included, goes to the capsule) and
//! is restored by a guard on every way out. Stdin is read by a plain thread, not tokio's
//! blocking pool: a blocked `read(0)` would otherwise keep the runtime from shutting down.
//! SIGWINCH sends a resize.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use wrenn_client::{Client, PtyEvent, PtyStart};

use super::{CliError, Exit};

/// Restores the terminal's settings when dropped.
pub struct TermGuard<F: AsFd> {
    fd: F,
    saved: Termios,
}

impl<F: AsFd> TermGuard<F> {
    fn with(fd: F, change: impl FnOnce(&mut Termios)) -> Option<TermGuard<F>> {
        let saved = termios::tcgetattr(&fd).ok()?;
        let mut changed = saved.clone();
        change(&mut changed);
        termios::tcsetattr(&fd, SetArg::TCSANOW, &changed).ok()?;
        Some(TermGuard { fd, saved })
    }
}

impl<F: AsFd> Drop for TermGuard<F> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// Turns echo off for a password prompt (no-op when stdin is no terminal).
pub struct EchoOff<'a>(#[allow(dead_code)] Option<TermGuard<std::io::StdinLock<'a>>>);

impl<'a> EchoOff<'a> {
    pub fn new(stdin: &'a std::io::Stdin) -> EchoOff<'a> {
        EchoOff(TermGuard::with(stdin.lock(), |t| {
            t.local_flags.remove(LocalFlags::ECHO);
        }))
    }
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// (cols, rows) of the terminal on stdout, else stdin; `None` when neither is one.
fn window_size() -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which lives here.
        if unsafe { tiocgwinsz(fd, &mut ws) }.is_ok() && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

/// Runs the session; answers the remote process's exit code.
pub async fn run(client: &Client, id: &str, command: Vec<String>) -> anyhow::Result<i32> {
    let (cols, rows) = window_size().unwrap_or((80, 24));
    let mut envs = BTreeMap::new();
    // The capsule's terminal should speak the same language as ours.
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
    envs.insert("TERM".to_owned(), term);
    let mut command = command.into_iter();
    let start = PtyStart {
        cmd: command.next().unwrap_or_default(),
        args: command.collect(),
        cols,
        rows,
        envs,
        cwd: None,
    };
    let (mut writer, mut reader) = client.pty(id, &start).await?;

    let stdin = std::io::stdin();
    let _raw = if stdin.is_terminal() {
        TermGuard::with(stdin, termios::cfmakeraw)
    } else {
        None
    };
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if input_tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut stdin_open = true;
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            event = reader.next() => match event? {
                PtyEvent::Output(data) => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                PtyEvent::Exit(code) => return Ok(code),
                PtyEvent::Started { .. } => {}
                PtyEvent::Error { message, fatal: true } => {
                    return Err(CliError::new(Exit::Unavailable, format!("terminal: {message}")).into());
                }
                PtyEvent::Error { message, fatal: false } => {
                    // Shown on its own line; raw mode needs the explicit \r.
                    eprint!("\r\nwrenn: terminal: {message}\r\n");
                }
                PtyEvent::Closed => {
                    return Err(CliError::new(
                        Exit::Unavailable,
                        "the terminal connection closed before the shell exited",
                    )
                    .into());
                }
            },
            input = input_rx.recv(), if stdin_open => match input {
                Some(data) => writer.input(&data).await?,
                None => stdin_open = false,
            },
            _ = winch.recv() => {
                if let Some((cols, rows)) = window_size() {
                    writer.resize(cols, rows).await?;
                }
            }
        }
    }
}
