//! The WebSocket routes (spec §C): exec stream (§C.1), process re-attach (§C.2), PTY (§C.3).
//!
//! Auth comes from the upgrade request's headers (401 JSON before any upgrade). Capsule checks
//! run after the upgrade and fail in-band (`{"type":"error",…}` then close), as §C says.
//!
//! Each socket is served by one task that `select!`s over the client's frames, the agent's
//! events (pumped from the Connect stream by a helper task into a channel, so a cancelled
//! branch never loses half a message) and, for PTYs, a keepalive tick. The socket is always
//! being read, so protocol-level pings (httpx-ws sends one every 20 s) are answered even while
//! a command is silent.
//!
//! Client frames: text frames must be JSON objects and at most [`MAX_CLIENT_FRAME`] bytes; a
//! violation gets an error frame and a close (1003 / 1009). Only PTY sockets take binary frames
//! (terminal input).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa_axum::{router::OpenApiRouter, routes};
use wrenn_proto::hostagent::v1::{
    ConnectProcessRequest, ExecStreamRequest, KillProcessRequest, PtyAttachRequest, PtyKillRequest,
    PtyResizeRequest, PtySendInputRequest, connect_process_request, connect_process_response,
    exec_stream_data, exec_stream_response, kill_process_request, pty_attach_response,
};

use super::exec::Selector;
use crate::auth::Principal;
use crate::capsules::access::{self, CapsuleHandle};
use crate::error::{ApiError, ErrorBody, Path};
use crate::state::AppState;

/// Largest client frame accepted (spec §J: WS frame ≤ 4 MiB).
pub const MAX_CLIENT_FRAME: usize = 4 << 20;
/// How long a client may wait before its first (start/connect) message.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// PTY keepalive (`{"type":"ping"}`, spec §C.3).
const PTY_PING_EVERY: Duration = Duration::from_secs(30);
/// Agent events buffered between the pump task and the socket.
const EVENT_QUEUE: usize = 64;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec_stream))
        .routes(routes!(process_stream))
        .routes(routes!(pty))
}

/// Upgrades with the frame limits. The transport limit is above [`MAX_CLIENT_FRAME`] so a
/// frame a little too large still gets a readable error frame from [`client_json`].
fn upgrade<F, Fut>(ws: WebSocketUpgrade, run: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    ws.max_message_size(2 * MAX_CLIENT_FRAME)
        .max_frame_size(2 * MAX_CLIENT_FRAME)
        .on_upgrade(run)
}

/// `WebSocketUpgrade`, with a JSON 400 instead of axum's text when the request is no upgrade.
pub struct Upgrade(WebSocketUpgrade);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map(Upgrade)
            .map_err(|e| {
                ApiError::invalid(format!("expected a WebSocket upgrade: {}", e.body_text()))
            })
    }
}

