//! Webhooks to controllers, signed as in the Standard Webhooks convention: headers
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, keyed with the base64-decoded part of the controller's
//! `whsec_…` secret. Deliveries are queued in the request's transaction, retried with
//! backoff and visible through the API.

pub mod email;
pub mod links;
pub mod opendsr;
pub mod recipients;
pub mod subject;

use crate::config::Config;
use crate::store::Store;
use crate::store::{Tx, now_ms, to_rfc3339};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// One webhook delivery and how it went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: String,
    /// The event, e.g. `request.forwarded`.
    pub event: String,
    /// The recipient (Art. 19) a notice went to; none for the controller's own webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// `pending`, `delivered`, `failed` (given up) or `withdrawn` (a recipient's notice,
    /// the recipient removed first).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt so far, oldest first.
    pub log: Vec<Attempt>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// The `webhook-signature` value for a message.
///
/// # Errors
/// When the secret is not `whsec_` followed by base64.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|e| anyhow::anyhow!("the webhook secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The processor's OpenDSR key and certificate, loaded (or made) where the service holds
/// them (`App::processor`, through `serve`).
pub type ProcessorSigner =
    Arc<dyn Fn() -> anyhow::Result<Arc<crate::crypto::opendsr::Processor>> + Send + Sync>;

/// Makes the address of a link from its purpose (`links::APPROVAL`, `recipients::NOTICE`)
/// and id: the service's public URL and the link's token, which only the process holding
/// the keys can make.
pub type LinkMaker = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// `body` with `data.url`, the request's address in the API (under `base_url`), added
/// when the event is about a request, and `data.approval_link` (a link's id) replaced by
/// `data.approval_url`: links are made when sent, where the configuration and keys are,
/// not where the event is queued.
fn with_request_url(body: &str, base_url: &str, links: &LinkMaker) -> String {
    let Ok(mut payload) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_owned();
    };
    let Some(id) = payload["data"]["request_id"].as_str().map(str::to_owned) else {
        return body.to_owned();
    };
    if payload["data"]["url"].is_null() {
        payload["data"]["url"] =
            format!("{}/v1/requests/{id}", base_url.trim_end_matches('/')).into();
    }
    if let Some(data) = payload["data"].as_object_mut()
        && let Some(serde_json::Value::String(link)) = data.remove("approval_link")
    {
        data.insert("approval_url".into(), links(links::APPROVAL, &link).into());
    }
    payload.to_string()
}

/// A recipient's notice as sent: `data.notice` (the delivery's id) replaced by
/// `data.identities_url`, which opens that notice only. No address of oubli's API: the
/// recipient has no token for it.
fn with_notice_url(body: &str, links: &LinkMaker) -> String {
    let Ok(mut payload) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_owned();
    };
    if let Some(data) = payload["data"].as_object_mut()
        && let Some(serde_json::Value::String(id)) = data.remove("notice")
    {
        data.insert(
            "identities_url".into(),
            links(recipients::NOTICE, &id).into(),
        );
    }
    payload.to_string()
}

/// What a webhook or an e-mail is about: a request, or a retention run (its report).
#[derive(Debug, Clone, Copy)]
pub enum About<'a> {
    Request(&'a str),
    Run(&'a str),
}

impl About<'_> {
    /// The column that names it, and its id.
    fn column(self) -> (&'static str, String) {
        match self {
            About::Request(id) => ("request_id", id.to_owned()),
            About::Run(id) => ("run_id", id.to_owned()),
        }
    }
}

/// Queues an event about a request for a controller known to have a webhook URL.
///
/// # Errors
/// When the database fails.
pub async fn insert(
    tx: &mut Tx<'_>,
    controller_id: &str,
    request_id: &str,
    event: &str,
    data: serde_json::Value,
) -> sqlx::Result<()> {
    insert_about(tx, controller_id, About::Request(request_id), event, data).await
}

/// Queues an event about a request or a run for a controller known to have a webhook URL.
///
/// # Errors
/// When the database fails.
pub async fn insert_about(
    tx: &mut Tx<'_>,
    controller_id: &str,
    about: About<'_>,
    event: &str,
    data: serde_json::Value,
) -> sqlx::Result<()> {
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let now = now_ms();
    let payload = serde_json::json!({ "type": event, "timestamp": to_rfc3339(now), "data": data });
    let (column, about) = about.column();
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (id, controller_id, {column}, event, payload, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
    ))
    .bind(&id)
    .bind(controller_id)
    .bind(about)
    .bind(event)
    .bind(payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

type DeliveryRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

type AttemptRow = (String, i64, i64, Option<i64>, Option<String>);

/// A request's webhook deliveries, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, request_id: &str) -> sqlx::Result<Vec<Delivery>> {
    list_about(store, About::Request(request_id)).await
}

