//! ReadFile, WriteFile, ListDir, MakeDir, RemovePath and the streaming variants.
//!
//! File contents go through envd's HTTP `/files` (GET download, POST multipart upload), which
//! streams both ways: the agent forwards 64 KiB chunks as they arrive and never holds a whole
//! file (only the unary ReadFile/WriteFile carry a whole file in one message, bounded by
//! [`MAX_UNARY_FILE`]). Directory operations use envd's `filesystem.Filesystem` service.

use super::{AgentService, check_path};
use crate::runtime::Runtime;
use bytes::{Bytes, BytesMut};
use connectrpc::{ConnectError, InboundStream, ServiceStream};
use futures::StreamExt;
use wrenn_proto::filesystem::{
    EntryInfo, FileType, ListDirRequest as FsListDir, MakeDirRequest as FsMakeDir,
    RemoveRequest as FsRemove,
};
use wrenn_proto::hostagent::v1::{
    FileEntry, ListDirRequest, ListDirResponse, MakeDirResponse, ReadFileStreamResponse,
    WriteFileStreamRequest, write_file_stream_request,
};

/// Chunk size of ReadFileStream responses (spec §E).
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Largest file the unary ReadFile/WriteFile carry; bigger ones need the streaming RPCs.
pub const MAX_UNARY_FILE: usize = 32 << 20;
/// Upload chunks in flight between the RPC stream and envd (backpressure, bounded memory).
const UPLOAD_QUEUE: usize = 4;

/// Maps an envd `/files` error reply (`{"code":…,"message":…}`) to a Connect error.
async fn http_error(path: &str, response: reqwest::Response) -> ConnectError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(body);
    let message = format!("{path}: {message}");
    match status.as_u16() {
        400 => ConnectError::invalid_argument(message),
        401 | 403 => ConnectError::permission_denied(message),
        404 => ConnectError::not_found(message),
        507 => ConnectError::resource_exhausted(message),
        _ => ConnectError::internal(format!("envd /files answered {status}: {message}")),
    }
}

fn transport_error(e: reqwest::Error) -> ConnectError {
    ConnectError::unavailable(format!("envd /files: {e}"))
}

fn file_name(path: &str) -> String {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or("file")
        .to_owned()
}

fn entry(info: EntryInfo) -> FileEntry {
    let kind = match info.r#type.as_known() {
        Some(FileType::FILE_TYPE_FILE) => "file",
        Some(FileType::FILE_TYPE_DIRECTORY) => "directory",
        Some(FileType::FILE_TYPE_SYMLINK) => "symlink",
        _ => "unknown",
    };
    FileEntry {
        name: info.name,
        path: info.path,
        r#type: kind.to_owned(),
        size: info.size,
        mode: info.mode,
        permissions: info.permissions,
        owner: info.owner,
        group: info.group,
        modified_at: info.modified_time.as_option().map_or(0, |t| t.seconds),
        symlink_target: info.symlink_target,
        ..Default::default()
    }
}

