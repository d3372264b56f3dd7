//! `wrenn-client`: a typed client of the Wrenn control plane's REST API (spec §B) and its PTY
//! WebSocket (§C.3). Used by the `wrenn` CLI's client commands.
//!
//! ```no_run
//! # async fn demo() -> wrenn_client::Result<()> {
//! use wrenn_client::{Client, Credential, CreateCapsule};
//! let client = Client::new("http://localhost:8080", Some(Credential::ApiKey("wrn_…".into())))?;
//! let capsule = client.create_capsule(&CreateCapsule::default()).await?;
//! let capsule = client.wait_for_status(&capsule.id, &["running"], std::time::Duration::from_secs(60), |_| {}).await?;
//! # Ok(()) }
//! ```

pub mod builds;
mod error;
pub mod pty;
mod types;

pub use builds::{Build, BuildLog, BuildRequest};
pub use error::{Error, ErrorKind, Result};
pub use pty::{PtyEvent, PtyReader, PtyStart, PtyWriter};
pub use types::*;

use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

/// How requests authenticate (spec §B.0).
#[derive(Clone)]
pub enum Credential {
    /// `X-API-Key: wrn_…`: team credential; capsule and snapshot routes.
    ApiKey(String),
    /// `Authorization: Bearer <jwt>` from `POST /v1/auth/login`: every route, and the only one
    /// the user routes (API keys, teams) accept.
    Jwt(String),
}

impl std::fmt::Debug for Credential {
    // Never print the secret itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("ApiKey(…)"),
            Credential::Jwt(_) => f.write_str("Jwt(…)"),
        }
    }
}

/// Default time limit of one request (exec and snapshot set their own).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a snapshot may take (the server pauses, copies and resumes a capsule).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Between two `GET /v1/capsules/{id}` while waiting for a status (the SDK's pace).
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    credential: Option<Credential>,
}

