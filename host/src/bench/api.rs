//! `oubli bench api`: erasure requests through the whole path, as users drive it. An
//! `oubli serve` process of this executable runs on a temporary folder (its database on
//! SQLite, or on a throwaway PostgreSQL database with `--database`); `--clients` clients
//! each submit an erasure request as the DPO and approve it as the controller over HTTP,
//! one request after the other; the process's workers erase the subject from a customer
//! database of `--customers` demo customers (SQLite, or a throwaway PostgreSQL database
//! with `--customers-database`) through the SQL connector. Beside it, in the same run,
//! the same erasures as plain SQL on a copy of the customer database, from one client and
//! from `--clients`.

use super::connectors::Copies;
use super::service::{self, Millis};
use super::{Percentiles, Scratch};
use crate::config::Config;
use crate::runtime::bindings::sql::{Dialect, Statement, Value};
use crate::runtime::sql::{Access, SqlSession, SqlTarget};
use anyhow::Context;
use serde::Serialize;
use sqlx::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Requests run through oubli, and transactions on the copy, before the clock starts.
const WARM_UP: u64 = 20;
/// Linux gives a process's CPU times in `/proc` in units of USER_HZ, 100 per second.
const USER_HZ: f64 = 100.0;

/// How `oubli bench api` runs.
#[derive(Debug, Clone, Copy)]
pub struct ApiSetup<'a> {
    pub requests: u64,
    /// Clients at once, each submitting and approving one request after the other.
    pub clients: usize,
    /// Demo customers in the customer database.
    pub customers: u64,
    /// Tasks at once in the oubli process.
    pub workers: usize,
    /// The checks each erasure runs after `erase` (the service's `erasure_checks`).
    pub checks: crate::config::ErasureChecks,
    /// A PostgreSQL server (`postgres://…`) to hold oubli's own database instead of
    /// SQLite.
    pub database: Option<&'a str>,
    /// A PostgreSQL server (`postgres://…`) to hold the customer database and its copy
    /// instead of SQLite.
    pub customers_database: Option<&'a str>,
}

/// The figures of `oubli bench api`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiReport {
    pub benchmark: &'static str,
    pub requests: u64,
    pub clients: usize,
    pub customers: u64,
    /// Tasks at once in the oubli process.
    pub workers: usize,
    /// The checks each erasure ran after `erase`.
    pub checks: crate::config::ErasureChecks,
    /// Where oubli's own database is: `sqlite` or `postgres`.
    pub store: &'static str,
    /// Where the customer database is: `sqlite` or `postgres`.
    pub customers_database: &'static str,
    /// From the first submission to the last completion.
    pub seconds: f64,
    /// Requests completed per second.
    pub per_second: f64,
    /// From receipt to completion, per request, as the service recorded them (to the
    /// millisecond).
    pub completion: Millis,
    /// The answers to a submission (201) and to an approval (200), as the clients saw
    /// them.
    pub submission: Millis,
    pub approval: Millis,
    /// CPU time (user and system) of the oubli process over the measured run; `None`
    /// where `/proc` cannot tell.
    pub cpu_seconds: Option<f64>,
    pub cpu_ms_per_request: Option<f64>,
    /// The oubli process's peak resident memory (`VmHWM`) once it listened, before the
    /// first request (loading or compiling the plugins included).
    pub start_memory_mib: Option<f64>,
    /// Its peak resident memory from the first request (warm-up included) to the last
    /// completion: the peak is reset once it listens (`/proc/<pid>/clear_refs`). Where
    /// the reset failed, the peak since it started (`peak_since_start`).
    pub peak_memory_mib: Option<f64>,
    pub peak_since_start: bool,
    /// The connector's erasure statements for the same subjects, run as plain SQL on the
    /// copy, one transaction per subject: per second from one client, and from
    /// `clients` at once (each on half of the subjects).
    pub plain_sql_per_second_one_client: f64,
    pub plain_sql_per_second: f64,
    /// The better of the two plain SQL figures / per_second: how many times longer
    /// oubli takes.
    pub ratio: f64,
}

