//! One module per capability a system can grant its plugin, each with its grant's
//! checks, its limits and its one way of saying "denied":
//! - [`host`]: `host.log`, `host.config`, `host.keyed-hash` (the `host` grant);
//! - [`sql`]: statements against the system's own database (the `sql` grant);
//! - [`http`]: `wasi:http` to allow-listed hosts (the `http` grant);
//! - [`memo`]: what a plugin keeps between its calls on the system (contract 0.2, under
//!   the `host` grant).
//!
//! A capability that is not granted traps the call with
//! [`super::state::CapabilityDenied`], which the runtime reports as `denied`.

pub mod host;
pub mod http;
pub mod memo;
pub mod sql;
