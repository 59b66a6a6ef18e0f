//! Controllers (the organisations that own the data), their connected systems, and the
//! registered plugins those systems run.

use crate::runtime::system::{Capabilities, Limits, SecretRef};
use crate::runtime::{Description, Runtime, RuntimeError, SystemConfig};
use crate::store::{Store, Tx, now_ms, to_rfc3339};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An organisation that owns personal data and decides on the requests about it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Controller {
    pub id: String,
    pub name: String,
    /// Where forwarded requests are POSTed, signed with the controller's webhook secret.
    pub webhook_url: Option<String>,
    /// Whether requests submitted by this controller's own DPO are approved at once.
    pub auto_approve: bool,
    /// Where oubli e-mails the approval link of each forwarded request and reminders.
    pub contact_email: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A new controller.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewController {
    pub name: String,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub auto_approve: bool,
    /// Where oubli e-mails approval links and reminders (when e-mail is configured).
    #[serde(default)]
    pub contact_email: Option<String>,
}

/// The Art. 15 information given with an access package for one system.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Article15 {
    /// Why the data is processed.
    #[serde(default)]
    pub purposes: Vec<String>,
    /// The categories of personal data held.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Who receives the data.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// How long the data is kept.
    #[serde(default)]
    pub retention: String,
    /// Where the data comes from, when not from the subject.
    #[serde(default)]
    pub source: String,
}

/// A system of a controller that holds personal data, and the plugin that reaches it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectedSystem {
    pub id: String,
    pub controller_id: String,
    pub name: String,
    /// The registered plugin, by digest.
    pub plugin: String,
    pub limits: Limits,
    pub capabilities: Capabilities,
    /// Secret references (where the host reads them), never their values.
    pub secrets: BTreeMap<String, SecretRef>,
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
    pub article15: Article15,
    pub created_at: DateTime<Utc>,
}

impl ConnectedSystem {
    /// The runtime's view of the system.
    pub fn runtime_config(&self) -> SystemConfig {
        SystemConfig {
            name: self.name.clone(),
            digest: Some(self.plugin.clone()),
            limits: self.limits.clone(),
            capabilities: self.capabilities.clone(),
            secrets: self.secrets.clone(),
            config: self.config.clone(),
        }
    }
}

/// A new connected system.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSystem {
    /// Unique among the controller's systems, e.g. `crm`.
    pub name: String,
    /// The digest of a registered plugin.
    pub plugin: String,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub article15: Article15,
}

impl NewSystem {
    /// A system from a runtime configuration (a `SYSTEM.toml`), run by the registered
    /// plugin `plugin`.
    pub fn from_config(config: SystemConfig, plugin: &str, article15: Article15) -> Self {
        NewSystem {
            name: config.name,
            plugin: plugin.to_owned(),
            limits: config.limits,
            capabilities: config.capabilities,
            secrets: config.secrets,
            config: config.config,
            article15,
        }
    }
}

/// How far the registration of an uploaded plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginStatus {
    /// Stored; being compiled in the background (it cannot be connected yet).
    Compiling,
    /// Compiled, and it described itself: systems can use it.
    Ready,
    /// It could not be compiled or did not describe itself: `error` says why.
    Failed,
}

impl PluginStatus {
    fn parse(text: &str) -> PluginStatus {
        match text {
            "ready" => PluginStatus::Ready,
            "compiling" => PluginStatus::Compiling,
            // Nothing else is usable.
            _ => PluginStatus::Failed,
        }
    }
}

/// A plugin registered with the service.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RegisteredPlugin {
    pub digest: String,
    pub name: String,
    pub status: PluginStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// The contract version it implements, e.g. `0.1.0` (empty until it is ready).
    pub contract: String,
    /// Its `describe()` output (empty until it is ready).
    pub info: Description,
    pub size: i64,
    pub created_at: DateTime<Utc>,
}

/// A new webhook secret, `whsec_` and 32 random bytes in base64, as in the Standard
/// Webhooks convention.
pub fn webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `auto_approve` is stored as 0 or 1, the same on every backend.
type ControllerRow = (String, String, Option<String>, i64, i64, Option<String>);

fn controller(row: ControllerRow) -> Controller {
    Controller {
        id: row.0,
        name: row.1,
        webhook_url: row.2,
        auto_approve: row.3 != 0,
        contact_email: row.5,
        created_at: to_rfc3339(row.4),
    }
}

