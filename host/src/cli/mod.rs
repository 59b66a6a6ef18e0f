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

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
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
