//! Host bindings generated from `wit/0.1.0`, the contract's current version.

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
});

pub use self::oubli::connector::{host, sql, types};
pub use exports::oubli::connector::connector as guest;

/// The contract version this host implements, as plugins export it.
pub const CONTRACT_INTERFACE: &str = "oubli:connector/connector";
