//! CreateSandbox, DestroySandbox, ListSandboxes, PingSandbox, Terminate.

use super::{AgentService, capsule_error, lifecycle::snapshot_error, parse_id};
use crate::capsule::{
    Capsule, CapsuleRequest, CapsuleStatus, DEFAULT_DISK_MB, DEFAULT_MEMORY_MB, DEFAULT_VCPUS,
};
use crate::image::MINIMAL;
use crate::runtime::Runtime;
use crate::snapshot::CloneRequest;
use connectrpc::ConnectError;
use std::time::Duration;
use wrenn_proto::hostagent::v1::{
    CreateSandboxRequest, CreateSandboxResponse, ListSandboxesResponse, SandboxInfo,
};

const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a destroy waits for a pause/resume/snapshot of the same capsule to finish.
const TRANSITION_WAIT: Duration = Duration::from_secs(60);
/// Longest inactivity timeout accepted (a week); 0 disables auto-pause.
const MAX_TIMEOUT_SEC: i32 = 7 * 86_400;

/// The template a create names: team_id/template_id (hyphenated UUIDs) take precedence over the
/// `template` name; all-zero ids (or nothing at all) mean the built-in `minimal` image.
/// A template id `T` lives in `images/T/` like a named template.
pub(super) fn resolve_template(
    name: &str,
    team_id: &str,
    template_id: &str,
) -> Result<String, ConnectError> {
    let is_zero = |id: &str| id.chars().all(|c| c == '0' || c == '-');
    for (field, id) in [("team_id", team_id), ("template_id", template_id)] {
        if !id.is_empty() && !is_uuid(id) {
            return Err(ConnectError::invalid_argument(format!(
                "{field} must be a hyphenated UUID, got {id:?}"
            )));
        }
    }
    if !template_id.is_empty() {
        return Ok(if is_zero(template_id) {
            MINIMAL.to_owned()
        } else {
            template_id.to_owned()
        });
    }
    if name.is_empty() {
        return Ok(MINIMAL.to_owned());
    }
    crate::layout::validate_template_name(name)
        .map_err(|e| ConnectError::invalid_argument(e.to_string()))?;
    Ok(name.to_owned())
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, len)| {
            g.len() == len
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// 0 means "default"; negative is an error (the bounds themselves are checked by the request).
fn or_default(value: i32, default: u64, field: &str) -> Result<u64, ConnectError> {
    match value {
        0 => Ok(default),
        v if v > 0 => Ok(v as u64),
        v => Err(ConnectError::invalid_argument(format!(
            "{field} must not be negative, got {v}"
        ))),
    }
}

/// `last_active`: the TTL tracker's exact time when it tracks the capsule (the record on disk
/// moves in 10-s steps, see `Capsules::touch`).
fn info(
    capsule: &Capsule,
    transition: Option<&'static str>,
    last_active: Option<std::time::SystemTime>,
) -> SandboxInfo {
    let s = &capsule.state;
    let last_active_at_unix = last_active
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(s.last_active_at_unix, |d| {
            (d.as_secs() as i64).max(s.last_active_at_unix)
        });
    SandboxInfo {
        sandbox_id: capsule.id.to_string(),
        status: transition.unwrap_or(s.status.as_str()).to_owned(),
        template: s.template.clone(),
        vcpus: s.vcpus as i32,
        memory_mb: s.memory_mb as i32,
        // A paused capsule holds no network slot.
        host_ip: if s.status == CapsuleStatus::Running {
            capsule.network.capsule_ip().to_string()
        } else {
            String::new()
        },
        created_at_unix: s.created_at_unix,
        last_active_at_unix,
        timeout_sec: s.timeout_sec as i32,
        team_id: s.team_id.clone(),
        template_id: s.template_id.clone(),
        metadata: [("disk_size_mb".to_owned(), s.disk_mb.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Applies the capsule's defaults and identity via envd `POST /init` (after boot, and again after
/// every resume: envd writes `WRENN_SANDBOX_ID`/`WRENN_TEMPLATE_ID` from them).
pub async fn init_envd(http: &reqwest::Client, capsule: &Capsule) -> Result<(), ConnectError> {
    let s = &capsule.state;
    let mut body = serde_json::json!({
        "envVars": s.default_env,
        "sandboxId": capsule.id.to_string(),
        "templateId": if s.template_id.is_empty() { &s.template } else { &s.template_id },
    });
    if let Some(user) = s.default_user.as_deref().filter(|u| !u.is_empty()) {
        body["defaultUser"] = serde_json::Value::from(user);
    }
    let response = http
        .post(format!("{}/init", capsule.envd_url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(INIT_TIMEOUT)
        .send()
        .await
        .map_err(|e| ConnectError::unavailable(format!("envd /init: {e}")))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let message = format!("envd /init answered {status}: {text}");
    Err(if status.as_u16() == 400 {
        ConnectError::invalid_argument(message)
    } else {
        ConnectError::internal(message)
    })
}

impl<R: Runtime> AgentService<R> {
    pub(super) async fn create_impl(
        &self,
        req: CreateSandboxRequest,
    ) -> Result<CreateSandboxResponse, ConnectError> {
        let id = parse_id(&req.sandbox_id)?;
        let template = resolve_template(&req.template, &req.team_id, &req.template_id)?;
        let mut request = CapsuleRequest::new(id.clone(), template);
        request.vcpus = u32::try_from(or_default(req.vcpus, DEFAULT_VCPUS.into(), "vcpus")?)
            .unwrap_or(u32::MAX);
        request.memory_mb = or_default(req.memory_mb, DEFAULT_MEMORY_MB, "memory_mb")?;
        request.disk_mb = or_default(req.disk_size_mb, DEFAULT_DISK_MB, "disk_size_mb")?;
        if !(0..=MAX_TIMEOUT_SEC).contains(&req.timeout_sec) {
            return Err(ConnectError::invalid_argument(format!(
                "timeout_sec must be 0..={MAX_TIMEOUT_SEC}, got {}",
                req.timeout_sec
            )));
        }
        request.timeout_sec = req.timeout_sec as u32;
        request.internet = req.allow_internet_access.unwrap_or(true);
        request.default_user = (!req.default_user.is_empty()).then(|| req.default_user.clone());
        request.default_env = req.default_env.into_iter().collect();
        request.team_id = req.team_id;
        request.template_id = req.template_id;

        // A snapshot template starts with its memory state; its vCPUs/memory win (spec §H).
        if self
            .capsules
            .snapshot_template_meta(&request.template)
            .is_ok()
        {
            return self.create_clone(request).await;
        }
        let capsule = self.capsules.create(request).await.map_err(capsule_error)?;
        let init = match self.envd(id.as_str(), false) {
            Ok((_, envd)) => init_envd(&envd.http, &capsule).await,
            Err(e) => Err(e),
        };
        if let Err(e) = init {
            tracing::warn!(%id, error = %e, "envd /init failed; destroying the new capsule");
            self.forget_client(&id);
            if let Err(cleanup) = self.capsules.destroy(&id).await {
                tracing::warn!(%id, error = %cleanup, "cleanup after failed /init");
            }
            return Err(e);
        }
        self.track(&capsule);
        Ok(CreateSandboxResponse {
            sandbox_id: id.to_string(),
            status: capsule.state.status.as_str().to_owned(),
            host_ip: capsule.network.capsule_ip().to_string(),
            disk_size_mb: capsule.state.disk_mb as i32,
            ..Default::default()
        })
    }

    /// A clone of snapshot template `request.template` (already `/init`ed with its own id).
    async fn create_clone(
        &self,
        request: CapsuleRequest,
    ) -> Result<CreateSandboxResponse, ConnectError> {
        let mut clone = CloneRequest::new(request.id, request.template);
        clone.timeout_sec = request.timeout_sec;
        clone.internet = request.internet;
        clone.default_user = request.default_user;
        clone.default_env = request.default_env;
        clone.team_id = request.team_id;
        clone.template_id = request.template_id;
        let capsule = self
            .capsules
            .create_from_template(clone)
            .await
            .map_err(snapshot_error)?;
        self.track(&capsule);
        Ok(CreateSandboxResponse {
            sandbox_id: capsule.id.to_string(),
            status: capsule.state.status.as_str().to_owned(),
            host_ip: capsule.network.capsule_ip().to_string(),
            disk_size_mb: capsule.state.disk_mb as i32,
            ..Default::default()
        })
    }

    /// Starts the sampler and the inactivity timer for a running capsule.
    pub(super) fn track(&self, capsule: &Capsule) {
        let id = capsule.id.clone();
        self.metrics.track(
            id.clone(),
            self.metrics
                .gvisor_source(&id, &capsule.dir, capsule.state.vcpus),
        );
        self.ttl.track(id, capsule.state.timeout_sec.into());
    }

    /// Tracks the capsules `Capsules::recover` re-adopted: running ones resume sampling and
    /// keep their persisted idle time (a restart does not reset the timer).
    pub fn adopt_recovered(&self) {
        for capsule in self.capsules.list() {
            if capsule.state.status != CapsuleStatus::Running {
                continue;
            }
            let id = capsule.id.clone();
            self.metrics.track(
                id.clone(),
                self.metrics
                    .gvisor_source(&id, &capsule.dir, capsule.state.vcpus),
            );
            let last_active = std::time::UNIX_EPOCH
                + Duration::from_secs(capsule.state.last_active_at_unix.max(0) as u64);
            self.ttl
                .track_since(id, capsule.state.timeout_sec.into(), last_active);
        }
    }

    /// Forgets a capsule in every tracker (destroy, or a capsule lost while pausing).
    pub(super) fn forget(&self, id: &crate::id::CapsuleId) {
        self.ttl.untrack(id);
        self.metrics.untrack(id);
        self.connections.remove(id);
        self.forget_client(id);
    }

    pub(super) async fn destroy_impl(&self, sandbox_id: &str) -> Result<(), ConnectError> {
        let id = parse_id(sandbox_id)?;
        // A pause/resume/snapshot in progress owns the sandbox and its network: let it finish
        // rather than tear them down under it.
        let deadline = tokio::time::Instant::now() + TRANSITION_WAIT;
        while let Some(state) = self.transition(&id) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ConnectError::failed_precondition(format!(
                    "capsule {id} is still {state} after {TRANSITION_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.forget(&id);
        self.capsules.destroy(&id).await.map_err(capsule_error)
    }

    pub(super) fn list_impl(&self) -> ListSandboxesResponse {
        ListSandboxesResponse {
            sandboxes: self
                .capsules
                .list()
                .iter()
                .map(|c| info(c, self.transition(&c.id), self.ttl.last_active(&c.id)))
                .collect(),
            auto_paused_sandbox_ids: self
                .ttl
                .drain_auto_paused()
                .iter()
                .map(|id| id.to_string())
                .collect(),
            ..Default::default()
        }
    }

    pub(super) fn ping_impl(&self, sandbox_id: &str) -> Result<(), ConnectError> {
        let id = parse_id(sandbox_id)?;
        self.ttl.touch(&id);
        self.capsules.touch(&id).map_err(capsule_error)
    }

    /// Destroys every capsule (running and paused), then lets the server exit.
    pub(super) async fn terminate_impl(&self) -> Result<(), ConnectError> {
        let mut failed = Vec::new();
        for capsule in self.capsules.list() {
            self.forget(&capsule.id);
            if let Err(e) = self.capsules.destroy(&capsule.id).await {
                tracing::error!(id = %capsule.id, error = %e, "terminate: destroy failed");
                failed.push(format!("{}: {e}", capsule.id));
            }
        }
        self.shutdown.send_replace(true);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ConnectError::internal(format!(
                "terminate: {} capsule(s) not destroyed: {}",
                failed.len(),
                failed.join("; ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_resolve_by_name_or_id() {
        assert_eq!(resolve_template("", "", "").unwrap(), "minimal");
        assert_eq!(resolve_template("base-1", "", "").unwrap(), "base-1");
        let zero = "00000000-0000-0000-0000-000000000000";
        assert_eq!(resolve_template("x", zero, zero).unwrap(), "minimal");
        let id = "0123abcd-0000-4000-8000-00000000beef";
        assert_eq!(resolve_template("", zero, id).unwrap(), id);
        for bad in [
            ("../x", "", ""),
            ("a/b", "", ""),
            ("", "", "nope"),
            ("", "x", ""),
        ] {
            assert!(resolve_template(bad.0, bad.1, bad.2).is_err(), "{bad:?}");
        }
    }
}
