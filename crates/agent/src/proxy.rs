//! Port proxy: `/proxy/{capsule_id}/{port}[/{path}]` → `http://<capsule ip>:<port>/<path>?<query>`
//! (spec §A.3, issue item 9).
//!
//! - HTTP/1.1 to the capsule, one fresh TCP connection per proxied request, no pool: pooled idle
//!   connections would hold TCP state inside the capsule, and runsc cannot checkpoint with open
//!   TCP state. Dial: 3 attempts with 100/200 ms backoff (a service that is just starting).
//! - Bodies stream both ways (no buffering); hop-by-hop headers are stripped; `Host` becomes the
//!   upstream address; `X-Forwarded-For/-Host/-Proto/-Prefix` are set.
//! - Upgrades (WebSocket) pass through raw: the client's request goes upstream with its
//!   `Upgrade` headers, and on `101` both connections are upgraded and bytes are copied both
//!   ways, so subprotocols and extensions are negotiated end to end.
//! - `Location` pointing at the capsule's own origin (or an absolute path) gets the
//!   `/proxy/{id}/{port}` prefix back; the control plane strips it again.
//! - Every proxied exchange (including a WebSocket tunnel) is registered in [`Connections`]
//!   before it starts, atomically refused once the capsule drains for a pause (503), and can be
//!   force-closed when the drain grace runs out.
//!
//! Wiring: `let proxy = Arc::new(Proxy::new(resolve)); let conns = proxy.connections();`,
//! `proxy::router(proxy)` as the service's plain HTTP routes. Pause: `conns.drain(&id,
//! Duration::from_secs(2))` before envd `/snapshot/prepare` (the resolver should also report
//! the capsule as pausing); `conns.reopen(&id)` after a resume or a failed pause;
//! `conns.remove(&id)` on destroy.
//!
//! Mount with `Router::merge(proxy::router(proxy))`; the handler reads the original URI, so
//! nesting works too. Serve with `into_make_service_with_connect_info::<SocketAddr>()` for a
//! real `X-Forwarded-For`.

use crate::id::CapsuleId;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

const PREFIX: &str = "/proxy/";
const DIAL_ATTEMPTS: u32 = 3;
const DIAL_BACKOFF: Duration = Duration::from_millis(100);
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// After a forced close, how long drain waits for the tasks to notice.
const KILL_SETTLE: Duration = Duration::from_millis(500);

/// Why the service refuses to proxy to a capsule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyRefusal {
    #[error("capsule {0} not found")]
    NotFound(CapsuleId),
    /// Pausing, paused, resuming, snapshotting…: `state` goes into the message.
    #[error("capsule {id} is not available (status: {state})")]
    Unavailable { id: CapsuleId, state: String },
}

/// Maps a capsule to its address, as the service's registry sees it right now.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, id: &CapsuleId) -> Result<Ipv4Addr, ProxyRefusal>;
}

