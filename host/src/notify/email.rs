//! E-mail to people over SMTP (lettre): to the controller's contact address when a request
//! is forwarded (with its approval link) and when its due date nears without a decision;
//! to the DPO when a request completes, fails or becomes overdue; to the controller when
//! a retention run's destruction report is issued (the signed report attached).
//!
//! A message is queued as a row in the transaction of what it tells, naming its recipient
//! by role (`controller`, `dpo`); its address and text are made when it is sent, from the
//! request as it is then. Messages say the request's kind, dates and a link, in French and
//! English, and never the subject's identities: the controller sees those behind its link.
//! Each is retried with backoff like a webhook; one that cannot be sent (no `[smtp]`, no
//! address) is marked `skipped` with the reason.

use super::LinkMaker;
use crate::config::{Config, Smtp, SmtpSecurity};
use crate::store::{Store, Tx, now_ms};
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use std::time::Duration;

/// The controller, at its contact address.
pub const CONTROLLER: &str = "controller";
/// The DPO: the e-mail address of the token that filed the request, else `smtp.dpo`.
pub const DPO: &str = "dpo";
/// The data subject, at the request's `email` identity (`subject.rs`).
pub const SUBJECT: &str = "subject";

/// Opens the subject's e-mail address from a request's id and sealed identities, where
/// the keys are; `None` when it names none (or can no longer be opened).
pub type SubjectAddress = std::sync::Arc<dyn Fn(&str, &str) -> Option<String> + Send + Sync>;

/// One e-mail and how its sending went.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Email {
    pub id: String,
    /// `request.forwarded`, `request.reminder`, `request.completed`, `request.failed`
    /// or `request.overdue`.
    pub event: String,
    /// `controller`, `dpo` or `subject`.
    pub recipient: String,
    /// The address it was sent to, once looked up; never kept for the subject.
    pub address: Option<String>,
    /// `pending`, `sent`, `failed` (given up) or `skipped` (it could not be sent; see
    /// `last_error`).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    #[schema(value_type = Option<String>)]
    #[sqlx(skip)]
    pub sent_at: Option<DateTime<Utc>>,
    /// Every attempt so far, oldest first (a `skipped` message has one, with the reason).
    #[sqlx(skip)]
    pub log: Vec<EmailAttempt>,
    #[serde(skip)]
    #[schema(ignore)]
    delivered_at: Option<i64>,
}

/// One attempt at sending an e-mail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmailAttempt {
    pub attempt: i64,
    #[schema(value_type = String)]
    pub at: DateTime<Utc>,
    /// Why it was not sent, when it was not.
    pub error: Option<String>,
}

/// Queues an e-mail about a request, at most once per event and recipient.
///
/// # Errors
/// When the database fails.
pub async fn queue(
    tx: &mut Tx<'_>,
    request_id: &str,
    event: &str,
    recipient: &str,
    link_id: Option<&str>,
) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO emails (id, request_id, event, recipient, link_id, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6) ON CONFLICT (request_id, event, recipient) DO NOTHING",
    )
    .bind(format!("eml_{}", uuid::Uuid::now_v7().simple()))
    .bind(request_id)
    .bind(event)
    .bind(recipient)
    .bind(link_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Queues the e-mail carrying a retention run's destruction report to the controller.
///
/// # Errors
/// When the database fails.
pub async fn queue_report(tx: &mut Tx<'_>, run_id: &str) -> sqlx::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO emails (id, run_id, event, recipient, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
    )
    .bind(format!("eml_{}", uuid::Uuid::now_v7().simple()))
    .bind(run_id)
    .bind(REPORT_EVENT)
    .bind(CONTROLLER)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The event of a destruction report, by webhook and by e-mail.
pub const REPORT_EVENT: &str = "retention.report";

/// A request's e-mails, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, request_id: &str) -> sqlx::Result<Vec<Email>> {
    list_about(store, super::About::Request(request_id)).await
}