/// Moves a Connect server stream's messages into a channel; ends after the stream's end or
/// first error. Dropping the receiver stops the task (and with it the RPC).
macro_rules! pump {
    ($stream:expr) => {{
        let mut stream = $stream;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(async move {
            loop {
                let item = match stream.message().await {
                    Ok(Some(m)) => Ok(m.to_owned_message()),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        rx
    }};
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_frame(message: impl std::fmt::Display) -> Message {
    text(json!({"type": "error", "data": message.to_string()}))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

/// Sends an error frame, then closes. `extra` is merged into the frame (PTY: `fatal`).
async fn fail(socket: &mut WebSocket, message: impl std::fmt::Display, extra: Option<Value>) {
    let mut frame = json!({"type": "error", "data": message.to_string()});
    if let (Some(Value::Object(extra)), Value::Object(frame)) = (extra, &mut frame) {
        frame.extend(extra);
    }
    let _ = socket.send(text(frame)).await;
    close(socket, close_code::NORMAL, "").await;
}

/// What a client frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum ClientFrame {
    Json(Value),
    Binary(bytes::Bytes),
    /// Close frame or end of the connection.
    Closed,
    /// Ping/pong: answered by the transport, nothing to do.
    Control,
    /// A frame the protocol forbids: (close code, error text).
    Invalid(u16, String),
}

/// Classifies a received frame: text must be a JSON object within the size limit.
pub fn classify(message: Option<Result<Message, axum::Error>>) -> ClientFrame {
    let message = match message {
        None => return ClientFrame::Closed,
        Some(Err(e)) => {
            // tungstenite reports an over-limit frame as a capacity error.
            let text = e.to_string();
            return if text.contains("too long") || text.contains("Space limit") {
                ClientFrame::Invalid(close_code::SIZE, "frame too large".into())
            } else {
                ClientFrame::Closed
            };
        }
        Some(Ok(m)) => m,
    };
    let len = match &message {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        _ => 0,
    };
    if len > MAX_CLIENT_FRAME {
        return ClientFrame::Invalid(
            close_code::SIZE,
            format!("frame of {len} bytes is larger than {MAX_CLIENT_FRAME}"),
        );
    }
    match message {
        Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
            Ok(v @ Value::Object(_)) => ClientFrame::Json(v),
            _ => ClientFrame::Invalid(
                close_code::UNSUPPORTED,
                "text frames must be JSON objects".into(),
            ),
        },
        Message::Binary(b) => ClientFrame::Binary(b),
        Message::Close(_) => ClientFrame::Closed,
        Message::Ping(_) | Message::Pong(_) => ClientFrame::Control,
    }
}

/// Reads the first meaningful client frame (JSON), with a deadline.
async fn first_json(socket: &mut WebSocket) -> Result<Value, (u16, String)> {
    let deadline = tokio::time::Instant::now() + FIRST_MESSAGE_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| {
                (
                    close_code::POLICY,
                    "no start message within 30 s".to_owned(),
                )
            })?;
        match classify(next) {
            ClientFrame::Json(v) => return Ok(v),
            ClientFrame::Control => continue,
            ClientFrame::Closed => return Err((close_code::NORMAL, String::new())),
            ClientFrame::Binary(_) => {
                return Err((
                    close_code::UNSUPPORTED,
                    "the first message must be a JSON text frame".into(),
                ));
            }
            ClientFrame::Invalid(code, message) => return Err((code, message)),
        }
    }
}

/// Decodes a byte stream to text without splitting multi-byte characters across frames
/// (a partial sequence waits for the next chunk; invalid bytes become U+FFFD).
#[derive(Default)]
pub struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    pub fn push(&mut self, data: &[u8]) -> String {
        self.0.extend_from_slice(data);
        let keep = match std::str::from_utf8(&self.0) {
            Ok(_) => 0,
            // An incomplete sequence at the very end (at most 3 bytes) is kept for later.
            Err(e) if e.error_len().is_none() => self.0.len() - e.valid_up_to(),
            Err(_) => incomplete_tail(&self.0),
        };
        let tail = self.0.split_off(self.0.len() - keep);
        let out = String::from_utf8_lossy(&self.0).into_owned();
        self.0 = tail;
        out
    }

    /// Whatever is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.0).into_owned();
        self.0.clear();
        out
    }
}

/// Length of a trailing incomplete UTF-8 sequence in a buffer that also has invalid bytes.
fn incomplete_tail(buf: &[u8]) -> usize {
    for back in 1..=3.min(buf.len()) {
        let start = buf.len() - back;
        let b = buf[start];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: look further back
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if need > back && std::str::from_utf8(&buf[start..]).is_err() {
            back
        } else {
            0
        };
    }
    0
}

// ---------------------------------------------------------------------------------------------
// §C.1 exec stream

#[derive(Deserialize)]
struct ExecStart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    // Wrenn extensions (the SDK does not send them).
    #[serde(default)]
    envs: HashMap<String, String>,
    #[serde(default)]
    cwd: String,
    #[serde(default)]
    timeout_sec: i32,
}

