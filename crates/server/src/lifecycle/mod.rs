//! Capsule lifecycle (spec §B.2, §F.3) and snapshot templates (§B.4, §H).
//!
//! Every operation is asynchronous the way SDK 0.3.0 expects: the request validates, moves the
//! row to a transitional status with a compare-and-set (`starting`, `pausing`, `resuming`,
//! `stopping`), writes the audit row, publishes the user's event and returns; a background task
//! makes the agent call and moves the row on (`running`, `paused`, `stopped`, `error`),
//! publishing `capsule.state.changed`. The CAS makes the races benign: a destroy that lands while
//! a create boots wins, and the create task then destroys what it made.
//!
//! Snapshots are synchronous (the SDK waits up to 60 s for the template): `snapshotting`, agent
//! `CreateSnapshot` (which pauses, copies and resumes a running source), back to the original
//! status.
//!
//! Submodules: `view` (the Capsule and Template JSON), `validate` (request rules),
//! `reconcile` (agent → database sync, TTL auto-pauses), `sampler` (stats samples).

pub mod reconcile;
pub mod sampler;
pub mod validate;
pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use connectrpc::client::CallOptions;
use connectrpc::{ConnectError, ErrorCode};
use wrenn_proto::hostagent::v1::{
    CreateSandboxRequest, CreateSnapshotRequest, DeleteSnapshotRequest, DestroySandboxRequest,
    FlushSandboxMetricsRequest, ListSandboxesRequest, PauseSandboxRequest, ResumeSandboxRequest,
};

use crate::agent::AgentClient;
use crate::audit::{self, AuditActor, AuditEvent};
use crate::auth::Principal;
use crate::db::hosts::HostRow;
use crate::db::sandboxes::{self, Changes, SandboxRow};
use crate::db::templates::{self, TemplateRow};
use crate::db::{self, metrics};
use crate::error::{ApiError, ApiResult};
use crate::events::{Event, EventKind};
use crate::ids::{CapsuleId, HostId, TeamId, TemplateId};
use crate::scheduler::{self, Demand};
use crate::state::AppState;

pub use validate::{CreateRequest, CreateSpec};
pub use view::{CapsuleView, TemplateView};

/// Agent call limits: a cold boot or a clone takes seconds, a checkpoint of a big capsule more.
const CREATE_TIMEOUT: Duration = Duration::from_secs(180);
const PAUSE_TIMEOUT: Duration = Duration::from_secs(180);
const DESTROY_TIMEOUT: Duration = Duration::from_secs(90);
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
const SHORT_TIMEOUT: Duration = Duration::from_secs(15);

/// Statuses a destroy may start from (everything but terminal and `stopping` itself).
const DESTROYABLE: &[&str] = &[
    "pending",
    "starting",
    "running",
    "pausing",
    "paused",
    "snapshotting",
    "resuming",
    "hibernated",
    "missing",
];

fn opts(timeout: Duration) -> CallOptions {
    CallOptions::default().with_timeout(timeout)
}

/// The actor of background completions.
fn system() -> AuditActor {
    AuditActor::system()
}

/// 409 `invalid_state` with the current status (spec §B.2).
fn wrong_state(action: &str, status: &str) -> ApiError {
    ApiError::invalid_state(format!("cannot {action} a capsule in state {status}"))
}

fn agent_message(e: &ConnectError) -> String {
    e.message
        .clone()
        .unwrap_or_else(|| e.code.as_str().to_owned())
}

async fn host_agent(
    state: &AppState,
    host: Option<HostId>,
) -> ApiResult<(HostRow, Arc<AgentClient>)> {
    let Some(host) = host else {
        return Err(scheduler::no_hosts("the capsule has no host"));
    };
    let row = db::hosts::get(state.pool(), host)
        .await?
        .ok_or_else(|| scheduler::no_hosts("the capsule's host is gone"))?;
    let agent = state.agents().client(&row.address)?;
    Ok((row, agent))
}

