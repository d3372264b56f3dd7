//! The user a file operation acts as, and path resolution against their home.

use super::creds;
use super::error::FsError;
use crate::paths;
use crate::state::Envd;
use crate::users::Account;
use std::path::PathBuf;

/// A resolved requester: the account plus the default working directory.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    workdir: Option<String>,
}

impl Caller {
    /// The named user, or envd's default user when `name` is `None`.
    pub fn resolve(envd: &Envd, name: Option<&str>) -> Result<Self, FsError> {
        let defaults = envd.defaults();
        let name = name.filter(|n| !n.is_empty()).unwrap_or(&defaults.user);
        Ok(Self {
            account: Account::lookup(name)?,
            workdir: defaults.workdir,
        })
    }

    /// Resolves a request path (`~`, relative → home, empty → workdir or home).
    pub fn path(&self, path: &str) -> Result<PathBuf, FsError> {
        Ok(paths::resolve(
            path,
            &self.account.home,
            self.workdir.as_deref(),
        )?)
    }

    /// Runs blocking filesystem work with this user's credentials on the
    /// blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, FsError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, FsError> + Send + 'static,
    {
        let account = self.account.clone();
        tokio::task::spawn_blocking(move || creds::as_user(&account, f))
            .await
            .map_err(|e| FsError::internal(format!("file operation task failed: {e}")))?
    }
}
