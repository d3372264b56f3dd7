//! `wrenn snapshot create|ls|rm`: snapshot templates (spec §B.4).

use clap::Subcommand;

use super::{ConnArgs, Need, output};

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Snapshot a running or paused capsule (memory included) into a template; prints its name.
    Create {
        /// The capsule (`cl-…`).
        capsule_id: String,
        /// Template name [server default: template-<8 hex>].
        #[arg(long)]
        name: Option<String>,
    },
    /// List templates: the team's snapshots and the platform's base images.
    #[command(visible_alias = "list")]
    Ls {
        /// Only `base` or only `snapshot` templates.
        #[arg(long = "type", value_parser = ["base", "snapshot"])]
        kind: Option<String>,
    },
    /// Delete one of the team's snapshot templates.
    #[command(visible_alias = "delete")]
    Rm { name: String },
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    let json = args.conn.json;
    let client = args.conn.client(Need::Any)?;
    match args.command {
        SnapshotCommand::Create { capsule_id, name } => {
            let bar = output::spinner(format!("Snapshotting {capsule_id}"));
            let result = client.create_snapshot(&capsule_id, name.as_deref()).await;
            bar.finish_and_clear();
            let template = result?;
            if json {
                output::json(&template)?;
            } else {
                println!("{}", template.name);
            }
        }
        SnapshotCommand::Ls { kind } => {
            let templates = client.list_templates(kind.as_deref()).await?;
            if json {
                output::json(&templates)?;
            } else {
                let dash = |n: i64| if n > 0 { n.to_string() } else { "-".into() };
                let rows: Vec<Vec<String>> = templates
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.kind.clone(),
                            dash(t.vcpus),
                            if t.memory_mb > 0 {
                                format!("{} MiB", t.memory_mb)
                            } else {
                                "-".into()
                            },
                            output::bytes(t.size_bytes),
                            if t.platform { "platform" } else { "team" }.to_owned(),
                            output::time(t.created_at.as_deref()),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "NAME", "TYPE", "VCPUS", "MEMORY", "SIZE", "OWNER", "CREATED",
                    ],
                    &rows,
                )?;
            }
        }
        SnapshotCommand::Rm { name } => {
            client.delete_snapshot(&name).await?;
            if json {
                output::json(&serde_json::json!({"name": name, "deleted": true}))?;
            } else {
                println!("{name} deleted");
            }
        }
    }
    Ok(())
}
