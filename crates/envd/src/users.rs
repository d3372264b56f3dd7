//! Resolving capsule users from `/etc/passwd` and `/etc/group`.

use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user '{0}' does not exist")]
    Unknown(String),
    #[error("looking up user '{0}': {1}")]
    Lookup(String, nix::Error),
}

/// A resolved account: everything needed to run a process as it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Account {
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        let user = User::from_name(name)
            .map_err(|e| UserError::Lookup(name.to_owned(), e))?
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        let groups = CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid]);
        Ok(Self {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
            shell: user.shell,
        })
    }

    /// The name of the account's primary group, or its numeric id.
    pub fn group_name(gid: Gid) -> String {
        match Group::from_gid(gid) {
            Ok(Some(g)) => g.name,
            _ => gid.to_string(),
        }
    }

    pub fn user_name(uid: Uid) -> String {
        match User::from_uid(uid) {
            Ok(Some(u)) => u.name,
            _ => uid.to_string(),
        }
    }

    /// Whether this process can switch to the account (root, or already it).
    pub fn is_current_or_switchable(&self) -> bool {
        let me = Uid::effective();
        me.is_root() || me == self.uid
    }
}
