//! Malformed Connect input must produce a prompt, clean error — never a panic,
//! a hung stream or a dead daemon.

mod common;

use common::EnvdProcess;
use std::time::Duration;

/// A Connect streaming envelope: flags byte, big-endian length, payload.
fn envelope(flags: u8, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

async fn post(
    http: &reqwest::Client,
    envd: &EnvdProcess,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        http.post(format!("{}{path}", envd.base_url()))
            .header("content-type", content_type)
            .header("connect-protocol-version", "1")
            .body(body)
            .send(),
    )
    .await
    .unwrap_or_else(|_| panic!("{path}: no response within 10 s"))
    .expect("request");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .unwrap_or_else(|_| panic!("{path}: response body hung"))
        .expect("body");
    (status, body.to_vec())
}

/// The end-of-stream message of a Connect streaming response, parsed as JSON.
fn end_stream_error(body: &[u8]) -> serde_json::Value {
    let mut rest = body;
    while rest.len() >= 5 {
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "truncated response envelope");
        let payload = &rest[5..5 + len];
        if flags & 0x02 != 0 {
            let v: serde_json::Value = serde_json::from_slice(payload).expect("end-stream json");
            return v["error"].clone();
        }
        rest = &rest[5 + len..];
    }
    panic!("stream ended without an end-stream message: {body:?}");
}

#[tokio::test]
async fn malformed_connect_requests_get_clean_errors() {
    let envd = EnvdProcess::start();
    let http = reqwest::Client::new();
    let stream_ct = "application/connect+proto";

    // Server-streaming Start with: a declared length longer than the body, a
    // body that is not protobuf, a compressed flag without an encoding, and an
    // empty body. Each must end the stream with an error code.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated envelope", envelope(0, 100, b"abc")),
        (
            "invalid protobuf",
            envelope(0, 4, &[0xff, 0xff, 0xff, 0xff]),
        ),
        (
            "compressed flag, no encoding",
            envelope(1, 2, &[0x0a, 0x00]),
        ),
        ("short header", vec![0, 0]),
    ];
    for (what, body) in cases {
        let (status, resp) = post(&http, &envd, "/process.Process/Start", stream_ct, body).await;
        if status == 200 {
            let err = end_stream_error(&resp);
            assert!(
                err["code"].as_str().is_some_and(|c| !c.is_empty()),
                "{what}: end-stream without an error code: {err}"
            );
        } else {
            assert!(
                (400..500).contains(&status),
                "{what}: status {status}, body {:?}",
                String::from_utf8_lossy(&resp)
            );
        }
    }

    // Unary with bytes that are not protobuf, and JSON of the wrong shape.
    let (status, body) = post(
        &http,
        &envd,
        "/filesystem.Filesystem/Stat",
        "application/proto",
        vec![0xff, 0xff, 0xff],
    )
    .await;
    assert!((400..500).contains(&status), "unary garbage: {status}");
    let err: serde_json::Value = serde_json::from_slice(&body).expect("connect error json");
    assert!(err["code"].is_string(), "unary garbage: {err}");

    let (status, _) = post(
        &http,
        &envd,
        "/filesystem.Filesystem/Stat",
        "application/json",
        br#"{"path": 42}"#.to_vec(),
    )
    .await;
    assert!((400..500).contains(&status), "wrong JSON type: {status}");

    // Client-streaming StreamInput whose first message is garbage.
    let (status, resp) = post(
        &http,
        &envd,
        "/process.Process/StreamInput",
        stream_ct,
        envelope(0, 3, &[0xff, 0xff, 0xff]),
    )
    .await;
    if status == 200 {
        let err = end_stream_error(&resp);
        assert!(err["code"].is_string(), "StreamInput garbage: {err}");
    } else {
        assert!(
            (400..500).contains(&status),
            "StreamInput garbage: {status}"
        );
    }

    // Unknown method and service: a Connect not-found style answer, not a crash.
    let (status, _) = post(
        &http,
        &envd,
        "/process.Process/NoSuchMethod",
        "application/proto",
        vec![],
    )
    .await;
    assert!((400..500).contains(&status), "unknown method: {status}");

    // The daemon survived all of it.
    let health = http
        .get(format!("{}/health", envd.base_url()))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status().as_u16(), 200);
}
