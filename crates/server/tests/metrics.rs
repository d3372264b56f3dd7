//! `GET /metrics`: Prometheus exposition, who may read it, and what it counts.

mod common;

use common::{Cred, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::json;
use wrenn_server::ids::{CapsuleId, TeamId};

both_backends!(metrics_exposition, metrics_access);

/// The value of the sample `name{labels}` (labels as rendered, in order), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn metrics_text(s: &TestServer, token: &str) -> String {
    let resp = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    resp.text().await.expect("body")
}

async fn insert_capsule(s: &TestServer, team: &str, status: &str) {
    let team = TeamId::parse(team).expect("team id");
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, template, status, vcpus, memory_mb, created_at, \
         last_updated) VALUES ($1, $2, 'minimal', $3, 1, 512, 1, 1)",
    )
    .bind(CapsuleId::random().db())
    .bind(team.db())
    .bind(status)
    .execute(s.state.pool())
    .await
    .expect("insert capsule row");
}

async fn metrics_exposition(s: &TestServer) {
    let admin = s.user("admin@example.com", "Admin").await;
    for status in ["running", "running", "paused", "stopped"] {
        insert_capsule(s, &admin.team_id, status).await;
    }
    // Traffic: two capsule GETs of different (unknown) ids share one route series; a 404 of a
    // API path no route has is `unmatched` (other paths are the dashboard's: index.html); the
    // SDK's `/api` prefix is its own template.
    for _ in 0..2 {
        let id = CapsuleId::random().to_string();
        let (st, _) = s.get(&format!("/v1/capsules/{id}"), admin.bearer()).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    let (st, _) = s.get("/v1/capsules/not-an-id", admin.bearer()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s.get("/api/v1/capsules", admin.bearer()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get("/v1/no/such/path/12345", Cred::None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s.get("/health", Cred::None).await;
    assert_eq!(st, StatusCode::OK);

    let text = metrics_text(s, &admin.token).await;
    let get = |series: &str| sample(&text, series);
    assert_eq!(
        get(r#"wrenn_http_requests_total{method="GET",route="/v1/capsules/{id}",status="404"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_http_requests_total{method="GET",route="/v1/capsules/{id}",status="400"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_http_requests_total{method="GET",route="/api/v1/capsules",status="200"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_http_requests_total{method="POST",route="/v1/auth/signup",status="201"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("/v1/capsules/cl-") && !text.contains("/no/such/path"),
        "raw paths leaked into labels: {text}"
    );
    // Histogram: buckets, sum and count per series.
    assert_eq!(
        get(
            r#"wrenn_http_request_duration_seconds_count{method="GET",route="/v1/capsules/{id}",status="404"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        get(
            r#"wrenn_http_request_duration_seconds_bucket{method="GET",route="/v1/capsules/{id}",status="404",le="+Inf"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(text.contains("# TYPE wrenn_http_request_duration_seconds histogram"));
    assert!(text.contains("# TYPE wrenn_http_requests_total counter"));

    // Capsules by status, from the database at scrape time; absent statuses are 0.
    assert!(text.contains("# TYPE wrenn_capsules gauge"), "{text}");
    assert_eq!(
        get(r#"wrenn_capsules{status="running"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_capsules{status="paused"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_capsules{status="stopped"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get(r#"wrenn_capsules{status="starting"}"#),
        Some(0.0),
        "{text}"
    );
    insert_capsule(s, &admin.team_id, "running").await;
    let text = metrics_text(s, &admin.token).await;
    assert_eq!(
        sample(&text, r#"wrenn_capsules{status="running"}"#),
        Some(3.0),
        "{text}"
    );
    // The first scrape is counted by the second.
    assert_eq!(
        sample(
            &text,
            r#"wrenn_http_requests_total{method="GET",route="/metrics",status="200"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

async fn metrics_access(s: &TestServer) {
    // The first active user is the platform admin; the second is not.
    let admin = s.user("admin@example.com", "Admin").await;
    let member = s.user("member@example.com", "Member").await;

    let (st, v) = s.get("/metrics", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    let (st, v) = s.get("/metrics", member.bearer()).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.get("/metrics", Cred::ApiKey("wrn_not-a-key")).await;
    assert_error(st, &v, 401, "unauthorized");

    // API keys: the admin's works as X-API-Key and as a bearer token (Prometheus'
    // `authorization` config); a non-admin's key is refused.
    let key = |auth: common::Auth| async move {
        let (st, v) = s
            .post("/v1/api-keys", auth.bearer(), json!({"name": "scraper"}))
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        v["key"].as_str().expect("key").to_owned()
    };
    let admin_key = key(admin.clone()).await;
    let member_key = key(member.clone()).await;
    let (st, _) = s.get("/metrics", Cred::ApiKey(&admin_key)).await;
    assert_eq!(st, StatusCode::OK);
    let text = metrics_text(s, &admin_key).await;
    assert!(text.contains("wrenn_capsules{"), "{text}");
    let (st, v) = s.get("/metrics", Cred::ApiKey(&member_key)).await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.get("/metrics", Cred::Bearer(&member_key)).await;
    assert_error(st, &v, 403, "forbidden");
    let unknown = format!("wrn_{}", "0".repeat(32));
    let (st, v) = s.get("/metrics", Cred::Bearer(&unknown)).await;
    assert_error(st, &v, 401, "unauthorized");

    // WRENN_METRICS_PUBLIC=true opens it.
    s.state.set_metrics_public(true);
    let (st, _) = s.get("/metrics", Cred::None).await;
    assert_eq!(st, StatusCode::OK);
}