/// Run a command and stream its output (WebSocket, spec §C.1).
#[utoipa::path(get, path = "/v1/capsules/{id}/exec/stream", tag = "capsules",
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 101, description = "WebSocket: client sends {\"type\":\"start\",\"cmd\",\"args\"}; server sends start/stdout/stderr/exit/error JSON frames"),
        (status = 401, body = ErrorBody)))]
async fn exec_stream(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Upgrade(ws): Upgrade,
) -> Response {
    upgrade(ws, move |socket| run_exec_stream(state, p, id, socket))
}

async fn run_exec_stream(state: AppState, p: Principal, id: String, mut socket: WebSocket) {
    let bad_start = "first message must be type 'start' with a 'cmd' field";
    let start = match first_json(&mut socket).await {
        Ok(v) => v,
        Err((code, message)) => {
            if !message.is_empty() {
                let _ = socket.send(error_frame(&message)).await;
            }
            return close(&mut socket, code, "").await;
        }
    };
    let start = match serde_json::from_value::<ExecStart>(start) {
        Ok(s) if s.kind == "start" && !s.cmd.trim().is_empty() => s,
        _ => return fail(&mut socket, bad_start, None).await,
    };
    let handle = match access::running(&state, &p, &id).await {
        Ok(h) => h,
        Err(e) => return fail(&mut socket, &e.message, None).await,
    };
    let stream = handle
        .agent
        .exec_stream(ExecStreamRequest {
            sandbox_id: handle.sandbox_id(),
            cmd: start.cmd,
            args: start.args,
            timeout_sec: start.timeout_sec.max(0),
            envs: start.envs.into_iter().collect(),
            cwd: start.cwd,
            ..Default::default()
        })
        .await;
    let events = match stream {
        Ok(s) => pump!(s),
        Err(e) => return fail(&mut socket, ApiError::from(e).message, None).await,
    };
    let outcome = forward_exec_events(&mut socket, events, ExecEvents::Exec).await;
    if let Some(pid) = outcome.kill_pid {
        // §C.1: the client left (or said stop) before the end: do not leave the command
        // running unobserved.
        kill_pid(&handle, pid).await;
    }
    access::touch(&state, handle.id).await;
}

async fn kill_pid(handle: &CapsuleHandle, pid: u32) {
    let result = handle
        .agent
        .kill_process(KillProcessRequest {
            sandbox_id: handle.sandbox_id(),
            selector: Some(kill_process_request::Selector::Pid(pid)),
            signal: "SIGKILL".into(),
            ..Default::default()
        })
        .await;
    if let Err(e) = result
        && e.code != connectrpc::ErrorCode::NotFound
    {
        tracing::warn!(capsule = %handle.id, pid, error = %ApiError::from(e), "killing an abandoned exec");
    }
}

/// One exec-like event, from either stream type.
enum ExecEvent {
    Start(u32),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    End(i32, String),
}

/// Which RPC fed the events (they share the event shapes but not the Rust types).
#[derive(Clone, Copy, PartialEq)]
enum ExecEvents {
    Exec,
    Reattach,
}

struct ExecOutcome {
    /// Set when the client went away before the process ended.
    kill_pid: Option<u32>,
}

trait IntoExecEvent {
    fn into_exec_event(self) -> Option<ExecEvent>;
}

impl IntoExecEvent for wrenn_proto::hostagent::v1::ExecStreamResponse {
    fn into_exec_event(self) -> Option<ExecEvent> {
        Some(match self.event? {
            exec_stream_response::Event::Start(s) => ExecEvent::Start(s.pid),
            exec_stream_response::Event::Data(d) => match d.output? {
                exec_stream_data::Output::Stdout(b) => ExecEvent::Stdout(b),
                exec_stream_data::Output::Stderr(b) => ExecEvent::Stderr(b),
            },
            exec_stream_response::Event::End(e) => ExecEvent::End(e.exit_code, e.error),
        })
    }
}

