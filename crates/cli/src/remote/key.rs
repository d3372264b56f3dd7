//! `wrenn key create|ls|rm`: the team's API keys (spec §B.8). These routes take a user login
//! (JWT) only, never an API key.

use clap::Subcommand;

use super::{ConnArgs, Need, output};

#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create an API key; prints the key itself (shown only this once).
    Create {
        /// A name to recognise it by [default: Unnamed API Key].
        #[arg(long)]
        name: Option<String>,
    },
    /// List the team's API keys (prefixes only).
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke an API key by id (`key-…`).
    #[command(visible_alias = "delete")]
    Rm { id: String },
}

pub async fn run(args: KeyArgs) -> anyhow::Result<()> {
    let json = args.conn.json;
    let client = args.conn.client(Need::User)?;
    match args.command {
        KeyCommand::Create { name } => {
            let key = client.create_api_key(name.as_deref()).await?;
            if json {
                output::json(&key)?;
            } else {
                // The key alone on stdout (scripts capture it); the rest on stderr.
                println!("{}", key.key.as_deref().unwrap_or_default());
                eprintln!(
                    "Created API key {} ({}). Store it now: it is not shown again.",
                    key.id, key.name
                );
            }
        }
        KeyCommand::Ls => {
            let keys = client.list_api_keys().await?;
            if json {
                output::json(&keys)?;
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            format!("{}…", k.key_prefix),
                            k.creator_email.clone().unwrap_or_else(|| "-".into()),
                            output::time(k.created_at.as_deref()),
                            output::time(k.last_used.as_deref()),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "NAME", "PREFIX", "CREATED BY", "CREATED", "LAST USED"],
                    &rows,
                )?;
            }
        }
        KeyCommand::Rm { id } => {
            client.delete_api_key(&id).await?;
            if json {
                output::json(&serde_json::json!({"id": id, "deleted": true}))?;
            } else {
                println!("{id} deleted");
            }
        }
    }
    Ok(())
}
