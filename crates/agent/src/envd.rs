//! The agent's view of envd inside a capsule: where it listens and whether it is up.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// envd's port inside every capsule (spec §D).
pub const ENVD_PORT: u16 = 49983;
/// Where the image builder installs envd.
pub const ENVD_PATH: &str = "/usr/local/bin/envd";
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("envd at {addr} not healthy after {waited:?}: {last_error}")]
pub struct HealthTimeout {
    pub addr: SocketAddr,
    pub waited: Duration,
    pub last_error: String,
}

pub fn envd_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, ENVD_PORT))
}

/// Polls `GET /health` until it answers 200 or `timeout` passes.
pub async fn wait_healthy(addr: SocketAddr, timeout: Duration) -> Result<Duration, HealthTimeout> {
    let start = Instant::now();
    loop {
        let last_error = match tokio::time::timeout(PROBE_TIMEOUT, probe(addr)).await {
            Ok(Ok(())) => return Ok(start.elapsed()),
            Ok(Err(e)) => e,
            Err(_) => "probe timed out".to_owned(),
        };
        if start.elapsed() >= timeout {
            return Err(HealthTimeout {
                addr,
                waited: start.elapsed(),
                last_error,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// One `GET /health` over a fresh connection; a plain HTTP/1.1 exchange keeps the agent free of
/// an HTTP client for this single call.
async fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| e.to_string())?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&head)
        ))
    }
}
