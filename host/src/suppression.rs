//! Suppression lists: per controller and opt-in, the people who must not be contacted
//! again (they were erased, or objected under Art. 21), kept as keyed hashes of their
//! identities, never the identities.
//!
//! An identity is first normalised by its kind ([`normalise`]: an e-mail address trimmed
//! and lowercased; a phone number in E.164, read in the list's region when written
//! without its country code; any other value trimmed, its blanks collapsed, lowercased),
//! then hashed with SHA-256 ([`digest`]: the form a client may send instead of the
//! value), then keyed with the service's identity hash key ([`Entry::of`]): only the
//! keyed hash is stored, so a stolen database cannot be searched for an address.
//!
//! The hashes an erasure or an objection will add are made when it is submitted, while
//! its identities are in clear, and stored with the request
//! (`requests.suppression_hashes`); the entries are written when the erasure completes
//! or the objection is approved ([`record`]), in that step's transaction, and the
//! request's copy is dropped then, or when it is rejected, cancelled or redacted.

use crate::audit;
use crate::crypto::Keys;
use crate::store::{Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// A controller's suppression list settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Settings {
    /// What the list is for, as the controller states it (e.g. "no marketing e-mail or
    /// call after an erasure or an objection").
    pub purpose: String,
    /// The region (ISO 3166 alpha-2, e.g. `FR`) a phone number written without its
    /// country code is read in; without it such a number cannot be matched.
    pub phone_region: Option<String>,
    /// How many entries the list holds.
    pub entries: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A controller's list as submissions and checks use it: no count of its entries.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Kept {
    pub purpose: String,
    pub phone_region: Option<String>,
    /// See [`fingerprint`].
    pub key_fingerprint: String,
}

/// What says which identity hash key a list's entries are keyed with: a MAC of a
/// constant under it. A list whose fingerprint is not the current key's cannot be
/// matched (the key was changed), and is refused rather than answered "not suppressed".
pub fn fingerprint(keys: &Keys) -> String {
    keys.identity_hash("suppression-key", "fingerprint")
}

/// One identity as it goes on a list: its kind and its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub kind: String,
    pub hash: String,
}

/// Why an identity cannot be put on a list or checked against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the value is blank")]
    Blank,
    #[error(
        "not a phone number that can be read{}",
        if *.0 { "" } else { " (a number without its country code needs the list's phone_region)" }
    )]
    Phone(bool),
    #[error("a SHA-256 digest is 64 hexadecimal characters")]
    Digest,
}

/// An identity's value in the one form the list compares: see the module's text.
///
/// # Errors
/// A blank value, or a phone number that cannot be read.
pub fn normalise(kind: &str, value: &str, region: Option<&str>) -> Result<String, Unreadable> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Unreadable::Blank);
    }
    match kind {
        "email" => Ok(value.to_lowercase()),
        "phone" => {
            let country = region.and_then(|r| {
                r.to_ascii_uppercase()
                    .parse::<phonenumber::country::Id>()
                    .ok()
            });
            let number = phonenumber::parse(country, value)
                .map_err(|_| Unreadable::Phone(region.is_some()))?;
            if !phonenumber::is_valid(&number) {
                return Err(Unreadable::Phone(region.is_some()));
            }
            Ok(number.format().mode(phonenumber::Mode::E164).to_string())
        }
        _ => Ok(value
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()),
    }
}

/// The SHA-256 of a normalised value, lowercase hex: what a client may send instead of
/// the value.
pub fn digest(normalised: &str) -> String {
    hex::encode(Sha256::digest(normalised.as_bytes()))
}

/// A client's digest, checked and lowercased.
///
/// # Errors
/// When it is not 64 hexadecimal characters.
pub fn parse_digest(text: &str) -> Result<String, Unreadable> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(Unreadable::Digest)
    }
}

impl Entry {
    /// The entry of an identity whose normalised value has `digest`.
    pub fn of(keys: &Keys, kind: &str, digest: &str) -> Entry {
        Entry {
            kind: kind.to_owned(),
            hash: keys.identity_hash(&format!("suppression:{kind}"), digest),
        }
    }

    /// The entry of an identity given in clear.
    ///
    /// # Errors
    /// As [`normalise`].
    pub fn of_value(
        keys: &Keys,
        kind: &str,
        value: &str,
        region: Option<&str>,
    ) -> Result<Entry, Unreadable> {
        Ok(Entry::of(
            keys,
            kind,
            &digest(&normalise(kind, value, region)?),
        ))
    }
}

/// A region code the phone reader knows.
pub fn is_region(code: &str) -> bool {
    code.len() == 2
        && code
            .to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .is_ok()
}

type SettingsRow = (String, Option<String>, i64, i64, i64);

/// A controller's list, `None` when it keeps none.
///
/// # Errors
/// When the database cannot be read.
pub async fn kept(store: &Store, controller_id: &str) -> sqlx::Result<Option<Kept>> {
    sqlx::query_as(
        "SELECT purpose, phone_region, key_fingerprint FROM suppression_lists WHERE controller_id = $1",
    )
    .bind(controller_id)
    .fetch_optional(&store.read)
    .await
}

