//! The `sql` capability: the host runs a plugin's parameterised statements against the
//! system's own database. The connection URL, and any password in it, never enters the
//! guest.
//!
//! A plugin reaches only its own database, and only for as long as its call:
//! - every call gets a [`SqlSession`] of its own, holding one connection for the call;
//!   nothing a plugin sets reaches the next call: a SQLite connection is reused only
//!   because a plugin can change nothing on it (no schema changes, temporary ones
//!   included, no pragmas, attachments or transactions of its own), a PostgreSQL one is
//!   reset and a MySQL one closed after the call, and any connection whose call was
//!   stopped or whose statement failed is closed;
//! - `locate`, `access`, `validate` and `describe` run read-only (a read-only SQLite
//!   connection, a `READ ONLY` transaction around each statement on the servers);
//! - on SQLite an authorizer refuses `ATTACH`, `DETACH`, `VACUUM`, schema changes,
//!   pragmas that are not schema reads, `load_extension` and writes to `sqlite_*` tables; a statement entry is
//!   exactly one statement;
//! - every statement stops at the call's deadline (SQLite's progress handler and
//!   interrupt, PostgreSQL's `statement_timeout` and a cancel request, MySQL's
//!   `max_statement_time` and `KILL QUERY`);
//! - a result is counted in bytes while it is read and refused past
//!   [`MAX_RESULT_BYTES`], before it is all held.

use crate::runtime::bindings::sql::{Dialect, Rows, Statement, Value};
use crate::runtime::bindings::types::Error as GuestError;
use futures::{FutureExt, TryStreamExt};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Connection, Row, TypeInfo, ValueRef};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most rows one query may return, whatever the plugin asks for.
pub const MAX_ROWS: u32 = 10_000;
/// Most bytes of values one query may return; a larger result fails the statement.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// Connections per system's pool (PostgreSQL, MySQL).
const POOL_SIZE: u32 = 4;
/// `PRAGMA cache_size` of a connection to a system's SQLite file: 512 KiB (a negative
/// size is in KiB; SQLite's default is 2,000 KiB). See [`SqliteConn::open`].
const CACHE_SIZE: i64 = -512;
/// Prepared statements a server connection keeps: with [`MAX_STATEMENT_BYTES`], at most
/// 2 MiB of statement text per connection.
const STATEMENT_CACHE: usize = 32;
/// The longest LIKE or GLOB pattern a plugin's statement may use, in bytes.
const MAX_LIKE_PATTERN: usize = 256;
/// The longest statement text a SQLite connection remembers as checked.
const MAX_REMEMBERED_STATEMENT: usize = 4 << 10;
/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a server connection's set-up may take (as long as waiting for the pool).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a call may change the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `describe`, `validate`, `locate`, `access`.
    ReadOnly,
    /// `rectify`, `erase`.
    ReadWrite,
}

/// One system's database: its dialect and where it is.
pub struct SqlTarget {
    url: String,
    dialect: Dialect,
    backend: Backend,
    /// The statements plugins sent, while a benchmark records them (see
    /// [`SqlTarget::record`]); `recording` says so without taking the lock, which every
    /// statement would otherwise do.
    recorded: Mutex<Option<Vec<Sent>>>,
    recording: AtomicBool,
    /// Which statement time limit the MySQL/MariaDB server took at a session's setup
    /// ([`MYSQL_LIMIT_UNKNOWN`] until one did), so later setups send only that one.
    mysql_limit: std::sync::atomic::AtomicU8,
}

/// The server's statement time limit is not known yet.
const MYSQL_LIMIT_UNKNOWN: u8 = 0;
/// MariaDB's `max_statement_time` (seconds).
const MYSQL_LIMIT_MARIADB: u8 = 1;
/// MySQL's `max_execution_time` (milliseconds, `SELECT` only).
const MYSQL_LIMIT_MYSQL: u8 = 2;
/// Neither (`KILL QUERY` at the deadline only).
const MYSQL_LIMIT_NONE: u8 = 3;

/// Connections a MySQL/MariaDB pool keeps open and unused: each call's connection is
/// closed after it, and the pool opens its replacement in the background, so that the
/// next call does not wait for a connection to be made.
const MYSQL_SPARE: u32 = 2;

/// A statement a plugin sent, as [`SqlTarget::record`] keeps it.
#[derive(Debug, Clone)]
pub enum Sent {
    Query(Statement),
    Transaction(Vec<Statement>),
}

enum Backend {
    Sqlite(SqliteFile, SqliteIdle),
    Postgres(tokio::sync::OnceCell<PgPool>),
    MySql(tokio::sync::OnceCell<MySqlPool>),
}

/// A file database's idle connections, kept between calls. A plugin cannot leave
/// anything on one (no schema changes, pragmas, attachments or transactions of its own),
/// and a connection whose call was stopped is never put back. Read-only and read-write
/// calls share them, so that the pages a `locate` read are still in the connection's
/// cache for the `erase` after it, and the reverse (a connection drops its whole cache
/// when another one wrote); each call sets the connection's access (see
/// [`SqliteConn::start`]).
#[derive(Default)]
struct SqliteIdle(Mutex<Vec<SqliteConn>>);

/// A SQLite database as a `sqlite:` URL names it.
#[derive(Debug, Clone)]
struct SqliteFile {
    /// `None` for `:memory:`.
    path: Option<PathBuf>,
    read_only: bool,
    create: bool,
}

impl std::fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("SqlTarget")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl SqlTarget {
    /// # Errors
    /// A message when the URL's scheme is not a supported database or a SQLite URL has
    /// an option oubli does not know.
    pub fn new(url: &str) -> Result<Self, String> {
        let (dialect, backend) = if let Some(rest) = url.strip_prefix("sqlite:") {
            (
                Dialect::Sqlite,
                Backend::Sqlite(SqliteFile::parse(rest)?, SqliteIdle::default()),
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (
                Dialect::Postgres,
                Backend::Postgres(tokio::sync::OnceCell::new()),
            )
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            (Dialect::Mysql, Backend::MySql(tokio::sync::OnceCell::new()))
        } else {
            return Err("expected a sqlite:, postgres:// or mysql:// URL".into());
        };
        Ok(SqlTarget {
            url: url.replacen("mariadb://", "mysql://", 1),
            dialect,
            backend,
            recorded: Mutex::new(None),
            recording: AtomicBool::new(false),
            mysql_limit: std::sync::atomic::AtomicU8::new(MYSQL_LIMIT_UNKNOWN),
        })
    }

    /// Keeps every statement sent from now on, for [`Self::take_recorded`] (`bench
    /// connectors` replays a plugin's statements natively).
    pub fn record(&self) {
        *self.recorded.lock().expect("recorded statements") = Some(Vec::new());
        self.recording.store(true, Ordering::Release);
    }

    /// The statements sent since [`Self::record`] or the last call, in their order.
    pub fn take_recorded(&self) -> Vec<Sent> {
        self.recorded
            .lock()
            .expect("recorded statements")
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn keep(&self, sent: impl FnOnce() -> Sent) {
        if !self.recording.load(Ordering::Acquire) {
            return;
        }
        if let Some(recorded) = self.recorded.lock().expect("recorded statements").as_mut() {
            recorded.push(sent());
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether this target is the database at `location` (a SQLite file path or URL, or a
    /// server URL): the same file by canonical path (its `-wal`, `-shm` and `-journal`
    /// files included), or the same database name on the same server, with `localhost`
    /// and the loopback addresses taken as one host. Another name for the same server (a
    /// DNS alias, a socket path) is not recognised.
    pub fn is_database(&self, location: &str) -> bool {
        match &self.backend {
            Backend::Sqlite(file, _) => {
                let Some(path) = &file.path else {
                    return false;
                };
                let other = match location.strip_prefix("sqlite:") {
                    Some(rest) => match SqliteFile::parse(rest) {
                        Ok(SqliteFile {
                            path: Some(other), ..
                        }) => other,
                        _ => return false,
                    },
                    None if !location.contains("://") => PathBuf::from(location),
                    None => return false,
                };
                let (path, other) = (canonical(path), canonical(&other));
                path == other
                    || ["-wal", "-shm", "-journal"].iter().any(|suffix| {
                        let mut journal = other.clone().into_os_string();
                        journal.push(suffix);
                        path.as_os_str() == journal
                    })
            }
            Backend::Postgres(_) | Backend::MySql(_) => {
                server_identity(&self.url).is_some()
                    && server_identity(&self.url)
                        == server_identity(&location.replacen("mariadb://", "mysql://", 1))
            }
        }
    }

    /// Opens a session for one call; the connection is made on the first statement.
    /// SQLite work runs on a blocking thread of its own, so that a session used on an
    /// async runtime's worker never blocks it.
    pub fn session(self: &Arc<Self>, access: Access, deadline: Instant) -> SqlSession {
        SqlSession {
            target: self.clone(),
            access,
            deadline,
            conn: None,
            failed: false,
            inline: false,
        }
    }

    /// As [`Self::session`], for a session used on a thread that may block (a plugin
    /// call's, which the runtime runs off the async workers): SQLite work runs right
    /// there, without a hand-off to another thread per statement. A statement still stops
    /// at the deadline through SQLite's progress handler; whoever waits for the thread
    /// stops waiting at the deadline even if a step SQLite cannot interrupt is stuck
    /// (`Runtime::run`).
    pub fn session_on_this_thread(
        self: &Arc<Self>,
        access: Access,
        deadline: Instant,
    ) -> SqlSession {
        let mut session = self.session(access, deadline);
        session.inline = true;
        session
    }

    /// Runs one query in a session of its own, read-write, without a deadline of its own
    /// (the benchmarks' native baseline and data loading).
    ///
    /// # Errors
    /// The connector error a plugin would see.
    pub async fn query(
        self: &Arc<Self>,
        statement: &Statement,
        max_rows: u32,
    ) -> Result<Rows, GuestError> {
        let mut session = self.session(Access::ReadWrite, far_deadline());
        let rows = session.query(statement, max_rows).await;
        session.finish().await;
        rows
    }

    /// Runs statements in one transaction in a session of its own; see [`Self::query`].
    ///
    /// # Errors
    /// The connector error a plugin would see; nothing is committed then.
    pub async fn transaction(
        self: &Arc<Self>,
        statements: &[Statement],
    ) -> Result<Vec<u64>, GuestError> {
        let mut session = self.session(Access::ReadWrite, far_deadline());
        let counts = session.transaction(statements).await;
        session.finish().await;
        counts
    }

    async fn pg_pool(&self) -> Result<&PgPool, GuestError> {
        let Backend::Postgres(cell) = &self.backend else {
            unreachable!("called for a PostgreSQL target only")
        };
        cell.get_or_try_init(|| async {
            let options = sqlx::postgres::PgConnectOptions::from_str(&self.url)
                .map_err(classify)?
                .statement_cache_capacity(STATEMENT_CACHE);
            PgPoolOptions::new()
                .max_connections(POOL_SIZE)
                // A session's first round trip tests the connection (`SqlSession::open`).
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(classify)
        })
        .await
    }

    async fn mysql_pool(&self) -> Result<&MySqlPool, GuestError> {
        let Backend::MySql(cell) = &self.backend else {
            unreachable!("called for a MySQL target only")
        };
        cell.get_or_try_init(|| async {
            let options = sqlx::mysql::MySqlConnectOptions::from_str(&self.url)
                .map_err(classify)?
                .statement_cache_capacity(STATEMENT_CACHE);
            MySqlPoolOptions::new()
                .max_connections(POOL_SIZE)
                .min_connections(MYSQL_SPARE)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(classify)
        })
        .await
    }
}

/// A path made absolute and free of `.`, `..` and links, as far as it exists.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        // A file that does not exist yet: its folder's canonical form and its name.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        match (
            dir.map_or(std::fs::canonicalize("."), std::fs::canonicalize),
            path.file_name(),
        ) {
            (Ok(dir), Some(name)) => dir.join(name),
            _ => path.to_path_buf(),
        }
    })
}

/// The engine, host, port and database a server URL names, read as sqlx reads it (so
/// `?dbname=`, `?host=` and percent-encoding count); `localhost`, loopback, unspecified
/// and socket-path hosts are taken as one.
fn server_identity(url: &str) -> Option<(&'static str, String, u16, String)> {
    use sqlx::mysql::MySqlConnectOptions;
    use sqlx::postgres::PgConnectOptions;
    let (engine, host, port, database) = if url.starts_with("postgres") {
        let o = PgConnectOptions::from_str(url).ok()?;
        let database = o.get_database().unwrap_or(o.get_username()).to_owned();
        ("postgres", o.get_host().to_owned(), o.get_port(), database)
    } else {
        let o = MySqlConnectOptions::from_str(url).ok()?;
        let database = o.get_database().unwrap_or_default().to_owned();
        ("mysql", o.get_host().to_owned(), o.get_port(), database)
    };
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    let local = host == "localhost"
        || host.starts_with('/')
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            let ip = match ip {
                std::net::IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
                v4 => v4,
            };
            ip.is_loopback() || ip.is_unspecified()
        });
    Some((
        engine,
        if local { "local".to_owned() } else { host },
        port,
        database,
    ))
}

fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

impl SqliteFile {
    /// Parses what follows `sqlite:`: `//path`, `path` or `:memory:`, with an optional
    /// `?mode=ro|rw|rwc`.
    fn parse(rest: &str) -> Result<Self, String> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut file = SqliteFile {
            path: None,
            read_only: false,
            create: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair {
                "mode=ro" => file.read_only = true,
                "mode=rw" => {}
                "mode=rwc" => file.create = true,
                "mode=memory" => {}
                other => {
                    return Err(format!(
                        "the SQLite option {other:?} is not supported (use mode=ro, rw or rwc)"
                    ));
                }
            }
        }
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.starts_with("file:") {
            return Err("give the SQLite database as a path, not as a file: URI".into());
        }
        if path.is_empty() {
            return Err("a sqlite: URL needs a file path".into());
        }
        if path != ":memory:" {
            file.path = Some(PathBuf::from(path));
        }
        Ok(file)
    }
}

/// The database work of one plugin call. Dropping it before [`SqlSession::finish`] (the
/// call ran out of time) stops what is still running on the database.
pub struct SqlSession {
    target: Arc<SqlTarget>,
    access: Access,
    deadline: Instant,
    conn: Option<SessionConn>,
    /// Whether a statement failed: its connection is then not reused.
    failed: bool,
    /// Whether SQLite work runs on the session's own thread (see [`SqlTarget::session`]).
    inline: bool,
}

enum SessionConn {
    Sqlite(Arc<SqliteConn>),
    Postgres(ServerConn<sqlx::Postgres>),
    MySql(ServerConn<sqlx::MySql>),
}

/// A pooled server connection held for one call, with what it takes to stop its
/// statement from another connection.
struct ServerConn<DB: sqlx::Database> {
    conn: PoolConnection<DB>,
    /// The server's id of the connection (`pg_backend_pid()`, `CONNECTION_ID()`).
    id: i64,
}

/// The longest statement text a plugin may send, in bytes. Statements are cached by
/// their text on the host and prepared on the server, per pooled connection, so their
/// length bounds what a plugin can leave there.
pub const MAX_STATEMENT_BYTES: usize = 64 << 10;

fn check_length(statement: &Statement) -> Result<(), GuestError> {
    if statement.sql.len() > MAX_STATEMENT_BYTES {
        return Err(GuestError::Failed(format!(
            "a statement of {} bytes is longer than the {} KiB oubli runs",
            statement.sql.len(),
            MAX_STATEMENT_BYTES >> 10
        )));
    }
    Ok(())
}

impl SqlSession {
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Runs a query and returns at most `max_rows` rows.
    ///
    /// # Errors
    /// The connector error the plugin should see.
    pub async fn query(
        &mut self,
        statement: &Statement,
        max_rows: u32,
    ) -> Result<Rows, GuestError> {
        check_length(statement)?;
        self.target.keep(|| Sent::Query(statement.clone()));
        let limit = max_rows.min(MAX_ROWS) as usize;
        let read_only = self.access == Access::ReadOnly;
        // On a server, a read-only call's statements run in the call's READ ONLY
        // transaction, begun when the session opened; a statement that ends it (DDL
        // commits implicitly on MySQL) or changes the session's settings would step out
        // of it, so only queries are sent.
        if read_only && !matches!(self.target.dialect, Dialect::Sqlite) {
            require_query(&statement.sql)?;
        }
        let (inline, deadline) = (self.inline, self.deadline);
        let mut reopen = false;
        let rows = match self.connect().await? {
            SessionConn::Sqlite(conn) if inline => conn.query(statement, limit),
            SessionConn::Sqlite(conn) => {
                let (conn, statement) = (conn.clone(), statement.clone());
                run_blocking(move || conn.query(&statement, limit)).await
            }
            SessionConn::Postgres(server) if read_only => {
                let mut rows = pg_rows(&mut server.conn, statement, limit).await;
                for again in [true, false] {
                    let Err(error) = &rows else { break };
                    // The failed statement aborted the call's transaction: the next ones
                    // get a new one, with the time left (the timeout set in the aborted
                    // one went with it). If that fails, the old one may be gone and no
                    // new one begun (a cancel from another backend between the two):
                    // the connection is closed, and the call's next statement opens a
                    // session afresh, never one outside a READ ONLY transaction.
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    reopen = pg_setup(&mut server.conn, &pg_read_only_begin(timeout, true))
                        .await
                        .is_err();
                    if reopen || !again || !stale(error) {
                        break;
                    }
                    // Once, in the new transaction, with the connection's cache emptied.
                    if server.conn.clear_cached_statements().await.is_err() {
                        reopen = true;
                        break;
                    }
                    rows = pg_rows(&mut server.conn, statement, limit).await;
                }
                rows
            }
            SessionConn::Postgres(server) => {
                let mut rows = pg_rows(&mut server.conn, statement, limit).await;
                // Only a query, which did nothing when it failed: a `CALL` may have
                // committed before it failed, a `COMMIT` rolled back.
                if rows.as_ref().is_err_and(stale)
                    && require_query(&statement.sql).is_ok()
                    && server.conn.clear_cached_statements().await.is_ok()
                {
                    rows = pg_rows(&mut server.conn, statement, limit).await;
                }
                rows
            }
            SessionConn::MySql(server) if read_only => {
                let rows = mysql_rows(&mut server.conn, statement, limit).await;
                if rows.is_err() {
                    // A deadlock ends the call's transaction; other errors leave it. It
                    // is begun again (which ends the old one), so that no statement runs
                    // outside a READ ONLY transaction; if that fails, the connection is
                    // closed and the next statement opens a session afresh.
                    reopen = mysql_setup(&mut server.conn, "START TRANSACTION READ ONLY")
                        .await
                        .is_err();
                }
                rows
            }
            SessionConn::MySql(server) => mysql_rows(&mut server.conn, statement, limit).await,
        };
        self.failed |= rows.is_err();
        if reopen {
            match self.conn.take() {
                // Closed: its backend ends with it.
                Some(SessionConn::Postgres(mut server)) => server.conn.close_on_drop(),
                // (Closed on drop since it was taken from the pool.)
                Some(SessionConn::MySql(server)) => drop(server),
                other => self.conn = other,
            }
        }
        rows
    }

    /// Runs the statements in one transaction and returns the rows each changed.
    ///
    /// # Errors
    /// The connector error the plugin should see; nothing is committed then. A
    /// transaction is for `rectify` and `erase`: a read-only call is denied one.
    pub async fn transaction(&mut self, statements: &[Statement]) -> Result<Vec<u64>, GuestError> {
        if self.access == Access::ReadOnly {
            return Err(GuestError::Denied(
                "sql.transaction is for rectify and erase; describe, validate, locate and access only read".into(),
            ));
        }
        statements.iter().try_for_each(check_length)?;
        self.target.keep(|| Sent::Transaction(statements.to_vec()));
        macro_rules! on_server {
            ($conn:expr, $begin:literal) => {
                async {
                    let mut tx = $conn.begin_with($begin).await.map_err(classify)?;
                    let mut counts = Vec::with_capacity(statements.len());
                    for statement in statements {
                        let done = bind!(sqlx::query(&statement.sql), &statement.params)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        counts.push(done.rows_affected());
                    }
                    tx.commit().await.map_err(classify)?;
                    Ok(counts)
                }
                .await
            };
        }
        let inline = self.inline;
        let counts = match self.connect().await? {
            SessionConn::Sqlite(conn) if inline => conn.transaction(statements),
            SessionConn::Sqlite(conn) => {
                let (conn, statements) = (conn.clone(), statements.to_vec());
                run_blocking(move || conn.transaction(&statements)).await
            }
            SessionConn::Postgres(server) => {
                let mut counts = on_server!(&mut *server.conn, "BEGIN");
                // (The failed transaction was rolled back: nothing of it is left.)
                if counts.as_ref().is_err_and(stale)
                    && server.conn.clear_cached_statements().await.is_ok()
                {
                    counts = on_server!(&mut *server.conn, "BEGIN");
                }
                counts
            }
            SessionConn::MySql(server) => on_server!(&mut *server.conn, "START TRANSACTION"),
        };
        self.failed |= counts.is_err();
        counts
    }