impl super::Report for ApiReport {
    fn print_text(&self) {
        println!(
            "oubli bench api: {} erasure requests, each submitted by a DPO and approved by the controller over HTTP, {} clients at once",
            self.requests, self.clients
        );
        println!(
            "  an `oubli serve` process ({} store, {} tasks at once) erasing from a {} customer database of {} demo customers, then {}",
            self.store,
            self.workers,
            self.customers_database,
            self.customers,
            match self.checks {
                crate::config::ErasureChecks::All => "locate, verify by key and sweep",
                crate::config::ErasureChecks::Verify => "locate and verify by key (no sweep)",
                crate::config::ErasureChecks::Search => "locate (no verify, no sweep)",
            }
        );
        println!(
            "  completed:  {:>8.1} requests/s  ({:.2} s; receipt to completion p50 {:.1} ms, p95 {:.1} ms)",
            self.per_second, self.seconds, self.completion.p50_ms, self.completion.p95_ms
        );
        println!(
            "  answers:    submission p50 {:.2} ms, p95 {:.2} ms; approval p50 {:.2} ms, p95 {:.2} ms",
            self.submission.p50_ms,
            self.submission.p95_ms,
            self.approval.p50_ms,
            self.approval.p95_ms
        );
        match (self.cpu_seconds, self.cpu_ms_per_request) {
            (Some(total), Some(each)) => println!(
                "  oubli process: {total:.2} CPU s over the run ({each:.2} ms per request)"
            ),
            _ => println!("  oubli process: CPU time unknown (no /proc)"),
        }
        if let Some(peak) = self.peak_memory_mib {
            let start = self
                .start_memory_mib
                .map(|m| format!(" ({m:.1} MiB once listening, before any request)"))
                .unwrap_or_default();
            if self.peak_since_start {
                println!("  oubli process: peak memory {peak:.1} MiB since it started{start}");
            } else {
                println!("  oubli process: peak memory {peak:.1} MiB under load{start}");
            }
        }
        println!(
            "  plain SQL:  {:>8.1} erasures/s from 1 client, {:.1} from {} (the connector's DELETE transactions on a copy)",
            self.plain_sql_per_second_one_client, self.plain_sql_per_second, self.clients
        );
        println!("  ratio (the better plain SQL / oubli): {:.2}", self.ratio);
    }
}

/// Runs the benchmark; see the module's documentation.
///
/// # Errors
/// When a database cannot be made, the service cannot start, a request fails or the plain
/// SQL fails.
pub async fn api(setup: ApiSetup<'_>) -> anyhow::Result<ApiReport> {
    anyhow::ensure!(
        setup.requests >= 10 && setup.clients >= 1 && setup.workers >= 1,
        "--requests must be at least 10, --clients and --workers at least 1"
    );
    anyhow::ensure!(
        setup.customers >= setup.requests + WARM_UP,
        "--customers must be at least --requests + {WARM_UP}"
    );
    let (copies, [served, copy]) = Copies::create(setup.customers, setup.customers_database)
        .await
        .context("creating the customer database")?;
    let scratch = match setup.database {
        Some(admin) => match Scratch::create(admin, "api", None).await {
            Ok(scratch) => Some(scratch),
            Err(e) => {
                copies.drop_databases().await;
                return Err(e);
            }
        },
        None => None,
    };
    let measured = measure(setup, &served, &copy, scratch.as_ref()).await;
    if let Some(scratch) = &scratch {
        scratch.drop_database().await;
    }
    copies.drop_databases().await;
    measured
}

