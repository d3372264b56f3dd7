//! Authentication (spec §B.0 auth kinds) and credential primitives.
//!
//! - `X-API-Key: wrn_<32 hex>` — team credential; looked up by SHA-256; wins over the others.
//! - `Authorization: Bearer <jwt>` — user token, HS256, 6 h ([`jwt`]).
//! - cookie `wrenn_sid` — browser session; unsafe methods also need `X-CSRF-Token` equal to the
//!   `wrenn_csrf` cookie ([`session`]).
//!
//! Handlers take [`Principal`] (any credential: capsule routes) or [`UserPrincipal`] (user
//! token or session only: account and team management).

pub mod jwt;
pub mod password;
mod principal;
pub mod session;

pub use principal::{Actor, ApiKeyActor, Principal, UserActor, UserPrincipal};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `n` random bytes from the OS CSPRNG, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub fn sha256_hex(data: &str) -> String {
    hex(&Sha256::digest(data.as_bytes()))
}

/// Compares secrets without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new API key: (`wrn_` + 32 lowercase hex, its SHA-256 hex, its 10-character prefix).
pub fn new_api_key() -> (String, String, String) {
    let key = format!("wrn_{}", random_hex(16));
    let hash = sha256_hex(&key);
    let prefix = key[..10].to_owned();
    (key, hash, prefix)
}

/// Shape check before any database access.
pub fn looks_like_api_key(key: &str) -> bool {
    key.strip_prefix("wrn_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
