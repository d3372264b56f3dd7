//! RPC glue: decodes requests, applies them to the [`Manager`], encodes replies.

use super::error::ProcessError;
use super::events;
use super::manager::Manager;
use super::output::Attach;
use super::registry::Found;
use super::spawn::PtySize;
use crate::state::Envd;
use connectrpc::{
    ConnectError, InboundStream, RequestContext, Response, ServiceRequest, ServiceResult,
    ServiceStream,
};
use futures::StreamExt;
use nix::sys::signal::Signal as NixSignal;
use std::sync::Arc;
use wrenn_proto::process::process_input::Input;
use wrenn_proto::process::process_selector::Selector;
use wrenn_proto::process::{
    CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
    ListResponse, PTY, Process, ProcessInfo, ProcessInput, ProcessSelector, SendInputRequest,
    SendInputResponse, SendSignalRequest, SendSignalResponse, Signal, StartRequest, StartResponse,
    StreamInputRequest, StreamInputResponse, UpdateRequest, UpdateResponse, stream_input_request,
};

/// Terminal size when a PTY is requested without one.
const DEFAULT_PTY: PtySize = PtySize { cols: 80, rows: 24 };

pub struct ProcessService {
    envd: Envd,
    manager: Arc<Manager>,
}

impl ProcessService {
    pub fn new(envd: Envd) -> Self {
        Self {
            envd,
            manager: Manager::global(),
        }
    }
}

fn selector(field: Option<&ProcessSelector>) -> Result<&Selector, ProcessError> {
    field.and_then(|s| s.selector.as_ref()).ok_or_else(|| {
        ProcessError::InvalidArgument("process selector (pid or tag) is required".to_owned())
    })
}

fn pty_size(pty: &PTY) -> Result<PtySize, ProcessError> {
    let Some(size) = pty.size.as_option() else {
        return Ok(DEFAULT_PTY);
    };
    let dim = |v: u32, what: &str| {
        u16::try_from(v)
            .map_err(|_| ProcessError::InvalidArgument(format!("pty {what} {v} is too large")))
    };
    match (dim(size.cols, "cols")?, dim(size.rows, "rows")?) {
        (0, 0) => Ok(DEFAULT_PTY),
        (0, _) | (_, 0) => Err(ProcessError::InvalidArgument(
            "pty cols and rows must both be positive".to_owned(),
        )),
        (cols, rows) => Ok(PtySize { cols, rows }),
    }
}

fn signal(value: &buffa::EnumValue<Signal>) -> Result<NixSignal, ProcessError> {
    match value.as_known() {
        Some(Signal::SIGNAL_SIGTERM) => Ok(NixSignal::SIGTERM),
        Some(Signal::SIGNAL_SIGKILL) => Ok(NixSignal::SIGKILL),
        _ => Err(ProcessError::InvalidArgument(format!(
            "unsupported signal {}: use SIGNAL_SIGTERM or SIGNAL_SIGKILL",
            value.to_i32()
        ))),
    }
}

fn event_stream<T: Send + 'static>(
    pid: u32,
    attach: Attach,
    ctx: &RequestContext,
    wrap: fn(wrenn_proto::process::ProcessEvent) -> T,
) -> ServiceStream<T> {
    let keepalive = events::keepalive_interval(ctx.headers());
    // Fused: polling past the end must keep yielding None, never panic.
    Box::pin(
        events::process_events(pid, attach, keepalive)
            .map(move |e| e.map(wrap))
            .fuse(),
    )
}

impl ProcessService {
    async fn send_input_to(
        &self,
        selector: &Selector,
        input: Option<&ProcessInput>,
    ) -> Result<(), ProcessError> {
        let proc = self.manager.registry.get_running(selector)?;
        match input.and_then(|i| i.input.as_ref()) {
            Some(Input::Stdin(data)) => proc.write_stdin(data).await,
            Some(Input::Pty(data)) => proc.write_pty(data).await,
            None => Ok(()),
        }
    }
}

