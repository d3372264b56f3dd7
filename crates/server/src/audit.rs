//! Audit trail: every state-changing action writes one `audit_logs` row (spec §B.12).
//!
//! Usage from a handler, ideally inside the action's own transaction:
//!
//! ```ignore
//! audit::record(&mut *tx, principal.team_id, &principal.actor,
//!     AuditEvent::new("sandbox", capsule_id.to_string(), "create")
//!         .metadata(json!({ "template": name }))).await?;
//! ```

use serde_json::Value;
use sqlx::AnyExecutor;

use crate::auth::Actor;
use crate::db::{DbResult, audit::AuditRow};
use crate::ids::{AuditLogId, TeamId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Visible to every team member.
    Team,
    /// Membership and similar changes: visible to owners and admins only.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Info,
    Warning,
    Error,
}

/// Who did it, as recorded.
#[derive(Debug, Clone)]
pub struct AuditActor {
    pub kind: &'static str,
    pub id: String,
    pub name: String,
}

impl AuditActor {
    /// Background work (reaper, reconciler, host monitor).
    pub fn system() -> Self {
        Self {
            kind: "system",
            id: String::new(),
            name: "system".into(),
        }
    }
}

impl From<&Actor> for AuditActor {
    fn from(actor: &Actor) -> Self {
        match actor {
            Actor::User(u) => Self {
                kind: "user",
                id: u.id.to_string(),
                name: u.name.clone(),
            },
            Actor::ApiKey(k) => Self {
                kind: "api_key",
                id: k.id.to_string(),
                name: k.name.clone(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub resource_type: &'static str,
    pub resource_id: String,
    pub action: &'static str,
    pub scope: Scope,
    pub status: Status,
    pub metadata: Value,
}

impl AuditEvent {
    /// A successful, team-scoped event without metadata.
    pub fn new(
        resource_type: &'static str,
        resource_id: impl Into<String>,
        action: &'static str,
    ) -> Self {
        Self {
            resource_type,
            resource_id: resource_id.into(),
            action,
            scope: Scope::Team,
            status: Status::Success,
            metadata: Value::Object(Default::default()),
        }
    }

    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

pub async fn record<'e>(
    ex: impl AnyExecutor<'e>,
    team: TeamId,
    actor: impl Into<AuditActor>,
    event: AuditEvent,
) -> DbResult<()> {
    let actor = actor.into();
    let row = AuditRow {
        id: AuditLogId::time_ordered(),
        team_id: team,
        actor_type: actor.kind.into(),
        actor_id: actor.id,
        actor_name: actor.name,
        resource_type: event.resource_type.into(),
        resource_id: event.resource_id,
        action: event.action.into(),
        scope: match event.scope {
            Scope::Team => "team",
            Scope::Admin => "admin",
        }
        .into(),
        status: match event.status {
            Status::Success => "success",
            Status::Info => "info",
            Status::Warning => "warning",
            Status::Error => "error",
        }
        .into(),
        metadata: event.metadata,
        created_at: crate::time::now(),
    };
    crate::db::audit::insert(ex, &row).await
}
