//! Recipients (Art. 19): the third parties a controller disclosed personal data to. When
//! an erasure or a rectification of one of its requests completes, each recipient gets a
//! notice: a Standard Webhooks delivery to its own URL, signed with its own secret,
//! queued in the settling transaction and retried like any webhook. A notice names the
//! request and what happened, never the subject: the identities (and a rectification's
//! new values) are fetched at `identities_url`, whose token
//! (`Keys::link_token(NOTICE, delivery id)`) opens that notice only, for
//! [`NOTICE_DAYS`] days.

use crate::audit;
use crate::store::{Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The purpose notice tokens are made for (`Keys::link_token`).
pub const NOTICE: &str = "notice";

/// Days a notice's `identities_url` works.
pub const NOTICE_DAYS: i64 = 30;

/// A controller's recipient.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Recipient {
    pub id: String,
    pub name: String,
    /// Where its notices are sent.
    pub url: String,
    pub created_at: DateTime<Utc>,
    /// When the controller removed it: it gets no more notices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<DateTime<Utc>>,
}

type RecipientRow = (String, String, String, i64, Option<i64>);

fn recipient((id, name, url, created, removed): RecipientRow) -> Recipient {
    Recipient {
        id,
        name,
        url,
        created_at: to_rfc3339(created),
        removed_at: removed.map(to_rfc3339),
    }
}

/// Adds a recipient and records it; returns it with its secret (`whsec_…`).
///
/// # Errors
/// When the database fails.
pub async fn create(
    tx: &mut Tx<'_>,
    controller_id: &str,
    name: &str,
    url: &str,
    actor: &str,
) -> sqlx::Result<(Recipient, String)> {
    let id = format!("rcp_{}", uuid::Uuid::now_v7().simple());
    let secret = crate::controller::webhook_secret();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO recipients (id, controller_id, name, url, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(controller_id)
    .bind(name)
    .bind(url)
    .bind(&secret)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    audit::append(
        tx,
        actor,
        "recipient.added",
        None,
        serde_json::json!({ "controller_id": controller_id, "recipient_id": id, "name": name, "url": url }),
    );
    Ok((
        recipient((id, name.to_owned(), url.to_owned(), now, None)),
        secret,
    ))
}

/// A controller's recipients, removed ones included, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, controller_id: &str) -> sqlx::Result<Vec<Recipient>> {
    let rows: Vec<RecipientRow> = sqlx::query_as(
        "SELECT id, name, url, created_at, removed_at FROM recipients WHERE controller_id = $1 ORDER BY id",
    )
    .bind(controller_id)
    .fetch_all(&store.read)
    .await?;
    Ok(rows.into_iter().map(recipient).collect())
}

