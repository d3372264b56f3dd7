//! Access control for `/files` when an access token is installed (`/init`).
//!
//! A request passes with `X-Access-Token: <token>`, or with a signed URL:
//! `signature=v1_<digest>` where digest = SHA-256 of
//! `<path>:<operation>:<username>:<token>` (plus `:<signature_expiration>` when
//! the URL expires; unix seconds, must not be in the past). `path` and
//! `username` are the query parameters exactly as sent (empty when absent),
//! operation is `read` or `write`. The digest is accepted hex-encoded (the
//! documented scheme) or unpadded standard base64 (what current E2B SDKs
//! send). Comparisons are constant-time.

use super::FilesQuery;
use crate::http::HttpError;
use crate::state::Envd;
use axum::http::HeaderMap;
use base64::Engine;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

pub fn authorize(
    envd: &Envd,
    query: &FilesQuery,
    headers: &HeaderMap,
    op: Operation,
) -> Result<(), HttpError> {
    let Some(token) = envd.defaults().access_token.filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let header = headers.get(ACCESS_TOKEN_HEADER);
    if let Some(given) = header
        && ct_eq(given.as_bytes(), token.as_bytes())
    {
        return Ok(());
    }
    let Some(signature) = query.signature.as_deref().filter(|s| !s.is_empty()) else {
        return Err(HttpError::unauthorized(if header.is_some() {
            "invalid access token"
        } else {
            "missing access token or signature"
        }));
    };
    let expiration = match query.signature_expiration.as_deref() {
        Some(raw) => {
            let at: i64 = raw
                .trim()
                .parse()
                .map_err(|_| HttpError::unauthorized("invalid signature expiration"))?;
            if at < now_unix() {
                return Err(HttpError::unauthorized("signature expired"));
            }
            Some(raw)
        }
        None => None,
    };
    let path = query.path.as_deref().unwrap_or("");
    let user = query.username.as_deref().unwrap_or("");
    if signature_matches(signature, path, op, user, &token, expiration) {
        Ok(())
    } else {
        Err(HttpError::unauthorized("invalid signature"))
    }
}

/// The digest a client signs for this request.
pub fn digest(
    path: &str,
    op: Operation,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update(b":");
    h.update(op.as_str().as_bytes());
    h.update(b":");
    h.update(user.as_bytes());
    h.update(b":");
    h.update(token.as_bytes());
    if let Some(exp) = expiration {
        h.update(b":");
        h.update(exp.as_bytes());
    }
    h.finalize().into()
}

fn signature_matches(
    signature: &str,
    path: &str,
    op: Operation,
    user: &str,
    token: &str,
    expiration: Option<&str>,
) -> bool {
    let d = digest(path, op, user, token, expiration);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(d);
    let given = signature.as_bytes();
    // Evaluate both so timing does not reveal which form was close.
    let a = ct_eq(given, format!("v1_{hex}").as_bytes());
    let b = ct_eq(given, format!("v1_{b64}").as_bytes());
    a | b
}

/// Constant-time equality (the length is not secret).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hex_and_base64_forms() {
        let d = digest("/a.txt", Operation::Read, "", "tok", None);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(d);
        assert!(signature_matches(
            &format!("v1_{hex}"),
            "/a.txt",
            Operation::Read,
            "",
            "tok",
            None
        ));
        assert!(signature_matches(
            &format!("v1_{b64}"),
            "/a.txt",
            Operation::Read,
            "",
            "tok",
            None
        ));
        assert!(!signature_matches(
            &format!("v1_{hex}"),
            "/a.txt",
            Operation::Write,
            "",
            "tok",
            None
        ));
        assert!(!signature_matches(
            &format!("v1_{hex}"),
            "/a.txt",
            Operation::Read,
            "",
            "tok",
            Some("1")
        ));
        assert!(!signature_matches(
            "v1_",
            "/a.txt",
            Operation::Read,
            "",
            "tok",
            None
        ));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
