//! The audit trail: an append-only list of events, each carrying the hash of the one
//! before, appended in the same transaction as the change it records.
//!
//! Access-log events (who read a request, a list or a package) are kept for a retention
//! period only. Purging them leaves holes in the chain, which a signed checkpoint event
//! bridges: it lists each run of purged events by its first and last position and the
//! hashes at both ends, and the head of the trail when it was written, signed with the
//! certificate key. [`first_broken`] accepts a hole only where a checkpoint whose
//! signature verifies says there is one.
//!
//! A chain cut short at its end still verifies. Against that, an auditor keeps signed
//! heads ([`signed_head`], served at `/v1/audit/head`) outside oubli: [`check_head`]
//! tells whether the trail still reaches each one.

use crate::crypto::Keys;
use crate::store::trail::{self, Pending, hash};
use crate::store::{Sql, Tx, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

pub use crate::store::trail::GENESIS;

/// The actions of access-log events: reads of the subject's data, purged after the
/// access log's retention period.
pub const ACCESS_LOG: &[&str] = &["request.read", "requests.listed", "package.downloaded"];

/// The action of a checkpoint event, which records a purge of access-log events.
pub const CHECKPOINT: &str = "audit.purged";

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

/// The columns of an [`Event`], in the order it reads them.
pub const COLUMNS: &str = "seq, at, actor, action, request_id, details, prev_hash, hash";

impl Event {
    /// The hash this event must carry when it follows an event whose hash is `prev`.
    fn expected_hash(&self, prev: &str) -> String {
        hash(
            prev,
            self.at,
            &self.actor,
            &self.action,
            self.request_id.as_deref(),
            &self.details,
        )
    }
}

/// The whole trail, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn all(store: &crate::store::Store) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_events ORDER BY seq"))
        .fetch_all(&store.read)
        .await
}

/// A request's events, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn of_request(store: &crate::store::Store, request_id: &str) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE request_id = $1 ORDER BY seq"
    ))
    .bind(request_id)
    .fetch_all(&store.read)
    .await
}

/// Appends an event to the trail in the caller's transaction: it is written, chained to
/// the trail's head, when the transaction commits, and never if it does not (see
/// `store::trail`).
pub fn append(
    tx: &mut Tx<'_>,
    actor: &str,
    action: &str,
    request_id: Option<&str>,
    details: serde_json::Value,
) {
    tx.append(Pending {
        actor: actor.to_owned(),
        action: action.to_owned(),
        request_id: request_id.map(str::to_owned),
        details: details.to_string(),
    });
}

/// A run of purged events between two kept ones, as a checkpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub first_seq: i64,
    pub last_seq: i64,
    pub events: u64,
    /// The hash the first purged event chained to: the kept event before the run.
    pub prev_hash: String,
    /// The hash of the last purged event: what the kept event after the run chains to.
    pub last_hash: String,
}

/// Groups purged events (`seq`, `prev_hash`, `hash`, in `seq` order) into runs: events
/// that chain to each other form one run.
pub fn gaps(purged: &[(i64, String, String)]) -> Vec<Gap> {
    let mut gaps: Vec<Gap> = Vec::new();
    for (seq, prev_hash, hash) in purged {
        match gaps.last_mut() {
            Some(gap) if gap.last_hash == *prev_hash => {
                gap.last_seq = *seq;
                gap.last_hash = hash.clone();
                gap.events += 1;
            }
            _ => gaps.push(Gap {
                first_seq: *seq,
                last_seq: *seq,
                events: 1,
                prev_hash: prev_hash.clone(),
                last_hash: hash.clone(),
            }),
        }
    }
    gaps
}

/// The signed details of a checkpoint: what was purged, the runs it left, and the head
/// of the trail (`seq`, `hash`) the checkpoint event follows.
pub fn checkpoint(keys: &Keys, before: i64, gaps: &[Gap], head: (i64, &str)) -> Value {
    keys.sign(json!({
        "type": "oubli.audit-checkpoint",
        "version": 1,
        "purged": {
            "actions": ACCESS_LOG,
            "before": before,
            "events": gaps.iter().map(|g| g.events).sum::<u64>(),
        },
        "gaps": gaps,
        "head": { "seq": head.0, "hash": head.1 },
    }))
}