impl<F> Resolve for F
where
    F: Fn(&CapsuleId) -> Result<Ipv4Addr, ProxyRefusal> + Send + Sync + 'static,
{
    fn resolve(&self, id: &CapsuleId) -> Result<Ipv4Addr, ProxyRefusal> {
        self(id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid proxy path: expected /proxy/{{capsule_id}}/{{port}}/...")]
    BadPath,
    #[error("invalid capsule id {0:?}")]
    BadId(String),
    #[error("invalid port {0:?}: expected 1-65535 in canonical decimal form")]
    BadPort(String),
    #[error(transparent)]
    Refused(#[from] ProxyRefusal),
    #[error("capsule {0} is pausing; proxied connections are refused until it is resumed")]
    Draining(CapsuleId),
    #[error("nothing is listening on port {port} of capsule {id}: {reason}")]
    Unreachable {
        id: CapsuleId,
        port: u16,
        reason: String,
    },
    #[error("upstream error from port {port} of capsule {id}: {reason}")]
    Upstream {
        id: CapsuleId,
        port: u16,
        reason: String,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadPath | Self::BadId(_) | Self::BadPort(_) => StatusCode::BAD_REQUEST,
            Self::Refused(ProxyRefusal::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Refused(ProxyRefusal::Unavailable { .. }) | Self::Draining(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unreachable { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn code(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST => "invalid_argument",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "bad_gateway",
        }
    }
}

impl IntoResponse for ProxyError {
    /// `{"code": "...", "message": "..."}`, the shape envd's HTTP errors use.
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

/// A port as it must appear in the path: digits only, no sign, no leading zero, 1..=65535.
pub fn parse_port(s: &str) -> Option<u16> {
    let canonical = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && !s.starts_with('0');
    canonical.then(|| s.parse().ok()).flatten()
}

/// The parts of a proxy URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: CapsuleId,
    pub port: u16,
    /// What is sent upstream: `/<rest>[?query]`, still percent-encoded as received.
    pub path_and_query: String,
}

impl Target {
    pub fn prefix(&self) -> String {
        format!("{PREFIX}{}/{}", self.id, self.port)
    }
}

/// Parses `.../proxy/{id}/{port}[/{rest}][?query]`.
pub fn parse_target(uri: &Uri) -> Result<Target, ProxyError> {
    let path = uri.path();
    let start = path.find(PREFIX).ok_or(ProxyError::BadPath)?;
    let after = &path[start + PREFIX.len()..];
    let (id, after) = after.split_once('/').ok_or(ProxyError::BadPath)?;
    let (port, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    let id: CapsuleId = id.parse().map_err(|_| ProxyError::BadId(id.to_owned()))?;
    let port = parse_port(port).ok_or_else(|| ProxyError::BadPort(port.to_owned()))?;
    let mut path_and_query = if rest.is_empty() {
        "/".to_owned()
    } else {
        rest.to_owned()
    };
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Ok(Target {
        id,
        port,
        path_and_query,
    })
}

/// Rewrites a `Location` value that points back into the capsule so the client stays on the
/// proxy: absolute paths and absolute URLs of the capsule's own origin (its IP, `localhost`,
/// `127.0.0.1` or `0.0.0.0` on the same port) get `prefix`. Relative references and other
/// origins are left alone (`None`).
pub fn rewrite_location(location: &str, prefix: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    let join = |rest: &str| {
        if rest.is_empty() || rest.starts_with('?') || rest.starts_with('#') {
            format!("{prefix}/{rest}")
        } else {
            format!("{prefix}{rest}")
        }
    };
    if let Some(after) = location.strip_prefix("//") {
        let (authority, rest) = split_authority(after);
        return own_origin(authority, None, ip, port).then(|| join(rest));
    }
    if location.starts_with('/') {
        let already = location == prefix
            || location
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with(['/', '?', '#']));
        return (!already).then(|| join(location));
    }
    let (scheme, after) = location.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let (authority, rest) = split_authority(after);
    own_origin(authority, Some(&scheme), ip, port).then(|| join(rest))
}

fn split_authority(s: &str) -> (&str, &str) {
    match s.find(['/', '?', '#']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

fn own_origin(authority: &str, scheme: Option<&str>, ip: Ipv4Addr, port: u16) -> bool {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, explicit_port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port_matches = match explicit_port {
        Some(p) => p.parse::<u16>().ok() == Some(port),
        None => match scheme {
            Some("https") => port == 443,
            _ => port == 80,
        },
    };
    let host = host.to_ascii_lowercase();
    let host_matches = host == ip.to_string()
        || matches!(
            host.as_str(),
            "localhost" | "127.0.0.1" | "0.0.0.0" | "[::1]"
        );
    port_matches && host_matches
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the non-standard ones proxies commonly drop.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Result of [`Connections::drain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drained {
    /// Proxied connections open when the drain started.
    pub in_flight: usize,
    /// Those still open when the grace ran out, closed by force.
    pub forced: usize,
}

struct CapsuleConns {
    active: usize,
    draining: bool,
    /// Flipped to `true` to force-close every connection of the capsule.
    kill: watch::Sender<bool>,
}

impl CapsuleConns {
    fn new() -> Self {
        Self {
            active: 0,
            draining: false,
            kill: watch::Sender::new(false),
        }
    }
}

/// In-flight proxied connections per capsule; cheap to clone.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<CapsuleId, CapsuleConns>>>,
}

/// Registration of one proxied exchange; shared by the tasks that carry it.
struct ConnGuard {
    conns: Connections,
    id: CapsuleId,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut map = self.conns.lock();
        if let Some(entry) = map.get_mut(&self.id) {
            entry.active = entry.active.saturating_sub(1);
            if entry.active == 0 && !entry.draining {
                map.remove(&self.id);
            }
        }
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CapsuleId, CapsuleConns>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection unless the capsule is draining (checked under the same lock as
    /// [`Connections::drain`] sets it, so none slips in after a drain counted).
    fn enter(&self, id: &CapsuleId) -> Result<(Arc<ConnGuard>, watch::Receiver<bool>), ProxyError> {
        let mut map = self.lock();
        let entry = map.entry(id.clone()).or_insert_with(CapsuleConns::new);
        if entry.draining {
            return Err(ProxyError::Draining(id.clone()));
        }
        entry.active += 1;
        let kill = entry.kill.subscribe();
        Ok((
            Arc::new(ConnGuard {
                conns: self.clone(),
                id: id.clone(),
            }),
            kill,
        ))
    }

    /// Open proxied connections of a capsule.
    pub fn active(&self, id: &CapsuleId) -> usize {
        self.lock().get(id).map_or(0, |e| e.active)
    }

    pub fn is_draining(&self, id: &CapsuleId) -> bool {
        self.lock().get(id).is_some_and(|e| e.draining)
    }

    /// Pause step: refuse new proxied connections (503 until [`Connections::reopen`]), wait up
    /// to `grace` for open ones to finish, then close the rest by force.
    pub async fn drain(&self, id: &CapsuleId, grace: Duration) -> Drained {
        let in_flight = {
            let mut map = self.lock();
            let entry = map.entry(id.clone()).or_insert_with(CapsuleConns::new);
            entry.draining = true;
            entry.active
        };
        let deadline = tokio::time::Instant::now() + grace;
        // Polling: drains are rare (one per pause) and this avoids lost-wakeup subtleties.
        while self.active(id) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let forced = self.active(id);
        if forced > 0 {
            if let Some(entry) = self.lock().get(id) {
                entry.kill.send_replace(true);
            }
            let settle = tokio::time::Instant::now() + KILL_SETTLE;
            while self.active(id) > 0 && tokio::time::Instant::now() < settle {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tracing::info!(%id, forced, "force-closed proxied connections");
        }
        Drained { in_flight, forced }
    }

    /// Accepts connections again (resume done, or the pause failed and the capsule runs on).
    pub fn reopen(&self, id: &CapsuleId) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(id) {
            entry.draining = false;
            entry.kill.send_replace(false);
            if entry.active == 0 {
                map.remove(id);
            }
        }
    }

    /// Destroy: closes everything and forgets the capsule.
    pub fn remove(&self, id: &CapsuleId) {
        if let Some(entry) = self.lock().remove(id) {
            entry.kill.send_replace(true);
        }
    }
}

/// Resolves when the capsule's connections are force-closed; never if the tracker is gone.
async fn killed(mut kill: watch::Receiver<bool>) {
    if kill.wait_for(|k| *k).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The proxy: a resolver from the service plus the connection tracker.
pub struct Proxy<R> {
    resolver: R,
    connections: Connections,
}

impl<R: Resolve> Proxy<R> {
    pub fn new(resolver: R) -> Self {
        Self {
            resolver,
            connections: Connections::default(),
        }
    }

    /// With a tracker the service already holds (it needs the handle before the resolver,
    /// which reads the service's registry, exists).
    pub fn with_connections(resolver: R, connections: Connections) -> Self {
        Self {
            resolver,
            connections,
        }
    }

    /// Handle for pause/destroy: `drain`, `reopen`, `remove`.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    async fn forward(&self, mut req: Request) -> Result<Response, ProxyError> {
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |o| o.0.clone());
        let target = parse_target(&uri)?;
        let ip = self.resolver.resolve(&target.id)?;
        let (guard, kill) = self.connections.enter(&target.id)?;
        let upstream_addr = SocketAddr::from((ip, target.port));

        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let client_addr = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let upstream_req = build_upstream_request(req, &target, upstream_addr, client_addr)?;

        let stream = dial(upstream_addr)
            .await
            .map_err(|e| ProxyError::Unreachable {
                id: target.id.clone(),
                port: target.port,
                reason: e.to_string(),
            })?;
        let upstream_error = |e: &dyn std::fmt::Display| ProxyError::Upstream {
            id: target.id.clone(),
            port: target.port,
            reason: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| upstream_error(&e))?;
        // The connection task owns a registration: it lives until the response body is done
        // (or the upgrade hands the socket over).
        let conn_guard = guard.clone();
        let conn_kill = kill.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = conn.with_upgrades() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "proxied upstream connection ended with an error");
                    }
                }
                () = killed(conn_kill) => {}
            }
            drop(conn_guard);
        });
        let mut response = sender
            .send_request(upstream_req)
            .await
            .map_err(|e| upstream_error(&e))?;

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(upstream_error(&"upstream switched protocols unasked"));
            };
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard, kill));
            let (parts, _) = response.into_parts();
            return Ok(Response::from_parts(parts, Body::empty()));
        }

        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(location) = parts
            .headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rewrite_location(v, &target.prefix(), ip, target.port))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            parts.headers.insert(header::LOCATION, location);
        }
        drop(guard);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

fn build_upstream_request(
    req: Request,
    target: &Target,
    upstream: SocketAddr,
    client: Option<SocketAddr>,
) -> Result<axum::http::Request<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let upgrade = is_upgrade(&parts.headers);
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    let mut headers = parts.headers;
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut headers);
    if upgrade && let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
    let host = HeaderValue::from_str(&upstream.to_string()).map_err(|_| ProxyError::BadPath)?;
    headers.insert(header::HOST, host);
    let forwarded_for = match (headers.get("x-forwarded-for"), client) {
        (Some(prior), Some(client)) => prior.to_str().ok().map(|p| format!("{p}, {}", client.ip())),
        (None, Some(client)) => Some(client.ip().to_string()),
        _ => None,
    };
    if let Some(value) = forwarded_for.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert("x-forwarded-for", value);
    }
    if !headers.contains_key("x-forwarded-host")
        && let Some(host) = original_host
    {
        headers.insert("x-forwarded-host", host);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Ok(prefix) = HeaderValue::from_str(&target.prefix()) {
        headers.insert("x-forwarded-prefix", prefix);
    }
    let uri: Uri = target
        .path_and_query
        .parse()
        .map_err(|_| ProxyError::BadPath)?;
    let method = if parts.method == Method::CONNECT {
        return Err(ProxyError::BadPath);
    } else {
        parts.method
    };
    let mut request = axum::http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(request)
}

async fn dial(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        };
        if attempt >= DIAL_ATTEMPTS {
            return Err(error);
        }
        tokio::time::sleep(DIAL_BACKOFF * attempt).await;
    }
}

/// Copies bytes between the upgraded client and upstream connections until either side closes
/// or the capsule's connections are force-closed.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: Arc<ConnGuard>,
    kill: watch::Receiver<bool>,
) {
    let run = async {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "proxied upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "proxied tunnel ended with an error");
        }
    };
    tokio::select! {
        () = run => {}
        () = killed(kill) => {}
    }
    drop(guard);
}

async fn handle<R: Resolve>(State(proxy): State<Arc<Proxy<R>>>, req: Request) -> Response {
    let method = req.method().clone();
    match proxy.forward(req).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%method, error = %e, "proxy request refused");
            e.into_response()
        }
    }
}

/// Routes `/proxy/{capsule_id}/{port}`, `/proxy/{capsule_id}/{port}/` and
/// `/proxy/{capsule_id}/{port}/{*path}`, any method.
pub fn router<R: Resolve>(proxy: Arc<Proxy<R>>) -> Router {
    Router::new()
        .route("/proxy/{id}/{port}", any(handle::<R>))
        .route("/proxy/{id}/{port}/", any(handle::<R>))
        .route("/proxy/{id}/{port}/{*path}", any(handle::<R>))
        .with_state(proxy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_must_be_canonical() {
        assert_eq!(parse_port("80"), Some(80));
        assert_eq!(parse_port("8000"), Some(8000));
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in [
            "", "0", "00", "08000", "080", "+80", "-80", "80abc", "8 0", " 80", "65536", "99999",
            "100000", "0x50", "８０",
        ] {
            assert_eq!(parse_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_targets() {
        let id = CapsuleId::from_u128(42);
        let uri: Uri = format!("/proxy/{id}/8000/a/b%20c/?x=1&y=%2F")
            .parse()
            .unwrap();
        let t = parse_target(&uri).unwrap();
        assert_eq!(t.id, id);
        assert_eq!(t.port, 8000);
        assert_eq!(t.path_and_query, "/a/b%20c/?x=1&y=%2F");
        assert_eq!(t.prefix(), format!("/proxy/{id}/8000"));
        let bare = parse_target(&format!("/proxy/{id}/80").parse().unwrap()).unwrap();
        assert_eq!(bare.path_and_query, "/");
        let q = parse_target(&format!("/proxy/{id}/80?q=1").parse().unwrap()).unwrap();
        assert_eq!(q.path_and_query, "/?q=1");
        assert!(matches!(
            parse_target(&format!("/proxy/{id}/08000/").parse().unwrap()),
            Err(ProxyError::BadPort(p)) if p == "08000"
        ));
        assert!(matches!(
            parse_target(&"/proxy/nope/80/".parse().unwrap()),
            Err(ProxyError::BadId(_))
        ));
        assert!(matches!(
            parse_target(&"/other".parse().unwrap()),
            Err(ProxyError::BadPath)
        ));
    }

    #[test]
    fn rewrites_locations_to_the_capsule_origin() {
        let ip = Ipv4Addr::new(10, 11, 0, 5);
        let p = "/proxy/cl-x/8000";
        let rw = |l: &str| rewrite_location(l, p, ip, 8000);
        assert_eq!(rw("/login?next=/"), Some(format!("{p}/login?next=/")));
        assert_eq!(rw("/"), Some(format!("{p}/")));
        assert_eq!(rw("http://10.11.0.5:8000/tree"), Some(format!("{p}/tree")));
        assert_eq!(rw("http://10.11.0.5:8000"), Some(format!("{p}/")));
        assert_eq!(rw("http://10.11.0.5:8000?a=1"), Some(format!("{p}/?a=1")));
        assert_eq!(rw("HTTP://LOCALHOST:8000/x#f"), Some(format!("{p}/x#f")));
        assert_eq!(rw("http://127.0.0.1:8000/x"), Some(format!("{p}/x")));
        assert_eq!(rw("//10.11.0.5:8000/y"), Some(format!("{p}/y")));
        assert_eq!(rw("http://user@10.11.0.5:8000/z"), Some(format!("{p}/z")));
        // Already prefixed (an app honouring X-Forwarded-Prefix): unchanged.
        assert_eq!(rw(&format!("{p}/tree")), None);
        assert_eq!(rw(p), None);
        // Other origins, other ports, relative references: unchanged.
        assert_eq!(rw("http://10.11.0.5:9000/x"), None);
        assert_eq!(rw("https://example.com/x"), None);
        assert_eq!(rw("//example.com/x"), None);
        assert_eq!(rw("tree/x"), None);
        assert_eq!(rw("../up"), None);
        assert_eq!(rw("mailto:a@b"), None);
        // Default ports.
        assert_eq!(
            rewrite_location("http://10.11.0.5/a", "/proxy/cl-x/80", ip, 80),
            Some("/proxy/cl-x/80/a".to_owned())
        );
        assert_eq!(
            rewrite_location("https://localhost/a", "/proxy/cl-x/443", ip, 443),
            Some("/proxy/cl-x/443/a".to_owned())
        );
        assert_eq!(
            rewrite_location("http://10.11.0.5/a", "/proxy/cl-x/8000", ip, 8000),
            None
        );
    }

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(!is_upgrade(&h));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
        let mut u = HeaderMap::new();
        u.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        u.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&u));
    }

    #[tokio::test]
    async fn drain_refuses_new_connections_until_reopened() {
        let conns = Connections::default();
        let id = CapsuleId::from_u128(3);
        let (guard, _kill) = conns.enter(&id).unwrap();
        assert_eq!(conns.active(&id), 1);
        let releaser = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        let drained = conns.drain(&id, Duration::from_secs(2)).await;
        assert_eq!(
            drained,
            Drained {
                in_flight: 1,
                forced: 0
            }
        );
        releaser.await.unwrap();
        assert!(matches!(conns.enter(&id), Err(ProxyError::Draining(_))));
        conns.reopen(&id);
        assert!(conns.enter(&id).is_ok());
        assert_eq!(conns.active(&id), 0, "guard dropped at once");
    }

    #[tokio::test]
    async fn drain_force_closes_after_the_grace() {
        let conns = Connections::default();
        let id = CapsuleId::from_u128(4);
        let (guard, kill) = conns.enter(&id).unwrap();
        let holder = tokio::spawn(async move {
            killed(kill).await;
            drop(guard);
        });
        let drained = conns.drain(&id, Duration::from_millis(50)).await;
        assert_eq!(
            drained,
            Drained {
                in_flight: 1,
                forced: 1
            }
        );
        holder.await.unwrap();
        assert_eq!(conns.active(&id), 0);
        assert!(conns.is_draining(&id));
        conns.remove(&id);
        assert!(!conns.is_draining(&id));
    }
}