// Handlers name their concrete reply types rather than the trait's `impl Encodable`.
#[allow(refining_impl_trait)]
impl Process for ProcessService {
    async fn list(
        &self,
        _ctx: RequestContext,
        _req: ServiceRequest<'_, ListRequest>,
    ) -> ServiceResult<ListResponse> {
        let processes = self
            .manager
            .registry
            .list()
            .into_iter()
            .map(|p| ProcessInfo {
                config: p.config.clone().into(),
                pid: p.pid,
                tag: p.tag.clone(),
                ..Default::default()
            })
            .collect();
        Response::ok(ListResponse {
            processes,
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ConnectRequest>,
    ) -> ServiceResult<ServiceStream<ConnectResponse>> {
        let req = request.to_owned_message();
        let selector = selector(req.process.as_option())?;
        let (pid, attach) = match self.manager.registry.find(selector)? {
            Found::Running(proc) => (proc.pid, proc.hub.subscribe()),
            Found::Finished { pid, end } => (pid, Attach::Finished(end)),
        };
        Ok(Response::new(event_stream(pid, attach, &ctx, |e| {
            ConnectResponse {
                event: e.into(),
                ..Default::default()
            }
        })))
    }

    async fn start(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StartRequest>,
    ) -> ServiceResult<ServiceStream<StartResponse>> {
        let req = request.to_owned_message();
        let Some(config) = req.process.into_option() else {
            return Err(
                ProcessError::InvalidArgument("process config is required".to_owned()).into(),
            );
        };
        let pty = req.pty.as_option().map(pty_size).transpose()?;
        let user = crate::auth::user_from_headers(ctx.headers());
        let spec = Manager::plan(
            &self.envd,
            user.as_deref(),
            &config,
            pty,
            req.stdin.unwrap_or(true),
        )?;
        let tag = req.tag.filter(|t| !t.is_empty());
        // As in E2B, the call's timeout (Connect-Timeout-Ms) bounds the
        // process's life; without one it runs until it exits or is signalled.
        let (proc, sub) = self
            .manager
            .start(config, tag, spec, true, ctx.deadline())?;
        let attach = match sub {
            Some(sub) => Attach::Live(sub),
            None => proc.hub.subscribe(),
        };
        Ok(Response::new(event_stream(proc.pid, attach, &ctx, |e| {
            StartResponse {
                event: e.into(),
                ..Default::default()
            }
        })))
    }

    async fn update(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, UpdateRequest>,
    ) -> ServiceResult<UpdateResponse> {
        let req = request.to_owned_message();
        let proc = self
            .manager
            .registry
            .get_running(selector(req.process.as_option())?)?;
        if let Some(pty) = req.pty.as_option() {
            let size = pty_size(pty)?;
            let Some(master) = proc.pty() else {
                return Err(ProcessError::FailedPrecondition(format!(
                    "process {} has no pty to resize",
                    proc.pid
                ))
                .into());
            };
            master.resize(size.cols, size.rows).map_err(|e| {
                ProcessError::io(format!("resizing the pty of process {}", proc.pid), e)
            })?;
        }
        Response::ok(UpdateResponse::default())
    }

    async fn stream_input(
        &self,
        _ctx: RequestContext,
        mut requests: InboundStream<StreamInputRequest>,
    ) -> ServiceResult<StreamInputResponse> {
        let mut target: Option<Selector> = None;
        while let Some(msg) = requests.next().await {
            let msg = msg?.to_owned_message();
            match msg.event {
                Some(stream_input_request::Event::Start(start)) => {
                    if target.is_some() {
                        return Err(ConnectError::invalid_argument(
                            "StreamInput got a second start event",
                        ));
                    }
                    let sel = selector(start.process.as_option())?.clone();
                    // Fail fast on an unknown process, before any data arrives.
                    self.manager.registry.get_running(&sel)?;
                    target = Some(sel);
                }
                Some(stream_input_request::Event::Data(data)) => {
                    let Some(sel) = &target else {
                        return Err(ConnectError::invalid_argument(
                            "StreamInput must start with a start event naming the process",
                        ));
                    };
                    self.send_input_to(sel, data.input.as_option()).await?;
                }
                Some(stream_input_request::Event::Keepalive(_)) | None => {}
            }
        }
        Response::ok(StreamInputResponse::default())
    }

    async fn send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendInputRequest>,
    ) -> ServiceResult<SendInputResponse> {
        let req = request.to_owned_message();
        let sel = selector(req.process.as_option())?;
        self.send_input_to(sel, req.input.as_option()).await?;
        Response::ok(SendInputResponse::default())
    }

    async fn send_signal(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, SendSignalRequest>,
    ) -> ServiceResult<SendSignalResponse> {
        let req = request.to_owned_message();
        let sig = signal(&req.signal)?;
        let proc = self
            .manager
            .registry
            .get_running(selector(req.process.as_option())?)?;
        match self.manager.reaper.signal(proc.pid, sig) {
            Ok(true) => Response::ok(SendSignalResponse::default()),
            Ok(false) => Err(ProcessError::NotFound(format!(
                "process {} has already exited",
                proc.pid
            ))
            .into()),
            Err(e) => {
                Err(ProcessError::io(format!("signalling process {}", proc.pid), e.into()).into())
            }
        }
    }

    async fn close_stdin(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CloseStdinRequest>,
    ) -> ServiceResult<CloseStdinResponse> {
        let req = request.to_owned_message();
        let proc = self
            .manager
            .registry
            .get_running(selector(req.process.as_option())?)?;
        proc.close_stdin().await?;
        Response::ok(CloseStdinResponse::default())
    }
}
