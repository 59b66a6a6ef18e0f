//! Telling the subject, where the controller wants it: an e-mail to the subject's own
//! address (the request's `email` identity) when their data was erased, when their access
//! package is ready, or when the deadline of their request was extended. Each is queued
//! like any e-mail (`email::queue`, recipient `subject`) in the transaction of what it
//! tells; the address is opened from the sealed request only when the message is sent,
//! and never kept in clear (the e-mail's `address` stays empty).
//!
//! The wording is oubli's own, in French and English, unless the controller gave its
//! own for an event: a subject line and a body in which `{controller}`, `{reference}`
//! (the request's `external_ref`, else its id), `{due}` and `{reason}` (of an extension)
//! are replaced.

use crate::audit;
use crate::store::{Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The events the subject can be told of, and the e-mail event each queues.
pub const EVENTS: &[(&str, &str)] = &[
    ("erasure.completed", "subject.erased"),
    ("access.completed", "subject.access_ready"),
    ("request.extended", "subject.extended"),
];

/// The controller's own wording of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// One line, at most 200 characters.
    pub subject: String,
    /// At most 10,000 characters.
    pub body: String,
}

/// What a controller tells its subjects.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Settings {
    /// Of `erasure.completed`, `access.completed`, `request.extended`.
    pub events: Vec<String>,
    /// The controller's own wording, by event; the others are oubli's.
    pub templates: BTreeMap<String, Template>,
    pub updated_at: DateTime<Utc>,
}

/// A controller's settings, `None` when its subjects are told nothing.
///
/// # Errors
/// When the database cannot be read or holds what this build cannot read.
pub async fn settings(store: &Store, controller_id: &str) -> anyhow::Result<Option<Settings>> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT events, templates, updated_at FROM subject_notices WHERE controller_id = $1",
    )
    .bind(controller_id)
    .fetch_optional(&store.read)
    .await?;
    row.map(|(events, templates, updated)| {
        Ok(Settings {
            events: serde_json::from_str(&events)?,
            templates: serde_json::from_str(&templates)?,
            updated_at: to_rfc3339(updated),
        })
    })
    .transpose()
}

/// Sets what a controller's subjects are told, and records it (the events, not the
/// wording).
///
/// # Errors
/// When the database fails.
pub async fn set(
    tx: &mut Tx<'_>,
    controller_id: &str,
    events: &[String],
    templates: &BTreeMap<String, Template>,
    actor: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO subject_notices (controller_id, events, templates, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (controller_id) DO UPDATE SET events = excluded.events, templates = excluded.templates, updated_at = excluded.updated_at",
    )
    .bind(controller_id)
    .bind(serde_json::to_string(events)?)
    .bind(serde_json::to_string(templates)?)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    let worded: Vec<&String> = templates.keys().collect();
    audit::append(
        tx,
        actor,
        "subject_notices.configured",
        None,
        serde_json::json!({ "controller_id": controller_id, "events": events, "own_wording": worded }),
    );
    Ok(())
}

/// Stops telling a controller's subjects anything, and records it; `false` when nothing
/// was told.
///
/// # Errors
/// When the database fails.
pub async fn stop(tx: &mut Tx<'_>, controller_id: &str, actor: &str) -> sqlx::Result<bool> {
    let stopped = sqlx::query("DELETE FROM subject_notices WHERE controller_id = $1")
        .bind(controller_id)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if stopped {
        audit::append(
            tx,
            actor,
            "subject_notices.stopped",
            None,
            serde_json::json!({ "controller_id": controller_id }),
        );
    }
    Ok(stopped)
}

/// Queues the message of `event` (of [`EVENTS`]) to the subject of a request, when its
/// controller tells its subjects of it.
///
/// # Errors
/// When the database fails.
pub async fn queue(tx: &mut Tx<'_>, request_id: &str, event: &str) -> sqlx::Result<()> {
    let events: Option<String> = sqlx::query_scalar(
        "SELECT n.events FROM subject_notices n JOIN requests r ON r.controller_id = n.controller_id WHERE r.id = $1",
    )
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await?;
    queue_told(tx, request_id, event, events.as_deref()).await
}

