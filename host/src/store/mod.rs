//! The service database: the embedded SQLite file (the default) or a PostgreSQL server,
//! chosen by the database setting, with the same queries on both and each backend's
//! migrations run at start.
//!
//! - **SQLite** has one writer at a time; oubli gives it exactly one write connection, so
//!   that transactions queue in the pool instead of failing with `SQLITE_BUSY`, and a pool
//!   of read connections that see committed data without waiting for writers. One process
//!   owns the file.
//! - **PostgreSQL** is shared by any number of processes. A transaction that appended
//!   to the audit trail takes one transaction-scoped advisory lock when it commits (see
//!   [`trail`]), so that the hash chain stays a single line however many processes
//!   write; tasks are claimed with `FOR UPDATE SKIP LOCKED`, and queued work is announced
//!   with `NOTIFY` (see [`TASKS_CHANNEL`]).
//!
//! Queries are written once, with `$1` placeholders and types both backends share:
//! text, 64-bit integers (times are milliseconds since the Unix epoch) and bytes.

use anyhow::Context;
use sqlx::Arguments as _;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The schema's migrations, embedded, per backend.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub mod flush;
pub mod trail;

use flush::Flusher;

/// A transaction on the service database, which carries the audit events appended in it
/// (see [`crate::audit::append`]) until it commits: they are written then, in one
/// statement, under the trail's lock (see [`trail`]). Dropped without a commit, it rolls
/// back with its events. It reads and writes as the connection it dereferences to.
pub struct Tx<'c> {
    inner: Transaction<'c, Any>,
    trail: Vec<trail::Pending>,
    /// How a transaction on SQLite commits (see [`flush`]).
    commit: Option<(Arc<Flusher>, Commit)>,
}

/// How a transaction on SQLite commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// At `synchronous = NORMAL`, waiting for no flush ([`Store::relaxed`]).
    Relaxed,
    /// Committed at `synchronous = NORMAL`, then waits for a flush it shares with the
    /// commits beside it, without holding the write connection meanwhile. `Own`: only
    /// its caller relies on it being on disk, so the barriers before what leaves the
    /// process do not wait for it ([`Store::begin_own`]).
    Shared,
    Own,
}

impl<'c> Tx<'c> {
    /// Appends an event to the trail, written when the transaction commits.
    pub fn append(&mut self, event: trail::Pending) {
        self.trail.push(event);
    }

    /// Writes the events appended in the transaction, then commits it; a durable one
    /// returns once it is on disk.
    ///
    /// # Errors
    /// When the database fails: nothing of the transaction is kept then. When the log
    /// could not be flushed, the commit may have been kept in memory only.
    pub async fn commit(self) -> sqlx::Result<()> {
        self.commit_unflushed().await?.on_disk().await
    }

    /// As [`Tx::commit`], returning once the commit is written but perhaps not yet on
    /// disk: [`OnDisk::on_disk`] then waits for that, so that the caller can go on
    /// meanwhile (the intake begins its next batch). Nothing may leave the process on
    /// the strength of the commit before it.
    ///
    /// # Errors
    /// As [`Tx::commit`].
    pub async fn commit_unflushed(mut self) -> sqlx::Result<OnDisk> {
        let events = std::mem::take(&mut self.trail);
        trail::write(&mut self.inner, &events).await?;
        let Some((flusher, how)) = self.commit.take() else {
            self.inner.commit().await?;
            return Ok(OnDisk(None));
        };
        let committing = flusher.number(how == Commit::Shared);
        let committed = self.inner.commit().await;
        let number = committing.written();
        committed?;
        Ok(OnDisk(
            (how != Commit::Relaxed).then_some((flusher, number)),
        ))
    }

    /// Rolls the transaction back, with its events.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn rollback(self) -> sqlx::Result<()> {
        self.inner.rollback().await
    }
}

/// Marks an API answer built only from what its handler read before its own durable
/// commit, which is on disk: that commit's flush covers everything the answer tells of,
/// so the answer need not wait for the durable commits made since (see [`flush`]). A
/// handler may mark its answer only when both hold: nothing in it was read after that
/// commit, and the commit's `on_disk` has returned (a plain [`Tx::commit`] waits for it).
#[derive(Debug, Clone, Copy)]
pub struct Covered;

