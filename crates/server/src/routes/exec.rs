//! Commands in a capsule (spec §B.2): foreground and background exec, the process list, kill.
//! The WebSocket variants (exec stream, re-attach, PTY) are in [`super::terminal`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use wrenn_proto::hostagent::v1::{
    ExecRequest, KillProcessRequest, ListProcessesRequest, StartBackgroundRequest,
    kill_process_request,
};

use crate::auth::Principal;
use crate::capsules::access::{self, CapsuleHandle};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exec))
        .routes(routes!(list_processes))
        .routes(routes!(kill_process))
}

/// Foreground timeout when the request gives none (spec §B.2).
const DEFAULT_TIMEOUT_SEC: i64 = 30;
/// Longest foreground timeout (the agent's limit too).
const MAX_TIMEOUT_SEC: i64 = 86_400;
/// Extra time the agent gets past the command's own deadline before the control plane gives up
/// on it (the agent kills the command and answers DeadlineExceeded at the deadline).
const AGENT_GRACE: Duration = Duration::from_secs(5);

const MAX_TAG_LEN: usize = 128;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ExecBody {
    /// Program to run; the SDK sends `/bin/sh`.
    pub cmd: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Foreground only; default 30, `0` also means 30.
    pub timeout_sec: Option<i64>,
    #[serde(default)]
    pub background: Option<bool>,
    /// Background only; default `proc-` + 8 hex.
    pub tag: Option<String>,
    pub envs: Option<HashMap<String, String>>,
    /// Working directory; default the user's home.
    pub cwd: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExecResult {
    pub sandbox_id: String,
    pub cmd: String,
    /// UTF-8 text, or base64 when `encoding` is `base64`.
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    /// `utf-8`, or `base64` when stdout or stderr is not valid UTF-8 (then both are base64).
    pub encoding: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackgroundStarted {
    pub sandbox_id: String,
    pub cmd: String,
    pub pid: u32,
    pub tag: String,
}

/// Run a command: foreground (200, output) or `background: true` (202, pid and tag).
#[utoipa::path(post, path = "/v1/capsules/{id}/exec", tag = "capsules", request_body = ExecBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = ExecResult), (status = 202, body = BackgroundStarted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn exec(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<ExecBody>,
) -> ApiResult<Response> {
    let cmd = body.cmd.clone().unwrap_or_default();
    if cmd.trim().is_empty() {
        return Err(ApiError::invalid("cmd is required"));
    }
    let handle = access::running(&state, &p, &id).await?;
    let result = if body.background.unwrap_or(false) {
        background(&handle, body, cmd)
            .await
            .map(|r| (StatusCode::ACCEPTED, Json(r)).into_response())
    } else {
        foreground(&handle, body, cmd)
            .await
            .map(|r| Json(r).into_response())
    };
    access::touch(&state, handle.id).await;
    result
}

async fn foreground(handle: &CapsuleHandle, body: ExecBody, cmd: String) -> ApiResult<ExecResult> {
    let timeout = match body.timeout_sec {
        None | Some(0) => DEFAULT_TIMEOUT_SEC,
        Some(t) if (1..=MAX_TIMEOUT_SEC).contains(&t) => t,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "timeout_sec must be between 0 and {MAX_TIMEOUT_SEC}"
            )));
        }
    };
    let request = ExecRequest {
        sandbox_id: handle.sandbox_id(),
        cmd: cmd.clone(),
        args: body.args.unwrap_or_default(),
        timeout_sec: timeout as i32,
        envs: body.envs.unwrap_or_default().into_iter().collect(),
        cwd: body.cwd.unwrap_or_default(),
        ..Default::default()
    };
    let started = Instant::now();
    let limit = Duration::from_secs(timeout as u64) + AGENT_GRACE;
    let reply = tokio::time::timeout(limit, handle.agent.exec(request))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("command did not finish within {timeout}s"),
            )
        })??
        .into_owned();
    let duration_ms = started.elapsed().as_millis() as u64;
    let (stdout, stderr, encoding) = encode_output(reply.stdout, reply.stderr);
    Ok(ExecResult {
        sandbox_id: handle.sandbox_id(),
        cmd,
        stdout,
        stderr,
        exit_code: reply.exit_code,
        duration_ms,
        encoding,
    })
}

/// Both streams as text when both are UTF-8, else both base64 (spec §B.2).
pub(crate) fn encode_output(stdout: Vec<u8>, stderr: Vec<u8>) -> (String, String, &'static str) {
    match (String::from_utf8(stdout), String::from_utf8(stderr)) {
        (Ok(out), Ok(err)) => (out, err, "utf-8"),
        (out, err) => {
            let bytes = |r: Result<String, std::string::FromUtf8Error>| match r {
                Ok(s) => s.into_bytes(),
                Err(e) => e.into_bytes(),
            };
            let b64 = base64::engine::general_purpose::STANDARD;
            (b64.encode(bytes(out)), b64.encode(bytes(err)), "base64")
        }
    }
}

