//! The Capsule and Template objects of the API (spec §B.0), as SDK 0.3.0 parses them:
//! optional timestamps omitted rather than empty, metadata a string map omitted when empty.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::sandboxes::SandboxRow;
use crate::db::templates::TemplateRow;
use crate::ids::CapsuleId;
use crate::time::format_rfc3339 as ts;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CapsuleView {
    pub id: CapsuleId,
    /// `pending|starting|running|pausing|paused|snapshotting|resuming|stopping|hibernated|stopped|missing|error`.
    pub status: String,
    pub template: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    /// Auto-pause TTL in seconds; 0 = never.
    pub timeout_sec: i64,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    pub last_updated: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub disk_size_mb: i64,
    /// Why the capsule is in `error` (or was stopped by the system). Wrenn extension.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_reason: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl From<&SandboxRow> for CapsuleView {
    fn from(r: &SandboxRow) -> Self {
        Self {
            id: r.id,
            status: r.status.clone(),
            template: r.template.clone(),
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
            timeout_sec: r.timeout_sec,
            created_at: ts(r.created_at),
            started_at: r.started_at.map(ts),
            last_active_at: r.last_active_at.map(ts),
            last_updated: ts(r.last_updated),
            metadata: super::labels(&r.metadata),
            disk_size_mb: r.disk_size_mb,
            status_reason: r.status_reason.clone(),
        }
    }
}

/// The capsule as JSON (events carry it in `sandbox`).
pub fn capsule_json(r: &SandboxRow) -> serde_json::Value {
    serde_json::to_value(CapsuleView::from(r)).unwrap_or(serde_json::Value::Null)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateView {
    pub name: String,
    /// `base` | `snapshot`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub vcpus: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub memory_mb: i64,
    pub size_bytes: i64,
    pub created_at: String,
    /// Owned by the platform team (visible to every team).
    pub platform: bool,
    /// Built-in base template: cannot be deleted.
    pub protected: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl From<&TemplateRow> for TemplateView {
    fn from(t: &TemplateRow) -> Self {
        Self {
            name: t.name.clone(),
            kind: t.kind.clone(),
            vcpus: t.vcpus,
            memory_mb: t.memory_mb,
            size_bytes: t.size_bytes,
            created_at: ts(t.created_at),
            platform: t.is_platform(),
            protected: t.is_protected(),
            metadata: super::labels(&t.metadata),
        }
    }
}