/// The e-mails about a request or a run, oldest first.
///
/// # Errors
/// When the database cannot be read.
pub async fn list_about(store: &Store, about: super::About<'_>) -> sqlx::Result<Vec<Email>> {
    let (column, id) = about.column();
    let mut emails: Vec<Email> = sqlx::query_as(&format!(
        "SELECT id, event, recipient, address, status, attempts, last_error, delivered_at FROM emails WHERE {column} = $1 ORDER BY id",
    ))
    .bind(&id)
    .fetch_all(&store.read)
    .await?;
    let attempts: Vec<(String, i64, i64, Option<String>)> = sqlx::query_as(&format!(
        "SELECT a.email_id, a.attempt, a.at, a.error FROM email_attempts a \
         JOIN emails e ON e.id = a.email_id WHERE e.{column} = $1 ORDER BY a.email_id, a.attempt",
    ))
    .bind(&id)
    .fetch_all(&store.read)
    .await?;
    for email in &mut emails {
        email.sent_at = email.delivered_at.and_then(DateTime::from_timestamp_millis);
        email.log = attempts
            .iter()
            .filter(|(id, ..)| *id == email.id)
            .map(|(_, attempt, at, error)| EmailAttempt {
                attempt: *attempt,
                at: DateTime::from_timestamp_millis(*at).unwrap_or_default(),
                error: error.clone(),
            })
            .collect();
    }
    Ok(emails)
}

/// Queues what the clock calls for: a reminder, with a new approval link, to the
/// controller of each request still awaiting its decision within `reminder_days` of its
/// due date; a notice to the DPO of each request that became overdue.
///
/// # Errors
/// When the database fails.
pub async fn queue_deadlines(store: &Store, config: &Config) -> anyhow::Result<()> {
    let now = now_ms();
    let soon = now + i64::try_from(config.reminder_days).unwrap_or(0) * 86_400_000;
    let near: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM requests r WHERE status = 'awaiting_controller' AND due_at <= $1 \
         AND NOT EXISTS (SELECT 1 FROM emails e WHERE e.request_id = r.id AND e.event = 'request.reminder') LIMIT 100",
    )
    .bind(soon)
    .fetch_all(&store.read)
    .await?;
    let overdue: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM requests r WHERE status NOT IN ('completed', 'rejected', 'cancelled') AND due_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM emails e WHERE e.request_id = r.id AND e.event = 'request.overdue') LIMIT 100",
    )
    .bind(now)
    .fetch_all(&store.read)
    .await?;
    if near.is_empty() && overdue.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    for (id,) in near {
        let link = super::links::create(&mut tx, &id, config.approval_link_hours).await?;
        queue(&mut tx, &id, "request.reminder", CONTROLLER, Some(&link)).await?;
    }
    for (id,) in overdue {
        queue(&mut tx, &id, "request.overdue", DPO, None).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// An SMTP client for the configuration.
///
/// # Errors
/// When the host name cannot be used for TLS.
pub fn transport(smtp: &Smtp) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let builder = match smtp.security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?,
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
        SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
    };
    let port = smtp.port.unwrap_or(match smtp.security {
        SmtpSecurity::Tls => 465,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::None => 25,
    });
    let mut builder = builder.port(port).timeout(Some(Duration::from_secs(20)));
    if let Some(user) = &smtp.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            smtp.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: String,
    request_id: Option<String>,
    run_id: Option<String>,
    event: String,
    recipient: String,
    link_id: Option<String>,
    attempts: i64,
}

/// What a message says about its request.
#[derive(sqlx::FromRow)]
struct About {
    kind: String,
    status: String,
    received_at: i64,
    due_at: i64,
    controller_email: Option<String>,
    token_email: Option<String>,
    controller_name: String,
    external_ref: Option<String>,
    extension_reason: Option<String>,
    identities: String,
    subject_redacted_at: Option<i64>,
    templates: Option<String>,
}

/// How long a claimed message is kept from other senders.
const CLAIM_MS: i64 = 60_000;

