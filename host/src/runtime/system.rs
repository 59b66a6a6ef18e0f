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
    #[schema(minimum = 1, maximum = 600_000)]
    pub timeout_ms: Option<u64>,
    /// Memory cap of one instance, in MiB (default 64; at most the host's `max_memory_mb`).
    #[schema(minimum = 1)]
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

/// What a plugin's calls for one connected system may use: its configuration checked,
/// its limits, its secrets resolved, its database pool (created lazily). Made by
/// [`crate::runtime::Runtime::prepare`]; every call takes one.
#[derive(Debug)]
pub struct Grant {
    pub config: SystemConfig,
    pub timeout: Duration,
    pub memory_bytes: u64,
    pub secrets: BTreeMap<String, Secret>,
    /// Every form of every secret, none of which may reach the guest.
    pub secret_forms: Arc<SecretForms>,
    pub sql: Option<Arc<SqlTarget>>,
    /// The key of this system's `keyed-hash`.
    pub hash_key: [u8; 32],
    /// Each `config` entry as the plugin reads it (`host.config`): a string as it is,
    /// anything else as JSON, written once here rather than at every call.
    pub config_text: BTreeMap<String, String>,
    /// What the plugin keeps between its calls on this system (`memo`); it goes with
    /// the grant when the configuration or plugin changes.
    pub memo: crate::runtime::capability::memo::Memo,
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
        reserved_databases: &[String],
    ) -> Result<Grant, RuntimeError> {
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
                if reserved_databases.iter().any(|r| target.is_database(r)) {
                    return invalid(
                        "capabilities.sql.url: this is oubli's own database, which no plugin may reach".into(),
                    );
                }
                Some(Arc::new(target))
            }
        };
        let secret_forms = SecretForms::of(secrets.values());
        Ok(Grant {
            config: self.clone(),
            timeout: Duration::from_millis(timeout_ms),
            memory_bytes: memory_mb << 20,
            secrets,
            secret_forms: Arc::new(secret_forms),
            sql,
            hash_key: keyed_hash(pseudonym_key, &format!("oubli system key:{}", self.name)),
            config_text: self
                .config
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    (key.clone(), text)
                })
                .collect(),
            memo: Default::default(),
        })
    }
}

/// Every form in which a system's secrets could come back to its plugin: verbatim,
/// percent-encoded, and base64 or base64url at each of the three byte alignments (a secret
/// inside a longer encoded value, such as `Basic base64(user:secret)`). Responses, log
/// lines and results are checked against all of them.
#[derive(Debug, Default)]
pub struct SecretForms {
    /// Longest first, so that a longer form is replaced before a shorter one inside it.
    forms: Vec<memchr::memmem::Finder<'static>>,
}

impl SecretForms {
    pub fn of<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut forms: Vec<Vec<u8>> = secrets
            .into_iter()
            .flat_map(|s| forms_of(&s.value))
            .map(String::into_bytes)
            .collect();
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        SecretForms {
            forms: forms
                .into_iter()
                .map(|f| memchr::memmem::Finder::new(&f).into_owned())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Whether `bytes` hold a secret in any of its forms.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.forms.iter().any(|f| f.find(bytes).is_some())
    }

    /// Replaces every form of every secret in `bytes`; whether anything was replaced.
    /// One pass per form, each copying the bytes once, whatever the number of matches.
    pub fn scrub(&self, bytes: &mut Vec<u8>) -> bool {
        const REDACTED: &[u8] = b"[redacted by oubli]";
        let mut changed = false;
        for form in &self.forms {
            let mut matches = form.find_iter(bytes).peekable();
            if matches.peek().is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(bytes.len());
            let mut from = 0;
            for at in matches {
                // Overlapping matches of a form with itself: the first one covers both.
                if at < from {
                    continue;
                }
                out.extend_from_slice(&bytes[from..at]);
                out.extend_from_slice(REDACTED);
                from = at + form.needle().len();
            }
            out.extend_from_slice(&bytes[from..]);
            *bytes = out;
            changed = true;
        }
        changed
    }

