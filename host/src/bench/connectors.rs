//! `oubli bench connectors`: locate + erase of one subject at a time on a large demo CRM
//! through the first-party SQL connector, beside the same statements issued by native
//! Rust code in the same run.

use super::{Percentiles, Report, Scratch};
use crate::runtime::bindings::sql::{Statement, Value};
use crate::runtime::sql::{MAX_ROWS, Sent, SqlTarget};
use crate::runtime::{Identity, Runtime, RuntimeSettings, Subject};
use serde::Serialize;
use std::time::Instant;

/// The figures of `oubli bench connectors`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorsReport {
    pub benchmark: &'static str,
    /// `sqlite`, `postgresql` or `mysql`.
    pub database: &'static str,
    pub customers: u64,
    pub subjects: u64,
    /// How e-mail addresses are matched: `exact`, or `email` (trimmed, any case, served
    /// by an index on `lower(trim(email))` on both copies).
    pub matching: &'static str,
    /// locate + erase through the plugin, per subject.
    pub plugin: Percentiles,
    /// The same locate and erase statements by native code, per subject.
    pub native: Percentiles,
    /// plugin mean / native mean.
    pub ratio: f64,
    /// Statements the plugin sent per subject (a transaction counts once), and of them
    /// those the native side sends: all but the plugin's reads of the database's
    /// catalogue, which native code, knowing its schema, would not make.
    pub plugin_statements: f64,
    pub native_statements: f64,
}

impl Report for ConnectorsReport {
    fn print_text(&self) {
        println!(
            "oubli bench connectors: locate + erase of {} subjects on a {}-customer {} CRM, e-mail matched {}",
            self.subjects, self.customers, self.database, self.matching
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p99 µs", "mean µs"
        );
        for (name, p) in [
            ("through the plugin", &self.plugin),
            ("same statements, native", &self.native),
        ] {
            println!(
                "{name:<28} {:>10.0} {:>10.0} {:>10.0}",
                p.p50_us, p.p99_us, p.mean_us
            );
        }
        println!(
            "statements per subject: {:.1} sent by the plugin, {:.1} of them natively (not its catalogue reads)",
            self.plugin_statements, self.native_statements
        );
        println!("ratio (mean plugin / native): {:.2}", self.ratio);
    }
}

/// The demo CRM's schema in SQL that PostgreSQL runs.
const SERVER_SCHEMA: &str = "\
CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE, phone VARCHAR(64), first_name VARCHAR(255) NOT NULL, last_name VARCHAR(255) NOT NULL, city VARCHAR(255), created_at VARCHAR(64) NOT NULL);
CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id), placed_at VARCHAR(64) NOT NULL, shipping_address VARCHAR(255) NOT NULL, total_cents BIGINT NOT NULL);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE TABLE order_items (id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL REFERENCES orders(id), sku VARCHAR(64) NOT NULL, quantity BIGINT NOT NULL, gift_message VARCHAR(255));
CREATE INDEX order_items_order ON order_items(order_id);
CREATE TABLE support_tickets (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL REFERENCES customers(id), subject VARCHAR(255) NOT NULL, body VARCHAR(1024) NOT NULL);
CREATE INDEX support_tickets_customer ON support_tickets(customer_id);
CREATE TABLE invoices (id BIGINT PRIMARY KEY, customer_id BIGINT REFERENCES customers(id) ON DELETE SET NULL, number VARCHAR(64) NOT NULL UNIQUE, billing_email VARCHAR(255), billing_name VARCHAR(255) NOT NULL, billing_address VARCHAR(255) NOT NULL, amount_cents BIGINT NOT NULL, issued_at VARCHAR(64) NOT NULL);
CREATE INDEX invoices_customer ON invoices(customer_id);
CREATE INDEX invoices_email ON invoices(billing_email);
";

/// Whether `sent` reads the database's catalogue (the SQL connector's `Catalogue`).
fn reads_catalogue(sent: &Sent) -> bool {
    match sent {
        Sent::Query(query) => ["information_schema.", "pg_catalog.", "sqlite_master"]
            .iter()
            .any(|catalogue| query.sql.contains(catalogue)),
        Sent::Transaction(_) => false,
    }
}

