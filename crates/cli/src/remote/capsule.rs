//! `wrenn capsule create|ls|get|exec|shell|pause|resume|rm`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use wrenn_client::{Capsule, Client, CreateCapsule, ExecRequest};

use super::{CliError, ConnArgs, Exit, Need, output, usage};

#[derive(clap::Args, Debug)]
pub struct CapsuleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: CapsuleCommand,
}

/// How long to wait for a status change, and whether to.
#[derive(clap::Args, Debug, Clone)]
struct WaitArgs {
    /// Return as soon as the server accepted the request, without waiting.
    #[arg(long)]
    no_wait: bool,
    /// Give up waiting after this many seconds (exit 6).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    wait_timeout: u64,
}

#[derive(Subcommand, Debug)]
enum CapsuleCommand {
    /// Create a capsule and wait until it runs; prints its id.
    Create {
        /// Template or snapshot to boot [server default: minimal].
        #[arg(long, short)]
        template: Option<String>,
        /// Virtual CPUs.
        #[arg(long)]
        vcpus: Option<i64>,
        /// Memory in MiB.
        #[arg(long, value_name = "MIB")]
        memory: Option<i64>,
        /// Pause automatically after this many idle seconds (0 = never).
        #[arg(long, value_name = "SECS")]
        timeout: Option<i64>,
        /// Writable disk size in MiB.
        #[arg(long, value_name = "MIB")]
        disk: Option<i64>,
        /// Label `KEY=VALUE` (repeatable).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List the team's capsules (stopped ones excluded).
    #[command(visible_alias = "list")]
    Ls,
    /// Show one capsule (any status).
    Get { id: String },
    /// Run a command to completion; exits with its exit code.
    #[command(after_help = "Examples:\n  wrenn capsule exec cl-… -- ls -la /tmp\n  \
        wrenn capsule exec cl-… --sh -- 'echo $HOME | wc -c'")]
    Exec {
        id: String,
        /// Run the words as one `/bin/sh -c` script (pipes, variables, globs).
        #[arg(long)]
        sh: bool,
        /// Kill the command after this many seconds [server default: 30].
        #[arg(long, value_name = "SECS")]
        timeout: Option<i64>,
        /// Working directory (default: the user's home).
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable `KEY=VALUE` (repeatable).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        envs: Vec<String>,
        /// The command and its arguments (after `--`).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Open an interactive terminal in the capsule (default command: /bin/bash).
    Shell {
        id: String,
        /// Command to run instead of the shell (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Pause (checkpoint) a running capsule and wait until it is paused.
    Pause {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Resume a paused capsule and wait until it runs.
    Resume {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Destroy capsules and wait until they are stopped.
    #[command(visible_alias = "destroy")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

fn pairs(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(usage(format!("{what} {item:?} is not KEY=VALUE"))),
        })
        .collect()
}

pub async fn run(args: CapsuleArgs) -> anyhow::Result<i32> {
    let json = args.conn.json;
    let client = args.conn.client(Need::Any)?;
    match args.command {
        CapsuleCommand::Create {
            template,
            vcpus,
            memory,
            timeout,
            disk,
            labels,
            wait,
        } => {
            let req = CreateCapsule {
                template,
                vcpus,
                memory_mb: memory,
                timeout_sec: timeout,
                disk_size_mb: disk,
                metadata: pairs(&labels, "label")?,
            };
            let capsule = client.create_capsule(&req).await?;
            let capsule = settle(&client, capsule, "running", "Starting", &wait).await?;
            if json {
                output::json(&capsule)?;
            } else {
                println!("{}", capsule.id);
            }
        }
        CapsuleCommand::Ls => {
            let capsules = client.list_capsules().await?;
            if json {
                output::json(&capsules)?;
            } else {
                let rows: Vec<Vec<String>> = capsules
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.clone(),
                            c.status.clone(),
                            c.template.clone(),
                            c.vcpus.to_string(),
                            format!("{} MiB", c.memory_mb),
                            output::time(c.created_at.as_deref()),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "STATUS", "TEMPLATE", "VCPUS", "MEMORY", "CREATED"],
                    &rows,
                )?;
            }
        }
        CapsuleCommand::Get { id } => {
            let capsule = client.get_capsule(&id).await?;
            if json {
                output::json(&capsule)?;
            } else {
                show(&capsule)?;
            }
        }
        CapsuleCommand::Exec {
            id,
            sh,
            timeout,
            cwd,
            envs,
            command,
        } => {
            let (cmd, args) = if sh {
                (
                    "/bin/sh".to_owned(),
                    vec!["-c".to_owned(), command.join(" ")],
                )
            } else {
                let mut words = command.into_iter();
                let cmd = words.next().ok_or_else(|| usage("no command given"))?;
                (cmd, words.collect())
            };
            let req = ExecRequest {
                cmd,
                args,
                timeout_sec: timeout,
                envs: pairs(&envs, "environment variable")?,
                cwd,
            };
            let result = client.exec(&id, &req).await?;
            if json {
                output::json(&result)?;
            } else {
                let (stdout, stderr) = result.output()?;
                std::io::stdout().write_all(&stdout)?;
                std::io::stdout().flush()?;
                std::io::stderr().write_all(&stderr)?;
            }
            return Ok(result.exit_code);
        }
        CapsuleCommand::Shell { id, command } => {
            // Checked first so a missing or paused capsule gets its own exit code (the socket
            // reports those in-band only).
            let capsule = client.get_capsule(&id).await?;
            if capsule.status != "running" {
                return Err(CliError::new(
                    Exit::Conflict,
                    format!(
                        "capsule {id} is {} (a shell needs it running{})",
                        capsule.status,
                        if capsule.status == "paused" {
                            "; `wrenn capsule resume` it first"
                        } else {
                            ""
                        }
                    ),
                )
                .into());
            }
            return super::shell::run(&client, &id, command).await;
        }
        CapsuleCommand::Pause { id, wait } => {
            let capsule = client.pause_capsule(&id).await?;
            let capsule = settle(&client, capsule, "paused", "Pausing", &wait).await?;
            done(json, &capsule)?;
        }
        CapsuleCommand::Resume { id, wait } => {
            let capsule = client.resume_capsule(&id).await?;
            let capsule = settle(&client, capsule, "running", "Resuming", &wait).await?;
            done(json, &capsule)?;
        }
        CapsuleCommand::Rm { ids, wait } => {
            let mut removed = Vec::new();
            for id in &ids {
                client.destroy_capsule(id).await?;
                let status = if wait.no_wait {
                    "stopping".to_owned()
                } else {
                    let bar = output::spinner(format!("Stopping {id}"));
                    let result = client
                        .wait_for_status(
                            id,
                            &["stopped"],
                            Duration::from_secs(wait.wait_timeout),
                            |_| {},
                        )
                        .await;
                    bar.finish_and_clear();
                    result?.status
                };
                if !json {
                    println!("{id} {status}");
                }
                removed.push(serde_json::json!({"id": id, "status": status}));
            }
            if json {
                output::json(&removed)?;
            }
        }
    }
    Ok(0)
}

/// Waits (with a spinner) until the capsule reaches `want`, unless `--no-wait`.
async fn settle(
    client: &Client,
    capsule: Capsule,
    want: &str,
    verb: &str,
    wait: &WaitArgs,
) -> anyhow::Result<Capsule> {
    if wait.no_wait || capsule.status == want {
        return Ok(capsule);
    }
    let bar = output::spinner(format!("{verb} {}: {}", capsule.id, capsule.status));
    let result = client
        .wait_for_status(
            &capsule.id,
            &[want],
            Duration::from_secs(wait.wait_timeout),
            |c| bar.set_message(format!("{verb} {}: {}", c.id, c.status)),
        )
        .await;
    bar.finish_and_clear();
    Ok(result?)
}

fn done(json: bool, capsule: &Capsule) -> anyhow::Result<()> {
    if json {
        output::json(capsule)
    } else {
        println!("{} {}", capsule.id, capsule.status);
        Ok(())
    }
}

fn show(c: &Capsule) -> anyhow::Result<()> {
    let mut pairs = vec![
        ("id", c.id.clone()),
        ("status", c.status.clone()),
        ("template", c.template.clone()),
        ("vcpus", c.vcpus.to_string()),
        ("memory", format!("{} MiB", c.memory_mb)),
        (
            "auto-pause",
            if c.timeout_sec > 0 {
                format!("after {}s idle", c.timeout_sec)
            } else {
                "never".into()
            },
        ),
        ("created", output::time(c.created_at.as_deref())),
        ("started", output::time(c.started_at.as_deref())),
        ("last active", output::time(c.last_active_at.as_deref())),
    ];
    if let Some(reason) = c.status_reason.as_deref().filter(|r| !r.is_empty()) {
        pairs.push(("reason", reason.to_owned()));
    }
    for (k, v) in &c.metadata {
        pairs.push(("label", format!("{k}={v}")));
    }
    output::fields(&pairs)
}
