//! The plugin runtime: one wasmtime `Engine` with the pooling allocator and epoch
//! interruption, one `InstancePre` per plugin, and a fresh `Store` and instance for every
//! call, bounded by a wall-clock deadline and a memory cap.
//!
//! Calls run asynchronously on a blocking thread of their own: the guest yields at every
//! epoch tick, and every host import (a WASI clock or poll, an HTTP exchange, a SQL
//! statement) is a future, so the call's deadline stops it whatever it is doing, and
//! whatever it was waiting for is dropped (a SQL statement is also cancelled on the
//! database).
//!
//! The rest of the host calls plugins through [`Runtime`]'s typed methods (`describe`,
//! `validate`, `locate`, `access`, `rectify`, `erase`, and for contract 0.2 `verify`,
//! `sweep`, `expired`), which return a [`RuntimeError`] that tells retryable failures
//! from fatal ones.

pub mod bindings;
mod cache;
pub mod capability;
mod error;
mod reply;
mod state;
pub mod system;
mod types;

pub use capability::{http, sql};

pub use error::RuntimeError;
pub use reply::{
    MAX_FIELD_VALUE_BYTES, MAX_FIELD_VALUE_DEPTH, MAX_LABEL_CHARS, MAX_LEGAL_BASIS_CHARS,
};
pub use system::{Grant, SystemConfig};
pub use types::{
    Action, Change, Erased, ExpiredPage, Field, Identity, Info, Match, MatchKind, Outcome, Page,
    PersonalRecord, RecordRef, RecordState, Rectified, Subject, SweepHit, SweepReport, Verified,
};

use anyhow::Context;
use cache::CompileCache;
use reply::{Op, Reply};
use sha2::{Digest, Sha256};
use state::{CallState, CapabilityDenied};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

/// The contract versions this host loads: every 0.1.x and 0.2.x.
const SUPPORTED_CONTRACTS: [&str; 2] = ["0.1.", "0.2."];

/// The most a plugin can make the host copy in one crossing (a call's reply, the
/// arguments of one import), in host bytes: string bytes plus the host's size of each
/// list element.
pub const MAX_CROSSING_BYTES: usize = 32 << 20;

/// The resources a plugin may hold at once (streams, pollables, HTTP requests).
pub const MAX_HANDLES: usize = 1_024;

/// How long past its deadline the runtime waits for a call's thread before it reports the
/// call as timed out and leaves the thread behind (see `Runtime::blocking`).
const STUCK_GRACE: Duration = Duration::from_millis(250);

/// How the runtime is sized.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Where compiled components are cached; no cache when `None`.
    pub cache_dir: Option<PathBuf>,
    /// The largest memory cap any system may ask for, in MiB.
    pub max_memory_mb: u64,
    /// How many plugin instances may be alive at once.
    pub max_instances: u32,
    /// How often the epoch advances; deadlines are accurate to about one tick.
    pub epoch_tick: Duration,
    /// The key behind the plugins' `keyed-hash`; each system hashes under a key derived
    /// from it and its name. A random one when not given: hashes then change with each
    /// process, which suits only trying a plugin out.
    pub pseudonym_key: [u8; 32],
    /// oubli's own database (a SQLite file or a server URL), which no system may name as
    /// its database.
    pub reserved_databases: Vec<String>,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            cache_dir: None,
            max_memory_mb: 512,
            max_instances: 64,
            epoch_tick: Duration::from_millis(5),
            pseudonym_key: rand::random(),
            reserved_databases: Vec::new(),
        }
    }
}

/// A plugin compiled and linked, ready to instantiate.
pub struct Plugin {
    /// The name it was loaded under (file name or registered name), for logs.
    pub name: Arc<str>,
    /// `sha256:<hex>` of the component file.
    pub digest: String,
    /// The contract version it exports, e.g. `0.1.0`.
    pub contract: String,
    /// The component's imports, for `oubli plugin inspect`.
    pub imports: Vec<String>,
    /// Linked with `wasi:http`, for systems that grant `http`.
    pre_http: Pre,
    /// Linked without it: each `wasi:http` import traps, so a system that grants no HTTP
    /// never runs the HTTP host code at all.
    pre: Pre,
}