/// Team-scoped row: bad id 400, absent or another team's 404.
pub async fn load(state: &AppState, team: TeamId, id: &str) -> ApiResult<SandboxRow> {
    let capsule = CapsuleId::parse(id)?;
    sandboxes::get(state.pool(), team, capsule)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("capsule {capsule} not found")))
}

/// Publishes a `capsule.*` event with the capsule as it is now.
async fn publish_capsule(state: &AppState, event: Event, capsule: CapsuleId) {
    let event = match sandboxes::get_unscoped(state.pool(), capsule).await {
        Ok(Some(row)) => event.sandbox(view::capsule_json(&row)),
        Ok(None) => event,
        Err(e) => {
            tracing::warn!(%capsule, error = %e, "loading the capsule for its event");
            event
        }
    };
    state.events().publish(event);
}

/// A system-side status change: `capsule.state.changed` with `from`/`to` (+ reason, error).
async fn publish_change(
    state: &AppState,
    row: &SandboxRow,
    from: &str,
    to: &str,
    reason: Option<&str>,
    error: Option<&str>,
) {
    let mut event = Event::new(
        EventKind::CapsuleStateChanged,
        row.team_id,
        system(),
        "sandbox",
        row.id.to_string(),
    )
    .meta("from", from)
    .meta("to", to);
    if let Some(reason) = reason {
        event = event.meta("reason", reason);
    }
    if let Some(error) = error {
        event = event.failed(error);
    }
    publish_capsule(state, event, row.id).await;
}

/// Writes an audit row outside a request transaction; failures are logged (the state change it
/// describes already happened).
async fn audit_system(state: &AppState, team: TeamId, event: AuditEvent) {
    if let Err(e) = audit::record(state.pool(), team, system(), event).await {
        tracing::warn!(error = %e, "writing an audit row");
    }
}

/// CAS wrapper for background tasks: logs database errors and reports them as "not changed".
async fn cas(state: &AppState, id: CapsuleId, from: &[&str], to: &str, changes: Changes) -> bool {
    match sandboxes::transition(state.pool(), id, from, to, &changes, crate::time::now()).await {
        Ok(changed) => changed,
        Err(e) => {
            tracing::error!(%id, to, error = %e, "updating capsule status");
            false
        }
    }
}

// ── create ───────────────────────────────────────────────────────────────────────────────

