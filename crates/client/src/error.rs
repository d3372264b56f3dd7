//! Client errors: the server's `{"error":{"code","message"}}` envelope (spec §B.0), transport
//! failures, and answers that are not what the API promises.

/// What went wrong, coarsely: enough for a caller (the CLI's exit codes, a retry loop) to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400/413/422: the request itself was rejected.
    Invalid,
    /// 401/403, or no usable credential.
    Auth,
    /// 404.
    NotFound,
    /// 409: wrong state (e.g. capsule not running) or a name already taken.
    Conflict,
    /// 5xx, or an answer the client cannot understand.
    Server,
    /// The server could not be reached (refused, DNS, TLS, timeout, connection reset).
    Network,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A non-2xx answer. `code` is the envelope's machine code (`not_found`, `invalid_state`, …),
    /// or `http_<status>` when the body was no envelope.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// `detail` is the innermost causes only: reqwest's own chain repeats the URL at every level.
    #[error("cannot reach {url}: {detail}")]
    Network { url: String, detail: String },
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("invalid base URL {url:?}: {detail}")]
    BaseUrl { url: String, detail: String },
    #[error("terminal connection: {0}")]
    WebSocket(String),
    /// A capsule reached a status it will not leave on its own while we waited for another.
    #[error("capsule {id} is {status}{}", reason_suffix(.reason))]
    CapsuleFailed {
        id: String,
        status: String,
        reason: Option<String>,
    },
    #[error("timed out after {secs}s waiting for capsule {id} to be {want} (still {status})")]
    WaitTimeout {
        id: String,
        want: String,
        status: String,
        secs: u64,
    },
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason.as_deref() {
        Some(r) if !r.is_empty() => format!(": {r}"),
        _ => String::new(),
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Api { status, .. } => match status {
                401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                400..=499 => ErrorKind::Invalid,
                _ => ErrorKind::Server,
            },
            Error::Network { .. } => ErrorKind::Network,
            Error::Protocol { .. } => ErrorKind::Server,
            Error::BaseUrl { .. } => ErrorKind::Invalid,
            Error::WebSocket(_) => ErrorKind::Network,
            Error::CapsuleFailed { .. } | Error::WaitTimeout { .. } => ErrorKind::Server,
        }
    }

    /// The envelope's code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds the error of a non-2xx answer from its body: the envelope when it is one, else
    /// the (truncated) text, so a proxy's HTML error page still says something.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            code: String,
            message: String,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(e) => Error::Api {
                status,
                code: e.error.code,
                message: e.error.message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP {status} with an empty body")
                } else {
                    text.chars().take(200).collect()
                };
                Error::Api {
                    status,
                    code: format!("http_{status}"),
                    message,
                }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn network(url: &str, e: &reqwest::Error) -> Error {
        let detail = if e.is_timeout() {
            "timed out".to_owned()
        } else {
            // The last two causes read best: "tcp connect error: Connection refused (os error 111)".
            let mut chain: Vec<String> = Vec::new();
            let mut cause: Option<&dyn std::error::Error> = Some(e);
            while let Some(c) = cause {
                chain.push(c.to_string());
                cause = c.source();
            }
            let start = chain.len().saturating_sub(2);
            chain[start..].join(": ")
        };
        Error::Network {
            url: url.to_owned(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_parsed() {
        let e = Error::from_body(
            404,
            br#"{"error":{"code":"not_found","message":"capsule not found"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.to_string(), "capsule not found (not_found, HTTP 404)");
    }

    #[test]
    fn non_json_body_keeps_its_text() {
        let e = Error::from_body(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.kind(), ErrorKind::Server);
        assert_eq!(e.code(), Some("http_502"));
        assert!(e.to_string().contains("Bad Gateway"));
    }

    #[test]
    fn kinds_by_status() {
        let k = |s| Error::from_body(s, b"").kind();
        assert_eq!(k(400), ErrorKind::Invalid);
        assert_eq!(k(401), ErrorKind::Auth);
        assert_eq!(k(403), ErrorKind::Auth);
        assert_eq!(k(409), ErrorKind::Conflict);
        assert_eq!(k(413), ErrorKind::Invalid);
        assert_eq!(k(503), ErrorKind::Server);
    }
}