/// The webhook deliveries about a request or a run, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn list_about(store: &Store, about: About<'_>) -> sqlx::Result<Vec<Delivery>> {
    let (column, id) = about.column();
    let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
        "SELECT d.id, d.event, d.status, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.delivered_at, r.name \
         FROM webhook_deliveries d LEFT JOIN recipients r ON r.id = d.recipient_id WHERE d.{column} = $1 ORDER BY d.id",
    ))
    .bind(&id)
    .fetch_all(&store.read)
    .await?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(&format!(
        "SELECT a.delivery_id, a.attempt, a.at, a.status, a.error FROM webhook_attempts a \
         JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.{column} = $1 ORDER BY a.delivery_id, a.attempt",
    ))
    .bind(&id)
    .fetch_all(&store.read)
    .await?;
    let mut deliveries: Vec<Delivery> = rows
        .into_iter()
        .map(|r| Delivery {
            id: r.0,
            event: r.1,
            next_attempt_at: (r.2 == "pending").then(|| to_rfc3339(r.4)),
            status: r.2,
            attempts: r.3 as u32,
            last_status: r.5.map(|s| s as u16),
            last_error: r.6,
            delivered_at: r.7.map(to_rfc3339),
            recipient: r.8,
            log: Vec::new(),
        })
        .collect();
    for (delivery, attempt, at, status, error) in attempts {
        if let Some(d) = deliveries.iter_mut().find(|d| d.id == delivery) {
            d.log.push(Attempt {
                attempt: attempt as u32,
                at: to_rfc3339(at),
                status: status.map(|s| s as u16),
                error,
            });
        }
    }
    Ok(deliveries)
}

/// How long a claimed delivery is left to its sender: well past the send's timeout.
const CLAIM_MS: i64 = 60_000;

/// A delivery claimed for sending.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: String,
    payload: String,
    attempts: i64,
    controller_id: String,
    recipient_id: Option<String>,
    request_id: Option<String>,
    callback_url: Option<String>,
}

/// Sends the deliveries that are due; returns how many were attempted.
///
/// # Errors
/// When the database fails.
pub async fn send_due(
    store: &Store,
    config: &Config,
    client: &reqwest::Client,
    links: &LinkMaker,
    processor: &ProcessorSigner,
) -> anyhow::Result<usize> {
    // Claimed by moving their next attempt past the send's timeout, so that the sender of
    // another process does not send them too; the outcome then sets it for real. An
    // OpenDSR callback waits while an earlier one to the same URL about the same request
    // is pending: a controller hears the statuses in the order they came.
    let skip_locked = store.skip_locked();
    let now = now_ms();
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET next_attempt_at = $2 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
                      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE d.callback_url IS NOT NULL \
                                      AND e.request_id = d.request_id AND e.callback_url = d.callback_url \
                                      AND e.status = 'pending' AND e.id < d.id) \
                      ORDER BY d.next_attempt_at LIMIT 32{skip_locked}) \
         RETURNING id, payload, attempts, controller_id, recipient_id, request_id, callback_url",
    ))
    .bind(now)
    .bind(now + CLAIM_MS)
    .fetch_all(&store.write)
    .await?;
    let mut due = Vec::with_capacity(claimed.len());
    for delivery in claimed {
        // An OpenDSR callback goes to the URL its request gave, signed by the processor.
        if let Some(url) = &delivery.callback_url {
            let processor = match processor() {
                Ok(processor) => processor,
                Err(e) => {
                    // Told as this delivery's failure: the others still go.
                    give_up(
                        store,
                        &delivery.id,
                        &format!("the OpenDSR key cannot be used: {e:#}"),
                    )
                    .await?;
                    continue;
                }
            };
            let body = match opendsr::body(
                store,
                delivery.request_id.as_deref().unwrap_or_default(),
                &delivery.payload,
                &config.base_url(),
                &processor.domain,
            )
            .await
            {
                Ok(body) => body,
                Err(e) => {
                    give_up(
                        store,
                        &delivery.id,
                        &format!("the callback could not be made: {e:#}"),
                    )
                    .await?;
                    continue;
                }
            };
            due.push((
                delivery.id,
                body,
                delivery.attempts,
                url.clone(),
                Signed::Processor(processor),
            ));
            continue;
        }
        // A recipient's notice goes to its own URL, signed with its own secret.
        let (url, secret, body): (Option<String>, String, String) = match &delivery.recipient_id {
            Some(recipient) => {
                let (url, secret, removed): (String, String, Option<i64>) =
                    sqlx::query_as("SELECT url, secret, removed_at FROM recipients WHERE id = $1")
                        .bind(recipient)
                        .fetch_one(&store.read)
                        .await?;
                if removed.is_some() {
                    // Claimed before its recipient was removed: given up, not sent.
                    sqlx::query(
                        "UPDATE webhook_deliveries SET status = 'withdrawn', last_error = 'the recipient was removed' WHERE id = $1",
                    )
                    .bind(&delivery.id)
                    .execute(&store.write)
                    .await?;
                    continue;
                }
                (Some(url), secret, with_notice_url(&delivery.payload, links))
            }
            None => {
                let (url, secret): (Option<String>, String) = sqlx::query_as(
                    "SELECT webhook_url, webhook_secret FROM controllers WHERE id = $1",
                )
                .bind(&delivery.controller_id)
                .fetch_one(&store.read)
                .await?;
                let body = with_request_url(&delivery.payload, &config.base_url(), links);
                (url, secret, body)
            }
        };
        due.push((
            delivery.id,
            body,
            delivery.attempts,
            url.unwrap_or_default(),
            Signed::Webhook(secret),
        ));
    }
    // Nothing is told of what a power cut could still undo (see `store::flush`).
    if !due.is_empty() {
        store.on_disk().await?;
    }
    for (id, body, attempts, url, signed) in &due {
        let mut post = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone());
        match signed {
            Signed::Webhook(secret) => {
                let timestamp = Utc::now().timestamp();
                post = post
                    .header("webhook-id", id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", sign(secret, id, timestamp, body)?);
            }
            Signed::Processor(processor) => {
                let (domain, signature) =
                    (processor.domain.as_str(), processor.sign(body.as_bytes()));
                post = post
                    .header("x-opendsr-processor-domain", domain)
                    .header("x-opendsr-signature", &signature)
                    .header("x-opengdpr-processor-domain", domain)
                    .header("x-opengdpr-signature", signature);
            }
        }
        let sent = post.send().await;
        let (status, error) = match sent {
            Ok(response) if response.status().is_success() => {
                (Some(response.status().as_u16()), None)
            }
            Ok(response) => (
                Some(response.status().as_u16()),
                Some(format!("the receiver answered HTTP {}", response.status())),
            ),
            Err(e) => (None, Some(format!("could not reach the receiver: {e}"))),
        };
        let attempts = attempts + 1;
        let now = now_ms();
        let (state, next) = match &error {
            None => ("delivered", now),
            Some(_) if attempts >= i64::from(config.webhook_max_attempts) => ("failed", now),
            Some(_) => {
                let delay = crate::retry::backoff(
                    attempts as u32,
                    Duration::from_millis(config.backoff_base_ms),
                    Duration::from_millis(config.backoff_cap_ms),
                );
                ("pending", now + delay.as_millis() as i64)
            }
        };
        metrics::counter!("oubli_webhook_attempts_total", "outcome" => state).increment(1);
        if let Some(error) = &error {
            tracing::warn!(delivery = %id, attempts, state, "webhook delivery failed: {error}");
        }
        let mut tx = store.begin().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, last_status = $4, last_error = $5, \
             delivered_at = CASE WHEN $1 = 'delivered' THEN $6 ELSE NULL END WHERE id = $7",
        )
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(status.map(i64::from))
        .bind(&error)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(attempts)
            .bind(now)
            .bind(status.map(i64::from))
            .bind(&error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(due.len())
}

