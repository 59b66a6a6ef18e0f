//! oubli carries out GDPR data subject requests (access, rectification, erasure) by
//! running one sandboxed WebAssembly connector plugin per connected system, and keeps the
//! evidence of what it did.
//!
//! `ARCHITECTURE.md` at the project root maps the modules, their layers and the
//! invariants: who writes a request's status ([`request::lifecycle`]), where a capability
//! is granted and checked ([`runtime::capability`]), where a plugin is called
//! ([`runtime::Runtime`], from [`worker`]).
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
pub mod expiry;
pub mod notify;
pub mod plugins;
pub mod queue;
pub mod request;
pub mod retry;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod suppression;
pub mod worker;

/// The host's modules in layers, bottom first: a module may use only modules of lower
/// layers, so the modules form no cycle. ARCHITECTURE.md explains each.
#[cfg(test)]
const LAYERS: &[&[&str]] = &[
    &["retry"],
    &["store", "config", "crypto", "plugins"],
    &["runtime", "audit", "auth"],
    &["controller", "demo", "suppression"],
    &["queue"],
    &["notify"],
    &["request"],
    &["app"],
    &["evidence", "worker"],
    &["expiry"],
    &["api"],
    &["serve"],
    &["bench"],
    &["cli"],
];

#[cfg(test)]
mod layering {
    use super::LAYERS;
    use std::path::Path;

    /// The `crate::<module>` paths in the code of a file (comments left out).
    fn uses(path: &Path, found: &mut Vec<(String, String)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                uses(&entry.unwrap().path(), found);
            }
            return;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (i, _) in code.match_indices("crate::") {
                let module: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push((module, format!("{}: {}", path.display(), line.trim())));
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let layer = |module: &str| LAYERS.iter().position(|l| l.contains(&module));
        let mut modules = Vec::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if !["lib", "main"].contains(&name.as_str()) {
                modules.push((name, path));
            }
        }
        let (mut wrong, mut checked) = (Vec::new(), 0);
        for (module, path) in &modules {
            let own =
                layer(module).unwrap_or_else(|| panic!("module `{module}` has no layer in LAYERS"));
            let mut found = Vec::new();
            uses(path, &mut found);
            for (used, line) in found {
                if used == *module {
                    continue;
                }
                checked += 1;
                match layer(&used) {
                    Some(l) if l < own => {}
                    _ => wrong.push(format!("`{module}` uses `{used}`: {line}")),
                }
            }
        }
        assert!(checked > 150, "only {checked} uses were found");
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
