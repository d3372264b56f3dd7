//! Capsule lifecycle, snapshots, stats and events over HTTP, without a real agent (the host
//! registered here points at a closed port, so every boot fails): validation, team scoping,
//! the async create → `error` path with its reason, idempotent destroy, SSE frames.
//! Against SQLite and PostgreSQL. Runs with capsules are in tests/sdk (root + runsc).

mod common;

use std::time::Duration;

use common::{Cred, TestServer, assert_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

both_backends!(
    create_validation_and_no_host,
    create_fails_to_error_and_destroy_is_idempotent,
    other_teams_capsules_are_not_found,
    snapshots_list_and_protection,
    stats_usage_metrics_shapes,
    events_stream_frames,
);

/// A host whose agent never answers (connection refused).
async fn dead_host(s: &TestServer) {
    wrenn_server::register_local_host(&s.state, "127.0.0.1:1")
        .await
        .expect("register host");
}

async fn key(s: &TestServer, email: &str) -> String {
    let user = s.user(email, "Tester").await;
    let (st, v) = s
        .post("/v1/api-keys", user.bearer(), json!({"name": "t"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["key"].as_str().expect("key").to_owned()
}

async fn wait_status(s: &TestServer, key: &str, id: &str, want: &str) -> Value {
    for _ in 0..100 {
        let (st, v) = s
            .get(&format!("/v1/capsules/{id}"), Cred::ApiKey(key))
            .await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if v["status"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("capsule {id} never reached {want}");
}

async fn create_validation_and_no_host(s: &TestServer) {
    let k = key(s, "v@example.com").await;
    let k = Cred::ApiKey(&k);
    // No host registered: 503 no_hosts_available.
    let (st, v) = s.post("/v1/capsules", k, json!({})).await;
    assert_error(st, &v, 503, "no_hosts_available");
    dead_host(s).await;

    for body in [
        json!({"template": "../etc"}),
        json!({"template": "a/b"}),
        json!({"template": 5}),
        json!({"vcpus": "two"}),
        json!({"vcpus": 64}),
        json!({"memory_mb": 16}),
        json!({"timeout_sec": -1}),
        json!({"metadata": {"kernel_version": "6.1"}}),
        json!({"metadata": {"bad/key": "v"}}),
        json!({"metadata": {"k": "v".repeat(65)}}),
        json!({"metadata": {"k": 5}}),
        json!({"metadata": (0..21).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        json!([1, 2]),
    ] {
        let (st, v) = s.post("/v1/capsules", k, body.clone()).await;
        assert_error(st, &v, 400, "invalid_request");
    }
    let (st, v) = s
        .post("/v1/capsules", k, json!({"template": "no-such-template"}))
        .await;
    assert_error(st, &v, 404, "not_found");

    // Bad ids are 400 everywhere, well-formed unknown ones 404.
    for (method, path) in [
        (Method::GET, "/v1/capsules/cl-123"),
        (Method::DELETE, "/v1/capsules/cl-123"),
        (Method::POST, "/v1/capsules/cl-123/pause"),
        (Method::POST, "/v1/capsules/cl-123/resume"),
        (Method::POST, "/v1/capsules/cl-123/ping"),
        (Method::GET, "/v1/capsules/cl-123/metrics"),
    ] {
        let (st, v) = s.call(method, path, k, None).await;
        assert_error(st, &v, 400, "invalid_request");
    }
    let unknown = wrenn_server::ids::CapsuleId::random().to_string();
    for method in [Method::GET, Method::DELETE] {
        let (st, v) = s
            .call(method, &format!("/v1/capsules/{unknown}"), k, None)
            .await;
        assert_error(st, &v, 404, "not_found");
    }
    let (st, v) = s
        .call(
            Method::POST,
            &format!("/v1/capsules/{unknown}/pause"),
            k,
            None,
        )
        .await;
    assert_error(st, &v, 404, "not_found");
}

async fn create_fails_to_error_and_destroy_is_idempotent(s: &TestServer) {
    dead_host(s).await;
    let key = key(s, "e@example.com").await;
    let k = Cred::ApiKey(&key);
    let md = json!({"owner": "tests", "k2": "v".repeat(64)});
    let (st, v) = s
        .post(
            "/v1/capsules",
            k,
            json!({"timeout_sec": 30, "metadata": md}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("cl-") && id.len() == 28);
    assert_eq!(v["template"], "minimal");
    assert_eq!(v["vcpus"], 1);
    assert_eq!(v["memory_mb"], 512);
    assert_eq!(v["timeout_sec"], 60, "1..59 is raised to 60");
    assert_eq!(v["metadata"], md);
    assert!(v["created_at"].as_str().expect("ts").ends_with('Z'));
    assert!(v.get("started_at").is_none());
    assert!(["starting", "error"].contains(&v["status"].as_str().unwrap_or_default()));

    // The agent is unreachable: the background boot ends in `error`, with the reason kept.
    let got = wait_status(s, &key, &id, "error").await;
    assert!(
        !got["status_reason"].as_str().unwrap_or_default().is_empty(),
        "{got}"
    );
    let (_, list) = s.get("/v1/capsules", k).await;
    assert!(list.as_array().expect("array").is_empty(), "{list}");

    // Work on an error capsule is a conflict; metrics are not available.
    for action in ["pause", "resume", "ping"] {
        let (st, v) = s
            .call(
                Method::POST,
                &format!("/v1/capsules/{id}/{action}"),
                k,
                None,
            )
            .await;
        assert_error(st, &v, 409, "invalid_state");
    }
    let (st, v) = s.get(&format!("/v1/capsules/{id}/metrics"), k).await;
    assert_error(st, &v, 404, "not_found");

    // Destroy of a terminal capsule is accepted (twice), and it stays readable.
    for _ in 0..2 {
        let (st, v) = s
            .call(Method::DELETE, &format!("/v1/capsules/{id}"), k, None)
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v, Value::Null, "no body");
    }
    assert_eq!(wait_status(s, &key, &id, "error").await["id"], id.as_str());

    // A second capsule destroyed while (or after) it boots ends stopped or error, never lost.
    let (_, v) = s.post("/v1/capsules", k, json!({})).await;
    let id2 = v["id"].as_str().expect("id").to_owned();
    let (st, _) = s
        .call(Method::DELETE, &format!("/v1/capsules/{id2}"), k, None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let mut final_status = String::new();
    for _ in 0..100 {
        let (_, v) = s.get(&format!("/v1/capsules/{id2}"), k).await;
        final_status = v["status"].as_str().unwrap_or_default().to_owned();
        if final_status == "stopped" || final_status == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ["stopped", "error"].contains(&final_status.as_str()),
        "{final_status}"
    );

    // Audit rows: the create by the API key, the failed boot by the system.
    let user = s.login("e@example.com", "password123").await;
    let (st, audit) = s
        .get("/v1/audit-logs?resource_type=sandbox", user.bearer())
        .await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let text = audit.to_string();
    assert!(
        text.contains("\"api_key\"") && text.contains("\"system\""),
        "{text}"
    );
}

async fn other_teams_capsules_are_not_found(s: &TestServer) {
    dead_host(s).await;
    let a = key(s, "a@example.com").await;
    let b = key(s, "b@example.com").await;
    let (_, v) = s.post("/v1/capsules", Cred::ApiKey(&a), json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    for (method, path) in [
        (Method::GET, format!("/v1/capsules/{id}")),
        (Method::DELETE, format!("/v1/capsules/{id}")),
        (Method::POST, format!("/v1/capsules/{id}/pause")),
        (Method::POST, format!("/v1/capsules/{id}/ping")),
        (Method::GET, format!("/v1/capsules/{id}/metrics")),
    ] {
        let (st, v) = s.call(method, &path, Cred::ApiKey(&b), None).await;
        assert_error(st, &v, 404, "not_found");
    }
    let (st, v) = s
        .post("/v1/snapshots", Cred::ApiKey(&b), json!({"sandbox_id": id}))
        .await;
    assert_error(st, &v, 404, "not_found");
    let (_, list) = s.get("/v1/capsules", Cred::ApiKey(&b)).await;
    assert!(!list.to_string().contains(&id));
}

async fn snapshots_list_and_protection(s: &TestServer) {
    let key = key(s, "s@example.com").await;
    let k = Cred::ApiKey(&key);
    let (st, list) = s.get("/v1/snapshots", k).await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let minimal = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "minimal")
        .expect("minimal listed")
        .clone();
    assert_eq!(minimal["type"], "base");
    assert_eq!(minimal["platform"], true);
    assert_eq!(minimal["protected"], true);
    let (_, snaps) = s.get("/v1/snapshots?type=snapshot", k).await;
    assert_eq!(snaps, json!([]));
    let (st, v) = s.get("/v1/snapshots?type=weird", k).await;
    assert_error(st, &v, 400, "invalid_request");

    let (st, v) = s
        .call(Method::DELETE, "/v1/snapshots/minimal", k, None)
        .await;
    assert_error(st, &v, 403, "forbidden");
    let (st, v) = s.call(Method::DELETE, "/v1/snapshots/nope", k, None).await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .call(Method::DELETE, "/v1/snapshots/.hidden", k, None)
        .await;
    assert_error(st, &v, 400, "invalid_request");

    let (st, v) = s.post("/v1/snapshots", k, json!({"name": "x"})).await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post("/v1/snapshots", k, json!({"sandbox_id": "cl-123"}))
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let unknown = wrenn_server::ids::CapsuleId::random().to_string();
    let (st, v) = s
        .post(
            "/v1/snapshots?overwrite=true",
            k,
            json!({"sandbox_id": unknown, "name": "ghost"}),
        )
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = s
        .post(
            "/v1/snapshots",
            k,
            json!({"sandbox_id": unknown, "name": "sp ace"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
}

async fn stats_usage_metrics_shapes(s: &TestServer) {
    let key = key(s, "m@example.com").await;
    let k = Cred::ApiKey(&key);
    let (st, v) = s.get("/v1/capsules/stats", k).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["range"], "1h");
    assert_eq!(v["current"]["running_count"], 0);
    let labels = v["series"]["labels"].as_array().expect("labels");
    assert_eq!(
        labels.len(),
        v["series"]["running"].as_array().expect("r").len()
    );
    assert!(
        labels
            .iter()
            .all(|l| l.as_str().unwrap_or_default().ends_with('Z'))
    );
    for r in ["5m", "6h", "24h", "30d"] {
        let (st, v) = s.get(&format!("/v1/capsules/stats?range={r}"), k).await;
        assert_eq!((st, v["range"].clone()), (StatusCode::OK, json!(r)));
    }
    let (st, v) = s.get("/v1/capsules/stats?range=10m", k).await;
    assert_error(st, &v, 400, "invalid_request");

    let (st, v) = s.get("/v1/capsules/usage", k).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["points"].as_array().expect("points").len(), 30);
    let (st, v) = s
        .get("/v1/capsules/usage?from=2026-01-01&to=2026-01-08", k)
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["from"], "2026-01-01");
    assert_eq!(v["points"][7]["date"], "2026-01-08");
    assert!(v["points"][0]["cpu_minutes"].is_f64());
    for q in [
        "from=2026-01-09&to=2026-01-08",
        "from=2025-01-01&to=2026-01-08",
        "from=yesterday",
    ] {
        let (st, v) = s.get(&format!("/v1/capsules/usage?{q}"), k).await;
        assert_error(st, &v, 400, "invalid_request");
    }
    let unknown = wrenn_server::ids::CapsuleId::random().to_string();
    let (st, v) = s
        .get(&format!("/v1/capsules/{unknown}/metrics?range=7m"), k)
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s.get(&format!("/v1/capsules/{unknown}/metrics"), k).await;
    assert_error(st, &v, 404, "not_found");
}

/// Reads SSE frames until `pred` matches one `data:` payload (or the deadline).
async fn next_data(
    resp: &mut reqwest::Response,
    buf: &mut String,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).expect("frame is JSON");
            if pred(&v) {
                return v;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("event within 10 s")
            .expect("read")
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

async fn events_stream_frames(s: &TestServer) {
    dead_host(s).await;
    let a = key(s, "ev-a@example.com").await;
    let b = key(s, "ev-b@example.com").await;
    let open = |k: String| {
        let http = s.http.clone();
        let url = s.url("/v1/events/stream");
        async move {
            http.get(url)
                .header("X-API-Key", k)
                .send()
                .await
                .expect("stream")
        }
    };
    let mut mine = open(a.clone()).await;
    assert_eq!(mine.status(), StatusCode::OK);
    assert!(
        mine.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut theirs = open(b.clone()).await;
    let (mut buf, mut tbuf) = (String::new(), String::new());
    let first = next_data(&mut mine, &mut buf, |_| true).await;
    assert_eq!(first, json!({"event": "connected", "message": "connected"}));
    next_data(&mut theirs, &mut tbuf, |_| true).await;

    let (_, v) = s.post("/v1/capsules", Cred::ApiKey(&a), json!({})).await;
    let id = v["id"].as_str().expect("id").to_owned();
    let created = next_data(&mut mine, &mut buf, |v| v["event"] == "capsule.create").await;
    assert_eq!(created["resource"], json!({"id": id, "type": "sandbox"}));
    assert_eq!(created["actor"]["type"], "api_key");
    assert_eq!(created["outcome"], "success");
    assert_eq!(created["sandbox"]["id"], id.as_str());
    assert!(
        created["timestamp"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z')
    );
    let changed = next_data(&mut mine, &mut buf, |v| {
        v["event"] == "capsule.state.changed"
    })
    .await;
    assert_eq!(changed["metadata"]["to"], "error");
    assert_eq!(changed["actor"]["type"], "system");
    assert!(changed.get("outcome").is_none());

    // The other team's stream saw nothing of it.
    let leaked = tokio::time::timeout(Duration::from_millis(500), theirs.chunk()).await;
    if let Ok(Ok(Some(chunk))) = leaked {
        assert!(!String::from_utf8_lossy(&chunk).contains(&id));
    }

    let bad = s
        .http
        .get(s.url("/v1/events/stream"))
        .header("X-API-Key", format!("wrn_{}", "0".repeat(32)))
        .send()
        .await
        .expect("bad key");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}
