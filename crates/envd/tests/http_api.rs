//! envd's plain HTTP API against a real envd process: /health, /metrics,
//! /envs, /init, /snapshot/prepare (connection closing and resume), CORS.

mod common;

use common::EnvdProcess;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn start(run_dir: &tempfile::TempDir) -> EnvdProcess {
    let dir = run_dir.path().to_str().expect("utf-8 temp dir");
    EnvdProcess::start_with(&["--run-dir", dir, "--port-forward", "off"])
}

async fn get_json(env: &EnvdProcess, path: &str) -> Value {
    let resp = client()
        .get(format!("{}{path}", env.base_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.expect("json body")
}

async fn post_init(env: &EnvdProcess, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/init", env.base_url()))
        .json(body)
        .send()
        .await
        .expect("POST /init")
}

async fn assert_error(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["code"], json!(status.as_u16()));
    body["message"].as_str().expect("message").to_owned()
}

/// A raw HTTP/1.1 exchange on a kept-alive connection; returns the status
/// line and headers (lower-cased) and consumes the body.
async fn raw_request(conn: &mut TcpStream, method: &str, path: &str) -> String {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: envd\r\nContent-Length: 0\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte).await.expect("read head");
        assert_eq!(n, 1, "connection closed mid-response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("content-length"));
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.expect("read body");
    head
}

/// True if the peer closed the connection within a few seconds.
async fn closed_by_peer(conn: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test]
async fn health_reports_version_and_no_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    let resp = client()
        .get(format!("{}/health", env.base_url()))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({ "version": envd::VERSION }));
}

