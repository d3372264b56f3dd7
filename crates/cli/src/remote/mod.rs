//! The client commands: `wrenn login|logout`, `wrenn capsule …`, `wrenn snapshot …`,
//! `wrenn key …`, talking to a control plane over [`wrenn_client`].
//!
//! Connection: `--url`/`WRENN_BASE_URL`, `--api-key`/`WRENN_API_KEY`, else what `wrenn login`
//! saved in `credentials.json` (see [`credentials`]); the saved credentials are only used for
//! the URL they were saved for, so `--url elsewhere` never sends them to another server.
//!
//! Exit codes ([`Exit`]) let scripts tell failures apart; they are listed in `wrenn --help`.

pub mod capsule;
pub mod credentials;
pub mod key;
pub mod login;
mod output;
mod shell;
pub mod snapshot;
pub mod template;

use std::process::ExitCode;

use wrenn_client::{Client, Credential, ErrorKind};

use credentials::Credentials;

pub const DEFAULT_URL: &str = "http://localhost:8080";

/// Text of `wrenn --help` after the commands.
pub const EXIT_CODES_HELP: &str = "\
Exit codes of the client commands (login, capsule, snapshot, key, template):
  0  success
  1  other failure (local I/O, unexpected)
  2  usage error: bad arguments, or the server rejected the request (HTTP 400)
  3  authentication: no credentials, invalid API key or login, forbidden (HTTP 401/403)
  4  not found: no such capsule, snapshot or key (HTTP 404)
  5  conflict: wrong state (e.g. capsule not running) or name taken (HTTP 409)
  6  server or network: unreachable, timeout, HTTP 5xx, capsule failed while waiting
`wrenn capsule exec` and `wrenn capsule shell` exit with the command's exit code once it ran
(255 when it was killed by a signal). `wrenn template build` exits 6 when the build failed and
1 when it was cancelled.";

/// The exit codes of [`EXIT_CODES_HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Failure = 1,
    Usage = 2,
    Auth = 3,
    NotFound = 4,
    Conflict = 5,
    Unavailable = 6,
}

impl From<ErrorKind> for Exit {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Invalid => Exit::Usage,
            ErrorKind::Auth => Exit::Auth,
            ErrorKind::NotFound => Exit::NotFound,
            ErrorKind::Conflict => Exit::Conflict,
            ErrorKind::Server | ErrorKind::Network => Exit::Unavailable,
        }
    }
}

/// A failure the CLI detects itself, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }
}

/// The exit code for an error: the first client or CLI error in its chain decides.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    let exit = error
        .chain()
        .find_map(|cause| {
            if let Some(e) = cause.downcast_ref::<wrenn_client::Error>() {
                Some(Exit::from(e.kind()))
            } else {
                cause.downcast_ref::<CliError>().map(|e| e.exit)
            }
        })
        .unwrap_or(Exit::Failure);
    ExitCode::from(exit as u8)
}

/// One extra line for errors a user can fix in a known way.
pub fn hint(error: &anyhow::Error) -> Option<&'static str> {
    let e = error
        .chain()
        .find_map(|c| c.downcast_ref::<wrenn_client::Error>())?;
    match (e.kind(), e.code()) {
        (ErrorKind::Auth, Some("unauthorized")) => Some(
            "hint: check WRENN_API_KEY / --api-key, or log in again with `wrenn login` \
             (logins expire after 6 hours)",
        ),
        (ErrorKind::Network, _) => {
            Some("hint: is the control plane running? Set its address with --url or WRENN_BASE_URL")
        }
        (_, Some("no_hosts_available")) => {
            Some("hint: no host agent is registered or online; `wrenn up` runs one next to the API")
        }
        _ => None,
    }
}

/// Where to connect and as whom; flattened into every client command (`global`, so the flags
/// go anywhere after the command name).
#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Control plane URL [default: the one `wrenn login` saved, else http://localhost:8080].
    #[arg(long, global = true, env = "WRENN_BASE_URL", value_name = "URL")]
    pub url: Option<String>,
    /// API key (`wrn_…`); overrides the saved credentials.
    #[arg(
        long,
        global = true,
        env = "WRENN_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Print JSON instead of tables and messages.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Which credential a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// API key or user login (capsule and snapshot routes).
    Any,
    /// A user login (JWT): the API key routes (spec §B.8).
    User,
}

/// `url` without trailing slashes, so `http://h:8080/` and `http://h:8080` are the same server.
fn normalize(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

impl ConnArgs {
    /// The URL to talk to: flag/env, else the saved one, else the default.
    pub fn base_url(&self, saved: Option<&Credentials>) -> String {
        match (&self.url, saved) {
            (Some(url), _) if !url.trim().is_empty() => normalize(url),
            (_, Some(saved)) if !saved.url.is_empty() => normalize(&saved.url),
            _ => DEFAULT_URL.to_owned(),
        }
    }

    /// A client with the credential `need` asks for.
    pub fn client(&self, need: Need) -> anyhow::Result<Client> {
        let saved = credentials::load()?;
        let url = self.base_url(saved.as_ref());
        // Saved credentials belong to the URL they were saved for.
        let saved = saved.filter(|s| normalize(&s.url) == url);
        let flag_key = self.api_key.clone().filter(|k| !k.trim().is_empty());
        let saved_key = saved.as_ref().and_then(|s| s.api_key.clone());
        let saved_token = saved.as_ref().and_then(|s| s.token.clone());
        let credential = match need {
            Need::Any => flag_key
                .or(saved_key)
                .map(Credential::ApiKey)
                .or(saved_token.map(Credential::Jwt)),
            Need::User => match saved_token {
                Some(token) => Some(Credential::Jwt(token)),
                None if flag_key.is_some() || saved_key.is_some() => {
                    return Err(CliError::new(
                        Exit::Auth,
                        format!(
                            "this command needs a user login (JWT), and only an API key is \
                             configured for {url}: API keys cannot manage API keys. Run \
                             `wrenn login --email YOU@EXAMPLE.COM` first"
                        ),
                    )
                    .into());
                }
                None => None,
            },
        };
        let Some(credential) = credential else {
            let how = match need {
                Need::Any => "run `wrenn login`, or set WRENN_API_KEY (or pass --api-key)",
                Need::User => "run `wrenn login --email YOU@EXAMPLE.COM`",
            };
            return Err(
                CliError::new(Exit::Auth, format!("no credentials for {url}: {how}")).into(),
            );
        };
        Ok(Client::new(&url, Some(credential))?)
    }
}

/// A usage error (exit 2) from the CLI's own checks.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    CliError::new(Exit::Usage, message).into()
}
