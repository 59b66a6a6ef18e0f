//! The running service: configuration, database, plugin runtime, and the caches and
//! signals the API, the workers and the webhook sender share.

use crate::auth::Throttle;
use crate::config::Config;
use crate::controller::{self, ConnectedSystem, RegisteredPlugin};
use crate::runtime::{Grant, Plugin, Runtime, RuntimeError};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Shared by every part of the service.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub runtime: Arc<Runtime>,
    /// The keys that sign certificates and hash identities.
    pub keys: crate::crypto::Keys,
    /// Failed authentications per client address.
    pub throttle: Throttle,
    /// Failed console sign-ins per client address, apart from the API's: the console's
    /// form cannot lock API clients out.
    pub console_throttle: Throttle,
    /// Writes new requests, batching those that arrive together into one commit.
    pub intake: crate::request::intake::Intake,
    /// Wakes the workers when tasks were queued.
    pub tasks_ready: Notify,
    /// Wakes the webhook sender when deliveries were queued.
    pub webhooks_ready: Arc<Notify>,
    /// Systems ready for calls, by id.
    systems: Mutex<HashMap<String, Arc<CachedSystem>>>,
    /// Uploaded plugins compiled at once: each takes a core and the memory of its file.
    compilations: Arc<tokio::sync::Semaphore>,
    /// The OpenDSR key and certificate, loaded (or made) on first use.
    processor: Mutex<Option<Arc<crate::crypto::opendsr::Processor>>>,
}

/// Plugins compiled at once in one process.
const COMPILATIONS: usize = 2;

/// A connected system as the workers use it: its stored record, its registered plugin,
/// and the grant its plugin's calls run under.
pub struct CachedSystem {
    pub system: ConnectedSystem,
    pub plugin: RegisteredPlugin,
    pub grant: Arc<Grant>,
}

impl App {
    /// The address of a link made for `purpose`: an approval page, or a recipient's
    /// notice (`/v1/notices/{token}`).
    pub fn link_url(&self, purpose: &str, id: &str) -> String {
        let path = match purpose {
            crate::notify::recipients::NOTICE => "v1/notices",
            crate::notify::links::APPROVAL => "approve",
            other => unreachable!("no page opens links made for {other:?}"),
        };
        format!(
            "{}/{path}/{}",
            self.config.base_url().trim_end_matches('/'),
            self.keys.link_token(purpose, id)
        )
    }

    /// Compiles a stored `compiling` plugin in a task of its own (at most `COMPILATIONS`
    /// at once), which goes on whoever waits for it; a compilation that stops without an
    /// outcome leaves the plugin `failed`, not `compiling`.
    pub fn compile_in_background(
        self: &Arc<Self>,
        digest: &str,
        uploaded: Option<(String, Vec<u8>)>,
    ) -> tokio::task::JoinHandle<Result<RegisteredPlugin, controller::RegisterError>> {
        let (app, digest) = (self.clone(), digest.to_owned());
        tokio::spawn(async move {
            let _permit = app.compilations.clone().acquire_owned().await;
            let compiling = {
                let (app, digest) = (app.clone(), digest.clone());
                tokio::spawn(async move {
                    controller::compile_plugin(&app.store, &app.runtime, &digest, uploaded).await
                })
            };
            match compiling.await {
                Ok(outcome) => outcome,
                Err(stopped) => {
                    let why = format!("the compilation stopped: {stopped}");
                    controller::compilation_stopped(&app.store, &digest, &why).await?;
                    Err(RuntimeError::Failed(why).into())
                }
            }
        })
    }

    pub fn new(
        config: Config,
        store: Store,
        runtime: Arc<Runtime>,
        keys: crate::crypto::Keys,
    ) -> Arc<Self> {
        let limit = config.auth_failure_limit;
        Arc::new(App {
            config,
            intake: crate::request::intake::Intake::start(store.clone(), keys.sealer.clone()),
            store,
            runtime,
            keys,
            throttle: Throttle::new(limit, Duration::from_secs(60)),
            console_throttle: Throttle::new(limit, Duration::from_secs(60)),
            tasks_ready: Notify::new(),
            webhooks_ready: Arc::new(Notify::new()),
            systems: Mutex::new(HashMap::new()),
            compilations: Arc::new(tokio::sync::Semaphore::new(COMPILATIONS)),
            processor: Mutex::new(None),
        })
    }