/// Sends `sent` through `session` in one hand-off to a blocking thread, as native code
/// would; returns the session for the next subject.
async fn replay(
    mut session: crate::runtime::sql::SqlSession,
    sent: Vec<Sent>,
) -> anyhow::Result<crate::runtime::sql::SqlSession> {
    let handle = tokio::runtime::Handle::current();
    let (session, done) = tokio::task::spawn_blocking(move || {
        let done = handle.block_on(async {
            for statement in &sent {
                match statement {
                    Sent::Query(query) => session.query(query, MAX_ROWS).await.map(drop),
                    Sent::Transaction(statements) => {
                        session.transaction(statements).await.map(drop)
                    }
                }
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            anyhow::Ok(())
        });
        (session, done)
    })
    .await?;
    done.map_err(|e| anyhow::anyhow!("the native statements failed: {e:?}"))?;
    Ok(session)
}

/// Where the benchmark's two copies of the CRM live.
pub(super) enum Copies {
    Sqlite { _files: tempfile::TempDir },
    Server { databases: [Scratch; 2] },
}

impl Copies {
    /// Two identical CRMs: one for the plugin, one for the native statements.
    pub(super) async fn create(
        customers: u64,
        database: Option<&str>,
    ) -> anyhow::Result<(Copies, [String; 2])> {
        let dir = tempfile::tempdir()?;
        let served = dir.path().join("served.db");
        crate::demo::create_crm(&served, customers).await?;
        let Some(admin) = database else {
            let copy = dir.path().join("native.db");
            std::fs::copy(&served, &copy)?;
            let urls = [served, copy].map(|p| format!("sqlite://{}", p.display()));
            return Ok((Copies::Sqlite { _files: dir }, urls));
        };
        let mysql = admin.starts_with("mysql://");
        let first = if mysql {
            Scratch::create_mysql(admin, "served").await?
        } else {
            Scratch::create(admin, "served", None).await?
        };
        if let Err(e) = load_server(&served, &first.url).await {
            first.drop_database().await;
            return Err(e);
        }
        // (MySQL has no template databases: the copy is loaded as the first was.)
        let second = if mysql {
            match Scratch::create_mysql(admin, "native").await {
                Ok(second) => match load_server(&served, &second.url).await {
                    Ok(()) => Ok(second),
                    Err(e) => {
                        second.drop_database().await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            }
        } else {
            Scratch::create(admin, "native", Some(&first)).await
        };
        let second = match second {
            Ok(second) => second,
            Err(e) => {
                first.drop_database().await;
                return Err(e);
            }
        };
        let urls = [first.url.clone(), second.url.clone()];
        Ok((
            Copies::Server {
                databases: [first, second],
            },
            urls,
        ))
    }

    pub(super) async fn drop_databases(&self) {
        if let Copies::Server { databases } = self {
            for database in databases {
                database.drop_database().await;
            }
        }
    }
}

/// Copies the SQLite demo CRM into a new PostgreSQL or MySQL database, table by table, in
/// batches.
async fn load_server(from: &std::path::Path, to: &str) -> anyhow::Result<()> {
    let mysql = to.starts_with("mysql://");
    let source = std::sync::Arc::new(
        SqlTarget::new(&format!("sqlite://{}", from.display())).map_err(anyhow::Error::msg)?,
    );
    let target = std::sync::Arc::new(SqlTarget::new(to).map_err(anyhow::Error::msg)?);
    let statement = |sql: String, params: Vec<Value>| Statement { sql, params };
    target
        .transaction(
            &SERVER_SCHEMA
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| statement(s.to_owned(), Vec::new()))
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the schema: {e:?}"))?;
    // Each statement stays under the 64 KiB the SQL capability runs.
    const BATCH: i64 = 500;
    for table in [
        "customers",
        "orders",
        "order_items",
        "support_tickets",
        "invoices",
    ] {
        let mut last = 0i64;
        loop {
            let rows = source
                .query(
                    &statement(
                        format!("SELECT * FROM {table} WHERE id > ?1 ORDER BY id LIMIT {BATCH}"),
                        vec![Value::Integer(last)],
                    ),
                    BATCH as u32,
                )
                .await
                .map_err(|e| anyhow::anyhow!("reading {table}: {e:?}"))?;
            let Some(Value::Integer(end)) = rows.rows.last().and_then(|r| r.first()).cloned()
            else {
                break;
            };
            let width = rows.columns.len();
            let tuples: Vec<String> = (0..rows.rows.len())
                .map(|r| {
                    format!(
                        "({})",
                        (1..=width)
                            .map(|c| {
                                if mysql {
                                    "?".to_owned()
                                } else {
                                    format!("${}", r * width + c)
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            let insert = statement(
                format!(
                    "INSERT INTO {table} ({}) VALUES {}",
                    rows.columns.join(", "),
                    tuples.join(", ")
                ),
                rows.rows.into_iter().flatten().collect(),
            );
            target
                .transaction(std::slice::from_ref(&insert))
                .await
                .map_err(|e| anyhow::anyhow!("writing {table}: {e:?}"))?;
            last = end;
        }
    }
    let analyze = if mysql {
        "ANALYZE TABLE customers, orders, order_items, support_tickets, invoices"
    } else {
        "ANALYZE"
    };
    target
        .query(&statement(analyze.into(), Vec::new()), 100)
        .await
        .map_err(|e| anyhow::anyhow!("analyzing: {e:?}"))?;
    Ok(())
}

/// Erases `subjects` customers of a `customers`-customer demo CRM through the plugin,
/// and the same customers on an identical copy with the same statements issued by native
/// code, through the same driver. SQLite unless `database` names a PostgreSQL server.
///
/// # Errors
/// When the CRM cannot be written or a call fails.
pub async fn connectors(
    customers: u64,
    subjects: u64,
    database: Option<&str>,
    folded: bool,
) -> anyhow::Result<ConnectorsReport> {
    anyhow::ensure!(
        subjects >= 10 && subjects <= customers,
        "--subjects must be at least 10 and at most --customers"
    );
    let engine = match database {
        None => "sqlite",
        Some(url) if url.starts_with("mysql://") => "mysql",
        Some(url) if crate::store::is_postgres(url) => "postgresql",
        Some(_) => anyhow::bail!("--database takes a postgres:// or mysql:// URL"),
    };
    anyhow::ensure!(
        !(folded && engine == "mysql"),
        "--case-insensitive is not measured on MySQL (MariaDB has no index on an expression)"
    );
    let (copies, urls) = Copies::create(customers, database).await?;
    let result = measure(customers, subjects, &urls, engine, folded).await;
    copies.drop_databases().await;
    result
}

async fn measure(
    customers: u64,
    subjects: u64,
    [served, copy]: &[String; 2],
    engine: &'static str,
    folded: bool,
) -> anyhow::Result<ConnectorsReport> {
    let runtime = std::sync::Arc::new(Runtime::new(RuntimeSettings::default())?);
    let builtin = crate::plugins::builtin("sql")
        .ok_or_else(|| anyhow::anyhow!("the SQL connector is built in"))?;
    let plugin = runtime.load("builtin:sql", builtin.bytes, None)?;
    let mut config = crate::demo::crm_system("crm", std::path::Path::new("unused"));
    if let Some(sql) = config.capabilities.sql.as_mut() {
        sql.url = served.clone();
    }
    if folded {
        // The `email` rule on both e-mail columns, and on both copies the index that
        // serves it, as a DBA would add.
        let tables = config.config["dataset"]["tables"]
            .as_array_mut()
            .ok_or_else(|| anyhow::anyhow!("the demo dataset has tables"))?;
        for table in tables {
            if let Some(column) = table["identities"]["email"].as_str().map(str::to_owned) {
                table["identities"]["email"] =
                    serde_json::json!({ "column": column, "match": "email" });
            }
        }
        for url in [served, copy] {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(url).await?;
            for index in [
                "CREATE INDEX customers_email_folded ON customers (lower(trim(email)))",
                "CREATE INDEX invoices_email_folded ON invoices (lower(trim(billing_email)))",
            ] {
                sqlx::raw_sql(index).execute(&pool).await?;
            }
            pool.close().await;
        }
    }
    let system = runtime.prepare(&config)?;
    // The plugin's statements are recorded and the native side sends exactly those.
    let served_target = system
        .sql
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the demo system is granted sql"))?;
    served_target.record();
    let native = std::sync::Arc::new(SqlTarget::new(copy).map_err(anyhow::Error::msg)?);

    // Spread the subjects over the table; warm both paths on the first one.
    let step = customers / subjects;
    let email = |i: u64| crate::demo::customer_email(1 + i * step);
    let subject = |i: u64| Subject {
        request_id: format!("bench-{i}"),
        identities: vec![Identity {
            kind: "email".into(),
            value: email(i),
        }],
    };
    runtime.locate(&plugin, &system, &subject(0)).await?;
    // Native code keeps its connection, one session for the whole run, and does each
    // subject's work in one hand-off to a blocking thread, where SQLite runs it in place
    // (as the plugin's calls do, one hand-off each).
    let mut native = native.session_on_this_thread(
        crate::runtime::sql::Access::ReadWrite,
        Instant::now() + std::time::Duration::from_secs(24 * 3600),
    );
    let warm = served_target.take_recorded();
    native = replay(native, warm).await?;
    let mut through_plugin = Vec::new();
    let mut direct = Vec::new();
    let (mut plugin_statements, mut native_statements) = (0, 0);
    for i in 0..subjects {
        let subject = subject(i);
        let start = Instant::now();
        runtime.locate(&plugin, &system, &subject).await?;
        runtime.erase(&plugin, &system, &subject).await?;
        through_plugin.push(start.elapsed().as_secs_f64() * 1e6);

        let mut sent = served_target.take_recorded();
        anyhow::ensure!(
            !sent.is_empty(),
            "the plugin sent no statement for subject {i}"
        );
        plugin_statements += sent.len();
        sent.retain(|s| !reads_catalogue(s));
        native_statements += sent.len();
        let start = Instant::now();
        native = replay(native, sent).await?;
        direct.push(start.elapsed().as_secs_f64() * 1e6);
    }
    native.finish().await;
    let (plugin, native) = (Percentiles::of(through_plugin), Percentiles::of(direct));
    Ok(ConnectorsReport {
        benchmark: "connectors",
        database: engine,
        customers,
        subjects,
        matching: if folded { "email" } else { "exact" },
        ratio: plugin.mean_us / native.mean_us,
        plugin_statements: plugin_statements as f64 / subjects as f64,
        native_statements: native_statements as f64 / subjects as f64,
        plugin,
        native,
    })
}
