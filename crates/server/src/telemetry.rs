//! Prometheus metrics of the control plane, served at `GET /metrics` (`routes::prometheus`).
//!
//! One recorder per [`crate::AppState`] (no process-global recorder: tests run many servers in
//! one process, and `wrenn up` embeds the server next to the agent). Series:
//!
//! * `wrenn_http_requests_total{method,route,status}` — counter, one per answered request;
//! * `wrenn_http_request_duration_seconds{method,route,status}` — histogram, time until the
//!   response head (a WebSocket or SSE stream counts until its upgrade / first byte);
//! * `wrenn_capsules{status}` — gauge, rows of `sandboxes` by status, read from the database on
//!   every scrape (every status of spec §B.0 is always present, 0 when none).
//!
//! `route` is the matched route template (`/v1/capsules/{id}`, and `/api/v1/…` for the SDK's
//! prefix), never the raw path, so ids don't multiply series; requests no route matched are
//! `route="unmatched"`, methods outside the standard set are `method="OTHER"`. Capsule proxy
//! traffic (`{port}-{id}.{domain}` hosts) is not API traffic and is not counted.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::state::AppState;

pub const REQUESTS: &str = "wrenn_http_requests_total";
pub const DURATION: &str = "wrenn_http_request_duration_seconds";
pub const CAPSULES: &str = "wrenn_capsules";

/// Capsule statuses the API can report (spec §B.0); exported even when no row has them.
const CAPSULE_STATUSES: [&str; 12] = [
    "pending",
    "starting",
    "running",
    "pausing",
    "paused",
    "snapshotting",
    "resuming",
    "stopping",
    "hibernated",
    "stopped",
    "missing",
    "error",
];

/// Latency buckets in seconds: 1 ms … 60 s (capsule creates and execs sit at the top).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

pub struct Telemetry {
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.into()), &BUCKETS)
            .expect("non-empty buckets")
            .build_recorder();
        let telemetry = Self { recorder };
        telemetry.with(|| {
            metrics::describe_counter!(REQUESTS, "HTTP requests answered by the API");
            metrics::describe_histogram!(
                DURATION,
                metrics::Unit::Seconds,
                "time from request to response head"
            );
            metrics::describe_gauge!(CAPSULES, "capsules (database rows) by status");
        });
        telemetry
    }

    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Counts one answered request.
    pub fn record_request(&self, method: &Method, route: &str, status: u16, took: Duration) {
        let labels = [
            ("method", method_label(method).to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        self.with(|| {
            metrics::counter!(REQUESTS, &labels).increment(1);
            metrics::histogram!(DURATION, &labels).record(took.as_secs_f64());
        });
    }

    /// Refreshes the database gauges and renders the text exposition format.
    pub async fn render(&self, state: &AppState) -> Result<String, sqlx::Error> {
        let counts = capsule_counts(state.pool()).await?;
        self.with(|| {
            for status in CAPSULE_STATUSES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!(CAPSULES, "status" => status).set(n as f64);
            }
            // A status outside the list would be a bug elsewhere; still show it.
            for (status, n) in &counts {
                if !CAPSULE_STATUSES.contains(&status.as_str()) {
                    metrics::gauge!(CAPSULES, "status" => status.clone()).set(*n as f64);
                }
            }
        });
        let handle = self.recorder.handle();
        handle.run_upkeep();
        Ok(handle.render())
    }
}

async fn capsule_counts(pool: &sqlx::AnyPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM sandboxes GROUP BY status")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>("status")?, r.try_get::<i64, _>("n")?)))
        .collect()
}

/// Bounded method label: a client can send any token as a method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware (a `Router::layer`, so it runs after routing and sees [`MatchedPath`]).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    state.telemetry().record_request(
        &method,
        route.as_deref().unwrap_or("unmatched"),
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}
