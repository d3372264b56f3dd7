//! The capsule proxy (spec §A.3): a request whose `Host` is `{port}-{capsule_id}.{domain}` goes
//! to the capsule's agent at `/proxy/{capsule_id}/{port}{path}`, HTTP and WebSocket alike.
//!
//! - Wraps the whole router ([`host_proxy`] middleware): any other Host routes normally.
//!   Matching follows the spec's `^(\d+)-(cl-[0-9a-z]+)\.` on the Host without its port, so the
//!   domain itself is not checked (the SDK derives it from the base URL, which may differ from
//!   the configured proxy domain: `127.0.0.1:PORT` vs `localhost:PORT`).
//! - No authentication: the capsule id is the capability (§A.3, §J). The SDK's `X-API-Key` is
//!   accepted and stripped, as are the session cookies, so the guest never sees a credential.
//! - Errors are plain text, as in the reference: bad port/id 400, unknown capsule 404, not
//!   running 409 `sandbox is not running (status: X)`, no host 503, upstream failure 502.
//! - One fresh HTTP/1.1 connection to the agent per request (the agent opens a fresh one to the
//!   capsule as well); bodies stream both ways; `101` upgrades are spliced byte for byte, so
//!   WebSocket subprotocols and extensions are negotiated end to end.
//! - `Location` headers lose the `/proxy/{id}/{port}` prefix the agent adds.
//! - Proxied traffic pings the capsule's inactivity timer (at most every [`PING_EVERY`]).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use wrenn_proto::hostagent::v1::PingSandboxRequest;

use crate::capsules::access;
use crate::ids::CapsuleId;
use crate::state::AppState;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the agent's response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Minimum interval between inactivity-timer pings caused by proxied traffic.
pub const PING_EVERY: Duration = Duration::from_secs(20);

/// What a Host header means for the proxy.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyHost {
    /// Not a proxy host: route normally.
    None,
    Target {
        port: u16,
        capsule: CapsuleId,
    },
    /// Looks like a proxy host but the port or id is invalid (→ 400 with this text).
    Invalid(&'static str),
}

/// Parses `{port}-{capsule_id}.{anything}[:{port}]`.
pub fn parse_host(host: &str) -> ProxyHost {
    // Port stripped at the last ':' (the spec's rule; proxy hosts are never IPv6 literals).
    let name = match host.rfind(':') {
        Some(i) if !host.starts_with('[') => &host[..i],
        _ => host,
    };
    let Some((label, rest)) = name.split_once('.') else {
        return ProxyHost::None;
    };
    let Some((port, id)) = label.split_once('-') else {
        return ProxyHost::None;
    };
    let id_like = id.strip_prefix("cl-").is_some_and(|body| {
        !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    });
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || !id_like {
        return ProxyHost::None;
    }
    let _ = rest;
    let Some(port) = port.parse::<u16>().ok().filter(|&p| p > 0) else {
        return ProxyHost::Invalid("invalid port");
    };
    match CapsuleId::parse(id) {
        Ok(capsule) => ProxyHost::Target { port, capsule },
        Err(_) => ProxyHost::Invalid("invalid capsule id"),
    }
}