async fn background(
    handle: &CapsuleHandle,
    body: ExecBody,
    cmd: String,
) -> ApiResult<BackgroundStarted> {
    let tag = match body.tag {
        Some(tag) if !tag.is_empty() => {
            validate_tag(&tag)?;
            tag
        }
        _ => format!("proc-{}", crate::auth::random_hex(4)),
    };
    let reply = handle
        .agent
        .start_background(StartBackgroundRequest {
            sandbox_id: handle.sandbox_id(),
            cmd: cmd.clone(),
            args: body.args.unwrap_or_default(),
            tag: tag.clone(),
            envs: body.envs.unwrap_or_default().into_iter().collect(),
            cwd: body.cwd.unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_owned();
    Ok(BackgroundStarted {
        sandbox_id: handle.sandbox_id(),
        cmd,
        pid: reply.pid,
        tag: if reply.tag.is_empty() { tag } else { reply.tag },
    })
}

/// Tags name processes in URLs (`/processes/{selector}`): printable, bounded, and not all
/// digits (a numeric selector means a PID).
pub(crate) fn validate_tag(tag: &str) -> ApiResult<()> {
    if tag.len() > MAX_TAG_LEN
        || tag.chars().any(|c| c.is_control() || c == '/')
        || tag.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(ApiError::invalid(format!(
            "tag must be 1..={MAX_TAG_LEN} printable characters without '/', not all digits"
        )));
    }
    Ok(())
}

/// A process selector from the URL: decimal → PID, otherwise a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    Pid(u32),
    Tag(String),
}

impl Selector {
    pub(crate) fn parse(s: &str) -> ApiResult<Self> {
        if s.is_empty() {
            return Err(ApiError::invalid("process selector is empty"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u32>()
                .ok()
                .filter(|&pid| pid > 0)
                .map(Selector::Pid)
                .ok_or_else(|| ApiError::invalid("pid out of range"));
        }
        if s.len() > MAX_TAG_LEN || s.chars().any(char::is_control) {
            return Err(ApiError::invalid("invalid process tag"));
        }
        Ok(Selector::Tag(s.to_owned()))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProcessInfo {
    pub pid: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag: String,
    pub cmd: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// Processes started through envd (exec, background, PTY).
#[utoipa::path(get, path = "/v1/capsules/{id}/processes", tag = "capsules",
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = ProcessList), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn list_processes(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ProcessList>> {
    let handle = access::running(&state, &p, &id).await?;
    let reply = handle
        .agent
        .list_processes(ListProcessesRequest {
            sandbox_id: handle.sandbox_id(),
            ..Default::default()
        })
        .await?
        .into_owned();
    access::touch(&state, handle.id).await;
    Ok(Json(ProcessList {
        processes: reply
            .processes
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                tag: p.tag,
                cmd: p.cmd,
                args: p.args,
            })
            .collect(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct KillQuery {
    /// `SIGTERM` or `SIGKILL` (default; anything else is SIGKILL too).
    signal: Option<String>,
}

/// Signal a process by PID (decimal selector) or tag.
#[utoipa::path(delete, path = "/v1/capsules/{id}/processes/{selector}", tag = "capsules",
    params(("id" = String, Path, description = "capsule id"),
        ("selector" = String, Path, description = "PID (decimal) or tag"), KillQuery),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn kill_process(
    State(state): State<AppState>,
    p: Principal,
    Path((id, selector)): Path<(String, String)>,
    Query(q): Query<KillQuery>,
) -> ApiResult<StatusCode> {
    let selector = Selector::parse(&selector)?;
    let handle = access::running(&state, &p, &id).await?;
    let signal = match q.signal.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("SIGTERM" | "TERM") => "SIGTERM",
        _ => "SIGKILL",
    };
    handle
        .agent
        .kill_process(KillProcessRequest {
            sandbox_id: handle.sandbox_id(),
            selector: Some(match selector {
                Selector::Pid(pid) => kill_process_request::Selector::Pid(pid),
                Selector::Tag(tag) => kill_process_request::Selector::Tag(tag),
            }),
            signal: signal.into(),
            ..Default::default()
        })
        .await?;
    access::touch(&state, handle.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_encoding() {
        assert_eq!(
            encode_output(b"hi\n".to_vec(), Vec::new()),
            ("hi\n".into(), String::new(), "utf-8")
        );
        assert_eq!(
            encode_output(vec![0xff], b"e".to_vec()),
            ("/w==".into(), "ZQ==".into(), "base64")
        );
        assert_eq!(
            encode_output(b"ok".to_vec(), vec![0xfe]),
            ("b2s=".into(), "/g==".into(), "base64")
        );
    }

    #[test]
    fn selectors_and_tags() {
        assert_eq!(Selector::parse("42").unwrap(), Selector::Pid(42));
        assert_eq!(
            Selector::parse("proc-1a2b3c4d").unwrap(),
            Selector::Tag("proc-1a2b3c4d".into())
        );
        assert!(Selector::parse("0").is_err());
        assert!(Selector::parse("99999999999").is_err());
        assert!(Selector::parse("").is_err());
        assert!(Selector::parse("a\nb").is_err());
        assert!(validate_tag("t1").is_ok());
        assert!(validate_tag("123").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag(&"x".repeat(200)).is_err());
    }
}
