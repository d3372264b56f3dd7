//! The router: API routes at `/v1/…` and again under `/api/v1/…` (the SDK's default base URL
//! ends in `/api`), OpenAPI + Swagger UI, JSON fallbacks, body limit, panic guard, tracing.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, method_not_allowed};
use crate::openapi::{ApiDoc, swagger_ui};
use crate::routes;
use crate::state::AppState;

/// Builds the whole HTTP application for `state`.
pub fn build_app(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::api())
        .split_for_parts();
    let api = api.merge(routes::auth::oauth_router());
    Router::new()
        .merge(api.clone())
        .nest("/api", api)
        .merge(swagger_ui(doc))
        // The dashboard (web.rs) for GET/HEAD outside the API; JSON 404 otherwise.
        .fallback(crate::web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        // Per route (axum applies `Router::layer` after routing), so it sees the matched path.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::track,
        ))
        // `{port}-{capsule_id}.{domain}` hosts go to the capsule, before any API routing.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::proxy::host_proxy,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The OpenAPI document, e.g. for writing it to a file.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(routes::api())
        .split_for_parts();
    doc
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal server error",
    )
    .into_response()
}