/// Re-chunks a byte stream into exactly [`CHUNK_SIZE`] pieces (the last may be shorter).
fn rechunk<S>(input: S) -> impl futures::Stream<Item = Result<Bytes, ConnectError>> + Send
where
    S: futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (input, BytesMut::new(), false),
        |(mut input, mut buf, mut done)| async move {
            loop {
                if buf.len() >= CHUNK_SIZE {
                    let chunk = buf.split_to(CHUNK_SIZE).freeze();
                    return Some((Ok(chunk), (input, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let chunk = buf.split().freeze();
                    return Some((Ok(chunk), (input, buf, done)));
                }
                match input.next().await {
                    Some(Ok(data)) => buf.extend_from_slice(&data),
                    Some(Err(e)) => {
                        // Report once, then end.
                        buf.clear();
                        done = true;
                        return Some((Err(transport_error(e)), (input, buf, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

impl<R: Runtime> AgentService<R> {
    fn files_url(&self, base: &str) -> String {
        format!("{base}/files")
    }

    async fn download(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<reqwest::Response, ConnectError> {
        check_path(path)?;
        let (_, envd) = self.envd(sandbox_id, false)?;
        let response = envd
            .http
            .get(self.files_url(&envd.base_url))
            .query(&[("path", path)])
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(http_error(path, response).await);
        }
        Ok(response)
    }

    async fn upload(
        &self,
        sandbox_id: &str,
        path: &str,
        body: reqwest::Body,
    ) -> Result<(), ConnectError> {
        let (_, envd) = self.envd(sandbox_id, false)?;
        let part = reqwest::multipart::Part::stream(body).file_name(file_name(path));
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = envd
            .http
            .post(self.files_url(&envd.base_url))
            .query(&[("path", path)])
            .multipart(form)
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(http_error(path, response).await);
        }
        Ok(())
    }

    pub(super) async fn read_file_impl(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Vec<u8>, ConnectError> {
        let response = self.download(sandbox_id, path).await?;
        let too_big = || {
            ConnectError::resource_exhausted(format!(
                "{path} is larger than {MAX_UNARY_FILE} bytes; use ReadFileStream"
            ))
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_UNARY_FILE as u64)
        {
            return Err(too_big());
        }
        let mut content = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(data) = body.next().await {
            let data = data.map_err(transport_error)?;
            if content.len() + data.len() > MAX_UNARY_FILE {
                return Err(too_big());
            }
            content.extend_from_slice(&data);
        }
        Ok(content)
    }

    pub(super) async fn write_file_impl(
        &self,
        sandbox_id: &str,
        path: &str,
        content: Vec<u8>,
    ) -> Result<(), ConnectError> {
        check_path(path)?;
        self.upload(sandbox_id, path, reqwest::Body::from(content))
            .await
    }

    pub(super) async fn read_file_stream_impl(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<ServiceStream<ReadFileStreamResponse>, ConnectError> {
        let response = self.download(sandbox_id, path).await?;
        let chunks = rechunk(response.bytes_stream().boxed()).map(|chunk| {
            chunk.map(|data| ReadFileStreamResponse {
                chunk: data.to_vec(),
                ..Default::default()
            })
        });
        Ok(Box::pin(chunks))
    }

    pub(super) async fn write_file_stream_impl(
        &self,
        mut requests: InboundStream<WriteFileStreamRequest>,
    ) -> Result<(), ConnectError> {
        let first = match requests.next().await {
            Some(message) => message?.to_owned_message(),
            None => return Err(ConnectError::invalid_argument("empty WriteFileStream")),
        };
        let Some(write_file_stream_request::Content::Meta(meta)) = first.content else {
            return Err(ConnectError::invalid_argument(
                "the first WriteFileStream message must carry meta (sandbox_id, path)",
            ));
        };
        check_path(&meta.path)?;
        // Fail before reading any data when the capsule is unknown or paused.
        self.envd(&meta.sandbox_id, false)?;

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(UPLOAD_QUEUE);
        let body_stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let upload = self.upload(
            &meta.sandbox_id,
            &meta.path,
            reqwest::Body::wrap_stream(body_stream),
        );
        let forward = async move {
            while let Some(message) = requests.next().await {
                let message = match message {
                    Ok(m) => m.to_owned_message(),
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return Err(e);
                    }
                };
                match message.content {
                    Some(write_file_stream_request::Content::Chunk(data)) => {
                        let sent = tx.send(Ok(Bytes::from(data))).await;
                        if sent.is_err() {
                            // envd stopped reading; the upload result says why.
                            return Ok(());
                        }
                    }
                    Some(write_file_stream_request::Content::Meta(_)) => {
                        let e = ConnectError::invalid_argument("meta may only be sent first");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return Err(e);
                    }
                    None => {}
                }
            }
            Ok(())
        };
        let (uploaded, forwarded) = tokio::join!(upload, forward);
        forwarded?;
        uploaded
    }

    pub(super) async fn list_dir_impl(
        &self,
        req: ListDirRequest,
    ) -> Result<ListDirResponse, ConnectError> {
        check_path(&req.path)?;
        let (_, envd) = self.envd(&req.sandbox_id, false)?;
        let list = envd
            .filesystem
            .list_dir(FsListDir {
                path: req.path,
                depth: req.depth.max(1),
                ..Default::default()
            })
            .await
            .map_err(super::envd_error)?
            .into_owned();
        Ok(ListDirResponse {
            entries: list.entries.into_iter().map(entry).collect(),
            ..Default::default()
        })
    }

    pub(super) async fn make_dir_impl(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<MakeDirResponse, ConnectError> {
        check_path(path)?;
        let (_, envd) = self.envd(sandbox_id, false)?;
        let made = envd
            .filesystem
            .make_dir(FsMakeDir {
                path: path.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(super::envd_error)?
            .into_owned();
        Ok(MakeDirResponse {
            entry: made.entry.into_option().map(entry).into(),
            ..Default::default()
        })
    }

    pub(super) async fn remove_path_impl(
        &self,
        sandbox_id: &str,
        path: &str,
    ) -> Result<(), ConnectError> {
        check_path(path)?;
        let (_, envd) = self.envd(sandbox_id, false)?;
        envd.filesystem
            .remove(FsRemove {
                path: path.to_owned(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(super::envd_error)
    }
}
