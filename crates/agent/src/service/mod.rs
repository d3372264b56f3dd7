//! The host agent's Connect service, `hostagent.v1.HostAgentService` (spec §E).
//!
//! The agent serves Connect (connectrpc) with the proto and JSON codecs, the same technology
//! envd uses, so one stack covers control plane → agent → envd. Every capsule operation is
//! forwarded to that capsule's envd: processes and PTYs over envd's `process.Process`,
//! directory operations over `filesystem.Filesystem`, file contents over envd's HTTP `/files`
//! (streamed in both directions, never buffered whole). One pooled client per capsule is built on
//! first use and dropped on destroy, so a re-adopted capsule gets a fresh one.
//!
//! Handlers are split by concern: [`sandbox`] (lifecycle, list, ping, terminate), [`exec`]
//! (foreground/streamed/background processes), [`files`], [`pty`], [`lifecycle`] (pause/resume,
//! snapshot templates, metrics). Errors are Connect codes ([`capsule_error`]); request paths
//! never panic.
//!
//! The service also owns the per-capsule bookkeeping the other modules need kept in step:
//! the inactivity timer ([`Ttl`]), the metrics sampler ([`Metrics`]) and the port proxy's
//! connection tracker ([`Connections`]); [`AgentService::proxy`] builds the proxy over the
//! registry and [`AgentService::spawn_background`] starts the sampler and the TTL reaper.

mod exec;
mod files;
mod lifecycle;
mod pty;
mod sandbox;

use crate::capsule::{CapsuleError, CapsuleStatus, Capsules};
use crate::id::CapsuleId;
use crate::metrics::Metrics;
use crate::network::NetworkError;
use crate::proxy::{Connections, Proxy, ProxyRefusal};
use crate::runtime::Runtime;
use crate::ttl::Ttl;
use connectrpc::ConnectError;
use connectrpc::client::{CallOptions, ClientConfig, HttpClient};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wrenn_proto::filesystem::FilesystemClient;
use wrenn_proto::process::ProcessClient;

pub use exec::DEFAULT_EXEC_TIMEOUT;
pub use files::CHUNK_SIZE;
pub use lifecycle::Background;

/// A capsule in the middle of a pause/resume/snapshot: the proxy answers 503 and envd calls
/// are refused until it settles. Keyed by id, the value is the status shown to callers.
type Transitions = Arc<Mutex<HashMap<CapsuleId, &'static str>>>;

/// Clients for one capsule's envd. Their connection pools belong to the capsule alone, so
/// dropping this (destroy, and before a pause: open TCP connections block a checkpoint) closes
/// every host-side connection to it.
pub struct EnvdClient {
    pub process: ProcessClient<HttpClient>,
    pub filesystem: FilesystemClient<HttpClient>,
    /// For `/files` and `/init`.
    pub http: reqwest::Client,
    /// `http://<capsule ip>:49983`
    pub base_url: String,
}

impl EnvdClient {
    fn new(base_url: String) -> Result<Self, ConnectError> {
        let uri = base_url
            .parse()
            .map_err(|e| ConnectError::internal(format!("envd url {base_url}: {e}")))?;
        let config = ClientConfig::new(uri);
        let http = HttpClient::plaintext();
        Ok(Self {
            process: ProcessClient::new(http.clone(), config.clone()),
            filesystem: FilesystemClient::new(http, config),
            http: reqwest::Client::new(),
            base_url,
        })
    }
}

/// Call options that run the envd call as `user` (envd reads the Basic auth user name).
fn as_user(user: &str) -> CallOptions {
    use base64::Engine;
    let options = CallOptions::default();
    if user.is_empty() {
        return options;
    }
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:"));
    match http_value(&format!("Basic {token}")) {
        Some(value) => options.with_header(http_name("authorization"), value),
        None => options,
    }
}

fn http_name(name: &'static str) -> axum::http::HeaderName {
    axum::http::HeaderName::from_static(name)
}

fn http_value(value: &str) -> Option<axum::http::HeaderValue> {
    axum::http::HeaderValue::from_str(value).ok()
}

pub struct AgentService<R: Runtime> {
    capsules: Arc<Capsules<R>>,
    clients: Mutex<HashMap<CapsuleId, Arc<EnvdClient>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    metrics: Metrics,
    ttl: Ttl,
    connections: Connections,
    transitions: Transitions,
}

impl<R: Runtime> AgentService<R> {
    pub fn new(capsules: Arc<Capsules<R>>) -> Self {
        Self::with_parts(capsules, Metrics::new(), Ttl::new())
    }