/// Sends the e-mails that are due; returns how many were tried.
///
/// # Errors
/// When the database fails.
pub async fn send_due(
    store: &Store,
    config: &Config,
    mailer: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    links: &LinkMaker,
    subjects: &SubjectAddress,
) -> anyhow::Result<usize> {
    let skip_locked = store.skip_locked();
    let now = now_ms();
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE emails SET next_attempt_at = $2 \
         WHERE id IN (SELECT id FROM emails WHERE status = 'pending' AND next_attempt_at <= $1 \
                      ORDER BY next_attempt_at LIMIT 16{skip_locked}) \
         RETURNING id, request_id, run_id, event, recipient, link_id, attempts",
    ))
    .bind(now)
    .bind(now + CLAIM_MS)
    .fetch_all(&store.write)
    .await?;
    for email in &claimed {
        if let Some(run) = &email.run_id {
            let (outcome, address) = report_mail(store, config, mailer, run).await?;
            record(store, config, email, address.as_deref(), outcome).await?;
            continue;
        }
        let request_id = email.request_id.as_deref().unwrap_or_default();
        let about: Option<About> = sqlx::query_as(
            "SELECT r.kind, r.status, r.received_at, r.due_at, c.contact_email AS controller_email, t.email AS token_email, \
             c.name AS controller_name, r.external_ref, r.extension_reason, r.identities, r.subject_redacted_at, n.templates \
             FROM requests r JOIN controllers c ON c.id = r.controller_id LEFT JOIN tokens t ON t.id = r.submitted_by \
             LEFT JOIN subject_notices n ON n.controller_id = r.controller_id WHERE r.id = $1",
        )
        .bind(request_id)
        .fetch_optional(&store.read)
        .await?;
        let link_expires: Option<i64> = match &email.link_id {
            Some(id) => {
                sqlx::query_scalar("SELECT expires_at FROM approval_links WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&store.read)
                    .await?
            }
            None => None,
        };
        let smtp = config.smtp.as_ref();
        let address = about.as_ref().and_then(|a| match email.recipient.as_str() {
            CONTROLLER => a.controller_email.clone(),
            SUBJECT if a.subject_redacted_at.is_some() => None,
            SUBJECT => subjects(request_id, &a.identities),
            _ => a
                .token_email
                .clone()
                .or_else(|| smtp.and_then(|s| s.dpo.clone())),
        });
        let outcome = match (smtp, mailer, &about, &address) {
            (None, _, _, _) | (_, None, _, _) => Skip(
                NOT_CONFIGURED.into(),
            ),
            (_, _, None, _) => Skip("the request no longer exists".into()),
            // A link to decide on a request that was decided (or cancelled) meanwhile.
            (_, _, Some(about), _)
                if email.link_id.is_some() && about.status != "awaiting_controller" =>
            {
                Skip(format!(
                    "the request is {} now; the controller has nothing left to decide",
                    about.status
                ))
            }
            (_, _, _, None) if email.recipient == CONTROLLER => Skip(
                "the controller has no contact e-mail address (contact_email)".into(),
            ),
            (_, _, _, None) if email.recipient == SUBJECT => Skip(
                "the request names no e-mail address of the subject (or it is no longer held)"
                    .into(),
            ),
            (_, _, _, None) => Skip(
                "no address for the DPO: the token that filed the request has none, and smtp.dpo is unset".into(),
            ),
            (Some(smtp), Some(mailer), Some(about), Some(address)) => {
                let link = email
                    .link_id
                    .as_deref()
                    .map(|id| links(super::links::APPROVAL, id));
                let text = if email.recipient == SUBJECT {
                    let facts = super::subject::Facts {
                        controller: &about.controller_name,
                        reference: about.external_ref.as_deref().unwrap_or(request_id),
                        due: day(about.due_at),
                        reason: about.extension_reason.as_deref().unwrap_or_default(),
                    };
                    super::subject::compose(&email.event, about.templates.as_deref(), &facts)
                } else {
                    compose(
                        &email.event,
                        request_id,
                        about,
                        link.as_deref(),
                        link_expires,
                        &config.base_url(),
                    )
                };
                match send(store, mailer, smtp, address, text, None).await {
                    Ok(()) => Sent,
                    Err(e) => Retry(e),
                }
            }
        };
        // The subject's address is personal data: it is not kept with the message.
        let kept = address.as_deref().filter(|_| email.recipient != SUBJECT);
        record(store, config, email, kept, outcome).await?;
    }
    Ok(claimed.len())
}

use Outcome::{Retry, Sent, Skip};

enum Outcome {
    Sent,
    Retry(String),
    Skip(String),
}

/// A file sent with a message: its name, media type and content.
struct Attachment {
    name: String,
    media_type: &'static str,
    content: String,
}

