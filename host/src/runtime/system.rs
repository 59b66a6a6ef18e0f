//! A connected system as the runtime sees it: the capabilities it grants its plugin, the
//! limits of each call, its secrets and its `[config]` values.
//!
//! The same document is a `SYSTEM.toml` file for `oubli plugin call` and the JSON body of
//! a connected system in the API.

use super::RuntimeError;
use super::capability::sql::SqlTarget;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Default wall-clock deadline of one plugin call.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY_MB: u64 = 64;
/// Default cap on an outgoing HTTP request body.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Default cap on an incoming HTTP response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 8 << 20;
/// Default cap on the HTTP requests of one call.
pub const DEFAULT_MAX_REQUESTS: u32 = 1_000;
/// Default cap on the HTTP requests of one call in flight at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: u32 = 8;

/// The configuration of one connected system.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The system's name, unique per controller, e.g. `crm`.
    pub name: String,
    /// The plugin's pinned digest, `sha256:<hex>`. A plugin file with another digest is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Secrets the host substitutes for `{{secret:NAME}}`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Values the plugin reads with `host.config`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Per-call limits; unset values take the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock deadline of one call, in milliseconds (default 30,000).
    pub timeout_ms: Option<u64>,
    /// Memory cap of one instance, in MiB (default 64).
    pub memory_mb: Option<u64>,
}

/// The capabilities a system grants its plugin. Everything is denied by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `host.log` and `host.config`.
    #[serde(default)]
    pub host: bool,
    /// SQL against the system's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlGrant>,
    /// Outgoing HTTP to allow-listed hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpGrant>,
}

/// The system's database, reached by the host on the plugin's behalf.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlGrant {
    /// `sqlite://…`, `postgres://…` or `mysql://…`; may hold `{{secret:NAME}}`.
    pub url: String,
}

/// Where the plugin may send HTTP requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// Allowed hosts: `api.example.org` (any port), `api.example.org:8443`, or
    /// `*.example.org` (any subdomain).
    pub allow: Vec<String>,
    /// Whether loopback and private addresses may be reached (off by default).
    #[serde(default)]
    pub allow_private: bool,
    /// Cap on a request body in bytes (default 1 MiB).
    pub max_request_bytes: Option<u64>,
    /// Cap on a response body in bytes (default 8 MiB).
    pub max_response_bytes: Option<u64>,
    /// Cap on the requests of one call (default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Cap on the requests of one call in flight at once (default 8); more wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
}

/// Where the host reads a secret, and the hosts it may be sent to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// An environment variable of the oubli process.
    pub env: Option<String>,
    /// A file (its content, trailing newline removed).
    pub file: Option<String>,
    /// The hosts this secret may be sent to in an HTTP header; every allowed host when
    /// empty. The SQL URL may always use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// A secret's value, resolved on the host. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret {
    pub value: String,
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// A system ready for calls: validated, secrets resolved, database pool created lazily.
#[derive(Debug)]
pub struct PreparedSystem {
    pub config: SystemConfig,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub secrets: BTreeMap<String, Secret>,
    /// Every form of every secret (see [`super::capability::http::secret_forms`]), which
    /// must never reach the guest.
    pub secret_forms: Arc<Vec<Vec<u8>>>,
    pub sql: Option<Arc<SqlTarget>>,
    /// The key of this system's `keyed-hash`.
    pub hash_key: [u8; 32],
}

impl SystemConfig {
    /// Parses a `SYSTEM.toml` document.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] with the position and the field at fault.
    pub fn from_toml(text: &str) -> Result<Self, RuntimeError> {
        toml::from_str(text).map_err(|e| RuntimeError::InvalidConfig(e.to_string()))
    }