    /// With a given sampler and timer (tests use a fake clock or cgroup layout).
    pub fn with_parts(capsules: Arc<Capsules<R>>, metrics: Metrics, ttl: Ttl) -> Self {
        Self {
            capsules,
            clients: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::watch::channel(false).0,
            metrics,
            ttl,
            connections: Connections::default(),
            transitions: Arc::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn ttl(&self) -> &Ttl {
        &self.ttl
    }

    /// The port proxy over this service's registry: running → its IP; pausing, paused or
    /// resuming → 503; unknown → 404. Shares the service's connection tracker, so a pause
    /// drains it. Mount with `proxy::router(agent.proxy())`.
    pub fn proxy(&self) -> Arc<Proxy<ProxyResolver<R>>> {
        Arc::new(Proxy::with_connections(
            ProxyResolver {
                capsules: self.capsules.clone(),
                transitions: self.transitions.clone(),
            },
            self.connections.clone(),
        ))
    }

    fn transition(&self, id: &CapsuleId) -> Option<&'static str> {
        self.transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    pub fn capsules(&self) -> &Arc<Capsules<R>> {
        &self.capsules
    }

    /// Resolves when `Terminate` has destroyed every capsule and the process should exit.
    pub async fn terminated(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// The envd clients of a running capsule (and records activity when `touch`).
    fn envd(
        &self,
        raw_id: &str,
        touch: bool,
    ) -> Result<(CapsuleId, Arc<EnvdClient>), ConnectError> {
        let id = parse_id(raw_id)?;
        let capsule = self.capsules.running(&id).map_err(capsule_error)?;
        // A pause quiesces envd and drops the pooled clients: nothing may open new ones.
        if let Some(state) = self.transition(&id) {
            return Err(ConnectError::failed_precondition(format!(
                "capsule {id} is {state}"
            )));
        }
        if touch {
            self.ttl.touch(&id);
            if let Err(e) = self.capsules.touch(&id) {
                tracing::warn!(%id, error = %e, "recording activity");
            }
        }
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&id) {
            return Ok((id, client.clone()));
        }
        let client = Arc::new(EnvdClient::new(capsule.envd_url())?);
        clients.insert(id.clone(), client.clone());
        Ok((id, client))
    }

    /// Drops a capsule's envd clients and their connections (destroy; pause, before quiescing).
    pub fn forget_client(&self, id: &CapsuleId) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The proxy's view of the registry (see [`AgentService::proxy`]).
pub struct ProxyResolver<R: Runtime> {
    capsules: Arc<Capsules<R>>,
    transitions: Transitions,
}

impl<R: Runtime> crate::proxy::Resolve for ProxyResolver<R> {
    fn resolve(&self, id: &CapsuleId) -> Result<std::net::Ipv4Addr, ProxyRefusal> {
        let capsule = self
            .capsules
            .get(id)
            .ok_or_else(|| ProxyRefusal::NotFound(id.clone()))?;
        let transition = self
            .transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        match (transition, capsule.state.status) {
            (Some(state), _) => Err(ProxyRefusal::Unavailable {
                id: id.clone(),
                state: state.to_owned(),
            }),
            (None, CapsuleStatus::Running) => Ok(capsule.network.capsule_ip()),
            (None, status) => Err(ProxyRefusal::Unavailable {
                id: id.clone(),
                state: status.as_str().to_owned(),
            }),
        }
    }
}

/// Plain HTTP routes served next to the Connect API.
pub type HttpRoutes = axum::Router;

/// One app for the agent's listener: plain HTTP routes first (pass the port proxy's
/// `/proxy/{id}/{port}/...` router, or `axum::Router::new()`), everything else is the Connect
/// service.
pub fn router<R: Runtime>(
    service: Arc<AgentService<R>>,
    http_routes: axum::Router,
) -> axum::Router {
    let connect = connectrpc::Router::new().add_service(service);
    http_routes.fallback_service(connect.into_axum_service())
}

/// Serves `app` until `shutdown` resolves (in-flight requests finish first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connect info gives the proxy the peer address for X-Forwarded-For.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

pub fn parse_id(raw: &str) -> Result<CapsuleId, ConnectError> {
    raw.parse::<CapsuleId>()
        .map_err(|e| ConnectError::invalid_argument(e.to_string()))
}

/// Maps agent errors to Connect codes.
pub fn capsule_error(error: CapsuleError) -> ConnectError {
    let message = error.to_string();
    match error {
        CapsuleError::InvalidRequest(_) | CapsuleError::InvalidTemplate(_) => {
            ConnectError::invalid_argument(message)
        }
        CapsuleError::TemplateMissing { .. } | CapsuleError::NotFound(_) => {
            ConnectError::not_found(message)
        }
        CapsuleError::AlreadyExists(_) => ConnectError::already_exists(message),
        CapsuleError::Paused(_) => ConnectError::failed_precondition(message),
        CapsuleError::Network(NetworkError::SlotsExhausted(_)) => {
            ConnectError::resource_exhausted(message)
        }
        CapsuleError::EnvdUnhealthy { .. } => ConnectError::unavailable(message),
        _ => ConnectError::internal(message),
    }
}

/// An error from a capsule's envd, code kept (NotFound process, InvalidArgument cwd, …).
fn envd_error(error: ConnectError) -> ConnectError {
    let message = format!(
        "envd: {}",
        error.message.as_deref().unwrap_or(error.code.as_str())
    );
    ConnectError::new(error.code, message)
}

/// Rejects file paths envd could not use; `..` is allowed since the capsule is the boundary.
fn check_path(path: &str) -> Result<(), ConnectError> {
    if path.is_empty() {
        return Err(ConnectError::invalid_argument("path is required"));
    }
    if path.len() > 4096 || path.contains('\0') {
        return Err(ConnectError::invalid_argument(
            "path must be at most 4096 bytes without NUL characters",
        ));
    }
    Ok(())
}

use connectrpc::{
    InboundStream, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use wrenn_proto::hostagent::v1::*;

// Handlers name their concrete reply types rather than the trait's `impl Encodable`.
#[allow(refining_impl_trait)]
impl<R: Runtime> HostAgentService for AgentService<R> {
    async fn create_sandbox(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CreateSandboxRequest>,
    ) -> ServiceResult<CreateSandboxResponse> {
        Response::ok(self.create_impl(request.to_owned_message()).await?)
    }

    async fn destroy_sandbox(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, DestroySandboxRequest>,
    ) -> ServiceResult<DestroySandboxResponse> {
        self.destroy_impl(&request.to_owned_message().sandbox_id)
            .await?;
        Response::ok(DestroySandboxResponse::default())
    }

    async fn pause_sandbox(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PauseSandboxRequest>,
    ) -> ServiceResult<PauseSandboxResponse> {
        self.pause_impl(&request.to_owned_message().sandbox_id)
            .await?;
        Response::ok(PauseSandboxResponse::default())
    }

    async fn resume_sandbox(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ResumeSandboxRequest>,
    ) -> ServiceResult<ResumeSandboxResponse> {
        Response::ok(self.resume_impl(request.to_owned_message()).await?)
    }

    async fn exec(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ExecRequest>,
    ) -> ServiceResult<ExecResponse> {
        Response::ok(self.exec_impl(request.to_owned_message()).await?)
    }

    async fn exec_stream(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ExecStreamRequest>,
    ) -> ServiceResult<ServiceStream<ExecStreamResponse>> {
        Ok(Response::new(
            self.exec_stream_impl(request.to_owned_message()).await?,
        ))
    }

    async fn list_sandboxes(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, ListSandboxesRequest>,
    ) -> ServiceResult<ListSandboxesResponse> {
        Response::ok(self.list_impl())
    }

    async fn write_file(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, WriteFileRequest>,
    ) -> ServiceResult<WriteFileResponse> {
        let req = request.to_owned_message();
        self.write_file_impl(&req.sandbox_id, &req.path, req.content)
            .await?;
        Response::ok(WriteFileResponse::default())
    }

    async fn read_file(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ReadFileRequest>,
    ) -> ServiceResult<ReadFileResponse> {
        let req = request.to_owned_message();
        let content = self.read_file_impl(&req.sandbox_id, &req.path).await?;
        Response::ok(ReadFileResponse {
            content,
            ..Default::default()
        })
    }

    async fn list_dir(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        Response::ok(self.list_dir_impl(request.to_owned_message()).await?)
    }

    async fn make_dir(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let req = request.to_owned_message();
        Response::ok(self.make_dir_impl(&req.sandbox_id, &req.path).await?)
    }

    async fn remove_path(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemovePathRequest>,
    ) -> ServiceResult<RemovePathResponse> {
        let req = request.to_owned_message();
        self.remove_path_impl(&req.sandbox_id, &req.path).await?;
        Response::ok(RemovePathResponse::default())
    }

    async fn write_file_stream(
        &self,
        _ctx: RequestContext,
        requests: InboundStream<WriteFileStreamRequest>,
    ) -> ServiceResult<WriteFileStreamResponse> {
        self.write_file_stream_impl(requests).await?;
        Response::ok(WriteFileStreamResponse::default())
    }

    async fn read_file_stream(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ReadFileStreamRequest>,
    ) -> ServiceResult<ServiceStream<ReadFileStreamResponse>> {
        let req = request.to_owned_message();
        Ok(Response::new(
            self.read_file_stream_impl(&req.sandbox_id, &req.path)
                .await?,
        ))
    }

    async fn create_snapshot(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, CreateSnapshotRequest>,
    ) -> ServiceResult<CreateSnapshotResponse> {
        Response::ok(
            self.create_snapshot_impl(request.to_owned_message())
                .await?,
        )
    }

    async fn delete_snapshot(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, DeleteSnapshotRequest>,
    ) -> ServiceResult<DeleteSnapshotResponse> {
        self.delete_snapshot_impl(request.to_owned_message())
            .await?;
        Response::ok(DeleteSnapshotResponse::default())
    }

    async fn flatten_rootfs(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, FlattenRootfsRequest>,
    ) -> ServiceResult<FlattenRootfsResponse> {
        Response::ok(self.flatten_rootfs_impl(request.to_owned_message()).await?)
    }

    async fn ping_sandbox(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PingSandboxRequest>,
    ) -> ServiceResult<PingSandboxResponse> {
        self.ping_impl(&request.to_owned_message().sandbox_id)?;
        Response::ok(PingSandboxResponse::default())
    }

    async fn terminate(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, TerminateRequest>,
    ) -> ServiceResult<TerminateResponse> {
        self.terminate_impl().await?;
        Response::ok(TerminateResponse::default())
    }

    async fn get_sandbox_metrics(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetSandboxMetricsRequest>,
    ) -> ServiceResult<GetSandboxMetricsResponse> {
        Response::ok(self.metrics_impl(request.to_owned_message())?)
    }

    async fn flush_sandbox_metrics(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, FlushSandboxMetricsRequest>,
    ) -> ServiceResult<FlushSandboxMetricsResponse> {
        Response::ok(self.flush_metrics_impl(&request.to_owned_message().sandbox_id)?)
    }

    async fn pty_attach(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PtyAttachRequest>,
    ) -> ServiceResult<ServiceStream<PtyAttachResponse>> {
        Ok(Response::new(
            self.pty_attach_impl(request.to_owned_message()).await?,
        ))
    }

    async fn pty_send_input(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PtySendInputRequest>,
    ) -> ServiceResult<PtySendInputResponse> {
        self.pty_send_input_impl(request.to_owned_message()).await?;
        Response::ok(PtySendInputResponse::default())
    }

    async fn pty_resize(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PtyResizeRequest>,
    ) -> ServiceResult<PtyResizeResponse> {
        self.pty_resize_impl(request.to_owned_message()).await?;
        Response::ok(PtyResizeResponse::default())
    }

    async fn pty_kill(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, PtyKillRequest>,
    ) -> ServiceResult<PtyKillResponse> {
        let req = request.to_owned_message();
        self.pty_kill_impl(&req.sandbox_id, &req.tag).await?;
        Response::ok(PtyKillResponse::default())
    }

    async fn start_background(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, StartBackgroundRequest>,
    ) -> ServiceResult<StartBackgroundResponse> {
        Response::ok(
            self.start_background_impl(request.to_owned_message())
                .await?,
        )
    }

    async fn list_processes(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ListProcessesRequest>,
    ) -> ServiceResult<ListProcessesResponse> {
        Response::ok(
            self.list_processes_impl(&request.to_owned_message().sandbox_id)
                .await?,
        )
    }

    async fn kill_process(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, KillProcessRequest>,
    ) -> ServiceResult<KillProcessResponse> {
        self.kill_process_impl(request.to_owned_message()).await?;
        Response::ok(KillProcessResponse::default())
    }

    async fn connect_process(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, ConnectProcessRequest>,
    ) -> ServiceResult<ServiceStream<ConnectProcessResponse>> {
        Ok(Response::new(
            self.connect_process_impl(request.to_owned_message())
                .await?,
        ))
    }

    async fn get_template_size(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetTemplateSizeRequest>,
    ) -> ServiceResult<GetTemplateSizeResponse> {
        Response::ok(self.template_size_impl(request.to_owned_message()).await?)
    }
}