/// Sends a message, once nothing it tells of can be undone by a power cut (see
/// `store::flush`).
async fn send(
    store: &Store,
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    smtp: &Smtp,
    address: &str,
    (subject, body): (String, String),
    attachment: Option<Attachment>,
) -> Result<(), String> {
    store
        .on_disk()
        .await
        .map_err(|e| format!("the service database cannot be written to disk: {e}"))?;
    let to: Mailbox = address
        .parse()
        .map_err(|e| format!("the recipient's address is not an e-mail address: {e}"))?;
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("smtp.from is not an e-mail address: {e}"))?;
    let text = lettre::message::SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .header(lettre::message::header::ContentTransferEncoding::Base64)
        .body(body);
    let builder = Message::builder().from(from).to(to).subject(subject);
    let message = match attachment {
        None => builder.singlepart(text),
        Some(file) => {
            let media_type = ContentType::parse(file.media_type)
                .map_err(|e| format!("the attachment's media type: {e}"))?;
            builder.multipart(
                lettre::message::MultiPart::mixed()
                    .singlepart(text)
                    .singlepart(
                        lettre::message::Attachment::new(file.name).body(file.content, media_type),
                    ),
            )
        }
    }
    .map_err(|e| format!("the message could not be built: {e}"))?;
    mailer
        .send(message)
        .await
        .map(drop)
        .map_err(|e| format!("the SMTP server did not take the message: {e}"))
}

/// The e-mail of a retention run's destruction report to the controller's contact
/// address: what it counts, in French and English, with the signed report attached (the
/// document `oubli certificate verify` checks); and the address it went to.
async fn report_mail(
    store: &Store,
    config: &Config,
    mailer: Option<&AsyncSmtpTransport<Tokio1Executor>>,
    run_id: &str,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let row: Option<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT r.report, c.contact_email, c.id FROM retention_runs r JOIN controllers c ON c.id = r.controller_id WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_optional(&store.read)
    .await?;
    let (Some(smtp), Some(mailer)) = (config.smtp.as_ref(), mailer) else {
        return Ok((Skip(NOT_CONFIGURED.into()), None));
    };
    let Some((Some(report), address, controller_id)) = row else {
        return Ok((Skip("the run has no report".into()), None));
    };
    let Some(address) = address else {
        return Ok((
            Skip("the controller has no contact e-mail address (contact_email)".into()),
            None,
        ));
    };
    let signed: serde_json::Value = serde_json::from_str(&report)?;
    let page = format!(
        "{}/v1/controllers/{controller_id}/retention-runs/{run_id}/report.html",
        config.base_url().trim_end_matches('/')
    );
    let text = compose_report(&signed["certificate"], &page);
    let attachment = Attachment {
        name: format!("destruction-report-{run_id}.json"),
        media_type: "application/json",
        content: serde_json::to_string_pretty(&signed)?,
    };
    let outcome = match send(store, mailer, smtp, &address, text, Some(attachment)).await {
        Ok(()) => Sent,
        Err(e) => Retry(e),
    };
    Ok((outcome, Some(address)))
}

/// The subject line and text of a destruction report's e-mail: its rule and period, the
/// requests by status and, per system and collection, what was deleted, anonymised and
/// retained. It names no one.
fn compose_report(report: &serde_json::Value, page: &str) -> (String, String) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let run = &report["run"];
    let mut counts = String::new();
    for system in report["systems"].as_array().into_iter().flatten() {
        for c in system["collections"].as_array().into_iter().flatten() {
            counts.push_str(&format!(
                "  {} / {}: {} deleted / supprimés, {} anonymised / anonymisés, {} retained / conservés\n",
                text(&system["name"]),
                text(&c["name"]),
                text(&c["deleted"]),
                text(&c["anonymised"]),
                text(&c["retained"]),
            ));
        }
    }
    if counts.is_empty() {
        counts.push_str("  (none / aucun)\n");
    }
    let statuses = report["requests"]["by_status"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let note = report["note"]
        .as_str()
        .map(|n| format!("\n{n}\n"))
        .unwrap_or_default();
    (
        format!(
            "[oubli] Procès-verbal de destruction / Destruction report: {}{}",
            text(&run["rule"]),
            match report["requests"]["by_status"]["failed"].as_u64() {
                Some(failed) if failed > 0 =>
                    format!(" ({failed} en échec / failed: not counted as erased)"),
                _ => String::new(),
            }
        ),
        format!(
            "Procès-verbal de destruction de la règle de conservation {rule} (passage du {from} au {to}).\n\
             Destruction report of the retention rule {rule} (run from {from} to {to}).\n\n\
             Demandes d'effacement déposées / Erasure requests filed: {filed} ({statuses})\n\n\
             Par système et collection / By system and collection:\n{counts}{note}\n\
             Le rapport signé est joint ; vérifiez-le avec `oubli certificate verify`. Page imprimable :\n\
             The signed report is attached; verify it with `oubli certificate verify`. Printable page:\n{page}\n\n\
             -- \noubli, for your data protection officer. / pour votre délégué à la protection des données.\n",
            rule = text(&run["rule"]),
            from = text(&report["period"]["from"]),
            to = text(&report["period"]["to"]),
            filed = text(&report["requests"]["filed"]),
        ),
    )
}