impl IntoExecEvent for wrenn_proto::hostagent::v1::ConnectProcessResponse {
    fn into_exec_event(self) -> Option<ExecEvent> {
        Some(match self.event? {
            connect_process_response::Event::Start(s) => ExecEvent::Start(s.pid),
            connect_process_response::Event::Data(d) => match d.output? {
                exec_stream_data::Output::Stdout(b) => ExecEvent::Stdout(b),
                exec_stream_data::Output::Stderr(b) => ExecEvent::Stderr(b),
            },
            connect_process_response::Event::End(e) => ExecEvent::End(e.exit_code, e.error),
        })
    }
}

/// Forwards agent events as §C.1 frames until the end, an error or the client leaving.
async fn forward_exec_events<T: IntoExecEvent>(
    socket: &mut WebSocket,
    mut events: mpsc::Receiver<Result<T, connectrpc::ConnectError>>,
    kind: ExecEvents,
) -> ExecOutcome {
    let mut pid = None;
    let (mut out, mut err) = (Utf8Carry::default(), Utf8Carry::default());
    loop {
        tokio::select! {
            event = events.recv() => {
                let event = match event {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        let message = ApiError::from(e).message;
                        let message = if kind == ExecEvents::Reattach && pid.is_none() {
                            format!("failed to connect to process: {message}")
                        } else {
                            message.into_owned()
                        };
                        fail(socket, message, None).await;
                        return ExecOutcome { kill_pid: None };
                    }
                    None => {
                        let message = if kind == ExecEvents::Reattach && pid.is_none() {
                            "failed to connect to process: stream ended"
                        } else {
                            "process stream ended without an exit status"
                        };
                        fail(socket, message, None).await;
                        return ExecOutcome { kill_pid: None };
                    }
                };
                let frame = match event.into_exec_event() {
                    None => continue,
                    Some(ExecEvent::Start(p)) => {
                        pid = Some(p);
                        json!({"type": "start", "pid": p})
                    }
                    Some(ExecEvent::Stdout(b)) => {
                        let data = out.push(&b);
                        if data.is_empty() { continue; }
                        json!({"type": "stdout", "data": data})
                    }
                    Some(ExecEvent::Stderr(b)) => {
                        let data = err.push(&b);
                        if data.is_empty() { continue; }
                        json!({"type": "stderr", "data": data})
                    }
                    Some(ExecEvent::End(code, error)) => {
                        for (name, carry) in [("stdout", &mut out), ("stderr", &mut err)] {
                            let rest = carry.finish();
                            if !rest.is_empty() {
                                let _ = socket.send(text(json!({"type": name, "data": rest}))).await;
                            }
                        }
                        let mut frame = json!({"type": "exit", "exit_code": code});
                        if !error.is_empty() {
                            frame["error"] = Value::String(error);
                        }
                        let _ = socket.send(text(frame)).await;
                        close(socket, close_code::NORMAL, "").await;
                        return ExecOutcome { kill_pid: None };
                    }
                };
                if socket.send(text(frame)).await.is_err() {
                    return ExecOutcome { kill_pid: own(kind, pid) };
                }
            }
            frame = socket.recv() => match classify(frame) {
                ClientFrame::Closed => return ExecOutcome { kill_pid: own(kind, pid) },
                ClientFrame::Control => {}
                // §C.2: client messages other than close are ignored on re-attach.
                _ if kind == ExecEvents::Reattach => {}
                ClientFrame::Json(v) if v.get("type").and_then(Value::as_str) == Some("stop") => {
                    close(socket, close_code::NORMAL, "stopped").await;
                    return ExecOutcome { kill_pid: own(kind, pid) };
                }
                ClientFrame::Json(_) => {}
                ClientFrame::Binary(_) => {
                    let _ = socket.send(error_frame("binary frames are not accepted here")).await;
                    close(socket, close_code::UNSUPPORTED, "").await;
                    return ExecOutcome { kill_pid: own(kind, pid) };
                }
                ClientFrame::Invalid(code, message) => {
                    let _ = socket.send(error_frame(&message)).await;
                    close(socket, code, "").await;
                    return ExecOutcome { kill_pid: own(kind, pid) };
                }
            },
        }
    }
}

