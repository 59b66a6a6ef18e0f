//! oubli's keys and what they do: the Ed25519 key that signs certificates and audit
//! heads ([`Keys::sign`], [`verify`]), the key of the identities' keyed hashes, the
//! plugins' pseudonymisation key, and the data keys that seal what oubli holds of the
//! subjects at rest ([`seal`]). The bottom layer: it knows nothing of requests or
//! evidence, which build on it.

pub mod files;
pub mod opendsr;
pub mod seal;

use anyhow::Context;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The service's keys: the Ed25519 key that signs certificates and the key of the
/// identities' keyed hashes. Files in `<data_dir>/keys/`, mode 0600, made on first start.
pub struct Keys {
    signing: SigningKey,
    /// Public keys of signing keys rotated out: they still verify what they signed.
    retired: Vec<VerifyingKey>,
    hash_key: [u8; 32],
    /// The key behind the plugins' `keyed-hash` (the runtime's `pseudonym_key`).
    pub pseudonym: [u8; 32],
    /// The data keys that encrypt what oubli holds of the subjects.
    pub sealer: std::sync::Arc<seal::Sealer>,
}

/// A public key as `/v1/keys` serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    /// The first 16 hex digits of the SHA-256 of the key.
    pub key_id: String,
    /// `Ed25519`.
    pub algorithm: &'static str,
    /// The 32-byte public key, base64.
    pub public_key: String,
    /// `current` (signs new certificates) or `retired` (rotated out; verifies the
    /// certificates it signed).
    pub status: &'static str,
}

/// The folder of retired signing keys' public parts, in the keys folder.
const RETIRED: &str = "retired-signing";

fn public_key(key: &VerifyingKey, status: &'static str) -> PublicKey {
    PublicKey {
        key_id: key_id(key),
        algorithm: "Ed25519",
        public_key: B64.encode(key.as_bytes()),
        status,
    }
}

/// Replaces the certificate signing key in `dir` with a new one: the old key's public
/// part is kept in `retired-signing/<key id>.pub`, so that it still verifies, and its
/// private part is gone, so that it signs nothing more. Returns the old and new key ids.
/// The service signs with the new key from its next start.
///
/// # Errors
/// When the keys cannot be read or written.
pub fn rotate_signing(dir: &Path) -> anyhow::Result<(String, String)> {
    anyhow::ensure!(
        std::env::var_os(SIGNING_KEY_VAR).is_none(),
        "the signing key comes from {SIGNING_KEY_VAR}: make a new one with `oubli keys generate`, set it, and add the old public key (from /v1/keys) to OUBLI_RETIRED_SIGNING_KEYS"
    );
    let path = dir.join("signing.ed25519");
    let old = SigningKey::from_bytes(&load_or_create(&path)?).verifying_key();
    let retired = dir.join(RETIRED).join(format!("{}.pub", key_id(&old)));
    crate::crypto::files::write_private(&retired, B64.encode(old.as_bytes()).as_bytes())?;
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    let aside = dir.join("signing.ed25519.new");
    crate::crypto::files::write_private(&aside, &fresh)?;
    std::fs::rename(&aside, &path).with_context(|| format!("replacing {}", path.display()))?;
    let new = SigningKey::from_bytes(&fresh).verifying_key();
    Ok((key_id(&old), key_id(&new)))
}

fn load_retired(dir: &Path) -> anyhow::Result<Vec<VerifyingKey>> {
    let dir = dir.join(RETIRED);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "pub") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = B64
            .decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .with_context(|| format!("{} does not hold an Ed25519 public key", path.display()))?;
        keys.push(key);
    }
    keys.sort_by_key(key_id);
    Ok(keys)
}

fn load_or_create(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut fresh = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    crate::crypto::files::read_or_create(path, &fresh)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))
}

/// The id of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The environment variable that gives the certificate signing key (its 32-byte seed,
/// base64) instead of the keys folder.
pub const SIGNING_KEY_VAR: &str = "OUBLI_SIGNING_KEY";

/// A 32-byte key given in an environment variable, base64.
fn key_from_env(var: &str, text: &str) -> anyhow::Result<[u8; 32]> {
    B64.decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!("{var} must be 32 bytes in base64 (make one with `oubli keys generate`)")
        })
}

/// A fresh random key, base64, and the Ed25519 public key it gives as a signing seed
/// with its id: what `oubli keys generate` prints, for keys given in the environment.
pub fn generate() -> Value {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let public = SigningKey::from_bytes(&key).verifying_key();
    json!({
        "key": B64.encode(key),
        "as_signing_key": { "key_id": key_id(&public), "public_key": B64.encode(public.as_bytes()) },
    })
}

