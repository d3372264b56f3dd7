//! `GET /v1/events/stream` (spec §B.5): the caller's team's events as server-sent events.
//!
//! First frame `event: connected` with `{"event":"connected","message":"connected"}` (so the
//! SDK's `ev.event` reads `connected`, SDK-CALLS.md §6), then one frame per event, a `:`
//! keepalive comment every 30 s.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::state::AppState;

const KEEPALIVE: Duration = Duration::from_secs(30);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(event_stream))
}

/// Server-sent events of the caller's team: `capsule.*`, `template.snapshot.*`.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "SSE frames"),
        (status = 401, body = ErrorBody)))]
async fn event_stream(State(state): State<AppState>, p: Principal) -> Response {
    let team = p.team_id;
    // Subscribed before the first frame, so nothing published after `connected` is missed.
    let rx = state.events().subscribe();
    let connected = SseEvent::default()
        .event("connected")
        .data(r#"{"event":"connected","message":"connected"}"#);
    let stream =
        futures::stream::unfold((Some(connected), rx), move |(first, mut rx)| async move {
            if let Some(first) = first {
                return Some((Ok::<_, Infallible>(first), (None, rx)));
            }
            loop {
                match rx.recv().await {
                    Ok(event) if event.team_id == team => {
                        let data = match serde_json::to_string(&*event) {
                            Ok(d) => d,
                            Err(e) => {
                                tracing::warn!(error = %e, "serializing an event");
                                continue;
                            }
                        };
                        let name = serde_json::to_value(event.event)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        let frame = SseEvent::default().event(name).data(data);
                        return Some((Ok(frame), (None, rx)));
                    }
                    Ok(_) => continue,
                    // A slow reader lost some events; it carries on with the next ones.
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "event subscriber lagged");
                        continue;
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    sse(stream).into_response()
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}
