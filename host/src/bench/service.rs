//! `oubli bench intake` and `oubli bench e2e`: the service in this process on a temporary
//! folder, driven over HTTP on loopback, beside a native baseline measured in the same run.

use super::Percentiles;
use crate::auth::{self, Role};
use crate::config::Config;
use crate::controller::{self, Article15, NewController, NewSystem};
use crate::serve::{self, Running};
use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A service started for a benchmark, with one controller, its systems and a DPO token.
struct Bench {
    running: Running,
    controller_id: String,
    dpo: String,
    http: reqwest::Client,
    url: String,
}

async fn start(
    dir: &Path,
    workers: usize,
    crms: &[std::path::PathBuf],
    auto_approve: bool,
) -> anyhow::Result<Bench> {
    let config = Config {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.join("service"),
        workers,
        demo: false,
        backoff_base_ms: 50,
        ..Config::default()
    };
    let running = serve::start(config).await?;
    let app = running.app.clone();
    let plugin = controller::register_builtin(&app.store, &app.runtime, "sql", "bench").await?;
    let mut tx = app.store.begin().await?;
    let new = NewController {
        name: "Bench".into(),
        webhook_url: None,
        auto_approve,
    };
    let (bench, _) = controller::create_controller(&mut tx, &new).await?;
    for (i, crm) in crms.iter().enumerate() {
        let system = crate::demo::crm_system(&format!("crm{i}"), crm);
        let new = NewSystem::from_config(system, &plugin.digest, Article15::default());
        controller::create_system(&mut tx, &bench.id, &new).await?;
    }
    let (_, dpo) = auth::create(&mut tx, Role::Dpo, Some(&bench.id), "bench").await?;
    tx.commit().await?;
    let url = format!("http://{}", running.address);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    Ok(Bench {
        running,
        controller_id: bench.id,
        dpo,
        http,
        url,
    })
}

impl Bench {
    /// Submits one erasure request for demo customer `n`; returns the latency.
    async fn submit(&self, n: u64) -> anyhow::Result<Duration> {
        let body = json!({
            "controller_id": self.controller_id,
            "kind": "erasure",
            "identities": [{ "kind": "email", "value": crate::demo::customer_email(n) }],
        });
        let start = Instant::now();
        let response = self
            .http
            .post(format!("{}/v1/requests", self.url))
            .bearer_auth(&self.dpo)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.as_u16() == 201,
            "submission answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(start.elapsed())
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

/// Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Millis {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl From<Percentiles> for Millis {
    fn from(p: Percentiles) -> Self {
        Millis {
            p50_ms: p.p50_us / 1e3,
            p99_ms: p.p99_us / 1e3,
        }
    }
}

/// The figures of `oubli bench intake`.
#[derive(Debug, Clone, Serialize)]
pub struct IntakeReport {
    pub benchmark: &'static str,
    pub requests: u64,
    pub concurrency: usize,
    pub seconds: f64,
    /// Requests accepted (201, committed to disk) per second over HTTP.
    pub per_second: f64,
    pub latency: Millis,
    /// Single-row durable commits per second to an SQLite file with the same settings,
    /// one after another, without HTTP, validation or audit.
    pub baseline_commits_per_second: f64,
    /// per_second / baseline_commits_per_second.
    pub ratio: f64,
}

impl super::Report for IntakeReport {
    fn print_text(&self) {
        println!(
            "oubli bench intake: {} erasure requests over HTTP, {} at a time",
            self.requests, self.concurrency
        );
        println!(
            "  accepted:  {:>9.0} requests/s   ({:.2} s; p50 {:.2} ms, p99 {:.2} ms)",
            self.per_second, self.seconds, self.latency.p50_ms, self.latency.p99_ms
        );
        println!(
            "  baseline:  {:>9.0} durable single-row SQLite commits/s",
            self.baseline_commits_per_second
        );
        println!("  ratio (accepted / baseline): {:.2}", self.ratio);
    }
}

async fn baseline_commits(path: &Path, n: u64) -> anyhow::Result<f64> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .connect()
        .await?;
    sqlx::query("CREATE TABLE requests (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut conn)
        .await?;
    let start = Instant::now();
    for i in 0..n {
        let mut tx = conn.begin().await?;
        sqlx::query("INSERT INTO requests (id, body) VALUES ($1, $2)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(format!(
                "{{\"email\":\"{}\"}}",
                crate::demo::customer_email(i)
            ))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(rate)
}

/// Submits `requests` erasure requests over HTTP and measures how many are accepted per
/// second.
///
/// # Errors
/// When the service cannot start or a submission fails.
pub async fn intake(requests: u64, concurrency: usize) -> anyhow::Result<IntakeReport> {
    anyhow::ensure!(requests >= 100, "--requests must be at least 100");
    let dir = tempfile::tempdir()?;
    let crm = dir.path().join("crm.db");
    crate::demo::create_crm(&crm, 10).await?;
    let bench = Arc::new(start(dir.path(), 1, &[crm], false).await?);
    bench.submit_all(50, concurrency.min(50)).await?; // warm-up: connections, caches
    let started = Instant::now();
    let latencies = bench.submit_all(requests, concurrency).await?;
    let seconds = started.elapsed().as_secs_f64();
    let bench = Arc::into_inner(bench).context("every client finished")?;
    bench.running.stop().await;
    let baseline = baseline_commits(&dir.path().join("baseline.db"), requests.min(5_000)).await?;
    let per_second = requests as f64 / seconds;
    Ok(IntakeReport {
        benchmark: "intake",
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
    pub workers: usize,
    /// From the first submission to the last request completed, through the service.
    pub oubli_seconds: f64,
    /// The same deletions by native Rust code, one transaction per subject and system.
    pub native_seconds: f64,
    /// oubli_seconds / native_seconds.
    pub ratio: f64,
}

impl super::Report for E2eReport {
    fn print_text(&self) {
        println!(
            "oubli bench e2e: {} erasure requests across {} SQLite CRM systems, {} workers",
            self.requests, self.systems, self.workers
        );
        println!(
            "  oubli:   {:>8.2} s  submission to completion: erase, then a verifying locate, per system",
            self.oubli_seconds
        );
        println!(
            "  native:  {:>8.2} s  the same deletions in Rust, one transaction per subject and system",
            self.native_seconds
        );
        println!("  ratio (oubli / native): {:.2}", self.ratio);
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

/// Runs `requests` erasure requests across `systems` demo CRMs through the service, then
/// the same deletions natively on copies, and compares the times.
///
/// # Errors
/// When the service cannot start, a request fails, or the native deletions fail.
pub async fn e2e(requests: u64, systems: usize, workers: usize) -> anyhow::Result<E2eReport> {
    anyhow::ensure!(
        requests >= 10 && systems >= 1,
        "--requests must be at least 10 and --systems at least 1"
    );
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
    let bench = Arc::new(start(dir.path(), workers, &served, true).await?);
    // Compile the plugin before the clock starts, as a running service has.
    let digest = controller::list_plugins(&bench.running.app.store)
        .await?
        .remove(0)
        .digest;
    bench.running.app.plugin(&digest).await?;

    let started = Instant::now();
    bench.submit_all(requests, 32).await?;
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM requests WHERE status IN ('completed', 'failed')",
        )
        .fetch_one(&bench.running.app.store.read)
        .await?;
        if done as u64 >= requests {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let oubli_seconds = started.elapsed().as_secs_f64();
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'failed'")
        .fetch_one(&bench.running.app.store.read)
        .await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} requests failed; see the service's log"
    );
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
        oubli_seconds,
        native_seconds,
        ratio: oubli_seconds / native_seconds,
    })
}
