//! The `sql` capability: the host runs a plugin's parameterised statements against the
//! system's own database with sqlx. The connection URL, and any password in it, never
//! enters the guest.

use super::bindings::sql::{Dialect, Rows, Statement, Value};
use super::bindings::types::Error as GuestError;
use futures::TryStreamExt;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use std::str::FromStr;
use std::time::Duration;

/// Most rows one query may return, whatever the plugin asks for.
pub const MAX_ROWS: u32 = 10_000;
/// Connections per system's pool.
const POOL_SIZE: u32 = 4;

/// One system's database: its dialect and a pool opened on first use.
pub struct SqlTarget {
    url: String,
    dialect: Dialect,
    pool: tokio::sync::OnceCell<Pool>,
}

impl std::fmt::Debug for SqlTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("SqlTarget")
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

impl SqlTarget {
    /// # Errors
    /// A message when the URL's scheme is not a supported database.
    pub fn new(url: &str) -> Result<Self, String> {
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Dialect::Mysql
        } else {
            return Err("expected a sqlite:, postgres:// or mysql:// URL".into());
        };
        Ok(SqlTarget {
            url: url.replacen("mariadb://", "mysql://", 1),
            dialect,
            pool: tokio::sync::OnceCell::new(),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn pool(&self) -> Result<&Pool, GuestError> {
        self.pool
            .get_or_try_init(|| async {
                let acquire = Duration::from_secs(10);
                let pool = match self.dialect {
                    Dialect::Sqlite => {
                        let options = SqliteConnectOptions::from_str(&self.url)
                            .map_err(|e| GuestError::InvalidConfig(format!("sql url: {e}")))?
                            .busy_timeout(Duration::from_secs(5));
                        Pool::Sqlite(
                            SqlitePoolOptions::new()
                                .max_connections(POOL_SIZE)
                                .acquire_timeout(acquire)
                                .connect_with(options)
                                .await
                                .map_err(classify)?,
                        )
                    }
                    Dialect::Postgres => Pool::Postgres(
                        PgPoolOptions::new()
                            .max_connections(POOL_SIZE)
                            .acquire_timeout(acquire)
                            .connect(&self.url)
                            .await
                            .map_err(classify)?,
                    ),
                    Dialect::Mysql => Pool::MySql(
                        MySqlPoolOptions::new()
                            .max_connections(POOL_SIZE)
                            .acquire_timeout(acquire)
                            .connect(&self.url)
                            .await
                            .map_err(classify)?,
                    ),
                };
                Ok(pool)
            })
            .await
    }

    /// Runs a query and returns at most `max_rows` rows.
    ///
    /// # Errors
    /// The connector error the plugin should see.
    pub async fn query(&self, statement: &Statement, max_rows: u32) -> Result<Rows, GuestError> {
        let limit = max_rows.min(MAX_ROWS) as usize;
        macro_rules! run {
            ($pool:expr, $decode:ident) => {{
                let mut stream = bind!(sqlx::query(&statement.sql), &statement.params).fetch($pool);
                let mut columns = Vec::new();
                let mut rows = Vec::new();
                while let Some(row) = stream.try_next().await.map_err(classify)? {
                    if columns.is_empty() {
                        columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                    }
                    rows.push(
                        (0..row.len())
                            .map(|i| $decode(&row, i))
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                    if rows.len() >= limit {
                        break;
                    }
                }
                Ok(Rows { columns, rows })
            }};
        }
        match self.pool().await? {
            Pool::Sqlite(pool) => run!(pool, decode_sqlite),
            Pool::Postgres(pool) => run!(pool, decode_postgres),
            Pool::MySql(pool) => run!(pool, decode_mysql),
        }
    }

    /// Runs the statements in one transaction and returns the rows each changed.
    ///
    /// # Errors
    /// The connector error the plugin should see; nothing is committed then.
    pub async fn transaction(&self, statements: &[Statement]) -> Result<Vec<u64>, GuestError> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.map_err(classify)?;
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
            }};
        }
        match self.pool().await? {
            Pool::Sqlite(pool) => run!(pool),
            Pool::Postgres(pool) => run!(pool),
            Pool::MySql(pool) => run!(pool),
        }
    }
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

fn unsupported(column: &str, ty: &str) -> GuestError {
    GuestError::InvalidConfig(format!(
        "column {column} has type {ty}, which oubli cannot pass to a plugin; cast it to text in the dataset"
    ))
}

fn decode_sqlite(row: &SqliteRow, i: usize) -> Result<Value, GuestError> {
    let raw = row.try_get_raw(i).map_err(classify)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let ty = raw.type_info().name().to_ascii_uppercase();
    let value = match ty.as_str() {
        "INTEGER" | "INT" | "BIGINT" => Value::Integer(row.try_get(i).map_err(classify)?),
        "BOOLEAN" => Value::Boolean(row.try_get(i).map_err(classify)?),
        "REAL" | "FLOAT" | "DOUBLE" | "NUMERIC" => Value::Real(row.try_get(i).map_err(classify)?),
        "BLOB" => Value::Blob(row.try_get(i).map_err(classify)?),
        _ => Value::Text(row.try_get(i).map_err(classify)?),
    };
    Ok(value)
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
        other => return Err(unsupported(row.column(i).name(), other)),
    };
    Ok(value)
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
        other => return Err(unsupported(row.column(i).name(), other)),
    };
    Ok(value)
}

/// Sorts a database error into what the plugin, and then the queue, should do with it.
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
                // SQLite busy/locked; PostgreSQL serialization, deadlock, shutdown;
                // MySQL deadlock.
                "5" | "6" | "261" | "262" | "517" | "40001" | "40P01" | "57P01" | "57P03"
            ) || message.contains("Lock wait timeout");
            let schema = code.starts_with("42")
                || matches!(
                    code.as_str(),
                    "1146" | "1054" | "1064" | "42S02" | "42S22" | "42000"
                )
                || message.contains("no such table")
                || message.contains("no such column")
                || message.contains("syntax error");
            if transient {
                GuestError::Unavailable(format!("database busy: {message}"))
            } else if schema {
                GuestError::InvalidConfig(format!("the database rejected a statement: {message}"))
            } else {
                GuestError::Failed(format!("the database rejected a statement: {message}"))
            }
        }
        _ => GuestError::Failed(format!("database error: {error}")),
    }
}
