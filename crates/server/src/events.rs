//! The in-process event bus behind `GET /v1/events/stream` (spec §B.5).
//!
//! Publishers (capsule and snapshot routes, background completions, the reconciler) call
//! [`EventBus::publish`]; each SSE subscriber gets a [`tokio::sync::broadcast`] receiver and
//! keeps the events of its own team. A subscriber that falls behind loses the oldest events
//! (the spec's "slow consumers drop events"), it is never disconnected for it.
//!
//! Event names and fields are exactly what SDK 0.3.0's `SSEEvent` model accepts: any other
//! `event`, `outcome` or `actor.type` value would raise in the SDK's iterator.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::audit::AuditActor;
use crate::ids::TeamId;

/// Events buffered per subscriber before the oldest are dropped.
const CAPACITY: usize = 256;

/// The SDK's `SSEEvent.event` enum (minus `connected`, which only the stream itself sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    #[serde(rename = "capsule.create")]
    CapsuleCreate,
    #[serde(rename = "capsule.pause")]
    CapsulePause,
    #[serde(rename = "capsule.resume")]
    CapsuleResume,
    #[serde(rename = "capsule.destroy")]
    CapsuleDestroy,
    #[serde(rename = "capsule.state.changed")]
    CapsuleStateChanged,
    #[serde(rename = "template.snapshot.create")]
    SnapshotCreate,
    #[serde(rename = "template.snapshot.delete")]
    SnapshotDelete,
    #[serde(rename = "host.up")]
    HostUp,
    #[serde(rename = "host.down")]
    HostDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventActor {
    /// `user` | `api_key` | `system`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl From<AuditActor> for EventActor {
    fn from(a: AuditActor) -> Self {
        Self {
            kind: a.kind,
            id: a.id,
            name: a.name,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EventResource {
    pub id: String,
    /// `sandbox` | `snapshot` | `host`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// One event, serialized as the `data:` line of an SSE frame.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// RFC 3339 UTC.
    pub timestamp: String,
    pub team_id: TeamId,
    pub actor: EventActor,
    pub resource: EventResource,
    /// String values only (the SDK model is `dict[str, str]`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The capsule as the API shows it, for `capsule.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<serde_json::Value>,
}

impl Event {
    pub fn new(
        event: EventKind,
        team_id: TeamId,
        actor: impl Into<AuditActor>,
        resource_kind: &'static str,
        resource_id: impl Into<String>,
    ) -> Self {
        // State changes and host events carry no outcome (spec §B.5).
        let outcome = match event {
            EventKind::CapsuleStateChanged | EventKind::HostUp | EventKind::HostDown => None,
            _ => Some(Outcome::Success),
        };
        Self {
            event,
            outcome,
            timestamp: crate::time::format_rfc3339(crate::time::now()),
            team_id,
            actor: actor.into().into(),
            resource: EventResource {
                id: resource_id.into(),
                kind: resource_kind,
            },
            metadata: BTreeMap::new(),
            error: None,
            sandbox: None,
        }
    }

    pub fn meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// Marks the event failed (no-op on kinds without an outcome, where only `error` is set).
    pub fn failed(mut self, error: impl Into<String>) -> Self {
        if self.outcome.is_some() {
            self.outcome = Some(Outcome::Error);
        }
        self.error = Some(error.into());
        self
    }

    pub fn sandbox(mut self, capsule: serde_json::Value) -> Self {
        self.sandbox = Some(capsule);
        self
    }
}

/// Cheap to clone; one per [`crate::AppState`].
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self { tx }
    }

    /// Delivers to current subscribers; nobody listening is fine.
    pub fn publish(&self, event: Event) {
        tracing::debug!(event = ?event.event, resource = %event.resource.id, "event");
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let e = Event::new(
            EventKind::CapsulePause,
            TeamId::PLATFORM,
            AuditActor::system(),
            "sandbox",
            "cl-x",
        )
        .meta("reason", "ttl_expired");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "capsule.pause");
        assert_eq!(v["outcome"], "success");
        assert_eq!(
            v["actor"],
            serde_json::json!({"type": "system", "name": "system"})
        );
        assert_eq!(
            v["resource"],
            serde_json::json!({"id": "cl-x", "type": "sandbox"})
        );
        assert_eq!(v["metadata"]["reason"], "ttl_expired");
        assert!(v.get("error").is_none() && v.get("sandbox").is_none());

        let s = Event::new(
            EventKind::CapsuleStateChanged,
            TeamId::PLATFORM,
            AuditActor::system(),
            "sandbox",
            "cl-x",
        )
        .failed("boom");
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("outcome").is_none(), "{v}");
        assert_eq!(v["error"], "boom");
    }
}
