//! `oubli demo`: demo data and the demo helpdesk API to try oubli on.

use super::print;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum DemoCommand {
    /// Write a demo CRM (a SQLite database) and the SYSTEM.toml that connects the
    /// first-party SQL connector to it.
    Crm {
        /// The folder to write `crm.db` and `crm-system.toml` into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How many customers to generate.
        #[arg(long, default_value_t = 1_000)]
        customers: u64,
    },
    /// Serve the demo helpdesk API (contacts, orders, events, consents) on loopback, for
    /// trying the REST connector with `examples/rest-system.toml`. Stops on Ctrl-C.
    Api {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// The bearer token the API expects.
        #[arg(long, env = "OUBLI_DEMO_API_TOKEN")]
        token: String,
        /// How many persons to generate (`person{n}@example.org`).
        #[arg(long, default_value_t = 20)]
        people: u64,
    },
}

pub(super) async fn run(command: DemoCommand) -> anyhow::Result<ExitCode> {
    match command {
        DemoCommand::Crm { dir, customers } => crm(&dir, customers).await,
        DemoCommand::Api {
            listen,
            token,
            people,
        } => api(listen, &token, people).await,
    }
}

async fn crm(dir: &Path, customers: u64) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let db = dir.join("crm.db");
    let size = crate::demo::create_crm(&db, customers).await?;
    let system = dir.join("crm-system.toml");
    let text = toml::to_string_pretty(&crate::demo::crm_system("crm", &db))?;
    std::fs::write(&system, text).with_context(|| format!("writing {}", system.display()))?;
    print(&json!({ "database": db, "system": system, "rows": size }));
    Ok(ExitCode::SUCCESS)
}

async fn api(listen: std::net::SocketAddr, token: &str, people: u64) -> anyhow::Result<ExitCode> {
    if token.trim().is_empty() {
        anyhow::bail!("--token (or OUBLI_DEMO_API_TOKEN) must not be empty");
    }
    let api = crate::demo::api::DemoApi::new(token, people);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    print(&json!({ "listening": listener.local_addr()?.to_string(), "people": people }));
    axum::serve(listener, api.router())
        .with_graceful_shutdown(crate::serve::signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
