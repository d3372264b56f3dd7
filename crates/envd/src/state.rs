//! Daemon-wide state shared by the HTTP routes and the Connect services.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Defaults applied to every process and file operation that does not name its
/// own user, working directory or environment. Set through `POST /init`.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub user: String,
    pub workdir: Option<String>,
    pub env_vars: HashMap<String, String>,
    /// When set, `/files` requires `X-Access-Token` or a valid signature.
    pub access_token: Option<String>,
    /// Unix nanoseconds of the last applied `/init`; older requests are ignored.
    pub last_init_ns: i64,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            user: "root".to_owned(),
            workdir: None,
            env_vars: HashMap::new(),
            access_token: None,
            last_init_ns: 0,
        }
    }
}

#[derive(Clone, Default)]
pub struct Envd {
    pub defaults: Arc<RwLock<Defaults>>,
    /// Snapshot quiesce/resume, tracked connections, port forwarding, CPU gauge.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

impl Envd {
    pub fn defaults(&self) -> Defaults {
        // A poisoned lock only means a writer panicked mid-update of plain data.
        self.defaults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_defaults(&self, f: impl FnOnce(&mut Defaults)) {
        let mut guard = self.defaults.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}
