//! Encryption at rest of the personal data oubli itself holds (what `access` exported):
//! AES-256-GCM under data keys kept in `<data_dir>/keys/data-*.key` (mode 0600) or given
//! in `OUBLI_DATA_KEY` (32 bytes, base64).
//!
//! A sealed value names the key that sealed it, so keys can be rotated: `oubli keys
//! rotate` writes a new key that seals from then on, and the old ones keep opening what
//! they sealed until they are removed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::Context;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const PREFIX: &str = "sealed:v1:";

/// The data keys: the current one seals, every one opens.
pub struct Sealer {
    current: String,
    keys: BTreeMap<String, Aes256Gcm>,
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed with data key {0}, which this process does not have")]
    UnknownKey(String),
    #[error("the sealed value is malformed, was changed, or was sealed for another place")]
    Corrupt,
}

/// The id of a data key: the first 16 hex digits of its SHA-256.
fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

fn key_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if dir.exists() {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("data-") && name.ends_with(".key") {
                files.push(path);
            }
        }
    }
    // data-<milliseconds>.key: the newest sorts last.
    files.sort();
    Ok(files)
}

fn read_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))
}

/// Writes a new data key into `dir`; it seals from the next start on.
///
/// # Errors
/// When the file cannot be written.
pub fn rotate(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let stamp = chrono::Utc::now().timestamp_millis();
    let path = dir.join(format!("data-{stamp:015}.key"));
    crate::crypto::files::write_private(&path, &key)?;
    Ok((key_id(&key), path))
}

impl Sealer {
    /// Loads the data keys in `dir` (making the first one when there is none), and the key
    /// in `env_key` (base64), which then seals.
    ///
    /// # Errors
    /// When a key file or `env_key` is not a 32-byte key.
    pub fn load(dir: &Path, env_key: Option<&str>) -> anyhow::Result<Sealer> {
        let mut files = key_files(dir)?;
        if files.is_empty() && env_key.is_none() {
            files.push(rotate(dir)?.1);
        }
        let mut keys = BTreeMap::new();
        let mut current = String::new();
        for path in files {
            let key = read_key(&path)?;
            current = key_id(&key);
            keys.insert(current.clone(), Aes256Gcm::new(&key.into()));
        }
        if let Some(text) = env_key {
            let key: [u8; 32] = B64
                .decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .context("OUBLI_DATA_KEY must be 32 bytes in base64")?;
            current = key_id(&key);
            keys.insert(current.clone(), Aes256Gcm::new(&key.into()));
        }
        Ok(Sealer { current, keys })
    }

    /// The id of the key that seals.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Whether this sealer has the key with id `key_id`.
    pub fn has(&self, key_id: &str) -> bool {
        self.keys.contains_key(key_id)
    }

    /// Encrypts `plain`: `sealed:v1:<key id>:<base64 of nonce and ciphertext>`.
    pub fn seal(&self, plain: &[u8]) -> String {
        self.seal_for(plain, "")
    }

    /// Encrypts `plain` bound to `context` (e.g. the row and column it is stored in):
    /// only [`Sealer::open_for`] with the same context opens it, so a sealed value moved
    /// elsewhere no longer opens.
    pub fn seal_for(&self, plain: &[u8], context: &str) -> String {
        let cipher = &self.keys[&self.current];
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain,
            aad: context.as_bytes(),
        };
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("AES-GCM encrypts any length oubli stores");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{}:{}", self.current, B64.encode(bytes))
    }

    /// Decrypts what [`Sealer::seal`] made; text that is not sealed (written before
    /// sealing existed) is returned as it is.
    ///
    /// # Errors
    /// [`OpenError`] for an unknown key or a changed value.
    pub fn open(&self, text: &str) -> Result<Vec<u8>, OpenError> {
        if !text.starts_with(PREFIX) {
            return Ok(text.as_bytes().to_vec());
        }
        self.open_for(text, "")
    }

    /// Decrypts what [`Sealer::seal_for`] sealed for the same `context`; anything else,
    /// text that is not sealed included, is refused.
    ///
    /// # Errors
    /// [`OpenError`] for an unknown key, another context or a changed value.
    pub fn open_for(&self, text: &str, context: &str) -> Result<Vec<u8>, OpenError> {
        let rest = text.strip_prefix(PREFIX).ok_or(OpenError::Corrupt)?;
        let (id, data) = rest.split_once(':').ok_or(OpenError::Corrupt)?;
        let cipher = self
            .keys
            .get(id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let bytes = B64.decode(data).map_err(|_| OpenError::Corrupt)?;
        if bytes.len() < 12 {
            return Err(OpenError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| OpenError::Corrupt)
    }

    /// Seals a JSON value.
    pub fn seal_json(&self, value: &serde_json::Value) -> String {
        self.seal(value.to_string().as_bytes())
    }

    /// Opens a sealed JSON value.
    ///
    /// # Errors
    /// When it cannot be opened or is not JSON.
    pub fn open_json(&self, text: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.open(text)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_survive_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let first = Sealer::load(dir.path(), None).unwrap();
        let sealed = first.seal(b"jane@example.org");
        assert!(!sealed.contains("jane"));
        assert_eq!(first.open(&sealed).unwrap(), b"jane@example.org");

        // Rotated: the new key seals, the old one still opens.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let (new_id, _) = rotate(dir.path()).unwrap();
        let second = Sealer::load(dir.path(), None).unwrap();
        assert_eq!(second.current(), new_id);
        assert_ne!(second.current(), first.current());
        assert_eq!(second.open(&sealed).unwrap(), b"jane@example.org");

        // Another installation's keys cannot open it.
        let other = Sealer::load(tempfile::tempdir().unwrap().path(), None).unwrap();
        assert_eq!(
            other.open(&sealed),
            Err(OpenError::UnknownKey(first.current().to_owned()))
        );
        // Any change is found.
        let mut changed = sealed.clone().into_bytes();
        let last = changed.len() - 2;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            first.open(std::str::from_utf8(&changed).unwrap()),
            Err(OpenError::Corrupt)
        );

        // Bound to a context: it opens there only, and clear text is refused.
        let bound = second.seal_for(b"jane@example.org", "request:1:identities");
        assert_eq!(
            second.open_for(&bound, "request:1:identities").unwrap(),
            b"jane@example.org"
        );
        assert_eq!(
            second.open_for(&bound, "request:2:identities"),
            Err(OpenError::Corrupt)
        );
        assert_eq!(second.open(&bound), Err(OpenError::Corrupt));
        assert_eq!(
            second.open_for("[]", "request:1:identities"),
            Err(OpenError::Corrupt)
        );
    }
}
