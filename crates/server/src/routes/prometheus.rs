//! `GET /metrics`: the Prometheus text exposition of [`crate::telemetry`].
//!
//! Spec §B.1 lists the unauthenticated infrastructure routes (`/health`, the OpenAPI document,
//! `/docs`) and `/metrics` is not among them, while the series are platform-wide (every team's
//! capsules and traffic). So it is served on the API listener for **platform admins** only: a
//! user JWT/session of an admin, or an API key created by an active admin (such as the
//! `admin-api-key` that `wrenn up` writes), sent as `X-API-Key` or, for Prometheus'
//! `authorization: {credentials_file: …}`, as `Authorization: Bearer wrn_…`.
//! `WRENN_METRICS_PUBLIC=true` serves it to anyone (a scraper on a private network).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{Principal, looks_like_api_key, sha256_hex};
use crate::db::users::UserStatus;
use crate::db::{api_keys, users};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics: request counts and latency by method, route template and status;
/// capsules by status. Platform admins only (JWT, session or an admin's API key, also accepted
/// as `Authorization: Bearer wrn_…`), unless the server runs with `WRENN_METRICS_PUBLIC=true`.
#[utoipa::path(get, path = "/metrics", tag = "system",
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String,
            description = "Prometheus text exposition format 0.0.4"),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
async fn metrics(State(state): State<AppState>, req: Request) -> ApiResult<Response> {
    if !state.metrics_public() {
        authorize(&state, req).await?;
    }
    let body = state
        .telemetry()
        .render(&state)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

async fn authorize(state: &AppState, req: Request) -> ApiResult<()> {
    if let Some(key) = bearer_api_key(req.headers()) {
        return admin_api_key(state, &key).await;
    }
    let (mut parts, _) = req.into_parts();
    let principal = Principal::from_request_parts(&mut parts, state).await?;
    match principal.user() {
        Some(user) if user.is_admin => Ok(()),
        Some(_) => Err(ApiError::forbidden("metrics are for platform admins")),
        // An X-API-Key: Principal checked it exists; now whose it is.
        None => {
            let key = parts
                .headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_owned();
            admin_api_key(state, &key).await
        }
    }
}

/// `Authorization: Bearer wrn_…` (an API key where a JWT would be), unless `X-API-Key` is
/// present, which wins as everywhere else.
fn bearer_api_key(headers: &HeaderMap) -> Option<String> {
    if headers.contains_key("x-api-key") {
        return None;
    }
    let authz = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authz.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && looks_like_api_key(token)).then(|| token.to_owned())
}

async fn admin_api_key(state: &AppState, key: &str) -> ApiResult<()> {
    if !looks_like_api_key(key) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    let Some(record) = api_keys::by_hash(state.pool(), &sha256_hex(key)).await? else {
        return Err(ApiError::unauthorized("invalid API key"));
    };
    let creator = match record.created_by {
        Some(id) => users::by_id(state.pool(), id).await?,
        None => None,
    };
    match creator {
        Some(u) if u.is_admin && u.status == UserStatus::Active => Ok(()),
        _ => Err(ApiError::forbidden(
            "metrics are for platform admins: use an API key created by an admin",
        )),
    }
}