/// Only processes this socket started are killed when it goes away (a re-attached background
/// process outlives its viewers).
fn own(kind: ExecEvents, pid: Option<u32>) -> Option<u32> {
    if kind == ExecEvents::Exec { pid } else { None }
}

// ---------------------------------------------------------------------------------------------
// §C.2 process re-attach

/// Attach to a running process's live output (WebSocket, spec §C.2).
#[utoipa::path(get, path = "/v1/capsules/{id}/processes/{selector}/stream", tag = "capsules",
    params(("id" = String, Path, description = "capsule id"),
        ("selector" = String, Path, description = "PID (decimal) or tag")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 101, description = "WebSocket: server sends start/stdout/stderr/exit/error JSON frames"),
        (status = 401, body = ErrorBody)))]
async fn process_stream(
    State(state): State<AppState>,
    p: Principal,
    Path((id, selector)): Path<(String, String)>,
    Upgrade(ws): Upgrade,
) -> Response {
    upgrade(ws, move |socket| {
        run_process_stream(state, p, id, selector, socket)
    })
}

async fn run_process_stream(
    state: AppState,
    p: Principal,
    id: String,
    selector: String,
    mut socket: WebSocket,
) {
    let selector = match Selector::parse(&selector) {
        Ok(s) => s,
        Err(e) => return fail(&mut socket, &e.message, None).await,
    };
    let handle = match access::running(&state, &p, &id).await {
        Ok(h) => h,
        Err(e) => return fail(&mut socket, &e.message, None).await,
    };
    let stream = handle
        .agent
        .connect_process(ConnectProcessRequest {
            sandbox_id: handle.sandbox_id(),
            selector: Some(match selector {
                Selector::Pid(pid) => connect_process_request::Selector::Pid(pid),
                Selector::Tag(tag) => connect_process_request::Selector::Tag(tag),
            }),
            ..Default::default()
        })
        .await;
    let events = match stream {
        Ok(s) => pump!(s),
        Err(e) => {
            let message = format!(
                "failed to connect to process: {}",
                ApiError::from(e).message
            );
            return fail(&mut socket, message, None).await;
        }
    };
    forward_exec_events(&mut socket, events, ExecEvents::Reattach).await;
    access::touch(&state, handle.id).await;
}

// ---------------------------------------------------------------------------------------------
// §C.3 PTY

#[derive(Deserialize, Default)]
#[serde(default)]
struct PtyStart {
    #[serde(rename = "type")]
    kind: String,
    cmd: String,
    args: Vec<String>,
    cols: u32,
    rows: u32,
    envs: HashMap<String, String>,
    cwd: String,
    user: String,
    tag: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PtyControl {
    #[serde(rename = "type")]
    kind: String,
    cols: u32,
    rows: u32,
    data: String,
}

/// An interactive terminal (WebSocket, spec §C.3): JSON text frames for control, binary frames
/// for terminal bytes.
#[utoipa::path(get, path = "/v1/capsules/{id}/pty", tag = "capsules",
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 101, description = "WebSocket, spec §C.3"), (status = 401, body = ErrorBody)))]
async fn pty(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Upgrade(ws): Upgrade,
) -> Response {
    upgrade(ws, move |socket| run_pty(state, p, id, socket))
}

fn fatal() -> Option<Value> {
    Some(json!({"fatal": true}))
}

