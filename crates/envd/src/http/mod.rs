//! envd's plain HTTP API: health, metrics, env, init, snapshot quiesce, files.

mod error;

pub use error::HttpError;

use crate::state::Envd;
use axum::{Json, Router, routing::get};

pub fn router(envd: Envd) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "version": crate::VERSION })) }),
        )
        .with_state(envd)
}
