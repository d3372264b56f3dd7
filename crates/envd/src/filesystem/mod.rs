//! `filesystem.Filesystem` Connect service.
//!
//! Every operation acts as the requesting user (HTTP Basic `Authorization`
//! naming the user, else the default user): paths resolve against their home,
//! and the work runs on the blocking pool with their filesystem credentials
//! (see [`creds`]), so the kernel enforces their permissions and whatever is
//! created belongs to them.
//!
//! Modules: [`caller`] (who and where), [`creds`] (per-thread fs credentials),
//! [`entry`] (`EntryInfo`), [`ops`] (stat/mkdir/move/list/remove),
//! [`watch`] (inotify watcher), [`watchers`] (polling watcher registry),
//! [`xattr`] (file metadata), [`error`] (error classification).

pub mod caller;
pub mod creds;
pub mod entry;
pub mod error;
pub mod ops;
pub mod watch;
pub mod watchers;
pub mod xattr;

pub use caller::Caller;
pub use error::{FsError, Kind};

use crate::state::Envd;
use connectrpc::{
    ConnectError, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use futures::{Stream, StreamExt};
use std::time::Duration;
use watch::{DirWatcher, WatchOptions};
use wrenn_proto::filesystem::watch_dir_response::{Event as WatchEvent, KeepAlive, StartEvent};
use wrenn_proto::filesystem::*;

/// Header with which E2B clients ask for keepalives on a watch stream, in seconds.
const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

pub struct FilesystemService {
    envd: Envd,
    watchers: watchers::Registry,
}

impl FilesystemService {
    pub fn new(envd: Envd) -> Self {
        Self {
            envd,
            watchers: watchers::Registry::default(),
        }
    }

    fn caller(&self, ctx: &RequestContext) -> Result<Caller, FsError> {
        let user = crate::auth::user_from_headers(ctx.headers());
        Caller::resolve(&self.envd, user.as_deref())
    }

    async fn start_watcher(
        &self,
        ctx: &RequestContext,
        path: &str,
        recursive: bool,
        include_entry: bool,
        allow_network_mounts: bool,
    ) -> Result<DirWatcher, FsError> {
        let caller = self.caller(ctx)?;
        let opts = WatchOptions {
            path: caller.path(path)?,
            recursive,
            include_entry,
            allow_network_mounts,
        };
        let account = caller.account.clone();
        caller.run(move || DirWatcher::start(opts, account)).await
    }
}

// Handlers return the concrete response messages, which the trait's
// `impl Encodable<_>` return types allow.
#[allow(refining_impl_trait)]
impl Filesystem for FilesystemService {
    async fn stat(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, StatRequest>,
    ) -> ServiceResult<StatResponse> {
        let caller = self.caller(&ctx)?;
        let path = caller.path(request.path)?;
        let entry = caller.run(move || ops::stat(&path)).await?;
        Ok(Response::new(StatResponse {
            entry: entry.into(),
            ..Default::default()
        }))
    }

    async fn make_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MakeDirRequest>,
    ) -> ServiceResult<MakeDirResponse> {
        let caller = self.caller(&ctx)?;
        let path = caller.path(request.path)?;
        let entry = caller.run(move || ops::make_dir(&path)).await?;
        Ok(Response::new(MakeDirResponse {
            entry: entry.into(),
            ..Default::default()
        }))
    }

    async fn r#move(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, MoveRequest>,
    ) -> ServiceResult<MoveResponse> {
        let caller = self.caller(&ctx)?;
        let source = caller.path(request.source)?;
        let destination = caller.path(request.destination)?;
        let entry = caller
            .run(move || ops::rename(&source, &destination))
            .await?;
        Ok(Response::new(MoveResponse {
            entry: entry.into(),
            ..Default::default()
        }))
    }

    async fn list_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, ListDirRequest>,
    ) -> ServiceResult<ListDirResponse> {
        let caller = self.caller(&ctx)?;
        let path = caller.path(request.path)?;
        let depth = request.depth;
        let entries = caller.run(move || ops::list_dir(&path, depth)).await?;
        Ok(Response::new(ListDirResponse {
            entries,
            ..Default::default()
        }))
    }

    async fn remove(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, RemoveRequest>,
    ) -> ServiceResult<RemoveResponse> {
        let caller = self.caller(&ctx)?;
        let path = caller.path(request.path)?;
        caller.run(move || ops::remove(&path)).await?;
        Ok(Response::new(RemoveResponse::default()))
    }

    async fn watch_dir(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, WatchDirRequest>,
    ) -> ServiceResult<ServiceStream<WatchDirResponse>> {
        let watcher = self
            .start_watcher(
                &ctx,
                request.path,
                request.recursive,
                request.include_entry,
                request.allow_network_mounts,
            )
            .await?;
        let every = keepalive_interval(&ctx);
        Ok(Response::stream(watch_stream(watcher, every)))
    }

    async fn create_watcher(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, CreateWatcherRequest>,
    ) -> ServiceResult<CreateWatcherResponse> {
        let watcher = self
            .start_watcher(
                &ctx,
                request.path,
                request.recursive,
                request.include_entry,
                request.allow_network_mounts,
            )
            .await?;
        let watcher_id = self.watchers.add(watcher);
        Ok(Response::new(CreateWatcherResponse {
            watcher_id,
            ..Default::default()
        }))
    }

    async fn get_watcher_events(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, GetWatcherEventsRequest>,
    ) -> ServiceResult<GetWatcherEventsResponse> {
        let events = self.watchers.drain(request.watcher_id)?;
        Ok(Response::new(GetWatcherEventsResponse {
            events,
            ..Default::default()
        }))
    }

    async fn remove_watcher(
        &self,
        _ctx: RequestContext,
        request: ServiceRequest<'_, RemoveWatcherRequest>,
    ) -> ServiceResult<RemoveWatcherResponse> {
        self.watchers.remove(request.watcher_id)?;
        Ok(Response::new(RemoveWatcherResponse::default()))
    }
}

/// The client's requested keepalive period (whole seconds, 1..=300), else 30 s.
fn keepalive_interval(ctx: &RequestContext) -> Duration {
    ctx.header(KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 300)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

fn response(event: WatchEvent) -> WatchDirResponse {
    WatchDirResponse {
        event: Some(event),
        ..Default::default()
    }
}

/// `start`, then filesystem events as they come, with a keepalive whenever
/// `every` passes. The watcher lives inside the stream: when the client goes
/// away the server drops the stream and the inotify instance is closed.
fn watch_stream(
    watcher: DirWatcher,
    every: Duration,
) -> impl Stream<Item = Result<WatchDirResponse, ConnectError>> + Send + 'static {
    let start = response(WatchEvent::Start(Box::<StartEvent>::default()));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let events = futures::stream::unfold(Some((watcher, ticker)), |state| async move {
        let (mut watcher, mut ticker) = state?;
        tokio::select! {
            next = watcher.next() => match next {
                Ok(Some(event)) => {
                    let item = response(WatchEvent::Filesystem(Box::new(event.into_proto())));
                    Some((Ok(item), Some((watcher, ticker))))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "watch stream failed");
                    Some((Err(ConnectError::internal(format!("watching failed: {e}"))), None))
                }
            },
            _ = ticker.tick() => {
                let item = response(WatchEvent::Keepalive(Box::<KeepAlive>::default()));
                Some((Ok(item), Some((watcher, ticker))))
            }
        }
    });
    futures::stream::once(async move { Ok(start) }).chain(events)
}