    /// Opens the session's connection on first use.
    async fn connect(&mut self) -> Result<&mut SessionConn, GuestError> {
        if self.conn.is_none() {
            let conn = self.open().await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened just above"))
    }

    async fn open(&self) -> Result<SessionConn, GuestError> {
        let conn = match &self.target.backend {
            Backend::Sqlite(file, idle) => {
                let (file, access) = (file.clone(), self.access);
                // A file replaced since (a restored backup) is opened afresh: an erasure
                // must reach the file that is there now.
                let reused = idle
                    .0
                    .lock()
                    .expect("idle connections")
                    .pop()
                    .filter(|conn| conn.file.is_some() && conn.file == file_identity(&file));
                let conn = match reused {
                    Some(conn) => conn,
                    None if self.inline => SqliteConn::open(&file, access, self.deadline)?,
                    None => {
                        let deadline = self.deadline;
                        run_blocking(move || SqliteConn::open(&file, access, deadline)).await?
                    }
                };
                conn.start(self.deadline, self.access)?;
                SessionConn::Sqlite(Arc::new(conn))
            }
            Backend::Postgres(_) => {
                // The pool hands a connection out untested (a round trip per call): this
                // setup is the test. A connection the server or the network closed while
                // it sat in the pool fails it, and is closed and replaced (all of them
                // after a restart of the server: the pool holds at most POOL_SIZE).
                let mut replaced = 0;
                loop {
                    let mut conn = Unsettled(Some(
                        self.target
                            .pg_pool()
                            .await?
                            .acquire()
                            .await
                            .map_err(classify)?,
                    ));
                    // The server stops a statement at the deadline even if the cancel
                    // request (see `Drop`) never arrives. A read-only call's statements
                    // all run in one READ ONLY transaction, begun here in the same round
                    // trip and rolled back by `finish`. (Not a named prepared statement:
                    // a plugin could replace one of those.)
                    let remaining = self.remaining();
                    let setup = if self.access == Access::ReadOnly {
                        pg_read_only_begin(remaining, false)
                    } else {
                        format!("SET statement_timeout = {}", remaining.as_millis().max(1))
                    };
                    // (Functions named with their schema: a role's own `search_path` may put
                    // a schema of the plugin's, holding a `pg_backend_pid` of its own, first.)
                    let sql = format!("{setup}; SELECT pg_catalog.pg_backend_pid()");
                    // (Bounded as the pool's own test was: a connection whose network
                    // went silent would otherwise hang until the deadline.)
                    let answered =
                        tokio::time::timeout(SETUP_TIMEOUT, pg_setup(conn.get(), &sql)).await;
                    match answered.unwrap_or(Err(sqlx::Error::PoolTimedOut)) {
                        Ok(Some(id)) => {
                            break SessionConn::Postgres(ServerConn {
                                conn: conn.settled(),
                                id: id.into(),
                            });
                        }
                        Ok(None) => {
                            return Err(GuestError::Failed(
                                "PostgreSQL did not say which backend serves the call".into(),
                            ));
                        }
                        Err(e) if replaced < POOL_SIZE && connection_lost(&e) => replaced += 1,
                        Err(e) => return Err(classify(e)),
                    }
                }
            }
            Backend::MySql(_) => {
                let mut conn = self
                    .target
                    .mysql_pool()
                    .await?
                    .acquire()
                    .await
                    .map_err(classify)?;
                // The session's connection is never handed to another call, so what it
                // sets here or the plugin sets later dies with it.
                conn.close_on_drop();
                let remaining = self.remaining();
                let seconds = remaining.as_secs_f64().max(0.001);
                let millis = remaining.as_millis().max(1);
                // MariaDB knows `max_statement_time` (seconds), MySQL
                // `max_execution_time` (milliseconds, SELECT only); KILL QUERY covers
                // the rest. The one the server took is sent with the question of the
                // connection's id, in one round trip; until one is known, each is tried.
                // A read-only call's statements all run in one READ ONLY transaction,
                // begun in the same round trip (the connection is closed after the call,
                // ending it).
                let begin = if self.access == Access::ReadOnly {
                    "START TRANSACTION READ ONLY; "
                } else {
                    ""
                };
                let limits = [
                    (
                        MYSQL_LIMIT_MARIADB,
                        format!("SET SESSION max_statement_time = {seconds:.3}; "),
                    ),
                    (
                        MYSQL_LIMIT_MYSQL,
                        format!("SET SESSION max_execution_time = {millis}; "),
                    ),
                    (MYSQL_LIMIT_NONE, String::new()),
                ];
                let known = self.target.mysql_limit.load(Ordering::Relaxed);
                let mut id = None;
                for (limit, set) in limits
                    .iter()
                    .filter(|(limit, _)| known == MYSQL_LIMIT_UNKNOWN || *limit == known)
                {
                    let sql = format!("{set}{begin}SELECT CONNECTION_ID()");
                    match mysql_setup(&mut conn, &sql).await {
                        Ok(Some(found)) => {
                            self.target.mysql_limit.store(*limit, Ordering::Relaxed);
                            id = Some(found);
                            break;
                        }
                        Ok(None) => break,
                        // Only a variable the server does not know sends the setup on to
                        // the next form; any other error is the call's (and a form that
                        // was known and is refused now is forgotten, for the next call).
                        Err(e) if *limit != MYSQL_LIMIT_NONE && unknown_variable(&e) => {
                            if known != MYSQL_LIMIT_UNKNOWN {
                                self.target
                                    .mysql_limit
                                    .store(MYSQL_LIMIT_UNKNOWN, Ordering::Relaxed);
                                return Err(classify(e));
                            }
                        }
                        Err(e) => return Err(classify(e)),
                    }
                }
                let id = id.ok_or_else(|| {
                    GuestError::Failed("MySQL did not say which connection serves the call".into())
                })?;
                SessionConn::MySql(ServerConn {
                    conn,
                    id: id as i64,
                })
            }
        };
        Ok(conn)
    }

    /// As [`Self::finish`], with a PostgreSQL connection's reset left to a task of its
    /// own, so that the call's answer does not wait for that round trip: the connection
    /// goes back to its pool once reset, and one whose reset has not ended within
    /// [`SETUP_TIMEOUT`] is closed and its backend ended (the session's `Drop`).
    pub async fn finish_soon(self) {
        if matches!(self.conn, Some(SessionConn::Postgres(_))) && !self.failed {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SETUP_TIMEOUT, self.finish()).await;
            });
        } else {
            self.finish().await;
        }
    }

    /// Ends the session after its call returned: a PostgreSQL connection goes back to
    /// the pool with everything the plugin set on it reset (or is closed), a MySQL one is
    /// closed. Until the reset is done the session still holds the connection, so a call
    /// stopped meanwhile closes it rather than pooling it half reset.
    pub async fn finish(mut self) {
        // (Matched before it is taken: a server connection taken here would go back to
        // its pool unreset.)
        if matches!(self.conn, Some(SessionConn::Sqlite(_)))
            && let Some(SessionConn::Sqlite(conn)) = self.conn.take()
        {
            // A memory database lives and dies with its connection: never reused.
            if let Backend::Sqlite(file, idle) = &self.target.backend
                && file.path.is_some()
                && !self.failed
                && let Some(conn) = Arc::into_inner(conn)
            {
                let mut idle = idle.0.lock().expect("idle connections");
                if idle.len() < POOL_SIZE as usize {
                    idle.push(conn);
                }
            }
            return;
        }
        if let Some(SessionConn::Postgres(server)) = &mut self.conn {
            // After a failed statement the connection may be in any state (a plugin may
            // even have dropped the driver's prepared statements): closed, not reset.
            if self.failed {
                server.conn.close_on_drop();
                drop(self.conn.take());
                return;
            }
            let reset = pg_run(
                &mut server.conn,
                "SET client_min_messages = error; ROLLBACK; RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION; CLOSE ALL; UNLISTEN *; \
                 SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES",
            )
            .await;
            // (The first SET keeps ROLLBACK from warning when no transaction is open; in
            // a failed transaction it fails, and the connection is closed.) The driver's
            // prepared statements are kept, as between any two queries of a pool.
            if reset.is_err() {
                server.conn.close_on_drop();
            }
        }
        // Released here, not by `Drop`, which would take the call as stopped.
        drop(self.conn.take());
    }
}

impl Drop for SqlSession {
    /// A session dropped while it holds its connection belongs to a call that was
    /// stopped (its deadline, or the host shutting down): a SQLite statement is
    /// interrupted, a server connection is closed, never pooled, and its backend ended on
    /// the server (`pg_terminate_backend`, `KILL CONNECTION`).
    fn drop(&mut self) {
        let cancel = match self.conn.take() {
            None => return,
            Some(SessionConn::Sqlite(conn)) => {
                conn.interrupt();
                return;
            }
            Some(SessionConn::Postgres(mut server)) => {
                server.conn.close_on_drop();
                terminate_postgres(self.target.url.clone(), server.id).boxed()
            }
            Some(SessionConn::MySql(mut server)) => {
                server.conn.close_on_drop();
                terminate_mysql(self.target.url.clone(), server.id).boxed()
            }
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(cancel);
        }
    }
}

/// A PostgreSQL connection whose session is being set up: closed if dropped before
/// [`Self::settled`] (an error, or the call stopped meanwhile), never pooled half set
/// up (inside a transaction, say).
struct Unsettled(Option<PoolConnection<sqlx::Postgres>>);

impl Unsettled {
    fn get(&mut self) -> &mut PgConnection {
        self.0.as_mut().expect("set up until settled")
    }

    fn settled(mut self) -> PoolConnection<sqlx::Postgres> {
        self.0.take().expect("settled once")
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// Runs `sql` (statements of the host's own, no parameters) in one round trip; returns
/// the first column of the last row any of them returned, as an integer.
/// (Boxed: the host's capability futures must be `Send` for every lifetime, which a
/// boxed future states.)
fn pg_setup<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> futures::future::BoxFuture<'c, Result<Option<i32>, sqlx::Error>> {
    async move {
        // A text without arguments goes as a simple query: several statements at once.
        let rows = sqlx::Executor::fetch_all(conn, sql).await?;
        rows.last().map(|row| row.try_get(0)).transpose()
    }
    .boxed()
}

/// Whether MySQL/MariaDB refused a statement for naming a system variable it does not
/// have (error 1193), as MySQL does `max_statement_time` and MariaDB `max_execution_time`.
fn unknown_variable(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| e.number() == 1193)
}

/// Runs `sql` (statements of the host's own, no parameters, in one text) in one round
/// trip; returns the first column of the last row, as an unsigned integer. (Boxed, as
/// [`pg_setup`].)
fn mysql_setup<'c>(
    conn: &'c mut MySqlConnection,
    sql: &'c str,
) -> futures::future::BoxFuture<'c, Result<Option<u64>, sqlx::Error>> {
    async move {
        let rows = sqlx::Executor::fetch_all(conn, sql).await?;
        rows.last().map(|row| row.try_get(0)).transpose()
    }
    .boxed()
}

/// Runs `sql` (statements of the host's own, no parameters) in one round trip, for what
/// they do. (Boxed, as [`pg_setup`].)
fn pg_run<'c>(
    conn: &'c mut PgConnection,
    sql: &'c str,
) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>> {
    async move { sqlx::Executor::execute(conn, sql).await.map(drop) }.boxed()
}

/// How long a SQLite statement of a call ending at `ends` waits for another connection's
/// lock: [`BUSY_TIMEOUT`], or the time left if less.
fn busy_wait(ends: Instant) -> Duration {
    BUSY_TIMEOUT.min(ends.saturating_duration_since(Instant::now()))
}

/// Whether `error` says that the connection itself is gone (closed by the server, an
/// administrator or the network), rather than that a statement failed.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        // 08: connection exception; 57P01–57P05: the server ended the session.
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// What begins a read-only call's transaction on PostgreSQL with a statement timeout of
/// `remaining` (after a `ROLLBACK` of an aborted one if `again`). The timeout is set
/// inside the transaction (a `SET` before a `BEGIN` in one message joins it anyway), so
/// it lasts as long as the transaction.
fn pg_read_only_begin(remaining: Duration, again: bool) -> String {
    format!(
        "{}BEGIN READ ONLY; SET statement_timeout = {}",
        if again { "ROLLBACK; " } else { "" },
        remaining.as_millis().max(1)
    )
}

/// Runs SQLite work on a blocking thread (a stopped call interrupts it through
/// [`SqlSession`]'s `Drop`).
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GuestError> + Send + 'static,
) -> Result<T, GuestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| GuestError::Failed(format!("the database work stopped: {e}")))?
}

