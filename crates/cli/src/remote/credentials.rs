//! `~/.config/wrenn/credentials.json` (or `$XDG_CONFIG_HOME/wrenn/…`): what `wrenn login`
//! saved. Owner-only (0600 file in a 0700 directory): it holds an API key and/or a JWT.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    /// The control plane these credentials are for.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// User JWT from `POST /v1/auth/login` (expires after 6 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `$XDG_CONFIG_HOME/wrenn/credentials.json`, else `$HOME/.config/wrenn/credentials.json`.
pub fn path() -> anyhow::Result<PathBuf> {
    // XDG: a relative XDG_CONFIG_HOME is invalid and must be ignored.
    let base = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .context("neither XDG_CONFIG_HOME nor HOME is set: cannot locate credentials")?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(base.join("wrenn").join("credentials.json"))
}

/// The saved credentials; `None` when there is no file.
pub fn load() -> anyhow::Result<Option<Credentials>> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let creds = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not valid credentials JSON (delete it or run `wrenn login` again)",
            path.display()
        )
    })?;
    Ok(Some(creds))
}

/// Writes the file 0600 (temp file + rename: never a half-written or world-readable file).
pub fn save(creds: &Credentials) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let dir = path.parent().context("credentials path has no parent")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask cannot widen 0600, but be explicit in case the file system ignores modes.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        serde_json::to_writer_pretty(&mut f, creds)?;
        writeln!(f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Deletes the file; true if there was one.
pub fn remove() -> anyhow::Result<bool> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
