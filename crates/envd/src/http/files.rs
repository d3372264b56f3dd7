//! `GET /files` (download) and `POST /files` (upload).
//!
//! Both act as the user named by the `username` query parameter (else the
//! Basic `Authorization` user, else the default user), resolve `path` against
//! that user's home and touch the filesystem with that user's credentials
//! (`filesystem::creds`): permissions are the user's and created files and
//! directories are theirs. Bodies stream in both directions; nothing buffers
//! a whole file.

mod negotiate;
mod signing;
mod upload;

use crate::filesystem::{Caller, FsError, Kind};
use crate::http::HttpError;
use crate::state::Envd;
use async_compression::Level;
use async_compression::tokio::bufread::GzipEncoder;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;
use negotiate::Encoding;
use serde::Deserialize;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use tokio::io::BufReader;
use tokio_util::io::ReaderStream;

/// Read/write granularity of file streaming.
const CHUNK: usize = 64 * 1024;

pub fn routes() -> Router<Envd> {
    Router::new()
        .route("/files", get(download).post(upload::upload))
        // Uploads are streamed to disk, so their size is not limited here.
        .layer(DefaultBodyLimit::disable())
}

#[derive(Debug, Default, Deserialize)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
    pub signature: Option<String>,
    pub signature_expiration: Option<String>,
}

fn parse_query(uri: &Uri) -> Result<FilesQuery, HttpError> {
    Query::<FilesQuery>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| HttpError::bad_request(format!("invalid query: {e}")))
}

/// The user the request acts as.
fn caller(envd: &Envd, query: &FilesQuery, headers: &HeaderMap) -> Result<Caller, HttpError> {
    let name = query
        .username
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| crate::auth::user_from_headers(headers));
    Caller::resolve(envd, name.as_deref()).map_err(fs_error)
}

fn fs_error(e: FsError) -> HttpError {
    let status = match e.kind() {
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::InvalidArgument | Kind::FailedPrecondition => StatusCode::BAD_REQUEST,
        Kind::AlreadyExists => StatusCode::CONFLICT,
        Kind::PermissionDenied => StatusCode::FORBIDDEN,
        Kind::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Kind::UnknownUser => StatusCode::UNAUTHORIZED,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpError::new(status, e.message())
}

async fn download(
    State(envd): State<Envd>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    let query = parse_query(&uri)?;
    signing::authorize(&envd, &query, &headers, signing::Operation::Read)?;
    let caller = caller(&envd, &query, &headers)?;
    let path = caller
        .path(query.path.as_deref().unwrap_or(""))
        .map_err(fs_error)?;
    let opened = path.clone();
    let (file, len) = caller
        .run(move || open_regular(&opened))
        .await
        .map_err(fs_error)?;
    let encoding = negotiate::choose(&headers)?;

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mime = mime_guess::from_path(&path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mime)
        .header(header::CONTENT_DISPOSITION, content_disposition(&name))
        .header(header::VARY, "Accept-Encoding");
    let file = tokio::fs::File::from_std(file);
    let response = match encoding {
        Encoding::Identity => builder
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from_stream(ReaderStream::with_capacity(file, CHUNK))),
        Encoding::Gzip => {
            let gz =
                GzipEncoder::with_quality(BufReader::with_capacity(CHUNK, file), Level::Fastest);
            builder
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from_stream(ReaderStream::with_capacity(gz, CHUNK)))
        }
    };
    response.map_err(|e| HttpError::internal(format!("building response: {e}")))
}

/// Opens `path` for reading; it must be a regular file.
fn open_regular(path: &Path) -> Result<(std::fs::File, u64), FsError> {
    // O_NONBLOCK: opening a FIFO must not hang; it is rejected below anyway,
    // and the flag has no effect on regular files.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(FsError::at("open", path))?;
    let meta = file.metadata().map_err(FsError::at("stat", path))?;
    if meta.is_dir() {
        return Err(FsError::invalid(format!(
            "{} is a directory",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(FsError::invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok((file, meta.len()))
}

/// `inline; filename="<name>"` with quotes and backslashes escaped; a name
/// that is not plain ASCII is approximated there and given exactly in
/// `filename*` (RFC 6266 / RFC 8187).
fn content_disposition(name: &str) -> HeaderValue {
    let mut plain = String::with_capacity(name.len());
    let mut exact = true;
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                plain.push('\\');
                plain.push(c);
            }
            c if c.is_ascii() && !c.is_ascii_control() => plain.push(c),
            _ => {
                plain.push('_');
                exact = false;
            }
        }
    }
    let mut value = format!("inline; filename=\"{plain}\"");
    if !exact {
        value.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(b as char);
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("inline"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_quote_safe() {
        assert_eq!(
            content_disposition("a.txt"),
            HeaderValue::from_static("inline; filename=\"a.txt\"")
        );
        assert_eq!(
            content_disposition("a\"b\\c"),
            HeaderValue::from_static("inline; filename=\"a\\\"b\\\\c\"")
        );
        assert_eq!(
            content_disposition("é\n.txt"),
            HeaderValue::from_static("inline; filename=\"__.txt\"; filename*=UTF-8''%C3%A9%0A.txt")
        );
    }
}
