//! `/v1/snapshots` (spec §B.4): snapshot templates of the team, plus the platform's base
//! templates in the list.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::db::templates;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use crate::lifecycle::{self, SnapshotRequest, TemplateView};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_snapshot, list_snapshots))
        .routes(routes!(delete_snapshot))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct CreateQuery {
    /// Accepted for SDK compatibility and ignored: template names are immutable.
    #[allow(dead_code)]
    overwrite: Option<String>,
}

/// A snapshot template from a running or paused capsule (memory state included). A running
/// capsule keeps running.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", request_body = SnapshotRequest,
    params(CreateQuery), security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 201, body = TemplateView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_snapshot(
    State(state): State<AppState>,
    p: Principal,
    Query(_q): Query<CreateQuery>,
    Json(req): Json<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let template = lifecycle::create_snapshot(&state, &p, req).await?;
    Ok((StatusCode::CREATED, Json(TemplateView::from(&template))))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// `base` | `snapshot`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The team's templates and the platform's, newest first.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", params(ListQuery),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<TemplateView>), (status = 400, body = ErrorBody)))]
async fn list_snapshots(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<TemplateView>>> {
    let kind = match q.kind.as_deref() {
        None | Some("") => None,
        Some(k @ ("base" | "snapshot")) => Some(k),
        Some(_) => return Err(ApiError::invalid("type must be base or snapshot")),
    };
    let rows = templates::list_visible(state.pool(), p.team_id, kind).await?;
    Ok(Json(rows.iter().map(TemplateView::from).collect()))
}

/// Delete one of the team's templates (platform templates: 403).
#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "snapshots",
    params(("name" = String, Path)), security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_snapshot(
    State(state): State<AppState>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    lifecycle::delete_snapshot(&state, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