    /// [`Self::scrub`] for text.
    pub fn scrub_text(&self, text: &str) -> String {
        let mut bytes = text.as_bytes().to_vec();
        if !self.scrub(&mut bytes) {
            return text.to_owned();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn forms_of(secret: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut forms = vec![
        secret.to_owned(),
        percent.to_ascii_lowercase(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        percent,
    ];
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret.as_bytes());
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            // Drop the characters that also encode the padding before the secret and
            // whatever follows it: they depend on the surrounding bytes.
            let skip = (offset * 8).div_ceil(6);
            let keep = (padded.len() * 8) / 6;
            if keep > skip + 4 {
                forms.push(encoded[skip..keep].to_owned());
            }
        }
    }
    forms.retain(|f| f.len() >= 4);
    forms
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

/// Replaces every `{{secret:NAME}}` in `text` with the secret's value, and every
/// `{{basic:USER:NAME}}` with the base64 of `USER:` and the secret's value (HTTP Basic
/// credentials, RFC 7617), provided `allowed` accepts the secret.
///
/// # Errors
/// A message naming the unknown or refused secret.
pub fn substitute_secrets(
    text: &str,
    secrets: &BTreeMap<String, Secret>,
    allowed: impl Fn(&Secret) -> bool,
) -> Result<String, String> {
    substitute(text, secrets, allowed, |value| value.to_owned())
}

/// As [`substitute_secrets`] for a URL's query string, the values percent-encoded. Only
/// placeholders written as they are count: a plugin percent-encodes the values it puts in
/// a query (an identity typed as `{{secret:…}}` arrives as `%7B%7Bsecret%3A…`), and the SDK
/// encodes braces in the URLs a server hands it, so neither a data subject's identity
/// nor a server can ask for a secret. The caller allows only secrets bound to hosts.
///
/// # Errors
/// As [`substitute_secrets`].
pub fn substitute_secrets_in_query(
    query: &str,
    secrets: &BTreeMap<String, Secret>,
    allowed: impl Fn(&Secret) -> bool,
) -> Result<String, String> {
    substitute(query, secrets, allowed, |value| {
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
    })
}

/// Whether `text` holds a secret placeholder.
pub fn has_placeholder(text: &str) -> bool {
    text.contains("{{secret:") || text.contains("{{basic:")
}

fn substitute(
    text: &str,
    secrets: &BTreeMap<String, Secret>,
    allowed: impl Fn(&Secret) -> bool,
    encode: impl Fn(&str) -> String,
) -> Result<String, String> {
    use base64::Engine;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["{{secret:", "{{basic:"]
            .iter()
            .filter_map(|open| rest.find(open).map(|at| (at, *open)))
            .min();
        let Some((start, open)) = next else { break };
        out.push_str(&rest[..start]);
        let after = &rest[start + open.len()..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated {open}…}}}} placeholder"))?;
        let inside = &after[..end];
        let (user, name) = if open == "{{basic:" {
            let (user, name) = inside.rsplit_once(':').ok_or_else(|| {
                "a {{basic:USER:SECRET}} placeholder needs a user and a secret".to_owned()
            })?;
            (Some(user), name)
        } else {
            (None, inside)
        };
        // An unknown name is not quoted: it may be a credential written where a name
        // belongs, which must not end up in a log or an answer.
        let secret = secrets.get(name).ok_or_else(|| {
            "a placeholder names a secret the system does not have (see its [secrets])".to_owned()
        })?;
        if !allowed(secret) {
            // A name the system's configuration holds: safe to say.
            return Err(format!("secret {name:?} may not be sent to this host"));
        }
        match user {
            Some(user) => out.push_str(&encode(
                &base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", secret.value)),
            )),
            None => out.push_str(&encode(&secret.value)),
        }
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
        // HTTP Basic: base64 of "user:" and the secret.
        use base64::Engine;
        let basic = substitute_secrets("Basic {{basic:svc:TOKEN}}", &secrets(), |_| true).unwrap();
        let encoded = basic.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert!(String::from_utf8(decoded).unwrap().starts_with("svc:"));
        assert!(substitute_secrets("{{basic:TOKEN}}", &secrets(), |_| true).is_err());
        assert!(substitute_secrets("{{basic:svc:TOKEN}}", &secrets(), |_| false).is_err());
        // In a query string, as written or percent-encoded, the value percent-encoded.
        let query =
            substitute_secrets_in_query("a=1&key={{secret:TOKEN}}", &secrets(), |_| true).unwrap();
        assert!(
            query.starts_with("a=1&key=") && !query.contains("secret"),
            "{query}"
        );
        let typed = "email=%7B%7Bsecret%3ATOKEN%7D%7D";
        assert_eq!(
            substitute_secrets_in_query(typed, &secrets(), |_| true).unwrap(),
            typed,
            "an encoded identity value is not a placeholder"
        );
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

    #[test]
    fn every_form_of_a_secret_is_scrubbed() {
        use base64::Engine;
        let secret = "s3cr3t-token/value+1";
        let forms = SecretForms::of([&Secret {
            value: secret.into(),
            hosts: vec![],
        }]);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for echoed in [
            format!("authorization: Bearer {secret}"),
            format!("Basic {}", b64(&format!("user:{secret}"))),
            format!("Basic {}", b64(&format!("ab:{secret}"))),
            format!("Basic {}", b64(&format!("a:{secret}"))),
            format!(
                "q={}",
                url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
            ),
            format!("{{\"token\":\"{}\"}}", b64(secret)),
        ] {
            assert!(forms.found_in(echoed.as_bytes()), "{echoed}");
            let mut bytes = echoed.clone().into_bytes();
            assert!(forms.scrub(&mut bytes), "{echoed}");
            let text = String::from_utf8(bytes).unwrap();
            assert!(!text.contains(secret), "{text}");
            assert!(!forms.found_in(text.as_bytes()), "{text}");
        }
        let mut clean = b"nothing to see".to_vec();
        assert!(!forms.scrub(&mut clean));
    }
}
