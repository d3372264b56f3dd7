//! Daemon lifecycle around snapshots: background loops (CPU sampler, port
//! forwarding), quiesce on `POST /snapshot/prepare` and resume on the next
//! `GET /health` or `POST /init`.

use crate::conntrack::{ConnId, ConnTracker};
use crate::ports::PortForwarder;
use crate::sysstat::{self, CpuGauge};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Whether to forward loopback-only listeners to the external interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PortForwardMode {
    /// Only when envd is PID 1 (inside a capsule); a developer's host keeps
    /// its loopback services private.
    Auto,
    On,
    Off,
}

impl PortForwardMode {
    pub fn enabled(self) -> bool {
        match self {
            Self::Auto => std::process::id() == 1,
            Self::On => true,
            Self::Off => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where `/init` writes `.WRENN_SANDBOX_ID` and `.WRENN_TEMPLATE_ID`.
    pub run_dir: PathBuf,
    /// envd's own port, never forwarded.
    pub envd_port: u16,
    pub port_forward: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            run_dir: PathBuf::from("/run/wrenn"),
            envd_port: crate::DEFAULT_PORT,
            port_forward: false,
        }
    }
}

#[derive(Default)]
pub struct Lifecycle {
    config: OnceLock<Config>,
    pub conns: ConnTracker,
    pub ports: PortForwarder,
    pub cpu: CpuGauge,
    quiesced: AtomicBool,
    /// Serialises quiesce and resume.
    transition: tokio::sync::Mutex<()>,
}

impl Lifecycle {
    /// Applies the configuration and starts the background loops. Call once,
    /// inside the runtime.
    pub fn start(self: &Arc<Self>, config: Config) {
        if self.config.set(config).is_err() {
            tracing::warn!("lifecycle already started");
            return;
        }
        tokio::spawn(sample_cpu(Arc::downgrade(self)));
        if self.config().port_forward {
            self.ports.start(self.config().envd_port);
        }
    }

    pub fn config(&self) -> &Config {
        static DEFAULT: OnceLock<Config> = OnceLock::new();
        self.config
            .get()
            .unwrap_or_else(|| DEFAULT.get_or_init(Config::default))
    }

    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::SeqCst)
    }

    /// Prepares for a checkpoint: stops port forwarding and closes every
    /// tracked connection except `own` (the caller's, which must still carry
    /// the response; responses while quiesced say `Connection: close`).
    pub async fn quiesce(&self, own: Option<ConnId>) {
        let _t = self.transition.lock().await;
        self.quiesced.store(true, Ordering::SeqCst);
        self.ports.stop().await;
        let closed = self.conns.close_all_except(own);
        tracing::info!(closed, "quiesced for snapshot");
        if let Some(id) = own {
            // Backstop for a client or protocol that ignores `Connection: close`.
            let conns = self.conns.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                conns.close(id);
            });
        }
    }

    /// Undoes [`Self::quiesce`] (after a restore, or an aborted pause): closes
    /// connections left from before (except `own`) and restarts port
    /// forwarding. Returns whether the daemon was quiesced.
    pub async fn resume(&self, own: Option<ConnId>) -> bool {
        if !self.is_quiesced() {
            return false;
        }
        let _t = self.transition.lock().await;
        if !self.quiesced.swap(false, Ordering::SeqCst) {
            return false;
        }
        let closed = self.conns.close_all_except(own);
        let config = self.config();
        if config.port_forward {
            self.ports.start(config.envd_port);
        }
        // Nonzero after a restore that replayed events of deleted epoll interests (see
        // `epoll_tokens`): evidence that the filter was needed.
        let stale_epoll_events = crate::epoll_tokens::dropped();
        tracing::info!(closed, stale_epoll_events, "resumed after snapshot");
        true
    }
}

async fn sample_cpu(lifecycle: std::sync::Weak<Lifecycle>) {
    let mut prev = sysstat::read_cpu_times();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(lc) = lifecycle.upgrade() else {
            return;
        };
        if lc.is_quiesced() {
            continue;
        }
        let now = sysstat::read_cpu_times();
        if let (Some(p), Some(n)) = (prev, now) {
            lc.cpu.set(sysstat::used_pct(p, n));
        }
        prev = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn quiesce_and_resume_toggle_once() {
        let lc = Arc::new(Lifecycle::default());
        assert!(!lc.resume(None).await);
        lc.quiesce(None).await;
        assert!(lc.is_quiesced());
        assert!(lc.resume(None).await);
        assert!(!lc.is_quiesced());
        assert!(!lc.resume(None).await);
        assert_eq!(lc.config().run_dir, PathBuf::from("/run/wrenn"));
    }
}
