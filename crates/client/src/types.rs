//! The API's objects (spec §B.0, §B.2, §B.4, §B.6, §B.8). Every field the server may omit is
//! optional, and unknown fields are kept in `extra` so `--json` output loses nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A capsule (spec §B.0 "Capsule object").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capsule {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub vcpus: i64,
    #[serde(default)]
    pub memory_mb: i64,
    #[serde(default)]
    pub timeout_sec: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Why a capsule is in `error` (Wrenn extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Capsule {
    /// Statuses a capsule does not leave on its own (spec §F.3).
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "stopped" | "error" | "missing")
    }
}

/// `POST /v1/capsules` body; `None` fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateCapsule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size_mb: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/capsules/{id}/exec` body (foreground).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecRequest {
    pub cmd: String,
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_sec: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A finished foreground command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResult {
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// The process's exit status; `-1` when it was killed by a signal.
    pub exit_code: i32,
    #[serde(default)]
    pub duration_ms: u64,
    /// `utf-8`, or `base64` when stdout or stderr is not valid UTF-8 (then both are base64).
    #[serde(default)]
    pub encoding: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ExecResult {
    /// Raw stdout and stderr bytes, whatever the encoding on the wire.
    pub fn output(&self) -> crate::Result<(Vec<u8>, Vec<u8>)> {
        use base64::Engine;
        if self.encoding == "base64" {
            let b64 = base64::engine::general_purpose::STANDARD;
            let decode = |s: &str| {
                b64.decode(s).map_err(|e| crate::Error::Protocol {
                    url: "exec".into(),
                    detail: format!("bad base64 output: {e}"),
                })
            };
            Ok((decode(&self.stdout)?, decode(&self.stderr)?))
        } else {
            Ok((
                self.stdout.clone().into_bytes(),
                self.stderr.clone().into_bytes(),
            ))
        }
    }
}

/// A template: a base image or a snapshot (spec §B.0 "Template object").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub vcpus: i64,
    #[serde(default)]
    pub memory_mb: i64,
    #[serde(default)]
    pub size_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub platform: bool,
    #[serde(default)]
    pub protected: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An API key as listed (the key itself is never listed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator_email: Option<String>,
    /// Only in the answer to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Answer of `POST /v1/auth/login` (spec §B.6 AuthResponse).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthResponse {
    pub token: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
}