/// A controller's list settings with the number of its entries, `None` when it keeps no
/// list.
///
/// # Errors
/// When the database cannot be read.
pub async fn settings(store: &Store, controller_id: &str) -> sqlx::Result<Option<Settings>> {
    let row: Option<SettingsRow> = sqlx::query_as(
        "SELECT purpose, phone_region, created_at, updated_at, \
         (SELECT COUNT(*) FROM suppression_entries e WHERE e.controller_id = l.controller_id) \
         FROM suppression_lists l WHERE controller_id = $1",
    )
    .bind(controller_id)
    .fetch_optional(&store.read)
    .await?;
    Ok(row.map(
        |(purpose, phone_region, created, updated, entries)| Settings {
            purpose,
            phone_region,
            entries: entries.max(0) as u64,
            created_at: to_rfc3339(created),
            updated_at: to_rfc3339(updated),
        },
    ))
}

/// Starts a controller's list or changes its purpose or region, and records it.
///
/// # Errors
/// When the database fails.
pub async fn set(
    tx: &mut Tx<'_>,
    controller_id: &str,
    purpose: &str,
    phone_region: Option<&str>,
    key_fingerprint: &str,
    actor: &str,
) -> sqlx::Result<()> {
    let now = now_ms();
    // A list keeps the fingerprint of the key it was started with.
    sqlx::query(
        "INSERT INTO suppression_lists (controller_id, purpose, phone_region, created_at, updated_at, key_fingerprint) VALUES ($1, $2, $3, $4, $4, $5) \
         ON CONFLICT (controller_id) DO UPDATE SET purpose = excluded.purpose, phone_region = excluded.phone_region, updated_at = excluded.updated_at",
    )
    .bind(controller_id)
    .bind(purpose)
    .bind(phone_region)
    .bind(now)
    .bind(key_fingerprint)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        actor,
        "suppression.configured",
        None,
        serde_json::json!({ "controller_id": controller_id, "purpose": purpose, "phone_region": phone_region }),
    );
    Ok(())
}

