//! oubli's first-party connector plugins, built from `plugins/` by the build script and
//! embedded in the binary, so a fresh installation serves a working system.

/// Where the build put the plugins workspace's components (first-party and test plugins).
pub const BUILD_DIR: &str = env!("OUBLI_PLUGINS_DIR");

/// A first-party plugin embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// The name to refer to it by, as `builtin:NAME`.
    pub name: &'static str,
    pub bytes: &'static [u8],
}

/// The embedded first-party plugins.
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "sql",
        bytes: include_bytes!(concat!(env!("OUBLI_PLUGINS_DIR"), "/oubli_sql.wasm")),
    },
    Builtin {
        name: "rest",
        bytes: include_bytes!(concat!(env!("OUBLI_PLUGINS_DIR"), "/oubli_rest.wasm")),
    },
];

/// The embedded plugin called `name`.
pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|b| b.name == name)
}

/// Reads a plugin given as a file path or as `builtin:NAME`.
///
/// # Errors
/// When the file cannot be read or no first-party plugin has that name.
pub fn read(source: &str) -> anyhow::Result<(String, Vec<u8>)> {
    if let Some(name) = source.strip_prefix("builtin:") {
        let plugin = builtin(name).ok_or_else(|| {
            let names: Vec<&str> = BUILTIN.iter().map(|b| b.name).collect();
            anyhow::anyhow!("no first-party plugin named {name:?}; there are {names:?}")
        })?;
        return Ok((source.to_owned(), plugin.bytes.to_vec()));
    }
    let bytes =
        std::fs::read(source).map_err(|e| anyhow::anyhow!("cannot read plugin {source}: {e}"))?;
    let name = std::path::Path::new(source)
        .file_stem()
        .map_or_else(|| source.to_owned(), |s| s.to_string_lossy().into_owned());
    Ok((name, bytes))
}