async fn run_pty(state: AppState, p: Principal, id: String, mut socket: WebSocket) {
    let first = match first_json(&mut socket).await {
        Ok(v) => v,
        Err((code, message)) => {
            if !message.is_empty() {
                let frame = json!({"type": "error", "data": message, "fatal": true});
                let _ = socket.send(text(frame)).await;
            }
            return close(&mut socket, code, "").await;
        }
    };
    let start: PtyStart = match serde_json::from_value(first) {
        Ok(s) => s,
        Err(e) => return fail(&mut socket, format!("invalid start message: {e}"), fatal()).await,
    };
    let request = match start.kind.as_str() {
        "start" => {
            let (cols, rows) = match (start.cols, start.rows) {
                (0, _) | (_, 0) => (80, 24),
                size => size,
            };
            PtyAttachRequest {
                tag: format!("pty-{}", crate::auth::random_hex(4)),
                cmd: if start.cmd.trim().is_empty() {
                    "/bin/bash".into()
                } else {
                    start.cmd
                },
                args: start.args,
                cols,
                rows,
                envs: start.envs.into_iter().collect(),
                cwd: start.cwd,
                user: start.user,
                ..Default::default()
            }
        }
        "connect" if !start.tag.is_empty() => PtyAttachRequest {
            tag: start.tag,
            reconnect: true,
            ..Default::default()
        },
        "connect" => return fail(&mut socket, "connect needs a tag", fatal()).await,
        _ => {
            let message = "first message must be type 'start' or 'connect'";
            return fail(&mut socket, message, fatal()).await;
        }
    };
    let handle = match access::running(&state, &p, &id).await {
        Ok(h) => h,
        Err(e) => return fail(&mut socket, &e.message, fatal()).await,
    };
    let tag = request.tag.clone();
    let stream = handle
        .agent
        .pty_attach(PtyAttachRequest {
            sandbox_id: handle.sandbox_id(),
            ..request
        })
        .await;
    let events = match stream {
        Ok(s) => pump!(s),
        Err(e) => return fail(&mut socket, ApiError::from(e).message, fatal()).await,
    };
    pty_session(&mut socket, &handle, &tag, events).await;
    access::touch(&state, handle.id).await;
}