/// A plugin linked and ready to instantiate, of the contract version it exports: chosen
/// once, when it is loaded.
enum Pre {
    V0_1(bindings::since_v0_1_0::PluginPre<CallState>),
    V0_2(bindings::since_v0_2_0::PluginPre<CallState>),
}

impl Pre {
    async fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<reply::Instance> {
        Ok(match self {
            Pre::V0_1(pre) => reply::Instance::V0_1(pre.instantiate_async(store).await?),
            Pre::V0_2(pre) => reply::Instance::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// A plugin's `describe()` output as oubli stores and shows it, with plain lowercase
/// action names.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `locate`, `access`, `rectify`, `erase`.
    pub actions: Vec<String>,
    pub identity_kinds: Vec<String>,
    pub categories: Vec<String>,
}

impl From<Info> for Description {
    fn from(info: Info) -> Self {
        Description {
            name: info.name,
            version: info.version,
            description: info.description,
            actions: info.actions.iter().map(|a| a.name().to_owned()).collect(),
            identity_kinds: info.identity_kinds,
            categories: info.categories,
        }
    }
}

impl Action {
    /// The action's name in the contract.
    pub fn name(self) -> &'static str {
        match self {
            Action::Locate => "locate",
            Action::Access => "access",
            Action::Rectify => "rectify",
            Action::Erase => "erase",
            Action::Verify => "verify",
            Action::Sweep => "sweep",
            Action::Expired => "expired",
        }
    }
}

impl Outcome {
    /// `deleted`, `anonymised` or `retained`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Anonymised(_) => "anonymised",
            Outcome::Retained { .. } => "retained",
        }
    }

    /// The legal basis of a retained record.
    pub fn legal_basis(&self) -> Option<&str> {
        match self {
            Outcome::Retained { legal_basis, .. } => Some(legal_basis),
            _ => None,
        }
    }

    /// The fields masked in a record kept (anonymised, or retained with masks).
    pub fn masked(&self) -> &[String] {
        match self {
            Outcome::Anonymised(masked) | Outcome::Retained { masked, .. } => masked,
            Outcome::Deleted => &[],
        }
    }
}

/// An erasure report as JSON: `{collection, key, outcome, legal_basis?, masked?}` per
/// record.
pub fn erased_json(erased: &[Erased]) -> serde_json::Value {
    erased
        .iter()
        .map(|e| {
            let mut record = serde_json::json!({ "collection": e.collection, "key": e.key, "outcome": e.outcome.name() });
            if let Some(basis) = e.outcome.legal_basis() {
                record["legal_basis"] = basis.into();
            }
            if !e.outcome.masked().is_empty() {
                record["masked"] = e.outcome.masked().into();
            }
            record
        })
        .collect()
}

/// The sha-256 digest of a plugin file, as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a `wasi:http` function of a plugin whose system grants no HTTP says when called.
const HTTP_NOT_LINKED: &str = "wasi:http is not linked for this system";

