//! The dashboard: the SvelteKit build in `web/build`, compiled into the binary, served at `/`.
//!
//! Every GET/HEAD that no API route matched lands here. API prefixes (`/v1`, `/api`, `/auth`,
//! `/health`, `/metrics`, `/openapi.json`, `/docs`) keep their JSON 404; anything else is a
//! file of the build or, failing that, `index.html` (the single-page app routes in the
//! browser). Hashed assets under `/_app/immutable/` are cached for a year, the rest revalidate.
//! The build is precompressed (`.br`, `.gz` next to each file) and the best variant the client
//! accepts is sent. When the UI was not built the binary still builds (`allow_missing`) and `/`
//! answers a page that says how to build it.

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use crate::error::route_not_found;

#[derive(Embed)]
#[folder = "../../web/build/"]
#[allow_missing = true]
struct Assets;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// Path prefixes that belong to the API: unknown paths under them stay JSON 404s.
const API_PREFIXES: &[&str] = &[
    "/v1",
    "/api",
    "/auth",
    "/health",
    "/metrics",
    "/openapi.json",
    "/openapi.yaml",
    "/docs",
];

fn is_api_path(path: &str) -> bool {
    API_PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether the binary carries a built UI.
pub fn ui_built() -> bool {
    Assets::get("index.html").is_some()
}

/// The router's fallback: a file of the UI, the app shell, or the API's JSON 404.
pub async fn fallback(
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path();
    if is_api_path(path) || !(method == Method::GET || method == Method::HEAD) {
        return route_not_found().await.into_response();
    }
    let file = path.trim_start_matches('/');
    let response = if !file.is_empty() && Assets::get(file).is_some() {
        serve(file, &headers)
    } else if file.starts_with("_app/") {
        // A missing hashed asset (e.g. an old tab after an upgrade) must not get the HTML shell.
        None
    } else {
        serve("index.html", &headers)
    };
    let mut response = match response {
        Some(r) => r,
        None if file.starts_with("_app/") => (StatusCode::NOT_FOUND, "not found").into_response(),
        None => not_built(),
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

/// Which precompressed variant to send: brotli, then gzip, then identity.
fn encodings(headers: &HeaderMap) -> (bool, bool) {
    let accept = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
            });
            (!refused).then_some(name)
        })
        .collect::<Vec<_>>();
    let has = |n: &str| accept.iter().any(|a| a == n);
    (has("br"), has("gzip") || has("x-gzip"))
}

fn serve(file: &str, headers: &HeaderMap) -> Option<Response> {
    let asset = Assets::get(file)?;
    let etag = format!("\"{}\"", hex(&asset.metadata.sha256_hash()[..16]));
    let cache = if file.starts_with("_app/immutable/") {
        IMMUTABLE
    } else {
        REVALIDATE
    };
    let mime = asset.metadata.mimetype().to_owned();

    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, mime)
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, &etag)
        .header(header::VARY, "Accept-Encoding")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if file == "index.html" {
        builder = builder
            .header(header::X_FRAME_OPTIONS, "DENY")
            .header(header::REFERRER_POLICY, "same-origin");
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if not_modified {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .ok();
    }

    let (br, gzip) = encodings(headers);
    let variant = [(br, "br", ".br"), (gzip, "gzip", ".gz")]
        .into_iter()
        .filter(|(ok, _, _)| *ok)
        .find_map(|(_, enc, ext)| Assets::get(&format!("{file}{ext}")).map(|a| (enc, a)));
    let body = match variant {
        Some((enc, compressed)) => {
            builder = builder.header(header::CONTENT_ENCODING, enc);
            compressed.data
        }
        None => asset.data,
    };
    builder
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.into_owned()))
        .map_err(|e| tracing::error!(error = %e, file, "building an asset response failed"))
        .ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The page `/` answers when the binary was built without the UI.
fn not_built() -> Response {
    const PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Wrenn: dashboard not built</title>\
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;\
line-height:1.5}code,pre{background:#8882;padding:.1rem .3rem;border-radius:4px}\
pre{padding:.75rem}</style></head><body>\
<h1>The Wrenn dashboard is not built into this binary</h1>\
<p>The API works (<a href=\"/docs\">/docs</a>, <a href=\"/health\">/health</a>). To get the \
web UI, build it (Node.js 20 and npm) and then the binary again:</p>\
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build &amp;&amp; cd ..\n\
cargo build --release -p wrenn-cli</pre>\
<p><code>./scripts/setup.sh</code> does both.</p></body></html>\n";
    let mut r = (StatusCode::OK, PAGE).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_prefixes_are_whole_segments() {
        assert!(is_api_path("/v1"));
        assert!(is_api_path("/v1/nope"));
        assert!(is_api_path("/health"));
        assert!(is_api_path("/openapi.json"));
        assert!(is_api_path("/docs/"));
        assert!(!is_api_path("/v1x"));
        assert!(!is_api_path("/capsules/cl-1"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/healthy"));
    }

    #[test]
    fn accept_encoding_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br"),
        );
        assert_eq!(encodings(&h), (true, true));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br;q=0, gzip"),
        );
        assert_eq!(encodings(&h), (false, true));
        h.remove(header::ACCEPT_ENCODING);
        assert_eq!(encodings(&h), (false, false));
    }
}
