//! Capsule I/O routes without a real agent (no runsc needed), against SQLite and PostgreSQL:
//! id validation, team scoping (another team's capsule is 404), status checks, agent error
//! mapping, WebSocket frame validation, and the `{port}-{capsule_id}.{domain}` proxy against a
//! fake agent that echoes what it receives (HTTP and WebSocket).

mod common;

use common::{Auth, Cred, TestServer, assert_error};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use wrenn_server::ids::{CapsuleId, HostId, TeamId};

both_backends!(
    ids_scoping_and_status,
    unreachable_agent_is_host_unavailable,
    websocket_prechecks_and_frames,
    proxy_routing_and_errors,
    proxy_forwards_http_and_websocket,
);

/// Inserts a host row (agent at `address`) and returns its id.
async fn host(s: &TestServer, address: &str) -> HostId {
    let id = HostId::random();
    sqlx::query(
        "INSERT INTO hosts (id, address, status, created_at, updated_at) \
         VALUES ($1, $2, 'online', 0, 0)",
    )
    .bind(id.db())
    .bind(address)
    .execute(s.state.pool())
    .await
    .expect("insert host");
    id
}

async fn capsule(s: &TestServer, team: &str, host: Option<HostId>, status: &str) -> CapsuleId {
    let id = CapsuleId::random();
    let team = TeamId::parse(team).expect("team id");
    sqlx::query(
        "INSERT INTO sandboxes (id, team_id, host_id, template, status, vcpus, memory_mb, \
         created_at, last_updated) VALUES ($1, $2, $3, 'minimal', $4, 1, 512, 0, 0)",
    )
    .bind(id.db())
    .bind(team.db())
    .bind(host.map(|h| h.db()))
    .bind(status)
    .execute(s.state.pool())
    .await
    .expect("insert sandbox");
    id
}

async fn api_key(s: &TestServer, who: &Auth) -> String {
    let (st, v) = s
        .post("/v1/api-keys", who.bearer(), json!({"name": "k"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["key"].as_str().expect("key").to_owned()
}

/// Every capsule I/O route, as (method, path suffix, JSON body).
fn io_routes() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/exec",
            json!({"cmd": "/bin/sh", "args": ["-c", "true"]}),
        ),
        ("GET", "/processes", Value::Null),
        ("DELETE", "/processes/42", Value::Null),
        ("POST", "/files/read", json!({"path": "/etc/hostname"})),
        (
            "POST",
            "/files/stream/read",
            json!({"path": "/etc/hostname"}),
        ),
        ("POST", "/files/list", json!({"path": "/"})),
        ("POST", "/files/mkdir", json!({"path": "/tmp/x"})),
        ("POST", "/files/remove", json!({"path": "/tmp/x"})),
    ]
}

async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    cred: Cred<'_>,
    body: &Value,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let body = (!body.is_null()).then(|| body.clone());
    s.call(method, path, cred, body).await
}

