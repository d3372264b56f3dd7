//! The PTY WebSocket, `GET /v1/capsules/{id}/pty` (spec §C.3): JSON text frames for control,
//! binary frames for terminal bytes in both directions.
//!
//! [`crate::Client::pty`] upgrades (credentials go in the upgrade request's headers), sends the
//! start message and hands back a writer (input, resize, kill) and a reader (events), so a
//! caller can drive both from one `select!`.

use std::collections::BTreeMap;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::{Client, Credential, Error, Result};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The start message. Empty fields take the server's defaults (`/bin/bash`, 80x24).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PtyStart {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cmd: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq)]
pub enum PtyEvent {
    Started {
        tag: String,
        pid: u32,
    },
    Output(Vec<u8>),
    Exit(i32),
    /// `fatal` errors end the session.
    Error {
        message: String,
        fatal: bool,
    },
    /// The socket closed without an exit event (the process may still run in the capsule).
    Closed,
}

pub struct PtyWriter {
    sink: SplitSink<Socket, Message>,
}

pub struct PtyReader {
    stream: SplitStream<Socket>,
}

fn ws_err(e: tungstenite::Error) -> Error {
    match e {
        // Rejected before the upgrade: the API's JSON envelope (401, 404, …).
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            Error::from_body(status, response.body().as_deref().unwrap_or_default())
        }
        other => Error::WebSocket(other.to_string()),
    }
}

impl Client {
    /// Opens a terminal running `start.cmd` in the capsule.
    pub async fn pty(&self, id: &str, start: &PtyStart) -> Result<(PtyWriter, PtyReader)> {
        let mut url = self.endpoint(&["v1", "capsules", id, "pty"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http→ws and https→wss are always valid scheme changes.
        let _ = url.set_scheme(scheme);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::WebSocket(e.to_string()))?;
        let header = |v: &str| {
            v.parse()
                .map_err(|_| Error::WebSocket("credential is not a valid header value".into()))
        };
        match self.credential() {
            Some(Credential::ApiKey(key)) => {
                request.headers_mut().insert("X-API-Key", header(key)?);
            }
            Some(Credential::Jwt(token)) => {
                let value = header(&format!("Bearer {token}"))?;
                request.headers_mut().insert("Authorization", value);
            }
            None => {}
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(ws_err)?;
        let (sink, stream) = socket.split();
        let mut writer = PtyWriter { sink };
        let mut message =
            serde_json::to_value(start).map_err(|e| Error::WebSocket(e.to_string()))?;
        message["type"] = "start".into();
        writer.send_json(message).await?;
        Ok((writer, PtyReader { stream }))
    }
}

impl PtyWriter {
    async fn send_json(&mut self, value: serde_json::Value) -> Result<()> {
        self.sink
            .send(Message::Text(value.to_string().into()))
            .await
            .map_err(ws_err)
    }

    /// Keystrokes, verbatim.
    pub async fn input(&mut self, data: &[u8]) -> Result<()> {
        self.sink
            .send(Message::Binary(data.to_vec().into()))
            .await
            .map_err(ws_err)
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> Result<()> {
        self.send_json(serde_json::json!({"type": "resize", "cols": cols, "rows": rows}))
            .await
    }

    /// SIGKILL to the terminal's process.
    pub async fn kill(&mut self) -> Result<()> {
        self.send_json(serde_json::json!({"type": "kill"})).await
    }

    /// Closes the socket; the process keeps running in the capsule (spec §C.3).
    pub async fn close(&mut self) -> Result<()> {
        self.sink.close().await.map_err(ws_err)
    }
}

impl PtyReader {
    /// The next event; keepalive pings are skipped. After [`PtyEvent::Closed`] or an exit,
    /// there are no more.
    pub async fn next(&mut self) -> Result<PtyEvent> {
        loop {
            let Some(message) = self.stream.next().await else {
                return Ok(PtyEvent::Closed);
            };
            match message {
                Ok(Message::Binary(data)) => return Ok(PtyEvent::Output(data.to_vec())),
                Ok(Message::Text(text)) => {
                    if let Some(event) = parse_control(text.as_str()) {
                        return Ok(event);
                    }
                }
                Ok(Message::Close(_)) => return Ok(PtyEvent::Closed),
                Ok(_) => {}
                // A reset after the server's close is the end of the session, not a failure.
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(PtyEvent::Closed);
                }
                Err(e) => return Err(ws_err(e)),
            }
        }
    }
}

/// A server text frame → event; `None` for frames to ignore (ping, unknown types).
fn parse_control(text: &str) -> Option<PtyEvent> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let str_field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    match str_field("type") {
        "started" => Some(PtyEvent::Started {
            tag: str_field("tag").to_owned(),
            pid: v.get("pid").and_then(|p| p.as_u64()).unwrap_or(0) as u32,
        }),
        "exit" => Some(PtyEvent::Exit(
            v.get("exit_code").and_then(|c| c.as_i64()).unwrap_or(-1) as i32,
        )),
        "error" => Some(PtyEvent::Error {
            message: str_field("data").to_owned(),
            fatal: v.get("fatal").and_then(|f| f.as_bool()).unwrap_or(false),
        }),
        // Legacy output format: base64 in a text frame.
        "output" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(str_field("data"))
                .ok()
                .map(PtyEvent::Output)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames() {
        assert_eq!(
            parse_control(r#"{"type":"started","tag":"pty-1","pid":42}"#),
            Some(PtyEvent::Started {
                tag: "pty-1".into(),
                pid: 42
            })
        );
        assert_eq!(
            parse_control(r#"{"type":"exit","exit_code":3}"#),
            Some(PtyEvent::Exit(3))
        );
        assert_eq!(
            parse_control(r#"{"type":"error","data":"gone","fatal":true}"#),
            Some(PtyEvent::Error {
                message: "gone".into(),
                fatal: true
            })
        );
        assert_eq!(
            parse_control(r#"{"type":"output","data":"aGk="}"#),
            Some(PtyEvent::Output(b"hi".to_vec()))
        );
        assert_eq!(parse_control(r#"{"type":"ping"}"#), None);
        assert_eq!(parse_control("not json"), None);
    }
}
