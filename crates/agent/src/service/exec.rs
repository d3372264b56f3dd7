//! Exec, ExecStream, StartBackground, ListProcesses, KillProcess, ConnectProcess: processes run
//! by the capsule's envd (never `runsc exec`: those break checkpoints).

use super::{AgentService, EnvdClient, as_user};
use crate::runtime::Runtime;
use connectrpc::{ConnectError, ServiceStream};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wrenn_proto::hostagent::v1::{
    ConnectProcessRequest, ConnectProcessResponse, ExecRequest, ExecResponse, ExecStreamData,
    ExecStreamEnd, ExecStreamRequest, ExecStreamResponse, ExecStreamStart, KillProcessRequest,
    ListProcessesResponse, ProcessEntry, StartBackgroundRequest, StartBackgroundResponse,
    connect_process_request, exec_stream_data, exec_stream_response, kill_process_request,
};
use wrenn_proto::process::process_event::Event;
use wrenn_proto::process::process_event::data_event::Output;
use wrenn_proto::process::process_selector::Selector;
use wrenn_proto::process::{
    ConnectRequest, ListRequest, ProcessConfig, ProcessEvent, ProcessSelector, SendSignalRequest,
    Signal, StartRequest,
};

/// Foreground exec timeout when the request gives none (spec §E).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest foreground exec timeout accepted (a day).
const MAX_EXEC_TIMEOUT_SEC: i32 = 86_400;
/// Starts the end-event error of a process killed at its deadline.
const TIMED_OUT: &str = "command timed out";
/// How long to wait for the end of envd's response after the process's end event.
const DRAIN_AFTER_END: Duration = Duration::from_millis(200);
/// Unary Exec buffers output; beyond this per stream it is cut (ExecStream has no limit).
const MAX_EXEC_OUTPUT: usize = 16 << 20;

pub(super) type Events = futures::stream::BoxStream<'static, Result<ProcessEvent, ConnectError>>;