/// Refuses a statement that is not a query: after blanks and opening parentheses it
/// must start with `SELECT`, `WITH`, `VALUES`, `TABLE`, `SHOW`, `EXPLAIN`, `DESCRIBE` or
/// `DESC`. A leading comment is refused too: PostgreSQL nests block comments, MySQL does
/// not, and MySQL and MariaDB run `/*!…*/` and `/*M!…*/` as code, so only the server can
/// tell where one ends.
fn require_query(sql: &str) -> Result<(), GuestError> {
    let rest = sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    const QUERIES: &[&str] = &[
        "SELECT", "WITH", "VALUES", "TABLE", "SHOW", "EXPLAIN", "DESCRIBE", "DESC",
    ];
    if QUERIES.contains(&word.as_str()) {
        Ok(())
    } else {
        Err(GuestError::Denied(format!(
            "describe, validate, locate and access only read, and a statement starting with {:?} is not a query",
            rest.chars().take(12).collect::<String>()
        )))
    }
}

/// Ends the backend of a stopped call's connection: a cancel alone can be caught by the
/// plugin's own PL/pgSQL (`EXCEPTION WHEN query_canceled`), and the backend would go on
/// holding its locks after the connection is dropped.
async fn terminate_postgres(url: String, pid: i64) {
    let done = async {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::query("SELECT pg_catalog.pg_terminate_backend($1)")
            .bind(pid as i32)
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    {
        tracing::warn!(error = %e, "could not end a stopped plugin call's PostgreSQL backend");
    }
}

/// Ends a stopped call's MySQL connection and whatever it runs.
async fn terminate_mysql(url: String, id: i64) {
    let done = async {
        let mut conn = MySqlConnection::connect(&url).await?;
        sqlx::query(&format!("KILL CONNECTION {id}"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    {
        tracing::warn!(error = %e, "could not end a stopped plugin call's MySQL connection");
    }
}

/// Counts a result's bytes as its rows are read.
struct Budget {
    bytes: usize,
}

impl Budget {
    /// Counts `bytes` more, before they are copied; refuses past [`MAX_RESULT_BYTES`].
    fn add(&mut self, bytes: usize) -> Result<(), GuestError> {
        self.bytes += bytes + 16;
        if self.bytes > MAX_RESULT_BYTES {
            return Err(GuestError::Failed(format!(
                "the query's result is larger than {} MiB; select fewer rows or columns",
                MAX_RESULT_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// Counts a decoded value.
    fn value(&mut self, value: Value) -> Result<Value, GuestError> {
        self.add(match &value {
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
            _ => 0,
        })?;
        Ok(value)
    }
}

macro_rules! stream_rows {
    ($conn:expr, $statement:expr, $limit:expr, $decode:ident) => {{
        let mut stream = bind!(sqlx::query(&$statement.sql), &$statement.params).fetch($conn);
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        let mut budget = Budget { bytes: 0 };
        while let Some(row) = stream.try_next().await.map_err(classify)? {
            if columns.is_empty() {
                columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            let values = (0..row.len())
                .map(|i| budget.value($decode(&row, i)?))
                .collect::<Result<Vec<_>, _>>()?;
            rows.push(values);
            if rows.len() >= $limit {
                break;
            }
        }
        Ok(Rows { columns, rows })
    }};
}

async fn pg_rows(
    conn: &mut PgConnection,
    statement: &Statement,
    limit: usize,
) -> Result<Rows, GuestError> {
    stream_rows!(&mut *conn, statement, limit, decode_postgres)
}

async fn mysql_rows(
    conn: &mut MySqlConnection,
    statement: &Statement,
    limit: usize,
) -> Result<Rows, GuestError> {
    stream_rows!(&mut *conn, statement, limit, decode_mysql)
}

/// Binds a plugin's parameters to a sqlx query, whatever the driver.
macro_rules! bind {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for value in $params {
            query = match value {
                Value::Null => query.bind(None::<String>),
                Value::Boolean(b) => query.bind(*b),
                Value::Integer(i) => query.bind(*i),
                Value::Real(r) => query.bind(*r),
                Value::Text(t) => query.bind(t.as_str()),
                Value::Blob(b) => query.bind(b.as_slice()),
            };
        }
        query
    }};
}
use bind;

/// Replaces SQLite's `instr`, `replace`, `trim`, `ltrim` and `rtrim`, which take time
/// proportional to the text times the pattern inside one step that neither the progress
/// handler nor an interrupt reaches (`instr` of two megabyte strings runs for an hour),
/// with versions linear in their input and the same results.
fn linear_text_functions(
    conn: &rusqlite::Connection,
    deadline: Arc<Mutex<Instant>>,
) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    /// An argument as SQLite would see it as text; `None` for NULL.
    fn bytes(value: ValueRef<'_>) -> Option<std::borrow::Cow<'_, [u8]>> {
        match value {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(i.to_string().into_bytes().into()),
            ValueRef::Real(r) => Some(real_text(r).into_bytes().into()),
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.into()),
        }
    }
    fn too_big() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_TOOBIG),
            Some("string or blob too big".into()),
        )
    }
    conn.create_scalar_function("instr", 2, flags, |ctx| {
        let (haystack, needle) = (ctx.get_raw(0), ctx.get_raw(1));
        let blobs = matches!((haystack, needle), (ValueRef::Blob(_), ValueRef::Blob(_)));
        let (Some(haystack), Some(needle)) = (bytes(haystack), bytes(needle)) else {
            return Ok(None);
        };
        let Some(at) = memchr::memmem::find(&haystack, &needle) else {
            return Ok(Some(0));
        };
        // Blobs count bytes, text counts characters.
        let before = if blobs {
            at
        } else {
            String::from_utf8_lossy(&haystack[..at]).chars().count()
        };
        Ok(Some(before as i64 + 1))
    })?;
    conn.create_scalar_function("replace", 3, flags, |ctx| {
        let (Some(text), Some(from), Some(to)) = (
            bytes(ctx.get_raw(0)),
            bytes(ctx.get_raw(1)),
            bytes(ctx.get_raw(2)),
        ) else {
            return Ok(None);
        };
        if from.is_empty() {
            return Ok(Some(String::from_utf8_lossy(&text).into_owned()));
        }
        let mut out = Vec::with_capacity(text.len());
        let mut rest = 0;
        for at in memchr::memmem::find_iter(&text, &from) {
            if at < rest {
                continue;
            }
            out.extend_from_slice(&text[rest..at]);
            out.extend_from_slice(&to);
            rest = at + from.len();
            if out.len() > MAX_RESULT_BYTES {
                return Err(too_big());
            }
        }
        out.extend_from_slice(&text[rest..]);
        if out.len() > MAX_RESULT_BYTES {
            return Err(too_big());
        }
        Ok(Some(String::from_utf8_lossy(&out).into_owned()))
    })?;
    // `oubli_contains_folded(value, text, …)`: whether `instr(lower(text), value) > 0`
    // for one of the texts, without the lowered copy of each text SQLite's `lower()`
    // makes, and in one call for all the texts of a row: 1 when one holds `value` once its
    // ASCII capitals are lowered, 0 when none does, NULL when none does and one is NULL
    // (as `OR` of the tests would be), NULL for a NULL value. A connector's search of free
    // text (the sweep, mentions) tests every row of a table with it. One call can be given
    // up to 126 texts of 16 MiB (each argument of a constant one is evaluated once, in a
    // step the progress handler does not divide): it stops at the call's deadline itself.
    // `oubli_contains_stored_text(value, column, …)` is the same for columns whose numbers
    // are not searched (SQLite's columns declared as numbers or dates, which hold a text
    // only where one was stored against their type): a number or a real there counts as
    // no text, without the `CASE typeof(…)` per row and column that would say so in SQL.
    for (name, numbers) in [(CONTAINS_FOLDED, true), (CONTAINS_STORED_TEXT, false)] {
        let deadline = deadline.clone();
        conn.create_scalar_function(name, -1, flags, move |ctx| {
            if ctx.len() < 2 {
                return Err(rusqlite::Error::UserFunctionError(
                    format!("{name} takes a value and one or more texts").into(),
                ));
            }
            let Some(value) = bytes(ctx.get_raw(0)) else {
                return Ok(None);
            };
            // `lower()` leaves no ASCII capital in a text: a value with one is never in it.
            let capital = value.iter().any(u8::is_ascii_uppercase);
            // Made once per statement for a value bound to it (SQLite keeps it while the
            // argument stays the same).
            let finder = ctx.get_or_create_aux(0, |_| {
                Ok::<_, rusqlite::Error>(memchr::memmem::Finder::new(&value).into_owned())
            })?;
            let mut null = false;
            for i in 1..ctx.len() {
                let raw = ctx.get_raw(i);
                if !numbers && matches!(raw, ValueRef::Integer(_) | ValueRef::Real(_)) {
                    continue;
                }
                match bytes(raw) {
                    None => null = true,
                    Some(_) if capital => {}
                    Some(text) => match contains_folded(&text, &finder, &deadline) {
                        Some(true) => return Ok(Some(1)),
                        Some(false) => {}
                        None => {
                            return Err(rusqlite::Error::UserFunctionError(
                                format!("{name} was stopped at the call's deadline").into(),
                            ));
                        }
                    },
                }
            }
            Ok((!null).then_some(0))
        })?;
    }
    for (name, start, end) in [
        ("trim", true, true),
        ("ltrim", true, false),
        ("rtrim", false, true),
    ] {
        for args in [1, 2] {
            conn.create_scalar_function(name, args, flags, move |ctx| {
                let Some(text) = bytes(ctx.get_raw(0)) else {
                    return Ok(None);
                };
                let text = String::from_utf8_lossy(&text).into_owned();
                let set: std::collections::HashSet<char> = if args == 2 {
                    let Some(set) = bytes(ctx.get_raw(1)) else {
                        return Ok(None);
                    };
                    String::from_utf8_lossy(&set).chars().collect()
                } else {
                    [' '].into()
                };
                let mut trimmed = text.as_str();
                if start {
                    trimmed = trimmed.trim_start_matches(|c| set.contains(&c));
                }
                if end {
                    trimmed = trimmed.trim_end_matches(|c| set.contains(&c));
                }
                Ok(Some(trimmed.to_owned()))
            })?;
        }
    }
    Ok(())
}

/// The SQLite function a connector's search of free text calls (the SDK's
/// `sql::contains_text_in`).
const CONTAINS_FOLDED: &str = "oubli_contains_folded";

/// The same, skipping numbers: the SQL connector's sweep of SQLite columns declared as
/// numbers or dates.
const CONTAINS_STORED_TEXT: &str = "oubli_contains_stored_text";

/// The bytes of text [`contains_folded`] moves on by, at least (the value's length
/// where it is longer).
const FOLD_WINDOW: usize = 16 * 1024;

/// Whether `finder`'s value occurs in `text` with its ASCII capitals lowered; `None` once
/// `deadline` has passed. The text is lowered a window at a time into a buffer kept by
/// the thread: each window is the step (16 KiB, or the value's length if longer) and the
/// value's length less one more, so that no occurrence falls between two windows and each
/// byte is lowered at most three times. The buffer is dropped after a long value, so that
/// no thread keeps more than a few windows' worth.
fn contains_folded(
    text: &[u8],
    finder: &memchr::memmem::Finder<'static>,
    deadline: &Mutex<Instant>,
) -> Option<bool> {
    thread_local! {
        static FOLDED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let n = finder.needle().len();
    if n == 0 {
        return Some(true);
    }
    let step = FOLD_WINDOW.max(n);
    let until = *deadline.lock().expect("deadline lock");
    FOLDED.with_borrow_mut(|folded| {
        let mut found = Some(false);
        let mut start = 0;
        while start + n <= text.len() {
            if start > 0 && Instant::now() >= until {
                found = None;
                break;
            }
            let end = text.len().min(start + step + n - 1);
            folded.clear();
            folded.extend(text[start..end].iter().map(u8::to_ascii_lowercase));
            if finder.find(folded).is_some() {
                found = Some(true);
                break;
            }
            start += step;
        }
        if folded.capacity() > 4 * FOLD_WINDOW {
            *folded = Vec::new();
        }
        found
    })
}

/// A real number as SQLite writes it as text (`%!.15g`: 15 significant digits, a decimal
/// point always, an exponent from 1e15 and below 1e-4: `1.0`, `0.3` for 0.1 + 0.2,
/// `1.0e+20`, `1.0e-07`, `Inf`).
fn real_text(r: f64) -> String {
    if r.is_infinite() {
        return if r > 0.0 { "Inf" } else { "-Inf" }.to_owned();
    }
    if r == 0.0 {
        return "0.0".to_owned();
    }
    // Rounded to 15 significant digits first: the rounding may carry into the exponent.
    let scientific = format!("{r:.14e}");
    let (digits, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // Trailing zeros of the fraction go, but one digit stays after the point.
    let trimmed = |text: &str| -> String {
        if !text.contains('.') {
            return format!("{text}.0");
        }
        let text = text.trim_end_matches('0');
        if text.ends_with('.') {
            format!("{text}0")
        } else {
            text.to_owned()
        }
    };
    if !(-4..15).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trimmed(digits), exponent.abs())
    } else {
        let decimals = usize::try_from(14 - exponent).unwrap_or(0);
        trimmed(&format!("{r:.decimals$}"))
    }
}

/// The device and inode of a SQLite file, `None` for a memory database or a file that
/// cannot be read.
fn file_identity(file: &SqliteFile) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(file.path.as_ref()?).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// A SQLite connection locked down to its own database, used by one call at a time.
struct SqliteConn {
    conn: Mutex<rusqlite::Connection>,
    interrupt: rusqlite::InterruptHandle,
    /// The current call's deadline, which the progress handler checks.
    deadline: Arc<Mutex<Instant>>,
    /// The device and inode of the file when it was opened.
    file: Option<(u64, u64)>,
    /// Statement texts already found to hold exactly one statement.
    single: Mutex<std::collections::HashSet<String>>,
    /// Set while the host itself begins or ends a transaction, which the authorizer
    /// otherwise refuses to the plugin.
    host_statement: Arc<AtomicBool>,
    /// Whether the current call only reads: the authorizer then refuses every change
    /// when a statement is prepared, and [`Self::prepare`] refuses any statement SQLite
    /// does not call read-only, cached ones included. (Not `PRAGMA query_only`: setting
    /// it expires every prepared statement of the connection.)
    read_only: Arc<AtomicBool>,
}

impl SqliteConn {
    /// Opens `file` for a call that ends at `ends`, and any call after it (read-write,
    /// unless its URL says `mode=ro`); each call
    /// sets the access it has ([`Self::start`]). A read-only call's statements are held
    /// to reading by the authorizer and by `sqlite3_stmt_readonly`, no longer by the
    /// file's mode as well; what such a connection may still do to the file is SQLite's
    /// own upkeep, which changes no content (the last connection to close checkpoints the
    /// WAL into the file; an opener rolls back a journal a crashed writer left).
    fn open(file: &SqliteFile, access: Access, ends: Instant) -> Result<Self, GuestError> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if file.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else if file.create && access == Access::ReadWrite {
            // A read-only call never creates the file.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let conn = match &file.path {
            Some(path) => rusqlite::Connection::open_with_flags(path, flags),
            // A fresh memory database holds nothing to protect; the authorizer still
            // refuses writes in a read-only call.
            None => rusqlite::Connection::open_in_memory_with_flags(
                OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_READ_WRITE,
            ),
        }
        .map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
                GuestError::InvalidConfig(format!("cannot open the SQLite database: {e}"))
            }
            _ => sqlite_error(e),
        })?;
        let limits = [
            (rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0),
            (
                rusqlite::limits::Limit::SQLITE_LIMIT_SQL_LENGTH,
                MAX_STATEMENT_BYTES as i32,
            ),
            (
                rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH,
                MAX_RESULT_BYTES as i32,
            ),
            // LIKE and GLOB compare in time proportional to the text times the pattern,
            // inside one step that no interrupt reaches.
            (
                rusqlite::limits::Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH,
                MAX_LIKE_PATTERN as i32,
            ),
        ];
        for (limit, value) in limits {
            conn.set_limit(limit, value);
        }
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
            .map_err(sqlite_error)?;
        // Every SQLite connection of the process draws its pages from one pool, as large
        // as their caches together (the bundled SQLite is built with
        // SQLITE_ENABLE_MEMORY_MANAGEMENT): a sweep's scan of every row filled it, store
        // connections' share included. A system's lookups by key need the few pages of
        // its indexes' upper levels; scans gain nothing from a cache they overflow.
        // (`oubli bench api --checks all`: peak memory 63 → 50 MiB; `bench connectors`
        // unchanged.)
        // (The pragma reads the schema, waiting for a writer's lock no longer than the
        // call may.)
        conn.busy_timeout(busy_wait(ends)).map_err(sqlite_error)?;
        conn.pragma_update(None, "cache_size", CACHE_SIZE)
            .map_err(sqlite_error)?;
        let deadline = Arc::new(Mutex::new(Instant::now()));
        linear_text_functions(&conn, deadline.clone()).map_err(sqlite_error)?;
        let host_statement = Arc::new(AtomicBool::new(false));
        let read_only = Arc::new(AtomicBool::new(true));
        let (host, reads) = (host_statement.clone(), read_only.clone());
        conn.authorizer(Some(move |context: AuthContext<'_>| {
            authorize(
                &context.action,
                reads.load(Ordering::Relaxed),
                host.load(Ordering::Relaxed),
            )
        }));
        let until = deadline.clone();
        conn.progress_handler(
            1_000,
            Some(move || Instant::now() >= *until.lock().expect("deadline lock")),
        );
        Ok(SqliteConn {
            file: file_identity(file),
            interrupt: conn.get_interrupt_handle(),
            conn: Mutex::new(conn),
            deadline,
            single: Mutex::default(),
            host_statement,
            read_only,
        })
    }

    /// Gives the connection to a call that ends at `deadline`, with `access`.
    fn start(&self, deadline: Instant, access: Access) -> Result<(), GuestError> {
        *self.deadline.lock().expect("deadline lock") = deadline;
        let conn = self.conn.lock().expect("sqlite connection lock");
        conn.busy_timeout(busy_wait(deadline))
            .map_err(sqlite_error)?;
        drop(conn);
        self.read_only
            .store(access == Access::ReadOnly, Ordering::Relaxed);
        Ok(())
    }

    fn interrupt(&self) {
        self.interrupt.interrupt();
    }

    /// Prepares `sql`, which must hold exactly one statement (a trailing `;`, blanks or
    /// comments aside): a second one would run outside the checks made on the first.
    /// Prepared statements are cached on the connection, as a server driver does.
    fn prepare<'c>(
        &self,
        conn: &'c rusqlite::Connection,
        sql: &str,
    ) -> Result<rusqlite::CachedStatement<'c>, GuestError> {
        let mut single = self.single.lock().expect("statement texts lock");
        if !single.contains(sql) {
            let mut batch = rusqlite::Batch::new(conn, sql);
            if batch.next().map_err(sqlite_error)?.is_none() {
                return Err(GuestError::InvalidConfig("the statement is empty".into()));
            }
            if batch.next().map_err(sqlite_error)?.is_some() {
                return Err(sqlite_error(rusqlite::Error::MultipleStatement));
            }
            // Short texts only are remembered, so that the memory this takes stays small.
            if sql.len() <= MAX_REMEMBERED_STATEMENT {
                if single.len() >= 1_024 {
                    single.clear();
                }
                single.insert(sql.to_owned());
            }
        }
        let prepared = conn.prepare_cached(sql).map_err(sqlite_error)?;
        // The authorizer judged the statement when it was first prepared, perhaps in a
        // call that could write: a statement taken from the cache is judged again.
        if self.read_only.load(Ordering::Relaxed) && !prepared.readonly() {
            return Err(GuestError::Denied(
                "the statement would change the database in a read-only call: locate, access and validate only read".into(),
            ));
        }
        Ok(prepared)
    }

    fn query(&self, statement: &Statement, limit: usize) -> Result<Rows, GuestError> {
        let conn = self.conn.lock().expect("sqlite connection lock");
        let mut prepared = self.prepare(&conn, &statement.sql)?;
        let columns: Vec<String> = prepared
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let params = statement.params.iter().map(to_sqlite).collect::<Vec<_>>();
        let mut cursor = prepared
            .query(rusqlite::params_from_iter(params))
            .map_err(sqlite_error)?;
        let mut rows = Vec::new();
        let mut budget = Budget { bytes: 0 };
        while let Some(row) = cursor.next().map_err(sqlite_error)? {
            // Each value is counted before it is copied, and the rest of a row is not
            // fetched once the budget is spent: SQLite expands a value (a zeroblob) only
            // when it is fetched.
            let values = (0..columns.len())
                .map(|i| {
                    let value = row.get_ref(i).map_err(sqlite_error)?;
                    budget.add(match value {
                        rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                            b.len()
                        }
                        _ => 0,
                    })?;
                    Ok(from_sqlite(value))
                })
                .collect::<Result<Vec<_>, GuestError>>()?;
            rows.push(values);
            if rows.len() >= limit {
                break;
            }
        }
        Ok(Rows { columns, rows })
    }

    fn transaction(&self, statements: &[Statement]) -> Result<Vec<u64>, GuestError> {
        let conn = self.conn.lock().expect("sqlite connection lock");
        let host = |sql: &str| {
            self.host_statement.store(true, Ordering::Relaxed);
            let done = conn.execute_batch(sql);
            self.host_statement.store(false, Ordering::Relaxed);
            done.map_err(sqlite_error)
        };
        host("BEGIN IMMEDIATE")?;
        let run = || {
            let mut counts = Vec::with_capacity(statements.len());
            for statement in statements {
                let mut prepared = self.prepare(&conn, &statement.sql)?;
                let params = statement.params.iter().map(to_sqlite).collect::<Vec<_>>();
                let changed = prepared
                    .execute(rusqlite::params_from_iter(params))
                    .map_err(sqlite_error)?;
                counts.push(changed as u64);
            }
            Ok(counts)
        };
        match run() {
            Ok(counts) => {
                // A COMMIT that fails (busy, interrupted) leaves the transaction open: it
                // is rolled back, never left for the plugin's next statements.
                if let Err(error) = host("COMMIT") {
                    let _ = host("ROLLBACK");
                    return Err(error);
                }
                Ok(counts)
            }
            Err(error) => {
                let _ = host("ROLLBACK");
                Err(error)
            }
        }
    }
}