async fn ids_scoping_and_status(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let alice_key = api_key(s, &alice).await;
    let h = host(s, "127.0.0.1:1").await;
    let alices = capsule(s, &alice.team_id, Some(h), "running").await;
    let paused = capsule(s, &alice.team_id, Some(h), "paused").await;
    let unknown = CapsuleId::random();

    for (method, suffix, body) in io_routes() {
        // Unauthenticated → 401.
        let (st, v) = call(
            s,
            method,
            &format!("/v1/capsules/{alices}{suffix}"),
            Cred::None,
            &body,
        )
        .await;
        assert_error(st, &v, 401, "unauthorized");
        // Malformed id → 400 before any lookup.
        for bad in ["nope", "cl-short", "CL-0000000000000000000000001"] {
            let (st, v) = call(
                s,
                method,
                &format!("/v1/capsules/{bad}{suffix}"),
                alice.bearer(),
                &body,
            )
            .await;
            assert_error(st, &v, 400, "invalid_request");
        }
        // Unknown, and another team's (never 403).
        let (st, v) = call(
            s,
            method,
            &format!("/v1/capsules/{unknown}{suffix}"),
            alice.bearer(),
            &body,
        )
        .await;
        assert_error(st, &v, 404, "not_found");
        let (st, v) = call(
            s,
            method,
            &format!("/v1/capsules/{alices}{suffix}"),
            bob.bearer(),
            &body,
        )
        .await;
        assert_error(st, &v, 404, "not_found");
        // Not running → 409 invalid_state with the spec's message.
        let (st, v) = call(
            s,
            method,
            &format!("/v1/capsules/{paused}{suffix}"),
            Cred::ApiKey(&alice_key),
            &body,
        )
        .await;
        assert_error(st, &v, 409, "invalid_state");
        assert_eq!(
            v["error"]["message"],
            "sandbox is not running (status: paused)"
        );
        // The `/api` prefix serves the same routes.
        let (st, v) = call(
            s,
            method,
            &format!("/api/v1/capsules/{paused}{suffix}"),
            alice.bearer(),
            &body,
        )
        .await;
        assert_error(st, &v, 409, "invalid_state");
    }

    // Request validation happens before the agent is called.
    let exec = format!("/v1/capsules/{alices}/exec");
    let (st, v) = s.post(&exec, alice.bearer(), json!({"args": ["x"]})).await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(v["error"]["message"], "cmd is required");
    let (st, v) = s
        .post(
            &exec,
            alice.bearer(),
            json!({"cmd": "x", "timeout_sec": -1}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s
        .post(
            &exec,
            alice.bearer(),
            json!({"cmd": "x", "background": true, "tag": "123"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = s.post(&exec, alice.bearer(), json!({"cmd": 5})).await;
    assert_error(st, &v, 400, "invalid_request");
    for route in ["read", "list", "mkdir", "remove", "stream/read"] {
        let path = format!("/v1/capsules/{alices}/files/{route}");
        let (st, v) = s.post(&path, alice.bearer(), json!({})).await;
        assert_error(st, &v, 400, "invalid_request");
        let (st, v) = s
            .post(&path, alice.bearer(), json!({"path": "a\u{0}b"}))
            .await;
        assert_error(st, &v, 400, "invalid_request");
    }

    // Uploads: not multipart, parts out of order, missing parts, over the unary limit.
    let write = s.url(&format!("/v1/capsules/{alices}/files/write"));
    let resp = s
        .http
        .post(&write)
        .bearer_auth(&alice.token)
        .body("plain")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_request");
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u\"\r\n\r\n\
         data\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/a\r\n\
         --{boundary}--\r\n"
    );
    let resp = s
        .http
        .post(&write)
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "file before path");
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/tmp/a\r\n--{boundary}--\r\n"
    );
    let resp = s
        .http
        .post(&write)
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no file part");
    let resp = s
        .http
        .post(&write)
        .bearer_auth(&alice.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("content-length", (101u64 << 20).to_string())
        .body(vec![0u8; 16])
        .send()
        .await;
    // The server answers 413 from the Content-Length alone (the client may see the reset).
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Process selectors.
    let (st, v) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/capsules/{alices}/processes/0"),
            alice.bearer(),
            None,
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
}

async fn unreachable_agent_is_host_unavailable(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    // Port 1 refuses connections: the Connect client reports Unavailable.
    let h = host(s, "127.0.0.1:1").await;
    let id = capsule(s, &alice.team_id, Some(h), "running").await;
    for (method, suffix, body) in io_routes() {
        let (st, v) = call(
            s,
            method,
            &format!("/v1/capsules/{id}{suffix}"),
            alice.bearer(),
            &body,
        )
        .await;
        assert_error(st, &v, 503, "host_unavailable");
    }
    // Running but placed nowhere.
    let orphan = capsule(s, &alice.team_id, None, "running").await;
    let (st, v) = s
        .post(
            &format!("/v1/capsules/{orphan}/exec"),
            alice.bearer(),
            json!({"cmd": "true"}),
        )
        .await;
    assert_error(st, &v, 503, "host_unavailable");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(s: &TestServer, path: &str, key: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("{}{path}", s.base.replace("http://", "ws://"))
        .into_client_request()
        .expect("request");
    if let Some(key) = key {
        req.headers_mut()
            .insert("x-api-key", key.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Text frames (parsed) until the server closes; the close code last (0 if none).
async fn drain(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("server closes");
        match next {
            Some(Ok(Message::Text(t))) => {
                frames.push(serde_json::from_str(&t).expect("JSON frame"))
            }
            Some(Ok(Message::Close(frame))) => {
                return (frames, frame.map_or(0, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (frames, 0),
        }
    }
}

async fn websocket_prechecks_and_frames(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let bob = s.user("bob@example.com", "Bob").await;
    let alice_key = api_key(s, &alice).await;
    let bob_key = api_key(s, &bob).await;
    let h = host(s, "127.0.0.1:1").await;
    let id = capsule(s, &alice.team_id, Some(h), "running").await;
    let paused = capsule(s, &alice.team_id, Some(h), "paused").await;

    // No credentials: 401 before the upgrade.
    match ws(s, &format!("/v1/capsules/{id}/exec/stream"), None).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    // A plain GET (no upgrade) is a JSON 400.
    let (st, v) = s
        .get(&format!("/v1/capsules/{id}/pty"), Cred::ApiKey(&alice_key))
        .await;
    assert_error(st, &v, 400, "invalid_request");

    // Exec stream: another team's capsule → in-band error, no exit.
    let start = json!({"type": "start", "cmd": "/bin/sh", "args": ["-c", "true"]}).to_string();
    let mut sock = ws(s, &format!("/v1/capsules/{id}/exec/stream"), Some(&bob_key))
        .await
        .expect("upgrade");
    sock.send(Message::Text(start.clone().into()))
        .await
        .expect("send");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert!(
        frames[0]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{frames:?}"
    );
    // Paused capsule.
    let mut sock = ws(
        s,
        &format!("/v1/capsules/{paused}/exec/stream"),
        Some(&alice_key),
    )
    .await
    .expect("upgrade");
    sock.send(Message::Text(start.clone().into()))
        .await
        .expect("send");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["data"], "sandbox is not running (status: paused)");
    // First message not a start.
    for bad in [
        json!({"type": "stop"}).to_string(),
        json!({"type": "start"}).to_string(),
    ] {
        let mut sock = ws(
            s,
            &format!("/v1/capsules/{id}/exec/stream"),
            Some(&alice_key),
        )
        .await
        .expect("upgrade");
        sock.send(Message::Text(bad.into())).await.expect("send");
        let (frames, _) = drain(&mut sock).await;
        assert_eq!(frames[0]["type"], "error");
        assert_eq!(
            frames[0]["data"],
            "first message must be type 'start' with a 'cmd' field"
        );
    }
    // Non-JSON text and binary first frames: error frame, then close 1003.
    for bad in [
        Message::Text("hello".into()),
        Message::Binary(vec![1u8, 2, 3].into()),
    ] {
        let mut sock = ws(
            s,
            &format!("/v1/capsules/{id}/exec/stream"),
            Some(&alice_key),
        )
        .await
        .expect("upgrade");
        sock.send(bad).await.expect("send");
        let (frames, code) = drain(&mut sock).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["type"], "error");
        assert_eq!(code, 1003);
    }
    // Oversized frame (over 4 MiB): error frame, then close 1009.
    let mut sock = ws(s, &format!("/v1/capsules/{id}/pty"), Some(&alice_key))
        .await
        .expect("upgrade");
    let big = format!(r#"{{"type":"start","cmd":"{}"}}"#, "a".repeat(5 << 20));
    sock.send(Message::Text(big.into())).await.expect("send");
    let (frames, code) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["fatal"], true);
    assert_eq!(code, 1009);

    // PTY: bad first messages, another team's capsule, and an unreachable agent.
    for (first, want) in [
        (
            json!({"type": "resize", "cols": 1, "rows": 1}),
            "first message must be type 'start' or 'connect'",
        ),
        (json!({"type": "connect"}), "connect needs a tag"),
    ] {
        let mut sock = ws(s, &format!("/v1/capsules/{id}/pty"), Some(&alice_key))
            .await
            .expect("upgrade");
        sock.send(Message::Text(first.to_string().into()))
            .await
            .expect("send");
        let (frames, _) = drain(&mut sock).await;
        assert_eq!(
            frames[0],
            json!({"type": "error", "data": want, "fatal": true})
        );
    }
    let mut sock = ws(s, &format!("/v1/capsules/{id}/pty"), Some(&bob_key))
        .await
        .expect("upgrade");
    sock.send(Message::Text(
        json!({"type": "start", "cmd": "/bin/bash"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["fatal"], true);
    let mut sock = ws(s, &format!("/v1/capsules/{id}/pty"), Some(&alice_key))
        .await
        .expect("upgrade");
    sock.send(Message::Text(
        json!({"type": "connect", "tag": "pty-00000000"})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error", "{frames:?}");

    // Process re-attach: bad selector and unreachable agent, both in-band.
    let mut sock = ws(
        s,
        &format!("/v1/capsules/{id}/processes/0/stream"),
        Some(&alice_key),
    )
    .await
    .expect("upgrade");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error");
    let mut sock = ws(
        s,
        &format!("/v1/capsules/{id}/processes/7/stream"),
        Some(&alice_key),
    )
    .await
    .expect("upgrade");
    let (frames, _) = drain(&mut sock).await;
    assert_eq!(frames[0]["type"], "error");
    assert!(
        frames[0]["data"]
            .as_str()
            .unwrap_or_default()
            .starts_with("failed to connect to process: "),
        "{frames:?}"
    );
}

/// A request with a proxy Host, sent to the server's own address.
async fn via_proxy(s: &TestServer, host: &str, path: &str) -> reqwest::Response {
    s.http
        .get(s.url(path))
        .header("host", host)
        .header("x-api-key", "wrn_00000000000000000000000000000000")
        .send()
        .await
        .expect("send")
}

async fn proxy_routing_and_errors(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let h = host(s, "127.0.0.1:1").await;
    let paused = capsule(s, &alice.team_id, Some(h), "paused").await;
    let running = capsule(s, &alice.team_id, Some(h), "running").await;
    let port = s.base.rsplit(':').next().unwrap_or_default().to_owned();

    // API paths under a proxy Host are not API routes.
    let unknown = CapsuleId::random();
    let resp = via_proxy(s, &format!("8000-{unknown}.localhost:{port}"), "/health").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.text().await.unwrap_or_default(), "sandbox not found");
    let resp = via_proxy(s, &format!("70000-{running}.localhost:{port}"), "/").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = via_proxy(s, &format!("8000-cl-abc.localhost:{port}"), "/").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = via_proxy(s, &format!("8000-{paused}.localhost:{port}"), "/").await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        "sandbox is not running (status: paused)"
    );
    // Unreachable agent → 502 text.
    let resp = via_proxy(s, &format!("8000-{running}.127.0.0.1:{port}"), "/").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .starts_with("proxy error: ")
    );
    // Ordinary hosts still reach the API.
    let resp = via_proxy(s, &format!("localhost:{port}"), "/health").await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A fake agent: `/proxy/{id}/{port}/…` echoes method, path, query and headers as JSON, answers
/// `/proxy/{id}/{port}/redirect` with a prefixed Location, and echoes WebSocket text frames.
async fn fake_agent() -> std::net::SocketAddr {
    use axum::extract::ws::{Message as AxMessage, WebSocketUpgrade};
    use axum::extract::{OriginalUri, Request};
    use axum::response::IntoResponse;

    async fn handle(OriginalUri(uri): OriginalUri, req: Request) -> axum::response::Response {
        let path = uri.path().to_owned();
        if path.ends_with("/ws") {
            let (mut parts, _) = req.into_parts();
            let upgrade =
                <WebSocketUpgrade as axum::extract::FromRequestParts<()>>::from_request_parts(
                    &mut parts,
                    &(),
                )
                .await;
            return match upgrade {
                Ok(ws) => ws
                    .on_upgrade(|mut socket| async move {
                        while let Some(Ok(AxMessage::Text(t))) = socket.recv().await {
                            let reply = format!("echo:{}", t.as_str());
                            if socket.send(AxMessage::Text(reply.into())).await.is_err() {
                                break;
                            }
                        }
                    })
                    .into_response(),
                Err(e) => e.into_response(),
            };
        }
        if path.ends_with("/redirect") {
            let prefix = path.trim_end_matches("/redirect");
            return (
                StatusCode::MOVED_PERMANENTLY,
                [("location", format!("{prefix}/sub/"))],
            )
                .into_response();
        }
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
            .collect();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        axum::Json(json!({
            "path": path,
            "query": uri.query(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }))
        .into_response()
    }

    let app = axum::Router::new().fallback(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

async fn proxy_forwards_http_and_websocket(s: &TestServer) {
    let alice = s.user("alice@example.com", "Alice").await;
    let agent = fake_agent().await;
    let h = host(s, &agent.to_string()).await;
    let id = capsule(s, &alice.team_id, Some(h), "running").await;
    let port = s.base.rsplit(':').next().unwrap_or_default().to_owned();
    let proxy_host = format!("8000-{id}.localhost:{port}");

    let resp = s
        .http
        .post(s.url("/some/path/?a=1&b=two"))
        .header("host", &proxy_host)
        .header("x-api-key", "wrn_00000000000000000000000000000000")
        .header("cookie", "wrenn_sid=secret; app=1")
        .header("x-custom", "kept")
        .body("payload")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::OK);
    let echo: Value = resp.json().await.expect("json");
    assert_eq!(echo["path"], format!("/proxy/{id}/8000/some/path/"));
    assert_eq!(echo["query"], "a=1&b=two");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["headers"]["x-custom"], "kept");
    assert_eq!(echo["headers"]["cookie"], "app=1");
    assert!(echo["headers"].get("x-api-key").is_none(), "{echo}");
    assert_eq!(echo["headers"]["host"], agent.to_string());
    assert_eq!(echo["headers"]["x-forwarded-host"], proxy_host);
    // The root path keeps its slash.
    let echo: Value = via_proxy(s, &proxy_host, "/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(echo["path"], format!("/proxy/{id}/8000/"));
    // Location loses the agent's prefix.
    let resp = s
        .http
        .get(s.url("/redirect"))
        .header("host", &proxy_host)
        .send()
        .await
        .expect("send");
    // reqwest follows redirects by default; the final hop shows where it went.
    assert_eq!(resp.url().path(), "/sub/");

    // WebSocket through the proxy.
    let mut req = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("host", proxy_host.parse().expect("host"));
    let (mut sock, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade via proxy");
    sock.send(Message::Text("hi".into())).await.expect("send");
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), sock.next())
        .await
        .expect("reply in time");
    match reply {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "echo:hi"),
        other => panic!("unexpected {other:?}"),
    }
}
