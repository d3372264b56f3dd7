//! Shared application state, cloned into every handler (cheap: one `Arc`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::agent::Agents;
use crate::auth::jwt::JwtKey;
use crate::db::Db;
use crate::events::EventBus;
use crate::scheduler::{LeastLoaded, Scheduler};
use crate::telemetry::Telemetry;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub db: Db,
    pub jwt: JwtKey,
    /// Mark cookies `Secure` (HTTPS deployments).
    pub secure_cookies: bool,
    /// Limit for JSON request bodies.
    pub max_body_bytes: usize,
    /// Connect clients of the host agents, by address.
    pub agents: Agents,
    /// Domain of capsule proxy URLs (`{port}-{capsule_id}.{domain}`, spec §A.3), e.g.
    /// `wrenn.example.com` or `localhost:8080`. `None`: any domain is accepted.
    pub proxy_domain: std::sync::RwLock<Option<String>>,
    /// Capsule and snapshot events for `GET /v1/events/stream`.
    pub events: EventBus,
    /// Chooses the host of every new capsule.
    pub scheduler: Arc<dyn Scheduler>,
    /// Prometheus series behind `GET /metrics`.
    pub telemetry: Telemetry,
    /// Serve `GET /metrics` without credentials (`WRENN_METRICS_PUBLIC=true`).
    pub metrics_public: AtomicBool,
    /// Activation and password-reset mail; `None` without SMTP.
    pub mailer: std::sync::RwLock<Option<Arc<crate::mail::Mailer>>>,
    /// Template build queue: archive directory, worker count, cancel switches.
    pub builds: crate::builds::Builds,
}

impl AppState {
    pub fn new(db: Db, jwt_secret: Vec<u8>) -> Self {
        Self(Arc::new(Inner {
            db,
            jwt: JwtKey::new(jwt_secret),
            secure_cookies: false,
            max_body_bytes: 1024 * 1024,
            agents: Agents::new(),
            proxy_domain: Default::default(),
            events: EventBus::new(),
            scheduler: Arc::new(LeastLoaded::default()),
            telemetry: Telemetry::new(),
            metrics_public: AtomicBool::new(false),
            mailer: Default::default(),
            builds: Default::default(),
        }))
    }

    pub fn with_options(
        db: Db,
        jwt_secret: Vec<u8>,
        secure_cookies: bool,
        max_body_bytes: usize,
    ) -> Self {
        Self(Arc::new(Inner {
            db,
            jwt: JwtKey::new(jwt_secret),
            secure_cookies,
            max_body_bytes,
            agents: Agents::new(),
            proxy_domain: Default::default(),
            events: EventBus::new(),
            scheduler: Arc::new(LeastLoaded::default()),
            telemetry: Telemetry::new(),
            metrics_public: AtomicBool::new(false),
            mailer: Default::default(),
            builds: Default::default(),
        }))
    }

    /// Sets the mailer (SMTP configured) or clears it.
    pub fn set_mailer(&self, mailer: Option<crate::mail::Mailer>) {
        *self.0.mailer.write().unwrap_or_else(|e| e.into_inner()) = mailer.map(Arc::new);
    }

    pub fn mailer(&self) -> Option<Arc<crate::mail::Mailer>> {
        self.0
            .mailer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn builds(&self) -> &crate::builds::Builds {
        &self.0.builds
    }

    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// The pool, for repository calls outside a transaction.
    pub fn pool(&self) -> &sqlx::AnyPool {
        self.0.db.pool()
    }

    pub fn jwt(&self) -> &JwtKey {
        &self.0.jwt
    }

    pub fn secure_cookies(&self) -> bool {
        self.0.secure_cookies
    }

    pub fn max_body_bytes(&self) -> usize {
        self.0.max_body_bytes
    }

    pub fn events(&self) -> &EventBus {
        &self.0.events
    }

    pub fn scheduler(&self) -> &dyn Scheduler {
        self.0.scheduler.as_ref()
    }

    pub fn agents(&self) -> &Agents {
        &self.0.agents
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.0.telemetry
    }

    /// Whether `GET /metrics` answers without credentials.
    pub fn metrics_public(&self) -> bool {
        self.0.metrics_public.load(Ordering::Relaxed)
    }

    pub fn set_metrics_public(&self, public: bool) {
        self.0.metrics_public.store(public, Ordering::Relaxed);
    }

    /// Sets the capsule proxy domain (`wrenn up --proxy-domain`); `None` accepts any domain.
    pub fn set_proxy_domain(&self, domain: Option<String>) {
        let domain = domain
            .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        *self
            .0
            .proxy_domain
            .write()
            .unwrap_or_else(|p| p.into_inner()) = domain;
    }

    pub fn proxy_domain(&self) -> Option<String> {
        self.0
            .proxy_domain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
