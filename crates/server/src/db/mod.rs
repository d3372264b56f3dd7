//! Database access: one pool, two backends (SQLite, PostgreSQL), one query text.
//!
//! Queries go through sqlx's `Any` driver with `$1`-style placeholders, which SQLite accepts
//! too. To keep one text valid on both, the schema sticks to portable types: ids are UUID text,
//! timestamps BIGINT unix seconds, flags BIGINT 0/1, JSON TEXT. The migration sets in
//! `migrations/{sqlite,postgres}` are applied at startup (sqlx's migrator; PostgreSQL takes an
//! advisory lock so several control planes may start at once).
//!
//! Repositories are free functions per table module taking any executor (`&Db::pool()` or a
//! transaction), so a handler can compose them in one transaction when it needs to. Every
//! query on team-owned data takes the team id: scoping lives in the SQL, not in the handler.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod builds;
pub mod hosts;
pub mod metrics;
pub mod sandboxes;
pub mod sessions;
pub mod teams;
pub mod templates;
pub mod tokens;
pub mod users;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row, SqlSafeStr};
use std::time::Duration;

use crate::ids::DbId;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unexpected value in column {0}")]
    Corrupt(&'static str),
}

impl DbError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

pub type DbResult<T> = Result<T, DbError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "lifecycle",
        include_str!("../../migrations/sqlite/0002_lifecycle.sql"),
    ),
    (
        3,
        "builds",
        include_str!("../../migrations/sqlite/0003_builds.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "lifecycle",
        include_str!("../../migrations/postgres/0002_lifecycle.sql"),
    ),
    (
        3,
        "builds",
        include_str!("../../migrations/postgres/0003_builds.sql"),
    ),
];

impl Db {
    /// Connects (`postgres://`/`postgresql://` → PostgreSQL, `sqlite:` → SQLite) without
    /// migrating.
    pub async fn connect(url: &str) -> DbResult<Db> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options
                // One writer at a time anyway; a few readers in parallel under WAL.
                .max_connections(8)
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // WAL: readers don't block the writer; busy_timeout: writers queue
                        // instead of failing with "database is locked".
                        sqlx::raw_sql(
                            "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;",
                        )
                        .execute(conn)
                        .await?;
                        Ok(())
                    })
                });
        } else {
            options = options.max_connections(16);
        }
        let pool = options.connect(url).await?;
        Ok(Db { pool, backend })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> DbResult<Db> {
        let db = Db::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> DbResult<()> {
        let set = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let migrations = set
            .iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

// Row readers: column access with the portable types of this schema.

pub(crate) fn text(row: &AnyRow, col: &'static str) -> DbResult<String> {
    Ok(row.try_get::<String, _>(col)?)
}

pub(crate) fn opt_text(row: &AnyRow, col: &'static str) -> DbResult<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

pub(crate) fn int(row: &AnyRow, col: &'static str) -> DbResult<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn opt_int(row: &AnyRow, col: &'static str) -> DbResult<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

pub(crate) fn float(row: &AnyRow, col: &'static str) -> DbResult<f64> {
    Ok(row.try_get::<f64, _>(col)?)
}

pub(crate) fn flag(row: &AnyRow, col: &'static str) -> DbResult<bool> {
    Ok(int(row, col)? != 0)
}

pub(crate) fn id<T: DbId>(row: &AnyRow, col: &'static str) -> DbResult<T> {
    T::from_db(&text(row, col)?).ok_or(DbError::Corrupt(col))
}

pub(crate) fn opt_id<T: DbId>(row: &AnyRow, col: &'static str) -> DbResult<Option<T>> {
    match opt_text(row, col)? {
        None => Ok(None),
        Some(s) => T::from_db(&s).map(Some).ok_or(DbError::Corrupt(col)),
    }
}

pub(crate) fn json(row: &AnyRow, col: &'static str) -> DbResult<serde_json::Value> {
    serde_json::from_str(&text(row, col)?).map_err(|_| DbError::Corrupt(col))
}
