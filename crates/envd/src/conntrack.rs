//! Tracks every accepted TCP connection so `/snapshot/prepare` can close them:
//! a checkpoint of the capsule must not contain open TCP connections.
//!
//! Design: [`TrackedListener`] wraps the tokio listener (axum's `Listener`
//! trait) and registers each accepted socket's fd under a fresh [`ConnId`].
//! Closing is `shutdown(SHUT_RDWR)` on that fd: hyper's pending read then
//! sees EOF (or its write fails), the connection task ends and drops the
//! stream, and the peer gets a FIN at once. The fd stays valid while it is in
//! the registry because [`TrackedStream`] unregisters (under the same lock)
//! before its socket field is dropped and the fd closed.
//!
//! A handler finds its own connection through `ConnectInfo<ConnId>` (the app
//! is served with `into_make_service_with_connect_info::<ConnId>()`), so it can
//! spare it and still deliver its response.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Identifies one accepted connection for the daemon's lifetime (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, RawFd>,
}

/// Shared registry of open connections.
#[derive(Clone, Default)]
pub struct ConnTracker {
    inner: Arc<Mutex<Registry>>,
}

impl ConnTracker {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry is plain data; a panic elsewhere cannot leave it torn.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, fd: RawFd) -> ConnId {
        let mut reg = self.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.conns.insert(id, fd);
        ConnId(id)
    }

    fn unregister(&self, id: ConnId) {
        self.lock().conns.remove(&id.0);
    }

    /// Number of open tracked connections.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shuts down one connection; false if it is already gone.
    pub fn close(&self, id: ConnId) -> bool {
        let reg = self.lock();
        match reg.conns.get(&id.0) {
            Some(&fd) => {
                shutdown(fd);
                true
            }
            None => false,
        }
    }

    /// Shuts down every connection except `keep`; returns how many were closed.
    pub fn close_all_except(&self, keep: Option<ConnId>) -> usize {
        let reg = self.lock();
        let mut closed = 0;
        for (&id, &fd) in reg.conns.iter() {
            if Some(ConnId(id)) != keep {
                shutdown(fd);
                closed += 1;
            }
        }
        closed
    }
}

fn shutdown(fd: RawFd) {
    // ENOTCONN (peer already gone) is expected and harmless.
    if let Err(e) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both)
        && e != nix::errno::Errno::ENOTCONN
    {
        tracing::debug!(fd, error = %e, "shutdown of tracked connection failed");
    }
}

/// A TCP listener whose accepted connections are registered with a [`ConnTracker`].
pub struct TrackedListener {
    inner: TcpListener,
    tracker: ConnTracker,
}

impl TrackedListener {
    pub fn new(inner: TcpListener, tracker: ConnTracker) -> Self {
        Self { inner, tracker }
    }
}

impl Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's impl for TcpListener already retries and backs off on errors.
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        // Streamed RPC events are small writes: without this, Nagle plus the
        // peer's delayed ACK adds up to 40 ms per event.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set TCP_NODELAY");
        }
        let id = self.tracker.register(stream.as_raw_fd());
        let io = TrackedStream {
            inner: stream,
            id,
            tracker: self.tracker.clone(),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection; unregisters itself when dropped.
pub struct TrackedStream {
    inner: TcpStream,
    id: ConnId,
    tracker: ConnTracker,
}

impl TrackedStream {
    pub fn id(&self) -> ConnId {
        self.id
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        // Runs before `inner` is dropped, so the fd is never shut down after reuse.
        self.tracker.unregister(self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected<IncomingStream<'_, TrackedListener>> for ConnId {
    fn connect_info(stream: IncomingStream<'_, TrackedListener>) -> Self {
        stream.io().id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn close_all_except_spares_one_and_unregisters_on_drop() {
        let tracker = ConnTracker::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tl = TrackedListener::new(listener, tracker.clone());

        let mut c1 = TcpStream::connect(addr).await.unwrap();
        let (s1, _) = tl.accept().await;
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (mut s2, _) = tl.accept().await;
        assert_eq!(tracker.len(), 2);

        assert_eq!(tracker.close_all_except(Some(s2.id())), 1);
        let mut buf = [0u8; 1];
        // The closed one's peer sees EOF; the spared one still carries data.
        assert_eq!(c1.read(&mut buf).await.unwrap(), 0);
        c2.write_all(b"x").await.unwrap();
        assert_eq!(s2.read(&mut buf).await.unwrap(), 1);

        drop(s1);
        assert_eq!(tracker.len(), 1);
        assert!(!tracker.close(ConnId(u64::MAX)));
    }
}
