//! `oubli bench intake` and `oubli bench e2e`: the service in this process on a temporary
//! folder (on SQLite, or on a throwaway PostgreSQL database with `--database`, where the
//! end-to-end run can also use `oubli worker` processes), driven over HTTP on loopback,
//! beside a native baseline measured in the same run.

use super::{Percentiles, Scratch};
use crate::auth::{self, Role};
use crate::config::Config;
use crate::controller::{self, Article15, NewController, NewSystem};
use crate::serve::{self, Running};
use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A service started for a benchmark, with one controller, its systems, a DPO token and
/// the controller's.
pub(super) struct Bench {
    pub(super) running: Running,
    pub(super) controller_id: String,
    pub(super) dpo: String,
    pub(super) controller: String,
    http: reqwest::Client,
    url: String,
}

/// The configuration of the benchmark's service (and of its worker processes).
pub(super) fn config(dir: &Path, workers: usize, database: Option<&Scratch>) -> Config {
    Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.join("service"),
        database: database.map(|d| d.url.clone()),
        workers,
        demo: false,
        backoff_base_ms: 50,
        ..Config::default()
    }
}

/// Starts the service with one controller owning `systems`, each connected through the
/// first-party SQL connector.
pub(super) async fn start(
    config: Config,
    mode: serve::Mode,
    systems: Vec<crate::runtime::SystemConfig>,
    auto_approve: bool,
) -> anyhow::Result<Bench> {
    let running = serve::start(config, mode).await?;
    let app = running.app.clone();
    let plugin = controller::register_builtin(&app.store, &app.runtime, "sql", "bench").await?;
    let mut tx = app.store.begin().await?;
    let new = NewController {
        name: "Bench".into(),
        webhook_url: None,
        auto_approve,
        contact_email: None,
    };
    let (bench, _) = controller::create_controller(&mut tx, &new).await?;
    for system in systems {
        let new = NewSystem::from_config(system, &plugin.digest, Article15::default());
        controller::create_system(&mut tx, &bench.id, &new).await?;
    }
    let (_, dpo) = auth::create(&mut tx, Role::Dpo, Some(&bench.id), "bench").await?;
    let (_, controller) = auth::create(&mut tx, Role::Controller, Some(&bench.id), "bench").await?;
    tx.commit().await?;
    let url = format!(
        "http://{}",
        running.address.context("the benchmark serves the API")?
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    Ok(Bench {
        running,
        controller_id: bench.id,
        dpo,
        controller,
        http,
        url,
    })
}

impl Bench {
    /// Submits one erasure request for demo customer `n`; returns the latency.
    async fn submit(&self, n: u64) -> anyhow::Result<Duration> {
        let (_, latency) =
            submit_erasure(&self.http, &self.url, &self.dpo, &self.controller_id, n).await?;
        Ok(latency)
    }

    /// Submits requests for customers `1..=n`, `concurrency` at a time; returns the latencies.
    async fn submit_all(self: &Arc<Self>, n: u64, concurrency: usize) -> anyhow::Result<Vec<f64>> {
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let mut clients = Vec::new();
        for _ in 0..concurrency {
            let (bench, next) = (self.clone(), next.clone());
            clients.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i > n {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    latencies.push(bench.submit(i).await?.as_secs_f64() * 1e6);
                }
            }));
        }
        let mut all = Vec::new();
        for client in clients {
            all.extend(client.await??);
        }
        Ok(all)
    }
}

/// Submits an erasure request for demo customer `n` to the service at `url` as the DPO
/// whose token is `dpo`; returns the request's id and how long the answer took.
pub(super) async fn submit_erasure(
    http: &reqwest::Client,
    url: &str,
    dpo: &str,
    controller_id: &str,
    n: u64,
) -> anyhow::Result<(String, Duration)> {
    let body = json!({
        "controller_id": controller_id,
        "kind": "erasure",
        "identities": [{ "kind": "email", "value": crate::demo::customer_email(n) }],
    });
    let start = Instant::now();
    let response = http
        .post(format!("{url}/v1/requests"))
        .bearer_auth(dpo)
        .json(&body)
        .send()
        .await?;
    let latency = start.elapsed();
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(
        status.as_u16() == 201,
        "submission answered {status}: {text}"
    );
    let request: serde_json::Value = serde_json::from_str(&text)?;
    let id = request["id"]
        .as_str()
        .context("the submission's answer has an id")?;
    Ok((id.to_owned(), latency))
}

/// Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Millis {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl From<Percentiles> for Millis {
    fn from(p: Percentiles) -> Self {
        Millis {
            p50_ms: p.p50_us / 1e3,
            p95_ms: p.p95_us / 1e3,
            p99_ms: p.p99_us / 1e3,
        }
    }
}

