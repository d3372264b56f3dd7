//! `/v1/users/search` (spec §B.9): find users to invite.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::UserPrincipal;
use crate::db::users;
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Query};
use crate::ids::UserId;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search_users))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    /// Email prefix: at least 3 characters including `@`.
    email: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserHit {
    user_id: UserId,
    email: String,
}

/// Active users whose email starts with the prefix (at most 10).
#[utoipa::path(get, path = "/v1/users/search", tag = "teams", params(SearchQuery),
    security(("bearer" = []), ("session" = [])),
    responses((status = 200, body = Vec<UserHit>), (status = 400, body = ErrorBody)))]
async fn search_users(
    State(state): State<AppState>,
    _p: UserPrincipal,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<Vec<UserHit>>> {
    let prefix = q.email.trim().to_lowercase();
    // Needing the `@` keeps this from enumerating accounts by short prefixes.
    if prefix.chars().count() < 3 || !prefix.contains('@') {
        return Err(ApiError::invalid(
            "email prefix must be at least 3 characters and contain @",
        ));
    }
    let found = users::search_by_email_prefix(state.pool(), &prefix, 10).await?;
    Ok(Json(
        found
            .into_iter()
            .map(|u| UserHit {
                user_id: u.id,
                email: u.email,
            })
            .collect(),
    ))
}
