//! oubli carries out GDPR data subject requests (access, rectification, erasure) by
//! running one sandboxed WebAssembly connector plugin per connected system, and keeps the
//! evidence of what it did.
//!
//! Modules by domain: [`api`] (the REST API), [`request`] (DSR types, lifecycle,
//! deadlines), [`queue`] (tasks, leases, retries, the worker), [`controller`]
//! (controllers, connected systems, registered plugins), [`auth`] (tokens), [`audit`]
//! (the hash-chained trail), [`crypto`] (keys, signatures, sealing at rest), [`evidence`] (erasure certificates, access packages, retention), [`notify`] (webhooks), [`store`] (SQLite), [`runtime`]
//! (wasmtime engine, plugin loading, capabilities), [`plugins`] (the embedded
//! first-party connectors), [`demo`] (the demo CRM), [`bench`] (the benchmarks),
//! [`serve`] and [`cli`] (the `oubli` command).
#![deny(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crypto;
pub mod demo;
pub mod evidence;
pub mod notify;
pub mod plugins;
pub mod queue;
pub mod request;
pub mod runtime;
pub mod serve;
pub mod store;
