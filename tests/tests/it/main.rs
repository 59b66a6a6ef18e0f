//! oubli's end-to-end tests, in one test binary: the real runtime with real plugins,
//! real databases and servers on loopback.
#![forbid(unsafe_code)]

mod conformance;
mod plugin_units;
mod rest_connector;
mod sandbox;
mod service;
mod sql_connector;
mod sql_matching;
mod sql_servers;
mod third_party;
mod workers;
