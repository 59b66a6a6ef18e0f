//! The audit trail's writing: the events a transaction appends wait in it (see
//! [`super::Tx`]) and are written when it commits, all of them in one statement, each
//! carrying the hash of the one before. The trail's lock (PostgreSQL) is taken only
//! then, so it is held for that statement and the commit, not for the whole
//! transaction; and as nothing else is done while it is held, a writer holding it never
//! waits on rows another writer holds: it can be in no deadlock.
//!
//! What an event means, how the chain is checked and purged, is [`crate::audit`]'s.

use super::Sql;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

/// The hash the first event chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// At most this many events go into one insert (seven values each): a transaction that
/// appends more writes them in several, each following the one before.
const EVENTS_PER_INSERT: usize = 200;

/// The hash of the trail's last event.
const HEAD: &str = "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// An event appended in a transaction, written when it commits; its time is the time it
/// is written, so that times follow the trail's order (a transaction may wait between
/// an append and its commit).
#[derive(Debug, Clone)]
pub struct Pending {
    pub actor: String,
    pub action: String,
    pub request_id: Option<String>,
    /// Details as JSON text.
    pub details: String,
}

impl Pending {
    /// The hash this event carries, written at `at`, when it follows an event whose hash
    /// is `prev`.
    fn hash(&self, prev: &str, at: i64) -> String {
        hash(
            prev,
            at,
            &self.actor,
            &self.action,
            self.request_id.as_deref(),
            &self.details,
        )
    }
}

/// The hash of an event (its time, actor, action, request and details) that follows the
/// event whose hash is `prev`: each part length-prefixed, so no two events share one.
pub fn hash(
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

/// The hash of the last event this process wrote. The next write chains to it without
/// reading the head first: its insert is guarded by the head it expects, so a stale value
/// (its transaction rolled back, another process or another database of this process
/// wrote since) never makes a wrong link; it costs the failed insert and a read of the
/// head. That is the usual case only where several processes write to one trail
/// (PostgreSQL with worker processes).
static LAST_HASH: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

fn remembered() -> Option<String> {
    LAST_HASH.lock().expect("audit head lock").clone()
}

fn remember(hash: &str) {
    hash.clone_into(
        LAST_HASH
            .lock()
            .expect("audit head lock")
            .get_or_insert_default(),
    );
}

/// Writes `events`, in their order, after the trail's head, in the transaction of
/// `conn`, which commits next: takes the trail's lock (PostgreSQL), then inserts them
/// chained to the head this process wrote last, if that is still the head (one
/// statement); when it is not, reads the head and inserts them chained to it.
///
/// # Errors
/// When the database fails; the transaction then fails as a whole.
pub async fn write(conn: &mut AnyConnection, events: &[Pending]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (first, rest) = events.split_at(events.len().min(EVENTS_PER_INSERT));
    super::lock_trail(conn).await?;
    let guarded = match remembered() {
        Some(prev) => insert(conn, &prev, true, first).await?,
        None => None,
    };
    let mut prev = match guarded {
        Some(last) => last,
        None => {
            let head: Option<String> = sqlx::query_scalar(HEAD).fetch_optional(&mut *conn).await?;
            let head = head.unwrap_or_else(|| GENESIS.to_owned());
            unguarded(conn, &head, first).await?
        }
    };
    // Under the lock (SQLite: the transaction now holds the write lock), what this
    // transaction wrote is the head: the rest follows it without a guard.
    for chunk in rest.chunks(EVENTS_PER_INSERT) {
        prev = unguarded(conn, &prev, chunk).await?;
    }
    Ok(())
}

/// Writes `event` right after the event whose hash is `head`, read in this transaction
/// under the trail's lock, without a guard: it follows that event even where it is no
/// longer the last one (a purge's checkpoint follows the head it signed, which the purge
/// may have removed).
///
/// # Errors
/// When the database fails.
pub async fn write_after(conn: &mut AnyConnection, head: &str, event: Pending) -> sqlx::Result<()> {
    unguarded(conn, head, std::slice::from_ref(&event)).await?;
    Ok(())
}

/// [`insert`] without a guard: returns the hash of the last event (`prev` when there is
/// none).
async fn unguarded(
    conn: &mut AnyConnection,
    prev: &str,
    events: &[Pending],
) -> sqlx::Result<String> {
    Ok(insert(conn, prev, false, events)
        .await?
        .unwrap_or_else(|| prev.to_owned()))
}

/// Inserts `events` (at most [`EVENTS_PER_INSERT`]) chained after the event whose hash is
/// `prev`, in one statement; when `guarded`, only if that event is the trail's head.
/// Returns the hash of the last one inserted, `None` when the guard failed.
async fn insert(
    conn: &mut AnyConnection,
    prev: &str,
    guarded: bool,
    events: &[Pending],
) -> sqlx::Result<Option<String>> {
    // `VALUES` names its columns column1, column2, … on both backends; the eighth orders
    // the rows, so that their positions follow the chain.
    let mut query = Sql::new(
        "INSERT INTO audit_events (at, actor, action, request_id, details, prev_hash, hash) \
         SELECT column1, column2, column3, column4, column5, column6, column7 FROM (VALUES ",
    );
    let at = super::now_ms();
    let mut link = prev.to_owned();
    for (i, event) in events.iter().enumerate() {
        let hash = event.hash(&link, at);
        query
            .push(if i == 0 { "(" } else { ", (" })
            .bind(at)
            .push(", ")
            .bind(event.actor.clone())
            .push(", ")
            .bind(event.action.clone())
            .push(", ")
            .bind(event.request_id.clone())
            .push(", ")
            .bind(event.details.clone())
            .push(", ")
            .bind(std::mem::replace(&mut link, hash.clone()))
            .push(", ")
            .bind(hash)
            .push(&format!(", {i})"));
    }
    query
        .push(") AS events WHERE NOT ")
        .bind(guarded)
        .push(" OR ")
        .bind(prev.to_owned())
        .push(&format!(" = COALESCE(({HEAD}), "))
        .bind(GENESIS)
        .push(") ORDER BY column8");
    let inserted = query.execute(&mut *conn).await?;
    if inserted == 0 && guarded {
        return Ok(None);
    }
    if inserted != events.len() as u64 {
        return Err(sqlx::Error::Protocol(format!(
            "{inserted} audit events written of {}",
            events.len()
        )));
    }
    remember(&link);
    Ok(Some(link))
}
