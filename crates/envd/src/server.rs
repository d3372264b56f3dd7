//! Assembles the HTTP routes and the Connect services into one axum app.

use crate::state::Envd;
use axum::Router;
#[allow(unused_imports)]
use std::sync::Arc;

pub fn app(envd: Envd) -> Router {
    let connect = connectrpc::Router::new()
        .add_service(Arc::new(crate::process::ProcessService::new(envd.clone())))
        .add_service(Arc::new(crate::filesystem::FilesystemService::new(
            envd.clone(),
        )));
    let app = crate::http::router(envd.clone()).fallback_service(connect.into_axum_service());
    crate::http::wrap(app, &envd)
}
