//! `oubli bench`: the benchmarks, each printing its figures beside a baseline measured in
//! the same run.

use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// p50/p99 of instantiate + call of a no-op export, beside a native Rust call.
    Dispatch {
        /// Measured calls (after 1,000 warm-up calls).
        #[arg(long, default_value_t = 20_000)]
        calls: usize,
        /// The plugin whose `describe` is called; the first-party SQL connector by default.
        #[arg(long, default_value = "builtin:sql")]
        plugin: String,
        /// Print the figures as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Erasure requests accepted per second over HTTP, with durable commits, beside
    /// plain durable commits to the same kind of database.
    Intake {
        #[arg(long, default_value_t = 5_000)]
        requests: u64,
        /// Submissions in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// A PostgreSQL server (`postgres://user@host/db`) to hold the service's database
        /// instead of SQLite: a throwaway database is created there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// locate + erase per subject on a large demo CRM through the SQL connector, beside the
    /// same statements issued by native Rust code.
    Connectors {
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        /// Subjects erased each way.
        #[arg(long, default_value_t = 500)]
        subjects: u64,
        /// A PostgreSQL (`postgres://user@host/db`) or MySQL/MariaDB server
        /// (`mysql://user@host/db`) to run on instead of SQLite: two databases are created
        /// there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
        /// Match e-mail addresses with the connector's `email` rule (trimmed, any case),
        /// an index on `lower(trim(email))` on both copies, instead of exactly.
        #[arg(long)]
        case_insensitive: bool,
        #[arg(long)]
        json: bool,
    },
    /// Verifying the audit trail and purging its access log, beside reading and deleting
    /// the same rows without checks or checkpoints.
    Audit {
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// A PostgreSQL server (`postgres://user@host/db`) to run on instead of SQLite: two
        /// databases are created there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Erasure requests through the whole path: clients submit each as a DPO and approve
    /// it as the controller over HTTP to an `oubli serve` process, whose workers erase the
    /// subject from a customer database; beside the same erasures as plain SQL.
    Api {
        #[arg(long, default_value_t = 200)]
        requests: u64,
        /// Clients at once, each submitting and approving one request after the other.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Demo customers in the customer database (with their orders, order items,
        /// support tickets and invoices).
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        /// Tasks at once in the oubli process.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// The checks each erasure runs after `erase`: all (verify by key and sweep),
        /// verify, or search (a verifying locate only).
        #[arg(long, value_enum, default_value = "all")]
        checks: crate::config::ErasureChecks,
        /// A PostgreSQL server (`postgres://user@host/db`) to hold oubli's own database
        /// instead of SQLite: a throwaway database is created there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
        /// A PostgreSQL server (`postgres://user@host/db`) to hold the customer database
        /// and its copy for plain SQL instead of SQLite: throwaway databases, dropped at
        /// the end.
        #[arg(long)]
        customers_database: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Erasure requests from submission to completion across SQLite CRM systems, beside
    /// the same deletions done by native Rust code.
    E2e {
        #[arg(long, default_value_t = 1_000)]
        requests: u64,
        #[arg(long, default_value_t = 3)]
        systems: usize,
        /// Tasks at once in each process that runs tasks.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// A PostgreSQL server (`postgres://user@host/db`) to hold the service's database
        /// instead of SQLite: a throwaway database is created there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
        /// `oubli worker` processes to run the tasks, beside an API-only process
        /// (needs --database); 0 runs them in the API process.
        #[arg(long, default_value_t = 0)]
        worker_processes: usize,
        /// The checks each erasure runs after `erase`: all (verify by key and sweep),
        /// verify, or search (a verifying locate only), to measure what each costs.
        #[arg(long, value_enum, default_value = "all")]
        checks: crate::config::ErasureChecks,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    use crate::bench::{Report, audit, connectors, service};
    match command {
        BenchCommand::Dispatch {
            calls,
            plugin,
            json,
        } => tokio::task::spawn_blocking(move || crate::bench::dispatch(&plugin, calls))
            .await??
            .print(json),
        BenchCommand::Intake {
            requests,
            concurrency,
            database,
            json,
        } => service::intake(requests, concurrency, database.as_deref())
            .await?
            .print(json),
        BenchCommand::Connectors {
            customers,
            subjects,
            database,
            case_insensitive,
            json,
        } => connectors::connectors(customers, subjects, database.as_deref(), case_insensitive)
            .await?
            .print(json),
        BenchCommand::E2e {
            requests,
            systems,
            workers,
            database,
            worker_processes,
            checks,
            json,
        } => service::e2e(service::E2eSetup {
            requests,
            systems,
            workers,
            database: database.as_deref(),
            worker_processes,
            checks,
        })
        .await?
        .print(json),
        BenchCommand::Api {
            requests,
            clients,
            customers,
            workers,
            checks,
            database,
            customers_database,
            json,
        } => crate::bench::api::api(crate::bench::api::ApiSetup {
            requests,
            clients,
            customers,
            workers,
            checks,
            database: database.as_deref(),
            customers_database: customers_database.as_deref(),
        })
        .await?
        .print(json),
        BenchCommand::Audit {
            events,
            database,
            json,
        } => audit::audit(events, database.as_deref()).await?.print(json),
    }
    Ok(ExitCode::SUCCESS)
}
