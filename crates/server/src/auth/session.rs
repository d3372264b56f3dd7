//! Browser sessions: `wrenn_sid` (HttpOnly) + `wrenn_csrf` (readable by the page, echoed in
//! `X-CSRF-Token` on unsafe methods). The database keeps only SHA-256 hashes of both, and the
//! CSRF token is bound to its session, so a cookie planted by a sibling subdomain can't pair
//! with a victim's session.

use axum::http::{HeaderMap, HeaderValue, header};

use crate::auth::{random_hex, sha256_hex};
use crate::db::{self, DbResult, sessions::Session};
use crate::ids::{TeamId, UserId};

pub const SESSION_COOKIE: &str = "wrenn_sid";
pub const CSRF_COOKIE: &str = "wrenn_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const SESSION_TTL_SECS: i64 = 7 * 24 * 3600;

/// The value of cookie `name` in the request's `Cookie` header(s).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Creates a session row and returns the two `Set-Cookie` values.
pub async fn start<'e>(
    ex: impl sqlx::AnyExecutor<'e>,
    user: UserId,
    team: TeamId,
    secure: bool,
) -> DbResult<[HeaderValue; 2]> {
    let sid = random_hex(32);
    let csrf = random_hex(32);
    let now = crate::time::now();
    let session = Session {
        user_id: user,
        team_id: team,
        csrf_hash: sha256_hex(&csrf),
    };
    db::sessions::insert(ex, &sha256_hex(&sid), &session, now, now + SESSION_TTL_SECS).await?;
    Ok(cookies(&sid, &csrf, SESSION_TTL_SECS, secure))
}

fn cookies(sid: &str, csrf: &str, max_age: i64, secure: bool) -> [HeaderValue; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let make =
        |s: String| HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""));
    [
        make(format!(
            "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
        )),
        make(format!(
            "{CSRF_COOKIE}={csrf}; Path=/; SameSite=Lax; Max-Age={max_age}{secure}"
        )),
    ]
}

/// `Set-Cookie` values that delete both cookies.
pub fn clear(secure: bool) -> [HeaderValue; 2] {
    cookies("", "", 0, secure)
}
