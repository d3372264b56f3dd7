//! `POST /init`: defaults for later processes and file operations, plus the
//! capsule's Wrenn identity. Sent by the host agent after boot and after every
//! resume, so it also ends a snapshot quiesce.

use super::{HttpError, own_conn};
use crate::conntrack::ConnId;
use crate::state::Envd;
use crate::users::{Account, UserError};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// File names under the run dir and env var names for the capsule identity.
const SANDBOX_ID: &str = "WRENN_SANDBOX_ID";
const TEMPLATE_ID: &str = "WRENN_TEMPLATE_ID";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitRequest {
    access_token: Option<String>,
    default_user: Option<String>,
    default_workdir: Option<String>,
    env_vars: Option<HashMap<String, String>>,
    /// RFC 3339; a request not newer than the last applied one changes nothing.
    timestamp: Option<String>,
    /// Wrenn metadata (the host agent's capsule and template ids).
    sandbox_id: Option<String>,
    template_id: Option<String>,
}

pub(super) async fn init(
    State(envd): State<Envd>,
    conn: Option<Extension<ConnectInfo<ConnId>>>,
    body: Bytes,
) -> Result<StatusCode, HttpError> {
    // Any /init means the host considers the capsule live again.
    envd.lifecycle.resume(own_conn(conn)).await;

    let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::bad_request(format!("invalid init request: {e}")))?
    };

    let timestamp_ns =
        match req.timestamp.as_deref() {
            Some(t) => Some(parse_rfc3339_nanos(t).ok_or_else(|| {
                HttpError::bad_request(format!("timestamp '{t}' is not RFC 3339"))
            })?),
            None => None,
        };
    let user = match req.default_user.as_deref() {
        Some(u) if !u.is_empty() => Some(
            Account::lookup(u)
                .map_err(|e| match e {
                    UserError::Unknown(_) => HttpError::bad_request(e.to_string()),
                    UserError::Lookup(..) => HttpError::internal(e.to_string()),
                })?
                .name,
        ),
        _ => None,
    };
    let workdir = match req.default_workdir.as_deref() {
        Some(w) if !w.is_empty() => {
            if w.contains('\0') || !Path::new(w).is_absolute() {
                return Err(HttpError::bad_request(format!(
                    "defaultWorkdir '{w}' must be an absolute path"
                )));
            }
            Some(crate::paths::normalize(Path::new(w)))
        }
        _ => None,
    };
    let sandbox_id = checked_id("sandboxId", req.sandbox_id)?;
    let template_id = checked_id("templateId", req.template_id)?;

    let mut stale = false;
    envd.update_defaults(|d| {
        if let Some(ts) = timestamp_ns {
            if ts <= d.last_init_ns {
                stale = true;
                return;
            }
            d.last_init_ns = ts;
        }
        if let Some(vars) = req.env_vars {
            d.env_vars.extend(vars);
        }
        if let Some(token) = req.access_token {
            // An empty token clears it.
            d.access_token = (!token.is_empty()).then_some(token);
        }
        if let Some(u) = user {
            d.user = u;
        }
        if let Some(w) = workdir {
            d.workdir = Some(w.to_string_lossy().into_owned());
        }
        if let Some(id) = &sandbox_id {
            d.env_vars.insert(SANDBOX_ID.to_owned(), id.clone());
        }
        if let Some(id) = &template_id {
            d.env_vars.insert(TEMPLATE_ID.to_owned(), id.clone());
        }
    });
    if stale {
        tracing::info!("stale /init timestamp: data updates skipped");
        return Ok(StatusCode::NO_CONTENT);
    }

    let run_dir = &envd.lifecycle.config().run_dir;
    for (name, id) in [(SANDBOX_ID, sandbox_id), (TEMPLATE_ID, template_id)] {
        if let Some(id) = id {
            write_metadata(run_dir, name, &id).await.map_err(|e| {
                HttpError::internal(format!("writing {}/.{name}: {e}", run_dir.display()))
            })?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Ids end up in env vars and files: refuse control characters.
fn checked_id(field: &str, id: Option<String>) -> Result<Option<String>, HttpError> {
    match id {
        Some(id) if id.is_empty() => Ok(None),
        Some(id) if id.len() > 256 || id.chars().any(char::is_control) => Err(
            HttpError::bad_request(format!("{field} must be at most 256 printable characters")),
        ),
        other => Ok(other),
    }
}

/// Written via a temp file and rename, so readers never see a partial id.
async fn write_metadata(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, value).await?;
    tokio::fs::rename(&tmp, dir.join(format!(".{name}"))).await
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:00:00.5+02:00`) into Unix nanoseconds.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let t = s.get(from..from + len)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let sep = |at: usize, ok: &[u8]| b.get(at).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Digits beyond nanoseconds are truncated.
        for k in 0..9 {
            let d = b
                .get(start + k)
                .filter(|_| start + k < i)
                .map_or(0, |c| c - b'0');
            nanos = nanos * 10 + i64::from(d);
        }
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            if rest.as_bytes()[3] != b':' {
                return None;
            }
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if rest.starts_with('-') { -o } else { o }
        }
        _ => return None,
    };
    // A leap second counts as the last second of the minute.
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec.min(59) - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_variants() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T12:34:56Z"),
            Some(1_709_210_096_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T14:34:56.5+02:00"),
            Some(1_709_210_096_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T12:34:56.123456789123z"),
            Some(1_709_210_096_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("1969-12-31T23:59:59-00:00"),
            Some(-1_000_000_000)
        );
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01 00:00:00 UTC",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(checked_id("x", Some(String::new())).unwrap(), None);
        assert_eq!(
            checked_id("x", Some("cap-1".into())).unwrap(),
            Some("cap-1".into())
        );
        assert!(checked_id("x", Some("a\nb".into())).is_err());
    }
}
