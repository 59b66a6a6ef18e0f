//! `oubli serve`, `oubli worker` and `oubli token`: running the service and managing its
//! tokens directly in its database.

use super::print;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token and print it (it is shown only this once).
    Create {
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// The controller the token is limited to (required for the controller role).
        #[arg(long)]
        controller: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "created with oubli token create")]
        label: String,
        /// The service's configuration file, to find its database.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Runs the service in `mode` until SIGINT or SIGTERM.
pub(super) async fn serve(
    config: Option<&Path>,
    mode: crate::serve::Mode,
) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(config)?;
    crate::serve::serve(config, mode).await?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Create {
        role,
        controller,
        label,
        config,
    } = command;
    let config = crate::config::Config::load(config.as_deref())?;
    if role == crate::auth::Role::Controller && controller.is_none() {
        anyhow::bail!("a controller token needs --controller ID");
    }
    let location = config.database_location();
    // Run from the wrong folder, a new empty database would be made and the token put
    // where no service reads it.
    if !crate::store::is_postgres(&location) && !Path::new(&location).exists() {
        anyhow::bail!(
            "no oubli database at {location}: run this where `oubli serve` keeps its data \
             (data_dir, OUBLI_DATA_DIR or --config), after it started once"
        );
    }
    let store = crate::store::Store::open(&location).await?;
    if let Some(id) = &controller {
        crate::controller::get_controller(&store, id)
            .await?
            .with_context(|| format!("no controller has the id {id:?}"))?;
    }
    let mut tx = store.begin().await?;
    let (id, token) = crate::auth::create(&mut tx, role, controller.as_deref(), &label).await?;
    crate::audit::append(
        &mut tx,
        "cli",
        "token.created",
        None,
        json!({ "token_id": id, "role": role }),
    );
    tx.commit().await?;
    store.close().await;
    print(&json!({ "id": id, "token": token, "role": role, "controller_id": controller }));
    Ok(ExitCode::SUCCESS)
}
