//! Recipients (Art. 19): the controller lists who it disclosed personal data to; each is
//! told of its completed erasures and rectifications by a signed notice, whose
//! `identities_url` (`GET /v1/notices/{token}`) gives that recipient, for that notice
//! only, who the subject is and what changed.

use super::{ApiError, Json, created, require};
use crate::app::App;
use crate::audit;
use crate::auth::{Caller, Role};
use crate::notify::recipients::{self, NOTICE, Recipient};
use crate::request::rows::{self as requests, Change, Identity};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/controllers/{id}/recipients",
            get(list_recipients).post(add_recipient),
        )
        .route(
            "/v1/controllers/{id}/recipients/{recipient_id}",
            delete(remove_recipient),
        )
        .route("/v1/notices/{token}", get(notice))
}

/// A new recipient.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecipient {
    /// Who it is, e.g. "Mailer Inc. (newsletter)".
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The http(s) URL its notices are sent to.
    pub url: String,
}

/// A recipient just added, with the secret its notices are signed with, shown only once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AddedRecipient {
    pub recipient: Recipient,
    /// `whsec_…`: give it to the recipient, which checks each notice's
    /// `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
}

/// A controller's recipients.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Recipients {
    pub items: Vec<Recipient>,
}

/// What a notice's token opens: the subject and what happened to their data.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notice {
    pub notice_id: String,
    pub request_id: String,
    /// `erasure`: erase the subject's data you hold; `rectification`: apply the changes.
    pub kind: crate::request::Kind,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The recipient it was sent to.
    pub recipient: String,
    pub identities: Vec<Identity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// Add a recipient the controller disclosed personal data to: it will be told of every
/// erasure and rectification of the controller that completes from now on. An admin's
/// step, as a controller's own webhook URL is: oubli sends requests to the URL.
#[utoipa::path(post, path = "/v1/controllers/{id}/recipients", tag = "recipients", params(("id" = String, Path)),
    request_body = NewRecipient, responses((status = 201, body = AddedRecipient)), security(("bearer" = [])))]
pub async fn add_recipient(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<NewRecipient>,
) -> Result<(StatusCode, Json<AddedRecipient>), ApiError> {
    require(&caller, &[Role::Admin])?;
    super::admin::visible_controller(&app, &caller, &id).await?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::field("name", "1 to 200 characters, not blank"));
    }
    super::admin::check_url("url", &body.url)?;
    let mut tx = app.store.begin().await?;
    let (recipient, secret) =
        recipients::create(&mut tx, &id, name, &body.url, &caller.actor()).await?;
    tx.commit().await?;
    Ok(created(AddedRecipient { recipient, secret }))
}

/// The controller's recipients, removed ones included.
#[utoipa::path(get, path = "/v1/controllers/{id}/recipients", tag = "recipients", params(("id" = String, Path)),
    responses((status = 200, body = Recipients)), security(("bearer" = [])))]
pub async fn list_recipients(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Recipients>, ApiError> {
    require(&caller, &[Role::Admin, Role::Controller, Role::Auditor])?;
    super::admin::visible_controller(&app, &caller, &id).await?;
    Ok(Json(Recipients {
        items: recipients::list(&app.store, &id).await?,
    }))
}

/// Remove a recipient: it gets no more notices (those already sent stay listed).
#[utoipa::path(delete, path = "/v1/controllers/{id}/recipients/{recipient_id}", tag = "recipients",
    params(("id" = String, Path), ("recipient_id" = String, Path)),
    responses((status = 204, description = "Removed")), security(("bearer" = [])))]
pub async fn remove_recipient(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, recipient_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    if !recipients::remove(&mut tx, &id, &recipient_id, &caller.actor()).await? {
        return Err(ApiError::NotFound(format!(
            "the controller has no recipient {recipient_id:?} in place"
        )));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a notice tells its recipient: who the subject is and, for a rectification, the
/// new values. The token in the notice's `identities_url` is the credential; it opens
/// this notice only, for 30 days, and every opening is in the audit trail.
#[utoipa::path(get, path = "/v1/notices/{token}", tag = "recipients", params(("token" = String, Path)),
    responses((status = 200, body = Notice), (status = 404, body = super::ErrorBody), (status = 410, body = super::ErrorBody)))]
pub async fn notice(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
) -> Result<Json<Notice>, ApiError> {
    let unknown = || ApiError::NotFound("no notice has this token".into());
    let id = app.keys.link_id(NOTICE, &token).ok_or_else(unknown)?;
    let found = recipients::notice(&app.store, id)
        .await?
        .ok_or_else(unknown)?;
    if found.recipient_removed {
        return Err(ApiError::Gone(
            "the controller removed this recipient: its notices' links no longer work".into(),
        ));
    }
    if found.expired(crate::store::now_ms()) {
        return Err(ApiError::Gone(format!(
            "this notice's link worked for {} days and has expired; ask the controller",
            recipients::NOTICE_DAYS
        )));
    }
    let request = requests::get(&app.store, &app.keys.sealer, &found.request_id)
        .await?
        .ok_or_else(unknown)?;
    if request.subject_redacted_at.is_some() || request.subject_error.is_some() {
        return Err(ApiError::Gone(
            "the subject's data of this request is no longer held (its retention period has passed, or it cannot be opened); ask the controller".into(),
        ));
    }
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        &format!("notice:{}", found.id),
        "notice.opened",
        Some(&request.id),
        serde_json::json!({ "recipient": found.recipient }),
    );
    tx.commit().await?;
    Ok(Json(Notice {
        notice_id: found.id,
        request_id: request.id,
        kind: request.kind,
        completed_at: request.completed_at,
        recipient: found.recipient,
        identities: request.identities,
        changes: request.changes,
    }))
}
