//! Response encoding for downloads, from `Accept-Encoding` (RFC 9110 §12.5.3).

use crate::http::HttpError;
use axum::http::{HeaderMap, StatusCode, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

/// Picks gzip when the client accepts it at least as much as identity. Range
/// and conditional requests get identity (their validators and offsets refer
/// to the stored bytes). Nothing acceptable → 406.
pub fn choose(headers: &HeaderMap) -> Result<Encoding, HttpError> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let (gzip, identity) = if values.is_empty() {
        (0.0, 1.0)
    } else {
        weights(&values.join(","))
    };
    let force_identity = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| headers.contains_key(h));
    let pick = if force_identity {
        (identity > 0.0).then_some(Encoding::Identity)
    } else if gzip > 0.0 && gzip >= identity {
        Some(Encoding::Gzip)
    } else if identity > 0.0 {
        Some(Encoding::Identity)
    } else if gzip > 0.0 {
        Some(Encoding::Gzip)
    } else {
        None
    };
    pick.ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_ACCEPTABLE,
            "no acceptable content encoding (supported: gzip, identity)",
        )
    })
}

/// (gzip weight, identity weight) for an `Accept-Encoding` value.
fn weights(value: &str) -> (f32, f32) {
    let (mut gzip, mut identity, mut star) = (None, None, None);
    for item in value.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let q = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
            })
            .next()
            .map_or(1.0, |v| v.parse::<f32>().unwrap_or(1.0).clamp(0.0, 1.0));
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "identity" => identity = Some(q),
            "*" => star = Some(q),
            _ => {}
        }
    }
    // Unlisted gzip takes `*`'s weight; unlisted identity is acceptable
    // unless `*` excludes it.
    (
        gzip.or(star).unwrap_or(0.0),
        identity.or(star).unwrap_or(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(ae: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(ae).unwrap());
        h
    }

    #[test]
    fn negotiates() {
        assert_eq!(choose(&HeaderMap::new()).unwrap(), Encoding::Identity);
        assert_eq!(choose(&with("gzip")).unwrap(), Encoding::Gzip);
        assert_eq!(choose(&with("gzip, deflate, br")).unwrap(), Encoding::Gzip);
        assert_eq!(choose(&with("br")).unwrap(), Encoding::Identity);
        assert_eq!(choose(&with("gzip;q=0")).unwrap(), Encoding::Identity);
        assert_eq!(choose(&with("*")).unwrap(), Encoding::Gzip);
        assert_eq!(choose(&with("identity;q=0, gzip")).unwrap(), Encoding::Gzip);
        assert_eq!(
            choose(&with("identity;q=1, gzip;q=0.5")).unwrap(),
            Encoding::Identity
        );
        assert!(choose(&with("identity;q=0")).is_err());
        assert!(choose(&with("*;q=0")).is_err());
        assert!(choose(&with("br, identity;q=0")).is_err());
        let mut ranged = with("gzip");
        ranged.insert(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert_eq!(choose(&ranged).unwrap(), Encoding::Identity);
    }
}