/// Checks the trail from the oldest access-log event older than `before` (the first a
/// purge would remove) to its head, without taking the trail's lock: run it before
/// [`purge_access_log`], which then checks only what it removes. Once a checkpoint
/// vouches for removed events, an edit made to them before is beyond finding, so an
/// event edited to look like an old read, even re-hashed with every hash after it, must
/// be found here (where a checkpoint signed a head after it).
///
/// # Errors
/// Where the trail breaks; the outer error when the database fails.
pub async fn check_before_purge(
    store: &crate::store::Store,
    keys: &Keys,
    before: i64,
) -> sqlx::Result<Result<(), Broken>> {
    let mut query = Sql::new("SELECT seq, prev_hash FROM audit_events WHERE at < ");
    query
        .bind(before)
        .push(" AND action IN ")
        .bind_list(ACCESS_LOG.iter().copied())
        .push(" ORDER BY seq LIMIT 1");
    let first: Vec<(i64, String)> = query.fetch_all(&store.read).await?;
    let Some((seq, prev)) = first.into_iter().next() else {
        return Ok(Ok(()));
    };
    let since: Vec<Event> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE seq >= $1 ORDER BY seq"
    ))
    .bind(seq)
    .fetch_all(&store.read)
    .await?;
    Ok(first_broken_from(&prev, &since, &keys.verifying_keys()).map_or(Ok(()), Err))
}

/// Deletes the access-log events older than `before` (milliseconds), the oldest `limit`
/// of them, and appends a signed checkpoint that bridges the holes they leave. Returns
/// how many were purged. Each removed event is checked against its own hash first, so
/// an event edited to look like an old read is refused; [`check_before_purge`] checks
/// the rest of the trail.
///
/// # Errors
/// When the database fails, or a removed event was changed (nothing is purged then).
pub async fn purge_access_log(
    tx: &mut Tx<'_>,
    keys: &Keys,
    before: i64,
    limit: i64,
) -> anyhow::Result<u64> {
    crate::store::lock_trail(tx).await?;
    let mut query = Sql::new(format!("SELECT {COLUMNS} FROM audit_events WHERE at < "));
    query
        .bind(before)
        .push(" AND action IN ")
        .bind_list(ACCESS_LOG.iter().copied())
        .push(" ORDER BY seq LIMIT ")
        .bind(limit);
    let removed: Vec<Event> = query.fetch_all(&mut **tx).await?;
    let Some(last) = removed.last().map(|e| e.seq) else {
        return Ok(0);
    };
    if let Some(changed) = removed
        .iter()
        .find(|e| e.hash != e.expected_hash(&e.prev_hash))
    {
        anyhow::bail!(
            "the audit trail does not verify at event {0} (event {0} was changed after it was written); the access log is not purged until it does",
            changed.seq
        );
    }
    let purged: Vec<(i64, String, String)> = removed
        .iter()
        .map(|e| (e.seq, e.prev_hash.clone(), e.hash.clone()))
        .collect();
    let head: (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut **tx)
            .await?;
    let mut delete = Sql::new("DELETE FROM audit_events WHERE at < ");
    delete
        .bind(before)
        .push(" AND seq <= ")
        .bind(last)
        .push(" AND action IN ")
        .bind_list(ACCESS_LOG.iter().copied());
    let deleted = delete.execute(&mut **tx).await?;
    anyhow::ensure!(
        deleted == purged.len() as u64,
        "the access-log events changed while they were purged ({deleted} deleted, {} listed)",
        purged.len()
    );
    let details = checkpoint(keys, before, &gaps(&purged), (head.0, &head.1));
    let event = Pending {
        actor: "system".to_owned(),
        action: CHECKPOINT.to_owned(),
        request_id: None,
        details: details.to_string(),
    };
    trail::write_after(tx, &head.1, event).await?;
    Ok(deleted)
}

