//! Files in a capsule (spec §B.3): read/write (unary and streamed), list, mkdir, remove.
//!
//! Contents never sit whole in memory: uploads are multipart bodies whose `file` part is fed to
//! the agent's `WriteFileStream` in ≤ 64 KiB chunks as it arrives; downloads pipe the agent's
//! `ReadFileStream` into a chunked response. The first download message is awaited before the
//! status line goes out, so a missing file is still a typed 404 (the SDK relies on it).

use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa_axum::{router::OpenApiRouter, routes};
use wrenn_proto::hostagent::v1::{
    FileEntry as AgentEntry, ListDirRequest, MakeDirRequest, ReadFileStreamRequest,
    RemovePathRequest, WriteFileStreamMeta, WriteFileStreamRequest, write_file_stream_request,
};

use crate::auth::Principal;
use crate::capsules::access::{self, CapsuleHandle};
use crate::error::{ApiError, ApiResult, ErrorBody, Json, Path};
use crate::state::AppState;

/// Cap of the whole `files/write` body (spec §B.3); `stream/write` has none.
pub const MAX_UNARY_UPLOAD: usize = 100 << 20;
/// Largest chunk sent to the agent in one message.
const CHUNK: usize = 64 << 10;
/// Longest accepted path (the agent's and Linux's PATH_MAX).
const MAX_PATH: usize = 4096;

