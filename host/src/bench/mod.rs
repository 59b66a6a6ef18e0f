//! Benchmarks: each prints its figures beside a baseline measured in the same run.

pub mod api;
pub mod audit;
pub mod connectors;
pub mod service;
pub mod statements;

use crate::runtime::{Action, Info, Runtime, RuntimeSettings, SystemConfig};
use serde::Serialize;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

/// A benchmark's figures, printed as text or as one JSON object.
pub trait Report: Serialize {
    /// Prints the figures for a person.
    fn print_text(&self);

    /// Prints the figures, as one JSON object when `json`.
    fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).expect("report serializes")
            );
        } else {
            self.print_text();
        }
    }
}

/// A throwaway PostgreSQL (or, for a customer database, MySQL/MariaDB) database a
/// benchmark creates on the server it was given, and drops at the end.
pub(crate) struct Scratch {
    admin: String,
    name: String,
    mysql: bool,
    /// Its URL.
    pub url: String,
}

impl Scratch {
    /// Creates `oubli_bench_<random>_<label>`, as a copy of `template` when given, on the
    /// server of the `postgres://` URL `admin`.
    pub(crate) async fn create(
        admin: &str,
        label: &str,
        template: Option<&Scratch>,
    ) -> anyhow::Result<Scratch> {
        anyhow::ensure!(
            crate::store::is_postgres(admin),
            "--database takes a postgres:// URL"
        );
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("oubli_bench_{}_{label}", &tag[..12]);
        let base = admin.rsplit_once('/').map_or(admin, |(base, _)| base);
        let copy = template.map_or(String::new(), |t| format!(" TEMPLATE {}", t.name));
        admin_execute(admin, &format!("CREATE DATABASE {name}{copy}")).await?;
        Ok(Scratch {
            admin: admin.to_owned(),
            url: format!("{base}/{name}"),
            name,
            mysql: false,
        })
    }

    /// Creates `oubli_bench_<random>_<label>` on the server of the `mysql://` URL `admin`.
    pub(crate) async fn create_mysql(admin: &str, label: &str) -> anyhow::Result<Scratch> {
        anyhow::ensure!(admin.starts_with("mysql://"), "not a mysql:// URL");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("oubli_bench_{}_{label}", &tag[..12]);
        let (base, query) = match admin.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (admin, String::new()),
        };
        let base = base.rsplit_once('/').map_or(base, |(base, _)| base);
        let scratch = Scratch {
            admin: admin.to_owned(),
            url: format!("{base}/{name}{query}"),
            name,
            mysql: true,
        };
        scratch
            .admin_execute(&format!("CREATE DATABASE {}", scratch.name))
            .await?;
        Ok(scratch)
    }

    async fn admin_execute(&self, statement: &str) -> anyhow::Result<()> {
        if !self.mysql {
            return admin_execute(&self.admin, statement).await;
        }
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&self.admin).await?;
        sqlx::raw_sql(statement).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// Drops it, closing the connections still open to it.
    pub(crate) async fn drop_database(&self) {
        let force = if self.mysql { "" } else { " WITH (FORCE)" };
        let statement = format!("DROP DATABASE IF EXISTS {}{force}", self.name);
        if let Err(e) = self.admin_execute(&statement).await {
            tracing::warn!("dropping the benchmark database {}: {e:#}", self.name);
        }
    }
}

async fn admin_execute(url: &str, statement: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(statement).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Latency percentiles of one series, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50_us: at(0.50),
            p95_us: at(0.95),
            p99_us: at(0.99),
            mean_us: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// The figures of `oubli bench dispatch`.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchReport {
    pub benchmark: &'static str,
    pub plugin: String,
    pub calls: usize,
    /// A fresh store and instance plus one call of `describe`, per call.
    pub wasm: Percentiles,
    /// The same work (building the `Info` record) as a native Rust function.
    pub native: Percentiles,
    /// wasm p50 / native p50.
    pub ratio_p50: f64,
}

impl Report for DispatchReport {
    fn print_text(&self) {
        println!(
            "oubli bench dispatch: {} calls of describe() on {}",
            self.calls, self.plugin
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p99 µs", "mean µs"
        );
        for (name, p) in [
            ("wasm instantiate + call", &self.wasm),
            ("native function", &self.native),
        ] {
            println!(
                "{name:<28} {:>10.2} {:>10.2} {:>10.2}",
                p.p50_us, p.p99_us, p.mean_us
            );
        }
        println!("ratio (p50 wasm / native): {:.0}x", self.ratio_p50);
    }
}

fn native_describe() -> Info {
    Info {
        name: "sql".into(),
        version: "0.1.0".into(),
        description: "Relational databases (SQLite, PostgreSQL, MySQL/MariaDB) described by a dataset configuration".into(),
        actions: vec![Action::Locate, Action::Access, Action::Rectify, Action::Erase],
        identity_kinds: vec!["email".into(), "phone".into(), "customer-id".into(), "user-id".into(), "account".into()],
        categories: Vec::new(),
    }
}

/// Measures instantiate + call of `describe` over `calls` calls. Runs on the calling
/// thread, which must be inside a tokio runtime but not on one of its workers.
///
/// # Errors
/// When the plugin cannot be loaded or a call fails.
pub fn dispatch(plugin_source: &str, calls: usize) -> anyhow::Result<DispatchReport> {
    anyhow::ensure!(calls >= 100, "--calls must be at least 100");
    let (name, bytes) = crate::plugins::read(plugin_source)?;
    let runtime = Arc::new(Runtime::new(RuntimeSettings::default())?);
    let plugin = runtime.load(&name, &bytes, None)?;
    let system = runtime.prepare(&SystemConfig {
        name: "bench".into(),
        ..Default::default()
    })?;

    for _ in 0..1_000 {
        black_box(runtime.describe_blocking(&plugin, &system)?);
    }
    let mut wasm = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        black_box(runtime.describe_blocking(&plugin, &system)?);
        wasm.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let mut native = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        black_box(native_describe());
        native.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let (wasm, native) = (Percentiles::of(wasm), Percentiles::of(native));
    Ok(DispatchReport {
        benchmark: "dispatch",
        plugin: plugin_source.to_owned(),
        calls,
        ratio_p50: wasm.p50_us / native.p50_us.max(0.001),
        wasm,
        native,
    })
}
