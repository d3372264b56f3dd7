//! `/v1/admin/builds` (spec §B.13): template builds, for platform admins only: a user JWT or
//! session of an admin, or an API key created by an active admin (the `admin-api-key` that
//! `wrenn up` writes, `WRENN_API_KEY` of the CLI).
//!
//! `POST` takes JSON, or `multipart/form-data` with a `config` part (the same JSON) and an
//! optional `archive` part (tar, tar.gz or zip, ≤ 100 MiB) for COPY. Everything is checked
//! before the build is queued: bad input is a 400 naming the problem and nothing starts.

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Actor, Principal};
use crate::builds::{self, BuildRequest, BuildView, archive::MAX_ARCHIVE_BYTES};
use crate::db::users::UserStatus;
use crate::db::{api_keys, users};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::ids::UserId;
use crate::state::AppState;

/// Largest `config` part of a multipart request.
const MAX_CONFIG_BYTES: usize = 1 << 20;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        // The archive's own limit is checked while it is read (a precise 400, not a 413).
        .routes(routes!(create_build, list_builds))
        .layer(DefaultBodyLimit::disable())
        .routes(routes!(get_build))
        .routes(routes!(cancel_build))
}

/// The caller must be a platform admin; returns the user acting.
pub(crate) async fn require_admin(state: &AppState, p: &Principal) -> ApiResult<UserId> {
    let user = match &p.actor {
        Actor::User(u) if u.is_admin => return Ok(u.id),
        Actor::User(_) => None,
        Actor::ApiKey(k) => match api_keys::creator(state.pool(), k.id).await? {
            Some(id) => users::by_id(state.pool(), id).await?,
            None => None,
        },
    };
    match user {
        Some(u) if u.is_admin && u.status == UserStatus::Active => Ok(u.id),
        _ => Err(ApiError::forbidden(
            "template builds are for platform admins (a user login or an API key of an admin)",
        )),
    }
}

/// Queue a template build. JSON body, or multipart with `config` (JSON) and `archive`.
#[utoipa::path(post, path = "/v1/admin/builds", tag = "admin",
    request_body(content = BuildRequest, description = "JSON, or multipart/form-data with parts `config` (this JSON) and `archive` (tar, tar.gz or zip, ≤ 100 MiB)"),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 201, body = BuildView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_build(
    State(state): State<AppState>,
    p: Principal,
    request: Request,
) -> ApiResult<(StatusCode, Json<BuildView>)> {
    let admin = require_admin(&state, &p).await?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (req, upload) = if is_multipart {
        read_multipart(&state, request).await?
    } else {
        let Json(req) = Json::<BuildRequest>::from_request(request, &state).await?;
        (req, None)
    };
    let validated = builds::validate(&state, req, upload, Some(admin)).await?;
    let row = builds::submit(&state, validated).await?;
    Ok((StatusCode::CREATED, Json(BuildView::from(&row))))
}

async fn read_multipart(
    state: &AppState,
    request: Request,
) -> ApiResult<(BuildRequest, Option<Vec<u8>>)> {
    let mut multipart = Multipart::from_request(request, state).await.map_err(|e| {
        ApiError::invalid(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(format!("invalid multipart body: {}", e.body_text()))
    };
    let mut config = None;
    let mut archive = None;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let limit = match name.as_str() {
            "config" => MAX_CONFIG_BYTES,
            "archive" => MAX_ARCHIVE_BYTES,
            other => {
                return Err(ApiError::invalid(format!(
                    "unexpected multipart part {other:?} (expected `config` and `archive`)"
                )));
            }
        };
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if data.len() + chunk.len() > limit {
                return Err(ApiError::invalid(if name == "archive" {
                    format!("archive is larger than {} MiB", MAX_ARCHIVE_BYTES >> 20)
                } else {
                    format!("config is larger than {} KiB", MAX_CONFIG_BYTES >> 10)
                }));
            }
            data.extend_from_slice(&chunk);
        }
        if name == "config" {
            let req: BuildRequest = serde_json::from_slice(&data)
                .map_err(|e| ApiError::invalid(format!("config: invalid JSON: {e}")))?;
            config = Some(req);
        } else {
            archive = Some(data);
        }
    }
    let config =
        config.ok_or_else(|| ApiError::invalid("the multipart `config` part is missing"))?;
    Ok((config, archive))
}

/// Every build, newest first.
#[utoipa::path(get, path = "/v1/admin/builds", tag = "admin",
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<BuildView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn list_builds(
    State(state): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<BuildView>>> {
    require_admin(&state, &p).await?;
    let rows = crate::db::builds::list(state.pool()).await?;
    Ok(Json(rows.iter().map(BuildView::from).collect()))
}

/// One build, with the log of every finished step (updated while it runs).
#[utoipa::path(get, path = "/v1/admin/builds/{id}", tag = "admin",
    params(("id" = String, Path, description = "bld-…")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = BuildView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_build(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BuildView>> {
    require_admin(&state, &p).await?;
    let row = builds::load(&state, &id).await?;
    Ok(Json(BuildView::from(&row)))
}

/// Cancel a pending or running build (its capsule is destroyed before the answer); a build
/// that already ended is a 400.
#[utoipa::path(post, path = "/v1/admin/builds/{id}/cancel", tag = "admin",
    params(("id" = String, Path, description = "bld-…")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn cancel_build(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&state, &p).await?;
    builds::cancel(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