/// Turns an envd Start/Connect response stream into a stream of process events.
macro_rules! envd_events {
    ($stream:expr) => {{
        let stream = $stream;
        futures::stream::unfold(Some(stream), |state| async move {
            let mut stream = state?;
            match stream.message().await {
                Ok(Some(message)) => {
                    let event = message.to_owned_message().event.into_option();
                    Some((Ok(event), Some(stream)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(super::envd_error(e)), None)),
            }
        })
        .filter_map(|item: Result<Option<wrenn_proto::process::ProcessEvent>, connectrpc::ConnectError>| async move {
            item.transpose()
        })
        .boxed()
    }};
}
pub(super) use envd_events;

/// A process config from the agent's cmd/args: a lone `cmd` with spaces and no args is a shell
/// command line (what a human or the control plane's one-liner exec sends).
pub(super) fn process_config<S>(
    cmd: &str,
    args: &[String],
    envs: &HashMap<String, String, S>,
    cwd: &str,
) -> Result<ProcessConfig, ConnectError> {
    if cmd.trim().is_empty() {
        return Err(ConnectError::invalid_argument("cmd is required"));
    }
    if cmd.contains('\0') || args.iter().any(|a| a.contains('\0')) {
        return Err(ConnectError::invalid_argument(
            "cmd and args must not contain NUL",
        ));
    }
    let (cmd, args) = if args.is_empty() && cmd.contains(char::is_whitespace) {
        ("/bin/sh".to_owned(), vec!["-c".to_owned(), cmd.to_owned()])
    } else {
        (cmd.to_owned(), args.to_vec())
    };
    Ok(ProcessConfig {
        cmd,
        args,
        envs: envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        cwd: (!cwd.is_empty()).then(|| cwd.to_owned()),
        ..Default::default()
    })
}

fn timeout_of(
    timeout_sec: i32,
    default: Option<Duration>,
) -> Result<Option<Duration>, ConnectError> {
    match timeout_sec {
        0 => Ok(default),
        1..=MAX_EXEC_TIMEOUT_SEC => Ok(Some(Duration::from_secs(timeout_sec as u64))),
        other => Err(ConnectError::invalid_argument(format!(
            "timeout_sec must be 0..={MAX_EXEC_TIMEOUT_SEC}, got {other}"
        ))),
    }
}

pub(super) async fn kill(
    envd: &EnvdClient,
    selector: Selector,
    signal: Signal,
) -> Result<(), ConnectError> {
    envd.process
        .send_signal(SendSignalRequest {
            process: ProcessSelector {
                selector: Some(selector),
                ..Default::default()
            }
            .into(),
            signal: signal.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(super::envd_error)
}

fn push_capped(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_EXEC_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Maps an envd process event to the agent's exec stream event.
fn exec_event(event: ProcessEvent) -> Option<exec_stream_response::Event> {
    match event.event? {
        Event::Start(start) => Some(exec_stream_response::Event::Start(Box::new(
            ExecStreamStart {
                pid: start.pid,
                ..Default::default()
            },
        ))),
        Event::Data(data) => {
            let output = match data.output? {
                Output::Stdout(b) | Output::Pty(b) => exec_stream_data::Output::Stdout(b),
                Output::Stderr(b) => exec_stream_data::Output::Stderr(b),
            };
            Some(exec_stream_response::Event::Data(Box::new(
                ExecStreamData {
                    output: Some(output),
                    ..Default::default()
                },
            )))
        }
        Event::End(end) => Some(exec_stream_response::Event::End(Box::new(ExecStreamEnd {
            exit_code: end.exit_code,
            error: end.error.unwrap_or_default(),
            ..Default::default()
        }))),
        Event::Keepalive(_) => None,
    }
}

fn end_event(exit_code: i32, error: String) -> exec_stream_response::Event {
    exec_stream_response::Event::End(Box::new(ExecStreamEnd {
        exit_code,
        error,
        ..Default::default()
    }))
}

/// Forwards mapped events until the end event; with a deadline, kills the process when it
/// passes and ends the stream with an error event.
fn exec_events(
    envd: Arc<EnvdClient>,
    events: Events,
    deadline: Option<Duration>,
) -> futures::stream::BoxStream<'static, Result<exec_stream_response::Event, ConnectError>> {
    struct State {
        envd: Arc<EnvdClient>,
        events: Events,
        deadline: Option<tokio::time::Instant>,
        limit: Option<Duration>,
        pid: Option<u32>,
        done: bool,
    }
    let state = State {
        envd,
        events,
        deadline: deadline.map(|d| tokio::time::Instant::now() + d),
        limit: deadline,
        pid: None,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let next = match s.deadline {
                Some(at) => match tokio::time::timeout_at(at, s.events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        s.done = true;
                        if let Some(pid) = s.pid {
                            let _ = kill(&s.envd, Selector::Pid(pid), Signal::SIGNAL_SIGKILL).await;
                        }
                        let limit = s.limit.unwrap_or_default();
                        let event = end_event(
                            -1,
                            format!("{TIMED_OUT} after {}s and was killed", limit.as_secs()),
                        );
                        return Some((Ok(event), s));
                    }
                },
                None => s.events.next().await,
            };
            match next {
                None => return None,
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Some(Ok(event)) => {
                    if let Some(Event::Start(start)) = &event.event {
                        s.pid = Some(start.pid);
                    }
                    let is_end = matches!(event.event, Some(Event::End(_)));
                    if is_end {
                        // Read the response to its end (envd sends the end-of-stream frame right
                        // after): a connection dropped mid-body is closed, not pooled, and a new
                        // one per Exec cost a TCP handshake and an accept inside the sandbox.
                        let drain = async { while s.events.next().await.is_some() {} };
                        let _ = tokio::time::timeout(DRAIN_AFTER_END, drain).await;
                    }
                    if let Some(mapped) = exec_event(event) {
                        s.done = is_end;
                        return Some((Ok(mapped), s));
                    }
                }
            }
        }
    })
    .boxed()
}

