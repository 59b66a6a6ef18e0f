//! Approval links: one per forwarded request (and per reminder), for a person at the
//! controller to approve or reject it in a browser. A link is a row (its request, when it
//! expires, when it was used); its token is `Keys::link_token("approval", id)`, made again
//! whenever a webhook or an e-mail carries it, so nothing that opens a link is stored.

use crate::store::{Store, Tx, now_ms};

/// The purpose approval tokens are made for (`Keys::link_token`).
pub const APPROVAL: &str = "approval";

/// One approval link.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Link {
    pub id: String,
    pub request_id: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl Link {
    /// Whether the link has expired at `now` (milliseconds).
    pub fn expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }
}

/// Makes a link to the request that works for `hours`; returns its id.
///
/// # Errors
/// When the database fails.
pub async fn create(tx: &mut Tx<'_>, request_id: &str, hours: u64) -> sqlx::Result<String> {
    let id = format!("lnk_{}", uuid::Uuid::now_v7().simple());
    let now = now_ms();
    let expires = now.saturating_add(i64::try_from(hours).unwrap_or(i64::MAX / 4) * 3_600_000);
    sqlx::query(
        "INSERT INTO approval_links (id, request_id, expires_at, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(request_id)
    .bind(expires)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// The link with this id.
///
/// # Errors
/// When the database fails.
pub async fn find(store: &Store, id: &str) -> sqlx::Result<Option<Link>> {
    sqlx::query_as("SELECT id, request_id, expires_at, used_at FROM approval_links WHERE id = $1")
        .bind(id)
        .fetch_optional(&store.read)
        .await
}

/// Marks the link used, if it still works at `now`; `false` when it was used or expired
/// meanwhile (another tab, another person).
///
/// # Errors
/// When the database fails.
pub async fn take(tx: &mut Tx<'_>, id: &str, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE approval_links SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}
