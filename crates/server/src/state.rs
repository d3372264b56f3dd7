//! Shared application state, cloned into every handler (cheap: one `Arc`).

use std::sync::Arc;

use crate::auth::jwt::JwtKey;
use crate::db::Db;

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
}

impl AppState {
    pub fn new(db: Db, jwt_secret: Vec<u8>) -> Self {
        Self(Arc::new(Inner {
            db,
            jwt: JwtKey::new(jwt_secret),
            secure_cookies: false,
            max_body_bytes: 1024 * 1024,
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
        }))
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
}