pub fn router() -> OpenApiRouter<AppState> {
    // Body limits per route: the app-wide JSON limit would cut uploads off at 1 MiB.
    let unary_upload = OpenApiRouter::new()
        .routes(routes!(write))
        // Multipart framing on top of the 100 MiB of content.
        .layer(DefaultBodyLimit::max(MAX_UNARY_UPLOAD + (64 << 10)));
    let stream_upload = OpenApiRouter::new()
        .routes(routes!(stream_write))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes(routes!(read))
        .routes(routes!(stream_read))
        .routes(routes!(list))
        .routes(routes!(mkdir))
        .routes(routes!(remove))
        .merge(unary_upload)
        .merge(stream_upload)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct PathBody {
    pub path: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ListBody {
    pub path: Option<String>,
    /// Levels to descend; 0 or absent means 1.
    pub depth: Option<u32>,
}

/// A directory entry (spec §B.0 FileEntry).
#[derive(Serialize, utoipa::ToSchema, Debug, PartialEq)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    /// `file`, `directory` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: i64,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    pub modified_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

impl From<AgentEntry> for FileEntry {
    fn from(e: AgentEntry) -> Self {
        // The SDK rejects any other type: devices, sockets, fifos and unreadable entries are
        // reported as files, broken links as links (spec §B.0, Appendix 1).
        let kind = match e.r#type.as_str() {
            "directory" => "directory",
            "symlink" => "symlink",
            _ if e.symlink_target.is_some() => "symlink",
            _ => "file",
        };
        FileEntry {
            name: e.name,
            path: e.path,
            kind,
            size: e.size,
            mode: e.mode & 0o7777,
            permissions: go_permissions(e.permissions),
            owner: e.owner,
            group: e.group,
            modified_at: e.modified_at,
            symlink_target: e.symlink_target,
        }
    }
}

/// The type character of `permissions` in Go's `FileMode` notation, which the spec uses
/// (`L` symlink, `S` socket); the guest reports `ls` notation (`l`, `s`).
fn go_permissions(mut permissions: String) -> String {
    let go = match permissions.chars().next() {
        Some('l') => 'L',
        Some('s') => 'S',
        _ => return permissions,
    };
    permissions.replace_range(..1, go.encode_utf8(&mut [0; 4]));
    permissions
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryList {
    pub entries: Vec<FileEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MadeDir {
    pub entry: FileEntry,
}

/// Guest paths are trusted (the capsule is the boundary, spec §J); only what envd could not use
/// is refused here.
pub(crate) fn check_path(path: Option<String>) -> ApiResult<String> {
    let path = path.unwrap_or_default();
    if path.is_empty() {
        return Err(ApiError::invalid("path is required"));
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return Err(ApiError::invalid(format!(
            "path must be at most {MAX_PATH} bytes without NUL characters"
        )));
    }
    Ok(path)
}

/// Read a file (raw bytes).
#[utoipa::path(post, path = "/v1/capsules/{id}/files/read", tag = "files", request_body = PathBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<PathBody>,
) -> ApiResult<Response> {
    download(&state, &p, &id, body).await
}

/// Read a file as a chunked stream.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/stream/read", tag = "files", request_body = PathBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stream_read(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<PathBody>,
) -> ApiResult<Response> {
    download(&state, &p, &id, body).await
}

async fn download(
    state: &AppState,
    p: &Principal,
    id: &str,
    body: PathBody,
) -> ApiResult<Response> {
    let path = check_path(body.path)?;
    let handle = access::running(state, p, id).await?;
    let mut stream = handle
        .agent
        .read_file_stream(ReadFileStreamRequest {
            sandbox_id: handle.sandbox_id(),
            path: path.clone(),
            ..Default::default()
        })
        .await?;
    // Errors before the first chunk (missing file, a directory…) become typed responses.
    let first = stream.message().await?.map(|m| m.to_owned_message().chunk);
    access::touch(state, handle.id).await;
    let rest = futures::stream::unfold(Some(stream), move |stream| {
        let path = path.clone();
        async move {
            let mut stream = stream?;
            match stream.message().await {
                Ok(Some(m)) => Some((Ok(Bytes::from(m.to_owned_message().chunk)), Some(stream))),
                Ok(None) => None,
                Err(e) => {
                    // Headers are gone: abort the body so the client sees a broken transfer,
                    // not a short file.
                    tracing::warn!(%path, error = %e, "file download failed mid-stream");
                    Some((Err(std::io::Error::other(e.to_string())), None))
                }
            }
        }
    });
    let body = futures::stream::iter(first.map(|c| Ok(Bytes::from(c)))).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Write a file from a multipart body (`path` part first, then `file`); ≤ 100 MiB.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/write", tag = "files",
    request_body(content_type = "multipart/form-data", description = "parts `path` (text) then `file`"),
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn write(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<StatusCode> {
    let too_big = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_UNARY_UPLOAD + (64 << 10));
    if too_big {
        return Err(too_large());
    }
    upload(&state, &p, &id, request, Some(MAX_UNARY_UPLOAD)).await
}

/// Write a file from a streamed (chunked) multipart body; no size cap.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/stream/write", tag = "files",
    request_body(content_type = "multipart/form-data", description = "parts `path` (text) then `file`"),
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn stream_write(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<StatusCode> {
    upload(&state, &p, &id, request, None).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("file uploads are limited to {MAX_UNARY_UPLOAD} bytes; use files/stream/write"),
    )
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::invalid(format!("invalid multipart body: {}", e.body_text()))
    }
}

async fn upload(
    state: &AppState,
    p: &Principal,
    id: &str,
    request: Request,
    limit: Option<usize>,
) -> ApiResult<StatusCode> {
    let handle = access::running(state, p, id).await?;
    let mut multipart = Multipart::from_request(request, state).await.map_err(|e| {
        ApiError::invalid(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let mut path = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("path") => {
                let text = field.text().await.map_err(multipart_error)?;
                path = Some(check_path(Some(text))?);
            }
            Some("file") => {
                let Some(path) = path.take() else {
                    return Err(ApiError::invalid(
                        "the `path` part must come before the `file` part",
                    ));
                };
                send_file(&handle, path, field, limit).await?;
                access::touch(state, handle.id).await;
                return Ok(StatusCode::NO_CONTENT);
            }
            // Unknown parts are skipped (their bytes are drained by next_field).
            _ => {}
        }
    }
    Err(ApiError::invalid(if path.is_some() {
        "missing `file` part"
    } else {
        "missing `path` and `file` parts"
    }))
}

/// Feeds one multipart field to the agent's WriteFileStream while it arrives. Whichever side
/// fails first decides the answer; returning drops the other (an unfinished RPC is cancelled,
/// so the agent never completes a partial file as if it were whole).
async fn send_file(
    handle: &CapsuleHandle,
    path: String,
    mut field: axum::extract::multipart::Field<'_>,
    limit: Option<usize>,
) -> ApiResult<()> {
    let (tx, rx) = mpsc::channel::<WriteFileStreamRequest>(8);
    let meta = WriteFileStreamRequest {
        content: Some(write_file_stream_request::Content::Meta(Box::new(
            WriteFileStreamMeta {
                sandbox_id: handle.sandbox_id(),
                path,
                ..Default::default()
            },
        ))),
        ..Default::default()
    };
    let chunks =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let requests = futures::stream::once(async move { meta }).chain(chunks);
    let rpc = handle.agent.write_file_stream(requests);
    tokio::pin!(rpc);

    let feed = async move {
        let mut total = 0usize;
        while let Some(data) = field.chunk().await.map_err(multipart_error)? {
            total += data.len();
            if limit.is_some_and(|l| total > l) {
                return Err(too_large());
            }
            let mut data = data;
            while !data.is_empty() {
                let piece = data.split_to(data.len().min(CHUNK));
                let message = WriteFileStreamRequest {
                    content: Some(write_file_stream_request::Content::Chunk(piece.to_vec())),
                    ..Default::default()
                };
                if tx.send(message).await.is_err() {
                    // The RPC ended early; its result says why.
                    return Ok(false);
                }
            }
        }
        Ok(true)
    };
    tokio::pin!(feed);

    let mut fed = false;
    loop {
        tokio::select! {
            result = &mut rpc => {
                result?;
                if !fed {
                    // Success before the whole body was read can only mean the agent stopped
                    // reading; never report a partial file as written.
                    return Err(ApiError::internal("agent finished the upload before its end"));
                }
                return Ok(());
            }
            done = &mut feed, if !fed => {
                // `Ok(false)`: the RPC is already over; loop to take its result.
                let _complete = done?;
                fed = true;
            }
        }
    }
}

/// List a directory (to `depth` levels; the directory itself excluded).
#[utoipa::path(post, path = "/v1/capsules/{id}/files/list", tag = "files", request_body = ListBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = EntryList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<ListBody>,
) -> ApiResult<Json<EntryList>> {
    let path = check_path(body.path)?;
    let handle = access::running(&state, &p, &id).await?;
    let reply = handle
        .agent
        .list_dir(ListDirRequest {
            sandbox_id: handle.sandbox_id(),
            path,
            depth: body.depth.unwrap_or(1).max(1),
            ..Default::default()
        })
        .await?
        .into_owned();
    access::touch(&state, handle.id).await;
    Ok(Json(EntryList {
        entries: reply.entries.into_iter().map(FileEntry::from).collect(),
    }))
}

/// Create a directory and its parents; 409 `conflict` when it exists.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/mkdir", tag = "files", request_body = PathBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 200, body = MadeDir), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn mkdir(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<PathBody>,
) -> ApiResult<Json<MadeDir>> {
    let path = check_path(body.path)?;
    let handle = access::running(&state, &p, &id).await?;
    let reply = handle
        .agent
        .make_dir(MakeDirRequest {
            sandbox_id: handle.sandbox_id(),
            path,
            ..Default::default()
        })
        .await?
        .into_owned();
    access::touch(&state, handle.id).await;
    let entry = reply
        .entry
        .into_option()
        .ok_or_else(|| ApiError::internal("agent MakeDir answered without an entry"))?;
    Ok(Json(MadeDir {
        entry: entry.into(),
    }))
}

