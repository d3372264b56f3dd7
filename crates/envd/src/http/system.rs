//! `GET /health`, `GET /metrics`, `GET /envs`.

use super::{HttpError, own_conn};
use crate::conntrack::ConnId;
use crate::state::Envd;
use crate::sysstat;
use axum::extract::{ConnectInfo, State};
use axum::http::header::CACHE_CONTROL;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use std::collections::HashMap;

/// Also the readiness probe after a restore: the first call resumes a quiesced daemon.
pub(super) async fn health(
    State(envd): State<Envd>,
    conn: Option<Extension<ConnectInfo<ConnId>>>,
) -> Response {
    envd.lifecycle.resume(own_conn(conn)).await;
    (
        [(CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "version": crate::VERSION })),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
pub(super) struct Metrics {
    ts: i64,
    cpu_count: u32,
    cpu_used_pct: f32,
    mem_total_mib: u64,
    mem_used_mib: u64,
    mem_total: u64,
    mem_used: u64,
    disk_used: u64,
    disk_total: u64,
}

pub(super) async fn metrics(State(envd): State<Envd>) -> Result<Json<Metrics>, HttpError> {
    let mem = sysstat::read_memory().ok_or_else(|| HttpError::internal("reading /proc/meminfo"))?;
    let disk = sysstat::read_disk().ok_or_else(|| HttpError::internal("statvfs of /"))?;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    const MIB: u64 = 1024 * 1024;
    Ok(Json(Metrics {
        ts,
        cpu_count: sysstat::cpu_count(),
        cpu_used_pct: envd.lifecycle.cpu.get(),
        mem_total_mib: mem.total / MIB,
        mem_used_mib: mem.used / MIB,
        mem_total: mem.total,
        mem_used: mem.used,
        disk_used: disk.used,
        disk_total: disk.total,
    }))
}

pub(super) async fn envs(State(envd): State<Envd>) -> Json<HashMap<String, String>> {
    Json(envd.defaults().env_vars)
}