/// Why an e-mail is skipped when the operator configured no SMTP server.
const NOT_CONFIGURED: &str = "e-mail is not configured ([smtp] in the configuration)";

/// Whether this process already warned that e-mail is not configured: that is said
/// once, not for every e-mail (each is still recorded as skipped, and counted).
static TOLD_NOT_CONFIGURED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

async fn record(
    store: &Store,
    config: &Config,
    email: &Claimed,
    address: Option<&str>,
    outcome: Outcome,
) -> anyhow::Result<()> {
    let attempts = email.attempts + 1;
    let now = now_ms();
    let (status, next, error) = match outcome {
        Sent => ("sent", now, None),
        Skip(reason) => ("skipped", now, Some(reason)),
        Retry(e) if attempts >= i64::from(config.webhook_max_attempts) => ("failed", now, Some(e)),
        Retry(e) => {
            let delay = crate::retry::backoff(
                attempts as u32,
                Duration::from_millis(config.backoff_base_ms),
                Duration::from_millis(config.backoff_cap_ms),
            );
            ("pending", now + delay.as_millis() as i64, Some(e))
        }
    };
    metrics::counter!("oubli_email_attempts_total", "outcome" => status).increment(1);
    if let Some(error) = &error {
        let not_configured = error == NOT_CONFIGURED;
        if not_configured && TOLD_NOT_CONFIGURED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::debug!(email = %email.id, attempts, status, "e-mail not sent: {error}");
        } else {
            let once = if not_configured {
                "; the next e-mails skipped for this reason are logged at debug level (each is listed as skipped with its request)"
            } else {
                ""
            };
            tracing::warn!(email = %email.id, attempts, status, "e-mail not sent: {error}{once}");
        }
    }
    // A sent e-mail is recorded durably, so that a power cut does not send it twice; an
    // attempt that sent nothing may be lost to one (it is then made again).
    let mut tx = if status == "sent" {
        store.begin().await?
    } else {
        store.relaxed().await?
    };
    sqlx::query(
        "UPDATE emails SET status = $1, attempts = $2, next_attempt_at = $3, last_error = $4, address = $5, \
         delivered_at = CASE WHEN $1 = 'sent' THEN $6 ELSE NULL END WHERE id = $7",
    )
    .bind(status)
    .bind(attempts)
    .bind(next)
    .bind(&error)
    .bind(address)
    .bind(now)
    .bind(&email.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO email_attempts (email_id, attempt, at, error) VALUES ($1, $2, $3, $4)",
    )
    .bind(&email.id)
    .bind(attempts)
    .bind(now)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A date as people read it in a message or a page: `2026-12-06 14:03 UTC`.
