//! `wrenn server` (the control plane) and `wrenn up` (agent + control plane in one process).
//!
//! `wrenn up` order: prerequisites (root, runsc, networking: [`crate::agent::prepare`] with
//! actionable errors) → the `minimal` image if missing (built with progress) → the agent on an
//! ephemeral loopback port → the control plane, which registers that agent as its host → an
//! admin + API key on first run → `DIR/admin-api-key` (0600) written only once `/health`
//! answers → `export` lines on stdout. SIGINT/SIGTERM stop both; capsules keep running and
//! are re-adopted on the next start.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wrenn_agent::DataDir;
use wrenn_agent::image::{self, BuildOptions, MINIMAL};

use crate::agent::{self, AgentArgs};

const ADMIN_EMAIL: &str = "admin@wrenn.local";
const KEY_FILE: &str = "admin-api-key";

#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Holds the SQLite database and the JWT secret.
    #[arg(long, env = "WRENN_DATA_DIR", default_value = wrenn_server::Config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "WRENN_LISTEN", default_value = wrenn_server::Config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// A host agent to register as this control plane's host (`host:port`).
    #[arg(long, env = "WRENN_AGENT_URL")]
    agent_url: Option<String>,
    /// Domain of capsule URLs `{port}-{id}.{domain}`; default `localhost:<port of --listen>`.
    #[arg(long, env = "WRENN_PROXY_DOMAIN")]
    proxy_domain: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Data directory of both the agent (images, capsules) and the control plane (database).
    #[arg(long, env = "WRENN_DATA_DIR", default_value = DataDir::DEFAULT)]
    data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "WRENN_LISTEN", default_value = wrenn_server::Config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Domain of capsule URLs `{port}-{id}.{domain}`; default `localhost:<port of --listen>`.
    #[arg(long, env = "WRENN_PROXY_DOMAIN")]
    proxy_domain: Option<String>,
    /// Statically linked envd for building the `minimal` image; default: `envd` next to this
    /// binary.
    #[arg(long, env = "WRENN_ENVD_BIN")]
    envd_bin: Option<PathBuf>,
    /// gVisor platform (see `wrenn agent --help`).
    #[arg(long, env = "WRENN_GVISOR_PLATFORM", default_value = "systrap")]
    platform: wrenn_agent::runtime::gvisor::Platform,
    /// The runsc binary.
    #[arg(long, env = "WRENN_RUNSC", default_value = "runsc")]
    runsc: PathBuf,
    /// Most capsules this host runs at once.
    #[arg(long, env = "WRENN_MAX_CAPSULES", default_value_t = 256)]
    max_capsules: u32,
    /// Keep runsc's debug logs in `<data dir>/runsc-debug/` (see `wrenn agent --help`).
    #[arg(long, env = "WRENN_RUNSC_DEBUG", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    runsc_debug: bool,
    /// Pin each capsule to its own host CPUs (see `wrenn agent --help`).
    #[arg(long, env = "WRENN_CPU_PINNING", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    cpu_pinning: bool,
}

fn config(
    data_dir: PathBuf,
    listen: SocketAddr,
    proxy_domain: Option<String>,
) -> anyhow::Result<wrenn_server::Config> {
    let mut config = wrenn_server::Config::from_env()?;
    config.data_dir = data_dir;
    config.listen = listen;
    config.proxy_domain =
        Some(proxy_domain.unwrap_or_else(|| format!("localhost:{}", listen.port())));
    Ok(config)
}

pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = config(args.data_dir, args.listen, args.proxy_domain)?;
    config.agent_url = args.agent_url;
    wrenn_server::serve(config).await
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        agent::is_root(),
        "wrenn up must run as root: it runs the host agent, which creates network namespaces \
         and runs gVisor (try `sudo wrenn up`)"
    );
    ensure_image(&args).await?;

    let agent_args = AgentArgs {
        data_dir: args.data_dir.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        max_capsules: args.max_capsules,
        platform: args.platform,
        runsc: args.runsc.clone(),
        runsc_debug: args.runsc_debug,
        runsc_strace: false,
        cpu_pinning: args.cpu_pinning,
    };
    let prepared = agent::prepare(&agent_args).await?;
    let agent_listener = tokio::net::TcpListener::bind(agent_args.listen)
        .await
        .context("binding the agent's loopback port")?;
    let agent_addr = agent_listener.local_addr()?;
    tracing::info!(%agent_addr, "host agent listening (loopback)");

    // One signal stops both halves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let agent_task = tokio::spawn(prepared.serve(agent_listener, stopped(stop_rx.clone())));

    let mut config = config(
        args.data_dir.clone(),
        args.listen,
        args.proxy_domain.clone(),
    )?;
    config.agent_url = Some(agent_addr.to_string());
    let state = wrenn_server::open_state(&config).await?;
    let key_path = args.data_dir.join(KEY_FILE);
    let new_key = if key_path.exists() {
        None
    } else {
        let boot = wrenn_server::bootstrap_admin(state.db(), ADMIN_EMAIL, "Admin", None)
            .await
            .context("creating the admin user and API key")?;
        Some(boot.api_key)
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let listen = listener.local_addr()?;
    let mut cp_task = tokio::spawn(wrenn_server::serve_on(
        listener,
        state,
        stopped(stop_rx.clone()),
    ));

    wait_healthy(listen).await?;
    let key = match new_key {
        Some(key) => {
            write_key(&key_path, &key)?;
            key
        }
        None => std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?
            .trim()
            .to_owned(),
    };
    let domain = config.proxy_domain.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Wrenn is up: API http://{listen}, admin API key in {}",
        key_path.display()
    )?;
    writeln!(out, "export WRENN_API_KEY={key}")?;
    // On loopback, `localhost` (not 127.0.0.1) in the base URL makes the SDK's get_url(port)
    // `http://<port>-<id>.localhost:<port>`, a name that resolves to this machine
    // (libnss-myhostname, installed by setup.sh); the server routes on the Host header.
    let base_host = if listen.ip().is_loopback() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    };
    writeln!(out, "export WRENN_BASE_URL=http://{base_host}")?;
    writeln!(out, "export WRENN_PROXY_DOMAIN={domain}")?;
    out.flush()?;
    drop(out);

    tokio::select! {
        _ = wrenn_server::shutdown_signal() => tracing::info!("stopping; capsules keep running"),
        r = &mut cp_task => {
            let _ = stop_tx.send(true);
            agent_task.await.ok();
            return r.context("control plane task")?;
        }
    }
    let _ = stop_tx.send(true);
    agent_task.await.context("agent task")??;
    Ok(())
}

/// Builds the `minimal` image unless the data dir has one (a cached build is a no-op, but needs
/// an envd binary to compare against, which a prebuilt image does not).
async fn ensure_image(args: &UpArgs) -> anyhow::Result<()> {
    let data_dir = DataDir::new(&args.data_dir);
    let dir = data_dir.template(MINIMAL)?;
    if dir.join("image.json").is_file() {
        return Ok(());
    }
    let envd_bin = match &args.envd_bin {
        Some(p) => p.clone(),
        None => crate::envd_next_to_this_binary()?,
    };
    println!("Building the `{MINIMAL}` image (first run; debootstrap takes a few minutes)…");
    let report = image::build(BuildOptions {
        data_dir,
        name: MINIMAL.to_owned(),
        envd_bin,
        mirror: None,
        progress: true,
    })
    .await
    .context("building the minimal image (needs debootstrap: `apt-get install debootstrap`)")?;
    println!(
        "{MINIMAL}: {} ({:.1}s)",
        report.rootfs.display(),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Polls `GET /health` until it answers 200 (the listener is bound before serving starts).
async fn wait_healthy(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            if s.write_all(req.as_bytes()).await.is_ok()
                && s.read_to_end(&mut buf).await.is_ok()
                && buf.starts_with(b"HTTP/1.1 200")
            {
                return Ok(());
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the API on {addr} did not become healthy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Writes the key readable by the owner only (temp file + rename: readers never see a
/// partial key).
fn write_key(path: &Path, key: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    writeln!(f, "{key}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
