//! Control-plane settings and the secrets kept in the data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the REST API.
    pub listen: SocketAddr,
    /// Holds the SQLite database (unless `database_url` points elsewhere) and `jwt-secret`.
    pub data_dir: PathBuf,
    /// `postgres://…` selects PostgreSQL; `sqlite:…` a given SQLite file; `None` →
    /// `<data_dir>/wrenn.db`.
    pub database_url: Option<String>,
    /// HS256 key for user JWTs; `None` → generated once into `<data_dir>/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Mark session cookies `Secure` (set it when the API is served over HTTPS).
    pub secure_cookies: bool,
    /// Limit of JSON request bodies (file uploads set their own limit per route).
    pub max_body_bytes: usize,
    /// Host agent to register as this control plane's (platform) host at start, `host:port`
    /// or `http://host:port` (`wrenn up` passes its in-process agent).
    pub agent_url: Option<String>,
    /// Domain of capsule proxy URLs (`{port}-{id}.{domain}`), e.g. `localhost:8080`.
    pub proxy_domain: Option<String>,
    /// Serve `GET /metrics` without credentials (default: platform admins only).
    pub metrics_public: bool,
    /// SMTP server for activation and password-reset mail (`smtp://user:pass@host:587`);
    /// `None`: signups are active at once and reset tokens are logged.
    pub smtp_url: Option<String>,
    /// Sender of those mails.
    pub smtp_from: String,
    /// Base URL of links in mails; `None` → `http://<listen>`.
    pub public_url: Option<String>,
    /// Template builds run at once (`WRENN_BUILD_WORKERS`, default 1).
    pub build_workers: usize,
}

impl Config {
    pub const DEFAULT_DATA_DIR: &'static str = "/var/lib/wrenn";
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            database_url: None,
            jwt_secret: None,
            secure_cookies: false,
            max_body_bytes: 1024 * 1024,
            agent_url: None,
            proxy_domain: None,
            metrics_public: false,
            smtp_url: None,
            smtp_from: "Wrenn <wrenn@localhost>".to_owned(),
            public_url: None,
            build_workers: 1,
        }
    }

    /// Defaults overridden by `WRENN_DATA_DIR`, `WRENN_LISTEN`, `DATABASE_URL`, `JWT_SECRET`,
    /// `WRENN_SECURE_COOKIES=true`, `WRENN_AGENT_URL`, `WRENN_PROXY_DOMAIN`,
    /// `WRENN_METRICS_PUBLIC=true`, `WRENN_SMTP_URL`, `WRENN_SMTP_FROM`, `WRENN_PUBLIC_URL`,
    /// `WRENN_BUILD_WORKERS`.
    pub fn from_env() -> anyhow::Result<Self> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut config =
            Self::new(env("WRENN_DATA_DIR").unwrap_or_else(|| Self::DEFAULT_DATA_DIR.into()));
        if let Some(listen) = env("WRENN_LISTEN") {
            config.listen = listen
                .parse()
                .map_err(|e| anyhow::anyhow!("WRENN_LISTEN={listen:?}: {e}"))?;
        }
        config.database_url = env("DATABASE_URL");
        config.jwt_secret = env("JWT_SECRET");
        config.secure_cookies =
            env("WRENN_SECURE_COOKIES").is_some_and(|v| v == "true" || v == "1");
        config.agent_url = env("WRENN_AGENT_URL");
        config.proxy_domain = env("WRENN_PROXY_DOMAIN");
        config.metrics_public =
            env("WRENN_METRICS_PUBLIC").is_some_and(|v| v == "true" || v == "1");
        config.smtp_url = env("WRENN_SMTP_URL");
        if let Some(from) = env("WRENN_SMTP_FROM") {
            config.smtp_from = from;
        }
        config.public_url = env("WRENN_PUBLIC_URL");
        if let Some(n) = env("WRENN_BUILD_WORKERS") {
            config.build_workers = n
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| anyhow::anyhow!("WRENN_BUILD_WORKERS={n:?}: expected 1..=64"))?;
        }
        Ok(config)
    }

    /// The database URL actually used.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => sqlite_url(&self.data_dir.join("wrenn.db")),
        }
    }
}

/// `sqlite://<path>?mode=rwc` (create if missing), with the characters that would end the path
/// part of the URL escaped.
pub fn sqlite_url(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' | ' ' => escaped.push_str(&format!("%{:02X}", c as u32)),
            c => escaped.push(c),
        }
    }
    format!("sqlite://{escaped}?mode=rwc")
}

/// The JWT key: `configured` if given, else the one stored in `<data_dir>/jwt-secret`, created
/// on first use (32 random bytes, hex) with mode 0600 so only the server's user can read it.
pub fn load_or_create_jwt_secret(
    data_dir: &Path,
    configured: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = configured {
        anyhow::ensure!(
            secret.len() >= 32,
            "JWT_SECRET must be at least 32 characters"
        );
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt-secret");
    let secret = crate::auth::random_hex(32);
    // create_new: two processes starting at once must not overwrite each other's secret.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a JWT secret");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(anyhow::anyhow!("creating {}: {e}", path.display())),
    }
    let meta = std::fs::metadata(&path)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "JWT secret was readable by others; setting mode 0600");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let stored = std::fs::read_to_string(&path)?;
    let stored = stored.trim();
    anyhow::ensure!(
        stored.len() >= 32,
        "{} is too short (need ≥ 32 characters)",
        path.display()
    );
    Ok(stored.as_bytes().to_vec())
}