/// A commit that is written, and on disk once [`OnDisk::on_disk`] returns.
#[derive(Debug)]
#[must_use = "a durable commit is on disk only once `on_disk` returns"]
pub struct OnDisk(Option<(Arc<Flusher>, u64)>);

impl OnDisk {
    /// Waits until the commit is on disk.
    ///
    /// # Errors
    /// When SQLite's log could not be flushed: the commit may be lost in a power cut.
    pub async fn on_disk(self) -> sqlx::Result<()> {
        match self.0 {
            Some((flusher, number)) => flusher.on_disk(number).await.map_err(sqlx::Error::Io),
            None => Ok(()),
        }
    }
}

impl Deref for Tx<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("events", &self.trail.len())
            .finish_non_exhaustive()
    }
}

/// The `NOTIFY` channel that announces queued tasks to workers on PostgreSQL.
pub const TASKS_CHANNEL: &str = "oubli_tasks";

/// The name sqlx's `Any` driver gives a PostgreSQL connection (`backend_name`).
pub const POSTGRES_DRIVER: &str = "PostgreSQL";

/// The advisory lock key that serialises appends to the audit trail on PostgreSQL.
const TRAIL_LOCK: i64 = 0x6f75_626c_6900_0001;

/// Which database server holds the service's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The service database.
#[derive(Debug, Clone)]
pub struct Store {
    /// Connections that write (on SQLite exactly one).
    pub write: AnyPool,
    /// Connections that read (on PostgreSQL the same pool as `write`).
    pub read: AnyPool,
    /// Connections for bookkeeping that may be redone (see [`Store::relaxed`]).
    relaxed_pool: AnyPool,
    backend: Backend,
    /// The PostgreSQL URL, for `LISTEN`.
    url: Option<String>,
    /// The transactions someone is waiting on (see [`foreground`]) that wait for SQLite's
    /// write connection: the others let them go first.
    waiting: Arc<Waiting>,
    /// SQLite's flushes of durable commits (see [`flush`]).
    flusher: Option<Arc<Flusher>>,
    /// Whether SQLite's write connection may be at `synchronous = NORMAL`, as a
    /// transaction left it (`false` means certainly `FULL`): any other taker makes it
    /// durable again first. Nothing takes it with `try_acquire`, which would skip that.
    relaxed: Arc<AtomicBool>,
}

/// How many [`foreground`] transactions wait for SQLite's write connection, and a
/// wake-up for those that let them go first when none is left.
#[derive(Debug, Default)]
struct Waiting {
    count: std::sync::atomic::AtomicUsize,
    none: tokio::sync::Notify,
}

/// One foreground transaction waiting for the write connection, counted until dropped
/// (when it has the connection, or its caller gave up).
struct InLine<'a>(&'a Waiting);

impl<'a> InLine<'a> {
    fn new(waiting: &'a Waiting) -> Self {
        waiting.count.fetch_add(1, Ordering::SeqCst);
        InLine(waiting)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

tokio::task_local! {
    static FOREGROUND: ();
}

/// Runs `work` as work someone waits on (an API request, the intake's group commit):
/// on SQLite its transactions take the one write connection before the background's
/// (the workers' bookkeeping, webhooks, purges), which wait while any of them waits, at
/// most [`BACKGROUND_YIELDS_AT_MOST`] each time.
pub async fn foreground<F: std::future::Future>(work: F) -> F::Output {
    FOREGROUND.scope((), work).await
}

/// The longest a background transaction lets foreground ones go first, so that a
/// steady stream of requests delays the workers' bookkeeping but never stops it.
pub const BACKGROUND_YIELDS_AT_MOST: Duration = Duration::from_millis(20);

tokio::task_local! {
    /// Set while a transaction ([`Store::begin`], [`Store::relaxed`]) takes SQLite's
    /// write connection, for its `before_acquire`: the connection is marked as possibly
    /// relaxed, then set in the statement that begins the transaction. Any other taker
    /// gets the connection at `synchronous = FULL`.
    static BEGINNING: ();
}

/// What begins a transaction on SQLite's write connection, setting `synchronous = NORMAL`
/// in the same round trip (changing it expires no prepared statement): a durable
/// transaction is flushed after its commit (see [`flush`]).
const BEGIN_RELAXED: &str = "PRAGMA synchronous = NORMAL; BEGIN";

/// Milliseconds since the Unix epoch, the unit of every time column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A time column as RFC 3339 text for the API.
pub fn to_rfc3339(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Whether a database setting names a PostgreSQL server rather than an SQLite file.
pub fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Whether a failed transaction may simply be run again: PostgreSQL aborted it to break a
/// deadlock (`40P01`) or a serialisation conflict (`40001`).
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code())
            .is_some_and(|code| code == "40P01" || code == "40001")
    })
}