/// [`queue`] for a caller that read the events the controller tells its subjects of
/// (`subject_notices.events`, `None` when it tells none).
///
/// # Errors
/// When the database fails.
pub async fn queue_told(
    tx: &mut Tx<'_>,
    request_id: &str,
    event: &str,
    events: Option<&str>,
) -> sqlx::Result<()> {
    let Some((_, email_event)) = EVENTS.iter().find(|(e, _)| *e == event) else {
        return Ok(());
    };
    let told = events
        .and_then(|e| serde_json::from_str::<Vec<String>>(e).ok())
        .is_some_and(|e| e.iter().any(|e| e == event));
    if told {
        super::email::queue(tx, request_id, email_event, super::email::SUBJECT, None).await?;
    }
    Ok(())
}

/// What a message to the subject says of its request.
pub struct Facts<'a> {
    pub controller: &'a str,
    pub reference: &'a str,
    pub due: String,
    pub reason: &'a str,
}

/// The subject line and text of the message of an e-mail `event`, in the controller's
/// wording if it gave one (`templates`, the stored JSON), else oubli's.
pub fn compose(event: &str, templates: Option<&str>, facts: &Facts<'_>) -> (String, String) {
    let own = EVENTS
        .iter()
        .find(|(_, e)| *e == event)
        .and_then(|(setting, _)| {
            templates
                .and_then(|t| serde_json::from_str::<BTreeMap<String, Template>>(t).ok())
                .and_then(|mut t| t.remove(*setting))
        });
    let fill = |text: &str| {
        text.replace("{controller}", facts.controller)
            .replace("{reference}", facts.reference)
            .replace("{due}", &facts.due)
            .replace("{reason}", facts.reason)
    };
    if let Some(own) = own {
        return (fill(&own.subject), fill(&own.body));
    }
    let (subject, fr, en) = match event {
        "subject.erased" => (
            "Vos données ont été effacées / Your data was erased",
            "Bonjour,\n\nSuite à votre demande d'effacement ({reference}), {controller} a effacé vos données personnelles de ses systèmes, sauf celles qu'une obligation légale impose de conserver, qui ne servent plus qu'à cette fin.",
            "Hello,\n\nFollowing your erasure request ({reference}), {controller} erased your personal data from its systems, except what a legal obligation requires it to keep, which is used for that purpose only.",
        ),
        "subject.access_ready" => (
            "Votre copie de vos données est prête / Your copy of your data is ready",
            "Bonjour,\n\nLa copie de vos données personnelles demandée ({reference}) est prête ; {controller} vous la transmettra par un moyen sûr.",
            "Hello,\n\nThe copy of your personal data you asked for ({reference}) is ready; {controller} will send it to you by a secure means.",
        ),
        _ => (
            "Le délai de votre demande est prolongé / Your request's deadline was extended",
            "Bonjour,\n\n{controller} prolonge le délai de réponse à votre demande ({reference}) jusqu'au {due}, comme l'article 12(3) du RGPD le permet, pour la raison suivante : {reason}",
            "Hello,\n\n{controller} extended the deadline of your request ({reference}) to {due}, as Art. 12(3) GDPR allows, for this reason: {reason}",
        ),
    };
    (fill(subject), fill(&format!("{fr}\n\n---\n\n{en}\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_wording_is_filled_and_oubli_s_is_bilingual() {
        let facts = Facts {
            controller: "Demo Shop",
            reference: "T-9",
            due: "2027-01-06 10:00 UTC".into(),
            reason: "many systems",
        };
        let (subject, body) = compose("subject.erased", None, &facts);
        assert!(subject.contains("Vos données ont été effacées"));
        assert!(body.contains("Demo Shop a effacé") && body.contains("Demo Shop erased"));
        assert!(body.contains("(T-9)"));
        let own = r#"{"request.extended":{"subject":"Délai : {reference}","body":"{controller}, {due}, {reason}"}}"#;
        let (subject, body) = compose("subject.extended", Some(own), &facts);
        assert_eq!(subject, "Délai : T-9");
        assert_eq!(body, "Demo Shop, 2027-01-06 10:00 UTC, many systems");
        // A wording for another event leaves oubli's.
        let (subject, _) = compose("subject.access_ready", Some(own), &facts);
        assert!(subject.contains("Your copy of your data is ready"));
    }
}