async fn measure(
    setup: ApiSetup<'_>,
    served: &str,
    copy: &str,
    scratch: Option<&Scratch>,
) -> anyhow::Result<ApiReport> {
    // The subjects, spread over the customers: the first ones warm up, the rest are
    // measured, through oubli and then as plain SQL on the copy.
    let step = setup.customers / (WARM_UP + setup.requests);
    let subjects: Vec<u64> = (0..WARM_UP + setup.requests)
        .map(|i| 1 + i * step)
        .collect();
    let (warm_up, measured) = subjects.split_at(WARM_UP as usize);

    let dir = tempfile::tempdir()?;
    let config = Config {
        erasure_checks: setup.checks,
        ..service::config(dir.path(), setup.workers, scratch)
    };
    let mut crm = crate::demo::crm_system("crm", std::path::Path::new("unused"));
    if let Some(sql) = crm.capabilities.sql.as_mut() {
        sql.url = served.to_owned();
    }
    // The controller, its system and the tokens are made in this process; the requests
    // are served by another, so that its CPU time and memory are its own.
    let made = service::start(config.clone(), crate::serve::Mode::All, vec![crm], false).await?;
    let (controller_id, dpo, controller) = (
        made.controller_id.clone(),
        made.dpo.clone(),
        made.controller.clone(),
    );
    made.running.stop().await;
    let (mut child, url) = serve(&config).await?;
    let clients = Arc::new(Clients {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        url,
        controller_id,
        dpo,
        controller,
    });
    let pid = child.id().context("the oubli process runs")?;
    let mut store = store_connection(&config).await?;
    let start_memory_mib = peak_memory_mib(pid);
    let peak_since_start = !reset_peak_memory(pid);

    clients.run(warm_up, setup.clients).await?;
    wait_for_completion(&mut store, WARM_UP).await?;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let answers = clients.run(measured, setup.clients).await?;
    wait_for_completion(&mut store, WARM_UP + setup.requests).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let peak_memory_mib = peak_memory_mib(pid);
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE status = 'failed'")
        .fetch_one(&mut store)
        .await?;
    anyhow::ensure!(
        failed == 0,
        "{failed} requests failed; run `oubli serve` on the customer database to see why"
    );
    let ids: std::collections::HashSet<&str> =
        answers.iter().map(|answer| answer.id.as_str()).collect();
    let rows: Vec<(String, i64, Option<i64>)> =
        sqlx::query_as("SELECT id, received_at, completed_at FROM requests")
            .fetch_all(&mut store)
            .await?;
    let completion: Vec<f64> = rows
        .iter()
        .filter(|(id, ..)| ids.contains(id.as_str()))
        .filter_map(|(_, received, completed)| Some((completed.as_ref()? - received) as f64 * 1e3))
        .collect();
    anyhow::ensure!(
        completion.len() == measured.len(),
        "{} of {} requests have a completion time",
        completion.len(),
        measured.len()
    );
    store.close().await?;
    child.kill().await?;

    // Plain SQL on the copy, through one target whose sessions are connected before each
    // window starts: warmed up on the same first subjects, then one client on half of the
    // measured ones and every client at once on the other half, each half with the
    // customer after each of its subjects (whom nothing else erases: subjects are `step`
    // apart), so that a window holds twice as many erasures.
    let target = Arc::new(SqlTarget::new(copy).map_err(anyhow::Error::msg)?);
    let with_next = |subjects: &[u64]| -> Vec<u64> {
        if step < 2 {
            return subjects.to_vec();
        }
        subjects.iter().flat_map(|&n| [n, n + 1]).collect()
    };
    let half = measured.len() / 2;
    plain_sql(&target, warm_up, 1).await?;
    let plain_sql_per_second_one_client =
        plain_sql(&target, &with_next(&measured[..half]), 1).await?;
    let plain_sql_per_second =
        plain_sql(&target, &with_next(&measured[half..]), setup.clients).await?;
    let per_second = setup.requests as f64 / seconds;
    Ok(ApiReport {
        benchmark: "api",
        requests: setup.requests,
        clients: setup.clients,
        customers: setup.customers,
        workers: setup.workers,
        checks: setup.checks,
        store: if scratch.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        customers_database: if setup.customers_database.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        seconds,
        per_second,
        completion: Percentiles::of(completion).into(),
        submission: Percentiles::of(answers.iter().map(|a| a.submission_us).collect()).into(),
        approval: Percentiles::of(answers.iter().map(|a| a.approval_us).collect()).into(),
        cpu_seconds: cpu,
        cpu_ms_per_request: cpu.map(|cpu| cpu * 1e3 / setup.requests as f64),
        start_memory_mib,
        peak_memory_mib,
        peak_since_start,
        plain_sql_per_second_one_client,
        plain_sql_per_second,
        ratio: plain_sql_per_second.max(plain_sql_per_second_one_client) / per_second,
    })
}

/// Starts `oubli serve` on the benchmark's configuration; returns it and where it
/// listens.
async fn serve(config: &Config) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut command = service::oubli_command(config, "serve")?;
    command
        .env("OUBLI_LISTEN", "127.0.0.1:0")
        .env("OUBLI_LOG", "error")
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().context("starting oubli serve")?;
    let stdout = child.stdout.take().context("piped output")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("oubli: listening on") {
                return Ok(url.trim().to_owned());
            }
        }
        anyhow::bail!("oubli serve ended before it listened")
    })
    .await
    .context("oubli serve did not listen within 120 s")??;
    // The rest of its output is read and dropped, so that it never blocks on a pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

/// A read connection to the oubli process's own database.
async fn store_connection(config: &Config) -> anyhow::Result<sqlx::AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = match &config.database {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=ro", config.database_location()),
    };
    Ok(sqlx::AnyConnection::connect(&url).await?)
}