/// Defines every `wasi:http` import of `component` in `linker` as functions that fail
/// the call, so that the component links without any HTTP host code behind it. The
/// `wasi:io` resources `wasi:http/types` uses are the linker's own; its own resources are
/// placeholders that nothing can create.
fn stub_http(
    linker: &mut Linker<CallState>,
    component: &wasmtime::component::Component,
    engine: &Engine,
) -> wasmtime::Result<()> {
    use wasmtime::component::ResourceType;
    use wasmtime::component::types::ComponentItem;
    let imports: Vec<_> = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) => Some((name.to_owned(), instance)),
            _ => None,
        })
        .collect();
    // The resources the rest of the linker defines, by the type the component gives them.
    let mut wasi_resources = Vec::new();
    for (name, instance) in imports.iter().filter(|(n, _)| !n.starts_with("wasi:http/")) {
        let interface = name.split('@').next().unwrap_or(name);
        for (export, item) in instance.exports(engine) {
            if let ComponentItem::Resource(ty) = item.ty {
                let host = match (interface, export) {
                    ("wasi:io/poll", "pollable") => {
                        ResourceType::host::<wasmtime_wasi::p2::DynPollable>()
                    }
                    ("wasi:io/streams", "input-stream") => {
                        ResourceType::host::<wasmtime_wasi::p2::DynInputStream>()
                    }
                    ("wasi:io/streams", "output-stream") => {
                        ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>()
                    }
                    ("wasi:io/error" | "wasi:io/streams", "error") => {
                        ResourceType::host::<wasmtime_wasi::p2::IoError>()
                    }
                    _ => continue,
                };
                wasi_resources.push((ty, host));
            }
        }
    }
    for (name, instance) in imports.iter().filter(|(n, _)| n.starts_with("wasi:http/")) {
        let mut stub = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    stub.func_new(export, |_, _, _, _| {
                        Err(wasmtime::Error::msg(HTTP_NOT_LINKED))
                    })?;
                }
                ComponentItem::Resource(ty) => {
                    // A `wasi:io` resource that `wasi:http` uses is WASI's; its own are
                    // placeholders nothing can create.
                    let host = wasi_resources
                        .iter()
                        .find(|(wasi, _)| *wasi == ty)
                        .map_or_else(ResourceType::host::<()>, |(_, host)| *host);
                    stub.resource(export, host, |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The longest HTTP method a plugin may set: WASI keeps a request's method as the guest
/// gave it, of any length, for as long as the request lives.
const MAX_HTTP_METHOD: usize = 64;

/// Replaces `outgoing-request.set-method` by one that refuses methods longer than
/// [`MAX_HTTP_METHOD`] (the other parts of a request are bounded by WASI itself: fields
/// by their size limit, path and authority by the URI's).
fn bound_http_methods(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime_wasi_http::WasiHttpView;
    use wasmtime_wasi_http::p2::bindings::http::types::{
        HostOutgoingRequest, Method, OutgoingRequest,
    };
    linker.allow_shadowing(true);
    linker.instance("wasi:http/types@0.2.12")?.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store: wasmtime::StoreContextMut<'_, CallState>,
         (request, method): (wasmtime::component::Resource<OutgoingRequest>, Method)| {
            if let Method::Other(other) = &method
                && other.len() > MAX_HTTP_METHOD
            {
                return Ok((Err(()),));
            }
            store
                .data_mut()
                .http()
                .set_method(request, method)
                .map(|set| (set,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The plugin runtime. Cheap to share behind an `Arc`; every method may be called from
/// many threads at once.
pub struct Runtime {
    engine: Engine,
    /// WASI and the contract's imports.
    linker: Linker<CallState>,
    /// The same with `wasi:http`.
    linker_http: Linker<CallState>,
    cache: Option<CompileCache>,
    settings: RuntimeSettings,
    plugins: Mutex<HashMap<String, Arc<Plugin>>>,
    handle: tokio::runtime::Handle,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine and linker. Must be called inside a tokio runtime, whose handle
    /// serves the plugins' host I/O.
    ///
    /// # Errors
    /// When the engine cannot be configured or the cache folder cannot be opened.
    pub fn new(settings: RuntimeSettings) -> anyhow::Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .context("the plugin runtime needs a tokio runtime")?;
        let mut pool = PoolingAllocationConfig::default();
        let instances = settings.max_instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 4)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memory_size((settings.max_memory_mb as usize) << 20)
            // Reset the first 512 KiB of a slot with memset rather than madvise: a call of
            // a plugin built with a small stack (plugins/.cargo/config.toml) touches little
            // more, and page faults and TLB flushes otherwise dominate instantiation
            // (p50 of `oubli bench dispatch`: 41 µs with 2 MiB and a 1 MiB stack, 18 µs so).
            .linear_memory_keep_resident(512 << 10)
            .table_keep_resident(64 << 10)
            // Where the kernel can say which pages a call dirtied (Linux 6.7 and later),
            // only those are reset.
            // (p50 of `oubli bench dispatch` 27 µs against 34-42 µs without).
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // The guest's own stack lives in linear memory; this is the host's stack under
            // it (imports, lifting and lowering).
            .async_stack_size(1 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // `perf` names the plugins' functions when their addresses are written out
        // (`/tmp/perf-<pid>.map`), for whoever profiles a plugin.
        if std::env::var_os("OUBLI_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;

        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        // The capabilities are 0.1.0's for every contract version: 0.2.0 imports them.
        bindings::Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| {
            state
        })
        .map_err(anyhow::Error::from)?;
        // Contract 0.2.0's own import; 0.1.0 plugins do not import it.
        bindings::since_v0_2_0::oubli::connector0_2_0::memo::add_to_linker::<
            CallState,
            HasSelf<CallState>,
        >(&mut linker, |state| state)
        .map_err(anyhow::Error::from)?;
        let mut linker_http = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker_http)
            .map_err(anyhow::Error::from)?;
        bound_http_methods(&mut linker_http).map_err(anyhow::Error::from)?;

        let cache = settings
            .cache_dir
            .as_deref()
            .map(|dir| CompileCache::open(dir, &engine))
            .transpose()?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        let tick = settings.epoch_tick;
        std::thread::Builder::new()
            .name("oubli-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    ticker_engine.increment_epoch();
                }
            })
            .context("starting the epoch thread")?;

        Ok(Runtime {
            engine,
            linker,
            linker_http,
            cache,
            settings,
            plugins: Mutex::new(HashMap::new()),
            handle,
            _ticker: EpochTicker { stop },
        })
    }

    /// The largest memory cap a system may ask for.
    pub fn max_memory_mb(&self) -> u64 {
        self.settings.max_memory_mb
    }

    /// Validates a system's configuration against this runtime.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] naming the field at fault.
    pub fn prepare(&self, system: &SystemConfig) -> Result<Arc<Grant>, RuntimeError> {
        system
            .prepare(
                self.settings.max_memory_mb,
                &self.settings.pseudonym_key,
                &self.settings.reserved_databases,
            )
            .map(Arc::new)
    }

    /// Compiles (or fetches from the cache) and links a plugin. When `pinned` is given,
    /// a component whose digest differs is refused.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] when the digest does not match, the bytes are not a
    /// component, it exports no supported contract version, or it imports something
    /// oubli does not provide.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        pinned: Option<&str>,
    ) -> Result<Arc<Plugin>, RuntimeError> {
        let digest = digest_of(bytes);
        if let Some(pinned) = pinned
            && pinned != digest
        {
            return Err(RuntimeError::InvalidConfig(format!(
                "plugin `{name}` has digest {digest}, but the system pins {pinned}; the file changed since it was registered: register it again if the change is intended"
            )));
        }
        if let Some(plugin) = self.plugins.lock().expect("plugin map").get(&digest) {
            return Ok(plugin.clone());
        }
        let hex = digest.trim_start_matches("sha256:");
        let component = match &self.cache {
            Some(cache) => cache.load(&self.engine, hex, bytes),
            None => wasmtime::component::Component::new(&self.engine, bytes)
                .map_err(anyhow::Error::from),
        }
        .map_err(|e| {
            RuntimeError::InvalidConfig(format!(
                "plugin `{name}` is not a valid WebAssembly component: {e:#}"
            ))
        })?;

        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let versions: Vec<&str> = exports
            .iter()
            .filter_map(|e| {
                e.strip_prefix(bindings::CONTRACT_INTERFACE)
                    .and_then(|v| v.strip_prefix('@'))
            })
            .collect();
        // Which of two exported versions to call would be a guess: refuse the component.
        if versions.len() > 1 {
            return Err(RuntimeError::InvalidConfig(format!(
                "plugin `{name}` exports {} in several versions ({}); export one",
                bindings::CONTRACT_INTERFACE,
                versions.join(", ")
            )));
        }
        let contract = versions
            .first()
            .ok_or_else(|| {
                RuntimeError::InvalidConfig(format!(
                    "plugin `{name}` does not export {}; it exports {exports:?}",
                    bindings::CONTRACT_INTERFACE
                ))
            })?
            .to_string();
        if !SUPPORTED_CONTRACTS.iter().any(|v| contract.starts_with(v)) {
            return Err(RuntimeError::InvalidConfig(format!(
                "plugin `{name}` implements contract {contract}; this oubli loads {}",
                SUPPORTED_CONTRACTS.map(|v| format!("{v}x")).join(" and ")
            )));
        }
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let cannot_link = |e: wasmtime::Error| {
            RuntimeError::InvalidConfig(format!("plugin `{name}` cannot be linked: {e:#}"))
        };
        let mismatch = |e: wasmtime::Error| {
            RuntimeError::InvalidConfig(format!(
                "plugin `{name}` does not match contract {contract}: {e:#}"
            ))
        };
        let typed = |pre| {
            if contract.starts_with("0.1.") {
                bindings::since_v0_1_0::PluginPre::new(pre)
                    .map(Pre::V0_1)
                    .map_err(mismatch)
            } else {
                bindings::since_v0_2_0::PluginPre::new(pre)
                    .map(Pre::V0_2)
                    .map_err(mismatch)
            }
        };
        // Linking with everything first: an import oubli does not provide at all is an
        // error here, so what the second linker stubs is only `wasi:http`.
        let pre_http = typed(
            self.linker_http
                .instantiate_pre(&component)
                .map_err(cannot_link)?,
        )?;
        let mut linker = self.linker.clone();
        stub_http(&mut linker, &component, &self.engine).map_err(cannot_link)?;
        let pre = typed(linker.instantiate_pre(&component).map_err(cannot_link)?)?;
        let plugin = Arc::new(Plugin {
            name: name.into(),
            digest: digest.clone(),
            contract,
            imports,
            pre_http,
            pre,
        });
        self.plugins
            .lock()
            .expect("plugin map")
            .insert(digest, plugin.clone());
        Ok(plugin)
    }

    /// The plugin with this digest, if it was loaded already.
    pub fn loaded(&self, digest: &str) -> Option<Arc<Plugin>> {
        self.plugins
            .lock()
            .expect("plugin map")
            .get(digest)
            .cloned()
    }

    /// Runs one call in a fresh store and instance on the current thread, which must
    /// not be one of the tokio runtime's workers: SQLite statements run on it too.
    fn call(
        &self,
        plugin: &Plugin,
        system: &Arc<Grant>,
        request_id: &str,
        op: Op,
        deadline: Instant,
    ) -> Result<Reply, RuntimeError> {
        let access = op.access();
        let run = async {
            let state = CallState::new(
                system.clone(),
                plugin.name.clone(),
                request_id.to_owned(),
                deadline,
                access,
                op.personal(),
            );
            let mut store = Store::new(&self.engine, state);
            store.limiter(|state| &mut state.limiter);
            // What the guest hands the host in one crossing (a reply, a statement) is
            // copied onto the host's heap; strings may alias the same guest bytes, so the
            // guest's memory cap alone does not bound the copy.
            store.set_hostcall_fuel(MAX_CROSSING_BYTES);
            // Each resource a plugin holds (a stream, an HTTP request being built) is kept
            // on the host until the call ends.
            store.set_max_component_handles(MAX_HANDLES);
            // Yield to the executor at every tick, so that the deadline below is checked
            // even while the guest computes, and trap once it has passed.
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if Instant::now() >= deadline {
                    Err(wasmtime::Error::from(Trap::Interrupt))
                } else {
                    Ok(UpdateDeadline::Yield(1))
                }
            });
            let pre = if system.config.capabilities.http.is_some() {
                &plugin.pre_http
            } else {
                &plugin.pre
            };
            let outcome = match pre.instantiate(&mut store).await {
                Ok(instance) => op.run(&instance, &mut store).await,
                Err(error) => Err(error),
            };
            let state = store.data_mut();
            if let Some(session) = state.sql.take() {
                // A call stopped at its deadline (trapped in its own code) leaves its
                // connection closed, not reset (the session's `Drop`).
                if Instant::now() < deadline {
                    session.finish_soon().await;
                }
            }
            let denied = state.denied.lock().expect("denied lock").clone();
            match outcome {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(guest)) => Err(match denied {
                    Some(reason) => RuntimeError::Denied(reason),
                    None => guest.into(),
                }),
                Err(error) => Err(self.classify(error, &store, system, denied)),
            }
        };
        let outcome = self.handle.block_on(async {
            tokio::time::timeout_at(deadline.into(), run)
                .await
                .unwrap_or(Err(
                    RuntimeError::Timeout(system.timeout.as_millis() as u64),
                ))
        });
        // Nothing a plugin wrote reaches a task's error, the store or a certificate with a
        // secret in it, or unchecked.
        let reply = outcome.map_err(|e| e.redacted(&system.secret_forms))?;
        if reply.holds(&system.secret_forms) {
            return Err(RuntimeError::Denied(format!(
                "the plugin's result holds a secret of system `{}`; it was not kept",
                system.config.name
            )));
        }
        reply.check().map_err(RuntimeError::Failed)?;
        Ok(reply)
    }

    fn classify(
        &self,
        error: wasmtime::Error,
        store: &Store<CallState>,
        system: &Grant,
        denied: Option<String>,
    ) -> RuntimeError {
        if let Some(CapabilityDenied(reason)) = error.downcast_ref::<CapabilityDenied>() {
            return RuntimeError::Denied(reason.clone());
        }
        if store.data().limiter.exceeded {
            return RuntimeError::OutOfMemory(system.memory_bytes >> 20);
        }
        if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return RuntimeError::Timeout(system.timeout.as_millis() as u64);
        }
        let message = format!("{error:#}");
        if message.contains(HTTP_NOT_LINKED) {
            return RuntimeError::Denied(format!(
                "capability `http` is not granted to system `{}`",
                system.config.name
            ));
        }
        if message.contains("fuel allocated for hostcalls has been exhausted") {
            return RuntimeError::Failed(format!(
                "the plugin handed the host more than {} MiB at once; oubli copies no more",
                MAX_CROSSING_BYTES >> 20
            ));
        }
        if message.contains("concurrent") && message.contains("limit") {
            return RuntimeError::Unavailable(format!(
                "too many plugin instances at once: {message}"
            ));
        }
        if let Some(reason) = denied {
            return RuntimeError::Denied(reason);
        }
        let stderr = String::from_utf8_lossy(&store.data().stderr.contents())
            .trim()
            .to_owned();
        let trap = error.downcast_ref::<Trap>().map_or_else(
            || message.lines().next().unwrap_or_default().to_owned(),
            |t| t.to_string(),
        );
        if stderr.is_empty() {
            RuntimeError::Trap(trap)
        } else {
            let tail: String = stderr
                .chars()
                .rev()
                .take(1000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            RuntimeError::Trap(format!("{tail} ({trap})"))
        }
    }

    /// Runs `f` on a blocking thread: plugin calls run synchronously and may take as long
    /// as their deadline. The wait ends [`STUCK_GRACE`] after `deadline` whatever the
    /// thread is doing: a call stopped by its deadline has returned by then, unless it is
    /// stuck in a step of SQLite's that nothing interrupts (file I/O that hangs), and
    /// the thread is then left to finish on its own.
    async fn blocking<R: Send + 'static>(
        self: &Arc<Self>,
        deadline: Instant,
        timeout: Duration,
        f: impl FnOnce(&Runtime) -> Result<R, RuntimeError> + Send + 'static,
    ) -> Result<R, RuntimeError> {
        let runtime = self.clone();
        let work = tokio::task::spawn_blocking(move || f(&runtime));
        match tokio::time::timeout_at((deadline + STUCK_GRACE).into(), work).await {
            Ok(done) => done.unwrap_or_else(|e| {
                Err(RuntimeError::Trap(format!(
                    "the plugin call was aborted: {e}"
                )))
            }),
            Err(_) => {
                tracing::warn!(
                    "a plugin call was still running {} ms after its deadline; it was left behind",
                    STUCK_GRACE.as_millis()
                );
                Err(RuntimeError::Timeout(timeout.as_millis() as u64))
            }
        }
    }

    /// Calls `describe` on the current thread (used by the dispatch benchmark), which
    /// must be inside a tokio runtime but not one of its workers.
    ///
    /// # Errors
    /// A [`RuntimeError`] if the plugin traps or runs past its limits.
    pub fn describe_blocking(
        &self,
        plugin: &Plugin,
        system: &Arc<Grant>,
    ) -> Result<Info, RuntimeError> {
        let deadline = Instant::now() + system.timeout;
        match self.call(plugin, system, "", Op::Describe, deadline)? {
            Reply::Info(info) => Ok(info),
            _ => unreachable!("describe replies with info"),
        }
    }

    /// Runs `op` on a blocking thread.
    async fn run(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        request_id: &str,
        op: Op,
    ) -> Result<Reply, RuntimeError> {
        let (action, name) = (op.name(), system.config.name.clone());
        let (plugin, system, request_id) = (plugin.clone(), system.clone(), request_id.to_owned());
        let (started, timeout) = (Instant::now(), system.timeout);
        let deadline = started + timeout;
        let span = tracing::info_span!(
            "plugin.call",
            request = %request_id,
            system = %name,
            action,
            outcome = tracing::field::Empty
        );
        let reply = tracing::Instrument::instrument(
            self.blocking(deadline, timeout, move |rt| {
                rt.call(&plugin, &system, &request_id, op, deadline)
            }),
            span.clone(),
        )
        .await;
        // For traces and Prometheus (`/metrics`): by system name and action, never by
        // subject.
        let outcome = reply.as_ref().err().map_or("ok", RuntimeError::kind);
        span.record("outcome", outcome);
        metrics::histogram!("oubli_plugin_call_seconds", "system" => name.clone(), "action" => action)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("oubli_plugin_calls_total", "system" => name, "action" => action, "outcome" => outcome)
            .increment(1);
        reply
    }

    /// Asks the plugin to describe itself.
    ///
    /// # Errors
    /// A [`RuntimeError`] if the plugin traps or runs past its limits.
    pub async fn describe(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
    ) -> Result<Info, RuntimeError> {
        match self.run(plugin, system, "", Op::Describe).await? {
            Reply::Info(info) => Ok(info),
            _ => unreachable!("describe replies with info"),
        }
    }

    /// Asks the plugin to check the system's configuration against the system.
    ///
    /// # Errors
    /// A [`RuntimeError`] naming what is wrong.
    pub async fn validate(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
    ) -> Result<(), RuntimeError> {
        self.run(plugin, system, "", Op::Validate).await.map(drop)
    }

    /// Finds the subject's records in the system.
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn locate(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
    ) -> Result<Vec<RecordRef>, RuntimeError> {
        let op = Op::Locate(subject.clone());
        match self.run(plugin, system, &subject.request_id, op).await? {
            Reply::Records(records) => Ok(records),
            _ => unreachable!("locate replies with records"),
        }
    }

    /// Exports one page of the subject's data.
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn access(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
        cursor: Option<String>,
    ) -> Result<Page, RuntimeError> {
        let op = Op::Access(subject.clone(), cursor);
        match self.run(plugin, system, &subject.request_id, op).await? {
            Reply::Page(page) => Ok(page),
            _ => unreachable!("access replies with a page"),
        }
    }

    /// Applies a rectification.
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn rectify(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
        changes: &[Change],
    ) -> Result<Rectified, RuntimeError> {
        let op = Op::Rectify(subject.clone(), changes.to_vec());
        match self.run(plugin, system, &subject.request_id, op).await? {
            Reply::Rectified(rectified) => {
                if let Some(position) = rectified
                    .not_applicable
                    .iter()
                    .find(|p| **p as usize >= changes.len())
                {
                    return Err(RuntimeError::Failed(format!(
                        "the plugin said change {position} has no place in the system, but only {} were given",
                        changes.len()
                    )));
                }
                let distinct: std::collections::BTreeSet<_> =
                    rectified.not_applicable.iter().collect();
                if distinct.len() != rectified.not_applicable.len() {
                    return Err(RuntimeError::Failed(
                        "the plugin named a change as not applicable more than once".into(),
                    ));
                }
                Ok(rectified)
            }
            _ => unreachable!("rectify replies with what it rectified"),
        }
    }

    /// Reads the given records back by their key (contract 0.2), after an erasure. Every
    /// record given must be answered for, once, and no other.
    ///
    /// # Errors
    /// A [`RuntimeError`]; a reply that leaves a record out, answers one twice or
    /// answers for one not given is a failure.
    pub async fn verify(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
        records: &[RecordRef],
    ) -> Result<Vec<Verified>, RuntimeError> {
        let op = Op::Verify(subject.clone(), records.to_vec());
        let Reply::Verified(verified) = self.run(plugin, system, &subject.request_id, op).await?
        else {
            unreachable!("verify replies with record states")
        };
        // One answer per record given: none about another, none twice, none missing.
        let asked: std::collections::BTreeSet<(&str, &str)> = records
            .iter()
            .map(|r| (r.collection.as_str(), r.key.as_str()))
            .collect();
        let mut answered = std::collections::BTreeSet::new();
        for v in &verified {
            let place = (v.collection.as_str(), v.key.as_str());
            if !asked.contains(&place) {
                return Err(RuntimeError::Failed(format!(
                    "the plugin's verify answered for a record of {} it was not asked about",
                    v.collection
                )));
            }
            if !answered.insert(place) {
                return Err(RuntimeError::Failed(format!(
                    "the plugin's verify answered twice for a record of {}",
                    v.collection
                )));
            }
        }
        let missing = asked.len() - answered.len();
        if missing > 0 {
            return Err(RuntimeError::Failed(format!(
                "the plugin's verify left {missing} of the {} records it was given unanswered",
                records.len()
            )));
        }
        Ok(verified)
    }

    /// Searches for the subject's identity values beyond the configured matching
    /// (contract 0.2), within `budget` statements or requests.
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn sweep(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
        budget: u32,
    ) -> Result<SweepReport, RuntimeError> {
        let op = Op::Sweep(subject.clone(), budget);
        match self.run(plugin, system, &subject.request_id, op).await? {
            Reply::Swept(report) => Ok(report),
            _ => unreachable!("sweep replies with a report"),
        }
    }

    /// One page of the subjects whose retention under `rule` has run out (contract 0.2).
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn expired(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        rule: &str,
        cursor: Option<String>,
    ) -> Result<ExpiredPage, RuntimeError> {
        let op = Op::Expired(rule.to_owned(), cursor);
        match self.run(plugin, system, "", op).await? {
            Reply::Expired(page) => Ok(page),
            _ => unreachable!("expired replies with a page of subjects"),
        }
    }

    /// Erases the subject's data. A record reported as retained without a legal basis
    /// in printable words fails the call.
    ///
    /// # Errors
    /// A [`RuntimeError`]; [`RuntimeError::is_retryable`] says whether to try again.
    pub async fn erase(
        self: &Arc<Self>,
        plugin: &Arc<Plugin>,
        system: &Arc<Grant>,
        subject: &Subject,
    ) -> Result<Vec<Erased>, RuntimeError> {
        let op = Op::Erase(subject.clone());
        match self.run(plugin, system, &subject.request_id, op).await? {
            Reply::Erased(erased) => Ok(erased),
            _ => unreachable!("erase replies with erasures"),
        }
    }
}
