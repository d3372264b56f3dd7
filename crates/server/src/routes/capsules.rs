//! `/v1/capsules` lifecycle routes (spec §B.2): create, list, get, destroy, pause, resume,
//! ping, metrics, stats, usage. The work is in [`crate::lifecycle`]; exec, files, processes
//! and terminals live in their own modules.

use axum::extract::State;
use axum::http::StatusCode;
use connectrpc::client::CallOptions;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use wrenn_proto::hostagent::v1::GetSandboxMetricsRequest;

use crate::auth::Principal;
use crate::db::{metrics, sandboxes};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::lifecycle::sampler::{self, Stats, Usage};
use crate::lifecycle::{self, CapsuleView, CreateRequest};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_capsule, list_capsules))
        .routes(routes!(capsule_stats))
        .routes(routes!(capsule_usage))
        .routes(routes!(get_capsule, destroy_capsule))
        .routes(routes!(pause_capsule))
        .routes(routes!(resume_capsule))
        .routes(routes!(ping_capsule))
        .routes(routes!(capsule_metrics))
}

/// Create a capsule. Answers 202 with status `starting`; poll GET until `running`.
#[utoipa::path(post, path = "/v1/capsules", tag = "capsules", request_body = CreateRequest,
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 202, body = CapsuleView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "unknown template"),
        (status = 503, body = ErrorBody, description = "no_hosts_available")))]
async fn create_capsule(
    State(state): State<AppState>,
    p: Principal,
    Json(req): Json<CreateRequest>,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let row = lifecycle::create(&state, &p, req).await?;
    Ok((StatusCode::ACCEPTED, Json(CapsuleView::from(&row))))
}

/// The team's capsules, newest first, without `stopped` and `error` ones.
#[utoipa::path(get, path = "/v1/capsules", tag = "capsules",
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<CapsuleView>), (status = 401, body = ErrorBody)))]
async fn list_capsules(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<CapsuleView>>> {
    let rows = sandboxes::list_active(state.pool(), p.team_id).await?;
    Ok(Json(rows.iter().map(CapsuleView::from).collect()))
}

/// One capsule in any status (destroyed capsules stay readable as `stopped`).
#[utoipa::path(get, path = "/v1/capsules/{id}", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = CapsuleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_capsule(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<CapsuleView>> {
    let row = lifecycle::load(&state, p.team_id, &id).await?;
    Ok(Json(CapsuleView::from(&row)))
}

/// Destroy a capsule: 202, `stopping` then `stopped`. Idempotent for known capsules.
#[utoipa::path(delete, path = "/v1/capsules/{id}", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 202), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn destroy_capsule(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    lifecycle::destroy(&state, &p, &id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Pause a running capsule: 202 `pausing`, then `paused`. No request body.
#[utoipa::path(post, path = "/v1/capsules/{id}/pause", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 202, body = CapsuleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn pause_capsule(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let row = lifecycle::pause(&state, &p, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(CapsuleView::from(&row))))
}

/// Resume a paused capsule: 202 `resuming`, then `running`. No request body.
#[utoipa::path(post, path = "/v1/capsules/{id}/resume", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 202, body = CapsuleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume_capsule(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let row = lifecycle::resume(&state, &p, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(CapsuleView::from(&row))))
}