    /// Validates the system and resolves its secrets.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidConfig`] naming the field at fault, or the secret that could
    /// not be read.
    pub fn prepare(
        &self,
        max_memory_mb: u64,
        pseudonym_key: &[u8; 32],
        reserved_files: &[std::path::PathBuf],
    ) -> Result<PreparedSystem, RuntimeError> {
        let invalid = |m: String| Err(RuntimeError::InvalidConfig(m));
        if self.name.trim().is_empty() {
            return invalid("name: a system needs a name".into());
        }
        if let Some(digest) = &self.digest
            && !is_digest(digest)
        {
            return invalid(format!(
                "digest: expected sha256:<64 hex digits>, got {digest:?}"
            ));
        }
        let timeout_ms = self.limits.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=600_000).contains(&timeout_ms) {
            return invalid(format!(
                "limits.timeout_ms: must be between 1 and 600000, got {timeout_ms}"
            ));
        }
        let memory_mb = self.limits.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        if !(1..=max_memory_mb).contains(&memory_mb) {
            return invalid(format!(
                "limits.memory_mb: must be between 1 and {max_memory_mb}, got {memory_mb}"
            ));
        }
        if let Some(http) = &self.capabilities.http {
            for (field, value) in [
                ("max_requests", http.max_requests),
                ("max_concurrent_requests", http.max_concurrent_requests),
            ] {
                if value == Some(0) {
                    return invalid(format!("capabilities.http.{field}: must be at least 1"));
                }
            }
            for (i, rule) in http.allow.iter().enumerate() {
                if super::http::HostRule::parse(rule).is_none() {
                    return invalid(format!(
                        "capabilities.http.allow[{i}]: {rule:?} is not a host, host:port or *.domain"
                    ));
                }
            }
        }
        let mut secrets = BTreeMap::new();
        for (name, reference) in &self.secrets {
            let value = match (&reference.env, &reference.file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    RuntimeError::InvalidConfig(format!(
                        "secrets.{name}: environment variable {var} is not set"
                    ))
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| {
                        RuntimeError::InvalidConfig(format!(
                            "secrets.{name}: cannot read {path}: {e}"
                        ))
                    })?,
                _ => return invalid(format!("secrets.{name}: set exactly one of env or file")),
            };
            if value.is_empty() {
                return invalid(format!("secrets.{name}: the secret is empty"));
            }
            secrets.insert(
                name.clone(),
                Secret {
                    value,
                    hosts: reference.hosts.clone(),
                },
            );
        }
        let sql = match &self.capabilities.sql {
            None => None,
            Some(grant) => {
                let url = substitute_secrets(&grant.url, &secrets, |_| true).map_err(|e| {
                    RuntimeError::InvalidConfig(format!("capabilities.sql.url: {e}"))
                })?;
                let target = SqlTarget::new(&url).map_err(|e| {
                    RuntimeError::InvalidConfig(format!("capabilities.sql.url: {e}"))
                })?;
                if let Some(path) = target.sqlite_path()
                    && is_reserved(path, reserved_files)
                {
                    return invalid(
                        "capabilities.sql.url: this is oubli's own database, which no plugin may reach".into(),
                    );
                }
                Some(Arc::new(target))
            }
        };
        let mut secret_forms: Vec<Vec<u8>> = secrets
            .values()
            .flat_map(|s| super::capability::http::secret_forms(&s.value))
            .map(String::into_bytes)
            .collect();
        // Longest first, so that a longer form is replaced before a shorter one inside it.
        secret_forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        secret_forms.dedup();
        Ok(PreparedSystem {
            config: self.clone(),
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: memory_mb << 20,
            secrets,
            secret_forms: Arc::new(secret_forms),
            sql,
            hash_key: keyed_hash(pseudonym_key, &format!("oubli system key:{}", self.name)),
        })
    }
}

/// Whether `path` is one of oubli's own files (its database and the database's journal
/// files), compared by canonical path so that another spelling of the name is caught.
fn is_reserved(path: &std::path::Path, reserved: &[std::path::PathBuf]) -> bool {
    let canonical = |p: &std::path::Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| {
            // A file that does not exist yet: its folder's canonical form and its name.
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            match (
                dir.map_or(std::fs::canonicalize("."), std::fs::canonicalize),
                p.file_name(),
            ) {
                (Ok(dir), Some(name)) => dir.join(name),
                _ => p.to_path_buf(),
            }
        })
    };
    let path = canonical(path);
    reserved.iter().any(|r| {
        let r = canonical(r);
        path == r
            || path
                .to_string_lossy()
                .starts_with(&format!("{}-", r.to_string_lossy()))
    })
}

/// HMAC-SHA256 of `value` under `key`.
pub fn keyed_hash(key: &[u8; 32], value: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `text` is `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Replaces every `{{secret:NAME}}` in `text` with the secret's value, provided `allowed`
/// accepts the secret.
///
/// # Errors
/// A message naming the unknown or refused secret.
pub fn substitute_secrets(
    text: &str,
    secrets: &BTreeMap<String, Secret>,
    allowed: impl Fn(&Secret) -> bool,
) -> Result<String, String> {
    const OPEN: &str = "{{secret:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unterminated {{secret:…}} placeholder".to_owned())?;
        let name = &after[..end];
        let secret = secrets
            .get(name)
            .ok_or_else(|| format!("unknown secret {name:?}"))?;
        if !allowed(secret) {
            return Err(format!("secret {name:?} may not be sent to this host"));
        }
        out.push_str(&secret.value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> BTreeMap<String, Secret> {
        BTreeMap::from([(
            "TOKEN".to_owned(),
            Secret {
                value: "s3cr3t".into(),
                hosts: vec![],
            },
        )])
    }

    #[test]
    fn substitutes_known_secrets_only() {
        assert_eq!(
            substitute_secrets("Bearer {{secret:TOKEN}}", &secrets(), |_| true).unwrap(),
            "Bearer s3cr3t"
        );
        assert!(substitute_secrets("{{secret:OTHER}}", &secrets(), |_| true).is_err());
        assert!(substitute_secrets("{{secret:TOKEN}}", &secrets(), |_| false).is_err());
        assert!(substitute_secrets("{{secret:TOKEN", &secrets(), |_| true).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut config = SystemConfig {
            name: "crm".into(),
            ..Default::default()
        };
        config.limits.memory_mb = Some(4096);
        let err = config.prepare(512, &[0; 32], &[]).unwrap_err();
        assert!(err.to_string().contains("limits.memory_mb"), "{err}");
        config.limits.memory_mb = None;
        config.digest = Some("md5:abc".into());
        assert!(
            config
                .prepare(512, &[0; 32], &[])
                .unwrap_err()
                .to_string()
                .contains("digest")
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            SystemConfig::from_toml("name = \"crm\"\n[capabilities]\nfiles = true\n").unwrap_err();
        assert!(err.to_string().contains("files"), "{err}");
    }
}
