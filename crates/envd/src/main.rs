use anyhow::Context;
use clap::Parser;
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
    // Dual-stack socket: one listener serves IPv4 and IPv6 clients.
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // Machine-readable line: tests and the host agent start envd with `--port 0`.
    println!("envd listening on {local}");
    tracing::info!(%local, "envd listening");
    axum::serve(listener, envd::server::app(state)).await?;
    Ok(())
}