/// The public keys that verify what the service signed (current, then retired), read
/// from `dir` and `env` as [`Keys::load`] would, but making nothing: for commands that
/// only check, such as `oubli audit verify`. Empty when there is no signing key.
///
/// # Errors
/// When a key is malformed.
pub fn public_keys(
    dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let path = dir.join("signing.ed25519");
    let seed = match env(SIGNING_KEY_VAR) {
        Some(text) => Some(key_from_env(SIGNING_KEY_VAR, &text)?),
        None if path.exists() => Some(
            std::fs::read(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} does not hold a 32-byte key", path.display()))?,
        ),
        None => None,
    };
    let Some(seed) = seed else {
        return Ok(Vec::new());
    };
    let current = SigningKey::from_bytes(&seed).verifying_key();
    Ok(std::iter::once(current)
        .chain(load_retired(dir)?)
        .chain(retired_from_env(&env)?)
        .map(|k| B64.encode(k.as_bytes()))
        .collect())
}

/// The retired signing keys' public parts given in `OUBLI_RETIRED_SIGNING_KEYS`
/// (comma-separated, base64).
fn retired_from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<VerifyingKey>> {
    const VAR: &str = "OUBLI_RETIRED_SIGNING_KEYS";
    env(VAR)
        .iter()
        .flat_map(|list| list.split(','))
        .filter(|t| !t.trim().is_empty())
        .map(|text| {
            VerifyingKey::from_bytes(&key_from_env(VAR, text)?)
                .map_err(|_| anyhow::anyhow!("{VAR} holds a key that is not an Ed25519 public key"))
        })
        .collect()
}

impl Keys {
    /// Reads the keys in `dir`, making the missing ones, except those given in the
    /// environment (see [`Keys::load`]).
    ///
    /// # Errors
    /// When a key file cannot be read or written, or a key is not a key.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Keys> {
        Keys::load(dir, |var| std::env::var(var).ok())
    }

    /// Reads the keys in `dir`, making the missing ones; each key can come from `env`
    /// instead (32 bytes, base64): `OUBLI_SIGNING_KEY`, `OUBLI_IDENTITY_HASH_KEY`,
    /// `OUBLI_PSEUDONYM_KEY`, `OUBLI_DATA_KEY`, and the public keys of retired signing
    /// keys in `OUBLI_RETIRED_SIGNING_KEYS` (comma-separated), besides the folder's.
    ///
    /// # Errors
    /// When a key file cannot be read or written, or a key is not a key.
    pub fn load(dir: &Path, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Keys> {
        // Processes starting together on one keys folder (an API process and workers)
        // make the missing keys one after the other, so that all end up with the same.
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let key = |var: &str, file: &str| match env(var) {
            Some(text) => key_from_env(var, &text),
            None => load_or_create(&dir.join(file)),
        };
        let signing = SigningKey::from_bytes(&key(SIGNING_KEY_VAR, "signing.ed25519")?);
        let mut retired = load_retired(dir)?;
        for public in retired_from_env(&env)? {
            if !retired.contains(&public) && public != signing.verifying_key() {
                retired.push(public);
            }
        }
        let hash_key = key("OUBLI_IDENTITY_HASH_KEY", "identity-hash.key")?;
        let pseudonym = key("OUBLI_PSEUDONYM_KEY", "pseudonym.key")?;
        let data_key = env("OUBLI_DATA_KEY");
        let sealer = std::sync::Arc::new(seal::Sealer::load(dir, data_key.as_deref())?);
        Ok(Keys {
            signing,
            retired,
            hash_key,
            pseudonym,
            sealer,
        })
    }

    /// The public key of certificates.
    pub fn public(&self) -> PublicKey {
        public_key(&self.signing.verifying_key(), "current")
    }

    /// Every public key that verifies certificates: the current one first, then the
    /// retired ones.
    pub fn publics(&self) -> Vec<PublicKey> {
        std::iter::once(self.public())
            .chain(self.retired.iter().map(|k| public_key(k, "retired")))
            .collect()
    }

    /// The keys of [`Keys::publics`] as [`verify`] takes them (base64).
    pub fn verifying_keys(&self) -> Vec<String> {
        self.publics().into_iter().map(|k| k.public_key).collect()
    }

    /// The token of a link oubli gives a person (an approval link): `<id>.<mac>`, the
    /// MAC an HMAC-SHA256 of `purpose:id` under a key derived from the identity hash key
    /// for links alone (its input has no `:`, so no identity hash, which hashes
    /// `kind:value`, can be that key). Nothing secret is stored: the token is made again
    /// when a webhook or an e-mail is sent, and checked by [`Keys::link_id`].
    pub fn link_token(&self, purpose: &str, id: &str) -> String {
        let mac = self.link_mac(purpose, id).finalize().into_bytes();
        format!(
            "{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The id in a token [`Keys::link_token`] made for `purpose`, if it is one.
    pub fn link_id<'t>(&self, purpose: &str, token: &'t str) -> Option<&'t str> {
        let (id, mac) = token.split_once('.')?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(mac)
            .ok()?;
        self.link_mac(purpose, id).verify_slice(&mac).ok()?;
        Some(id)
    }

    fn link_mac(&self, purpose: &str, id: &str) -> Hmac<Sha256> {
        let mut derive =
            Hmac::<Sha256>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        derive.update(b"\0oubli links");
        let key = derive.finalize().into_bytes();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(format!("{purpose}:{id}").as_bytes());
        mac
    }

    /// The keyed hash of one identity: HMAC-SHA256 of `kind:value`, hex.
    pub fn identity_hash(&self, kind: &str, value: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(format!("{kind}:{value}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Signs a document: `{"certificate": document, "signature": {…}}`, the signature over
    /// the document's compact JSON encoding.
    pub fn sign(&self, document: Value) -> Value {
        let bytes = serde_json::to_vec(&document).expect("JSON values serialize");
        let signature = self.signing.sign(&bytes);
        let public = self.public();
        json!({
            "certificate": document,
            "signature": {
                "algorithm": public.algorithm,
                "key_id": public.key_id,
                "value": B64.encode(signature.to_bytes()),
            },
        })
    }
}

/// Why a certificate does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("not a signed certificate: {0}")]
    Malformed(String),
    #[error("the certificate was signed with key {signed_with}, not with any given key ({given})")]
    OtherKey { signed_with: String, given: String },
    #[error(
        "the signature does not match: the certificate was changed after it was signed, or was not signed by this key"
    )]
    BadSignature,
}