/// How often a transaction PostgreSQL aborted to break a deadlock is run again.
pub(crate) const TRANSIENT_RETRIES: u32 = 5;

/// Runs `attempt` (a whole transaction) again while it fails as [`is_transient`], up to
/// [`TRANSIENT_RETRIES`] more times; returns its last result.
///
/// # Errors
/// The last attempt's error.
pub async fn retrying<T, F, Fut>(mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) && tries < TRANSIENT_RETRIES => tries += 1,
            result => return result,
        }
    }
}

/// Whether a write was refused by a unique constraint: what another writer created at
/// the same time (answered as a conflict, never pre-checked by a read that races).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// Takes the audit trail's lock for the rest of the transaction (PostgreSQL; SQLite's
/// single writer already serialises): taken only to write events (see [`trail`]) or to
/// purge them, with nothing but the trail's rows touched after it, so that its holder
/// never waits on another writer's rows.
///
/// # Errors
/// When the database fails.
pub async fn lock_trail(conn: &mut AnyConnection) -> sqlx::Result<()> {
    if on_postgres(conn) {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(TRAIL_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// What a `SELECT` of a row the transaction goes on to change ends with, so that writers
/// of the same row take turns from their reads on: ` FOR UPDATE` on PostgreSQL, nothing
/// on SQLite (its single writer already serialises).
pub fn for_update(conn: &AnyConnection) -> &'static str {
    if on_postgres(conn) { " FOR UPDATE" } else { "" }
}

/// What a `SELECT` of a row the transaction relies on (without changing it) ends with,
/// so that no other writer deletes or changes it until the transaction ends:
/// ` FOR SHARE` on PostgreSQL, nothing on SQLite.
pub fn for_share(conn: &AnyConnection) -> &'static str {
    if on_postgres(conn) { " FOR SHARE" } else { "" }
}

/// Whether `conn` is a PostgreSQL connection (else SQLite).
pub fn on_postgres(conn: &AnyConnection) -> bool {
    conn.backend_name() == POSTGRES_DRIVER
}

/// Takes an exclusive `flock` on the folder of an SQLite database, waiting for it; held
/// until the file is dropped. The folder, not the database file: closing another
/// descriptor of the database file would drop SQLite's own locks on it.
async fn lock_folder(path: &Path) -> anyhow::Result<std::fs::File> {
    let folder = std::path::absolute(path)?
        .parent()
        .map(Path::to_path_buf)
        .context("the database has no folder")?;
    tokio::task::spawn_blocking(move || {
        let handle = std::fs::File::open(&folder)
            .with_context(|| format!("opening {} to lock it", folder.display()))?;
        rustix::fs::flock(&handle, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", folder.display()))?;
        Ok(handle)
    })
    .await?
}

impl Store {
    /// What a claiming `SELECT … LIMIT n` ends with so that processes sharing the
    /// database do not claim the same rows: ` FOR UPDATE SKIP LOCKED` on PostgreSQL,
    /// nothing on SQLite (one process, one writer).
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// Opens the database a setting names: a `postgres://` URL, or else an SQLite file
    /// path (created if missing), and runs the migrations.
    ///
    /// # Errors
    /// When the database cannot be reached or a migration fails.
    pub async fn open(location: &str) -> anyhow::Result<Self> {
        if is_postgres(location) {
            Self::open_postgres(location).await
        } else {
            Self::open_sqlite(Path::new(location)).await
        }
    }

    /// Opens (creating if missing) an SQLite database file and runs the migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open_sqlite(path: &Path) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let options = |mode: &str| {
            let url = url::Url::from_file_path(std::path::absolute(path)?)
                .map_err(|()| anyhow::anyhow!("{} is not a usable file path", path.display()))?;
            let url = format!("sqlite://{}?mode={mode}", url.path());
            AnyConnectOptions::from_str(&url).map_err(anyhow::Error::from)
        };
        let relaxed = Arc::new(AtomicBool::new(false));
        let (connected, reset) = (relaxed.clone(), relaxed.clone());
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |conn, _| {
                let connected = connected.clone();
                Box::pin(async move {
                    // FULL: a commit is on disk before it returns, even across a power
                    // cut (a transaction sets its own, see `flush`).
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    // A new connection skips `before_acquire`: a transaction taking it
                    // marks it here.
                    connected.store(BEGINNING.try_with(|()| ()).is_ok(), Ordering::SeqCst);
                    Ok(())
                })
            })
            // A file on this machine: there is no connection to lose, and a ping would be
            // one more round trip to the connection's thread per use.
            .test_before_acquire(false)
            // The connection is left at `synchronous = NORMAL` by a transaction until it is
            // taken for anything else, which makes it durable again first (a transaction
            // in the statement that begins it, anything else here).
            .before_acquire(move |conn, _| {
                let reset = reset.clone();
                Box::pin(async move {
                    if BEGINNING.try_with(|()| ()).is_ok() {
                        // Marked before the pragma is sent: a call dropped meanwhile
                        // still leaves the connection to be made durable again.
                        reset.store(true, Ordering::SeqCst);
                    } else if reset.load(Ordering::SeqCst) {
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        reset.store(false, Ordering::SeqCst);
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(Duration::from_secs(30))
            // Never closed while the store is open, so that SQLite keeps its log where
            // the flusher finds it (see `flush`).
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options("rwc")?)
            .await
            .with_context(|| format!("opening the database {}", path.display()))?;
        // Processes opening a new database at once (a first `serve` and a `token create`)
        // migrate it one after the other: the others then find nothing left to do.
        let _migrating = lock_folder(path).await?;
        SQLITE_MIGRATIONS
            .run(&write)
            .await
            .context("running the database migrations")?;
        drop(_migrating);
        let read = AnyPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            })
            .connect_with(options("ro")?)
            .await
            .with_context(|| format!("opening the database {} for reading", path.display()))?;
        // The file as SQLite names it (links resolved), beside which it keeps its log.
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&write)
                .await
                .context("reading the database's file name")?;
        let flusher = Flusher::new(Path::new(&file), write.clone())
            .context("finding the database's write-ahead log")?;
        Ok(Store {
            relaxed_pool: write.clone(),
            write,
            read,
            backend: Backend::Sqlite,
            url: None,
            waiting: Arc::default(),
            flusher: Some(Arc::new(flusher)),
            relaxed,
        })
    }

    /// Connects to a PostgreSQL database and runs the migrations.
    ///
    /// # Errors
    /// When the server cannot be reached or a migration fails.
    pub async fn open_postgres(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url).context("the PostgreSQL URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .context("connecting to PostgreSQL")?;
        // Migrations of processes starting together run one after the other.
        POSTGRES_MIGRATIONS
            .run(&pool)
            .await
            .context("running the database migrations")?;
        let relaxed_pool = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET synchronous_commit = off").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Store {
            write: pool.clone(),
            read: pool,
            relaxed_pool,
            backend: Backend::Postgres,
            url: Some(url.to_owned()),
            waiting: Arc::default(),
            flusher: None,
            relaxed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers, for reading and for writing, within `timeout` in
    /// all, and holds every migration of this build: `Err` says what is not ready, in
    /// words that name no server, user or path (`/readyz` answers anyone); the cause is
    /// logged.
    ///
    /// # Errors
    /// What is not ready, in words.
    pub async fn readiness(&self, timeout: Duration) -> Result<i64, String> {
        let probe = async {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&self.read)
                    .await
                    .map_err(|e| ("read", e))?;
            // SQLite's only writer busy with a transaction is a writer at work: only an
            // idle one is asked.
            if self.write.is_closed() {
                return Err(("reached for writing", sqlx::Error::PoolClosed));
            }
            if self.backend == Backend::Postgres || self.write.num_idle() > 0 {
                sqlx::query_scalar::<_, i64>("SELECT CAST(1 AS BIGINT)")
                    .fetch_one(&self.write)
                    .await
                    .map_err(|e| ("reached for writing", e))?;
            }
            Ok::<_, (&str, sqlx::Error)>(applied.unwrap_or(0))
        };
        if let Some(failed) = self.flush_failed() {
            tracing::warn!(error = %failed, "readiness: the database's log cannot be flushed");
            return Err("the database cannot be written to disk".into());
        }
        let applied = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(applied)) => applied,
            Ok(Err((what, e))) => {
                tracing::warn!(error = %e, "readiness: the database cannot be {what}");
                return Err(format!("the database cannot be {what}"));
            }
            Err(_) => {
                return Err(format!(
                    "the database did not answer within {} ms",
                    timeout.as_millis()
                ));
            }
        };
        let migrations = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if applied < latest {
            return Err(format!(
                "the database holds migrations up to {applied}; this build needs {latest}"
            ));
        }
        Ok(applied)
    }

    /// The PostgreSQL URL, to `LISTEN` on; `None` for SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Begins a durable write transaction: its commit returns once it is on disk (on
    /// SQLite after a flush it shares with the commits beside it, see [`flush`]).
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn begin(&self) -> sqlx::Result<Tx<'static>> {
        self.begin_as(Commit::Shared).await
    }

    /// As [`Store::begin`], for writes only the caller relies on being on disk (a
    /// worker's record of what it is about to erase, read by its own reruns): nothing
    /// that leaves the process waits for it (see [`flush`]).
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn begin_own(&self) -> sqlx::Result<Tx<'static>> {
        self.begin_as(Commit::Own).await
    }

    async fn begin_as(&self, how: Commit) -> sqlx::Result<Tx<'static>> {
        let Some(flusher) = self.writable()? else {
            let pool = match how {
                Commit::Relaxed => &self.relaxed_pool,
                Commit::Shared | Commit::Own => &self.write,
            };
            return Ok(Tx {
                inner: pool.begin().await?,
                trail: Vec::new(),
                commit: None,
            });
        };
        let _in_line = self.take_turn().await;
        let inner = BEGINNING
            .scope((), self.relaxed_pool.begin_with(BEGIN_RELAXED))
            .await?;
        // The connection is this transaction's until it ends: nobody else changes it.
        self.relaxed.store(true, Ordering::SeqCst);
        Ok(Tx {
            inner,
            trail: Vec::new(),
            commit: Some((flusher, how)),
        })
    }

    /// Waits until every durable commit made so far (even one still being sent) is on
    /// disk: before anything leaves the process on the strength of what it read (see
    /// [`flush`]). At once on PostgreSQL, whose commits are visible once durable.
    ///
    /// # Errors
    /// When SQLite's log could not be flushed.
    pub async fn on_disk(&self) -> std::io::Result<()> {
        match &self.flusher {
            Some(flusher) => flusher.all_on_disk().await,
            None => Ok(()),
        }
    }

    /// As [`Store::on_disk`], relaxed commits included: before evidence is signed, which
    /// may attest what a relaxed commit recorded (a task's outcome).
    ///
    /// # Errors
    /// When SQLite's log could not be flushed.
    pub async fn everything_on_disk(&self) -> std::io::Result<()> {
        match &self.flusher {
            Some(flusher) => flusher.everything_on_disk().await,
            None => Ok(()),
        }
    }

    /// Why durable commits fail, once SQLite's log could not be flushed (see [`flush`]).
    fn flush_failed(&self) -> Option<String> {
        self.flusher.as_ref().and_then(|f| f.failed())
    }

    /// Flushes of SQLite's log made for durable commits (0 on PostgreSQL).
    #[cfg(test)]
    pub fn flushes(&self) -> u64 {
        self.flusher.as_ref().map_or(0, |f| f.flushes())
    }

    /// Lends a connection for bookkeeping that may be redone: on SQLite the write
    /// connection with `synchronous = NORMAL` (in WAL mode such a commit survives a crash
    /// of the process, and only a power cut can undo it); on PostgreSQL one with
    /// `synchronous_commit = off` (a crash of the server, not of oubli, can lose the last
    /// commits). The queue uses it for leases and task outcomes, whose loss makes a task run
    /// again (plugins' effects are idempotent); an accepted request or a decision always
    /// commits durably.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn relaxed(&self) -> sqlx::Result<Tx<'static>> {
        self.begin_as(Commit::Relaxed).await
    }

    /// SQLite's flusher, unless a flush failed: then no transaction begins (nothing more
    /// is committed, nor seen, that might not be on disk; a task's run is not recorded
    /// as failed, its lease runs out) until oubli is restarted.
    fn writable(&self) -> sqlx::Result<Option<Arc<Flusher>>> {
        match &self.flusher {
            Some(flusher) => match flusher.failed() {
                Some(failed) => Err(sqlx::Error::Io(std::io::Error::other(failed))),
                None => Ok(Some(flusher.clone())),
            },
            None => Ok(None),
        }
    }

    /// Before a transaction takes SQLite's write connection: a foreground one is counted
    /// while it waits (the guard returned); a background one first waits while any is.
    async fn take_turn(&self) -> Option<InLine<'_>> {
        self.take_turn_within(BACKGROUND_YIELDS_AT_MOST).await
    }

    /// [`Store::take_turn`], a background transaction waiting at most `limit`.
    async fn take_turn_within(&self, limit: Duration) -> Option<InLine<'_>> {
        if FOREGROUND.try_with(|()| ()).is_ok() {
            return Some(InLine::new(&self.waiting));
        }
        // Nobody waits (the usual case): no wake-up to arm.
        if self.waiting.count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let until = tokio::time::Instant::now() + limit;
        loop {
            let none = self.waiting.none.notified();
            tokio::pin!(none);
            none.as_mut().enable();
            if self.waiting.count.load(Ordering::SeqCst) == 0
                || tokio::time::timeout_at(until, none).await.is_err()
            {
                return None;
            }
        }
    }

    /// Closes the pools, waiting for open transactions.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        self.relaxed_pool.close().await;
    }
}

