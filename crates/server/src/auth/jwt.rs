//! User JWTs: HS256 only, 6 h, the claims of spec §B.6.
//!
//! Hand-rolled on `hmac`/`sha2` because the format needed is tiny (one algorithm, one key) and
//! the general-purpose JWT crates bring RSA/EC stacks with them. Verification accepts nothing but
//! `alg: HS256`, compares the MAC in constant time, and refuses tokens with a `typ` claim (host
//! tokens carry `typ: "host"`; user tokens have none).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const USER_TOKEN_TTL_SECS: i64 = 6 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// `usr-…`
    pub sub: String,
    /// `team-…`
    pub team_id: String,
    pub role: String,
    pub email: String,
    pub name: String,
    /// UI hint only: the server re-reads the flag from the database.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_admin: bool,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("not a user token")]
    WrongKind,
}

#[derive(Clone)]
pub struct JwtKey(Vec<u8>);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl JwtKey {
    pub fn new(secret: Vec<u8>) -> Self {
        Self(secret)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verifies a user token at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header =
            serde_json::from_slice(&B64.decode(h).map_err(|_| JwtError::Malformed)?)
                .map_err(|_| JwtError::Malformed)?;
        if header.alg != "HS256" {
            return Err(JwtError::Algorithm);
        }
        let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&B64.decode(p).map_err(|_| JwtError::Malformed)?)
                .map_err(|_| JwtError::Malformed)?;
        if claims.typ.is_some() {
            return Err(JwtError::WrongKind);
        }
        if claims.exp <= now {
            return Err(JwtError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            sub: "usr-1".into(),
            team_id: "team-1".into(),
            role: "owner".into(),
            email: "a@b.c".into(),
            name: "A".into(),
            is_admin: false,
            iat: now,
            exp: now + USER_TOKEN_TTL_SECS,
            typ: None,
        }
    }

    #[test]
    fn sign_verify_and_rejections() {
        let key = JwtKey::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let token = key.sign(&claims(1000));
        assert_eq!(key.verify(&token, 1001), Ok(claims(1000)));
        assert_eq!(
            key.verify(&token, 1000 + USER_TOKEN_TTL_SECS),
            Err(JwtError::Expired)
        );
        let other = JwtKey::new(b"another key, also 32 bytes long!".to_vec());
        assert_eq!(other.verify(&token, 1001), Err(JwtError::Signature));

        // alg=none with the same payload is refused before any signature check.
        let payload = token.split('.').nth(1).unwrap_or_default();
        let none = format!("{}.{payload}.", B64.encode(br#"{"alg":"none"}"#));
        assert_eq!(key.verify(&none, 1001), Err(JwtError::Algorithm));

        let mut host = claims(1000);
        host.typ = Some("host".into());
        assert_eq!(key.verify(&key.sign(&host), 1001), Err(JwtError::WrongKind));
        assert_eq!(key.verify("a.b", 1), Err(JwtError::Malformed));
        // is_admin is omitted when false
        assert!(
            !String::from_utf8(B64.decode(payload).unwrap_or_default())
                .unwrap_or_default()
                .contains("is_admin")
        );
    }
}