/// Ends a controller's list and deletes its entries, and records it. Returns how many
/// entries were deleted, `None` when there was no list.
///
/// # Errors
/// When the database fails.
pub async fn end(
    tx: &mut Tx<'_>,
    controller_id: &str,
    reason: &str,
    actor: &str,
) -> sqlx::Result<Option<u64>> {
    let ended = sqlx::query("DELETE FROM suppression_lists WHERE controller_id = $1")
        .bind(controller_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if ended == 0 {
        return Ok(None);
    }
    let entries = sqlx::query("DELETE FROM suppression_entries WHERE controller_id = $1")
        .bind(controller_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    audit::append(
        tx,
        actor,
        "suppression.ended",
        None,
        serde_json::json!({ "controller_id": controller_id, "entries_deleted": entries, "reason": reason }),
    );
    Ok(Some(entries))
}

/// Forgets what a request would put on a list (it was rejected or cancelled, or
/// [`record`] put it there).
///
/// # Errors
/// When the database fails.
pub async fn forget(tx: &mut Tx<'_>, request_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE requests SET suppression_hashes = NULL WHERE id = $1")
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Whether a controller keeps a list, read in a transaction.
///
/// # Errors
/// When the database cannot be read.
pub async fn kept_in(tx: &mut Tx<'_>, controller_id: &str) -> sqlx::Result<bool> {
    let kept: Option<String> = sqlx::query_scalar(&format!(
        "SELECT controller_id FROM suppression_lists WHERE controller_id = $1{}",
        crate::store::for_share(tx)
    ))
    .bind(controller_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(kept.is_some())
}

/// Puts on its controller's list the entries stored with a request that completed (an
/// erasure carried out, an objection approved), if it has entries (it was submitted while
/// the controller kept a list) and the controller still keeps a list, and records how
/// many, the request's kind being the reason; the request's copy of the entries goes.
/// Returns how many entries were new, `None` when nothing was to be recorded.
///
/// # Errors
/// When the database fails.
pub async fn record(tx: &mut Tx<'_>, request_id: &str, actor: &str) -> anyhow::Result<Option<u64>> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT controller_id, kind, suppression_hashes FROM requests WHERE id = $1",
    )
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((controller_id, reason, Some(stored))) = row else {
        return Ok(None);
    };
    // The list is read under a share lock (PostgreSQL): ending it at the same time waits
    // for this transaction, and then deletes the entries it adds.
    let list: Option<String> = sqlx::query_scalar(&format!(
        "SELECT purpose FROM suppression_lists WHERE controller_id = $1{}",
        crate::store::for_share(tx)
    ))
    .bind(&controller_id)
    .fetch_optional(&mut **tx)
    .await?;
    // On the list now, or nowhere to go: not kept twice.
    forget(tx, request_id).await?;
    if list.is_none() {
        // The list was ended after the request was submitted: nothing goes on it, and the
        // trail says so. An objection has nothing else to do, so it cannot complete.
        anyhow::ensure!(
            reason != "objection",
            "an objection cannot complete without a suppression list to record it on"
        );
        audit::append(
            tx,
            actor,
            "suppression.not_added",
            Some(request_id),
            serde_json::json!({ "controller_id": controller_id, "reason": "the controller's suppression list was ended after the request was submitted" }),
        );
        return Ok(None);
    }
    let entries: Vec<Entry> = serde_json::from_str(&stored)?;
    let now = now_ms();
    let mut added = 0;
    for entry in &entries {
        added += sqlx::query(
            "INSERT INTO suppression_entries (controller_id, hash, kind, reason, request_id, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (controller_id, hash) DO NOTHING",
        )
        .bind(&controller_id)
        .bind(&entry.hash)
        .bind(&entry.kind)
        .bind(&reason)
        .bind(request_id)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    audit::append(
        tx,
        actor,
        "suppression.added",
        Some(request_id),
        serde_json::json!({ "controller_id": controller_id, "reason": reason, "identity_kinds": kinds, "new_entries": added }),
    );
    Ok(Some(added))
}

/// Which of `hashes` are on a controller's list.
///
/// # Errors
/// When the database cannot be read.
pub async fn listed(
    store: &Store,
    controller_id: &str,
    hashes: &[&str],
) -> sqlx::Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in hashes.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT hash FROM suppression_entries WHERE controller_id = $1 AND hash IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql).bind(controller_id);
        for hash in chunk {
            query = query.bind(*hash);
        }
        found.extend(query.fetch_all(&store.read).await?);
    }
    Ok(found)
}

/// Every hash on a controller's list, for a bulk check.
///
/// # Errors
/// When the database cannot be read.
pub async fn all(store: &Store, controller_id: &str) -> sqlx::Result<HashSet<String>> {
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT hash FROM suppression_entries WHERE controller_id = $1")
            .bind(controller_id)
            .fetch_all(&store.read)
            .await?;
    Ok(hashes.into_iter().collect())
}

/// Takes entries off a controller's list, and records why. Returns how many were there.
///
/// # Errors
/// When the database fails.
pub async fn remove(
    tx: &mut Tx<'_>,
    controller_id: &str,
    entries: &[Entry],
    reason: &str,
    actor: &str,
) -> sqlx::Result<u64> {
    let mut removed = 0;
    for entry in entries {
        removed +=
            sqlx::query("DELETE FROM suppression_entries WHERE controller_id = $1 AND hash = $2")
                .bind(controller_id)
                .bind(&entry.hash)
                .execute(&mut **tx)
                .await?
                .rows_affected();
    }
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    audit::append(
        tx,
        actor,
        "suppression.removed",
        None,
        serde_json::json!({ "controller_id": controller_id, "identity_kinds": kinds, "removed": removed, "reason": reason }),
    );
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_or_number_normalise_alike() {
        assert_eq!(
            normalise("email", "  Jane.Doe@Example.COM ", None),
            Ok("jane.doe@example.com".into())
        );
        let e164 = Ok("+33612345678".to_owned());
        for written in [
            "+33 6 12 34 56 78",
            "+33.6.12.34.56.78",
            "+33 (0)6 12-34-56-78",
        ] {
            assert_eq!(normalise("phone", written, None), e164, "{written}");
        }
        assert_eq!(normalise("phone", "0033 6 12 34 56 78", Some("FR")), e164);
        assert_eq!(normalise("phone", "06 12 34 56 78", Some("fr")), e164);
        assert_eq!(
            normalise("phone", "06 12 34 56 78", None),
            Err(Unreadable::Phone(false))
        );
        assert_eq!(
            normalise("phone", "not a number", Some("FR")),
            Err(Unreadable::Phone(true))
        );
        assert_eq!(
            normalise("name", " Jane   DOE ", None),
            Ok("jane doe".into())
        );
        assert_eq!(normalise("email", "   ", None), Err(Unreadable::Blank));
    }

    #[test]
    fn a_digest_is_checked_and_the_keyed_hash_depends_on_the_kind() {
        let d = digest("jane.doe@example.com");
        assert_eq!(parse_digest(&d.to_uppercase()), Ok(d.clone()));
        assert_eq!(parse_digest("abc"), Err(Unreadable::Digest));
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let email = Entry::of(&keys, "email", &d);
        assert_eq!(
            Entry::of_value(&keys, "email", "JANE.doe@example.com ", None),
            Ok(email.clone())
        );
        assert_ne!(Entry::of(&keys, "name", &d).hash, email.hash);
        let other = tempfile::tempdir().unwrap();
        let other = Keys::load_or_create(other.path()).unwrap();
        assert_ne!(Entry::of(&other, "email", &d), email, "the hash is keyed");
    }
}
