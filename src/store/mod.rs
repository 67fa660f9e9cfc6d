//! The relational store: SQLite by default, PostgreSQL when `DATABASE_URL`
//! says so.
//!
//! Both go through sqlx's `Any` driver so every query is written once; the
//! schema differs only in column types, hence one migration folder per
//! backend. Queries use `$n` placeholders, which both backends accept.

pub mod checkpoint;
pub mod json_rows;

use std::{path::Path, str::FromStr, time::Duration};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    AnyPool, AssertSqlSafe,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool plus the backend it talks to.
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Store {
    /// Opens the store at `url`, or the embedded SQLite file under `data_dir`.
    pub async fn connect(url: Option<&SecretString>, data_dir: &Path) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let url = match url {
            Some(url) => url.expose_secret().to_owned(),
            None => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("creating data folder {}", data_dir.display()))?;
                format!("sqlite://{}/relais.db?mode=rwc", data_dir.display())
            }
        };
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite: or postgres://");
        };
        let options = AnyConnectOptions::from_str(&url).context("parsing DATABASE_URL")?;
        let pool = match backend {
            // SQLite allows one writer; a small pool with a busy timeout avoids
            // `database is locked` under concurrent requests.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    // A file connection cannot go stale: no ping per checkout.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;").await?;
                            conn.execute(AssertSqlSafe(checkpoint::connection_pragmas())).await?;
                            Ok(())
                        })
                    })
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
            }
            // No ping before each checkout: sqlx already pings a connection
            // when it returns to the pool (and closes it if broken), and a
            // second ping on checkout doubled the round trips of every short
            // request.
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
            }
        }
        .context("connecting to the database")?;
        Ok(Store { pool, backend })
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .context("running migrations")?;
        Ok(())
    }

    /// `true` when the store answers a trivial query (used by `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// `true` when `e` is a unique-constraint violation (on either backend).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
