//! The state of one plugin call: a fresh WASI context with nothing in it, the system's
//! grants, the memory limiter and the deadline. It lives exactly as long as the call's
//! `Store`, so nothing a plugin does survives into the next call. What each capability
//! does with it is in [`super::capability`].

use super::bindings::types;
use super::capability::host::LogBudget;
use super::capability::http::HttpPolicy;
use super::capability::sql::{Access, SqlSession};
use super::system::Grant;
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
    pub(super) system: Arc<Grant>,
    pub(super) plugin: Arc<str>,
    pub(super) request_id: String,
    pub(super) deadline: Instant,
    /// Whether this call may change the system's data.
    pub(super) access: Access,
    /// The call's database session, opened on its first statement.
    pub(super) sql: Option<SqlSession>,
    pub(super) log: LogBudget,
    /// The call's identity values and new values, which `memo` refuses to keep.
    pub(super) personal: Vec<String>,
}

impl CallState {
    pub fn new(
        system: Arc<Grant>,
        plugin: Arc<str>,
        request_id: String,
        deadline: Instant,
        access: Access,
        personal: Vec<String>,
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
            access,
            sql: None,
            log: LogBudget::default(),
            personal,
        }
    }

    /// Traps the call unless the system grants `capability`.
    pub(super) fn require(&self, capability: &str, granted: bool) -> wasmtime::Result<()> {
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
}

impl Drop for CallState {
    /// However the call ended (its deadline included), says once what its log limit
    /// kept out.
    fn drop(&mut self) {
        self.log
            .report(&self.plugin, &self.system.config.name, &self.request_id);
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
