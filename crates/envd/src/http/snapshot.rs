//! `POST /snapshot/prepare`: quiesce before the capsule is checkpointed.

use super::own_conn;
use crate::conntrack::ConnId;
use crate::state::Envd;
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;

/// Stops port forwarding and closes every other connection; this request's
/// own connection closes right after the 204 (`Connection: close`, see
/// `close_while_quiesced`). The next `/health` or `/init` resumes.
pub(super) async fn prepare(
    State(envd): State<Envd>,
    conn: Option<Extension<ConnectInfo<ConnId>>>,
) -> StatusCode {
    envd.lifecycle.quiesce(own_conn(conn)).await;
    StatusCode::NO_CONTENT
}
