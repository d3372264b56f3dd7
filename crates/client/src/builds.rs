//! Template builds (spec §B.13, §G): `POST/GET /v1/admin/builds`, `GET …/{id}`,
//! `POST …/{id}/cancel`. Platform admins only (an admin's API key or login).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::{Client, Error, Result};

/// Largest archive the server accepts.
pub const MAX_ARCHIVE_BYTES: usize = 100 << 20;
/// Uploads of big archives take a while.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST /v1/admin/builds` body (the multipart `config` part when an archive goes along).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildRequest {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_template: Option<String>,
    pub recipe: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<i64>,
    #[serde(default)]
    pub skip_pre_post: bool,
}

/// One finished step of a build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildLog {
    pub step: i64,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub cmd: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub exit: i64,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub elapsed_ms: i64,
}

/// The Build object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Build {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub base_template: String,
    #[serde(default)]
    pub recipe: Vec<String>,
    #[serde(default)]
    pub healthcheck: Option<String>,
    #[serde(default)]
    pub vcpus: i64,
    #[serde(default)]
    pub memory_mb: i64,
    pub status: String,
    #[serde(default)]
    pub current_step: i64,
    #[serde(default)]
    pub total_steps: i64,
    #[serde(default)]
    pub logs: Vec<BuildLog>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub sandbox_id: Option<String>,
    #[serde(default)]
    pub template_type: Option<String>,
    #[serde(default)]
    pub default_user: String,
    #[serde(default)]
    pub default_env: BTreeMap<String, String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
}

impl Build {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "success" | "failed" | "cancelled")
    }
}

/// A multipart/form-data body with a JSON `config` part and a binary `archive` part.
fn multipart(config: &[u8], archive: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!(
        "wrenn-{:016x}{:016x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
    );
    let mut body = Vec::with_capacity(config.len() + archive.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(config);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; \
             filename=\"archive\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(archive);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Client {
    /// Queues a build; with an archive (tar, tar.gz or zip bytes) for COPY.
    pub async fn create_build(&self, req: &BuildRequest, archive: Option<&[u8]>) -> Result<Build> {
        let url = self.endpoint(&["v1", "admin", "builds"]);
        let builder = match archive {
            None => self.request(Method::POST, url).json(req),
            Some(data) => {
                let config = serde_json::to_vec(req).map_err(|e| Error::Protocol {
                    url: url.to_string(),
                    detail: e.to_string(),
                })?;
                let (content_type, body) = multipart(&config, data);
                self.request(Method::POST, url)
                    .timeout(UPLOAD_TIMEOUT)
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(body)
            }
        };
        self.json(builder).await
    }

    pub async fn list_builds(&self) -> Result<Vec<Build>> {
        self.get(&["v1", "admin", "builds"]).await
    }

    pub async fn get_build(&self, id: &str) -> Result<Build> {
        self.get(&["v1", "admin", "builds", id]).await
    }

    pub async fn cancel_build(&self, id: &str) -> Result<()> {
        self.send(
            self.request(
                Method::POST,
                self.endpoint(&["v1", "admin", "builds", id, "cancel"]),
            )
            .timeout(Duration::from_secs(120)),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn multipart_framing() {
        let (ct, body) = super::multipart(b"{}", b"\x1f\x8bDATA");
        let boundary = ct.split("boundary=").nth(1).expect("boundary");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"config\"\r\nContent-Type: application/json\r\n\r\n{}\r\n"));
        assert!(text.ends_with(&format!("DATA\r\n--{boundary}--\r\n")));
    }
}
