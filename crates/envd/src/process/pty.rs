//! Pseudo-terminals: allocation, resize and async I/O on the master side.

use nix::fcntl::OFlag;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use tokio::io::unix::AsyncFd;

/// Opens a PTY pair of the given size. Both ends are close-on-exec so a
/// concurrently spawned process never inherits them; the slave is dup'ed onto
/// the child's stdio, which clears the flag there.
pub fn open(cols: u16, rows: u16) -> io::Result<(Master, File)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let slave_path = nix::pty::ptsname_r(&master)?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave_path)?;
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid fd.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    let flags = OFlag::from_bits_retain(nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?);
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    // SAFETY: the OwnedFd is moved in, so the fd stays open and unchanged
    // for the AsyncFd's whole life.
    let fd = unsafe { AsyncFd::register(master)? };
    let master = Master { fd };
    master.resize(cols, rows)?;
    Ok((master, slave))
}

/// The master end, shared by the output pump, input writers and resizes.
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads available output; `Ok(0)` once every slave holder is gone (the
    /// kernel reports that as EIO). Cancel-safe.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd, buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(res) => return res,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd, data).map_err(io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
