//! The state of one plugin call: a fresh WASI context with nothing in it, the system's
//! grants, the memory limiter and the deadline. It lives exactly as long as the call's
//! `Store`, so nothing a plugin does survives into the next call.

use super::bindings::{host, sql, types};
use super::http::HttpPolicy;
use super::system::PreparedSystem;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How much of a plugin's stderr is kept for its error message.
const STDERR_CAPACITY: usize = 16 * 1024;

/// Caps the memory of one instance and remembers when the plugin hit the cap.
pub struct MemoryLimiter {
    max_bytes: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// Why the host stopped a call from its own side (a capability it does not grant).
#[derive(Debug)]
pub struct CapabilityDenied(pub String);

impl std::fmt::Display for CapabilityDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CapabilityDenied {}

pub struct CallState {
    wasi: WasiCtx,
    http_ctx: WasiHttpCtx,
    table: ResourceTable,
    http: HttpPolicy,
    pub limiter: MemoryLimiter,
    pub stderr: MemoryOutputPipe,
    pub denied: Arc<Mutex<Option<String>>>,
    system: Arc<PreparedSystem>,
    plugin: Arc<str>,
    request_id: String,
    deadline: Instant,
    runtime: tokio::runtime::Handle,
}

impl CallState {
    pub fn new(
        system: Arc<PreparedSystem>,
        plugin: Arc<str>,
        request_id: String,
        deadline: Instant,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopened directories, no environment, no arguments, no sockets: the plugin
        // reaches the outside world only through the capabilities below.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let denied = Arc::new(Mutex::new(None));
        CallState {
            wasi,
            http_ctx: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            http: HttpPolicy::new(&system, deadline, denied.clone()),
            limiter: MemoryLimiter {
                max_bytes: system.memory_bytes as usize,
                exceeded: false,
            },
            stderr,
            denied,
            system,
            plugin,
            request_id,
            deadline,
            runtime,
        }
    }

    /// Traps the call unless the system grants `capability`.
    fn require(&self, capability: &str, granted: bool) -> wasmtime::Result<()> {
        if granted {
            return Ok(());
        }
        let reason = format!(
            "capability `{capability}` is not granted to system `{}`; grant it under [capabilities] in the system's configuration",
            self.system.config.name
        );
        self.denied
            .lock()
            .expect("denied lock")
            .get_or_insert(reason.clone());
        Err(wasmtime::Error::new(CapabilityDenied(reason)))
    }

    fn sql(&self) -> wasmtime::Result<&Arc<super::sql::SqlTarget>> {
        self.require("sql", self.system.sql.is_some())?;
        Ok(self.system.sql.as_ref().expect("checked just above"))
    }

    /// Runs host I/O for the plugin, bounded by what is left of the call's deadline.
    fn block_on<T>(
        &self,
        work: impl Future<Output = Result<T, types::Error>>,
    ) -> Result<T, types::Error> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        self.runtime
            .block_on(async { tokio::time::timeout(remaining, work).await })
            .unwrap_or_else(|_| {
                Err(types::Error::Unavailable(
                    "the database did not answer before the call's deadline".into(),
                ))
            })
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.require("host", self.system.config.capabilities.host)?;
        let (plugin, system, request) = (
            &*self.plugin,
            self.system.config.name.as_str(),
            self.request_id.as_str(),
        );
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
        }
        Ok(())
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.require("host", self.system.config.capabilities.host)?;
        Ok(self
            .system
            .config
            .config
            .get(&key)
            .map(|value| match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            }))
    }

    fn keyed_hash(&mut self, value: String) -> wasmtime::Result<String> {
        self.require("host", self.system.config.capabilities.host)?;
        Ok(hex::encode(super::system::keyed_hash(
            &self.system.hash_key,
            &value,
        )))
    }
}

impl sql::Host for CallState {
    fn database_dialect(&mut self) -> wasmtime::Result<sql::Dialect> {
        Ok(self.sql()?.dialect())
    }

    fn query(
        &mut self,
        statement: sql::Statement,
        max_rows: u32,
    ) -> wasmtime::Result<Result<sql::Rows, types::Error>> {
        let target = self.sql()?.clone();
        Ok(self.block_on(async move { target.query(&statement, max_rows).await }))
    }

    fn transaction(
        &mut self,
        statements: Vec<sql::Statement>,
    ) -> wasmtime::Result<Result<Vec<u64>, types::Error>> {
        let target = self.sql()?.clone();
        Ok(self.block_on(async move { target.transaction(&statements).await }))
    }
}
