//! PtyAttach, PtySendInput, PtyResize, PtyKill: terminals are envd processes with a PTY,
//! addressed by tag so a client can drop its stream and reattach later.

use super::exec::{Events, envd_events, kill, process_config};
use super::{AgentService, as_user};
use crate::runtime::Runtime;
use connectrpc::{ConnectError, ServiceStream};
use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use wrenn_proto::hostagent::v1::{
    PtyAttachRequest, PtyAttachResponse, PtyExited, PtyOutput, PtyResizeRequest,
    PtySendInputRequest, PtyStarted, pty_attach_response,
};
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::process_event::data_event::Output;
use wrenn_proto::process::process_input::Input;
use wrenn_proto::process::process_selector::Selector;
use wrenn_proto::process::{
    ConnectRequest, PTY, ProcessInput, ProcessSelector, SendInputRequest, Signal, StartRequest,
    UpdateRequest,
};

const DEFAULT_COLS: u32 = 80;
const DEFAULT_ROWS: u32 = 24;
const MAX_DIM: u32 = 4096;

fn size(cols: u32, rows: u32) -> Result<PTY, ConnectError> {
    let (cols, rows) = match (cols, rows) {
        (0, 0) => (DEFAULT_COLS, DEFAULT_ROWS),
        (1..=MAX_DIM, 1..=MAX_DIM) => (cols, rows),
        _ => {
            return Err(ConnectError::invalid_argument(format!(
                "cols and rows must both be 1..={MAX_DIM} (or both 0 for 80x24), got {cols}x{rows}"
            )));
        }
    };
    Ok(PTY {
        size: wrenn_proto::process::pty::Size {
            cols,
            rows,
            ..Default::default()
        }
        .into(),
        ..Default::default()
    })
}

fn tag_selector(tag: &str) -> Result<ProcessSelector, ConnectError> {
    if tag.is_empty() {
        return Err(ConnectError::invalid_argument("tag is required"));
    }
    Ok(ProcessSelector {
        selector: Some(Selector::Tag(tag.to_owned())),
        ..Default::default()
    })
}

/// A tag unique within this agent's lifetime for PTYs started without one.
fn fresh_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("pty-{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn pty_events(events: Events, tag: String) -> ServiceStream<PtyAttachResponse> {
    let stream = events.filter_map(move |item| {
        let tag = tag.clone();
        async move {
            let event = match item {
                Err(e) => return Some(Err(e)),
                Ok(event) => event.event?,
            };
            let mapped = match event {
                Event::Start(start) => pty_attach_response::Event::Started(Box::new(PtyStarted {
                    pid: start.pid,
                    tag,
                    ..Default::default()
                })),
                Event::Data(data) => match data.output? {
                    Output::Pty(b) | Output::Stdout(b) | Output::Stderr(b) => {
                        pty_attach_response::Event::Output(Box::new(PtyOutput {
                            data: b,
                            ..Default::default()
                        }))
                    }
                },
                Event::End(end) => pty_attach_response::Event::Exited(Box::new(PtyExited {
                    exit_code: end.exit_code,
                    error: end.error.unwrap_or_default(),
                    ..Default::default()
                })),
                Event::Keepalive(_) => return None,
            };
            Some(Ok(PtyAttachResponse {
                event: Some(mapped),
                ..Default::default()
            }))
        }
    });
    Box::pin(stream)
}

impl<R: Runtime> AgentService<R> {
    pub(super) async fn pty_attach_impl(
        &self,
        req: PtyAttachRequest,
    ) -> Result<ServiceStream<PtyAttachResponse>, ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        if req.cmd.is_empty() {
            let stream = envd
                .process
                .connect(ConnectRequest {
                    process: tag_selector(&req.tag)?.into(),
                    ..Default::default()
                })
                .await
                .map_err(super::envd_error)?;
            return Ok(pty_events(envd_events!(stream), req.tag));
        }
        let tag = if req.tag.is_empty() {
            fresh_tag()
        } else {
            req.tag.clone()
        };
        let mut envs = req.envs.clone();
        envs.entry("TERM".to_owned())
            .or_insert_with(|| "xterm-256color".to_owned());
        let config = process_config(&req.cmd, &req.args, &envs, &req.cwd)?;
        let stream = envd
            .process
            .start_with_options(
                StartRequest {
                    process: config.into(),
                    pty: size(req.cols, req.rows)?.into(),
                    tag: Some(tag.clone()),
                    ..Default::default()
                },
                as_user(&req.user),
            )
            .await
            .map_err(super::envd_error)?;
        Ok(pty_events(envd_events!(stream), tag))
    }

    pub(super) async fn pty_send_input_impl(
        &self,
        req: PtySendInputRequest,
    ) -> Result<(), ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        envd.process
            .send_input(SendInputRequest {
                process: tag_selector(&req.tag)?.into(),
                input: ProcessInput {
                    input: Some(Input::Pty(req.data)),
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(super::envd_error)
    }

    pub(super) async fn pty_resize_impl(&self, req: PtyResizeRequest) -> Result<(), ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        if req.cols == 0 || req.rows == 0 {
            return Err(ConnectError::invalid_argument(
                "cols and rows must be positive",
            ));
        }
        envd.process
            .update(UpdateRequest {
                process: tag_selector(&req.tag)?.into(),
                pty: size(req.cols, req.rows)?.into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(super::envd_error)
    }

    pub(super) async fn pty_kill_impl(
        &self,
        sandbox_id: &str,
        tag: &str,
    ) -> Result<(), ConnectError> {
        let (_, envd) = self.envd(sandbox_id, true)?;
        tag_selector(tag)?;
        kill(&envd, Selector::Tag(tag.to_owned()), Signal::SIGNAL_SIGKILL).await
    }
}
