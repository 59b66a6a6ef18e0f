//! The service configuration: a TOML file, then `OUBLI_<KEY>` environment variables
//! over it (`OUBLI_LISTEN=127.0.0.1:9000`, `OUBLI_WORKERS=8`, …).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How `oubli serve` runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address the API listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The folder for the database, the compiled-plugin cache and the demo CRM.
    pub data_dir: PathBuf,
    /// The database: an SQLite file path (`<data_dir>/oubli.db` when unset), or a
    /// `postgres://` URL, which any number of API and worker processes can share.
    pub database: Option<String>,
    /// The URL controllers reach the API at, used in webhook payloads.
    pub public_url: Option<String>,
    /// Tasks run at once in this process.
    pub workers: usize,
    /// A task's lease; a worker renews it every third of it while the task runs.
    pub lease_secs: u64,
    /// Attempts of a task before a retryable failure becomes final.
    pub max_attempts: u32,
    /// First retry delay; it doubles with each attempt, with jitter, up to the cap.
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// Delivery attempts of a webhook before it is given up.
    pub webhook_max_attempts: u32,
    /// How long shutdown waits for running tasks before handing their leases back.
    pub shutdown_grace_secs: u64,
    /// On a new database, create a demo controller, a demo CRM system and tokens.
    pub demo: bool,
    /// Customers in the demo CRM.
    pub demo_customers: u64,
    /// Days an access package can be downloaded after its request completed; its records
    /// are deleted then.
    pub package_ttl_days: u64,
    /// Days a closed request keeps its subject's identities and new values; they are
    /// replaced by keyed hashes then.
    pub subject_retention_days: u64,
    /// Days access-log events (reads of requests, lists and packages) stay in the audit
    /// trail; they are purged then, leaving a signed checkpoint.
    pub access_log_retention_days: u64,
    /// How often the purge job runs.
    pub purge_interval_secs: u64,
    /// The work a connector's `sweep` may do after an erasure (statements or requests),
    /// for connectors of contract 0.2 that sweep; a sweep that runs out says so.
    pub sweep_budget: u32,
    /// Which of its connector's checks an erasure runs after `erase`: `all` (verify by
    /// key and sweep, where the connector offers them), `verify` (no sweep) or `search`
    /// (a verifying `locate` only). Certificates say which ran.
    pub erasure_checks: ErasureChecks,
    /// Hours an approval link works after its request was forwarded.
    pub approval_link_hours: u64,
    /// Hours a console sign-in lasts.
    pub console_session_hours: u64,
    /// Days before a request's due date its controller is reminded, by e-mail, of a
    /// request still awaiting its decision.
    pub reminder_days: u64,
    /// Seconds a client has to send a request's headers, and the longest a connection
    /// may wait idle for its next request; it is closed then.
    pub http_header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub http_body_timeout_secs: u64,
    /// Connections served at once; more wait to be accepted. oubli raises its open-file
    /// limit at start, and lowers this to half of it if the system allows fewer.
    pub max_connections: usize,
    /// Addresses of reverse proxies in front of oubli: for a connection from one of them,
    /// the client is the last address in `X-Forwarded-For` that is not a trusted proxy
    /// (throttling counts per client). Empty: the connection's address is the client's.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Failed authentications from one client within a minute after which it is refused
    /// (429) for the rest of that minute; the console's sign-in counts apart.
    pub auth_failure_limit: u32,
    /// E-mail over SMTP; none is sent when unset.
    pub smtp: Option<Smtp>,
    /// When set, `/metrics` answers only requests bearing this token.
    pub metrics_token: Option<String>,
    /// The domain oubli signs OpenDSR answers and callbacks for (`X-OpenDSR-Processor-
    /// Domain`); the host of `public_url` when unset.
    pub opendsr_domain: Option<String>,
    /// A PEM X.509 certificate issued to that domain by a trusted authority, and its RSA
    /// private key (PEM, PKCS#8 or PKCS#1), for OpenDSR signatures. Unset: oubli makes a
    /// self-signed pair in `data_dir` on first use, which controllers that check the
    /// issuer (as the specification asks) refuse.
    pub opendsr_certificate: Option<String>,
    pub opendsr_key: Option<String>,
    /// Whether OpenDSR status callbacks may go to loopback, private or link-local
    /// addresses (refused by default: a controller's URL must not reach oubli's network).
    pub opendsr_private_callbacks: bool,
}

/// How oubli sends e-mail (`[smtp]` in the configuration file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// The SMTP server's host name.
    pub host: String,
    /// 587 for `starttls` (the default), 465 for `tls`.
    pub port: Option<u16>,
    /// `starttls` (the default), `tls` (implicit TLS), or `none` (plain text: only for a
    /// relay on the same machine).
    #[serde(default)]
    pub security: SmtpSecurity,
    /// The user name, when the server wants one.
    pub username: Option<String>,
    /// The password; `OUBLI_SMTP_PASSWORD` sets it without writing it in the file.
    pub password: Option<String>,
    /// The sender, e.g. `oubli <dsr@example.org>`.
    pub from: String,
    /// Where the notices for DPOs go when the token that filed a request has no e-mail
    /// address of its own.
    pub dpo: Option<String>,
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

/// Which checks an erasure runs after `erase` (see [`Config::erasure_checks`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ErasureChecks {
    #[default]
    All,
    Verify,
    Search,
}

