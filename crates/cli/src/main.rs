//! `wrenn`: the Wrenn command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wrenn_agent::DataDir;
use wrenn_agent::image::{self, BuildOptions};

mod agent;
mod remote;
mod up;

#[derive(Parser, Debug)]
#[command(
    name = "wrenn",
    version,
    about = "Wrenn: sandboxes for AI agents",
    after_help = remote::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capsule templates.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Run the host agent: the `hostagent.v1.HostAgentService` Connect API (proto and JSON).
    Agent(agent::AgentArgs),
    /// Run the control plane (REST API, database, auth, scheduler, events).
    Server(up::ServerArgs),
    /// Run everything on this machine: host agent + control plane, with an admin API key.
    Up(up::UpArgs),
    /// Save credentials for a control plane: email + password (user login), or an API key.
    Login(remote::login::LoginArgs),
    /// Forget the saved credentials.
    Logout(remote::login::LogoutArgs),
    /// Capsules: create, list, inspect, run commands, open a shell, pause, resume, destroy.
    Capsule(remote::capsule::CapsuleArgs),
    /// Snapshot templates: create from a capsule, list, delete.
    Snapshot(remote::snapshot::SnapshotArgs),
    /// The team's API keys (needs a user login: `wrenn login --email …`).
    Key(remote::key::KeyArgs),
    /// Template builds from recipes (platform admins): build, builds, cancel.
    Template(remote::template::TemplateArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Build (or find cached) a base template. Only `minimal` exists today.
    Build {
        /// Template name.
        name: String,
        /// The agent's data directory.
        #[arg(long, env = "WRENN_DATA_DIR", default_value = DataDir::DEFAULT)]
        data_dir: PathBuf,
        /// Statically linked envd to install; defaults to `envd` next to this binary.
        #[arg(long, env = "WRENN_ENVD_BIN")]
        envd_bin: Option<PathBuf>,
        /// Debian mirror for debootstrap; defaults to the host's apt mirror.
        #[arg(long)]
        mirror: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "wrenn_agent=info,wrenn=info,wrenn_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    // Client commands: their own exit codes (`wrenn --help`) and a short message; the
    // daemons keep anyhow's full report.
    let client_result = match command {
        Command::Login(args) => remote::login::login(args).await.map(|()| 0),
        Command::Logout(args) => remote::login::logout(args).await.map(|()| 0),
        Command::Capsule(args) => remote::capsule::run(args).await,
        Command::Snapshot(args) => remote::snapshot::run(args).await.map(|()| 0),
        Command::Key(args) => remote::key::run(args).await.map(|()| 0),
        Command::Template(args) => remote::template::run(args).await,
        Command::Agent(args) => return daemon_exit(agent::run(args).await),
        Command::Server(args) => return daemon_exit(up::server(args).await),
        Command::Up(args) => return daemon_exit(up::up(args).await),
        Command::Image { command } => return daemon_exit(image_command(command).await),
    };
    match client_result {
        // Remote exit statuses are 0..=255; -1 (killed by a signal) and anything odd → 255.
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = remote::hint(&e) {
                eprintln!("{hint}");
            }
            remote::exit_code(&e)
        }
    }
}

fn daemon_exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn image_command(command: ImageCommand) -> anyhow::Result<()> {
    let ImageCommand::Build {
        name,
        data_dir,
        envd_bin,
        mirror,
    } = command;
    let envd_bin = match envd_bin {
        Some(path) => path,
        None => envd_next_to_this_binary()?,
    };
    let report = image::build(BuildOptions {
        data_dir: DataDir::new(data_dir),
        name: name.clone(),
        envd_bin,
        mirror,
        progress: true,
    })
    .await
    .with_context(|| format!("building image {name}"))?;
    println!(
        "{name}: {} ({}, {:.1}s)",
        report.rootfs.display(),
        match (report.base_built, report.envd_installed) {
            (true, _) => "built",
            (false, true) => "envd updated",
            (false, false) => "cached",
        },
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    wrenn_server::shutdown_signal().await
}

fn envd_next_to_this_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the wrenn binary")?;
    let candidate = exe.with_file_name("envd");
    anyhow::ensure!(
        candidate.is_file(),
        "no envd binary given: pass --envd-bin or set WRENN_ENVD_BIN (build one with \
         RUSTFLAGS='-C target-feature=+crt-static' cargo build --release \
         --target x86_64-unknown-linux-gnu -p envd), or install envd next to {}",
        exe.display()
    );
    Ok(candidate)
}
