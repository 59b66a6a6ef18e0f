//! The `oubli` command line.

//!
//! One file per group of commands: `service` (serve, worker, token), `evidence` (audit,
//! certificate, keys), `plugin`, `bench` and `demo`. Each parses its own arguments and
//! runs them; this file only dispatches.

mod bench;
mod demo;
mod evidence;
mod plugin;
mod service;
mod telemetry;

use bench::BenchCommand;
use clap::{Parser, Subcommand};
use demo::DemoCommand;
use evidence::{AuditCommand, CertificateCommand, KeysCommand};
use plugin::PluginCommand;
use service::TokenCommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "oubli",
    version,
    about = "Carries out GDPR data subject requests through sandboxed WebAssembly connectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: the API, the workers, the webhook sender and the purge job, on
    /// the embedded SQLite database unless `database` names a PostgreSQL server. On a new
    /// database it creates a demo setup and prints its tokens.
    Serve {
        /// A TOML configuration file; `OUBLI_<KEY>` environment variables override it.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
        /// Run the API only, for `oubli worker` processes on the same PostgreSQL database
        /// to run the tasks.
        #[arg(long)]
        no_workers: bool,
    },
    /// Run workers only (with the webhook sender and the purge job), on a PostgreSQL
    /// database shared with `oubli serve --no-workers` and other workers.
    Worker {
        /// A TOML configuration file; `OUBLI_<KEY>` environment variables override it.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage API tokens directly in the database.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the OpenAPI document of the API.
    Openapi,
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check erasure certificates.
    #[command(subcommand)]
    Certificate(CertificateCommand),
    /// Manage the service's keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and try connector plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write demo data to try oubli on.
    #[command(subcommand)]
    Demo(DemoCommand),
}

/// Caps glibc's malloc arenas at one per core (at least two), unless the operator chose
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). glibc gives
/// each thread that allocates an arena of its own, up to eight per core, and each keeps
/// what was freed in it: oubli's threads
/// (the runtime's workers, the plugin calls' blocking threads, one per SQLite connection
/// of the store) left the service's peak memory under a sweep at 76–77 MiB, against
/// 61 MiB with two arenas, for the same CPU time per request (`oubli bench api
/// --checks all`, 2 cores).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc.arena_max"))
        {
            return;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `mallopt` only changes a setting of the allocator (under its own lock);
        // it is called before the process starts any thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    // Counting statements turns on sqlx's logging of each: only the benchmark that
    // prints the count pays for it.
    let telemetry = telemetry::init(matches!(
        cli.command,
        Command::Bench(BenchCommand::E2e { .. })
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(runtime);
    telemetry.shutdown();
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use crate::serve::Mode;
    match cli.command {
        Command::Serve { config, no_workers } => {
            let mode = if no_workers { Mode::Api } else { Mode::All };
            service::serve(config.as_deref(), mode).await
        }
        Command::Worker { config } => service::serve(config.as_deref(), Mode::Worker).await,
        Command::Token(command) => service::token(command).await,
        Command::Openapi => {
            print_text(&crate::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(command) => evidence::audit(command).await,
        Command::Certificate(command) => evidence::certificate(command),
        Command::Keys(command) => evidence::keys(command),
        Command::Plugin(command) => plugin::run(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Demo(command) => demo::run(command).await,
    }
}

/// Prints a JSON value for a person to read (and a script to parse).
fn print(value: &serde_json::Value) {
    print_text(&serde_json::to_string_pretty(value).expect("JSON values serialize"));
}

/// Writes `text` and a newline to standard output. A reader that went away (`| head`)
/// ends the process quietly, as other command-line tools do, instead of a panic.
fn print_text(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}
