//! The service database: an embedded SQLite file in WAL mode, with its migrations run at
//! start.
//!
//! SQLite has one writer at a time; oubli gives it exactly one write connection, so
//! that transactions queue in the pool instead of failing with `SQLITE_BUSY`, and a pool
//! of read connections that see committed data without waiting for writers.

use anyhow::Context;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A transaction on the write connection.
pub type Tx<'c> = Transaction<'c, Sqlite>;

/// The service database.
#[derive(Debug, Clone)]
pub struct Store {
    /// The one write connection.
    pub write: SqlitePool,
    /// Read-only connections.
    pub read: SqlitePool,
    /// Whether the write connection was lent with `synchronous = NORMAL`.
    relaxed: Arc<AtomicBool>,
}

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A time column as RFC 3339 text for the API.
pub fn to_rfc3339(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Store {
    /// Opens (creating if missing) the database file and runs the migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the API answers, even across a power cut.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let relaxed = Arc::new(AtomicBool::new(false));
        let reset = relaxed.clone();
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A connection lent by `relaxed()` is made durable again before its next use.
            .after_release(move |conn, _| {
                let reset = reset.clone();
                Box::pin(async move {
                    if reset.swap(false, Ordering::SeqCst) {
                        sqlx::query("PRAGMA synchronous = FULL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the database {}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&write)
            .await
            .context("running the database migrations")?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("opening the database {} for reading", path.display()))?;
        Ok(Store {
            write,
            read,
            relaxed,
        })
    }

    /// Begins a transaction on the write connection.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn begin(&self) -> sqlx::Result<Tx<'static>> {
        self.write.begin().await
    }

    /// Lends the write connection with `synchronous = NORMAL`, for bookkeeping that may be
    /// redone: in WAL mode such a commit survives a crash of the process, and only a power
    /// cut can undo it. The queue uses it for leases and task outcomes, whose loss makes a
    /// task run again (plugins' effects are idempotent); an accepted request or a decision
    /// always commits durably.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn relaxed(&self) -> sqlx::Result<PoolConnection<Sqlite>> {
        let mut conn = self.write.acquire().await?;
        self.relaxed.store(true, Ordering::SeqCst);
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        Ok(conn)
    }

    /// Closes both pools, waiting for open transactions.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}
