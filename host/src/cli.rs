//! The `oubli` command line.

use crate::bench::Report;
use crate::runtime::{
    Change, Identity, Runtime, RuntimeError, RuntimeSettings, Subject, SystemConfig,
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain of the audit trail and report the first broken link. The
    /// checkpoints left by purges of the access log are checked with the service's
    /// public keys (from its keys folder), or with the keys given.
    Verify {
        /// The service's configuration file, to find its database and keys.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
        /// A public key (base64, as `/v1/keys` serves it) that verifies checkpoints,
        /// instead of the keys folder's; repeat for retired keys.
        #[arg(long = "public-key")]
        public_key: Vec<String>,
        /// A signed head kept from `GET /v1/audit/head`: the trail must still reach it
        /// (repeatable).
        #[arg(long)]
        head: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Write a new data key (`<data_dir>/keys/data-*.key`): it seals exports from the
    /// next start on; the old keys stay and keep opening what they sealed.
    RotateData {
        /// The service's configuration file, to find its data folder.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a new random key (32 bytes, base64) for the keys given in the environment
    /// (`OUBLI_SIGNING_KEY`, `OUBLI_IDENTITY_HASH_KEY`, `OUBLI_PSEUDONYM_KEY`,
    /// `OUBLI_DATA_KEY`), with the public key and id it gives as a signing key.
    Generate,
    /// Replace the certificate signing key: new certificates are signed with the new key
    /// from the next start on; the old key's public part stays at `/v1/keys` (as
    /// `retired`) and keeps verifying what it signed; its private part is deleted.
    RotateSigning {
        /// The service's configuration file, to find its data folder.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CertificateCommand {
    /// Verify a signed erasure certificate offline.
    Verify {
        /// The certificate, as `GET /v1/requests/{id}/certificate` returned it.
        file: PathBuf,
        /// A public key (base64) from `GET /v1/keys`; repeat it for several (current and
        /// retired): the one the certificate names verifies it.
        #[arg(long, required = true)]
        public_key: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
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

#[derive(Debug, Subcommand)]
enum DemoCommand {
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

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a plugin's digest, contract version, imports and `describe()` output.
    Inspect {
        /// A `.wasm` component, or `builtin:NAME` for a first-party plugin.
        file: String,
    },
    /// Run one action of a plugin against a real system and print the result as JSON.
    Call(CallArgs),
}

#[derive(Debug, Args)]
struct CallArgs {
    /// A `.wasm` component, or `builtin:NAME` for a first-party plugin.
    file: String,
    /// The connected system's configuration (TOML).
    #[arg(long)]
    system: PathBuf,
    #[arg(long, value_enum)]
    action: CliAction,
    /// The subject's identities, as KIND=VALUE (repeatable; every action but validate).
    #[arg(long = "identity", value_parser = parse_identity)]
    identities: Vec<Identity>,
    /// For rectify: FIELD=VALUE or COLLECTION.FIELD=VALUE; VALUE is JSON or plain text.
    #[arg(long = "change", value_parser = parse_change)]
    changes: Vec<Change>,
    /// Where compiled plugins are cached.
    #[arg(long, env = "OUBLI_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// oubli's key folder (`<data_dir>/keys`), so that keyed hashes match the service's;
    /// a throwaway key otherwise.
    #[arg(long)]
    keys: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliAction {
    Validate,
    Locate,
    Access,
    Rectify,
    Erase,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
        /// A PostgreSQL server (`postgres://user@host/db`) to run on instead of SQLite: two
        /// databases are created there and dropped at the end.
        #[arg(long)]
        database: Option<String>,
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
        #[arg(long)]
        json: bool,
    },
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

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUBLI_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(PluginCommand::Inspect { file }) => inspect(&file).await,
        Command::Plugin(PluginCommand::Call(args)) => call(args).await,
        Command::Bench(BenchCommand::Dispatch {
            calls,
            plugin,
            json,
        }) => {
            let report =
                tokio::task::spawn_blocking(move || crate::bench::dispatch(&plugin, calls))
                    .await??;
            report.print(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Intake {
            requests,
            concurrency,
            database,
            json,
        }) => {
            crate::bench::service::intake(requests, concurrency, database.as_deref())
                .await?
                .print(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Connectors {
            customers,
            subjects,
            database,
            json,
        }) => {
            crate::bench::connectors::connectors(customers, subjects, database.as_deref())
                .await?
                .print(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::E2e {
            requests,
            systems,
            workers,
            database,
            worker_processes,
            json,
        }) => {
            crate::bench::service::e2e(crate::bench::service::E2eSetup {
                requests,
                systems,
                workers,
                database: database.as_deref(),
                worker_processes,
            })
            .await?
            .print(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Audit {
            events,
            database,
            json,
        }) => {
            crate::bench::audit::audit(events, database.as_deref())
                .await?
                .print(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(DemoCommand::Crm { dir, customers }) => demo_crm(&dir, customers).await,
        Command::Demo(DemoCommand::Api {
            listen,
            token,
            people,
        }) => demo_api(listen, &token, people).await,
        Command::Serve { config, no_workers } => {
            let mode = if no_workers {
                crate::serve::Mode::Api
            } else {
                crate::serve::Mode::All
            };
            crate::serve::serve(crate::config::Config::load(config.as_deref())?, mode).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { config } => {
            let config = crate::config::Config::load(config.as_deref())?;
            crate::serve::serve(config, crate::serve::Mode::Worker).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Create {
            role,
            controller,
            label,
            config,
        }) => create_token(role, controller, &label, config.as_deref()).await,
        Command::Audit(AuditCommand::Verify {
            config,
            public_key,
            head,
        }) => audit_verify(config.as_deref(), public_key, &head).await,
        Command::Keys(KeysCommand::RotateData { config }) => {
            let config = crate::config::Config::load(config.as_deref())?;
            let (key_id, path) = crate::crypto::seal::rotate(&config.data_dir.join("keys"))?;
            print(
                &json!({ "key_id": key_id, "file": path, "note": "restart oubli to seal with the new key; keep the old ones to open what they sealed" }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Generate) => {
            print(&crate::crypto::generate());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::RotateSigning { config }) => {
            let config = crate::config::Config::load(config.as_deref())?;
            let (retired, current) = crate::crypto::rotate_signing(&config.data_dir.join("keys"))?;
            print(
                &json!({ "retired_key_id": retired, "key_id": current, "note": "restart oubli to sign with the new key; the retired key keeps verifying at /v1/keys" }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certificate(CertificateCommand::Verify { file, public_key }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let signed: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            match crate::crypto::verify(&signed, &public_key) {
                Ok(()) => {
                    print(
                        &json!({ "valid": true, "request_id": signed["certificate"]["request"]["id"], "key_id": signed["signature"]["key_id"] }),
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(invalid) => {
                    print(&json!({ "valid": false, "reason": invalid.to_string() }));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Openapi => {
            println!("{}", crate::api::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn audit_verify(
    config: Option<&std::path::Path>,
    mut public_keys: Vec<String>,
    heads: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let mut kept = Vec::with_capacity(heads.len());
    for path in heads {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let head: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        kept.push((path, head));
    }
    let config = crate::config::Config::load(config)?;
    if public_keys.is_empty() {
        public_keys = crate::crypto::public_keys(&config.data_dir.join("keys"), |var| {
            std::env::var(var).ok()
        })?;
    }
    let store = crate::store::Store::open(&config.database_location()).await?;
    let events = crate::audit::all(&store).await?;
    store.close().await;
    match crate::audit::first_broken(&events, &public_keys) {
        None => {
            for (path, head) in &kept {
                if let Err(reason) = crate::audit::check_head(&events, head, &public_keys) {
                    let message = format!("{}: {reason}", path.display());
                    print(
                        &json!({ "valid": false, "events": events.len(), "head": path, "message": message }),
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
            print(
                &json!({ "valid": true, "events": events.len(), "heads": kept.len(), "last_hash": events.last().map(|e| &e.hash) }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(broken) => {
            let message = format!(
                "the chain breaks at event {}: {}",
                broken.seq, broken.reason
            );
            print(
                &json!({ "valid": false, "events": events.len(), "first_broken": broken.seq, "message": message }),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn create_token(
    role: crate::auth::Role,
    controller: Option<String>,
    label: &str,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(config)?;
    if role == crate::auth::Role::Controller && controller.is_none() {
        anyhow::bail!("a controller token needs --controller ID");
    }
    let store = crate::store::Store::open(&config.database_location()).await?;
    if let Some(id) = &controller {
        crate::controller::get_controller(&store, id)
            .await?
            .with_context(|| format!("no controller has the id {id:?}"))?;
    }
    let mut tx = store.begin().await?;
    let (id, token) = crate::auth::create(&mut tx, role, controller.as_deref(), label).await?;
    crate::audit::append(
        &mut tx,
        "cli",
        "token.created",
        None,
        json!({ "token_id": id, "role": role }),
    )
    .await?;
    tx.commit().await?;
    store.close().await;
    print(&json!({ "id": id, "token": token, "role": role, "controller_id": controller }));
    Ok(ExitCode::SUCCESS)
}

async fn demo_crm(dir: &std::path::Path, customers: u64) -> anyhow::Result<ExitCode> {
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

async fn demo_api(
    listen: std::net::SocketAddr,
    token: &str,
    people: u64,
) -> anyhow::Result<ExitCode> {
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

fn print(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

fn runtime_failure(error: &RuntimeError) -> ExitCode {
    print(
        &json!({ "error": error.kind(), "message": error.to_string(), "retryable": error.is_retryable() }),
    );
    ExitCode::FAILURE
}

async fn inspect(file: &str) -> anyhow::Result<ExitCode> {
    let (name, bytes) = crate::plugins::read(file)?;
    let runtime = Arc::new(Runtime::new(RuntimeSettings::default())?);
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
    if args.identities.is_empty() && !matches!(args.action, CliAction::Validate) {
        anyhow::bail!("this action needs the subject: give at least one --identity KIND=VALUE");
    }
    let mut settings = RuntimeSettings {
        cache_dir: args.cache_dir,
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
        CliAction::Validate => runtime
            .validate(&plugin, &system)
            .await
            .map(|()| json!({ "valid": true })),
        CliAction::Locate => runtime
            .locate(&plugin, &system, &subject)
            .await
            .map(|r| json!({ "records": r })),
        CliAction::Erase => runtime
            .erase(&plugin, &system, &subject)
            .await
            .map(|r| json!({ "erased": crate::runtime::erased_json(&r) })),
        CliAction::Rectify => {
            if args.changes.is_empty() {
                anyhow::bail!("--action rectify needs at least one --change FIELD=VALUE");
            }
            runtime
                .rectify(&plugin, &system, &subject, &args.changes)
                .await
                .map(|r| json!({ "changed": r }))
        }
        CliAction::Access => {
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