/// `POST /v1/capsules`: validates, resolves the template, places it, inserts `starting` and
/// starts the boot in the background.
pub async fn create(state: &AppState, p: &Principal, req: CreateRequest) -> ApiResult<SandboxRow> {
    let spec = validate::create_spec(req)?;
    let template = templates::resolve(state.pool(), p.team_id, &spec.template)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template {:?} not found", spec.template)))?;
    // A snapshot template brings its own vCPUs/memory (spec §H).
    let (vcpus, memory_mb) = if template.stored_by_id() {
        (
            if template.vcpus > 0 {
                template.vcpus
            } else {
                spec.vcpus
            },
            if template.memory_mb > 0 {
                template.memory_mb
            } else {
                spec.memory_mb
            },
        )
    } else {
        (spec.vcpus, spec.memory_mb)
    };
    let host = scheduler::place(state, p.team_id, Demand { vcpus, memory_mb }).await?;
    let now = crate::time::now();
    let row = SandboxRow {
        id: CapsuleId::random(),
        team_id: p.team_id,
        host_id: Some(host.id),
        template: spec.template.clone(),
        template_id: Some(template.id),
        template_team_id: Some(template.team_id),
        status: "starting".into(),
        status_reason: String::new(),
        vcpus,
        memory_mb,
        timeout_sec: spec.timeout_sec,
        disk_size_mb: spec.disk_size_mb.unwrap_or(0),
        host_ip: String::new(),
        metadata: serde_json::to_value(&spec.metadata).map_err(ApiError::internal)?,
        created_at: now,
        started_at: None,
        last_active_at: None,
        last_updated: now,
    };
    let actor = AuditActor::from(&p.actor);
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    sandboxes::insert(&mut *tx, &row).await?;
    audit::record(
        &mut *tx,
        p.team_id,
        actor.clone(),
        AuditEvent::new("sandbox", row.id.to_string(), "create").metadata(serde_json::json!({
            "template": row.template, "vcpus": vcpus, "memory_mb": memory_mb,
            "timeout_sec": row.timeout_sec, "host_id": host.id.to_string(),
        })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    tracing::info!(capsule = %row.id, template = %row.template, host = %host.id, "creating capsule");
    state.events().publish(
        Event::new(
            EventKind::CapsuleCreate,
            p.team_id,
            actor,
            "sandbox",
            row.id.to_string(),
        )
        .meta("template", row.template.clone())
        .sandbox(view::capsule_json(&row)),
    );
    let task_state = state.clone();
    let task_row = row.clone();
    tokio::spawn(async move { finish_create(task_state, task_row, template, host).await });
    Ok(row)
}

fn default_env<C: FromIterator<(String, String)>>(template: &TemplateRow) -> C {
    template
        .default_env
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// What the agent needs to find a template: base images by name (`images/<name>/`), snapshot
/// templates by id (`images/<uuid>/`, where CreateSnapshot put them).
pub(crate) fn agent_template(template: &TemplateRow) -> (String, String, String) {
    if template.stored_by_id() {
        (String::new(), template.team_id.db(), template.id.db())
    } else {
        (template.name.clone(), String::new(), String::new())
    }
}

async fn finish_create(state: AppState, row: SandboxRow, template: TemplateRow, host: HostRow) {
    let id = row.id;
    let agent = match state.agents().client(&host.address) {
        Ok(a) => a,
        Err(e) => {
            fail_create(&state, &row, &e.to_string()).await;
            return;
        }
    };
    let (name, team_id, template_id) = agent_template(&template);
    let request = CreateSandboxRequest {
        sandbox_id: id.to_string(),
        template: name,
        vcpus: row.vcpus as i32,
        memory_mb: row.memory_mb as i32,
        timeout_sec: row.timeout_sec as i32,
        disk_size_mb: row.disk_size_mb as i32,
        team_id,
        template_id,
        default_env: default_env(&template),
        // Built templates carry the recipe's final USER (spec §G); others keep the image's.
        default_user: if template.is_built() {
            template.default_user.clone()
        } else {
            String::new()
        },
        ..Default::default()
    };
    match agent
        .create_sandbox_with_options(request, opts(CREATE_TIMEOUT))
        .await
    {
        Ok(resp) => {
            let resp = resp.into_owned();
            let changes = Changes {
                started_now: true,
                host_ip: Some(resp.host_ip.clone()),
                disk_size_mb: (resp.disk_size_mb > 0).then_some(i64::from(resp.disk_size_mb)),
                ..Default::default()
            };
            if cas(&state, id, &["starting", "pending"], "running", changes).await {
                tracing::info!(capsule = %id, "capsule running");
                publish_change(&state, &row, "starting", "running", None, None).await;
            } else {
                // Destroyed (or otherwise moved on) while it booted: undo the boot.
                tracing::info!(capsule = %id, "capsule left `starting` while booting; destroying it");
                destroy_on_agent(&agent, id).await.ok();
            }
        }
        Err(e) => {
            let message = agent_message(&e);
            tracing::warn!(capsule = %id, code = e.code.as_str(), %message, "agent create failed");
            // A half-made capsule must not linger on the host.
            if !matches!(
                e.code,
                ErrorCode::InvalidArgument | ErrorCode::AlreadyExists
            ) {
                destroy_on_agent(&agent, id).await.ok();
            }
            fail_create(&state, &row, &message).await;
        }
    }
}

async fn fail_create(state: &AppState, row: &SandboxRow, message: &str) {
    let changes = Changes {
        reason: Some(message.to_owned()),
        ..Default::default()
    };
    if cas(state, row.id, &["starting", "pending"], "error", changes).await {
        audit_system(
            state,
            row.team_id,
            AuditEvent::new("sandbox", row.id.to_string(), "create")
                .status(audit::Status::Error)
                .metadata(serde_json::json!({ "error": message })),
        )
        .await;
        publish_change(
            state,
            row,
            "starting",
            "error",
            Some("cleanup_after_create_error"),
            Some(message),
        )
        .await;
    }
}

/// DestroySandbox; the agent's NotFound counts as done.
async fn destroy_on_agent(agent: &AgentClient, id: CapsuleId) -> Result<(), ConnectError> {
    let request = DestroySandboxRequest {
        sandbox_id: id.to_string(),
        ..Default::default()
    };
    match agent
        .destroy_sandbox_with_options(request, opts(DESTROY_TIMEOUT))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::NotFound => Ok(()),
        Err(e) => {
            tracing::warn!(capsule = %id, error = %e, "agent destroy failed");
            Err(e)
        }
    }
}

// ── pause / resume ───────────────────────────────────────────────────────────────────────

/// A user-requested move from one stable status to the next through a transitional one.
struct UserTransition {
    action: &'static str,
    from: &'static str,
    via: &'static str,
    to: &'static str,
    event: EventKind,
}

const PAUSE: UserTransition = UserTransition {
    action: "pause",
    from: "running",
    via: "pausing",
    to: "paused",
    event: EventKind::CapsulePause,
};

const RESUME: UserTransition = UserTransition {
    action: "resume",
    from: "paused",
    via: "resuming",
    to: "running",
    event: EventKind::CapsuleResume,
};

/// Moves the capsule to `t.via` with its audit row and event. `Ok(None)`: already at or on its
/// way to `t.to`, nothing to do; `Ok(Some(row))`: started (the row as it was before).
async fn begin_transition(
    state: &AppState,
    p: &Principal,
    id: &str,
    t: &UserTransition,
) -> ApiResult<Option<SandboxRow>> {
    let row = load(state, p.team_id, id).await?;
    match row.status.as_str() {
        s if s == t.to || s == t.via => return Ok(None),
        s if s == t.from => {}
        other => return Err(wrong_state(t.action, other)),
    }
    let actor = AuditActor::from(&p.actor);
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let now = crate::time::now();
    if !sandboxes::transition(&mut *tx, row.id, &[t.from], t.via, &Changes::default(), now).await? {
        drop(tx);
        let now = load(state, p.team_id, id).await?;
        return Err(wrong_state(t.action, &now.status));
    }
    audit::record(
        &mut *tx,
        p.team_id,
        actor.clone(),
        AuditEvent::new("sandbox", row.id.to_string(), t.action),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    publish_capsule(
        state,
        Event::new(t.event, p.team_id, actor, "sandbox", row.id.to_string()),
        row.id,
    )
    .await;
    Ok(Some(row))
}

/// `POST …/pause`: `running` → `pausing` (already `paused`/`pausing`: returned as is).
pub async fn pause(state: &AppState, p: &Principal, id: &str) -> ApiResult<SandboxRow> {
    if let Some(row) = begin_transition(state, p, id, &PAUSE).await? {
        let task_state = state.clone();
        tokio::spawn(async move { finish_pause(task_state, row).await });
    }
    load(state, p.team_id, id).await
}

/// Keeps the agent's metric ring buffers in the database, so a paused capsule still has
/// metrics (spec §B.2 metrics).
async fn flush_metrics(state: &AppState, agent: &AgentClient, id: CapsuleId) {
    let request = FlushSandboxMetricsRequest {
        sandbox_id: id.to_string(),
        ..Default::default()
    };
    let flushed = match agent
        .flush_sandbox_metrics_with_options(request, opts(SHORT_TIMEOUT))
        .await
    {
        Ok(r) => r.into_owned(),
        Err(e) => {
            tracing::debug!(capsule = %id, error = %e, "flushing metrics before pause");
            return;
        }
    };
    for (tier, points) in [
        ("10m", &flushed.points_10m),
        ("2h", &flushed.points_2h),
        ("24h", &flushed.points_24h),
    ] {
        let points: Vec<metrics::Point> = points
            .iter()
            .map(|p| metrics::Point {
                ts: p.timestamp_unix,
                cpu_pct: p.cpu_pct,
                mem_bytes: p.mem_bytes,
                disk_bytes: p.disk_bytes,
            })
            .collect();
        if let Err(e) = metrics::insert_points(state.pool(), id, tier, &points).await {
            tracing::warn!(capsule = %id, error = %e, "storing flushed metrics");
        }
    }
}

/// The agent's view of one capsule: `Some(status)` or `None` when it does not have it;
/// `Err` when the agent cannot be asked.
async fn agent_status(agent: &AgentClient, id: CapsuleId) -> Result<Option<String>, ConnectError> {
    let list = agent
        .list_sandboxes_with_options(ListSandboxesRequest::default(), opts(SHORT_TIMEOUT))
        .await?
        .into_owned();
    let wanted = id.to_string();
    Ok(list
        .sandboxes
        .into_iter()
        .find(|s| s.sandbox_id == wanted)
        .map(|s| s.status))
}

/// After a failed pause/resume/snapshot: puts the row where the agent says the capsule is.
async fn settle_after_failure(
    state: &AppState,
    agent: &AgentClient,
    row: &SandboxRow,
    from: &str,
    fallback: &str,
    message: &str,
) {
    let to = match agent_status(agent, row.id).await {
        Ok(Some(s)) if s == "running" || s == "paused" => s,
        Ok(None) => "stopped".to_owned(),
        // Still busy or unknown: assume the operation's starting point.
        Ok(Some(_)) | Err(_) => fallback.to_owned(),
    };
    let reason = (to == "stopped").then(|| format!("lost on the host: {message}"));
    let changes = Changes {
        reason: reason.clone(),
        ..Default::default()
    };
    if cas(state, row.id, &[from], &to, changes).await {
        publish_change(
            state,
            row,
            from,
            &to,
            reason.as_ref().map(|_| "host_failure"),
            Some(message),
        )
        .await;
    }
}

async fn finish_pause(state: AppState, row: SandboxRow) {
    let id = row.id;
    let agent = match host_agent(&state, row.host_id).await {
        Ok((_, a)) => a,
        Err(e) => {
            tracing::warn!(capsule = %id, error = %e, "pause: no agent");
            cas(&state, id, &["pausing"], "running", Changes::default()).await;
            return;
        }
    };
    flush_metrics(&state, &agent, id).await;
    let request = PauseSandboxRequest {
        sandbox_id: id.to_string(),
        ..Default::default()
    };
    match agent
        .pause_sandbox_with_options(request, opts(PAUSE_TIMEOUT))
        .await
    {
        Ok(_) => {
            if cas(&state, id, &["pausing"], "paused", Changes::default()).await {
                publish_change(&state, &row, "pausing", "paused", None, None).await;
            }
        }
        Err(e) => {
            let message = agent_message(&e);
            tracing::warn!(capsule = %id, %message, "agent pause failed");
            settle_after_failure(&state, &agent, &row, "pausing", "running", &message).await;
        }
    }
}

/// `POST …/resume`: `paused` → `resuming` (already `running`/`resuming`: returned as is).
pub async fn resume(state: &AppState, p: &Principal, id: &str) -> ApiResult<SandboxRow> {
    if let Some(row) = begin_transition(state, p, id, &RESUME).await? {
        let task_state = state.clone();
        tokio::spawn(async move { finish_resume(task_state, row).await });
    }
    load(state, p.team_id, id).await
}

async fn finish_resume(state: AppState, row: SandboxRow) {
    let id = row.id;
    let agent = match host_agent(&state, row.host_id).await {
        Ok((_, a)) => a,
        Err(e) => {
            tracing::warn!(capsule = %id, error = %e, "resume: no agent");
            cas(&state, id, &["resuming"], "paused", Changes::default()).await;
            return;
        }
    };
    let request = ResumeSandboxRequest {
        sandbox_id: id.to_string(),
        timeout_sec: row.timeout_sec as i32,
        ..Default::default()
    };
    match agent
        .resume_sandbox_with_options(request, opts(PAUSE_TIMEOUT))
        .await
    {
        Ok(resp) => {
            let resp = resp.into_owned();
            let changes = Changes {
                started_now: true,
                host_ip: Some(resp.host_ip),
                ..Default::default()
            };
            if cas(&state, id, &["resuming"], "running", changes).await {
                // Metrics of the paused period were only for GET …/metrics while paused.
                if let Err(e) = metrics::delete_points(state.pool(), id).await {
                    tracing::debug!(capsule = %id, error = %e, "dropping stored metrics");
                }
                publish_change(&state, &row, "resuming", "running", None, None).await;
            }
        }
        Err(e) => {
            let message = agent_message(&e);
            tracing::warn!(capsule = %id, %message, "agent resume failed");
            settle_after_failure(&state, &agent, &row, "resuming", "paused", &message).await;
        }
    }
}

// ── destroy ──────────────────────────────────────────────────────────────────────────────

/// `DELETE /v1/capsules/{id}`: → `stopping`, destroyed in the background. Idempotent: a
/// capsule already `stopping`, `stopped` or `error` is accepted again without doing anything
/// (the SDK retries DELETE on transport errors).
pub async fn destroy(state: &AppState, p: &Principal, id: &str) -> ApiResult<()> {
    let mut row = load(state, p.team_id, id).await?;
    let actor = AuditActor::from(&p.actor);
    // Two tries: a background task may move the row between our read and the CAS.
    for _ in 0..3 {
        if matches!(row.status.as_str(), "stopping" | "stopped" | "error") {
            return Ok(());
        }
        let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
        let now = crate::time::now();
        if sandboxes::transition(
            &mut *tx,
            row.id,
            DESTROYABLE,
            "stopping",
            &Changes::default(),
            now,
        )
        .await?
        {
            audit::record(
                &mut *tx,
                p.team_id,
                actor.clone(),
                AuditEvent::new("sandbox", row.id.to_string(), "destroy")
                    .metadata(serde_json::json!({ "from": row.status })),
            )
            .await?;
            tx.commit().await.map_err(ApiError::internal)?;
            publish_capsule(
                state,
                Event::new(
                    EventKind::CapsuleDestroy,
                    p.team_id,
                    actor,
                    "sandbox",
                    row.id.to_string(),
                ),
                row.id,
            )
            .await;
            let task_state = state.clone();
            tokio::spawn(async move { finish_destroy(task_state, row).await });
            return Ok(());
        }
        drop(tx);
        row = load(state, p.team_id, id).await?;
    }
    Err(ApiError::conflict("the capsule is changing state; retry"))
}

async fn finish_destroy(state: AppState, row: SandboxRow) {
    let id = row.id;
    let mut reason = None;
    // Never placed (or its host is gone): nothing to tear down.
    if row.host_id.is_some() {
        match host_agent(&state, row.host_id).await {
            Ok((_, agent)) => {
                let mut last = None;
                for attempt in 0..3u64 {
                    match destroy_on_agent(&agent, id).await {
                        Ok(()) => {
                            last = None;
                            break;
                        }
                        Err(e) => {
                            last = Some(agent_message(&e));
                            tokio::time::sleep(Duration::from_secs(1 + attempt * 2)).await;
                        }
                    }
                }
                // The reconciler destroys what a stopped row leaves behind on a host.
                reason = last.map(|m| format!("destroy on the host failed: {m}"));
            }
            Err(e) => reason = Some(format!("host unavailable: {}", e.message)),
        }
    }
    if let Err(e) = metrics::delete_points(state.pool(), id).await {
        tracing::debug!(capsule = %id, error = %e, "dropping stored metrics");
    }
    let changes = Changes {
        reason: reason.clone(),
        ..Default::default()
    };
    if cas(&state, id, &["stopping"], "stopped", changes).await {
        tracing::info!(capsule = %id, "capsule stopped");
        publish_change(&state, &row, "stopping", "stopped", None, reason.as_deref()).await;
    }
}

// ── ping ─────────────────────────────────────────────────────────────────────────────────

/// `POST …/ping`: resets the agent's inactivity timer; `running` only (409 otherwise).
pub async fn ping(state: &AppState, p: &Principal, id: &str) -> ApiResult<()> {
    let row = load(state, p.team_id, id).await?;
    if row.status != "running" {
        return Err(crate::capsules::access::not_running(&row.status));
    }
    let (_, agent) = host_agent(state, row.host_id).await?;
    agent
        .ping_sandbox_with_options(
            wrenn_proto::hostagent::v1::PingSandboxRequest {
                sandbox_id: row.id.to_string(),
                ..Default::default()
            },
            opts(SHORT_TIMEOUT),
        )
        .await?;
    sandboxes::touch(state.pool(), row.id, crate::time::now()).await?;
    Ok(())
}

// ── snapshots ────────────────────────────────────────────────────────────────────────────

/// `POST /v1/snapshots` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct SnapshotRequest {
    /// `cl-…`, required.
    pub sandbox_id: Option<String>,
    /// SafeName; defaults to `template-` + 8 hex.
    pub name: Option<String>,
}

pub async fn create_snapshot(
    state: &AppState,
    p: &Principal,
    req: SnapshotRequest,
) -> ApiResult<TemplateRow> {
    let Some(sandbox_id) = req.sandbox_id.filter(|s| !s.is_empty()) else {
        return Err(ApiError::invalid("sandbox_id is required"));
    };
    let capsule = CapsuleId::parse(&sandbox_id)?;
    let name = match req.name.filter(|n| !n.is_empty()) {
        Some(n) => validate::safe_name("name", &n)?,
        None => format!("template-{}", crate::auth::random_hex(4)),
    };
    let row = sandboxes::get(state.pool(), p.team_id, capsule)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("capsule {capsule} not found")))?;
    if let Some(existing) = templates::resolve(state.pool(), p.team_id, &name).await? {
        return Err(if existing.is_platform() {
            ApiError::conflict(format!(
                "template name {name:?} is reserved by the platform"
            ))
        } else {
            ApiError::conflict(format!("template {name:?} already exists"))
        });
    }
    let original = row.status.clone();
    if original != "running" && original != "paused" {
        return Err(wrong_state("snapshot", &original));
    }
    let (_, agent) = host_agent(state, row.host_id).await?;
    let now = crate::time::now();
    let template = TemplateRow {
        id: TemplateId::random(),
        name: name.clone(),
        kind: "snapshot".into(),
        vcpus: row.vcpus,
        memory_mb: row.memory_mb,
        size_bytes: 0,
        team_id: p.team_id,
        default_user: "root".into(),
        default_env: serde_json::json!({}),
        metadata: row.metadata.clone(),
        created_at: now,
    };
    // Status first (blocks pause/destroy races), then the name (the unique key settles races
    // between two snapshots of one name).
    if !sandboxes::transition(
        state.pool(),
        row.id,
        &[&original],
        "snapshotting",
        &Changes::default(),
        now,
    )
    .await?
    {
        let current = load(state, p.team_id, &sandbox_id).await?;
        return Err(wrong_state("snapshot", &current.status));
    }
    if let Err(e) = templates::insert(state.pool(), &template).await {
        cas(
            state,
            row.id,
            &["snapshotting"],
            &original,
            Changes::default(),
        )
        .await;
        return Err(if e.is_unique_violation() {
            ApiError::conflict(format!("template {name:?} already exists"))
        } else {
            e.into()
        });
    }
    let request = CreateSnapshotRequest {
        sandbox_id: row.id.to_string(),
        team_id: p.team_id.db(),
        template_id: template.id.db(),
        ..Default::default()
    };
    let result = agent
        .create_snapshot_with_options(request, opts(SNAPSHOT_TIMEOUT))
        .await;
    match result {
        Ok(resp) => {
            let size = resp.into_owned().size_bytes;
            templates::set_size(state.pool(), template.id, size).await?;
            // The agent resumes a running source itself (live snapshot, spec §B.4 [N]).
            cas(
                state,
                row.id,
                &["snapshotting"],
                &original,
                Changes::default(),
            )
            .await;
            let actor = AuditActor::from(&p.actor);
            audit::record(
                state.pool(),
                p.team_id,
                actor.clone(),
                AuditEvent::new("template", name.clone(), "snapshot").metadata(serde_json::json!({
                    "sandbox_id": row.id.to_string(), "template_id": template.id.to_string(),
                    "size_bytes": size,
                })),
            )
            .await?;
            state.events().publish(
                Event::new(
                    EventKind::SnapshotCreate,
                    p.team_id,
                    actor,
                    "snapshot",
                    name.clone(),
                )
                .meta("name", name.clone())
                .meta("sandbox_id", row.id.to_string()),
            );
            Ok(TemplateRow {
                size_bytes: size,
                ..template
            })
        }
        Err(e) => {
            let message = agent_message(&e);
            tracing::warn!(capsule = %row.id, %message, "agent snapshot failed");
            if let Err(e) = templates::delete(state.pool(), p.team_id, template.id).await {
                tracing::warn!(error = %e, "removing the template row of a failed snapshot");
            }
            settle_after_failure(state, &agent, &row, "snapshotting", &original, &message).await;
            Err(e.into())
        }
    }
}