pub fn day(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The subject line and the text of a message, in French then English.
fn compose(
    event: &str,
    request_id: &str,
    about: &About,
    link: Option<&str>,
    link_expires: Option<i64>,
    base_url: &str,
) -> (String, String) {
    let (kind_fr, kind_en) = match about.kind.as_str() {
        "access" => ("d'accès", "access"),
        "rectification" => ("de rectification", "rectification"),
        "objection" => ("d'opposition", "objection"),
        _ => ("d'effacement", "erasure"),
    };
    let (received, due) = (day(about.received_at), day(about.due_at));
    let console = format!(
        "{}/console/requests/{request_id}",
        base_url.trim_end_matches('/')
    );
    let until = link_expires.map(day).unwrap_or_default();
    let (subject_fr, subject_en, fr, en) = match event {
        "request.forwarded" | "request.reminder" => {
            let link = link.unwrap_or_default();
            let (subject_fr, subject_en, lead_fr, lead_en) = if event == "request.reminder" {
                (
                    format!("Rappel : demande {kind_fr} en attente de votre décision"),
                    format!("Reminder: {kind_en} request awaiting your decision"),
                    format!(
                        "La demande {kind_fr} {request_id}, reçue le {received}, attend toujours votre décision ; elle doit être traitée avant le {due}."
                    ),
                    format!(
                        "The {kind_en} request {request_id}, received {received}, still awaits your decision; it is due {due}."
                    ),
                )
            } else {
                (
                    format!("Demande {kind_fr} à confirmer"),
                    format!("{kind_en} request to confirm"),
                    format!(
                        "Une demande {kind_fr} ({request_id}) vous a été transmise le {received} ; elle doit être traitée avant le {due}."
                    ),
                    format!(
                        "{} {kind_en} request ({request_id}) was forwarded to you on {received}; it is due {due}.",
                        if kind_en.starts_with(['a', 'e', 'i', 'o', 'u']) {
                            "An"
                        } else {
                            "A"
                        }
                    ),
                )
            };
            (
                subject_fr,
                subject_en,
                format!(
                    "{lead_fr}\n\nOuvrez ce lien pour voir la demande et l'approuver ou la rejeter (il sert une fois, jusqu'au {until}) :\n{link}"
                ),
                format!(
                    "{lead_en}\n\nOpen this link to see the request and approve or reject it (it works once, until {until}):\n{link}"
                ),
            )
        }
        "request.completed" => (
            format!("Demande {kind_fr} terminée"),
            format!("{kind_en} request completed"),
            format!(
                "La demande {kind_fr} {request_id} est terminée. Son résultat et ses preuves :\n{console}"
            ),
            format!(
                "The {kind_en} request {request_id} is completed. Its result and evidence:\n{console}"
            ),
        ),
        "request.failed" => (
            format!("Demande {kind_fr} en échec"),
            format!("{kind_en} request failed"),
            format!(
                "La demande {kind_fr} {request_id} a échoué sur au moins un système ; elle doit être traitée avant le {due}. Détails et relance :\n{console}"
            ),
            format!(
                "The {kind_en} request {request_id} failed on at least one system; it is due {due}. Details and retry:\n{console}"
            ),
        ),
        _ => (
            format!("Demande {kind_fr} en retard"),
            format!("{kind_en} request overdue"),
            format!(
                "La demande {kind_fr} {request_id} devait être traitée avant le {due} et ne l'est pas."
            ),
            format!("The {kind_en} request {request_id} was due {due} and is not done."),
        ),
    };
    let mut subject_en = subject_en;
    if let Some(first) = subject_en.get(..1) {
        subject_en = first.to_uppercase() + &subject_en[1..];
    }
    (
        format!("[oubli] {subject_fr} / {subject_en}"),
        format!(
            "(English below)\n\n{fr}\n\n-- \n\n{en}\n\n-- \noubli, for your data protection officer. / pour votre délégué à la protection des données.\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_holds_its_link_and_no_identity() {
        let about = About {
            kind: "erasure".into(),
            status: "awaiting_controller".into(),
            received_at: 0,
            due_at: 86_400_000 * 31,
            controller_email: None,
            token_email: None,
            controller_name: "Demo Shop".into(),
            external_ref: None,
            extension_reason: None,
            identities: String::new(),
            subject_redacted_at: None,
            templates: None,
        };
        let (subject, body) = compose(
            "request.forwarded",
            "req_1",
            &about,
            Some("https://dsr.example.org/approve/lnk_1.mac"),
            Some(86_400_000 * 7),
            "https://dsr.example.org",
        );
        assert!(
            subject.contains("Demande d'effacement à confirmer"),
            "{subject}"
        );
        assert!(subject.contains("Erasure request to confirm"), "{subject}");
        assert!(body.contains("https://dsr.example.org/approve/lnk_1.mac"));
        assert!(body.contains("1970-02-01 00:00 UTC"), "{body}");
        assert!(body.contains("1970-01-08 00:00 UTC"), "{body}");
    }
}