impl<R: Runtime> AgentService<R> {
    pub(super) async fn exec_impl(&self, req: ExecRequest) -> Result<ExecResponse, ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        let config = process_config(&req.cmd, &req.args, &req.envs, &req.cwd)?;
        let timeout = timeout_of(req.timeout_sec, Some(DEFAULT_EXEC_TIMEOUT))?
            .unwrap_or(DEFAULT_EXEC_TIMEOUT);
        let stream = envd
            .process
            .start_with_options(
                StartRequest {
                    process: config.into(),
                    stdin: Some(false),
                    ..Default::default()
                },
                as_user(&req.user),
            )
            .await
            .map_err(super::envd_error)?;
        let mut events = exec_events(envd, envd_events!(stream), Some(timeout));
        let mut response = ExecResponse::default();
        while let Some(event) = events.next().await {
            match event? {
                exec_stream_response::Event::Data(data) => match data.output {
                    Some(exec_stream_data::Output::Stdout(b)) => {
                        push_capped(&mut response.stdout, &b)
                    }
                    Some(exec_stream_data::Output::Stderr(b)) => {
                        push_capped(&mut response.stderr, &b)
                    }
                    None => {}
                },
                exec_stream_response::Event::End(end) => {
                    if end.error.starts_with(TIMED_OUT) {
                        return Err(ConnectError::deadline_exceeded(format!(
                            "{}: {}",
                            end.error, req.cmd
                        )));
                    }
                    response.exit_code = end.exit_code;
                    return Ok(response);
                }
                exec_stream_response::Event::Start(_) => {}
            }
        }
        Err(ConnectError::unavailable(
            "envd closed the process stream without an end event",
        ))
    }

    pub(super) async fn exec_stream_impl(
        &self,
        req: ExecStreamRequest,
    ) -> Result<ServiceStream<ExecStreamResponse>, ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        let config = process_config(&req.cmd, &req.args, &req.envs, &req.cwd)?;
        let timeout = timeout_of(req.timeout_sec, None)?;
        let stream = envd
            .process
            .start_with_options(
                StartRequest {
                    process: config.into(),
                    stdin: Some(false),
                    ..Default::default()
                },
                as_user(&req.user),
            )
            .await
            .map_err(super::envd_error)?;
        let events = exec_events(envd, envd_events!(stream), timeout).map(|e| {
            e.map(|event| ExecStreamResponse {
                event: Some(event),
                ..Default::default()
            })
        });
        Ok(Box::pin(events))
    }

    pub(super) async fn start_background_impl(
        &self,
        req: StartBackgroundRequest,
    ) -> Result<StartBackgroundResponse, ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        let config = process_config(&req.cmd, &req.args, &req.envs, &req.cwd)?;
        let stream = envd
            .process
            .start_with_options(
                StartRequest {
                    process: config.into(),
                    tag: (!req.tag.is_empty()).then(|| req.tag.clone()),
                    stdin: Some(false),
                    ..Default::default()
                },
                as_user(&req.user),
            )
            .await
            .map_err(super::envd_error)?;
        let mut events = envd_events!(stream);
        // The first event is the start; dropping the stream detaches (envd keeps the process).
        while let Some(event) = events.next().await {
            if let Some(Event::Start(start)) = event?.event {
                return Ok(StartBackgroundResponse {
                    pid: start.pid,
                    tag: req.tag,
                    ..Default::default()
                });
            }
        }
        Err(ConnectError::unavailable(
            "envd closed the process stream before the start event",
        ))
    }

    pub(super) async fn list_processes_impl(
        &self,
        sandbox_id: &str,
    ) -> Result<ListProcessesResponse, ConnectError> {
        let (_, envd) = self.envd(sandbox_id, true)?;
        let list = envd
            .process
            .list(ListRequest::default())
            .await
            .map_err(super::envd_error)?
            .into_owned();
        let processes = list
            .processes
            .into_iter()
            .map(|p| {
                let config = p.config.into_option().unwrap_or_default();
                ProcessEntry {
                    pid: p.pid,
                    tag: p.tag.unwrap_or_default(),
                    cmd: config.cmd,
                    args: config.args,
                    ..Default::default()
                }
            })
            .collect();
        Ok(ListProcessesResponse {
            processes,
            ..Default::default()
        })
    }

    pub(super) async fn kill_process_impl(
        &self,
        req: KillProcessRequest,
    ) -> Result<(), ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        let selector = match req.selector {
            Some(kill_process_request::Selector::Pid(pid)) => Selector::Pid(pid),
            Some(kill_process_request::Selector::Tag(tag)) if !tag.is_empty() => Selector::Tag(tag),
            _ => return Err(ConnectError::invalid_argument("pid or tag is required")),
        };
        let signal = match req.signal.to_ascii_uppercase().as_str() {
            "" | "SIGKILL" | "KILL" => Signal::SIGNAL_SIGKILL,
            "SIGTERM" | "TERM" => Signal::SIGNAL_SIGTERM,
            other => {
                return Err(ConnectError::invalid_argument(format!(
                    "signal must be SIGTERM or SIGKILL, got {other:?}"
                )));
            }
        };
        kill(&envd, selector, signal).await
    }

    pub(super) async fn connect_process_impl(
        &self,
        req: ConnectProcessRequest,
    ) -> Result<ServiceStream<ConnectProcessResponse>, ConnectError> {
        let (_, envd) = self.envd(&req.sandbox_id, true)?;
        let selector = match req.selector {
            Some(connect_process_request::Selector::Pid(pid)) => Selector::Pid(pid),
            Some(connect_process_request::Selector::Tag(tag)) if !tag.is_empty() => {
                Selector::Tag(tag)
            }
            _ => return Err(ConnectError::invalid_argument("pid or tag is required")),
        };
        let stream = envd
            .process
            .connect(ConnectRequest {
                process: ProcessSelector {
                    selector: Some(selector),
                    ..Default::default()
                }
                .into(),
                ..Default::default()
            })
            .await
            .map_err(super::envd_error)?;
        let events = exec_events(envd, envd_events!(stream), None).map(|e| {
            e.map(|event| ConnectProcessResponse {
                event: Some(match event {
                    exec_stream_response::Event::Start(s) => {
                        wrenn_proto::hostagent::v1::connect_process_response::Event::Start(s)
                    }
                    exec_stream_response::Event::Data(d) => {
                        wrenn_proto::hostagent::v1::connect_process_response::Event::Data(d)
                    }
                    exec_stream_response::Event::End(e) => {
                        wrenn_proto::hostagent::v1::connect_process_response::Event::End(e)
                    }
                }),
                ..Default::default()
            })
        });
        Ok(Box::pin(events))
    }
}
