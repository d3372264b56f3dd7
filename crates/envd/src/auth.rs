//! Who a request acts as.
//!
//! E2B clients name the user of an RPC with HTTP Basic auth and an empty
//! password: `Authorization: Basic base64("<user>:")`. No password is checked
//! (envd trusts whoever can reach it; the access token, when set, guards
//! `/files`). Absent or malformed, the request falls back to the default user.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;

/// The username carried by a Basic `Authorization` header, if any.
pub fn user_from_headers(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn parses_basic_user() {
        // base64("user:")
        assert_eq!(
            user_from_headers(&with("Basic dXNlcjo=")),
            Some("user".into())
        );
        assert_eq!(
            user_from_headers(&with("basic cm9vdDo=")),
            Some("root".into())
        );
    }

    #[test]
    fn ignores_missing_empty_or_other_schemes() {
        assert_eq!(user_from_headers(&HeaderMap::new()), None);
        assert_eq!(user_from_headers(&with("Basic Og==")), None); // ":"
        assert_eq!(user_from_headers(&with("Bearer abc")), None);
        assert_eq!(user_from_headers(&with("Basic !!!")), None);
    }
}
