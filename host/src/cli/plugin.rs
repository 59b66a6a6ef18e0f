//! `oubli plugin`: inspecting a connector plugin and running one of its actions against a
//! real system, outside the service.

use super::print;
use crate::runtime::{
    Change, Identity, Runtime, RuntimeError, RuntimeSettings, Subject, SystemConfig,
};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// Print a plugin's digest, contract version, imports and `describe()` output.
    Inspect {
        /// A `.wasm` component, or `builtin:NAME` for a first-party plugin.
        file: String,
        /// Where compiled plugins are cached (default: `$XDG_CACHE_HOME/oubli/plugins` or
        /// `~/.cache/oubli/plugins`), so that a plugin is compiled once.
        #[arg(long, env = "OUBLI_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Run one action of a plugin against a real system and print the result as JSON.
    Call(CallArgs),
}

#[derive(Debug, Args)]
pub(super) struct CallArgs {
    /// A `.wasm` component, or `builtin:NAME` for a first-party plugin.
    file: String,
    /// The connected system's configuration (TOML).
    #[arg(long)]
    system: PathBuf,
    #[arg(long, value_enum)]
    action: Action,
    /// The subject's identities, as KIND=VALUE (repeatable; every action but validate).
    #[arg(long = "identity", value_parser = parse_identity)]
    identities: Vec<Identity>,
    /// For rectify: FIELD=VALUE or COLLECTION.FIELD=VALUE; VALUE is JSON or plain text.
    #[arg(long = "change", value_parser = parse_change)]
    changes: Vec<Change>,
    /// Where compiled plugins are cached (default: `$XDG_CACHE_HOME/oubli/plugins` or
    /// `~/.cache/oubli/plugins`), so that a plugin is compiled once.
    #[arg(long, env = "OUBLI_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// oubli's key folder (`<data_dir>/keys`), so that keyed hashes match the service's;
    /// a throwaway key otherwise.
    #[arg(long)]
    keys: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    Validate,
    Locate,
    Access,
    Rectify,
    Erase,
}

fn parse_identity(text: &str) -> Result<Identity, String> {
    let (kind, value) = text
        .split_once('=')
        .ok_or("expected KIND=VALUE, e.g. email=a@example.org")?;
    if kind.is_empty() || value.is_empty() {
        return Err("expected KIND=VALUE with both parts non-empty".into());
    }
    Ok(Identity {
        kind: kind.to_owned(),
        value: value.to_owned(),
    })
}

fn parse_change(text: &str) -> Result<Change, String> {
    let (target, value) = text
        .split_once('=')
        .ok_or("expected FIELD=VALUE or COLLECTION.FIELD=VALUE")?;
    let (collection, field) = match target.split_once('.') {
        Some((c, f)) => (Some(c.to_owned()), f.to_owned()),
        None => (None, target.to_owned()),
    };
    let value = match serde_json::from_str::<serde_json::Value>(value) {
        Ok(json) => json.to_string(),
        Err(_) => serde_json::Value::String(value.to_owned()).to_string(),
    };
    Ok(Change {
        collection,
        field,
        value,
    })
}

pub(super) async fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Inspect { file, cache_dir } => inspect(&file, cache_dir).await,
        PluginCommand::Call(args) => call(args).await,
    }
}

fn runtime_failure(error: &RuntimeError) -> ExitCode {
    print(
        &json!({ "error": error.kind(), "message": error.to_string(), "retryable": error.is_retryable() }),
    );
    ExitCode::FAILURE
}

/// The folder of compiled plugins: the one given, else the user's cache folder (none
/// when neither `XDG_CACHE_HOME` nor `HOME` is set).
fn cache_folder(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("oubli").join("plugins"))
    })
}

async fn inspect(file: &str, cache_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (name, bytes) = crate::plugins::read(file)?;
    let runtime = Arc::new(Runtime::new(RuntimeSettings {
        cache_dir: cache_folder(cache_dir),
        ..Default::default()
    })?);
    let plugin = match runtime.load(&name, &bytes, None) {
        Ok(plugin) => plugin,
        Err(e) => return Ok(runtime_failure(&e)),
    };
    let system = runtime.prepare(&SystemConfig {
        name: "inspect".into(),
        ..Default::default()
    })?;
    let info = match runtime.describe(&plugin, &system).await {
        Ok(info) => info,
        Err(e) => return Ok(runtime_failure(&e)),
    };
    print(&json!({
        "file": file,
        "size": bytes.len(),
        "digest": plugin.digest,
        "contract": format!("oubli:connector@{}", plugin.contract),
        "imports": plugin.imports,
        "describe": crate::runtime::Description::from(info),
    }));
    Ok(ExitCode::SUCCESS)
}

async fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.system)
        .with_context(|| format!("reading {}", args.system.display()))?;
    let config = SystemConfig::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.system.display()))?;
    let (name, bytes) = crate::plugins::read(&args.file)?;
    if args.identities.is_empty() && !matches!(args.action, Action::Validate) {
        anyhow::bail!("this action needs the subject: give at least one --identity KIND=VALUE");
    }
    let mut settings = RuntimeSettings {
        cache_dir: cache_folder(args.cache_dir),
        ..Default::default()
    };
    if let Some(dir) = &args.keys {
        settings.pseudonym_key = crate::crypto::Keys::load_or_create(dir)?.pseudonym;
    }
    let runtime = Arc::new(Runtime::new(settings)?);
    let system = match runtime.prepare(&config) {
        Ok(system) => system,
        Err(e) => return Ok(runtime_failure(&e)),
    };
    let plugin = match runtime.load(&name, &bytes, config.digest.as_deref()) {
        Ok(plugin) => plugin,
        Err(e) => return Ok(runtime_failure(&e)),
    };
    let subject = Subject {
        request_id: uuid::Uuid::now_v7().to_string(),
        identities: args.identities,
    };
    let result = match args.action {
        Action::Validate => runtime
            .validate(&plugin, &system)
            .await
            .map(|()| json!({ "valid": true })),
        Action::Locate => runtime
            .locate(&plugin, &system, &subject)
            .await
            .map(|r| json!({ "records": r })),
        Action::Erase => runtime
            .erase(&plugin, &system, &subject)
            .await
            .map(|r| json!({ "erased": crate::runtime::erased_json(&r) })),
        Action::Rectify => {
            if args.changes.is_empty() {
                anyhow::bail!("--action rectify needs at least one --change FIELD=VALUE");
            }
            runtime
                .rectify(&plugin, &system, &subject, &args.changes)
                .await
                .map(|r| json!({ "changed": r.changed, "not_applicable": r.not_applicable }))
        }
        Action::Access => {
            let mut records = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                match runtime
                    .access(&plugin, &system, &subject, cursor.take())
                    .await
                {
                    Ok(page) => {
                        pages += 1;
                        records.extend(page.records);
                        match page.next {
                            Some(next) => cursor = Some(next),
                            None => break Ok(json!({ "pages": pages, "records": records })),
                        }
                    }
                    Err(e) => break Err(e),
                }
            }
        }
    };
    match result {
        Ok(value) => {
            print(&json!({ "system": config.name, "plugin": plugin.digest, "result": value }));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(runtime_failure(&e)),
    }
}