    /// The domain oubli answers OpenDSR for: `opendsr_domain`, else the host of the
    /// public URL.
    pub fn opendsr_domain(&self) -> String {
        self.config.opendsr_domain.clone().unwrap_or_else(|| {
            url::Url::parse(&self.config.base_url())
                .ok()
                .and_then(|u| {
                    u.host_str()
                        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                })
                .unwrap_or_else(|| "localhost".into())
        })
    }

    /// The OpenDSR key and certificate: the operator's, or those made in the data folder
    /// (made here the first time: a second or so of one core; call it off the async
    /// threads then).
    ///
    /// # Errors
    /// When they cannot be read or made.
    pub fn processor(&self) -> anyhow::Result<Arc<crate::crypto::opendsr::Processor>> {
        let mut held = self.processor.lock().expect("processor");
        if let Some(processor) = held.as_ref() {
            return Ok(processor.clone());
        }
        let configured = match (&self.config.opendsr_certificate, &self.config.opendsr_key) {
            (Some(c), Some(k)) => Some((std::path::Path::new(c), std::path::Path::new(k))),
            (None, None) => None,
            _ => anyhow::bail!("opendsr_certificate and opendsr_key go together"),
        };
        let processor = Arc::new(crate::crypto::opendsr::Processor::load(
            &self.opendsr_domain(),
            configured,
            &self.config.data_dir,
        )?);
        *held = Some(processor.clone());
        Ok(processor)
    }

    /// A connected system with its registered plugin, prepared for calls; read once,
    /// as a connected system does not change once created.
    ///
    /// # Errors
    /// [`RuntimeError::Unavailable`] when the database cannot be read;
    /// [`RuntimeError::InvalidConfig`] when the system or its plugin is missing, or its
    /// configuration no longer validates (a secret went missing, say).
    pub async fn system(&self, id: &str) -> Result<Arc<CachedSystem>, RuntimeError> {
        if let Some(ready) = self.systems.lock().expect("systems").get(id) {
            return Ok(ready.clone());
        }
        let unavailable = |e: String| RuntimeError::Unavailable(format!("reading the system: {e}"));
        let system = controller::get_system(&self.store, id)
            .await
            .map_err(|e| unavailable(format!("{e:#}")))?
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!("the connected system {id} no longer exists"))
            })?;
        let plugin = controller::get_plugin(&self.store, &system.plugin)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!(
                    "no plugin with digest {} is registered",
                    system.plugin
                ))
            })?;
        let grant = self.runtime.prepare(&system.runtime_config())?;
        let ready = Arc::new(CachedSystem {
            system,
            plugin,
            grant,
        });
        self.systems
            .lock()
            .expect("systems")
            .insert(id.to_owned(), ready.clone());
        Ok(ready)
    }

    /// The registered plugin with this digest, compiled and linked.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] when it is not registered or does not load.
    pub async fn plugin(&self, digest: &str) -> Result<Arc<Plugin>, RuntimeError> {
        if let Some(plugin) = self.runtime.loaded(digest) {
            return Ok(plugin);
        }
        let bytes = controller::plugin_bytes(&self.store, digest)
            .await
            .map_err(|e| {
                RuntimeError::Unavailable(format!("reading the plugin from the database: {e}"))
            })?
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!("no plugin with digest {digest} is registered"))
            })?;
        let runtime = self.runtime.clone();
        let digest = digest.to_owned();
        tokio::task::spawn_blocking(move || runtime.load(&digest, &bytes, Some(&digest)))
            .await
            .map_err(|e| RuntimeError::Failed(format!("loading the plugin was aborted: {e}")))?
    }
}