impl Client {
    /// A client of the control plane at `base_url` (`http://host:port`, optionally with a path
    /// prefix).
    pub fn new(base_url: &str, credential: Option<Credential>) -> Result<Client> {
        let bad = |detail: String| Error::BaseUrl {
            url: base_url.to_owned(),
            detail,
        };
        let base = Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("expected http://… or https://…".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wrenn-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Client {
            http,
            base,
            credential,
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// `base` + the path segments, each percent-encoded (ids and names never escape their
    /// segment).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, url).timeout(REQUEST_TIMEOUT);
        match &self.credential {
            Some(Credential::ApiKey(key)) => builder.header("X-API-Key", key),
            Some(Credential::Jwt(token)) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends, and turns a non-2xx answer into [`Error::Api`].
    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let request = builder.build().map_err(|e| Error::Protocol {
            url: self.base.to_string(),
            detail: e.to_string(),
        })?;
        let url = request.url().clone();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| Error::network(url.as_str(), &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(Error::from_body(status.as_u16(), &body))
    }

    async fn json<T: DeserializeOwned>(&self, builder: reqwest::RequestBuilder) -> Result<T> {
        let response = self.send(builder).await?;
        let url = response.url().to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| Error::network(&url, &e))?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            url,
            detail: format!(
                "{e} in {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        })
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.json(self.request(Method::GET, self.endpoint(segments)))
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T> {
        self.json(
            self.request(Method::POST, self.endpoint(segments))
                .json(body),
        )
        .await
    }

    async fn delete(&self, segments: &[&str]) -> Result<()> {
        self.send(self.request(Method::DELETE, self.endpoint(segments)))
            .await
            .map(drop)
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.get(&["health"]).await
    }

    /// `POST /v1/auth/login`: a JWT for the user's default team (valid 6 h).
    pub async fn login(&self, email: &str, password: &str) -> Result<AuthResponse> {
        let body = serde_json::json!({ "email": email, "password": password });
        // Never sends a stored credential along with a password.
        let builder = self
            .http
            .post(self.endpoint(&["v1", "auth", "login"]))
            .timeout(REQUEST_TIMEOUT)
            .json(&body);
        self.json(builder).await
    }

    // ---- capsules (spec §B.2) ----

    pub async fn list_capsules(&self) -> Result<Vec<Capsule>> {
        self.get(&["v1", "capsules"]).await
    }

    pub async fn get_capsule(&self, id: &str) -> Result<Capsule> {
        self.get(&["v1", "capsules", id]).await
    }

    /// Answers at once (status `starting`); see [`Client::wait_for_status`].
    pub async fn create_capsule(&self, req: &CreateCapsule) -> Result<Capsule> {
        self.post(&["v1", "capsules"], req).await
    }

    /// Answers at once (status `stopping`); idempotent.
    pub async fn destroy_capsule(&self, id: &str) -> Result<()> {
        self.delete(&["v1", "capsules", id]).await
    }

    pub async fn pause_capsule(&self, id: &str) -> Result<Capsule> {
        self.post(&["v1", "capsules", id, "pause"], &serde_json::json!({}))
            .await
    }

    pub async fn resume_capsule(&self, id: &str) -> Result<Capsule> {
        self.post(&["v1", "capsules", id, "resume"], &serde_json::json!({}))
            .await
    }

    /// Runs a command to completion. The HTTP timeout is the command's own plus a margin, so
    /// the server's answer (a result, or 504 `timeout`) arrives first.
    pub async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecResult> {
        let command_timeout = req.timeout_sec.filter(|t| *t > 0).unwrap_or(30) as u64;
        let builder = self
            .request(Method::POST, self.endpoint(&["v1", "capsules", id, "exec"]))
            .timeout(Duration::from_secs(command_timeout + 15))
            .json(req);
        self.json(builder).await
    }

    /// Polls the capsule until its status is one of `want`, calling `on_status` on every answer.
    /// A terminal status (`stopped`, `error`, `missing`) not in `want` fails at once. A 404 counts
    /// as `stopped` (a destroyed capsule may be forgotten).
    pub async fn wait_for_status(
        &self,
        id: &str,
        want: &[&str],
        timeout: Duration,
        mut on_status: impl FnMut(&Capsule),
    ) -> Result<Capsule> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let capsule = match self.get_capsule(id).await {
                Ok(c) => c,
                Err(Error::Api { status: 404, .. }) if want.contains(&"stopped") => {
                    return Ok(Capsule {
                        id: id.to_owned(),
                        status: "stopped".into(),
                        template: String::new(),
                        vcpus: 0,
                        memory_mb: 0,
                        timeout_sec: 0,
                        created_at: None,
                        started_at: None,
                        last_active_at: None,
                        metadata: Default::default(),
                        status_reason: None,
                        extra: Default::default(),
                    });
                }
                Err(e) => return Err(e),
            };
            on_status(&capsule);
            if want.contains(&capsule.status.as_str()) {
                return Ok(capsule);
            }
            if capsule.is_terminal() {
                return Err(Error::CapsuleFailed {
                    id: capsule.id,
                    status: capsule.status,
                    reason: capsule.status_reason.filter(|r| !r.is_empty()),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::WaitTimeout {
                    id: capsule.id,
                    want: want.join(" or "),
                    status: capsule.status,
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    // ---- snapshots / templates (spec §B.4) ----

    /// Templates visible to the team (its own and the platform's); `kind` = `base`|`snapshot`.
    pub async fn list_templates(&self, kind: Option<&str>) -> Result<Vec<Template>> {
        let mut builder = self.request(Method::GET, self.endpoint(&["v1", "snapshots"]));
        if let Some(kind) = kind {
            builder = builder.query(&[("type", kind)]);
        }
        self.json(builder).await
    }

    /// Snapshots a running or paused capsule into a template (synchronous).
    pub async fn create_snapshot(&self, capsule_id: &str, name: Option<&str>) -> Result<Template> {
        let mut body = serde_json::json!({ "sandbox_id": capsule_id });
        if let Some(name) = name {
            body["name"] = name.into();
        }
        let builder = self
            .request(Method::POST, self.endpoint(&["v1", "snapshots"]))
            .timeout(SNAPSHOT_TIMEOUT)
            .json(&body);
        self.json(builder).await
    }

    pub async fn delete_snapshot(&self, name: &str) -> Result<()> {
        self.delete(&["v1", "snapshots", name]).await
    }

    // ---- API keys (spec §B.8; JWT only) ----

    /// The answer carries the key itself (`key`), shown only this once.
    pub async fn create_api_key(&self, name: Option<&str>) -> Result<ApiKey> {
        let body = match name {
            Some(n) => serde_json::json!({ "name": n }),
            None => serde_json::json!({}),
        };
        self.post(&["v1", "api-keys"], &body).await
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.get(&["v1", "api-keys"]).await
    }

    pub async fn delete_api_key(&self, id: &str) -> Result<()> {
        self.delete(&["v1", "api-keys", id]).await
    }
}
