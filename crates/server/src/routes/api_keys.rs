//! `/v1/api-keys` (spec §B.8): the team's API keys.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::ts;
use crate::accounts::{self, DEFAULT_API_KEY_NAME};
use crate::audit::{self, AuditEvent};
use crate::auth::UserPrincipal;
use crate::db::api_keys;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::ids::{ApiKeyId, TeamId, UserId};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(delete_key))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateApiKey {
    /// Defaults to `Unnamed API Key`.
    name: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    id: ApiKeyId,
    team_id: TeamId,
    name: String,
    /// First 10 characters of the key, e.g. `wrn_ab12cd`.
    key_prefix: String,
    created_by: Option<UserId>,
    created_at: String,
    /// The key itself (`wrn_` + 32 hex). Shown only in this response.
    key: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    id: ApiKeyId,
    team_id: TeamId,
    name: String,
    key_prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    creator_email: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
}

/// Create an API key for the caller's team.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("bearer" = []), ("session" = [])),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    p: UserPrincipal,
    Json(req): Json<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let name = req
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_API_KEY_NAME);
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("name must be at most 100 characters"));
    }
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let (key, plaintext) =
        accounts::create_api_key(&mut tx, p.team_id, name, Some(p.user.id)).await?;
    audit::record(
        &mut *tx,
        p.team_id,
        &p.actor(),
        AuditEvent::new("api_key", key.id.to_string(), "create")
            .metadata(serde_json::json!({ "name": key.name, "key_prefix": key.key_prefix })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: key.id,
            team_id: key.team_id,
            name: key.name,
            key_prefix: key.key_prefix,
            created_by: key.created_by,
            created_at: ts(key.created_at),
            key: plaintext,
        }),
    ))
}

/// The team's API keys (without the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 401, body = ErrorBody)))]
async fn list_keys(
    State(state): State<AppState>,
    p: UserPrincipal,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    let keys = api_keys::list(state.pool(), p.team_id).await?;
    Ok(Json(
        keys.into_iter()
            .map(|k| ApiKeyInfo {
                id: k.id,
                team_id: k.team_id,
                name: k.name,
                key_prefix: k.key_prefix,
                created_by: k.created_by,
                creator_email: k.creator_email,
                created_at: ts(k.created_at),
                last_used: k.last_used.map(ts),
            })
            .collect(),
    ))
}

/// Revoke an API key of the caller's team.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "`key-…`")), security(("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_key(
    State(state): State<AppState>,
    p: UserPrincipal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let key = ApiKeyId::parse(&id)?;
    let mut tx = state.pool().begin().await.map_err(ApiError::internal)?;
    let Some(name) = api_keys::delete(&mut *tx, p.team_id, key).await? else {
        return Err(ApiError::not_found("API key not found"));
    };
    audit::record(
        &mut *tx,
        p.team_id,
        &p.actor(),
        AuditEvent::new("api_key", key.to_string(), "revoke")
            .metadata(serde_json::json!({ "name": name })),
    )
    .await?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}
