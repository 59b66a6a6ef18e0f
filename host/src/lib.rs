//! oubli carries out GDPR data subject requests (access, rectification, erasure) by
//! running one sandboxed WebAssembly connector plugin per connected system, and keeps the
//! evidence of what it did.
//!
//! Modules by domain: [`runtime`] (wasmtime engine, plugin loading, capabilities),
//! [`plugins`] (the embedded first-party connectors), [`bench`] (the benchmarks), [`cli`]
//! (the `oubli` command).
#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod keys;
pub mod plugins;
pub mod runtime;
