//! `wrenn login` and `wrenn logout`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use wrenn_client::{Client, Credential};

use super::credentials;
use super::{ConnArgs, output, usage};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Email and password: `wrenn login --email me@example.com` asks for the password (or reads it from \
WRENN_PASSWORD, or one line of standard input when it is not a terminal) and saves a user login \
(JWT, valid 6 hours; needed by `wrenn key`).
API key: `wrenn login --api-key wrn_…` checks the key and saves it.
Credentials go to $XDG_CONFIG_HOME/wrenn/credentials.json (default ~/.config/wrenn/), mode 0600, \
for the given --url; --url, WRENN_BASE_URL, --api-key and WRENN_API_KEY override them.")]
pub struct LoginArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Log in as this user (email + password → JWT).
    #[arg(long)]
    email: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let saved = credentials::load()?;
    let url = args.conn.base_url(saved.as_ref());
    // Keep the other kind of credential when logging in again to the same server.
    let mut creds = saved
        .filter(|s| s.url.trim_end_matches('/') == url)
        .unwrap_or_default();
    creds.url = url.clone();

    let what = if let Some(email) = args.email.as_deref().or(prompted_email()?.as_deref()) {
        let email = email.trim().to_owned();
        let password = password(&email)?;
        let client = Client::new(&url, None)?;
        let auth = client.login(&email, &password).await?;
        creds.token = Some(auth.token);
        creds.email = Some(if auth.email.is_empty() {
            email
        } else {
            auth.email
        });
        format!("as {}", creds.email.as_deref().unwrap_or_default())
    } else if let Some(key) = args.conn.api_key.clone().filter(|k| !k.trim().is_empty()) {
        let key = key.trim().to_owned();
        // A cheap authenticated call: a wrong key fails here, not at the next command.
        let client = Client::new(&url, Some(Credential::ApiKey(key.clone())))?;
        client
            .list_capsules()
            .await
            .context("checking the API key")?;
        creds.api_key = Some(key);
        "with an API key".to_owned()
    } else {
        return Err(usage(
            "nothing to log in with: pass --email EMAIL (password login) or --api-key KEY",
        ));
    };
    let path = credentials::save(&creds)?;
    if args.conn.json {
        output::json(&serde_json::json!({
            "url": url,
            "email": creds.email,
            "api_key": creds.api_key.is_some(),
            "user_login": creds.token.is_some(),
            "credentials_file": path,
        }))?;
    } else {
        println!("Logged in to {url} {what}; saved to {}", path.display());
    }
    Ok(())
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let removed = credentials::remove()?;
    if args.conn.json {
        output::json(&serde_json::json!({ "removed": removed }))?;
    } else if removed {
        println!("Removed {}", credentials::path()?.display());
    } else {
        println!("Not logged in");
    }
    Ok(())
}

/// Asks for the email when neither --email nor an API key was given and a person is typing.
fn prompted_email() -> anyhow::Result<Option<String>> {
    let stdin = std::io::stdin();
    let has_key = std::env::var_os("WRENN_API_KEY").is_some_and(|k| !k.is_empty());
    if has_key || !stdin.is_terminal() {
        return Ok(None);
    }
    eprint!("Email: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    Ok((!line.is_empty()).then_some(line))
}

/// WRENN_PASSWORD, else a prompt without echo on a terminal, else one line of stdin.
fn password(email: &str) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("WRENN_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("Password for {email}: ");
        std::io::stderr().flush()?;
        let _echo_off = super::shell::EchoOff::new(&stdin);
        stdin.lock().read_line(&mut line)?;
        eprintln!();
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(usage("empty password"));
    }
    Ok(password)
}
