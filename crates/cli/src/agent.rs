//! `wrenn agent`: checks the host, recovers capsules from the data dir, serves the agent API.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use wrenn_agent::DataDir;
use wrenn_agent::capsule::Capsules;
use wrenn_agent::network::Network;
use wrenn_agent::runtime::gvisor::{GvisorConfig, GvisorRuntime, Platform};
use wrenn_agent::service::{self, AgentService};

const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest wait at exit for pauses the TTL reaper started (a checkpoint takes ~0.3-1 s).
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The agent's data directory (images, capsules, snapshots, runsc state).
    #[arg(long, env = "WRENN_DATA_DIR", default_value = DataDir::DEFAULT)]
    pub data_dir: PathBuf,
    /// Address of the agent API. Loopback by default: callers are not authenticated yet.
    #[arg(long, env = "WRENN_AGENT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Most capsules (network slots) this host runs at once.
    #[arg(long, env = "WRENN_MAX_CAPSULES", default_value_t = 256)]
    pub max_capsules: u32,
    /// gVisor platform: systrap (fast syscalls, some idle CPU), ptrace (idle-free, slow) or kvm.
    #[arg(long, env = "WRENN_GVISOR_PLATFORM", default_value = "systrap")]
    pub platform: Platform,
    /// The runsc binary.
    #[arg(long, env = "WRENN_RUNSC", default_value = "runsc")]
    pub runsc: PathBuf,
    /// Keep runsc's debug logs in `<data dir>/runsc-debug/<capsule>/`: verbose, for diagnosing
    /// sandbox failures.
    #[arg(long, env = "WRENN_RUNSC_DEBUG", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub runsc_debug: bool,
    /// With --runsc-debug: also log every syscall inside the sandboxes (runsc --strace). Very
    /// verbose; for diagnosing what a process in a capsule did.
    #[arg(long, env = "WRENN_RUNSC_STRACE", requires = "runsc_debug", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    pub runsc_strace: bool,
    /// Pin each capsule to its own host CPUs (as many as its vCPUs, the least used ones): short
    /// commands start up to 2× faster; long syscall-bound loops run slower. `false` lets every
    /// capsule use every CPU.
    #[arg(long, env = "WRENN_CPU_PINNING", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub cpu_pinning: bool,
}

pub fn is_root() -> bool {
    // The real uid is the first number on the `Uid:` line; effective is the second.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A checked, recovered agent ready to serve (shared by `wrenn agent` and `wrenn up`).
pub struct PreparedAgent {
    agent: Arc<AgentService<GvisorRuntime>>,
    background: service::Background,
    app: axum::Router,
}

/// Checks root and runsc, sets up host networking, re-adopts capsules from the data dir and
/// starts the background tasks (metrics sampler, TTL reaper).
pub async fn prepare(args: &AgentArgs) -> anyhow::Result<PreparedAgent> {
    anyhow::ensure!(
        is_root(),
        "wrenn agent must run as root (it creates network namespaces and runs runsc)"
    );
    let data_dir = DataDir::new(&args.data_dir);
    std::fs::create_dir_all(data_dir.root())
        .with_context(|| format!("creating {}", data_dir.root().display()))?;
    let mut config = GvisorConfig::new(data_dir.runsc_root());
    config.runsc = args.runsc.clone();
    config.platform = args.platform;
    config.debug_log_dir = args
        .runsc_debug
        .then(|| data_dir.root().join("runsc-debug"));
    config.strace = args.runsc_strace;
    config.cpu_pinning = args.cpu_pinning;
    config.disk_spares_dir = Some(data_dir.root().join("disks"));
    let runtime = GvisorRuntime::new(config).await.context(
        "checking runsc (gVisor): install it with `bash scripts/install-runsc.sh` or pass --runsc",
    )?;
    let network = Network::new(args.max_capsules).await.context(
        "setting up host networking (needs network namespaces, veth and nftables: \
         `apt-get install nftables iproute2`, and a kernel with CONFIG_NET_NS and nf_tables)",
    )?;
    let capsules = Arc::new(Capsules::new(data_dir, network, runtime));
    let report = capsules
        .recover()
        .await
        .context("recovering capsules from the data dir")?;
    tracing::info!(
        adopted = report.adopted.len(),
        paused = report.paused.len(),
        cleaned = report.cleaned.len(),
        "capsules recovered"
    );
    let agent = Arc::new(AgentService::new(capsules));
    agent.adopt_recovered();
    let background = agent.spawn_background();
    let app = service::router(agent.clone(), axum_routes(&agent));
    Ok(PreparedAgent {
        agent,
        background,
        app,
    })
}

impl PreparedAgent {
    /// Resolves when a `Terminate` RPC destroyed every capsule.
    pub fn terminated(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let agent = self.agent.clone();
        async move { agent.terminated().await }
    }

    /// Serves on `listener` until `shutdown`, then stops the background tasks and lets pauses
    /// in flight finish. Capsules keep running; the next start re-adopts them.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Open streams (an attached PTY) would hold a graceful shutdown forever: give them a grace.
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        let served = tokio::select! {
            served = service::serve(listener, self.app, shutdown) => served.context("serving the agent API"),
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("streams still open after {SHUTDOWN_GRACE:?}; exiting");
                Ok(())
            }
        };
        // Auto-pauses already started finish (a half-done checkpoint would lose the capsule).
        self.background.shutdown().await;
        self.agent.settle(SETTLE_LIMIT).await;
        served
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let prepared = prepare(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "wrenn agent serving hostagent.v1.HostAgentService");
    let terminated = prepared.terminated();
    let shutdown = async move {
        // Capsules outlive a stopped agent; the next start re-adopts them.
        tokio::select! {
            _ = crate::shutdown_signal() => tracing::info!("stopping; capsules keep running"),
            _ = terminated => tracing::info!("terminated: all capsules destroyed"),
        }
    };
    prepared.serve(listener, shutdown).await
}

/// Plain HTTP routes on the agent's listener: the port proxy, `/proxy/{id}/{port}/...`.
fn axum_routes<R: wrenn_agent::runtime::Runtime>(
    agent: &AgentService<R>,
) -> wrenn_agent::service::HttpRoutes {
    wrenn_agent::proxy::router(agent.proxy())
}