/// Creates a controller; returns it with its webhook secret, shown only this once.
///
/// # Errors
/// When the database write fails.
pub async fn create_controller(
    tx: &mut Tx<'_>,
    new: &NewController,
) -> sqlx::Result<(Controller, String)> {
    let id = uuid::Uuid::now_v7().to_string();
    let secret = webhook_secret();
    let now = now_ms();
    sqlx::query("INSERT INTO controllers (id, name, webhook_url, webhook_secret, auto_approve, created_at, contact_email) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&id)
        .bind(&new.name)
        .bind(&new.webhook_url)
        .bind(&secret)
        .bind(i64::from(new.auto_approve))
        .bind(now)
        .bind(&new.contact_email)
        .execute(&mut **tx)
        .await?;
    Ok((
        controller((
            id,
            new.name.clone(),
            new.webhook_url.clone(),
            i64::from(new.auto_approve),
            now,
            new.contact_email.clone(),
        )),
        secret,
    ))
}

/// Whether any controller exists (a new database has none).
///
/// # Errors
/// When the database cannot be read.
pub async fn any_controller(store: &Store) -> sqlx::Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM controllers LIMIT 1")
        .fetch_optional(&store.read)
        .await?;
    Ok(found.is_some())
}

/// A controller by id.
///
/// # Errors
/// When the database cannot be read.
pub async fn get_controller(store: &Store, id: &str) -> sqlx::Result<Option<Controller>> {
    let row: Option<ControllerRow> = sqlx::query_as(
        "SELECT id, name, webhook_url, auto_approve, created_at, contact_email FROM controllers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&store.read)
    .await?;
    Ok(row.map(controller))
}

/// Every controller, by name.
///
/// # Errors
/// When the database cannot be read.
pub async fn list_controllers(store: &Store) -> sqlx::Result<Vec<Controller>> {
    let rows: Vec<ControllerRow> = sqlx::query_as(
        "SELECT id, name, webhook_url, auto_approve, created_at, contact_email FROM controllers ORDER BY name",
    )
    .fetch_all(&store.read)
    .await?;
    Ok(rows.into_iter().map(controller).collect())
}

/// Why a plugin could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The file is not a plugin oubli can run.
    #[error(transparent)]
    Plugin(#[from] RuntimeError),
    /// The database write failed.
    #[error("storing the plugin: {0}")]
    Store(#[from] sqlx::Error),
}

/// Registers a plugin: compiles and links it, asks it to describe itself, and stores it
/// under its digest with the audit event, in one transaction. Registering the same file
/// again returns the stored plugin.
///
/// # Errors
/// [`RegisterError`].
pub async fn register_plugin(
    store: &Store,
    runtime: &std::sync::Arc<Runtime>,
    name: &str,
    bytes: &[u8],
    actor: &str,
) -> Result<RegisteredPlugin, RegisterError> {
    let plugin = runtime.load(name, bytes, None)?;
    let probe = runtime.prepare(&SystemConfig {
        name: "registration".into(),
        ..SystemConfig::default()
    })?;
    let info = Description::from(runtime.describe(&plugin, &probe).await?);
    let now = now_ms();
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO plugins (digest, name, contract, info, size, bytes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(&plugin.digest)
    .bind(name)
    .bind(&plugin.contract)
    .bind(serde_json::to_string(&info).unwrap_or_default())
    .bind(bytes.len() as i64)
    .bind(bytes)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let details = serde_json::json!({ "digest": plugin.digest, "name": name });
    crate::audit::append(&mut tx, actor, "plugin.registered", None, details);
    tx.commit().await?;
    Ok(get_plugin(store, &plugin.digest)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?)
}

type PluginRow = (
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    Option<String>,
);

const PLUGIN_COLUMNS: &str = "digest, name, contract, info, size, created_at, status, error";

fn registered(row: PluginRow) -> RegisteredPlugin {
    RegisteredPlugin {
        digest: row.0,
        name: row.1,
        status: PluginStatus::parse(&row.6),
        error: row.7,
        contract: row.2,
        info: serde_json::from_str(&row.3).unwrap_or_default(),
        size: row.4,
        created_at: to_rfc3339(row.5),
    }
}

/// How long a compilation may run before another upload, or the start of a process, takes
/// it over (its process stopped).
pub const COMPILE_STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// Stores an uploaded plugin as `compiling` (see [`compile_plugin`]), with the audit
/// event `plugin.received`, unless a plugin with its digest is there; one that failed, or
/// whose compilation started more than [`COMPILE_STALE`] ago (its process stopped), is
/// taken as `compiling` again. Returns the plugin and whether the caller is to compile
/// it.
///
/// # Errors
/// When the database fails.
pub async fn receive_plugin(
    store: &Store,
    name: &str,
    bytes: &[u8],
    actor: &str,
) -> sqlx::Result<(RegisteredPlugin, bool)> {
    let digest = crate::runtime::digest_of(bytes);
    let now = now_ms();
    let mut tx = store.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO plugins (digest, name, contract, info, size, bytes, created_at, status, compiling_since) \
         VALUES ($1, $2, '', '{}', $3, $4, $5, 'compiling', $5) ON CONFLICT (digest) DO NOTHING",
    )
    .bind(&digest)
    .bind(name)
    .bind(bytes.len() as i64)
    .bind(bytes)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let retried = !inserted
        && sqlx::query(
            "UPDATE plugins SET status = 'compiling', error = NULL, name = $2, compiling_since = $3 \
             WHERE digest = $1 AND (status = 'failed' OR (status = 'compiling' AND COALESCE(compiling_since, 0) < $4))",
        )
        .bind(&digest)
        .bind(name)
        .bind(now)
        .bind(now - COMPILE_STALE.as_millis() as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
    if inserted || retried {
        let details = serde_json::json!({ "digest": digest, "name": name, "size": bytes.len() });
        crate::audit::append(&mut tx, actor, "plugin.received", None, details);
    }
    tx.commit().await?;
    let plugin = get_plugin(store, &digest)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((plugin, inserted || retried))
}

/// Compiles a stored `compiling` plugin off the async threads, asks it to describe
/// itself, and records it as `ready` (audited `plugin.registered`) or `failed` with why
/// (audited `plugin.refused`).
///
/// # Errors
/// `Plugin` when it cannot run (it is then `failed`); `Store` when the database fails.
pub async fn compile_plugin(
    store: &Store,
    runtime: &std::sync::Arc<Runtime>,
    digest: &str,
    uploaded: Option<(String, Vec<u8>)>,
) -> Result<RegisteredPlugin, RegisterError> {
    // An upload hands its name and bytes over; a compilation taken over reads them back.
    let (name, bytes) = match uploaded {
        Some(source) => source,
        None => sqlx::query_as("SELECT name, bytes FROM plugins WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&store.read)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?,
    };
    let described = async {
        let loader = runtime.clone();
        let plugin = tokio::task::spawn_blocking(move || loader.load(&name, &bytes, None))
            .await
            .map_err(|e| RuntimeError::Failed(format!("compiling the plugin stopped: {e}")))??;
        let probe = runtime.prepare(&SystemConfig {
            name: "registration".into(),
            ..SystemConfig::default()
        })?;
        let info = Description::from(runtime.describe(&plugin, &probe).await?);
        Ok::<_, RuntimeError>((plugin.contract.clone(), info))
    }
    .await;
    let mut tx = store.begin().await?;
    let (event, details, recorded) = match &described {
        Ok((contract, info)) => {
            let done = sqlx::query(
                "UPDATE plugins SET status = 'ready', error = NULL, contract = $2, info = $3, compiling_since = NULL \
                 WHERE digest = $1 AND status = 'compiling'",
            )
            .bind(digest)
            .bind(contract)
            .bind(serde_json::to_string(info).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
            let details = serde_json::json!({ "digest": digest, "name": info.name });
            ("plugin.registered", details, done.rows_affected() == 1)
        }
        Err(e) => {
            let done = sqlx::query(
                "UPDATE plugins SET status = 'failed', error = $2, compiling_since = NULL WHERE digest = $1 AND status = 'compiling'",
            )
            .bind(digest)
            .bind(e.to_string())
            .execute(&mut *tx)
            .await?;
            let details = serde_json::json!({ "digest": digest, "error": e.kind() });
            ("plugin.refused", details, done.rows_affected() == 1)
        }
    };
    // Another compilation of the same file may have recorded it first: said once.
    if recorded {
        crate::audit::append(&mut tx, "system", event, None, details);
    }
    tx.commit().await?;
    described?;
    Ok(get_plugin(store, digest)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?)
}

/// Removes a plugin whose compilation failed (an upload answered with why, so that
/// nothing of it stays registered).
///
/// # Errors
/// When the database fails.
pub async fn remove_failed_plugin(store: &Store, digest: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM plugins WHERE digest = $1 AND status = 'failed'")
        .bind(digest)
        .execute(&store.write)
        .await?;
    Ok(())
}

/// Takes over the plugins left `compiling` by a process that stopped, to compile them
/// again: on the only process of an SQLite database every one (`all`), otherwise those
/// whose compilation started more than [`COMPILE_STALE`] ago. Returns their digests.
///
/// # Errors
/// When the database fails.
pub async fn take_stale_compilations(store: &Store, all: bool) -> sqlx::Result<Vec<String>> {
    let now = now_ms();
    let before = if all {
        i64::MAX
    } else {
        now - COMPILE_STALE.as_millis() as i64
    };
    let stale: Vec<String> = sqlx::query_scalar(
        "SELECT digest FROM plugins WHERE status = 'compiling' AND COALESCE(compiling_since, 0) < $1 ORDER BY created_at",
    )
    .bind(before)
    .fetch_all(&store.read)
    .await?;
    let mut taken = Vec::new();
    for digest in stale {
        // Processes starting together take each one once.
        let done = sqlx::query(
            "UPDATE plugins SET compiling_since = $2 WHERE digest = $1 AND status = 'compiling' AND COALESCE(compiling_since, 0) < $3",
        )
        .bind(&digest)
        .bind(now)
        .bind(before)
        .execute(&store.write)
        .await?;
        if done.rows_affected() == 1 {
            taken.push(digest);
        }
    }
    Ok(taken)
}

/// Records a compilation that stopped without an outcome (its task panicked) as failed.
///
/// # Errors
/// When the database fails.
pub async fn compilation_stopped(store: &Store, digest: &str, why: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE plugins SET status = 'failed', error = $2, compiling_since = NULL WHERE digest = $1 AND status = 'compiling'",
    )
    .bind(digest)
    .bind(why)
    .execute(&store.write)
    .await?;
    Ok(())
}

/// A registered plugin by digest.
///
/// # Errors
/// When the database cannot be read.
pub async fn get_plugin(store: &Store, digest: &str) -> sqlx::Result<Option<RegisteredPlugin>> {
    let row: Option<PluginRow> = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE digest = $1"
    ))
    .bind(digest)
    .fetch_optional(&store.read)
    .await?;
    Ok(row.map(registered))
}

/// Every registered plugin.
///
/// # Errors
/// When the database cannot be read.
pub async fn list_plugins(store: &Store) -> sqlx::Result<Vec<RegisteredPlugin>> {
    let rows: Vec<PluginRow> = sqlx::query_as(&format!(
        "SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY created_at"
    ))
    .fetch_all(&store.read)
    .await?;
    Ok(rows.into_iter().map(registered).collect())
}

/// Registers the first-party plugin `name` (as `builtin:NAME`); see [`register_plugin`].
///
/// # Errors
/// [`RegisterError`], or `Plugin(InvalidConfig)` when no first-party plugin has that name.
pub async fn register_builtin(
    store: &Store,
    runtime: &std::sync::Arc<Runtime>,
    name: &str,
    actor: &str,
) -> Result<RegisteredPlugin, RegisterError> {
    let builtin = crate::plugins::builtin(name).ok_or_else(|| {
        RuntimeError::InvalidConfig(format!("no first-party plugin named {name:?}"))
    })?;
    register_plugin(
        store,
        runtime,
        &format!("builtin:{name}"),
        builtin.bytes,
        actor,
    )
    .await
}

/// A registered plugin's component bytes.
///
/// # Errors
/// When the database cannot be read.
pub async fn plugin_bytes(store: &Store, digest: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT bytes FROM plugins WHERE digest = $1")
        .bind(digest)
        .fetch_optional(&store.read)
        .await
}

/// Adds a connected system to a controller. The caller has checked the plugin and the
/// configuration.
///
/// # Errors
/// When the database write fails, e.g. on a duplicate name.
pub async fn create_system(
    tx: &mut Tx<'_>,
    controller_id: &str,
    new: &NewSystem,
) -> sqlx::Result<ConnectedSystem> {
    let system = ConnectedSystem {
        id: uuid::Uuid::now_v7().to_string(),
        controller_id: controller_id.to_owned(),
        name: new.name.clone(),
        plugin: new.plugin.clone(),
        limits: new.limits.clone(),
        capabilities: new.capabilities.clone(),
        secrets: new.secrets.clone(),
        config: new.config.clone(),
        article15: new.article15.clone(),
        created_at: to_rfc3339(now_ms()),
    };
    let mut config = system.runtime_config();
    config.digest = None;
    sqlx::query(
        "INSERT INTO systems (id, controller_id, name, plugin_digest, config, article15, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&system.id)
    .bind(controller_id)
    .bind(&system.name)
    .bind(&system.plugin)
    .bind(serde_json::to_string(&config).expect("a system config serializes"))
    .bind(serde_json::to_string(&system.article15).expect("Art. 15 information serializes"))
    .bind(system.created_at.timestamp_millis())
    .execute(&mut **tx)
    .await?;
    Ok(system)
}

type SystemRow = (String, String, String, String, String, String, i64);

fn system(row: SystemRow) -> anyhow::Result<ConnectedSystem> {
    let config: SystemConfig = serde_json::from_str(&row.4)?;
    Ok(ConnectedSystem {
        id: row.0,
        controller_id: row.1,
        name: row.2,
        plugin: row.3,
        limits: config.limits,
        capabilities: config.capabilities,
        secrets: config.secrets,
        config: config.config,
        article15: serde_json::from_str(&row.5)?,
        created_at: to_rfc3339(row.6),
    })
}

const SYSTEM_COLUMNS: &str =
    "id, controller_id, name, plugin_digest, config, article15, created_at";

/// A controller's connected systems, by name.
///
/// # Errors
/// When the database cannot be read or holds a configuration this version cannot parse.
pub async fn list_systems(
    store: &Store,
    controller_id: &str,
) -> anyhow::Result<Vec<ConnectedSystem>> {
    let rows: Vec<SystemRow> = sqlx::query_as(&format!(
        "SELECT {SYSTEM_COLUMNS} FROM systems WHERE controller_id = $1 ORDER BY name"
    ))
    .bind(controller_id)
    .fetch_all(&store.read)
    .await?;
    rows.into_iter().map(system).collect()
}

/// A connected system by id.
///
/// # Errors
/// When the database cannot be read or holds a configuration this version cannot parse.
pub async fn get_system(store: &Store, id: &str) -> anyhow::Result<Option<ConnectedSystem>> {
    let row: Option<SystemRow> = sqlx::query_as(&format!(
        "SELECT {SYSTEM_COLUMNS} FROM systems WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&store.read)
    .await?;
    row.map(system).transpose()
}

/// The identity kinds the controller's systems understand.
///
/// # Errors
/// When the database cannot be read.
pub async fn identity_kinds(store: &Store, controller_id: &str) -> sqlx::Result<Vec<String>> {
    let infos: Vec<String> = sqlx::query_scalar(
        "SELECT p.info FROM systems s JOIN plugins p ON p.digest = s.plugin_digest WHERE s.controller_id = $1",
    )
    .bind(controller_id)
    .fetch_all(&store.read)
    .await?;
    Ok(kinds_in(infos.iter().map(String::as_str)))
}

/// A controller by id with the identity kinds its systems understand, in one read (a
/// submission needs both).
///
/// # Errors
/// When the database cannot be read.
pub async fn with_identity_kinds(
    store: &Store,
    id: &str,
) -> sqlx::Result<Option<(Controller, Vec<String>)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        name: String,
        webhook_url: Option<String>,
        auto_approve: i64,
        created_at: i64,
        contact_email: Option<String>,
        info: Option<String>,
    }
    // One row per system (its plugin's description), or one with none.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.id, c.name, c.webhook_url, c.auto_approve, c.created_at, c.contact_email, p.info \
         FROM controllers c LEFT JOIN systems s ON s.controller_id = c.id \
         LEFT JOIN plugins p ON p.digest = s.plugin_digest WHERE c.id = $1",
    )
    .bind(id)
    .fetch_all(&store.read)
    .await?;
    let kinds = kinds_in(rows.iter().filter_map(|row| row.info.as_deref()));
    Ok(rows.into_iter().next().map(|r| {
        let row = (
            r.id,
            r.name,
            r.webhook_url,
            r.auto_approve,
            r.created_at,
            r.contact_email,
        );
        (controller(row), kinds)
    }))
}

/// The identity kinds of plugin descriptions (JSON), sorted, each once.
fn kinds_in<'a>(infos: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut kinds: Vec<String> = infos
        .filter_map(|i| serde_json::from_str::<Description>(i).ok())
        .flat_map(|i| i.identity_kinds)
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}
