//! `oubli audit`, `oubli certificate` and `oubli keys`: checking the evidence offline and
//! managing the keys that sign and seal it.

use super::print;
use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Walk the hash chain of the audit trail and report the first broken link. The
    /// checkpoints left by purges of the access log are checked with the service's
    /// public keys (from its keys folder), or with the keys given.
    Verify {
        /// The service's configuration file, to find its database and keys.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
        /// A public key (base64, as `/v1/keys` serves it) that verifies checkpoints,
        /// instead of the keys folder's; repeat for retired keys.
        #[arg(long = "public-key")]
        public_key: Vec<String>,
        /// A signed head kept from `GET /v1/audit/head`: the trail must still reach it
        /// (repeatable).
        #[arg(long)]
        head: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum CertificateCommand {
    /// Verify a signed erasure certificate offline.
    Verify {
        /// The certificate, as `GET /v1/requests/{id}/certificate` returned it.
        file: PathBuf,
        /// A public key (base64) from `GET /v1/keys`; repeat it for several (current and
        /// retired): the one the certificate names verifies it.
        #[arg(long, required = true)]
        public_key: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Write a new data key (`<data_dir>/keys/data-*.key`): it seals exports from the
    /// next start on; the old keys stay and keep opening what they sealed.
    RotateData {
        /// The service's configuration file, to find its data folder.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a new random key (32 bytes, base64) for the keys given in the environment
    /// (`OUBLI_SIGNING_KEY`, `OUBLI_IDENTITY_HASH_KEY`, `OUBLI_PSEUDONYM_KEY`,
    /// `OUBLI_DATA_KEY`), with the public key and id it gives as a signing key.
    Generate,
    /// Replace the certificate signing key: new certificates are signed with the new key
    /// from the next start on; the old key's public part stays at `/v1/keys` (as
    /// `retired`) and keeps verifying what it signed; its private part is deleted.
    RotateSigning {
        /// The service's configuration file, to find its data folder.
        #[arg(long, env = "OUBLI_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub(super) async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Verify {
        config,
        public_key,
        head,
    } = command;
    audit_verify(config.as_deref(), public_key, &head).await
}

async fn audit_verify(
    config: Option<&Path>,
    mut public_keys: Vec<String>,
    heads: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let mut kept = Vec::with_capacity(heads.len());
    for path in heads {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let head: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        kept.push((path, head));
    }
    let config = crate::config::Config::load(config)?;
    if public_keys.is_empty() {
        public_keys = crate::crypto::public_keys(&config.data_dir.join("keys"), |var| {
            std::env::var(var).ok()
        })?;
    }
    let store = crate::store::Store::open(&config.database_location()).await?;
    let events = crate::audit::all(&store).await?;
    store.close().await;
    match crate::audit::first_broken(&events, &public_keys) {
        None => {
            for (path, head) in &kept {
                if let Err(reason) = crate::audit::check_head(&events, head, &public_keys) {
                    let message = format!("{}: {reason}", path.display());
                    print(
                        &json!({ "valid": false, "events": events.len(), "head": path, "message": message }),
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
            print(
                &json!({ "valid": true, "events": events.len(), "heads": kept.len(), "last_hash": events.last().map(|e| &e.hash) }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(broken) => {
            let message = format!(
                "the chain breaks at event {}: {}",
                broken.seq, broken.reason
            );
            print(
                &json!({ "valid": false, "events": events.len(), "first_broken": broken.seq, "message": message }),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn certificate(command: CertificateCommand) -> anyhow::Result<ExitCode> {
    let CertificateCommand::Verify { file, public_key } = command;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let signed: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    match crate::crypto::verify(&signed, &public_key) {
        Ok(()) => {
            print(
                &json!({ "valid": true, "request_id": signed["certificate"]["request"]["id"], "key_id": signed["signature"]["key_id"] }),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(invalid) => {
            print(&json!({ "valid": false, "reason": invalid.to_string() }));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(super) fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::RotateData { config } => {
            let config = crate::config::Config::load(config.as_deref())?;
            let (key_id, path) = crate::crypto::seal::rotate(&config.data_dir.join("keys"))?;
            print(
                &json!({ "key_id": key_id, "file": path, "note": "restart oubli to seal with the new key; keep the old ones to open what they sealed" }),
            );
        }
        KeysCommand::Generate => print(&crate::crypto::generate()),
        KeysCommand::RotateSigning { config } => {
            let config = crate::config::Config::load(config.as_deref())?;
            let (retired, current) = crate::crypto::rotate_signing(&config.data_dir.join("keys"))?;
            print(
                &json!({ "retired_key_id": retired, "key_id": current, "note": "restart oubli to sign with the new key; the retired key keeps verifying at /v1/keys" }),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