fn request_host(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// Middleware: proxies capsule hosts, passes everything else to the router.
pub async fn host_proxy(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let target = match request_host(&req).map(parse_host) {
        None | Some(ProxyHost::None) => return next.run(req).await,
        Some(ProxyHost::Invalid(why)) => return plain(StatusCode::BAD_REQUEST, why),
        Some(ProxyHost::Target { port, capsule }) => (port, capsule),
    };
    forward(&state, target.0, target.1, req).await
}

async fn forward(state: &AppState, port: u16, capsule: CapsuleId, req: Request) -> Response {
    let row = match access::by_id_unscoped(state, capsule).await {
        Ok(Some(row)) => row,
        Ok(None) => return plain(StatusCode::NOT_FOUND, "sandbox not found"),
        Err(e) => {
            tracing::error!(error = %e, "proxy lookup");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let handle = match access::handle_if_running(state, row) {
        Ok(h) => h,
        Err(e) if e.status == StatusCode::CONFLICT => {
            return plain(StatusCode::CONFLICT, e.message.into_owned());
        }
        Err(e) => return plain(e.status, e.message.into_owned()),
    };
    let base = match handle.agent_base_url() {
        Ok(b) => b,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, e.message.into_owned()),
    };
    ping_throttled(&handle);
    let prefix = format!("/proxy/{capsule}/{port}");
    match proxy_request(&base, &prefix, req).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%capsule, port, error = %e, "proxy error");
            plain(StatusCode::BAD_GATEWAY, format!("proxy error: {e}"))
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("invalid upstream address")]
    Address,
    #[error("connecting to the host agent: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the host agent: timed out")]
    ConnectTimeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the host agent did not answer in time")]
    Timeout,
    #[error("building the upstream request: {0}")]
    Request(#[from] axum::http::Error),
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Also whatever the Connection header names.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Drops Wrenn credentials so the guest never receives them.
fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove("x-api-key");
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| {
            let name = c.split('=').next().unwrap_or_default().trim();
            !c.is_empty()
                && name != crate::auth::session::SESSION_COOKIE
                && name != crate::auth::session::CSRF_COOKIE
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty()
        && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes the agent's `/proxy/{id}/{port}` prefix from a `Location` value.
pub fn strip_location(location: &str, prefix: &str) -> Option<String> {
    // Absolute URLs pointing at the agent become absolute paths on the proxy host.
    let path = match location.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None => location,
    };
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/".to_owned())
    } else if rest.starts_with(['/', '?', '#']) {
        Some(rest.to_owned())
    } else {
        None // e.g. `/proxy/{id}/80000`: another prefix that merely starts alike
    }
}

async fn proxy_request(base: &str, prefix: &str, mut req: Request) -> Result<Response, ProxyError> {
    let upgrade = is_upgrade(req.headers());
    let original_host = request_host(&req).map(str::to_owned);
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let uri: Uri = format!("{base}{prefix}{path}")
        .parse()
        .map_err(|_| ProxyError::Address)?;
    let authority = uri.authority().ok_or(ProxyError::Address)?.clone();
    let addr = format!(
        "{}:{}",
        authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        authority.port_u16().unwrap_or(80)
    );

    let mut headers = req.headers().clone();
    let upgrade_headers = upgrade.then(|| {
        (
            headers.get(header::UPGRADE).cloned(),
            headers.get(header::CONNECTION).cloned(),
        )
    });
    strip_hop_by_hop(&mut headers);
    strip_credentials(&mut headers);
    headers.remove(header::HOST);
    if let Some((Some(up), _)) = upgrade_headers {
        headers.insert(header::UPGRADE, up);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(host) = original_host
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert("x-forwarded-host", host);
    }
    let host_value = HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::Address)?;
    headers.insert(header::HOST, host_value);

    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut outbound = axum::http::Request::builder()
        .method(req.method().clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .body(req.into_body())?;
    *outbound.headers_mut() = headers;

    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr))
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
        .map_err(ProxyError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxy upstream connection");
        }
    });
    let mut response = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(outbound))
        .await
        .map_err(|_| ProxyError::Timeout)??;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "proxy upgrade failed"),
                }
            });
        }
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(location) = parts
        .headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| strip_location(v, prefix))
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        parts.headers.insert(header::LOCATION, location);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Resets the capsule's inactivity timer for proxied traffic, at most every [`PING_EVERY`].
fn ping_throttled(handle: &access::CapsuleHandle) {
    static LAST: OnceLock<Mutex<HashMap<CapsuleId, Instant>>> = OnceLock::new();
    let now = Instant::now();
    {
        let mut last = LAST
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last
            .get(&handle.id)
            .is_some_and(|t| now.duration_since(*t) < PING_EVERY)
        {
            return;
        }
        last.retain(|_, t| now.duration_since(*t) < PING_EVERY);
        last.insert(handle.id, now);
    }
    let agent = handle.agent.clone();
    let sandbox_id = handle.sandbox_id();
    tokio::spawn(async move {
        let ping = agent.ping_sandbox(PingSandboxRequest {
            sandbox_id,
            ..Default::default()
        });
        if let Err(e) = ping.await {
            tracing::debug!(error = %e, "proxy activity ping");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let id = CapsuleId::random();
        let host = format!("8000-{id}.localhost:8080");
        assert_eq!(
            parse_host(&host),
            ProxyHost::Target {
                port: 8000,
                capsule: id
            }
        );
        assert_eq!(
            parse_host(&format!("8000-{id}.127.0.0.1:9")),
            ProxyHost::Target {
                port: 8000,
                capsule: id
            }
        );
        assert_eq!(
            parse_host(&format!("8000-{id}.wrenn.dev")),
            ProxyHost::Target {
                port: 8000,
                capsule: id
            }
        );
        assert_eq!(
            parse_host(&format!("70000-{id}.localhost")),
            ProxyHost::Invalid("invalid port")
        );
        assert_eq!(
            parse_host(&format!("0-{id}.localhost")),
            ProxyHost::Invalid("invalid port")
        );
        assert_eq!(
            parse_host("8000-cl-short.localhost"),
            ProxyHost::Invalid("invalid capsule id")
        );
        for normal in [
            "localhost:8080",
            "127.0.0.1:8080",
            "app.wrenn.dev",
            "[::1]:8080",
            &format!("{id}.localhost"),
            &format!("x8000-{id}.localhost"),
            &format!("8000-{id}"),
            "8000-team-abc.localhost",
            "",
        ] {
            assert_eq!(parse_host(normal), ProxyHost::None, "{normal}");
        }
    }

    #[test]
    fn locations() {
        let p = "/proxy/cl-abc/8000";
        assert_eq!(
            strip_location("/proxy/cl-abc/8000/sub/", p).as_deref(),
            Some("/sub/")
        );
        assert_eq!(
            strip_location("/proxy/cl-abc/8000", p).as_deref(),
            Some("/")
        );
        assert_eq!(
            strip_location("/proxy/cl-abc/8000?x=1", p).as_deref(),
            Some("?x=1")
        );
        assert_eq!(
            strip_location("http://10.0.0.1:50051/proxy/cl-abc/8000/a", p).as_deref(),
            Some("/a")
        );
        assert_eq!(strip_location("/proxy/cl-abc/80001/a", p), None);
        assert_eq!(strip_location("https://example.com/x", p), None);
    }

    #[test]
    fn credentials_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("wrn_secret"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; wrenn_sid=s; wrenn_csrf=c; b=2"),
        );
        strip_credentials(&mut h);
        assert!(h.get("x-api-key").is_none());
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("wrenn_sid=s"));
        strip_credentials(&mut h);
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }
}