/// The trail's last event now: its position, hash and time, signed, for an auditor to
/// keep; `None` while the trail is empty.
///
/// # Errors
/// When the database fails.
pub async fn signed_head(store: &crate::store::Store, keys: &Keys) -> sqlx::Result<Option<Value>> {
    let head: Option<(i64, String, i64)> =
        sqlx::query_as("SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&store.read)
            .await?;
    // Signed once the events it names are on disk (see `store::flush`).
    store.everything_on_disk().await?;
    Ok(head.map(|(seq, hash, at)| head_document(keys, seq, &hash, at)))
}

/// The signed head naming event `seq` with `hash`, written at `at`.
pub fn head_document(keys: &Keys, seq: i64, hash: &str, at: i64) -> Value {
    keys.sign(json!({
        "type": "oubli.audit-head",
        "version": 1,
        "seq": seq,
        "hash": hash,
        "at": at,
        "signed_at": now_ms(),
    }))
}

/// Checks that the trail `events` (verified with [`first_broken`]) still holds the head
/// an auditor kept: the event at its position with its hash, or a checkpoint's run of
/// purged events over that position; a trail that ends before it was cut short.
///
/// # Errors
/// Why the head does not match, for the auditor.
pub fn check_head(events: &[Event], head: &Value, public_keys: &[String]) -> Result<(), String> {
    crate::crypto::verify(head, public_keys)
        .map_err(|e| format!("the head does not verify: {e}"))?;
    let document = &head["certificate"];
    if document["type"] != "oubli.audit-head" {
        return Err("not a signed head of the audit trail".into());
    }
    let (Some(seq), Some(hash)) = (document["seq"].as_i64(), document["hash"].as_str()) else {
        return Err("the head names no event".into());
    };
    let last = events.last().map_or(0, |e| e.seq);
    if last < seq {
        return Err(format!(
            "the trail ends at event {last}, before event {seq} of the head signed at {}: events were removed from its end",
            document["signed_at"]
        ));
    }
    if let Some(event) = events.iter().find(|e| e.seq == seq) {
        return if event.hash == hash {
            Ok(())
        } else {
            Err(format!("event {seq} is not the event the head signed"))
        };
    }
    let checkpoints = Checkpoints::read(events, public_keys).map_err(|b| b.reason)?;
    let purged = checkpoints
        .runs
        .values()
        .any(|gap| gap.first_seq <= seq && seq <= gap.last_seq);
    if purged {
        Ok(())
    } else {
        Err(format!(
            "event {seq}, the head signed, is missing from the trail"
        ))
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The `seq` of the first event that does not verify.
    pub seq: i64,
    pub reason: String,
}

impl Broken {
    fn at(seq: i64, reason: impl Into<String>) -> Option<Broken> {
        Some(Broken {
            seq,
            reason: reason.into(),
        })
    }
}

/// Checks the chain of `events` (in `seq` order, from the first), with the public keys
/// that verify checkpoints (base64, as `/v1/keys` serves them): returns the first event
/// whose hash or link does not match, or whose checkpoint does not verify. A link may
/// skip purged events only where a verified checkpoint lists that run.
pub fn first_broken(events: &[Event], public_keys: &[String]) -> Option<Broken> {
    first_broken_from(GENESIS, events, public_keys)
}

/// [`first_broken`] over a part of the trail: `events` from some position on, the first
/// of which chains to `prev`.
fn first_broken_from(prev: &str, events: &[Event], public_keys: &[String]) -> Option<Broken> {
    let checkpoints = match Checkpoints::read(events, public_keys) {
        Ok(checkpoints) => checkpoints,
        Err(broken) => return Some(broken),
    };
    let mut prev = prev.to_owned();
    let mut prev_seq = 0;
    for event in events {
        // Bridge the runs of purged events, in order, that end where this event begins.
        while event.prev_hash != prev {
            match checkpoints.runs.get(&prev) {
                Some(gap) if gap.first_seq > prev_seq && gap.last_seq < event.seq => {
                    prev = gap.last_hash.clone();
                    prev_seq = gap.last_seq;
                }
                _ => {
                    return Broken::at(
                        event.seq,
                        format!(
                            "event {} does not follow the event before it: it, or an event before it, was edited, removed, reordered or inserted",
                            event.seq
                        ),
                    );
                }
            }
        }
        if event.hash != event.expected_hash(&prev) {
            return Broken::at(
                event.seq,
                format!("event {} was changed after it was written", event.seq),
            );
        }
        if let Some(head) = checkpoints.heads.get(&event.seq)
            && *head != event.prev_hash
        {
            return Broken::at(
                event.seq,
                format!(
                    "checkpoint {} signed another head of the trail than the events before it",
                    event.seq
                ),
            );
        }
        prev = event.hash.clone();
        prev_seq = event.seq;
    }
    None
}

/// What the checkpoints among some events say, each verified.
struct Checkpoints {
    /// The runs of purged events, by the hash the first one chained to.
    runs: HashMap<String, Gap>,
    /// The head each checkpoint signed, by the checkpoint's position.
    heads: HashMap<i64, String>,
}

impl Checkpoints {
    /// Reads the checkpoints among `events`; the first that does not verify with
    /// `public_keys`, or is not a checkpoint, breaks the chain.
    fn read(events: &[Event], public_keys: &[String]) -> Result<Checkpoints, Broken> {
        let mut checkpoints = Checkpoints {
            runs: HashMap::new(),
            heads: HashMap::new(),
        };
        for event in events.iter().filter(|e| e.action == CHECKPOINT) {
            let broken = |reason: String| Broken {
                seq: event.seq,
                reason,
            };
            let details: Value = serde_json::from_str(&event.details).unwrap_or_default();
            crate::crypto::verify(&details, public_keys).map_err(|invalid| {
                broken(format!(
                    "checkpoint {} does not verify: {invalid}",
                    event.seq
                ))
            })?;
            let document = &details["certificate"];
            let gaps = (document["type"] == "oubli.audit-checkpoint")
                .then(|| serde_json::from_value::<Vec<Gap>>(document["gaps"].clone()).ok())
                .flatten()
                .ok_or_else(|| {
                    broken(format!("event {} is not a checkpoint of oubli", event.seq))
                })?;
            checkpoints
                .runs
                .extend(gaps.into_iter().map(|g| (g.prev_hash.clone(), g)));
            checkpoints.heads.insert(
                event.seq,
                document["head"]["hash"].as_str().unwrap_or("").to_owned(),
            );
        }
        Ok(checkpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends an event after `events`, chained as the trail chains them.
    fn push(events: &mut Vec<Event>, action: &str, details: String) {
        let seq = events.last().map_or(1, |e| e.seq + 1);
        let prev = events.last().map_or(GENESIS.to_owned(), |e| e.hash.clone());
        push_at(events, seq, prev, action, details);
    }

    /// Appends an event at position `seq` chained to `prev` (positions are never reused,
    /// as in the table).
    fn push_at(events: &mut Vec<Event>, seq: i64, prev: String, action: &str, details: String) {
        let hash = hash(&prev, seq, "system", action, None, &details);
        events.push(Event {
            seq,
            at: seq,
            actor: "system".into(),
            action: action.into(),
            request_id: None,
            details,
            prev_hash: prev,
            hash,
        });
    }

    fn chain(n: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..n {
            push(&mut events, "test", format!("{{\"n\":{i}}}"));
        }
        events
    }

    fn broken_at(events: &[Event], keys: &[String]) -> Option<i64> {
        first_broken(events, keys).map(|b| b.seq)
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_or_removal_is_found() {
        let events = chain(5);
        assert_eq!(broken_at(&events, &[]), None);
        let mut edited = events.clone();
        edited[2].actor = "someone-else".into();
        assert_eq!(broken_at(&edited, &[]), Some(3));
        let mut removed = events.clone();
        removed.remove(1);
        assert_eq!(broken_at(&removed, &[]), Some(3));
        let mut reordered = events.clone();
        reordered.swap(1, 2);
        assert_eq!(broken_at(&reordered, &[]), Some(3));
        // An event slipped in after the second, well chained to it: the third no longer
        // follows the event before it.
        let mut inserted: Vec<Event> = events[..2].to_vec();
        push(&mut inserted, "forged", "{}".into());
        inserted[2].seq = 10;
        inserted.extend(events[2..].iter().cloned());
        assert_eq!(broken_at(&inserted, &[]), Some(3));
    }

    /// Purges the events whose action is an access-log action, as `purge_access_log`
    /// does, and appends the checkpoint.
    fn purge(events: &mut Vec<Event>, keys: &Keys) {
        let purged: Vec<(i64, String, String)> = events
            .iter()
            .filter(|e| ACCESS_LOG.contains(&e.action.as_str()))
            .map(|e| (e.seq, e.prev_hash.clone(), e.hash.clone()))
            .collect();
        let head = events.last().map(|e| (e.seq, e.hash.clone())).unwrap();
        events.retain(|e| !ACCESS_LOG.contains(&e.action.as_str()));
        let details = checkpoint(keys, 0, &gaps(&purged), (head.0, &head.1));
        // Like `purge_access_log`, the checkpoint chains to the head read before the purge.
        push_at(events, head.0 + 1, head.1, CHECKPOINT, details.to_string());
    }

    #[test]
    fn purged_access_log_events_leave_a_signed_checkpoint_that_bridges_them() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let public = vec![keys.public().public_key];
        let mut events = Vec::new();
        // kept, read, read, kept, listed, kept, downloaded (the head)
        for action in [
            "request.received",
            "request.read",
            "request.read",
            "request.approved",
            "requests.listed",
            "request.completed",
            "package.downloaded",
        ] {
            push(&mut events, action, "{}".into());
        }
        purge(&mut events, &keys);
        assert_eq!(events.len(), 4, "three kept events and the checkpoint");
        let document: Value = serde_json::from_str(&events[3].details).unwrap();
        let gaps: Vec<Gap> =
            serde_json::from_value(document["certificate"]["gaps"].clone()).unwrap();
        assert_eq!(
            gaps.iter()
                .map(|g| (g.first_seq, g.last_seq, g.events))
                .collect::<Vec<_>>(),
            [(2, 3, 2), (5, 5, 1), (7, 7, 1)]
        );
        assert_eq!(first_broken(&events, &public), None);

        // More events, another purge: the holes of both checkpoints are bridged.
        push(&mut events, "request.read", "{}".into());
        push(&mut events, "request.received", "{}".into());
        purge(&mut events, &keys);
        assert_eq!(first_broken(&events, &public), None);

        // Removing a kept event is still found, where the next one no longer links.
        let mut removed = events.clone();
        removed.remove(1);
        assert_eq!(broken_at(&removed, &public), Some(removed[1].seq));
        // A changed checkpoint, one checked without its key, or one removed, is found.
        let mut changed = events.clone();
        changed[3].details = changed[3].details.replace("\"events\":4", "\"events\":3");
        assert_ne!(changed[3].details, events[3].details);
        assert_eq!(broken_at(&changed, &public), Some(changed[3].seq));
        assert_eq!(broken_at(&events, &[]), Some(events[3].seq));
        let other = Keys::load_or_create(&dir.path().join("other")).unwrap();
        assert_eq!(
            broken_at(&events, &[other.public().public_key]),
            Some(events[3].seq)
        );
        // Without the first checkpoint, its first hole is no longer bridged.
        let mut dropped = events.clone();
        dropped.remove(3);
        assert_eq!(broken_at(&dropped, &public), Some(dropped[1].seq));
    }

    #[test]
    fn a_kept_head_finds_a_trail_cut_short_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(dir.path()).unwrap();
        let public = vec![keys.public().public_key];
        let mut events = chain(3);
        push(&mut events, "request.read", "{}".into());
        let read = events.last().cloned().unwrap();
        let head = head_document(&keys, read.seq, &read.hash, read.at);
        assert_eq!(check_head(&events, &head, &public), Ok(()));
        push(&mut events, "test", "{}".into());
        assert_eq!(
            check_head(&events, &head, &public),
            Ok(()),
            "the trail grew"
        );

        // Cut short: the shorter chain verifies, the head says it was cut.
        let cut = &events[..3];
        assert_eq!(first_broken(cut, &public), None);
        let error = check_head(cut, &head, &public).unwrap_err();
        assert!(error.contains("removed from its end"), "{error}");
        // The head's event purged behind a checkpoint: still reached.
        purge(&mut events, &keys);
        assert_eq!(first_broken(&events, &public), None);
        assert_eq!(check_head(&events, &head, &public), Ok(()));
        // A changed head, or one signed by another key, is refused.
        let mut changed = head.clone();
        changed["certificate"]["seq"] = json!(2);
        assert!(check_head(&events, &changed, &public).is_err());
        let other = Keys::load_or_create(&dir.path().join("other")).unwrap();
        let foreign = head_document(&other, read.seq, &read.hash, read.at);
        assert!(check_head(&events, &foreign, &public).is_err());
    }
}
