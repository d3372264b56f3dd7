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

#[derive(Debug, thiserror::Error)]
#[error("envd {method} {path} at {addr}: {reason}")]
pub struct EnvdCallError {
    pub addr: SocketAddr,
    pub method: &'static str,
    pub path: &'static str,
    pub reason: String,
}

/// `POST path` with a JSON body over a fresh `Connection: close` HTTP/1.1 connection, for the
/// lifecycle calls (`/snapshot/prepare`, `/init`). A fresh connection per call means the agent
/// holds no idle envd connection across a checkpoint. Any 2xx is success.
pub async fn post(
    addr: SocketAddr,
    path: &'static str,
    json: &[u8],
    timeout: Duration,
) -> Result<(), EnvdCallError> {
    let error = |reason: String| EnvdCallError {
        addr,
        method: "POST",
        path,
        reason,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            json.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(json).await.map_err(|e| e.to_string())?;
        // Read to EOF (the server closes): the reply is small, and the connection is then fully
        // closed on our side too.
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(reply)
    };
    let reply = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| error(format!("no reply within {timeout:?}")))?
        .map_err(error)?;
    let status_line = reply.split(|&b| b == b'\r').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(error(format!(
            "{status_line}: {}",
            crate::command::truncate(&reply)
        )))
    }
}
