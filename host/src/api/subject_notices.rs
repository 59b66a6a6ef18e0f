//! What a controller's subjects are told by e-mail (`notify::subject`): set, read and
//! stopped by the controller (or an admin).

use super::{ApiError, Json};
use crate::app::App;
use crate::auth::Caller;
use crate::notify::subject::{self, EVENTS, Settings, Template};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new().route(
        "/v1/controllers/{id}/subject-notices",
        put(configure_subject_notices)
            .get(read_subject_notices)
            .delete(stop_subject_notices),
    )
}

/// What to tell the subjects.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Configure {
    /// Of `erasure.completed` (their data was erased), `access.completed` (their copy is
    /// ready), `request.extended` (the deadline was extended, with the reason).
    #[schema(min_items = 1)]
    pub events: Vec<String>,
    /// The controller's own wording, by event (`{controller}`, `{reference}`, `{due}`,
    /// `{reason}` are replaced); oubli's French and English otherwise.
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
}

/// Whether the subjects are told anything, and what.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NoticesState {
    pub told: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
}

/// Tell the controller's subjects by e-mail, at the request's `email` identity, of the
/// events named, from now on.
#[utoipa::path(put, path = "/v1/controllers/{id}/subject-notices", tag = "subject notices", params(("id" = String, Path)),
    request_body = Configure, responses((status = 200, body = NoticesState)), security(("bearer" = [])))]
pub async fn configure_subject_notices(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Configure>,
) -> Result<Json<NoticesState>, ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    let known: Vec<&str> = EVENTS.iter().map(|(e, _)| *e).collect();
    if body.events.is_empty() {
        return Err(ApiError::field(
            "events",
            "name at least one event; DELETE stops the notices",
        ));
    }
    for (i, event) in body.events.iter().enumerate() {
        if !known.contains(&event.as_str()) {
            return Err(ApiError::field(
                format!("events[{i}]"),
                format!(
                    "{event:?} is not an event the subject can be told of: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    for (event, template) in &body.templates {
        let field = |part: &str| format!("templates.{event}.{part}");
        if !body.events.contains(event) {
            return Err(ApiError::field(
                format!("templates.{event}"),
                "a wording for an event that is not told",
            ));
        }
        let subject = template.subject.trim();
        if subject.is_empty() || subject.chars().count() > 200 || subject.contains(['\r', '\n']) {
            return Err(ApiError::field(
                field("subject"),
                "one line of 1 to 200 characters",
            ));
        }
        if template.body.trim().is_empty() || template.body.chars().count() > 10_000 {
            return Err(ApiError::field(field("body"), "1 to 10,000 characters"));
        }
    }
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    let mut tx = app.store.begin().await?;
    subject::set(&mut tx, &id, &events, &body.templates, &caller.actor()).await?;
    tx.commit().await?;
    let settings = subject::settings(&app.store, &id).await?;
    Ok(Json(NoticesState {
        told: settings.is_some(),
        settings,
    }))
}

/// What the controller's subjects are told.
#[utoipa::path(get, path = "/v1/controllers/{id}/subject-notices", tag = "subject notices", params(("id" = String, Path)),
    responses((status = 200, body = NoticesState)), security(("bearer" = [])))]
pub async fn read_subject_notices(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<NoticesState>, ApiError> {
    super::admin::visible_controller(&app, &caller, &id).await?;
    let settings = subject::settings(&app.store, &id).await?;
    Ok(Json(NoticesState {
        told: settings.is_some(),
        settings,
    }))
}

/// Stop telling the controller's subjects (messages already queued are still sent).
#[utoipa::path(delete, path = "/v1/controllers/{id}/subject-notices", tag = "subject notices", params(("id" = String, Path)),
    responses((status = 204, description = "Stopped"), (status = 409, description = "Nothing was told", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop_subject_notices(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    if !subject::stop(&mut tx, &id, &caller.actor()).await? {
        return Err(ApiError::Conflict(
            "the controller's subjects are told nothing".into(),
        ));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
