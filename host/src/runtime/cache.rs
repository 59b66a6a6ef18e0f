//! The on-disk cache of compiled components, keyed by plugin digest and engine.
//!
//! Deserializing a compiled artifact runs its machine code, so oubli only ever loads
//! artifacts it wrote itself: each one is stored with an HMAC-SHA256 tag under a key that
//! oubli generates in the cache folder (mode 0600), and an artifact whose tag does not
//! verify is discarded and recompiled.

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;

pub struct CompileCache {
    dir: PathBuf,
    key: Vec<u8>,
    engine_id: String,
}

impl CompileCache {
    /// Opens (and creates) the cache folder and its key.
    ///
    /// # Errors
    /// When the folder or its key cannot be created or read.
    pub fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the plugin cache {}", dir.display()))?;
        let key_path = dir.join("cache.key");
        // Processes sharing the folder (an API process and workers) share the key.
        let fresh: [u8; 32] = rand::random();
        let key = match crate::crypto::files::read_or_create(&key_path, &fresh)? {
            key if key.len() == 32 => key,
            _ => {
                crate::crypto::files::write_private(&key_path, &fresh)?;
                fresh.to_vec()
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_owned(),
            key,
            engine_id: format!("{:016x}", hasher.finish()),
        })
    }

    fn tag(&self, name: &str, artifact: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(artifact);
        mac
    }

    /// The compiled component for `bytes`, from the cache when a valid artifact is there,
    /// compiled and stored otherwise.
    ///
    /// # Errors
    /// When the bytes are not a valid component.
    pub fn load(
        &self,
        engine: &Engine,
        digest_hex: &str,
        bytes: &[u8],
    ) -> anyhow::Result<Component> {
        let name = format!("{digest_hex}-{}", self.engine_id);
        let artifact_path = self.dir.join(format!("{name}.cwasm"));
        let tag_path = self.dir.join(format!("{name}.tag"));
        if let (Ok(artifact), Ok(tag)) = (std::fs::read(&artifact_path), std::fs::read(&tag_path)) {
            if self.tag(&name, &artifact).verify_slice(&tag).is_ok() {
                // SAFETY: the artifact carries a valid HMAC under a key only this oubli
                // installation holds, so oubli's own `serialize` produced it for this
                // engine configuration.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(engine, &artifact) };
                match loaded {
                    Ok(component) => return Ok(component),
                    Err(e) => {
                        tracing::warn!(error = %e, path = %artifact_path.display(), "discarding a cached plugin artifact")
                    }
                }
            } else {
                tracing::warn!(path = %artifact_path.display(), "a cached plugin artifact failed its integrity check; recompiling");
            }
        }
        let component = Component::new(engine, bytes)?;
        let artifact = component.serialize()?;
        let tag = self.tag(&name, &artifact).finalize().into_bytes();
        let write = || -> std::io::Result<()> {
            let tmp = self
                .dir
                .join(format!("{name}.cwasm.tmp{}", std::process::id()));
            std::fs::write(&tmp, &artifact)?;
            std::fs::rename(&tmp, &artifact_path)?;
            std::fs::write(&tag_path, tag)
        };
        if let Err(e) = write() {
            tracing::warn!(error = %e, "could not store a compiled plugin in the cache");
        }
        Ok(component)
    }
}