/// Removes a recipient and records it: it gets no more notices (those still queued are
/// given up) and its notices' links stop working. `false` when the controller has no
/// such recipient still in place.
///
/// # Errors
/// When the database fails.
pub async fn remove(
    tx: &mut Tx<'_>,
    controller_id: &str,
    id: &str,
    actor: &str,
) -> sqlx::Result<bool> {
    let removed = sqlx::query(
        "UPDATE recipients SET removed_at = $1 WHERE id = $2 AND controller_id = $3 AND removed_at IS NULL",
    )
    .bind(now_ms())
    .bind(id)
    .bind(controller_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if removed {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'withdrawn', last_error = 'the recipient was removed' \
             WHERE recipient_id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
        audit::append(
            tx,
            actor,
            "recipient.removed",
            None,
            serde_json::json!({ "controller_id": controller_id, "recipient_id": id }),
        );
    }
    Ok(removed)
}

/// Queues a notice to each recipient in place of the request's controller, for an
/// erasure or rectification that completed, and records how many. Returns how many.
/// A request in which no system found anything (or that had no system) tells no one:
/// nothing shows the subject's data was ever disclosed, so their identities are not
/// handed to third parties; the audit trail says so.
///
/// # Errors
/// When the database fails.
pub async fn notify(tx: &mut Tx<'_>, request_id: &str, actor: &str) -> sqlx::Result<usize> {
    let request: Option<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT controller_id, kind, completed_at FROM requests WHERE id = $1")
            .bind(request_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((controller_id, kind, completed_at)) = request else {
        return Ok(0);
    };
    let event = match kind.as_str() {
        "erasure" => "subject.erased",
        "rectification" => "subject.rectified",
        _ => return Ok(0),
    };
    let recipients: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, name FROM recipients WHERE controller_id = $1 AND removed_at IS NULL ORDER BY id",
    )
    .bind(&controller_id)
    .fetch_all(&mut **tx)
    .await?;
    if recipients.is_empty() {
        return Ok(0);
    }
    let found: Option<i64> =
        sqlx::query_scalar("SELECT CAST(SUM(found) AS BIGINT) FROM tasks WHERE request_id = $1")
            .bind(request_id)
            .fetch_one(&mut **tx)
            .await?;
    if found.unwrap_or(0) == 0 {
        audit::append(
            tx,
            actor,
            "recipients.not_notified",
            Some(request_id),
            serde_json::json!({ "reason": "no connected system found any record of the subject" }),
        );
        return Ok(0);
    }
    let now = now_ms();
    for (recipient_id, _) in &recipients {
        let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        let payload = serde_json::json!({
            "type": event,
            "timestamp": to_rfc3339(now),
            "data": {
                "notice_id": id,
                "request_id": request_id,
                "kind": kind,
                "completed_at": completed_at.map(to_rfc3339),
                // Replaced by `identities_url` when sent, where the keys are.
                "notice": id,
            },
        });
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, controller_id, request_id, event, payload, status, attempts, next_attempt_at, created_at, recipient_id) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7)",
        )
        .bind(&id)
        .bind(&controller_id)
        .bind(request_id)
        .bind(event)
        .bind(payload.to_string())
        .bind(now)
        .bind(recipient_id)
        .execute(&mut **tx)
        .await?;
    }
    let names: Vec<&str> = recipients.iter().map(|(_, name)| name.as_str()).collect();
    audit::append(
        tx,
        actor,
        "recipients.notified",
        Some(request_id),
        serde_json::json!({ "event": event, "recipients": names }),
    );
    Ok(recipients.len())
}

/// A notice as its token opens it: its request and recipient, and whether it still works.
#[derive(Debug, Clone)]
pub struct Notice {
    pub id: String,
    pub request_id: String,
    pub recipient: String,
    pub created_at: i64,
    /// When its recipient was removed: its link no longer works.
    pub recipient_removed: bool,
}

impl Notice {
    /// Whether its `identities_url` has stopped working at `now` (milliseconds).
    pub fn expired(&self, now: i64) -> bool {
        now >= self.created_at + NOTICE_DAYS * 86_400_000
    }
}

/// The notice of a delivery id, when it is a notice to a recipient.
///
/// # Errors
/// When the database cannot be read.
pub async fn notice(store: &Store, id: &str) -> sqlx::Result<Option<Notice>> {
    let row: Option<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT d.id, d.request_id, r.name, d.created_at, r.removed_at FROM webhook_deliveries d \
         JOIN recipients r ON r.id = d.recipient_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(&store.read)
    .await?;
    Ok(
        row.map(|(id, request_id, recipient, created_at, removed)| Notice {
            id,
            request_id,
            recipient,
            created_at,
            recipient_removed: removed.is_some(),
        }),
    )
}

/// How each recipient was told of a request, for its certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Told {
    pub recipient: String,
    /// `delivered`, `pending` (still being tried), `failed` (given up) or `withdrawn`
    /// (the recipient was removed before it was delivered).
    pub status: String,
    pub attempts: i64,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The notices of a request, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn told(store: &Store, request_id: &str) -> sqlx::Result<Vec<Told>> {
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT r.name, d.status, d.attempts, d.delivered_at FROM webhook_deliveries d \
         JOIN recipients r ON r.id = d.recipient_id WHERE d.request_id = $1 ORDER BY d.id",
    )
    .bind(request_id)
    .fetch_all(&store.read)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(recipient, status, attempts, delivered)| Told {
            recipient,
            status,
            attempts,
            delivered_at: delivered.map(to_rfc3339),
        })
        .collect())
}