/// Gives a delivery up with the reason, as its attempt.
async fn give_up(store: &Store, id: &str, error: &str) -> sqlx::Result<()> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let attempts: i64 = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, last_error = $1, next_attempt_at = $2 \
         WHERE id = $3 RETURNING attempts",
    )
    .bind(error)
    .bind(now)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_attempts (delivery_id, attempt, at, status, error) VALUES ($1, $2, $3, NULL, $4)")
        .bind(id)
        .bind(attempts)
        .bind(now)
        .bind(error)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// How a delivery is signed.
enum Signed {
    /// Standard Webhooks, with this secret.
    Webhook(String),
    /// OpenDSR, with the processor's key.
    Processor(Arc<crate::crypto::opendsr::Processor>),
}

/// Sends webhooks and e-mails, and queues the e-mails deadlines call for, until
/// `shutdown` turns true.
pub async fn run(
    store: Store,
    config: Config,
    links: LinkMaker,
    subjects: email::SubjectAddress,
    processor: ProcessorSigner,
    ready: Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mailer = match config.smtp.as_ref().map(email::transport).transpose() {
        Ok(mailer) => mailer,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot use the SMTP settings; e-mails are not sent"
            );
            None
        }
    };
    let mut deadlines_checked = std::time::Instant::now() - Duration::from_secs(3_600);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not sent");
            return;
        }
    };
    while !*shutdown.borrow() {
        if deadlines_checked.elapsed() >= Duration::from_secs(60) {
            deadlines_checked = std::time::Instant::now();
            if let Err(e) = email::queue_deadlines(&store, &config).await {
                tracing::error!(error = format!("{e:#}"), "queueing reminders failed");
            }
        }
        let sent = send_due(&store, &config, &client, &links, &processor).await;
        let mailed = email::send_due(&store, &config, mailer.as_ref(), &links, &subjects).await;
        match (sent, mailed) {
            (Ok(a), Ok(b)) if a + b > 0 => continue,
            (Ok(_), Ok(_)) => {}
            (Err(e), _) => tracing::error!(error = format!("{e:#}"), "sending webhooks failed"),
            (_, Err(e)) => tracing::error!(error = format!("{e:#}"), "sending e-mails failed"),
        }
        tokio::select! {
            () = ready.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_follows_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
