//! Template build API (spec §B.13, §G) without capsules, on SQLite and PostgreSQL: admin-only
//! access, every bad input a 400 with a precise message and nothing queued, the Build object,
//! cancel of a queued build, and restart recovery of the queue. Builds that run in real
//! capsules are in crates/cli/tests/template_build.rs.

mod common;

use std::time::Duration;

use common::{Cred, TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wrenn_server::builds::archive::{MAX_ARCHIVE_BYTES, write_tar};

both_backends!(
    admin_only,
    bad_input_is_rejected_and_nothing_starts,
    queued_build_object_and_cancel,
    restart_fails_running_and_runs_queued,
);

async fn admin_key(s: &TestServer) -> (common::Auth, String) {
    // The first active user is the platform admin.
    let admin = s.user("admin@example.com", "Admin").await;
    let (st, v) = s
        .post("/v1/api-keys", admin.bearer(), json!({"name": "ci"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    (admin, v["key"].as_str().expect("key").to_owned())
}

fn multipart(config: &Value, archive: &[u8]) -> (String, Vec<u8>) {
    let b = "xTESTBOUNDARYx";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{config}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(archive);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

async fn post_multipart(
    s: &TestServer,
    key: &str,
    config: &Value,
    archive: &[u8],
) -> (StatusCode, Value) {
    let (ct, body) = multipart(config, archive);
    let resp = s
        .http
        .post(s.url("/v1/admin/builds"))
        .header("X-API-Key", key)
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .expect("request");
    let st = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    (st, v)
}

async fn admin_only(s: &TestServer) {
    let (admin, key) = admin_key(s).await;
    let user = s.user("user@example.com", "User").await;
    let (st, v) = s
        .post("/v1/api-keys", user.bearer(), json!({"name": "u"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let user_key = v["key"].as_str().expect("key").to_owned();
    let body = json!({"name": "t1", "recipe": ["RUN true"]});
    let (st, v) = s.get("/v1/admin/builds", Cred::None).await;
    assert_error(st, &v, 401, "unauthorized");
    for cred in [user.bearer(), Cred::ApiKey(&user_key)] {
        let (st, v) = s.get("/v1/admin/builds", cred).await;
        assert_error(st, &v, 403, "forbidden");
        let (st, v) = s.post("/v1/admin/builds", cred, body.clone()).await;
        assert_error(st, &v, 403, "forbidden");
    }
    for cred in [admin.bearer(), Cred::ApiKey(&key)] {
        let (st, v) = s.get("/v1/admin/builds", cred).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v, json!([]));
    }
}

async fn bad_input_is_rejected_and_nothing_starts(s: &TestServer) {
    let (_, key) = admin_key(s).await;
    let k = Cred::ApiKey(&key);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "t", "recipe": ["RUN true", "FROB x"]}),
            "recipe line 2: unknown instruction \"FROB\" (expected RUN, START, ENV, WORKDIR, USER or COPY)",
        ),
        (
            json!({"name": "t", "recipe": ["COPY ../etc/passwd /x"]}),
            "recipe line 1: COPY source \"../etc/passwd\": must not contain `..` (it would leave the archive)",
        ),
        (
            json!({"name": "../etc", "recipe": ["RUN true"]}),
            "name must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$",
        ),
        (
            json!({"name": "has space", "recipe": ["RUN true"]}),
            "name must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$",
        ),
        (json!({"recipe": ["RUN true"]}), "name is required"),
        (
            json!({"name": "t", "recipe": []}),
            "recipe must hold at least one instruction",
        ),
        (
            json!({"name": "t", "recipe": ["RUN --timeout=soon true"]}),
            "recipe line 1: RUN --timeout=soon: invalid duration \"soon\" (expected e.g. 30s, 5m, 1h30m, 500ms)",
        ),
        (
            json!({"name": "t", "recipe": ["ENV 9X=1"]}),
            "recipe line 1: ENV: invalid variable name \"9X\" (expected [A-Za-z_][A-Za-z0-9_]*)",
        ),
        (
            json!({"name": "t", "recipe": ["COPY app /opt/app"]}),
            "recipe line 1: COPY needs an uploaded archive (multipart part `archive`)",
        ),
        (
            json!({"name": "t", "recipe": ["RUN true"], "healthcheck": "--every=1s true"}),
            "unknown healthcheck flag --every (expected --interval, --timeout, --start-period or --retries)",
        ),
        (
            json!({"name": "t", "recipe": ["RUN true"], "vcpus": 99}),
            "vcpus must be 1..=8, got 99",
        ),
        (
            json!({"name": "t", "recipe": ["RUN true"], "base_template": "nope"}),
            "base_template \"nope\" is not a platform template",
        ),
    ];
    for (body, message) in cases {
        let (st, v) = s.post("/v1/admin/builds", k, body.clone()).await;
        assert_error(st, &v, 400, "invalid_request");
        assert_eq!(v["error"]["message"], message, "{body}");
    }
    // Archives: traversal, COPY of a missing source, garbage, over the limit.
    let config = json!({"name": "t", "recipe": ["COPY app /opt/app"]});
    let evil = write_tar(&[("app/ok.txt", Some(b"ok")), ("../evil", Some(b"x"))]);
    let (st, v) = post_multipart(s, &key, &config, &evil).await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(
        v["error"]["message"],
        "archive: archive entry \"../evil\" escapes the extraction directory (absolute path or `..`)"
    );
    let other = write_tar(&[("other.txt", Some(b"x"))]);
    let (st, v) = post_multipart(s, &key, &config, &other).await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(
        v["error"]["message"],
        "recipe line 1: COPY source \"app\" is not in the archive"
    );
    let (st, v) = post_multipart(s, &key, &config, b"definitely not an archive").await;
    assert_error(st, &v, 400, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("archive: archive is not a valid tar.gz"),
        "{v}"
    );
    let huge = vec![0u8; MAX_ARCHIVE_BYTES + 1];
    let (st, v) = post_multipart(s, &key, &config, &huge).await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(v["error"]["message"], "archive is larger than 100 MiB");
    let (st, v) = post_multipart(s, &key, &json!("x"), &other).await;
    assert_error(st, &v, 400, "invalid_request");

    // Nothing was queued, and no archive was kept.
    let (st, v) = s.get("/v1/admin/builds", k).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v, json!([]));
    let dir = s.state.builds().dir();
    let kept = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "no archive stored in {}", dir.display());
}

async fn queued_build_object_and_cancel(s: &TestServer) {
    let (_, key) = admin_key(s).await;
    let k = Cred::ApiKey(&key);
    let archive = write_tar(&[("app", None), ("app/main.py", Some(b"print('hi')\n"))]);
    let config = json!({
        "name": "my-template", "recipe": ["ENV A=1", "COPY app /opt/app"],
        "healthcheck": "--interval=1s curl -sf http://127.0.0.1:8000/",
        "vcpus": 2, "memory_mb": 1024,
    });
    let (st, v) = post_multipart(s, &key, &config, &archive).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("bld-") && id.len() == 29, "{id}");
    assert_eq!(v["name"], "my-template");
    assert_eq!(v["base_template"], "minimal");
    assert_eq!(v["recipe"], json!(["ENV A=1", "COPY app /opt/app"]));
    assert_eq!(v["status"], "pending");
    assert_eq!(v["current_step"], 0);
    assert_eq!(v["total_steps"], 2 + 7, "pre/post phases add 7 steps");
    assert_eq!(v["vcpus"], 2);
    assert_eq!(v["memory_mb"], 1024);
    assert_eq!(v["template_type"], "snapshot");
    assert_eq!(v["logs"], json!([]));
    assert!(v["created_at"].as_str().expect("ts").ends_with('Z'));
    // The archive waits on disk for the worker.
    assert_eq!(
        std::fs::read_dir(s.state.builds().dir())
            .expect("dir")
            .count(),
        1
    );

    // The same name again while it is queued: 409.
    let (st, v) = post_multipart(s, &key, &config, &archive).await;
    assert_error(st, &v, 409, "conflict");

    let (st, v) = s.get(&format!("/v1/admin/builds/{id}"), k).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["id"], id.as_str());
    let (st, v) = s.get("/v1/admin/builds", k).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    let (st, v) = s.get("/v1/admin/builds/bld-nope", k).await;
    assert_error(st, &v, 400, "invalid_request");
    let unknown = wrenn_server::ids::BuildId::random();
    let (st, v) = s.get(&format!("/v1/admin/builds/{unknown}"), k).await;
    assert_error(st, &v, 404, "not_found");

    let cancel = format!("/v1/admin/builds/{id}/cancel");
    let (st, v) = s.post(&cancel, k, json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = s.get(&format!("/v1/admin/builds/{id}"), k).await;
    assert_eq!(v["status"], "cancelled");
    assert!(v["completed_at"].is_string());
    assert_eq!(
        std::fs::read_dir(s.state.builds().dir())
            .expect("dir")
            .count(),
        0,
        "the archive of a cancelled build is removed"
    );
    let (st, v) = s.post(&cancel, k, json!({})).await;
    assert_error(st, &v, 400, "invalid_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("already ended (cancelled)")
    );
    // Skip-pre-post counts only the recipe's steps.
    let (st, v) = s
        .post(
            "/v1/admin/builds",
            k,
            json!({"name": "plain", "recipe": ["RUN true"], "skip_pre_post": true}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["total_steps"], 1);
    assert_eq!(v["template_type"], "base");
}

async fn restart_fails_running_and_runs_queued(s: &TestServer) {
    let (_, key) = admin_key(s).await;
    let k = Cred::ApiKey(&key);
    let (st, queued) = s
        .post(
            "/v1/admin/builds",
            k,
            json!({"name": "queued", "recipe": ["RUN true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{queued}");
    let (st, interrupted) = s
        .post(
            "/v1/admin/builds",
            k,
            json!({"name": "interrupted", "recipe": ["RUN true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{interrupted}");
    // As a previous process would have left it.
    let interrupted_id =
        wrenn_server::ids::BuildId::parse(interrupted["id"].as_str().unwrap()).expect("build id");
    sqlx::query("UPDATE builds SET status = 'running', started_at = 1 WHERE id = $1")
        .bind(interrupted_id.db())
        .execute(s.state.pool())
        .await
        .expect("update");

    // "Restart": recovery, then the workers pick up the queue (no host here, so the queued
    // build runs and fails at its first need of a capsule).
    let workers = wrenn_server::builds::workers::spawn(&s.state);
    let mut got = (Value::Null, Value::Null);
    for _ in 0..100 {
        let (_, a) = s
            .get(&format!("/v1/admin/builds/{interrupted_id}"), k)
            .await;
        let (_, b) = s
            .get(
                &format!("/v1/admin/builds/{}", queued["id"].as_str().unwrap()),
                k,
            )
            .await;
        got = (a, b);
        if got.0["status"] == "failed" && got.1["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    workers.abort();
    let (a, b) = got;
    assert_eq!(a["status"], "failed", "{a}");
    assert_eq!(
        a["error"],
        "the control plane restarted while the build was running"
    );
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["started_at"].is_string(), "the queued build ran: {b}");
    assert_eq!(
        b["error"],
        "no host for the build capsule: no host agent is online"
    );
}