/// Checks a signed certificate against the public keys (base64, as `/v1/keys` gives
/// them, current and retired): the one whose id the signature names must verify it.
///
/// # Errors
/// [`Invalid`] saying why it does not verify.
pub fn verify(signed: &Value, public_keys: &[String]) -> Result<(), Invalid> {
    let malformed = |m: &str| Invalid::Malformed(m.to_owned());
    let mut keys = Vec::with_capacity(public_keys.len());
    for text in public_keys {
        let key_bytes: [u8; 32] = B64
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("a public key is not 32 bytes of base64"))?;
        keys.push(
            VerifyingKey::from_bytes(&key_bytes)
                .map_err(|_| malformed("a public key is not an Ed25519 key"))?,
        );
    }
    let document = signed
        .get("certificate")
        .ok_or_else(|| malformed("no `certificate`"))?;
    let signature = &signed["signature"];
    let signed_with = signature["key_id"].as_str().unwrap_or_default();
    let Some(key) = keys.iter().find(|k| key_id(k) == signed_with) else {
        return Err(Invalid::OtherKey {
            signed_with: signed_with.to_owned(),
            given: keys.iter().map(key_id).collect::<Vec<_>>().join(", "),
        });
    };
    let value: [u8; 64] = signature["value"]
        .as_str()
        .and_then(|v| B64.decode(v).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("the signature is not 64 bytes of base64"))?;
    let bytes = serde_json::to_vec(document).expect("JSON values serialize");
    key.verify(&bytes, &Signature::from_bytes(&value))
        .map_err(|_| Invalid::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_token_works_only_whole_and_for_its_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let token = keys.link_token("approval", "lnk_1");
        assert_eq!(keys.link_id("approval", &token), Some("lnk_1"));
        assert_eq!(keys.link_id("session", &token), None);
        let forged = token.replacen("lnk_1", "lnk_2", 1);
        assert_eq!(keys.link_id("approval", &forged), None);
        assert_eq!(keys.link_id("approval", &token[..token.len() - 1]), None);
        assert_eq!(keys.link_id("approval", "lnk_1"), None);
        let other = Keys::load_or_create(&dir.path().join("other")).unwrap();
        assert_eq!(other.link_id("approval", &token), None);
        // The link key is not the identity hash key: no identity hash gives the MAC.
        assert!(!token.contains(&keys.identity_hash("approval", "lnk_1")));
    }

    #[test]
    fn a_signed_document_verifies_and_any_change_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let signed = keys.sign(json!({ "systems": [{ "deleted": 3 }] }));
        let public = keys.public().public_key;
        assert_eq!(verify(&signed, std::slice::from_ref(&public)), Ok(()));
        let mut changed = signed.clone();
        changed["certificate"]["systems"][0]["deleted"] = 2.into();
        assert_eq!(
            verify(&changed, std::slice::from_ref(&public)),
            Err(Invalid::BadSignature)
        );
        let other = Keys::load_or_create(&dir.path().join("other"))
            .unwrap()
            .public()
            .public_key;
        assert!(matches!(
            verify(&signed, &[other]),
            Err(Invalid::OtherKey { .. })
        ));
        // The same files give the same keys.
        assert_eq!(
            Keys::load_or_create(dir.path())
                .unwrap()
                .public()
                .public_key,
            public
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("signing.ed25519"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn keys_given_in_the_environment_replace_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let from_files = Keys::load_or_create(&dir.path().join("files")).unwrap();
        let generated = generate();
        let seed = generated["key"].as_str().unwrap().to_owned();
        let hash_key = generate()["key"].as_str().unwrap().to_owned();
        let env = |var: &str| match var {
            SIGNING_KEY_VAR => Some(seed.clone()),
            "OUBLI_IDENTITY_HASH_KEY" => Some(hash_key.clone()),
            "OUBLI_RETIRED_SIGNING_KEYS" => Some(from_files.public().public_key),
            _ => None,
        };
        let env_dir = dir.path().join("env");
        let keys = Keys::load(&env_dir, env).unwrap();
        assert_eq!(
            keys.public().public_key,
            generated["as_signing_key"]["public_key"].as_str().unwrap()
        );
        assert_eq!(
            keys.public().key_id,
            generated["as_signing_key"]["key_id"].as_str().unwrap()
        );
        assert!(!env_dir.join("signing.ed25519").exists());
        assert!(!env_dir.join("identity-hash.key").exists());
        // The public keys read without making anything.
        assert_eq!(public_keys(&env_dir, env).unwrap(), keys.verifying_keys());
        let empty = dir.path().join("empty");
        assert!(public_keys(&empty, |_| None).unwrap().is_empty());
        assert!(!empty.exists(), "nothing was made");
        // The same environment gives the same keys in another process.
        let again = Keys::load(&dir.path().join("other"), env).unwrap();
        assert_eq!(
            again.identity_hash("email", "a@example.org"),
            keys.identity_hash("email", "a@example.org")
        );
        // A retired key from the environment verifies what it signed.
        let old = from_files.sign(json!({ "n": 1 }));
        let all = keys.verifying_keys();
        assert_eq!(keys.publics()[1].status, "retired");
        assert_eq!(verify(&old, &all), Ok(()));
        // A malformed key is refused with the variable's name.
        let bad = Keys::load(&dir.path().join("bad"), |var| {
            (var == SIGNING_KEY_VAR).then(|| "c2hvcnQ=".to_owned())
        });
        let error = format!("{:#}", bad.err().unwrap());
        assert!(error.contains(SIGNING_KEY_VAR), "{error}");
    }

    #[test]
    fn a_rotated_signing_key_still_verifies_what_it_signed() {
        let dir = tempfile::tempdir().unwrap();
        let before = Keys::load_or_create(dir.path()).unwrap();
        let old_certificate = before.sign(json!({ "n": 1 }));
        let (old_id, new_id) = rotate_signing(dir.path()).unwrap();
        assert_eq!(old_id, before.public().key_id);
        let after = Keys::load_or_create(dir.path()).unwrap();
        let publics = after.publics();
        assert_eq!(
            publics
                .iter()
                .map(|k| (k.key_id.as_str(), k.status))
                .collect::<Vec<_>>(),
            [(new_id.as_str(), "current"), (old_id.as_str(), "retired")]
        );
        let new_certificate = after.sign(json!({ "n": 2 }));
        assert_eq!(new_certificate["signature"]["key_id"], new_id.as_str());
        let all: Vec<String> = publics.into_iter().map(|k| k.public_key).collect();
        assert_eq!(verify(&old_certificate, &all), Ok(()));
        assert_eq!(verify(&new_certificate, &all), Ok(()));
        // The new key alone does not verify the old certificate, and says which key it needs.
        let error = verify(&old_certificate, &all[..1]).unwrap_err();
        assert!(error.to_string().contains(&old_id), "{error}");
    }
}
