//! The audit trail: an append-only list of events, each carrying the hash of the one
//! before, appended in the same transaction as the change it records.

use crate::store::{Tx, now_ms};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The hash the first event chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event of the trail.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub seq: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// Who: `token:<id>`, `worker:<id>`, `system`.
    pub actor: String,
    /// What, e.g. `request.approved`.
    pub action: String,
    pub request_id: Option<String>,
    /// Details as JSON text.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

fn hash(
    prev: &str,
    at: i64,
    actor: &str,
    action: &str,
    request_id: Option<&str>,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &at.to_string(),
        actor,
        action,
        request_id.unwrap_or(""),
        details,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The end of the chain inside one transaction, for appending several events with one
/// read. Any event appended by other means in the same transaction makes it stale: load
/// it again then.
#[derive(Debug, Clone)]
pub struct Chain {
    prev: String,
}

impl Chain {
    /// Reads the hash of the last event.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub async fn load(tx: &mut Tx<'_>) -> sqlx::Result<Chain> {
        crate::store::lock_trail(tx).await?;
        let prev: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut **tx)
                .await?;
        Ok(Chain {
            prev: prev.unwrap_or_else(|| GENESIS.to_owned()),
        })
    }

    /// Appends an event after the last one.
    ///
    /// # Errors
    /// When the database write fails; the caller's transaction then fails as a whole.
    pub async fn append(
        &mut self,
        tx: &mut Tx<'_>,
        actor: &str,
        action: &str,
        request_id: Option<&str>,
        details: serde_json::Value,
    ) -> sqlx::Result<()> {
        let at = now_ms();
        let details = details.to_string();
        let hash = hash(&self.prev, at, actor, action, request_id, &details);
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, request_id, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(request_id)
        .bind(details)
        .bind(&self.prev)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        self.prev = hash;
        Ok(())
    }
}

/// Appends an event inside the caller's transaction.
///
/// # Errors
/// When the database write fails; the caller's transaction then fails as a whole.
pub async fn append(
    tx: &mut Tx<'_>,
    actor: &str,
    action: &str,
    request_id: Option<&str>,
    details: serde_json::Value,
) -> sqlx::Result<()> {
    Chain::load(tx)
        .await?
        .append(tx, actor, action, request_id, details)
        .await
}

/// Checks the chain of `events` (in `seq` order, from the first): returns the `seq` of
/// the first event whose hash or link does not match.
pub fn first_broken(events: &[Event]) -> Option<i64> {
    let mut prev = GENESIS.to_owned();
    for event in events {
        let expected = hash(
            &prev,
            event.at,
            &event.actor,
            &event.action,
            event.request_id.as_deref(),
            &event.details,
        );
        if event.prev_hash != prev || event.hash != expected {
            return Some(event.seq);
        }
        prev = event.hash.clone();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<Event> {
        let mut prev = GENESIS.to_owned();
        (0..n)
            .map(|i| {
                let details = format!("{{\"n\":{i}}}");
                let h = hash(&prev, i as i64, "system", "test", None, &details);
                let event = Event {
                    seq: i as i64 + 1,
                    at: i as i64,
                    actor: "system".into(),
                    action: "test".into(),
                    request_id: None,
                    details,
                    prev_hash: prev.clone(),
                    hash: h.clone(),
                };
                prev = h;
                event
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_or_removal_is_found() {
        let events = chain(5);
        assert_eq!(first_broken(&events), None);
        let mut edited = events.clone();
        edited[2].actor = "someone-else".into();
        assert_eq!(first_broken(&edited), Some(3));
        let mut removed = events.clone();
        removed.remove(1);
        assert_eq!(first_broken(&removed), Some(3));
    }
}
