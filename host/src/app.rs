//! The running service: configuration, database, plugin runtime, and the caches and
//! signals the API, the workers and the webhook sender share.

use crate::auth::Throttle;
use crate::config::Config;
use crate::controller::{self, ConnectedSystem};
use crate::runtime::{Plugin, PreparedSystem, Runtime, RuntimeError};
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
    /// Failed authentications per client address.
    pub throttle: Throttle,
    /// Wakes the workers when tasks were queued.
    pub tasks_ready: Notify,
    /// Wakes the webhook sender when deliveries were queued.
    pub webhooks_ready: Notify,
    /// Systems ready for calls, by id. A connected system does not change once created.
    prepared: Mutex<HashMap<String, Arc<PreparedSystem>>>,
}

impl App {
    pub fn new(config: Config, store: Store, runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(App {
            config,
            store,
            runtime,
            throttle: Throttle::new(10, Duration::from_secs(60)),
            tasks_ready: Notify::new(),
            webhooks_ready: Notify::new(),
            prepared: Mutex::new(HashMap::new()),
        })
    }

    /// The system prepared for calls.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] when its configuration no longer validates (a
    /// secret went missing, say).
    pub fn prepared(&self, system: &ConnectedSystem) -> Result<Arc<PreparedSystem>, RuntimeError> {
        if let Some(prepared) = self
            .prepared
            .lock()
            .expect("prepared systems")
            .get(&system.id)
        {
            return Ok(prepared.clone());
        }
        let prepared = self.runtime.prepare(&system.runtime_config())?;
        self.prepared
            .lock()
            .expect("prepared systems")
            .insert(system.id.clone(), prepared.clone());
        Ok(prepared)
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
