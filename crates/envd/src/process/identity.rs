//! Which account a process runs as, and whether envd must switch to it.

use super::error::ProcessError;
use crate::users::{Account, UserError};
use nix::unistd::Uid;
use std::path::PathBuf;

/// The account to run as plus whether credentials must be changed in the child.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub account: Account,
    /// True when envd is root: uid, gid and groups are set in the child.
    pub switch: bool,
}

/// Resolves the requested user (`None` = not named by the client) against the
/// default user.
///
/// envd as root switches to anyone. Unprivileged (a developer's host), it can
/// only run processes as itself: naming another user is PermissionDenied, and
/// an unnamed request whose default user is someone else runs as envd's own
/// user instead of failing every command.
pub fn resolve(requested: Option<&str>, default_user: &str) -> Result<RunAs, ProcessError> {
    let euid = Uid::effective();
    let name = requested.filter(|n| !n.is_empty());
    let account = Account::lookup(name.unwrap_or(default_user)).map_err(|e| match e {
        UserError::Unknown(u) => {
            ProcessError::InvalidArgument(format!("user '{u}' does not exist"))
        }
        other => ProcessError::InvalidArgument(other.to_string()),
    });
    if euid.is_root() {
        return Ok(RunAs {
            account: account?,
            switch: true,
        });
    }
    match (account, name) {
        (Ok(account), _) if account.uid == euid => Ok(RunAs {
            account,
            switch: false,
        }),
        (Ok(account), Some(_)) => Err(ProcessError::PermissionDenied(format!(
            "envd runs unprivileged as uid {euid} and cannot start processes as '{}'",
            account.name
        ))),
        (Err(e), Some(_)) => Err(e),
        (_, None) => Ok(RunAs {
            account: current_account(euid),
            switch: false,
        }),
    }
}

fn current_account(euid: Uid) -> Account {
    if let Some(name) = Account::name_of(euid)
        && let Ok(account) = Account::lookup(&name)
    {
        return account;
    }
    // No passwd entry (e.g. an arbitrary container uid): make do with the env.
    Account {
        name: euid.to_string(),
        uid: euid,
        gid: nix::unistd::Gid::effective(),
        groups: Vec::new(),
        home: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
        shell: PathBuf::from("/bin/sh"),
    }
}