/// The figures of `oubli bench intake`.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeReport {
    pub benchmark: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    pub requests: u64,
    pub concurrency: usize,
    pub seconds: f64,
    /// Requests accepted (201, committed durably) per second over HTTP.
    pub per_second: f64,
    pub latency: Millis,
    /// Single-row durable commits per second to the same kind of database, one after
    /// another, without HTTP, validation or audit.
    pub baseline_commits_per_second: f64,
    /// per_second / baseline_commits_per_second.
    pub ratio: f64,
}

impl super::Report for IntakeReport {
    fn print_text(&self) {
        println!(
            "oubli bench intake: {} erasure requests over HTTP, {} at a time, on {}",
            self.requests, self.concurrency, self.database
        );
        println!(
            "  accepted:  {:>9.0} requests/s   ({:.2} s; p50 {:.2} ms, p99 {:.2} ms)",
            self.per_second, self.seconds, self.latency.p50_ms, self.latency.p99_ms
        );
        println!(
            "  baseline:  {:>9.0} durable single-row {} commits/s",
            self.baseline_commits_per_second, self.database
        );
        println!("  ratio (accepted / baseline): {:.2}", self.ratio);
    }
}

/// Durable single-row commits per second, one after another, in a new table.
async fn baseline_commits(conn: &mut sqlx::AnyConnection, n: u64) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE baseline_requests (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    let start = Instant::now();
    for i in 0..n {
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO baseline_requests (id, body) VALUES ($1, $2)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(format!(
                "{{\"email\":\"{}\"}}",
                crate::demo::customer_email(i)
            ))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Submits `requests` erasure requests over HTTP and measures how many are accepted per
/// second, on SQLite or, with `database` (a `postgres://` URL of a server), on a throwaway
/// PostgreSQL database.
///
/// # Errors
/// When the service cannot start or a submission fails.
pub async fn intake(
    requests: u64,
    concurrency: usize,
    database: Option<&str>,
) -> anyhow::Result<IntakeReport> {
    anyhow::ensure!(requests >= 100, "--requests must be at least 100");
    let scratch = match database {
        Some(admin) => Some(Scratch::create(admin, "intake", None).await?),
        None => None,
    };
    let measured = measure_intake(requests, concurrency, scratch.as_ref()).await;
    if let Some(scratch) = &scratch {
        scratch.drop_database().await;
    }
    measured
}

async fn measure_intake(
    requests: u64,
    concurrency: usize,
    scratch: Option<&Scratch>,
) -> anyhow::Result<IntakeReport> {
    let dir = tempfile::tempdir()?;
    let crm = dir.path().join("crm.db");
    crate::demo::create_crm(&crm, 10).await?;
    let config = config(dir.path(), 1, scratch);
    let crm = crate::demo::crm_system("crm0", &crm);
    let bench = Arc::new(start(config, serve::Mode::All, vec![crm], false).await?);
    bench.submit_all(50, concurrency.min(50)).await?; // warm-up: connections, caches
    let started = Instant::now();
    let latencies = bench.submit_all(requests, concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    let bench = Arc::into_inner(bench).context("every client finished")?;
    bench.running.stop().await;
    // The same driver layer as the service's, with the same durability settings.
    let baseline = match scratch {
        Some(scratch) => scratch.url.clone(),
        None => {
            let path = std::path::absolute(dir.path().join("baseline.db"))?;
            format!("sqlite://{}?mode=rwc", path.display())
        }
    };
    let mut conn = sqlx::AnyConnection::connect(&baseline).await?;
    if scratch.is_none() {
        sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL")
            .execute(&mut conn)
            .await?;
    }
    let baseline = baseline_commits(&mut conn, requests.min(5_000)).await?;
    conn.close().await?;
    let per_second = requests as f64 / seconds;
    Ok(IntakeReport {
        benchmark: "intake",
        database: if scratch.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        requests,
        concurrency,
        seconds,
        per_second,
        latency: Percentiles::of(latencies).into(),
        baseline_commits_per_second: baseline,
        ratio: per_second / baseline,
    })
}

/// The figures of `oubli bench e2e`.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    pub benchmark: &'static str,
    pub requests: u64,
    pub systems: usize,
    /// Tasks at once per worker process.
    pub workers: usize,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// `oubli worker` processes beside the API process (0: the API process runs the
    /// tasks).
    pub worker_processes: usize,
    /// From the first submission to the last request completed, through the service.
    pub oubli_seconds: f64,
    /// The same deletions by native Rust code, one transaction per subject and system.
    pub native_seconds: f64,
    /// oubli_seconds / native_seconds.
    pub ratio: f64,
    /// The checks each erasure ran after `erase`.
    pub checks: crate::config::ErasureChecks,
    /// Statements this process sent to oubli's own database per request, from the first
    /// submission to the last completion (the benchmark's own progress reads left out);
    /// `None` when they were not counted, or when worker processes ran the tasks.
    pub store_statements_per_request: Option<f64>,
    /// The same, by sqlx's summary of each statement (its first four words), the most
    /// frequent first.
    pub store_statements: Vec<StatementCount>,
}

/// Statements of one kind per request.
#[derive(Debug, Clone, Serialize)]
pub struct StatementCount {
    pub summary: String,
    pub per_request: f64,
}

impl super::Report for E2eReport {
    fn print_text(&self) {
        let processes = match self.worker_processes {
            0 => "in the API process".to_owned(),
            n => format!("in each of {n} worker processes"),
        };
        println!(
            "oubli bench e2e: {} erasure requests across {} SQLite CRM systems, on {}, {} tasks at once {processes}",
            self.requests, self.systems, self.database, self.workers
        );
        println!(
            "  throughput: {:>8.1} requests/s",
            self.requests as f64 / self.oubli_seconds
        );
        println!(
            "  oubli:   {:>8.2} s  submission to completion: locate (stored), erase, {}, per system",
            self.oubli_seconds,
            match self.checks {
                crate::config::ErasureChecks::All => "locate, verify by key, sweep",
                crate::config::ErasureChecks::Verify => "locate, verify by key (no sweep)",
                crate::config::ErasureChecks::Search => "locate (no verify, no sweep)",
            }
        );
        println!(
            "  native:  {:>8.2} s  the same deletions in Rust, one transaction per subject and system",
            self.native_seconds
        );
        println!("  ratio (oubli / native): {:.2}", self.ratio);
        if let Some(statements) = self.store_statements_per_request {
            println!(
                "  statements on oubli's database per request: {statements:.1} (submission, approval, every task and check), the most frequent:"
            );
            for count in self.store_statements.iter().take(25) {
                println!("    {:>6.2}  {}", count.per_request, count.summary);
            }
        }
    }
}

/// The erasure the SQL connector makes on the demo CRM, written directly: children
/// first, invoices kept, in one transaction.
pub(crate) async fn native_erase(
    conn: &mut sqlx::SqliteConnection,
    email: &str,
) -> anyhow::Result<()> {
    let customer = "SELECT id FROM customers WHERE email = $1";
    let mut tx = conn.begin().await?;
    for statement in [
        format!(
            "DELETE FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE customer_id IN ({customer}))"
        ),
        format!("DELETE FROM orders WHERE customer_id IN ({customer})"),
        format!("DELETE FROM support_tickets WHERE customer_id IN ({customer})"),
        "DELETE FROM customers WHERE email = $1".to_owned(),
    ] {
        sqlx::query(&statement)
            .bind(email)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// How `oubli bench e2e` runs the service.
#[derive(Debug, Clone, Copy)]
pub struct E2eSetup<'a> {
    pub requests: u64,
    pub systems: usize,
    /// Tasks at once per process that runs tasks.
    pub workers: usize,
    /// A PostgreSQL server (`postgres://…`) to hold the service's database instead of
    /// SQLite: a throwaway database is created there and dropped at the end.
    pub database: Option<&'a str>,
    /// `oubli worker` processes to start beside the API process (PostgreSQL only).
    pub worker_processes: usize,
    /// The checks each erasure runs after `erase`.
    pub checks: crate::config::ErasureChecks,
}

/// Runs `requests` erasure requests across `systems` demo CRMs through the service, then
/// the same deletions natively on copies, and compares the times.
///
/// # Errors
/// When the service cannot start, a request fails, or the native deletions fail.
pub async fn e2e(setup: E2eSetup<'_>) -> anyhow::Result<E2eReport> {
    anyhow::ensure!(
        setup.requests >= 10 && setup.systems >= 1,
        "--requests must be at least 10 and --systems at least 1"
    );
    anyhow::ensure!(
        setup.worker_processes == 0 || setup.database.is_some(),
        "--worker-processes needs --database postgres://…: processes share a PostgreSQL database"
    );
    let scratch = match setup.database {
        Some(admin) => Some(Scratch::create(admin, "e2e", None).await?),
        None => None,
    };
    let measured = measure_e2e(setup, scratch.as_ref()).await;
    if let Some(scratch) = &scratch {
        scratch.drop_database().await;
    }
    measured
}

/// Starts `n` `oubli worker` processes of this executable on the benchmark's service.
fn spawn_workers(config: &Config, n: usize) -> anyhow::Result<Vec<tokio::process::Child>> {
    (0..n)
        .map(|_| {
            oubli_command(config, "worker")?
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("starting an oubli worker process")
        })
        .collect()
}

/// `oubli <subcommand>` of this executable on the benchmark's configuration (its folder,
/// database, tasks at once, checks and backoff, no demo), killed when dropped.
pub(super) fn oubli_command(
    config: &Config,
    subcommand: &str,
) -> anyhow::Result<tokio::process::Command> {
    let exe = std::env::current_exe().context("finding the oubli executable")?;
    let mut command = tokio::process::Command::new(exe);
    // The child runs with the benchmark's settings only, whatever `OUBLI_*` variables
    // the shell that started the benchmark has.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OUBLI_") {
            command.env_remove(name);
        }
    }
    command
        .arg(subcommand)
        .env("OUBLI_DATA_DIR", &config.data_dir)
        .env("OUBLI_WORKERS", config.workers.to_string())
        .env("OUBLI_ERASURE_CHECKS", config.erasure_checks.as_str())
        .env("OUBLI_BACKOFF_BASE_MS", config.backoff_base_ms.to_string())
        .env("OUBLI_DEMO", "false")
        .kill_on_drop(true);
    if let Some(database) = &config.database {
        command.env("OUBLI_DATABASE", database);
    }
    Ok(command)
}

async fn measure_e2e(setup: E2eSetup<'_>, scratch: Option<&Scratch>) -> anyhow::Result<E2eReport> {
    let E2eSetup {
        requests,
        systems,
        workers,
        worker_processes,
        checks,
        ..
    } = setup;
    let dir = tempfile::tempdir()?;
    let mut served = Vec::new();
    let mut native = Vec::new();
    for i in 0..systems {
        for (set, name) in [(&mut served, "served"), (&mut native, "native")] {
            let path = dir.path().join(format!("{name}-crm{i}.db"));
            crate::demo::create_crm(&path, requests).await?;
            set.push(path);
        }
    }
    let config = Config {
        erasure_checks: checks,
        ..config(dir.path(), workers, scratch)
    };
    let mode = if worker_processes > 0 {
        serve::Mode::Api
    } else {
        serve::Mode::All
    };
    let crms = served
        .iter()
        .enumerate()
        .map(|(i, crm)| crate::demo::crm_system(&format!("crm{i}"), crm))
        .collect();
    let bench = Arc::new(start(config.clone(), mode, crms, true).await?);
    // Compile the plugin before the clock starts, as a running service has.
    let digest = controller::list_plugins(&bench.running.app.store)
        .await?
        .remove(0)
        .digest;
    bench.running.app.plugin(&digest).await?;
    let mut children = spawn_workers(&config, worker_processes)?;

    let counted = super::statements::by_summary().filter(|_| worker_processes == 0);
    const PROGRESS: &str = "SELECT COUNT(*) FROM requests WHERE status IN ('completed', 'failed')";
    let mut polls = 0;
    let started = Instant::now();
    bench.submit_all(requests, 32).await?;
    loop {
        polls += 1;
        let done: i64 = sqlx::query_scalar(PROGRESS)
            .fetch_one(&bench.running.app.store.read)
            .await?;
        if done as u64 >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let oubli_seconds = started.elapsed().as_secs_f64();
    // The benchmark's own progress reads are not the service's: taken out by their
    // summary, which is sqlx's (the first four words, and `…` for a longer statement).
    let store_statements: Option<Vec<StatementCount>> = counted
        .zip(super::statements::by_summary())
        .map(|(before, mut after)| {
            let progress = format!(
                "{} …",
                PROGRESS
                    .split_whitespace()
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if let Some(n) = after.get_mut(&progress) {
                *n = n.saturating_sub(polls);
            }
            super::statements::per_unit(&before, &after, requests)
                .into_iter()
                .map(|(summary, per_request)| StatementCount {
                    summary,
                    per_request,
                })
                .collect()
        });
    let store_statements_per_request = store_statements
        .as_ref()
        .map(|counts| counts.iter().map(|c| c.per_request).sum::<f64>());
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'failed'")
        .fetch_one(&bench.running.app.store.read)
        .await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} requests failed; see the service's log"
    );
    for child in &mut children {
        child.kill().await?;
    }
    let bench = Arc::into_inner(bench).context("every client finished")?;
    bench.running.stop().await;

    let mut connections = Vec::new();
    for path in &native {
        connections.push(SqliteConnectOptions::new().filename(path).connect().await?);
    }
    let started = Instant::now();
    for n in 1..=requests {
        let email = crate::demo::customer_email(n);
        for conn in &mut connections {
            native_erase(conn, &email).await?;
        }
    }
    let native_seconds = started.elapsed().as_secs_f64();
    for conn in connections {
        conn.close().await?;
    }
    Ok(E2eReport {
        benchmark: "e2e",
        requests,
        systems,
        workers,
        database: if scratch.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        worker_processes,
        oubli_seconds,
        native_seconds,
        ratio: oubli_seconds / native_seconds,
        checks,
        store_statements_per_request,
        store_statements: store_statements.unwrap_or_default(),
    })
}
