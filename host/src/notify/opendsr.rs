//! OpenDSR status callbacks: a request received through the OpenDSR API names the URLs
//! its controller wants told of each change of its OpenDSR status. oubli's statuses map
//! onto OpenDSR's four; each change is queued, once per URL, in the transaction that
//! makes it, and sent by the webhook sender in order (one to a URL waits while an earlier
//! one for the same request is pending), signed with the processor's key
//! (`X-OpenDSR-Signature`, and the `X-OpenGDPR-*` headers of the earlier version).

use crate::store::{Tx, now_ms};
use serde::{Deserialize, Serialize};

/// What a request received through OpenDSR keeps of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The controller's UUID for the request.
    pub subject_request_id: String,
    pub api_version: String,
    pub regulation: Option<String>,
    /// When the subject asked (RFC 3339), as the controller says.
    pub submitted_time: String,
    pub callbacks: Vec<String>,
    /// SHA-256 of the request's body as received, hex: sent again, it must be the same.
    pub body_sha256: String,
}

/// The event name of a status callback delivery.
pub const EVENT: &str = "opendsr.status";

/// The OpenDSR status of an oubli status. A failed request is `in_progress`: it is not
/// done, and a retry may still complete it; a rejected one is `cancelled`.
pub fn status_of(status: &str) -> &'static str {
    match status {
        "running" | "failed" => "in_progress",
        "completed" => "completed",
        "rejected" | "cancelled" => "cancelled",
        _ => "pending",
    }
}

/// What oubli adds under its domain in `extensions`: its own status, which says what
/// OpenDSR's four cannot (`failed`: stopped, and waiting for a retry; `rejected`: the
/// controller refused it).
pub fn extension(status: &str) -> serde_json::Value {
    serde_json::json!({ "status": status })
}

/// Records that `request_id` came through OpenDSR, and queues the `pending` callbacks.
///
/// # Errors
/// When the database fails.
pub async fn record(
    tx: &mut Tx<'_>,
    request_id: &str,
    controller_id: &str,
    link: &Link,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO opendsr_requests (request_id, controller_id, subject_request_id, api_version, regulation, submitted_time, \
         callbacks, last_status, created_at, body_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $8, $9)",
    )
    .bind(request_id)
    .bind(controller_id)
    .bind(&link.subject_request_id)
    .bind(&link.api_version)
    .bind(&link.regulation)
    .bind(&link.submitted_time)
    .bind(serde_json::to_string(&link.callbacks).unwrap_or_else(|_| "[]".into()))
    .bind(now_ms())
    .bind(&link.body_sha256)
    .execute(&mut **tx)
    .await?;
    queue(tx, request_id, controller_id, &link.callbacks, "received").await
}

/// Queues the callbacks of a request received through OpenDSR when its status changes
/// in a way its controller can see: its OpenDSR status, or oubli's own (a failure, a
/// rejection, a retry), which the callback's extension names; nothing for the status an
/// auto-approval passes through (`approved`, still `pending`) or for other requests.
///
/// # Errors
/// When the database fails.
pub async fn status_changed(tx: &mut Tx<'_>, request_id: &str, status: &str) -> sqlx::Result<()> {
    if status == "approved" {
        return Ok(());
    }
    let changed: Option<(String, String)> = sqlx::query_as(
        "UPDATE opendsr_requests SET last_status = $1 WHERE request_id = $2 AND last_status <> $1 \
         RETURNING controller_id, callbacks",
    )
    .bind(status)
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((controller_id, callbacks)) = changed {
        let callbacks: Vec<String> = serde_json::from_str(&callbacks).unwrap_or_default();
        queue(tx, request_id, &controller_id, &callbacks, status).await?;
    }
    Ok(())
}

async fn queue(
    tx: &mut Tx<'_>,
    request_id: &str,
    controller_id: &str,
    callbacks: &[String],
    status: &str,
) -> sqlx::Result<()> {
    let now = now_ms();
    for url in callbacks {
        // The rest of the body (dates, results) is read when it is sent; `status` is
        // oubli's.
        let payload = serde_json::json!({ "status": status, "status_callback_url": url });
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, controller_id, request_id, event, payload, status, attempts, next_attempt_at, \
             created_at, callback_url) VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7)",
        )
        .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
        .bind(controller_id)
        .bind(request_id)
        .bind(EVENT)
        .bind(payload.to_string())
        .bind(now)
        .bind(url)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The body of a status callback as sent: the request's OpenDSR facts as they are now,
/// the status the delivery tells, and for a completed access or portability request the
/// address of its package.
///
/// # Errors
/// When the database cannot be read.
pub async fn body(
    store: &crate::store::Store,
    request_id: &str,
    queued: &str,
    base_url: &str,
    domain: &str,
) -> anyhow::Result<String> {
    let queued: serde_json::Value = serde_json::from_str(queued)?;
    let (controller_id, subject_request_id, api_version, due_at, kind): (String, String, String, i64, String) =
        sqlx::query_as(
            "SELECT r.controller_id, o.subject_request_id, o.api_version, r.due_at, r.kind FROM opendsr_requests o \
             JOIN requests r ON r.id = o.request_id WHERE o.request_id = $1",
        )
        .bind(request_id)
        .fetch_one(&store.read)
        .await?;
    let own = queued["status"].as_str().unwrap_or("received");
    let status = status_of(own);
    let mut body = serde_json::json!({
        "controller_id": controller_id,
        "expected_completion_time": crate::store::to_rfc3339(due_at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "status_callback_url": queued["status_callback_url"],
        "subject_request_id": subject_request_id,
        "request_status": status,
        "api_version": api_version,
        "extensions": { domain: extension(own) },
    });
    if status == "completed" && kind == "access" {
        body["results_url"] = format!(
            "{}/v1/requests/{request_id}/package",
            base_url.trim_end_matches('/')
        )
        .into();
    }
    Ok(body.to_string())
}
