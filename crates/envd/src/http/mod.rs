//! envd's plain HTTP API: health, metrics, env, init, snapshot quiesce, files.

mod error;
mod files;
mod init;
mod snapshot;
mod system;

pub use error::HttpError;
pub use init::parse_rfc3339_nanos;

use crate::conntrack::ConnId;
use crate::state::Envd;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};

pub fn router(envd: Envd) -> Router {
    Router::new()
        .route("/health", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/envs", get(system::envs))
        .route("/init", post(init::init))
        .route("/snapshot/prepare", post(snapshot::prepare))
        .merge(files::routes())
        .with_state(envd)
}

/// Layers for the whole app (HTTP routes and the Connect fallback).
pub fn wrap(app: Router, envd: &Envd) -> Router {
    app.layer(middleware::from_fn_with_state(
        envd.clone(),
        close_while_quiesced,
    ))
    .layer(cors())
}

/// Spec §D: any origin, any headers; expose the headers Connect/gRPC-web and
/// `/files` clients read.
fn cors() -> CorsLayer {
    const EXPOSE: [&str; 11] = [
        "location",
        "cache-control",
        "x-content-type-options",
        "connect-protocol-version",
        "connect-content-encoding",
        "connect-accept-encoding",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "grpc-encoding",
        "grpc-accept-encoding",
    ];
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::HEAD,
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(Any)
        .expose_headers(EXPOSE.map(HeaderName::from_static))
        .max_age(Duration::from_secs(7200))
}

/// While quiesced no connection may stay open for the checkpoint, so every
/// response (including `/snapshot/prepare`'s own) closes its connection.
async fn close_while_quiesced(State(envd): State<Envd>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if envd.lifecycle.is_quiesced() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The request's own connection, when served through the tracked listener.
fn own_conn(conn: Option<Extension<ConnectInfo<ConnId>>>) -> Option<ConnId> {
    conn.map(|Extension(ConnectInfo(id))| id)
}