impl ErasureChecks {
    /// The setting's value, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureChecks::All => "all",
            ErasureChecks::Verify => "verify",
            ErasureChecks::Search => "search",
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("oubli-data"),
            database: None,
            public_url: None,
            workers: 4,
            lease_secs: 60,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
            webhook_max_attempts: 12,
            shutdown_grace_secs: 30,
            demo: true,
            demo_customers: 1_000,
            package_ttl_days: 30,
            subject_retention_days: 90,
            access_log_retention_days: 183,
            purge_interval_secs: 3_600,
            sweep_budget: 1_000,
            erasure_checks: ErasureChecks::All,
            approval_link_hours: 31 * 24,
            console_session_hours: 8,
            reminder_days: 7,
            http_header_timeout_secs: 10,
            http_body_timeout_secs: 60,
            max_connections: 1_024,
            trusted_proxies: Vec::new(),
            auth_failure_limit: 10,
            smtp: None,
            metrics_token: None,
            opendsr_domain: None,
            opendsr_certificate: None,
            opendsr_key: None,
            opendsr_private_callbacks: false,
        }
    }
}

/// Settings that are text, also when they look like a number, and that are unset by
/// default (so the default configuration does not list them).
const TEXT_SETTINGS: [&str; 6] = [
    "database",
    "public_url",
    "metrics_token",
    "opendsr_domain",
    "opendsr_certificate",
    "opendsr_key",
];

impl Config {
    /// The base of the links oubli gives out (webhooks, e-mails): `public_url`, or the
    /// listening address.
    pub fn base_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// How the runs of tasks back off: after a retryable failure, and after an
    /// interrupted run.
    pub fn task_backoff(&self) -> crate::retry::Backoff {
        crate::retry::Backoff {
            base: std::time::Duration::from_millis(self.backoff_base_ms),
            cap: std::time::Duration::from_millis(self.backoff_cap_ms),
        }
    }

    /// Reads the file (when given), then applies the `OUBLI_<KEY>` environment variables.
    ///
    /// # Errors
    /// Naming the file, the variable or the key at fault.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Config::load_with(file, |var| std::env::var(var).ok())
    }

    /// [`Config::load`] with the `OUBLI_<KEY>` settings read from `var` instead of the
    /// environment (an in-process service, a test).
    ///
    /// # Errors
    /// Naming the file, the variable or the key at fault.
    pub fn load_with(
        file: Option<&Path>,
        var: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        let known =
            toml::Table::try_from(Config::default()).context("the default configuration")?;
        let keys: Vec<String> = known
            .keys()
            .cloned()
            .chain(TEXT_SETTINGS.map(str::to_owned))
            .collect();
        for key in keys {
            let Some(text) = var(&format!("OUBLI_{}", key.to_ascii_uppercase())) else {
                continue;
            };
            // A number or boolean is read as TOML; anything else as a string, and always
            // for the settings that are text (a token of digits stays text).
            let text_only = TEXT_SETTINGS.contains(&key.as_str());
            let value = format!("v = {text}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_str() && !text_only)
                .unwrap_or(toml::Value::String(text));
            table.insert(key, value);
        }
        if let (Some(password), Some(toml::Value::Table(smtp))) =
            (var("OUBLI_SMTP_PASSWORD"), table.get_mut("smtp"))
        {
            smtp.insert("password".into(), toml::Value::String(password));
        }
        let config: Config = table.try_into().context("invalid configuration")?;
        anyhow::ensure!(
            config.http_header_timeout_secs >= 1
                && config.http_body_timeout_secs >= 1
                && config.max_connections >= 1
                && config.auth_failure_limit >= 1,
            "http_header_timeout_secs, http_body_timeout_secs, max_connections, auth_failure_limit: at least 1"
        );
        anyhow::ensure!(
            config.approval_link_hours >= 1 && config.console_session_hours >= 1,
            "approval_link_hours, console_session_hours: at least one hour"
        );
        if let Some(smtp) = &config.smtp {
            anyhow::ensure!(
                smtp.from.parse::<lettre::message::Mailbox>().is_ok(),
                "smtp.from: {:?} is not an e-mail address (`Name <address>` or `address`)",
                smtp.from
            );
            if let Some(dpo) = &smtp.dpo {
                anyhow::ensure!(
                    dpo.parse::<lettre::message::Mailbox>().is_ok(),
                    "smtp.dpo: {dpo:?} is not an e-mail address"
                );
            }
        }
        anyhow::ensure!(
            config.opendsr_certificate.is_some() == config.opendsr_key.is_some(),
            "opendsr_certificate and opendsr_key go together: a certificate and its key"
        );
        anyhow::ensure!(
            config.workers >= 1,
            "workers: at least one worker is needed"
        );
        anyhow::ensure!(
            config.lease_secs >= 3,
            "lease_secs: a lease shorter than 3 s expires before it can be renewed"
        );
        anyhow::ensure!(
            config.max_attempts >= 1,
            "max_attempts: at least one attempt is needed"
        );
        Ok(config)
    }

    /// The database: a `postgres://` URL or an SQLite file path.
    pub fn database_location(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            self.data_dir
                .join("oubli.db")
                .to_string_lossy()
                .into_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/oubli.toml");
        let config = Config::load(Some(&example)).unwrap();
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://dsr.example.org")
        );
    }

    #[test]
    fn the_file_is_read_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oubli.toml");
        std::fs::write(&path, "workers = 2\nlisten = \"127.0.0.1:9999\"\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.workers, 2);
        assert_eq!(config.listen.port(), 9999);
        std::fs::write(&path, "wrokers = 2\n").unwrap();
        let error = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(error.contains("wrokers"), "{error}");
    }
}