/// Remove a file or a directory tree.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/remove", tag = "files", request_body = PathBody,
    params(("id" = String, Path, description = "capsule id")),
    security(("api_key" = []), ("bearer" = []), ("session" = [])),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<PathBody>,
) -> ApiResult<StatusCode> {
    let path = check_path(body.path)?;
    let handle = access::running(&state, &p, &id).await?;
    handle
        .agent
        .remove_path(RemovePathRequest {
            sandbox_id: handle.sandbox_id(),
            path,
            ..Default::default()
        })
        .await?;
    access::touch(&state, handle.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_path(None).is_err());
        assert!(check_path(Some(String::new())).is_err());
        assert!(check_path(Some("a\0b".into())).is_err());
        assert!(check_path(Some("x".repeat(MAX_PATH + 1))).is_err());
        assert_eq!(check_path(Some("~/../etc".into())).unwrap(), "~/../etc");
    }

    #[test]
    fn entry_types_are_sdk_safe() {
        let e = |t: &str, target: Option<&str>| AgentEntry {
            r#type: t.into(),
            mode: 0o100644,
            symlink_target: target.map(Into::into),
            ..Default::default()
        };
        assert_eq!(FileEntry::from(e("unknown", None)).kind, "file");
        assert_eq!(FileEntry::from(e("unknown", Some("/x"))).kind, "symlink");
        assert_eq!(FileEntry::from(e("directory", None)).kind, "directory");
        assert_eq!(FileEntry::from(e("file", None)).mode, 0o644);
        assert_eq!(go_permissions("lrwxrwxrwx".into()), "Lrwxrwxrwx");
        assert_eq!(go_permissions("srwxr-xr-x".into()), "Srwxr-xr-x");
        assert_eq!(go_permissions("drwxr-xr-x".into()), "drwxr-xr-x");
        assert_eq!(go_permissions(String::new()), "");
    }
}
