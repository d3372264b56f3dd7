//! `POST /files`: multipart (every part named `file`) or a raw body
//! (`application/octet-stream` with `path`), optionally gzip-encoded
//! (`Content-Encoding: gzip`, decoded while streaming). Each file is streamed
//! to disk through a small buffer.

use super::{CHUNK, FilesQuery, caller, fs_error, parse_query, signing};
use crate::filesystem::{Caller, FsError, ops, xattr};
use crate::http::HttpError;
use crate::state::Envd;
use async_compression::tokio::bufread::GzipDecoder;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio_util::io::{ReaderStream, StreamReader};

/// Upload metadata travels as `X-Metadata-<key>: <value>` request headers.
const METADATA_PREFIX: &str = "x-metadata-";
/// Write buffer between the request body and the file.
const WRITE_BUFFER: usize = 256 * 1024;
/// After a rejected upload, at most this much of the body is read and dropped so the
/// client, still sending, gets the error response rather than a broken pipe.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct WriteInfo {
    path: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    metadata: HashMap<String, String>,
}

pub async fn upload(
    State(envd): State<Envd>,
    request: Request,
) -> Result<Json<Vec<WriteInfo>>, HttpError> {
    let (parts, body) = request.into_parts();
    let query = parse_query(&parts.uri)?;
    signing::authorize(&envd, &query, &parts.headers, signing::Operation::Write)?;
    let caller = caller(&envd, &query, &parts.headers)?;
    let metadata = metadata_headers(&parts.headers)?;
    let body = decode_body(&parts.headers, body)?;

    let is_multipart = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
    if !is_multipart {
        let path = query
            .path
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| HttpError::bad_request("missing 'path' query parameter"))?;
        let target = caller.path(path).map_err(fs_error)?;
        let info = write_file(&caller, target, body.into_data_stream(), &metadata).await?;
        return Ok(Json(vec![info]));
    }

    let mut multipart = Multipart::from_request(Request::from_parts(parts, body), &())
        .await
        .map_err(|e| HttpError::bad_request(e.body_text()))?;
    let mut written = Vec::new();
    let mut targets = HashSet::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| HttpError::bad_request(format!("reading multipart body: {}", e.body_text())))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let target = match multipart_target(&caller, &query, field.file_name()) {
            Ok(target) if targets.insert(target.clone()) => target,
            Ok(target) => {
                let error = HttpError::bad_request(format!(
                    "more than one part targets {}",
                    target.display()
                ));
                drain(field, DRAIN_LIMIT).await;
                return Err(drain_parts(multipart, error).await);
            }
            Err(error) => {
                drain(field, DRAIN_LIMIT).await;
                return Err(drain_parts(multipart, error).await);
            }
        };
        match write_file(&caller, target, field, &metadata).await {
            Ok(info) => written.push(info),
            Err(error) => return Err(drain_parts(multipart, error).await),
        }
    }
    if written.is_empty() {
        return Err(HttpError::bad_request(
            "no part named 'file' in the multipart body",
        ));
    }
    Ok(Json(written))
}

/// A part goes to `path` when given, else to its filename (against home).
fn multipart_target(
    caller: &Caller,
    query: &FilesQuery,
    file_name: Option<&str>,
) -> Result<PathBuf, HttpError> {
    let named = query
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .or(file_name.filter(|f| !f.is_empty()))
        .ok_or_else(|| HttpError::bad_request("part has no filename and no 'path' was given"))?;
    caller.path(named).map_err(fs_error)
}

/// `X-Metadata-*` headers as (key, value), keys lowercased by HTTP already.
fn metadata_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            return Err(HttpError::bad_request("empty metadata key"));
        }
        let value = value.to_str().map_err(|_| {
            HttpError::bad_request(format!("metadata '{key}' is not printable ASCII"))
        })?;
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// The request body with its `Content-Encoding` removed.
fn decode_body(headers: &HeaderMap, body: Body) -> Result<Body, HttpError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let compressed = StreamReader::new(body.into_data_stream().map_err(io::Error::other));
            let mut decoder = GzipDecoder::new(compressed);
            decoder.multiple_members(true);
            Ok(Body::from_stream(ReaderStream::with_capacity(
                decoder, CHUNK,
            )))
        }
        other => Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding '{other}' (supported: gzip)"),
        )),
    }
}

/// Streams `data` into `target` (created or truncated, parents created, all
/// as the caller), then applies the metadata.
async fn write_file<S, E>(
    caller: &Caller,
    target: PathBuf,
    data: S,
    metadata: &[(String, String)],
) -> Result<WriteInfo, HttpError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let opened = target.clone();
    let mut data = std::pin::pin!(data);
    let file = match caller.run(move || open_for_write(&opened)).await {
        Ok(file) => file,
        Err(e) => {
            drain(data.as_mut(), DRAIN_LIMIT).await;
            return Err(fs_error(e));
        }
    };
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file));
    while let Some(chunk) = data.next().await {
        let chunk =
            chunk.map_err(|e| HttpError::bad_request(format!("reading upload body: {e}")))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| write_error(&target, e))?;
    }
    out.flush().await.map_err(|e| write_error(&target, e))?;
    drop(out);

    if !metadata.is_empty() {
        let (path, pairs) = (target.clone(), metadata.to_vec());
        caller
            .run(move || xattr::write(&path, &pairs).map_err(FsError::at("set metadata on", &path)))
            .await
            .map_err(fs_error)?;
    }
    tracing::debug!(path = %target.display(), "file written");
    Ok(WriteInfo {
        name: target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: target.to_string_lossy().into_owned(),
        kind: "file",
        metadata: metadata.iter().cloned().collect(),
    })
}

/// Reads and drops up to `limit` bytes of `data` (see [`DRAIN_LIMIT`]).
async fn drain<S, E>(data: S, limit: usize)
where
    S: Stream<Item = Result<Bytes, E>>,
{
    let mut data = std::pin::pin!(data);
    let mut seen = 0;
    while seen < limit {
        match data.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => break,
        }
    }
}

/// Drains the parts after a rejected one, then hands back `error`.
async fn drain_parts(mut multipart: Multipart, error: HttpError) -> HttpError {
    while let Ok(Some(field)) = multipart.next_field().await {
        drain(field, DRAIN_LIMIT).await;
    }
    error
}

/// Creates the parents and opens `path` create+truncate, mode 0666 (umask
/// applies). A directory in the way is a bad request.
fn open_for_write(path: &Path) -> Result<std::fs::File, FsError> {
    ops::create_parents(path)?;
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(FsError::invalid(format!(
            "{} is a directory",
            path.display()
        )));
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .open(path)
        .map_err(|e| ops::creating("open", path, e))
}

fn write_error(path: &Path, e: io::Error) -> HttpError {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => HttpError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("not enough disk space to write {}: {e}", path.display()),
        ),
        _ => fs_error(FsError::io("write", path, e)),
    }
}