/// Waits until `total` requests are completed or failed, as long as some progress is
/// made every minute.
async fn wait_for_completion(store: &mut sqlx::AnyConnection, total: u64) -> anyhow::Result<()> {
    let mut last = (0, Instant::now());
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM requests WHERE status IN ('completed', 'failed')",
        )
        .fetch_one(&mut *store)
        .await?;
        if done as u64 >= total {
            return Ok(());
        }
        if done > last.0 {
            last = (done, Instant::now());
        }
        anyhow::ensure!(
            last.1.elapsed() < Duration::from_secs(60),
            "no request completed for a minute ({done} of {total} done)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The benchmark's HTTP clients, as a DPO and a controller.
struct Clients {
    http: reqwest::Client,
    url: String,
    controller_id: String,
    dpo: String,
    controller: String,
}

/// What a client saw of one request.
struct Answer {
    id: String,
    submission_us: f64,
    approval_us: f64,
}

impl Clients {
    /// Submits and approves an erasure request for each of `subjects` (demo customer
    /// numbers), `clients` at a time.
    async fn run(
        self: &Arc<Self>,
        subjects: &[u64],
        clients: usize,
    ) -> anyhow::Result<Vec<Answer>> {
        let subjects = Arc::new(subjects.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut running = Vec::new();
        for _ in 0..clients {
            let (this, subjects, next) = (self.clone(), subjects.clone(), next.clone());
            running.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                while let Some(&n) = subjects.get(next.fetch_add(1, Ordering::Relaxed)) {
                    answers.push(this.one(n).await?);
                }
                Ok::<_, anyhow::Error>(answers)
            }));
        }
        let mut answers = Vec::new();
        for client in running {
            answers.extend(client.await??);
        }
        Ok(answers)
    }

    async fn one(&self, customer: u64) -> anyhow::Result<Answer> {
        let (id, submission) = service::submit_erasure(
            &self.http,
            &self.url,
            &self.dpo,
            &self.controller_id,
            customer,
        )
        .await?;
        let submission_us = submission.as_secs_f64() * 1e6;
        let start = Instant::now();
        let approved = self
            .http
            .post(format!("{}/v1/requests/{id}/approve", self.url))
            .bearer_auth(&self.controller)
            .send()
            .await?;
        let approval_us = start.elapsed().as_secs_f64() * 1e6;
        let status = approved.status();
        anyhow::ensure!(
            status.as_u16() == 200,
            "approval answered {status}: {}",
            approved.text().await.unwrap_or_default()
        );
        Ok(Answer {
            id,
            submission_us,
            approval_us,
        })
    }
}

/// Runs the connector's erasure statements for `subjects` on `target`, one transaction
/// per subject, from `clients` sessions at once; returns erasures per second, timed from
/// when every session is connected.
async fn plain_sql(
    target: &Arc<SqlTarget>,
    subjects: &[u64],
    clients: usize,
) -> anyhow::Result<f64> {
    let dialect = target.dialect();
    let far = Instant::now() + Duration::from_secs(24 * 3600);
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut session = target.session(Access::ReadWrite, far);
        let connect = Statement {
            sql: "SELECT 1".into(),
            params: Vec::new(),
        };
        if let Err(e) = session.query(&connect, 1).await {
            anyhow::bail!("the plain SQL session did not connect: {e:?}");
        }
        sessions.push(session);
    }
    let next = &AtomicUsize::new(0);
    // The clients run as futures of this task (a session's future is not `Send` for
    // every lifetime, which `tokio::spawn` asks); the statements still overlap, each
    // waiting on its database.
    let client = |mut session: SqlSession| async move {
        while let Some(&n) = subjects.get(next.fetch_add(1, Ordering::Relaxed)) {
            let erase = erase_statements(dialect, &crate::demo::customer_email(n));
            if let Err(e) = session.transaction(&erase).await {
                anyhow::bail!("the plain SQL erasure failed: {e:?}");
            }
        }
        session.finish().await;
        Ok(())
    };
    let started = Instant::now();
    futures::future::try_join_all(sessions.into_iter().map(client)).await?;
    Ok(subjects.len() as f64 / started.elapsed().as_secs_f64())
}

/// The SQL connector's erase transaction for the demo dataset and one e-mail address
/// (matched exactly), children first, placeholders in the dialect's style; on PostgreSQL
/// a parent link reads the parents' keys into an array, as the connector does.
fn erase_statements(dialect: Dialect, email: &str) -> Vec<Statement> {
    let p = match dialect {
        Dialect::Postgres => "$1",
        Dialect::Sqlite | Dialect::Mysql => "?",
    };
    let link = |column: &str, select: String| match dialect {
        Dialect::Postgres => format!("\"{column}\" = ANY (ARRAY({select}))"),
        Dialect::Sqlite | Dialect::Mysql => format!("\"{column}\" IN ({select})"),
    };
    let customer = || {
        link(
            "customer_id",
            format!("SELECT \"id\" FROM \"customers\" WHERE (\"email\" = {p})"),
        )
    };
    let order = link(
        "order_id",
        format!("SELECT \"id\" FROM \"orders\" WHERE ({})", customer()),
    );
    [
        format!("DELETE FROM \"order_items\" WHERE ({order})"),
        format!("DELETE FROM \"orders\" WHERE ({})", customer()),
        format!("DELETE FROM \"support_tickets\" WHERE ({})", customer()),
        format!("DELETE FROM \"customers\" WHERE (\"email\" = {p})"),
    ]
    .map(|sql| Statement {
        sql,
        params: vec![Value::Text(email.to_owned())],
    })
    .into()
}

/// The user and system CPU time of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, ppid, …; utime and stime are the
    // 12th and 13th fields from there.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// Resets the peak resident memory of process `pid` to what it uses now; false where
/// Linux does not let it.
fn reset_peak_memory(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The peak resident memory of process `pid`, in MiB.
fn peak_memory_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