async fn pty_session(
    socket: &mut WebSocket,
    handle: &CapsuleHandle,
    tag: &str,
    mut events: mpsc::Receiver<
        Result<wrenn_proto::hostagent::v1::PtyAttachResponse, connectrpc::ConnectError>,
    >,
) {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + PTY_PING_EVERY, PTY_PING_EVERY);
    // Input waits for the started event: keystrokes sent before the process exists would fail.
    let mut started = false;
    loop {
        tokio::select! {
            event = events.recv() => {
                let message = match event {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return fail(socket, ApiError::from(e).message, fatal()).await,
                    None => return fail(socket, "terminal stream ended", fatal()).await,
                };
                let frame = match message.event {
                    Some(pty_attach_response::Event::Started(s)) => {
                        started = true;
                        let tag = if s.tag.is_empty() { tag.to_owned() } else { s.tag.clone() };
                        text(json!({"type": "started", "tag": tag, "pid": s.pid}))
                    }
                    Some(pty_attach_response::Event::Output(o)) => Message::Binary(o.data.into()),
                    Some(pty_attach_response::Event::Exited(x)) => {
                        let _ = socket.send(text(json!({"type": "exit", "exit_code": x.exit_code}))).await;
                        return close(socket, close_code::NORMAL, "").await;
                    }
                    None => continue,
                };
                if socket.send(frame).await.is_err() {
                    return;
                }
            }
            frame = socket.recv(), if started => {
                match classify(frame) {
                    ClientFrame::Closed => return, // detach; the terminal keeps running
                    ClientFrame::Control => {}
                    ClientFrame::Binary(data) => {
                        if let Err(e) = send_input(handle, tag, data.to_vec()).await {
                            let _ = socket.send(error_frame(&e.message)).await;
                        }
                    }
                    ClientFrame::Json(v) => {
                        let control: PtyControl = serde_json::from_value(v).unwrap_or_default();
                        if let Err(e) = pty_control(handle, tag, control).await {
                            let _ = socket.send(error_frame(&e.message)).await;
                        }
                    }
                    ClientFrame::Invalid(code, message) => {
                        let frame = json!({"type": "error", "data": message, "fatal": true});
                        let _ = socket.send(text(frame)).await;
                        return close(socket, code, "").await;
                    }
                }
            }
            _ = ping.tick() => {
                if socket.send(text(json!({"type": "ping"}))).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn send_input(handle: &CapsuleHandle, tag: &str, data: Vec<u8>) -> Result<(), ApiError> {
    handle
        .agent
        .pty_send_input(PtySendInputRequest {
            sandbox_id: handle.sandbox_id(),
            tag: tag.to_owned(),
            data,
            ..Default::default()
        })
        .await?;
    Ok(())
}

async fn pty_control(handle: &CapsuleHandle, tag: &str, c: PtyControl) -> Result<(), ApiError> {
    match c.kind.as_str() {
        "resize" if c.cols > 0 && c.rows > 0 => {
            handle
                .agent
                .pty_resize(PtyResizeRequest {
                    sandbox_id: handle.sandbox_id(),
                    tag: tag.to_owned(),
                    cols: c.cols,
                    rows: c.rows,
                    ..Default::default()
                })
                .await?;
        }
        "kill" => {
            handle
                .agent
                .pty_kill(PtyKillRequest {
                    sandbox_id: handle.sandbox_id(),
                    tag: tag.to_owned(),
                    ..Default::default()
                })
                .await?;
        }
        // Legacy dashboard input: base64 in a text frame.
        "input" => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(c.data.as_bytes())
                .map_err(|_| ApiError::invalid("input data must be base64"))?;
            send_input(handle, tag, data).await?;
        }
        "resize" | "pong" | "ping" | "" => {}
        other => return Err(ApiError::invalid(format!("unknown message type {other:?}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified() {
        let t = |s: &str| classify(Some(Ok(Message::Text(s.into()))));
        assert!(matches!(t(r#"{"type":"start"}"#), ClientFrame::Json(_)));
        assert!(matches!(
            t("not json"),
            ClientFrame::Invalid(close_code::UNSUPPORTED, _)
        ));
        assert!(matches!(t("[1,2]"), ClientFrame::Invalid(_, _)));
        assert!(matches!(t("\"str\""), ClientFrame::Invalid(_, _)));
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_CLIENT_FRAME));
        assert!(matches!(t(&big), ClientFrame::Invalid(close_code::SIZE, _)));
        let bin = classify(Some(Ok(Message::Binary(vec![1u8, 2].into()))));
        assert_eq!(bin, ClientFrame::Binary(vec![1u8, 2].into()));
        let huge = classify(Some(Ok(Message::Binary(
            vec![0u8; MAX_CLIENT_FRAME + 1].into(),
        ))));
        assert!(matches!(huge, ClientFrame::Invalid(close_code::SIZE, _)));
        assert_eq!(classify(None), ClientFrame::Closed);
        assert_eq!(
            classify(Some(Ok(Message::Close(None)))),
            ClientFrame::Closed
        );
        assert_eq!(
            classify(Some(Ok(Message::Ping(vec![].into())))),
            ClientFrame::Control
        );
    }

    #[test]
    fn utf8_carry_keeps_characters_whole() {
        let mut c = Utf8Carry::default();
        let s = "é✓世".as_bytes();
        let mut out = String::new();
        for b in s {
            out.push_str(&c.push(std::slice::from_ref(b)));
        }
        out.push_str(&c.finish());
        assert_eq!(out, "é✓世");
        // Invalid bytes are replaced; an incomplete tail after them still waits.
        let mut c = Utf8Carry::default();
        assert_eq!(c.push(&[b'a', 0xff, b'b', 0xe4]), "a\u{fffd}b");
        assert_eq!(c.push(&[0xb8, 0x96]), "世");
        assert_eq!(c.push(&[0xe4]), "");
        assert_eq!(c.finish(), "\u{fffd}");
    }
}
