//! The port proxy against local upstreams on 127.0.0.1: the resolver returns 127.0.0.1 instead
//! of a capsule IP; everything after resolution is the code path real capsules take.

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use wrenn_agent::CapsuleId;
use wrenn_agent::proxy::{self, Connections, Proxy, ProxyRefusal};

type States = Arc<Mutex<HashMap<CapsuleId, &'static str>>>;

struct Harness {
    addr: SocketAddr,
    states: States,
    connections: Connections,
    id: CapsuleId,
}

impl Harness {
    async fn start() -> Self {
        let states: States = Arc::default();
        let id = CapsuleId::from_u128(0xabc);
        states.lock().unwrap().insert(id.clone(), "running");
        let lookup = states.clone();
        let resolve = move |id: &CapsuleId| match lookup.lock().unwrap().get(id) {
            None => Err(ProxyRefusal::NotFound(id.clone())),
            Some(&"running") => Ok(Ipv4Addr::LOCALHOST),
            Some(state) => Err(ProxyRefusal::Unavailable {
                id: id.clone(),
                state: (*state).to_owned(),
            }),
        };
        let proxy = Arc::new(Proxy::new(resolve));
        let connections = proxy.connections();
        let app = proxy::router(proxy);
        let addr = serve(app).await;
        Self {
            addr,
            states,
            connections,
            id,
        }
    }

    fn url(&self, port: u16, rest: &str) -> String {
        format!("/proxy/{}/{port}{rest}", self.id)
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// The test "service inside the capsule".
async fn upstream() -> u16 {
    async fn info(req: Request) -> impl IntoResponse {
        let h = req.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        axum::Json(serde_json::json!({
            "path_and_query": req.uri().path_and_query().map(|p| p.as_str().to_owned()),
            "host": get("host"),
            "x_forwarded_for": get("x-forwarded-for"),
            "x_forwarded_host": get("x-forwarded-host"),
            "x_forwarded_proto": get("x-forwarded-proto"),
            "x_forwarded_prefix": get("x-forwarded-prefix"),
            "x_custom": get("x-custom"),
            "proxy_authorization": get("proxy-authorization"),
        }))
    }
    // Echoes the request body as it arrives (full duplex).
    async fn echo(req: Request) -> Response {
        Response::new(Body::from_stream(req.into_body().into_data_stream()))
    }
    async fn slow() -> Response {
        let chunks = futures::stream::unfold(0u32, |i| async move {
            if i >= 3 {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Some((Ok::<_, std::io::Error>(format!("chunk{i}\n")), i + 1))
        });
        Response::new(Body::from_stream(chunks))
    }
    async fn forever() -> Response {
        let chunks = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>("tick\n"), ()))
        });
        Response::new(Body::from_stream(chunks))
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let redirect = |status: StatusCode, location: String| {
        move || {
            let location = location.clone();
            async move {
                (
                    status,
                    [("location", location), ("keep-alive", "timeout=5".into())],
                )
            }
        }
    };
    let app = Router::new()
        .route("/info", any(info))
        .route("/info/{*rest}", any(info))
        .route("/", any(info))
        .route("/echo", any(echo))
        .route("/slow", get(slow))
        .route("/forever", get(forever))
        .route(
            "/redirect",
            get(redirect(StatusCode::FOUND, "/target?x=1".into())),
        )
        .route(
            "/absolute",
            get(redirect(
                StatusCode::MOVED_PERMANENTLY,
                format!("http://127.0.0.1:{port}/abs-target"),
            )),
        )
        .route(
            "/elsewhere",
            get(redirect(StatusCode::FOUND, "https://example.com/x".into())),
        )
        .route(
            "/relative",
            get(redirect(StatusCode::FOUND, "next/page".into())),
        );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    port
}

/// A WebSocket echo server that accepts subprotocol `echo.v1` when offered.
async fn ws_upstream() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The callback's error type is fixed by tungstenite.
                #[allow(clippy::result_large_err)]
                let choose = |req: &WsRequest, mut resp: WsResponse| {
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if offered.split(',').any(|p| p.trim() == "echo.v1") {
                        resp.headers_mut()
                            .insert("sec-websocket-protocol", "echo.v1".parse().unwrap());
                    }
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, choose).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    port
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn open(addr: SocketAddr, req: axum::http::Request<Body>) -> Response<hyper::body::Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap()
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: Body) -> Reply {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{addr}"))
        .header("x-custom", "kept")
        .header("proxy-authorization", "Basic secret")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .body(body)
        .unwrap();
    let response = open(addr, req).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get_json(addr: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let reply = send(addr, "GET", path, Body::empty()).await;
    let json = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, json)
}

#[tokio::test]
async fn get_forwards_path_query_and_headers() {
    let h = Harness::start().await;
    let port = upstream().await;
    let (status, info) = get_json(h.addr, &h.url(port, "/info/a%20b/c?x=1&y=%2F")).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["path_and_query"], "/info/a%20b/c?x=1&y=%2F");
    assert_eq!(info["host"], format!("127.0.0.1:{port}"));
    assert_eq!(info["x_forwarded_for"], "127.0.0.1");
    assert_eq!(info["x_forwarded_host"], h.addr.to_string());
    assert_eq!(info["x_forwarded_proto"], "http");
    assert_eq!(info["x_forwarded_prefix"], h.url(port, ""));
    assert_eq!(info["x_custom"], "kept");
    assert_eq!(info["proxy_authorization"], serde_json::Value::Null);
    // No path at all, and a bare trailing slash, both reach "/".
    let (status, info) = get_json(h.addr, &h.url(port, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["path_and_query"], "/");
    let (_, info) = get_json(h.addr, &h.url(port, "/?q=1")).await;
    assert_eq!(info["path_and_query"], "/?q=1");
    let (_, info) = get_json(h.addr, &h.url(port, "?q=2")).await;
    assert_eq!(info["path_and_query"], "/?q=2");
}