/// Reset the capsule's inactivity timer. Running capsules only.
#[utoipa::path(post, path = "/v1/capsules/{id}/ping", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn ping_capsule(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    lifecycle::ping(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct RangeQuery {
    range: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MetricPoint {
    timestamp_unix: i64,
    /// 0-100, normalised to the capsule's vCPUs.
    cpu_pct: f64,
    mem_bytes: i64,
    disk_bytes: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CapsuleMetrics {
    sandbox_id: String,
    range: String,
    points: Vec<MetricPoint>,
}

/// Metric ranges → (agent ring-buffer tier, seconds).
fn metrics_range(range: &str) -> Option<(&'static str, i64)> {
    Some(match range {
        "5m" => ("10m", 300),
        "10m" => ("10m", 600),
        "1h" => ("2h", 3_600),
        "2h" => ("2h", 7_200),
        "6h" => ("24h", 6 * 3_600),
        "12h" => ("24h", 12 * 3_600),
        "24h" => ("24h", 86_400),
        _ => return None,
    })
}

/// CPU, memory and disk points: live from the agent while running, stored while paused.
#[utoipa::path(get, path = "/v1/capsules/{id}/metrics", tag = "capsules",
    params(("id" = String, Path, description = "`cl-…`"), RangeQuery),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = CapsuleMetrics), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn capsule_metrics(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<CapsuleMetrics>> {
    let capsule = crate::ids::CapsuleId::parse(&id)?;
    let range = q
        .range
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "10m".into());
    let (tier, seconds) = metrics_range(&range)
        .ok_or_else(|| ApiError::invalid("range must be one of 5m, 10m, 1h, 2h, 6h, 12h, 24h"))?;
    let row = lifecycle::load(&state, p.team_id, &capsule.to_string()).await?;
    let since = crate::time::now() - seconds;
    let points: Vec<MetricPoint> = match row.status.as_str() {
        "running" => {
            let host = row
                .host_id
                .ok_or_else(|| ApiError::not_found("capsule has no host"))?;
            let host = crate::db::hosts::get(state.pool(), host)
                .await?
                .ok_or_else(|| ApiError::not_found("capsule has no host"))?;
            let agent = state.agents().client(&host.address)?;
            let resp = agent
                .get_sandbox_metrics_with_options(
                    GetSandboxMetricsRequest {
                        sandbox_id: row.id.to_string(),
                        range: tier.into(),
                        ..Default::default()
                    },
                    CallOptions::default().with_timeout(std::time::Duration::from_secs(15)),
                )
                .await?
                .into_owned();
            resp.points
                .iter()
                .filter(|pt| pt.timestamp_unix >= since)
                .map(|pt| MetricPoint {
                    timestamp_unix: pt.timestamp_unix,
                    cpu_pct: pt.cpu_pct.clamp(0.0, 100.0),
                    mem_bytes: pt.mem_bytes.max(0),
                    disk_bytes: pt.disk_bytes.max(0),
                })
                .collect()
        }
        "paused" => metrics::points(state.pool(), row.id, tier, since)
            .await?
            .into_iter()
            .map(|pt| MetricPoint {
                timestamp_unix: pt.ts,
                cpu_pct: pt.cpu_pct.clamp(0.0, 100.0),
                mem_bytes: pt.mem_bytes.max(0),
                disk_bytes: pt.disk_bytes.max(0),
            })
            .collect(),
        other => {
            return Err(ApiError::not_found(format!(
                "metrics not available for sandbox in state: {other}"
            )));
        }
    };
    Ok(Json(CapsuleMetrics {
        sandbox_id: row.id.to_string(),
        range,
        points,
    }))
}

/// Team-wide reservation: now, 30-day peaks, and a series over `range`.
#[utoipa::path(get, path = "/v1/capsules/stats", tag = "capsules", params(RangeQuery),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Stats), (status = 400, body = ErrorBody)))]
async fn capsule_stats(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Stats>> {
    let range = q
        .range
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "1h".into());
    Ok(Json(sampler::stats(&state, p.team_id, &range).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// `YYYY-MM-DD`; default `to` − 29 days.
    from: Option<String>,
    /// `YYYY-MM-DD`; default today (UTC).
    to: Option<String>,
}

/// Daily CPU and memory reservation in minutes (at most 92 days).
#[utoipa::path(get, path = "/v1/capsules/usage", tag = "capsules", params(UsageQuery),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Usage), (status = 400, body = ErrorBody)))]
async fn capsule_usage(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Json<Usage>> {
    Ok(Json(
        sampler::usage(&state, p.team_id, q.from.as_deref(), q.to.as_deref()).await?,
    ))
}