/// A query assembled from parts, for filters known only at run time. Its placeholders
/// are numbered (`$1`, `$2`, …), which both backends read; sqlx's `QueryBuilder` writes
/// `?` for the `Any` driver, which PostgreSQL refuses.
pub struct Sql {
    text: String,
    args: AnyArguments<'static>,
    count: usize,
}

impl Sql {
    /// A query that starts with `text`.
    pub fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            args: AnyArguments::default(),
            count: 0,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'static + Send + sqlx::Encode<'static, Any> + sqlx::Type<Any>,
    {
        self.count += 1;
        self.text.push_str(&format!("${}", self.count));
        self.args
            .add(value)
            .expect("text and 64-bit integers always encode");
        self
    }

    /// Appends `(value, value, …)`, one placeholder each, for `IN`.
    pub fn bind_list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: 'static + Send + sqlx::Encode<'static, Any> + sqlx::Type<Any>,
    {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")")
    }

    /// Runs the query and reads every row as `R`.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn fetch_all<'c, R, E>(self, executor: E) -> sqlx::Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
        E: Executor<'c, Database = Any>,
    {
        sqlx::query_as_with::<_, R, _>(&self.text, self.args)
            .fetch_all(executor)
            .await
    }

    /// Runs the query; returns how many rows it changed.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn execute<'c, E>(self, executor: E) -> sqlx::Result<u64>
    where
        E: Executor<'c, Database = Any>,
    {
        Ok(sqlx::query_with(&self.text, self.args)
            .execute(executor)
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background transaction waits while a foreground one waits for SQLite's write
    /// connection, goes as soon as none does, and waits no longer than its limit.
    #[tokio::test(flavor = "multi_thread")]
    async fn background_transactions_let_foreground_ones_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("oubli.db"))
            .await
            .unwrap();
        let waiting = InLine::new(&store.waiting);
        // (A limit far longer than the test, so that a busy machine cannot end the wait.)
        let turn = tokio::spawn({
            let store = store.clone();
            async move {
                let started = tokio::time::Instant::now();
                store
                    .take_turn_within(Duration::from_secs(600))
                    .await
                    .is_none()
                    .then(|| started.elapsed())
            }
        });
        let pause = Duration::from_millis(5);
        tokio::time::sleep(pause).await;
        assert!(!turn.is_finished());
        drop(waiting);
        let waited = tokio::time::timeout(Duration::from_secs(5), turn)
            .await
            .expect("it goes once none waits")
            .unwrap()
            .expect("a background transaction is not counted");
        assert!(waited >= pause, "{waited:?}");

        // A foreground one that never gets the connection delays it by the limit only.
        let _stuck = InLine::new(&store.waiting);
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            let started = tokio::time::Instant::now();
            let _ = store.take_turn().await;
            started.elapsed()
        })
        .await
        .expect("it stops waiting after its limit");
        assert!(waited >= BACKGROUND_YIELDS_AT_MOST, "{waited:?}");

        // A foreground transaction is counted while it waits, and not after.
        let counted = foreground(async {
            let in_line = store.take_turn().await;
            (
                in_line.is_some(),
                store.waiting.count.load(Ordering::SeqCst),
            )
        })
        .await;
        assert_eq!(counted, (true, 2));
        assert_eq!(store.waiting.count.load(Ordering::SeqCst), 1);
    }

    /// The store at `path`, with a table `flushed` to write rows in.
    async fn with_table(path: &Path) -> Store {
        let store = Store::open_sqlite(path).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        sqlx::query("CREATE TABLE flushed (at BIGINT)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        store
    }

    async fn insert(mut tx: Tx<'static>) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO flushed (at) VALUES ($1)")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Inserts a row and commits, without waiting for the flush.
    async fn unflushed(mut tx: Tx<'static>) -> OnDisk {
        sqlx::query("INSERT INTO flushed (at) VALUES ($1)")
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit_unflushed().await.unwrap()
    }

    fn flushed_upto(store: &Store) -> u64 {
        store.flusher.as_ref().unwrap().flushed_upto()
    }

    /// On SQLite a durable transaction runs at `NORMAL` and its commit returns once a
    /// flush that covers it has ended, one flush covers the commits written before it,
    /// a relaxed one waits for none (but evidence waits for
    /// it), the barrier before what leaves the process waits for durable commits but not
    /// for those only their caller relies on, and a direct write after them is back at
    /// `synchronous = FULL`. The database is opened through a link: the log
    /// flushed is the one SQLite writes, beside the linked file.
    #[tokio::test(flavor = "multi_thread")]
    async fn durable_commits_return_once_a_flush_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("real/oubli.db"),
            dir.path().join("linked.db"),
        )
        .unwrap();
        std::fs::write(dir.path().join("real/oubli.db"), b"").unwrap();
        let store = with_table(&dir.path().join("linked.db")).await;
        // A durable transaction runs at NORMAL: its flush comes after its commit.
        let mut tx = store.begin().await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(synchronous, 1);
        tx.commit().await.unwrap();
        assert!(dir.path().join("real/oubli.db-wal").exists());
        assert!(!dir.path().join("linked.db-wal").exists());
        let (flushes, upto) = (store.flushes(), flushed_upto(&store));
        assert!(flushes >= 1 && upto >= 1, "{flushes} {upto}");

        // Sixteen at once: each returns covered.
        let commits: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let tx = store.begin().await?;
                    insert(tx).await
                })
            })
            .collect();
        for commit in commits {
            commit.await.unwrap().unwrap();
        }
        let numbered = store.flusher.as_ref().unwrap().numbered();
        assert_eq!(flushed_upto(&store), numbered);

        // A relaxed commit: no flush of its own, nor for `on_disk`; evidence waits for it.
        let flushes = store.flushes();
        insert(store.relaxed().await.unwrap()).await.unwrap();
        store.on_disk().await.unwrap();
        assert_eq!(store.flushes(), flushes);
        assert!(flushed_upto(&store) < store.flusher.as_ref().unwrap().numbered());
        store.everything_on_disk().await.unwrap();
        assert_eq!(store.flushes(), flushes + 1);

        // A commit only its caller relies on: flushed for it, not for the barriers.
        insert(store.begin_own().await.unwrap()).await.unwrap();
        assert_eq!(store.flushes(), flushes + 2);
        let written = unflushed(store.begin_own().await.unwrap()).await;
        store.on_disk().await.unwrap();
        assert_eq!(store.flushes(), flushes + 2);
        // A durable commit written, then flushed when asked.
        let durable = unflushed(store.begin().await.unwrap()).await;
        assert!(flushed_upto(&store) < store.flusher.as_ref().unwrap().numbered());
        store.on_disk().await.unwrap();
        assert_eq!(store.flushes(), flushes + 3);
        written.on_disk().await.unwrap();
        durable.on_disk().await.unwrap();
        assert_eq!(
            store.flushes(),
            flushes + 3,
            "both covered by the last flush"
        );

        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.write)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL for a direct write");

        // A new write connection first taken by a transaction is made FULL again for
        // the next direct write too.
        store.write.acquire().await.unwrap().close().await.unwrap();
        insert(store.relaxed().await.unwrap()).await.unwrap();
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.write)
            .await
            .unwrap();
        assert_eq!(
            synchronous, 2,
            "FULL for a direct write on a new connection"
        );
    }

    /// A commit given up while its `COMMIT` was being sent (its caller went away) keeps
    /// no barrier waiting: it is marked written once the connection served a statement
    /// after it, and then flushed like any other.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_commit_given_up_midway_keeps_no_barrier_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_table(&dir.path().join("oubli.db")).await;
        let flusher = store.flusher.clone().unwrap();
        let before = flusher.numbered();
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO flushed (at) VALUES (7)")
            .execute(&mut *tx)
            .await
            .unwrap();
        let mut commit = Box::pin(tx.commit());
        // Polled once at a time until its commit is numbered (sent), then given up.
        let mut pending = true;
        while pending && flusher.numbered() == before {
            pending = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(commit.as_mut().poll(cx).is_pending())
            })
            .await;
        }
        assert!(pending, "the commit was given up before it returned");
        assert_eq!(flusher.numbered(), before + 1);
        drop(commit);
        tokio::time::timeout(Duration::from_secs(30), store.everything_on_disk())
            .await
            .expect("a given-up commit does not keep the barrier waiting")
            .unwrap();
        assert!(flushed_upto(&store) > before);
    }

    /// A log that cannot be flushed (here gone from its folder) fails every durable
    /// commit from then on, and readiness, rather than saying anything is on disk.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_log_that_cannot_be_flushed_fails_durable_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = with_table(&dir.path().join("oubli.db")).await;
        std::fs::remove_file(dir.path().join("oubli.db-wal")).unwrap();
        let failed = insert(store.begin().await.unwrap()).await.unwrap_err();
        assert!(failed.to_string().contains("restart oubli"), "{failed}");
        assert!(store.flush_failed().is_some());
        assert!(store.on_disk().await.is_err());
        assert!(store.readiness(Duration::from_secs(5)).await.is_err());
        // And stays failed, though a later flush might not see the error again: no
        // transaction begins, relaxed or not.
        assert!(store.begin().await.is_err());
        assert!(store.relaxed().await.is_err());
    }
}