#[tokio::test]
async fn post_body_streams_both_ways() {
    let h = Harness::start().await;
    let port = upstream().await;
    // Large body: arrives intact.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let reply = send(
        h.addr,
        "POST",
        &h.url(port, "/echo"),
        Body::from(big.clone()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), big.len());
    assert!(reply.body == big);

    // Full duplex: each chunk comes back before the next one is sent, so nothing buffers the
    // whole body on either leg.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body_stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(h.url(port, "/echo"))
        .header("host", "x")
        .body(Body::from_stream(body_stream))
        .unwrap();
    let response = open(h.addr, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut down = Body::new(response.into_body()).into_data_stream();
    for i in 0..5 {
        let chunk = format!("part-{i};");
        tx.send(Ok(chunk.clone().into_bytes())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            let next = tokio::time::timeout(Duration::from_secs(5), down.next())
                .await
                .expect("echo of a chunk did not arrive before the body ended")
                .unwrap()
                .unwrap();
            got.extend_from_slice(&next);
        }
        assert_eq!(got, chunk.as_bytes());
    }
    drop(tx);
    assert!(down.next().await.is_none());

    // Streaming download: the first chunk arrives long before the last is produced.
    let req = axum::http::Request::builder()
        .uri(h.url(port, "/slow"))
        .header("host", "x")
        .body(Body::empty())
        .unwrap();
    let started = std::time::Instant::now();
    let response = open(h.addr, req).await;
    let mut down = Body::new(response.into_body()).into_data_stream();
    let first = down.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"chunk0\n");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn location_is_rewritten_to_the_proxy_prefix() {
    let h = Harness::start().await;
    let port = upstream().await;
    let prefix = h.url(port, "");
    let location = |r: &Reply| {
        r.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let r = send(h.addr, "GET", &h.url(port, "/redirect"), Body::empty()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(location(&r), format!("{prefix}/target?x=1"));
    // Hop-by-hop response headers do not leak through.
    assert!(r.headers.get("keep-alive").is_none());
    let r = send(h.addr, "GET", &h.url(port, "/absolute"), Body::empty()).await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(location(&r), format!("{prefix}/abs-target"));
    let r = send(h.addr, "GET", &h.url(port, "/elsewhere"), Body::empty()).await;
    assert_eq!(location(&r), "https://example.com/x");
    let r = send(h.addr, "GET", &h.url(port, "/relative"), Body::empty()).await;
    assert_eq!(location(&r), "next/page");
}

#[tokio::test]
async fn websocket_echo_with_subprotocol() {
    let h = Harness::start().await;
    let port = ws_upstream().await;
    let mut request = format!("ws://{}{}", h.addr, h.url(port, "/ws?room=1"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "echo.v1".parse().unwrap());
    let (mut ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "echo.v1"
    );
    assert_eq!(h.connections.active(&h.id), 1, "the tunnel is tracked");
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    let blob = vec![7u8; 200_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply.into_data().to_vec(), blob);
    ws.close(None).await.unwrap();
    // The server's close frame comes back through the tunnel, then the socket closes.
    while let Some(Ok(_)) = ws.next().await {}
    drop(ws);
    // The tunnel ends and the registration is released.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.connections.active(&h.id) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.connections.active(&h.id), 0);
}

#[tokio::test]
async fn refusals_have_clear_statuses() {
    let h = Harness::start().await;
    let port = upstream().await;
    for bad in ["08000", "+80", "80abc", "0", "65536", "-1"] {
        let path = format!("/proxy/{}/{bad}/info", h.id);
        let (status, body) = get_json(h.addr, &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["code"], "invalid_argument");
    }
    let (status, body) = get_json(h.addr, "/proxy/not-an-id/80/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let unknown = CapsuleId::from_u128(0xdead);
    let (status, body) = get_json(h.addr, &format!("/proxy/{unknown}/{port}/info")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "not_found");

    // Nothing listens on a port that was just freed.
    let closed = {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.local_addr().unwrap().port()
    };
    let (status, body) = get_json(h.addr, &h.url(closed, "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing is listening"),
        "{body}"
    );

    h.states.lock().unwrap().insert(h.id.clone(), "pausing");
    let reply = send(h.addr, "GET", &h.url(port, "/info"), Body::empty()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers.get("retry-after").unwrap(), "2");
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["code"], "unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("pausing"),
        "{body}"
    );
}

#[tokio::test]
async fn drain_waits_refuses_and_force_closes() {
    let h = Harness::start().await;
    let port = upstream().await;
    // An endless download is in flight when the pause starts.
    let req = axum::http::Request::builder()
        .uri(h.url(port, "/forever"))
        .header("host", "x")
        .body(Body::empty())
        .unwrap();
    let response = open(h.addr, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut down = Body::new(response.into_body()).into_data_stream();
    assert!(down.next().await.unwrap().is_ok());
    assert_eq!(h.connections.active(&h.id), 1);

    let connections = h.connections.clone();
    let id = h.id.clone();
    let drain =
        tokio::spawn(async move { connections.drain(&id, Duration::from_millis(300)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // While draining (the registry still says running), new requests get 503.
    let (status, body) = get_json(h.addr, &h.url(port, "/info")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let drained = drain.await.unwrap();
    assert_eq!(drained.in_flight, 1);
    assert_eq!(drained.forced, 1);
    // The in-flight download was cut.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = down.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the forced connection kept streaming");
    assert_eq!(h.connections.active(&h.id), 0);

    h.connections.reopen(&h.id);
    let (status, _) = get_json(h.addr, &h.url(port, "/info")).await;
    assert_eq!(status, StatusCode::OK);
}
