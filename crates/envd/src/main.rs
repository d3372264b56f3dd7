use anyhow::Context;
use clap::Parser;
use std::future::IntoFuture;
use std::net::{Ipv6Addr, SocketAddr};

/// Wrenn's guest daemon (E2B envd protocol).
#[derive(Parser, Debug)]
#[command(version = envd::VERSION)]
struct Args {
    /// Port to listen on (all interfaces).
    #[arg(long, default_value_t = envd::DEFAULT_PORT)]
    port: u16,
    /// Command started at boot, tagged `init-cmd`.
    #[arg(long)]
    cmd: Option<String>,
    /// Directory for the capsule identity files written on `/init`.
    #[arg(long, default_value = "/run/wrenn")]
    run_dir: std::path::PathBuf,
    /// Forward services listening only on loopback to the external interfaces
    /// (auto: only when running as PID 1, i.e. inside a capsule).
    #[arg(long, value_enum, default_value_t = envd::lifecycle::PortForwardMode::Auto)]
    port_forward: envd::lifecycle::PortForwardMode,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "envd=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let state = envd::state::Envd::default();
    // Take over child reaping before anything forks (envd may be PID 1).
    envd::process::Manager::global();
    // Dual-stack socket: one listener serves IPv4 and IPv6 clients.
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // Machine-readable line: tests and the host agent start envd with `--port 0`.
    println!("envd listening on {local}");
    tracing::info!(%local, "envd listening");
    state.lifecycle.start(envd::lifecycle::Config {
        run_dir: args.run_dir.clone(),
        envd_port: local.port(),
        port_forward: args.port_forward.enabled(),
    });
    // Tracked so `/snapshot/prepare` can close connections; ConnId lets a
    // handler spare its own.
    let listener = envd::conntrack::TrackedListener::new(listener, state.lifecycle.conns.clone());
    // A failing boot command must not take envd (maybe PID 1) down with it.
    if let Some(cmd) = &args.cmd
        && let Err(e) = envd::process::start_init_cmd(&state, cmd)
    {
        tracing::error!(error = %e, "starting --cmd failed");
    }
    let app =
        envd::server::app(state).into_make_service_with_connect_info::<envd::conntrack::ConnId>();
    // SIGTERM/SIGINT: terminate our processes, then exit.
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served?,
        () = envd::process::shutdown_on_signal() => {}
    }
    Ok(())
}