/// `DELETE /v1/snapshots/{name}`: the team's snapshot template, on every host.
pub async fn delete_snapshot(state: &AppState, p: &Principal, name: &str) -> ApiResult<()> {
    let name = validate::safe_name("name", name)?;
    let template = templates::resolve(state.pool(), p.team_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("template {name:?} not found")))?;
    if template.is_platform() {
        return Err(ApiError::forbidden(format!(
            "{name:?} is a platform template and cannot be deleted"
        )));
    }
    delete_template(state, p.team_id, AuditActor::from(&p.actor), &template).await
}

/// Deletes `template` (owned by `team`): refused while capsules made from it exist; snapshot
/// images are removed from every live host first. Shared by the team route and the admin one.
pub(crate) async fn delete_template(
    state: &AppState,
    team: TeamId,
    actor: AuditActor,
    template: &TemplateRow,
) -> ApiResult<()> {
    let name = template.name.clone();
    let clones = sandboxes::count_using_template(state.pool(), template.id).await?;
    if clones > 0 {
        return Err(ApiError::conflict(format!(
            "{clones} capsule(s) created from {name:?} still exist; destroy them first"
        )));
    }
    if template.kind == "snapshot" {
        for host in db::hosts::list_live(state.pool()).await? {
            let agent = state.agents().client(&host.address)?;
            let request = DeleteSnapshotRequest {
                team_id: template.team_id.db(),
                template_id: template.id.db(),
                ..Default::default()
            };
            match agent
                .delete_snapshot_with_options(request, opts(SHORT_TIMEOUT * 4))
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    if !templates::delete(&mut *tx, team, template.id).await? {
        return Err(ApiError::not_found(format!("template {name:?} not found")));
    }
    audit::record(
        &mut *tx,
        team,
        actor.clone(),
        AuditEvent::new("template", name.clone(), "delete")
            .metadata(serde_json::json!({ "template_id": template.id.to_string() })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    state.events().publish(
        Event::new(
            EventKind::SnapshotDelete,
            team,
            actor,
            "snapshot",
            name.clone(),
        )
        .meta("name", name),
    );
    Ok(())
}

/// String labels of a capsule's metadata column.
pub(crate) fn labels(value: &serde_json::Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

// ── background tasks ─────────────────────────────────────────────────────────────────────

/// The control plane's background loops; aborted on drop.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the reconciler, the stats sampler and the template build workers.
pub fn spawn_background(state: &AppState) -> Background {
    Background {
        tasks: vec![
            tokio::spawn(reconcile::run(state.clone(), reconcile::INTERVAL)),
            tokio::spawn(sampler::run(state.clone(), sampler::INTERVAL)),
            crate::builds::workers::spawn(state),
        ],
    }
}
