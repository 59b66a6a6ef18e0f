//! Host bindings generated from the contract's versions, one module per version (as
//! Zed's extension host does): `since_v0_1_0` from `wit/0.1.0`, `since_v0_2_0` from
//! `wit/0.2.0`. The capabilities (`host`, `sql`) are 0.1.0's in both: 0.2.0 imports them
//! unchanged, so the host implements them once.

pub mod since_v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

pub mod since_v0_2_0 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
        with: {
            "oubli:connector/types@0.1.0": super::since_v0_1_0::oubli::connector::types,
            "oubli:connector/host@0.1.0": super::since_v0_1_0::oubli::connector::host,
            "oubli:connector/sql@0.1.0": super::since_v0_1_0::oubli::connector::sql,
        },
    });
}

// The capabilities, which every contract version imports as 0.1.0's.
pub use since_v0_1_0::Plugin;
pub use since_v0_1_0::oubli::connector::{host, sql, types};

/// The contract version this host implements, as plugins export it.
pub const CONTRACT_INTERFACE: &str = "oubli:connector/connector";