/// What a plugin's statement may do on SQLite.
fn authorize(action: &AuthAction<'_>, read_only: bool, host: bool) -> Authorization {
    use AuthAction as A;
    let system_table = |table: &str| table.to_ascii_lowercase().starts_with("sqlite_");
    match action {
        A::Attach { .. } | A::Detach { .. } => Authorization::Deny,
        // Loading code, registering an FTS3 tokenizer (a pointer the host would call
        // through), and counters that would show a later call what an earlier one did.
        A::Function { function_name }
            if [
                "load_extension",
                "fts3_tokenizer",
                "changes",
                "total_changes",
                "last_insert_rowid",
            ]
            .iter()
            .any(|f| function_name.eq_ignore_ascii_case(f)) =>
        {
            Authorization::Deny
        }
        // Schema reads only; a pragma with a value changes the connection or the file.
        A::Pragma {
            pragma_name,
            pragma_value,
        } => {
            const READS: &[&str] = &[
                "table_info",
                "table_xinfo",
                "table_list",
                "index_list",
                "index_info",
                "index_xinfo",
                "foreign_key_list",
            ];
            if READS.iter().any(|p| pragma_name.eq_ignore_ascii_case(p))
                || (pragma_value.is_none()
                    && ["user_version", "schema_version", "encoding"]
                        .iter()
                        .any(|p| pragma_name.eq_ignore_ascii_case(p)))
            {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        A::Transaction { .. } | A::Savepoint { .. } => {
            if host {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        A::Insert { table_name } | A::Delete { table_name } | A::Update { table_name, .. } => {
            if read_only || system_table(table_name) {
                Authorization::Deny
            } else {
                Authorization::Allow
            }
        }
        A::Read { .. } | A::Select | A::Function { .. } | A::Recursive => Authorization::Allow,
        // Schema changes (temporary ones too: they would outlive the call on a reused
        // connection), ANALYZE, REINDEX, virtual tables and anything newer.
        _ => Authorization::Deny,
    }
}

fn to_sqlite(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        Value::Null => V::Null,
        Value::Boolean(b) => V::Integer((*b).into()),
        Value::Integer(i) => V::Integer(*i),
        Value::Real(r) => V::Real(*r),
        Value::Text(t) => V::Text(t.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as V;
    match value {
        V::Null => Value::Null,
        V::Integer(i) => Value::Integer(i),
        V::Real(r) => Value::Real(r),
        V::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Sorts a SQLite error into what the plugin, and then the queue, should do with it.
fn sqlite_error(error: rusqlite::Error) -> GuestError {
    use rusqlite::ErrorCode as C;
    match &error {
        rusqlite::Error::MultipleStatement => GuestError::InvalidConfig(
            "a statement entry holds more than one statement; send one statement per entry".into(),
        ),
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.clone().unwrap_or_else(|| failure.to_string());
            match failure.code {
                C::DatabaseBusy | C::DatabaseLocked => {
                    GuestError::Unavailable(format!("database busy: {message}"))
                }
                C::OperationInterrupted => GuestError::Unavailable(
                    "the statement was stopped at the call's deadline".into(),
                ),
                // A refused function is reported as a plain error with this message.
                _ if failure.code == C::AuthorizationForStatementDenied
                    || message.contains("not authorized") =>
                {
                    GuestError::Denied(format!(
                        "oubli refused the statement ({message}): a plugin may not attach other databases, change pragmas, vacuum, load extensions, change the schema, begin or end transactions itself, write the sqlite_* tables, or write at all in locate, access and validate"
                    ))
                }
                C::ReadOnly => GuestError::Denied(format!(
                    "the statement tried to write in a read-only call ({message}): locate, access and validate only read"
                )),
                C::TooBig => GuestError::Failed(format!(
                    "a value is larger than {} MiB: {message}",
                    MAX_RESULT_BYTES >> 20
                )),
                C::CannotOpen | C::NotADatabase => {
                    GuestError::InvalidConfig(format!("the SQLite database: {message}"))
                }
                _ if message.contains("no such table")
                    || message.contains("no such column")
                    || message.contains("syntax error") =>
                {
                    GuestError::InvalidConfig(format!(
                        "the database rejected a statement: {message}"
                    ))
                }
                _ => GuestError::Failed(format!("the database rejected a statement: {message}")),
            }
        }
        _ => GuestError::Failed(format!("database error: {error}")),
    }
}

fn unsupported(column: &str, ty: &str) -> GuestError {
    GuestError::InvalidConfig(format!(
        "column {column} has type {ty}, which oubli cannot pass to a plugin; leave the column out of the configuration, or expose it through a view that converts it to text"
    ))
}

fn decode_postgres(row: &PgRow, i: usize) -> Result<Value, GuestError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_owned();
    let get = |e| classify(e);
    let value = match ty.as_str() {
        "INT2" => Value::Integer(row.try_get::<i16, _>(i).map_err(get)?.into()),
        "INT4" => Value::Integer(row.try_get::<i32, _>(i).map_err(get)?.into()),
        "INT8" => Value::Integer(row.try_get(i).map_err(get)?),
        "FLOAT4" => Value::Real(row.try_get::<f32, _>(i).map_err(get)?.into()),
        "FLOAT8" => Value::Real(row.try_get(i).map_err(get)?),
        "BOOL" => Value::Boolean(row.try_get(i).map_err(get)?),
        "BYTEA" => Value::Blob(row.try_get(i).map_err(get)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CITEXT" => {
            Value::Text(row.try_get(i).map_err(get)?)
        }
        // PostgreSQL's one-byte `"char"`.
        "CHAR" => match row.try_get::<String, _>(i) {
            Ok(text) => Value::Text(text),
            Err(_) => {
                Value::Text(char::from(row.try_get::<i8, _>(i).map_err(get)? as u8).to_string())
            }
        },
        "NUMERIC" => Value::Text(
            row.try_get::<sqlx::types::BigDecimal, _>(i)
                .map_err(get)?
                .to_plain_string(),
        ),
        "UUID" => Value::Text(row.try_get::<uuid::Uuid, _>(i).map_err(get)?.to_string()),
        "INET" | "CIDR" => {
            let net = row
                .try_get::<sqlx::types::ipnet::IpNet, _>(i)
                .map_err(get)?;
            // A host address is written without its /32 or /128, as PostgreSQL does.
            Value::Text(
                if ty == "INET" && net.prefix_len() == net.max_prefix_len() {
                    net.addr().to_string()
                } else {
                    net.to_string()
                },
            )
        }
        "MACADDR" => Value::Text(
            row.try_get::<sqlx::types::mac_address::MacAddress, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "TIME" => Value::Text(
            row.try_get::<chrono::NaiveTime, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "TIMETZ" => {
            let t = row
                .try_get::<sqlx::postgres::types::PgTimeTz<chrono::NaiveTime, chrono::FixedOffset>, _>(i)
                .map_err(get)?;
            Value::Text(format!("{}{}", t.time, t.offset))
        }
        "INTERVAL" => {
            let v = row
                .try_get::<sqlx::postgres::types::PgInterval, _>(i)
                .map_err(get)?;
            Value::Text(iso_duration(v.months, v.days, v.microseconds))
        }
        "MONEY" => {
            // In the database's currency, with its two decimal places (lc_monetary).
            let cents = row
                .try_get::<sqlx::postgres::types::PgMoney, _>(i)
                .map_err(get)?
                .0;
            Value::Text(format!(
                "{}{}.{:02}",
                if cents < 0 { "-" } else { "" },
                (cents / 100).unsigned_abs(),
                (cents % 100).unsigned_abs()
            ))
        }
        "OID" => Value::Integer(
            row.try_get::<sqlx::postgres::types::Oid, _>(i)
                .map_err(get)?
                .0
                .into(),
        ),
        array if array.ends_with("[]") => Value::Text(postgres_array(row, i, array)?.to_string()),
        "JSON" | "JSONB" => Value::Text(
            row.try_get::<serde_json::Value, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "TIMESTAMPTZ" => Value::Text(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)
                .map_err(get)?
                .to_rfc3339(),
        ),
        "TIMESTAMP" => Value::Text(
            row.try_get::<chrono::NaiveDateTime, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "DATE" => Value::Text(
            row.try_get::<chrono::NaiveDate, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        // An enum's value is its label.
        _ if matches!(raw.type_info().kind(), sqlx::postgres::PgTypeKind::Enum(_)) => Value::Text(
            std::str::from_utf8(
                raw.as_bytes()
                    .map_err(|e| classify(sqlx::Error::Decode(e)))?,
            )
            .map_err(|e| classify(sqlx::Error::Decode(Box::new(e))))?
            .to_owned(),
        ),
        other => return Err(unsupported(row.column(i).name(), other)),
    };
    Ok(value)
}

/// An ISO 8601 duration (`P1Y2M3DT4H5M6.5S`) from PostgreSQL's interval parts.
fn iso_duration(months: i32, days: i32, microseconds: i64) -> String {
    let mut out = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (n, unit) in [
        (years as i64, 'Y'),
        (months as i64, 'M'),
        (days as i64, 'D'),
    ] {
        if n != 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if microseconds != 0 {
        let sign = if microseconds < 0 { "-" } else { "" };
        let us = microseconds.unsigned_abs();
        let (hours, rest) = (us / 3_600_000_000, us % 3_600_000_000);
        let (minutes, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (seconds, micros) = (rest / 1_000_000, rest % 1_000_000);
        out.push('T');
        if hours != 0 {
            out.push_str(&format!("{sign}{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{sign}{minutes}M"));
        }
        if seconds != 0 || micros != 0 {
            let fraction = if micros == 0 {
                String::new()
            } else {
                format!(".{micros:06}").trim_end_matches('0').to_owned()
            };
            out.push_str(&format!("{sign}{seconds}{fraction}S"));
        }
    }
    if out == "P" {
        out.push_str("T0S");
    }
    out
}

/// A PostgreSQL array as a JSON array, for the element types a personal-data column
/// commonly has.
fn postgres_array(row: &PgRow, i: usize, ty: &str) -> Result<serde_json::Value, GuestError> {
    use chrono::{DateTime, NaiveDate, Utc};
    use sqlx::types::BigDecimal;
    Ok(match ty {
        "TEXT[]" | "VARCHAR[]" | "BPCHAR[]" | "NAME[]" | "CITEXT[]" => {
            serde_json::json!(elements::<String>(row, i)?)
        }
        "INT2[]" => serde_json::json!(elements::<i16>(row, i)?),
        "INT4[]" => serde_json::json!(elements::<i32>(row, i)?),
        "INT8[]" => serde_json::json!(elements::<i64>(row, i)?),
        "FLOAT4[]" => serde_json::json!(elements::<f32>(row, i)?),
        "FLOAT8[]" => serde_json::json!(elements::<f64>(row, i)?),
        "BOOL[]" => serde_json::json!(elements::<bool>(row, i)?),
        "JSON[]" | "JSONB[]" => serde_json::json!(elements::<serde_json::Value>(row, i)?),
        // Exact decimals, UUIDs and dates as strings, as outside arrays.
        "NUMERIC[]" => as_text(elements::<BigDecimal>(row, i)?, |d| d.to_plain_string()),
        "UUID[]" => as_text(elements::<uuid::Uuid>(row, i)?, |u| u.to_string()),
        "DATE[]" => as_text(elements::<NaiveDate>(row, i)?, |d| d.to_string()),
        "TIMESTAMPTZ[]" => as_text(elements::<DateTime<Utc>>(row, i)?, |d| d.to_rfc3339()),
        other => return Err(unsupported(row.column(i).name(), other)),
    })
}

/// The elements of a PostgreSQL array column, NULLs kept.
fn elements<T>(row: &PgRow, i: usize) -> Result<Vec<Option<T>>, GuestError>
where
    for<'r> Vec<Option<T>>: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<Vec<Option<T>>, _>(i).map_err(classify)
}

/// Array elements written as text, NULLs kept.
fn as_text<T>(elements: Vec<Option<T>>, text: impl Fn(T) -> String) -> serde_json::Value {
    serde_json::json!(
        elements
            .into_iter()
            .map(|v| v.map(&text))
            .collect::<Vec<Option<String>>>()
    )
}

fn decode_mysql(row: &MySqlRow, i: usize) -> Result<Value, GuestError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_owned();
    let get = |e| classify(e);
    let value = match ty.as_str() {
        "BOOLEAN" => Value::Boolean(row.try_get(i).map_err(get)?),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            Value::Integer(row.try_get(i).map_err(get)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => {
            let n: u64 = row.try_get(i).map_err(get)?;
            i64::try_from(n)
                .map(Value::Integer)
                .unwrap_or_else(|_| Value::Text(n.to_string()))
        }
        "FLOAT" => Value::Real(row.try_get::<f32, _>(i).map_err(get)?.into()),
        "DOUBLE" => Value::Real(row.try_get(i).map_err(get)?),
        "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BINARY" | "VARBINARY" => {
            Value::Blob(row.try_get(i).map_err(get)?)
        }
        "DATETIME" => Value::Text(
            row.try_get::<chrono::NaiveDateTime, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "TIMESTAMP" => Value::Text(
            row.try_get::<chrono::DateTime<chrono::Utc>, _>(i)
                .map_err(get)?
                .to_rfc3339(),
        ),
        "DATE" => Value::Text(
            row.try_get::<chrono::NaiveDate, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "JSON" => Value::Text(
            row.try_get::<serde_json::Value, _>(i)
                .map_err(get)?
                .to_string(),
        ),
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET" => {
            Value::Text(row.try_get(i).map_err(get)?)
        }
        "DECIMAL" => Value::Text(
            row.try_get::<sqlx::types::BigDecimal, _>(i)
                .map_err(get)?
                .to_plain_string(),
        ),
        "TIME" => {
            // `HH:MM:SS[.ffffff]`, as MySQL writes it; hours may exceed 24.
            let t = row
                .try_get::<sqlx::mysql::types::MySqlTime, _>(i)
                .map_err(get)?;
            let fraction = match t.microseconds() {
                0 => String::new(),
                us => format!(".{us:06}"),
            };
            Value::Text(format!(
                "{}{:02}:{:02}:{:02}{fraction}",
                // `sign()`: sqlx 0.8's `MySqlTime::is_negative` answers the opposite.
                if t.sign().is_negative() { "-" } else { "" },
                t.hours(),
                t.minutes(),
                t.seconds()
            ))
        }
        "YEAR" => Value::Integer(row.try_get::<u16, _>(i).map_err(get)?.into()),
        "BIT" => {
            let n: u64 = row.try_get(i).map_err(get)?;
            i64::try_from(n)
                .map(Value::Integer)
                .unwrap_or_else(|_| Value::Text(n.to_string()))
        }
        "GEOMETRY" => Value::Blob(row.try_get(i).map_err(get)?),
        other => return Err(unsupported(row.column(i).name(), other)),
    };
    Ok(value)
}

/// Sorts a server database error into what the plugin, and then the queue, should do
/// with it.
/// How the message of a statement refused for a prepared statement of the connection's
/// cache that no longer fits begins (see [`classify`]).
const STALE_STATEMENT: &str = "a prepared statement of the connection no longer fits";

/// Whether a PostgreSQL statement failed because the connection's prepared statement of
/// that text no longer fits: prepared with parameters of other types (the same text bound
/// with a number, then with a text: "insufficient data left in message", "incorrect
/// binary data format"), or its result's types changed since (an `ALTER TABLE`: "cached
/// plan must not change result type"). The host empties the connection's cache and runs
/// it again, once.
fn stale(error: &GuestError) -> bool {
    matches!(error, GuestError::Unavailable(m) if m.starts_with(STALE_STATEMENT))
}

fn classify(error: sqlx::Error) -> GuestError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => {
            GuestError::Unavailable(format!("database unreachable: {error}"))
        }
        sqlx::Error::Configuration(_) => {
            GuestError::InvalidConfig(format!("database configuration: {error}"))
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let message = db.message().to_owned();
            let transient = matches!(
                code.as_str(),
                // PostgreSQL serialization, deadlock, shutdown, and a prepared statement
                // gone from the connection (which is then closed); MySQL deadlock.
                "40001" | "40P01" | "57P01" | "57P03" | "26000"
            ) || message.contains("Lock wait timeout");
            // PostgreSQL's statement_timeout and cancel; MySQL/MariaDB's time limits
            // and KILL QUERY.
            let stopped = matches!(code.as_str(), "57014" | "70100" | "HY000")
                && (message.contains("timeout")
                    || message.contains("cancel")
                    || message.contains("interrupted")
                    || message.contains("max_statement_time")
                    || message.contains("execution time"));
            // PostgreSQL's own words for them (a trigger may raise these codes with a
            // message of its own; MySQL gives codes of the same form).
            let stale = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
                && match code.as_str() {
                    "08P01" => message.starts_with("insufficient data left in message"),
                    "22P03" => message.starts_with("incorrect binary data format"),
                    "0A000" => message.starts_with("cached plan must not change result type"),
                    _ => false,
                };
            let read_only = code == "25006"
                || message.contains("READ ONLY transaction")
                || message.contains("read-only transaction");
            let schema = code.starts_with("42")
                || matches!(
                    code.as_str(),
                    "1146" | "1054" | "1064" | "42S02" | "42S22" | "42000"
                )
                || message.contains("syntax error");
            if stopped {
                GuestError::Unavailable(format!(
                    "the statement was stopped at the call's deadline: {message}"
                ))
            } else if transient {
                GuestError::Unavailable(format!("database busy: {message}"))
            } else if stale {
                // (Unavailable if it fails again: the task is run again.)
                GuestError::Unavailable(format!(
                    "{STALE_STATEMENT} (its tables' or its parameters' types changed since it was prepared): {message}"
                ))
            } else if read_only {
                GuestError::Denied(format!(
                    "the statement tried to write in a read-only call ({message}): locate, access and validate only read"
                ))
            } else if schema {
                GuestError::InvalidConfig(format!("the database rejected a statement: {message}"))
            } else {
                GuestError::Failed(format!("the database rejected a statement: {message}"))
            }
        }
        _ => GuestError::Failed(format!("database error: {error}")),
    }
}

impl crate::runtime::bindings::sql::Host for crate::runtime::state::CallState {
    async fn database_dialect(&mut self) -> wasmtime::Result<Dialect> {
        Ok(self.sql_session()?.target.dialect())
    }

    async fn query(
        &mut self,
        statement: Statement,
        max_rows: u32,
    ) -> wasmtime::Result<Result<Rows, GuestError>> {
        Ok(self.sql_session()?.query(&statement, max_rows).await)
    }

    async fn transaction(
        &mut self,
        statements: Vec<Statement>,
    ) -> wasmtime::Result<Result<Vec<u64>, GuestError>> {
        Ok(self.sql_session()?.transaction(&statements).await)
    }
}

impl crate::runtime::state::CallState {
    /// The call's database session; traps the call unless `sql` is granted.
    fn sql_session(&mut self) -> wasmtime::Result<&mut SqlSession> {
        self.require("sql", self.system.sql.is_some())?;
        if self.sql.is_none() {
            let target = self.system.sql.clone().expect("checked just above");
            self.sql = Some(target.session_on_this_thread(self.access, self.deadline));
        }
        Ok(self.sql.as_mut().expect("set just above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        Statement {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    fn target(dir: &tempfile::TempDir) -> Arc<SqlTarget> {
        let path = dir.path().join("system.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT); INSERT INTO people (email) VALUES ('a@example.org');")
            .unwrap();
        Arc::new(SqlTarget::new(&format!("sqlite://{}", path.display())).unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_reaches_only_its_own_database() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE tokens (hash TEXT)")
            .unwrap();
        let target = target(&dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut session = target.session(Access::ReadWrite, deadline);
        for sql in [
            format!("ATTACH DATABASE '{}' AS o", other.display()),
            format!("VACUUM INTO '{}'", dir.path().join("copy.db").display()),
            "PRAGMA journal_mode = OFF".into(),
            "PRAGMA writable_schema = ON".into(),
            "PRAGMA query_only = OFF".into(),
            "SELECT load_extension('x')".into(),
            "DELETE FROM sqlite_master".into(),
            "BEGIN".into(),
        ] {
            let error = session
                .transaction(&[statement(&sql)])
                .await
                .expect_err(&sql);
            assert!(
                matches!(&error, GuestError::Denied(_) | GuestError::Failed(_)),
                "{sql}: {error:?}"
            );
        }
        assert!(!dir.path().join("copy.db").exists());
        let error = session
            .query(&statement("SELECT 1; DELETE FROM people"), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GuestError::InvalidConfig(m) if m.contains("more than one statement")),
            "{error:?}"
        );
        session.finish().await;

        let mut reading = target.session(Access::ReadOnly, deadline);
        let error = reading
            .query(&statement("DELETE FROM people"), 10)
            .await
            .unwrap_err();
        assert!(matches!(&error, GuestError::Denied(_)), "{error:?}");
        let rows = reading
            .query(&statement("SELECT email FROM people"), 10)
            .await
            .unwrap();
        assert_eq!(rows.rows.len(), 1, "the row is still there");
        reading.finish().await;
    }

    /// Read-only and read-write calls share a file's connections: a write prepared in a
    /// call that could write, and kept in the connection's statement cache, is refused to
    /// a read-only call that sends the same text.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_read_only_call_cannot_reuse_a_write_prepared_before() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        let idle = |target: &SqlTarget| match &target.backend {
            Backend::Sqlite(_, idle) => idle.0.lock().unwrap().len(),
            _ => unreachable!(),
        };
        let delete = |email: &str| Statement {
            sql: "DELETE FROM people WHERE email = ?1".into(),
            params: vec![Value::Text(email.into())],
        };
        let mut writing = target.session(Access::ReadWrite, deadline);
        assert_eq!(writing.transaction(&[delete("nobody")]).await.unwrap(), [0]);
        writing.finish().await;
        assert_eq!(idle(&target), 1);

        // The read-only call takes the pooled connection, whose cache holds the DELETE.
        let mut reading = target.session(Access::ReadOnly, deadline);
        let columns = reading
            .query(&statement("PRAGMA table_info(people)"), 10)
            .await
            .unwrap();
        assert_eq!(columns.rows.len(), 2, "a pragma that reads is a read");
        let error = reading
            .query(&delete("a@example.org"), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GuestError::Denied(m) if m.contains("would change the database in a read-only call")),
            "{error:?}"
        );
        reading.finish().await;
        assert_eq!(
            idle(&target),
            0,
            "a connection whose statement failed is not kept"
        );
        let mut reading = target.session(Access::ReadOnly, deadline);
        let rows = reading
            .query(&statement("SELECT email FROM people"), 10)
            .await
            .unwrap();
        assert_eq!(rows.rows.len(), 1, "the row is still there");
        reading.finish().await;

        let mut writing = target.session(Access::ReadWrite, deadline);
        assert_eq!(
            writing
                .transaction(&[delete("a@example.org")])
                .await
                .unwrap(),
            [1],
            "a call that may write still writes on the connection"
        );
        writing.finish().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn sqlite_results_are_capped_while_read() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut session = target.session(Access::ReadOnly, deadline);
        let error = session
            .query(&statement("SELECT zeroblob(200000000)"), 10)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GuestError::Failed(m) if m.contains("MiB")),
            "{error:?}"
        );
        let error = session
            .query(
                &statement(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT zeroblob(1000000) FROM n",
                ),
                10_000,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GuestError::Failed(m) if m.contains("MiB")),
            "{error:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_sqlite_statement_stops_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let target = target(&dir);
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut session = target.session(Access::ReadOnly, deadline);
        let started = Instant::now();
        let error = session
            .query(
                &statement(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                ),
                10,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, GuestError::Unavailable(m) if m.contains("deadline")),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn read_only_server_statements_are_queries() {
        for query in [
            "SELECT 1",
            "  (SELECT 1)",
            "with x as (select 1) select * from x",
            "SHOW TABLES",
        ] {
            assert!(require_query(query).is_ok(), "{query}");
        }
        for other in [
            "CREATE TABLE x (a int)",
            "SET SESSION transaction_read_only = OFF",
            "COMMIT",
            "/*! CREATE TABLE x (a int) */",
            "/* SELECT */ DELETE FROM x",
            "-- SELECT\nDELETE FROM x",
            "/* /* */ SELECT */ DO $$ BEGIN END $$",
            "/*M!SET SESSION max_statement_time=0,@x=(*/SELECT 1)",
            "-- why\nSELECT 1",
            "/* why */ SELECT 1",
            "",
        ] {
            assert!(
                matches!(require_query(other), Err(GuestError::Denied(_))),
                "{other}"
            );
        }
    }

    #[test]
    fn oubli_s_own_database_is_recognised_under_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("oubli.db");
        std::fs::write(&own, b"").unwrap();
        let own_location = own.display().to_string();
        for url in [
            format!("sqlite://{}", own.display()),
            format!("sqlite:{}/./oubli.db?mode=ro", dir.path().display()),
            format!("sqlite://{}-wal", own.display()),
        ] {
            assert!(
                SqlTarget::new(&url).unwrap().is_database(&own_location),
                "{url}"
            );
        }
        assert!(SqlTarget::new(&format!("sqlite:file:{}", own.display())).is_err());
        assert!(
            !SqlTarget::new(&format!("sqlite://{}/crm.db", dir.path().display()))
                .unwrap()
                .is_database(&own_location)
        );
        let store = "postgres://postgres@127.0.0.1:5432/oubli";
        for url in [
            "postgres://crm:secret@localhost/oubli",
            "postgresql://[::1]:5432/oubli?sslmode=disable",
            "postgres://localhost/crm?dbname=oubli",
            "postgres://localhost/%6Fubli",
            "postgres://[::ffff:127.0.0.1]/oubli",
            "postgres://0.0.0.0/oubli",
        ] {
            assert!(SqlTarget::new(url).unwrap().is_database(store), "{url}");
        }
        for url in [
            "postgres://localhost/crm",
            "postgres://localhost:5433/oubli",
            "mysql://localhost/oubli",
        ] {
            assert!(!SqlTarget::new(url).unwrap().is_database(store), "{url}");
        }
    }

    fn far_deadline() -> Arc<Mutex<Instant>> {
        Arc::new(Mutex::new(Instant::now() + Duration::from_secs(3600)))
    }

    #[test]
    fn linear_text_functions_give_sqlite_s_results() {
        let builtin = rusqlite::Connection::open_in_memory().unwrap();
        let linear = rusqlite::Connection::open_in_memory().unwrap();
        linear_text_functions(&linear, far_deadline()).unwrap();
        for expression in [
            "instr(0.1 + 0.2, '0.3')",
            "replace(0.1 + 0.2, '.', ',')",
            "replace(1e20, 'e', 'E')",
            "replace(1e15, 'e', 'E')",
            "replace(1e14, '.', ',')",
            "replace(1e-7, 'e', 'E')",
            "replace(0.0001, '.', ',')",
            "replace(0.00001234, '.', ',')",
            "replace(9e999, 'I', 'i')",
            "replace(-9e999, 'I', 'i')",
            "replace(123456789012345.67, '.', ',')",
            "replace(999999999999999.9, '.', ',')",
            "replace(-0.0, '.', ',')",
            "replace(100.0, '.', ',')",
            "replace(-2.5, '.', ',')",
            "replace(1.0 / 3, '.', ',')",
            "replace(2.0 / 3 * 1e-10, '.', ',')",
            "replace(6.02214076e23, '.', ',')",
            "trim(1.5e300)",
            "instr('hello', 'l')",
            "instr('héllo', 'l')",
            "instr(x'010203', x'0203')",
            "instr('abc', 'z')",
            "instr('abc', '')",
            "instr(NULL, 'a')",
            "instr(12345, 34)",
            "instr(12.0, '.0')",
            "replace('aaaa', 'aa', 'b')",
            "replace('abcabc', 'b', 'XYZ')",
            "replace('abc', '', 'x')",
            "replace(NULL, 'a', 'b')",
            "replace('a', 'a', NULL)",
            "trim('  x  ')",
            "ltrim('xxyxx', 'x')",
            "rtrim('héé', 'é')",
            "trim('abcba', 'ab')",
            "trim(NULL)",
            "trim('x', NULL)",
        ] {
            let query = format!("SELECT quote({expression})");
            let expected: String = builtin.query_row(&query, [], |r| r.get(0)).unwrap();
            let got: String = linear.query_row(&query, [], |r| r.get(0)).unwrap();
            assert_eq!(got, expected, "{expression}");
        }
    }

    /// The host's search of free text finds what `instr(lower(text), value) > 0` finds
    /// with SQLite's own functions, for text with NUL bytes, invalid UTF-8, non-ASCII
    /// letters, values with capitals, and values across the windows it lowers at a time.
    #[test]
    fn contains_folded_finds_what_instr_of_lower_finds() {
        let sqlite = rusqlite::Connection::open_in_memory().unwrap();
        let host = rusqlite::Connection::open_in_memory().unwrap();
        linear_text_functions(&host, far_deadline()).unwrap();
        let long = |at: usize, part: &str| {
            let mut text = vec![b'x'; at];
            text.extend_from_slice(part.as_bytes());
            text.extend_from_slice(&[b'y'; 100]);
            text
        };
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (b"Jane.Doe@Example.COM".to_vec(), "jane.doe@example.com"),
            (b"Jane.Doe@Example.COM".to_vec(), "Jane.Doe@Example.COM"),
            (b"note\0jane@example.com".to_vec(), "jane@example.com"),
            (b"Andr\xC3\xA9\xA0Dupont".to_vec(), "andr\u{e9}"),
            ("ANDR\u{c9} Dupont".as_bytes().to_vec(), "andr\u{e9}"),
            ("andr\u{e9} dupont".as_bytes().to_vec(), "andr\u{e9}"),
            (b"100% _off_ \\ here".to_vec(), "% _off_ \\"),
            (b"short".to_vec(), "longer than the text"),
            (b"anything".to_vec(), ""),
            (Vec::new(), "a"),
        ];
        // A value longer than the window, found across windows, and not found.
        let long_value = "x".repeat(FOLD_WINDOW + 100) + "jane";
        cases.push((long(10, &long_value.to_uppercase()), &long_value));
        cases.push((long(3 * FOLD_WINDOW, &long_value), &long_value));
        cases.push((
            long(3 * FOLD_WINDOW, &long_value.replace("jane", "jan")),
            &long_value,
        ));
        for at in [
            0,
            FOLD_WINDOW - 20,
            FOLD_WINDOW - 10,
            FOLD_WINDOW - 1,
            FOLD_WINDOW,
            2 * FOLD_WINDOW - 5,
            3 * FOLD_WINDOW + 7,
        ] {
            cases.push((long(at, "Jane.Doe@Example.com"), "jane.doe@example.com"));
            cases.push((long(at, "Jane.Doe@Example.co"), "jane.doe@example.com"));
        }
        for (text, value) in &cases {
            let expected: bool = sqlite
                .query_row(
                    "SELECT instr(lower(CAST(?1 AS TEXT)), ?2) > 0",
                    rusqlite::params![text, value],
                    |r| r.get(0),
                )
                .unwrap();
            let got: bool = host
                .query_row(
                    "SELECT oubli_contains_folded(?2, CAST(?1 AS TEXT))",
                    rusqlite::params![text, value],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                got,
                expected,
                "{:?} in {:?}",
                value,
                String::from_utf8_lossy(text)
            );
        }
        // NULL as `OR` gives it: found beside a NULL is found, not found beside one is NULL.
        for (texts, expected) in [
            ("NULL, 'a'", None),
            ("'x', NULL", None),
            ("NULL, 'Jane@Example.com'", Some(1)),
            ("'x', 'y'", Some(0)),
        ] {
            let got: Option<i64> = host
                .query_row(
                    &format!("SELECT oubli_contains_folded('jane@example.com', {texts})"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(got, expected, "{texts}");
        }
        assert!(
            host.query_row("SELECT oubli_contains_folded('a')", [], |r| r
                .get::<_, i64>(0))
                .is_err()
        );
        // The variant for columns declared as numbers skips numbers, not texts or bytes.
        for (texts, expected) in [
            ("12345, 1.5", Some(0)),
            ("12345, 'no 12345 here'", Some(1)),
            ("CAST('order 12345' AS BLOB), 7", Some(1)),
            ("NULL, 12345", None),
        ] {
            let got: Option<i64> = host
                .query_row(
                    &format!("SELECT oubli_contains_stored_text('12345', {texts})"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(got, expected, "{texts}");
        }
        // One statement, many rows, one value bound: each row is tested on its own.
        host.execute_batch(
            "CREATE TABLE notes (body TEXT, other TEXT); INSERT INTO notes VALUES ('x Jane@Example.com', NULL), ('nothing', 'else'), (NULL, NULL), ('y', 'JANE@EXAMPLE.COM y');",
        )
        .unwrap();
        let found: i64 = host
            .query_row(
                "SELECT COUNT(*) FROM notes WHERE oubli_contains_folded(?1, body, other)",
                ["jane@example.com"],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, 2);
        // A value that changes from row to row is searched as itself in each (what the
        // function keeps of a value is kept only for a value bound to the statement).
        host.execute_batch(
            "CREATE TABLE pairs (value TEXT, body TEXT, found INTEGER); INSERT INTO pairs VALUES \
             ('jane@example.com', 'x JANE@example.com', 1), ('john@example.com', 'x JANE@example.com', 0), \
             ('john@example.com', 'John@Example.com', 1), ('jane@example.com', 'John@Example.com', 0);",
        )
        .unwrap();
        let wrong: i64 = host
            .query_row(
                "SELECT COUNT(*) FROM pairs WHERE oubli_contains_folded(value, body) <> found",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(wrong, 0);
    }

    /// Past the call's deadline the search stops with an interruption, in the middle of a
    /// text SQLite gives it in one step.
    #[test]
    fn contains_folded_stops_at_the_deadline() {
        let host = rusqlite::Connection::open_in_memory().unwrap();
        let deadline = Arc::new(Mutex::new(Instant::now()));
        linear_text_functions(&host, deadline).unwrap();
        let text = "a".repeat(4 * FOLD_WINDOW);
        let stopped = host.query_row(
            "SELECT oubli_contains_folded('b', ?1, ?1, ?1)",
            [&text],
            |r| r.get::<_, i64>(0),
        );
        assert!(
            matches!(&stopped, Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("deadline")),
            "{stopped:?}"
        );
    }
}