#[tokio::test]
async fn metrics_have_every_field_with_sane_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    // Let the 1 s sampler produce a value.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let m = get_json(&env, "/metrics").await;
    let obj = m.as_object().expect("object");
    for key in [
        "ts",
        "cpu_count",
        "cpu_used_pct",
        "mem_total_mib",
        "mem_used_mib",
        "mem_total",
        "mem_used",
        "disk_used",
        "disk_total",
    ] {
        assert!(obj.contains_key(key), "missing {key} in {m}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let u = |k: &str| m[k].as_u64().unwrap_or_else(|| panic!("{k} not u64: {m}"));
    assert!((m["ts"].as_i64().expect("ts") - now).abs() < 60);
    assert!(u("cpu_count") >= 1);
    let pct = m["cpu_used_pct"].as_f64().expect("cpu_used_pct");
    assert!((0.0..=100.0).contains(&pct), "{pct}");
    // Two decimals at most.
    assert!(((pct * 100.0).round() - pct * 100.0).abs() < 1e-3, "{pct}");
    assert!(u("mem_total") > 0 && u("mem_used") <= u("mem_total"));
    assert_eq!(u("mem_total_mib"), u("mem_total") / (1024 * 1024));
    assert_eq!(u("mem_used_mib"), u("mem_used") / (1024 * 1024));
    assert!(u("disk_total") > 0 && u("disk_used") <= u("disk_total"));
}

#[tokio::test]
async fn init_sets_env_vars_user_and_workdir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    assert_eq!(get_json(&env, "/envs").await, json!({}));

    let resp = post_init(
        &env,
        &json!({ "envVars": { "A": "1", "B": "two" }, "defaultUser": "root", "defaultWorkdir": "/tmp" }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_json(&env, "/envs").await,
        json!({ "A": "1", "B": "two" })
    );

    // Merged, not replaced.
    let resp = post_init(&env, &json!({ "envVars": { "B": "2", "C": "3" } })).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_json(&env, "/envs").await,
        json!({ "A": "1", "B": "2", "C": "3" })
    );

    // No body at all is a valid init.
    let resp = client()
        .post(format!("{}/init", env.base_url()))
        .send()
        .await
        .expect("POST /init");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn init_writes_wrenn_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run_dir = dir.path().join("run");
    let env = EnvdProcess::start_with(&[
        "--run-dir",
        run_dir.to_str().expect("utf-8"),
        "--port-forward",
        "off",
    ]);
    let resp = post_init(
        &env,
        &json!({ "sandboxId": "cap-0123abcd", "templateId": "tpl-minimal" }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let read = |name: &str| std::fs::read_to_string(run_dir.join(name)).expect(name);
    assert_eq!(read(".WRENN_SANDBOX_ID"), "cap-0123abcd");
    assert_eq!(read(".WRENN_TEMPLATE_ID"), "tpl-minimal");
    let envs = get_json(&env, "/envs").await;
    assert_eq!(envs["WRENN_SANDBOX_ID"], "cap-0123abcd");
    assert_eq!(envs["WRENN_TEMPLATE_ID"], "tpl-minimal");

    // A clone is re-identified by a later init.
    let resp = post_init(&env, &json!({ "sandboxId": "cap-clone" })).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(read(".WRENN_SANDBOX_ID"), "cap-clone");
    assert_eq!(read(".WRENN_TEMPLATE_ID"), "tpl-minimal");
}

#[tokio::test]
async fn stale_init_timestamp_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    let t2 = "2030-01-01T00:00:02.000000002Z";
    let resp = post_init(&env, &json!({ "timestamp": t2, "envVars": { "V": "new" } })).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // Older, and equal, timestamps change nothing (but still answer 204).
    for stale in [
        "2030-01-01T00:00:01Z",
        "2030-01-01T01:00:02.000000002+01:00",
    ] {
        let resp = post_init(
            &env,
            &json!({ "timestamp": stale, "envVars": { "V": "old", "W": "x" }, "sandboxId": "s" }),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(get_json(&env, "/envs").await, json!({ "V": "new" }));
    assert!(!dir.path().join(".WRENN_SANDBOX_ID").exists());

    // Newer wins; untimed always applies.
    let resp = post_init(
        &env,
        &json!({ "timestamp": "2030-01-01T00:00:03Z", "envVars": { "V": "newer" } }),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = post_init(&env, &json!({ "envVars": { "U": "untimed" } })).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get_json(&env, "/envs").await,
        json!({ "V": "newer", "U": "untimed" })
    );
}

#[tokio::test]
async fn init_rejects_bad_input_with_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    let url = format!("{}/init", env.base_url());
    for body in ["{", "{\"envVars\": 5}", "[1,2]", "\u{0}garbage"] {
        let resp = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /init");
        assert_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let msg = assert_error(
        post_init(&env, &json!({ "defaultUser": "no-such-user-wrenn" })).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("no-such-user-wrenn"), "{msg}");
    assert_error(
        post_init(&env, &json!({ "defaultWorkdir": "relative/dir" })).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_error(
        post_init(&env, &json!({ "timestamp": "yesterday" })).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Nothing was applied and the daemon is still healthy.
    assert_eq!(get_json(&env, "/envs").await, json!({}));
}

#[tokio::test]
async fn snapshot_prepare_closes_connections_and_health_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    let addr = format!("127.0.0.1:{}", env.port);

    // An idle keep-alive connection that has served a request.
    let mut idle = TcpStream::connect(&addr).await.expect("connect");
    let head = raw_request(&mut idle, "GET", "/health").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Prepare from another connection: 204, then that connection closes too.
    let mut ctl = TcpStream::connect(&addr).await.expect("connect");
    let head = raw_request(&mut ctl, "POST", "/snapshot/prepare").await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_by_peer(&mut idle).await, "idle connection left open");
    assert!(
        closed_by_peer(&mut ctl).await,
        "prepare's connection left open"
    );

    // The first /health resumes; keep-alive works normally again.
    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    let head = raw_request(&mut conn, "GET", "/health").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let head = raw_request(&mut conn, "GET", "/envs").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // /init resumes as well.
    let mut ctl = TcpStream::connect(&addr).await.expect("connect");
    raw_request(&mut ctl, "POST", "/snapshot/prepare").await;
    assert!(closed_by_peer(&mut conn).await);
    let resp = post_init(&env, &json!({ "envVars": { "AFTER": "restore" } })).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    let head = raw_request(&mut conn, "GET", "/metrics").await;
    assert!(!head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn cors_preflight_and_exposed_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    let resp = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/process.Process/Start", env.base_url()),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,connect-protocol-version,x-access-token",
        )
        .send()
        .await
        .expect("preflight");
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"].to_str().expect("ascii");
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert_eq!(h["access-control-allow-headers"], "*");
    assert_eq!(h["access-control-max-age"], "7200");

    let resp = client()
        .get(format!("{}/health", env.base_url()))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("GET /health");
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let exposed = h["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    for name in [
        "location",
        "cache-control",
        "grpc-status",
        "connect-protocol-version",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
}

#[tokio::test]
async fn unknown_route_of_http_api_does_not_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = start(&dir);
    // Wrong method on a known route.
    let resp = client()
        .get(format!("{}/snapshot/prepare", env.base_url()))
        .send()
        .await
        .expect("GET /snapshot/prepare");
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    get_json(&env, "/health").await;
}
