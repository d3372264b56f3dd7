//! Wrenn control plane: the REST API (axum), its database (sqlx: SQLite or PostgreSQL) and auth.
//!
//! Entry points: [`serve`] runs the server from a [`Config`]; [`open_state`] + [`build_app`]
//! give the pieces (tests, `wrenn up`); [`bootstrap_admin`] creates the first admin and API key.
//!
//! Map: `config` (settings, JWT secret file) · `db` (pool, migrations, one repository module per
//! table) · `error` (the `{"error":{…}}` envelope and JSON-rejecting extractors) · `ids` (typed
//! `prefix-base36` ids) · `auth` (API key / JWT / session → [`auth::Principal`]) · `accounts`
//! (account rules shared by routes and bootstrap) · `audit` (one audit row per action) ·
//! `routes` (handlers) · `openapi` · `app` (router).

pub mod accounts;
pub mod agent;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod builds;
pub mod capsules;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod mail;
pub mod openapi;
pub mod proxy;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod web;

pub use app::build_app;
pub use bootstrap::{Bootstrapped, bootstrap_admin};
pub use config::Config;
pub use state::AppState;

use std::future::Future;
use tokio::net::TcpListener;

/// Creates the data directory, opens and migrates the database, loads the JWT secret.
pub async fn open_state(config: &Config) -> anyhow::Result<AppState> {
    create_private_dir(&config.data_dir)?;
    let url = config.effective_database_url();
    let db = db::Db::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!("opening the database: {e}"))?;
    tracing::info!(backend = ?db.backend(), "database ready");
    let secret = config::load_or_create_jwt_secret(&config.data_dir, config.jwt_secret.as_deref())?;
    let state = AppState::with_options(db, secret, config.secure_cookies, config.max_body_bytes);
    state.set_proxy_domain(config.proxy_domain.clone());
    state.set_metrics_public(config.metrics_public);
    state.builds().set_dir(config.data_dir.join("builds"));
    state.builds().set_workers(config.build_workers);
    if let Some(url) = &config.smtp_url {
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen));
        let mailer = mail::Mailer::new(url, &config.smtp_from, &public_url)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        state.set_mailer(Some(mailer));
        tracing::info!(from = %config.smtp_from, "SMTP configured: signups get an activation mail");
    }
    if let Some(agent) = &config.agent_url {
        let host = register_local_host(&state, agent).await?;
        tracing::info!(host = %host.id, address = %host.address, "host agent registered");
    }
    Ok(state)
}

/// Registers the agent at `address` as an online platform host, with this machine's CPU,
/// memory and disk (the agent runs here: `wrenn up`, or `wrenn server --agent-url` next to
/// `wrenn agent`).
pub async fn register_local_host(
    state: &AppState,
    address: &str,
) -> anyhow::Result<db::hosts::HostRow> {
    agent::base_url(address)?;
    let capacity = db::hosts::Capacity {
        arch: std::env::consts::ARCH.to_owned(),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as i64),
        memory_mb: meminfo_total_mb().unwrap_or(1024),
        disk_gb: 0,
    };
    Ok(db::hosts::register_local(state.pool(), address, &capacity, time::now()).await?)
}

fn meminfo_total_mb() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))
}

/// Runs the control plane until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = open_state(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.listen))?;
    serve_on(listener, state, shutdown_signal()).await
}

/// Serves the app on `listener` until `shutdown` completes, then closes the database pool.
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "control plane listening");
    let db = state.db().clone();
    // Reconciler and stats sampler; stopped (dropped) when serving ends.
    let background = lifecycle::spawn_background(&state);
    axum::serve(listener, build_app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    background.shutdown();
    db.close().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
