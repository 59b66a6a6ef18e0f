//! The OpenDSR API (version 2.0, formerly OpenGDPR), beside `/v1`: a controller's
//! platform sends its requests here as it would to any processor that speaks it.
//!
//! - `GET /opendsr/v1/discovery`: what oubli takes, and where its certificate is.
//! - `POST /opendsr/v1/requests` (and the earlier `/opengdpr_requests`): an erasure,
//!   access or portability request, answered 201 with the request as received, base64
//!   (`encoded_request`), and `processor_signature` over it.
//! - `GET …/requests/{subject_request_id}`: its OpenDSR status.
//! - `DELETE …/requests/{subject_request_id}`: cancels it while it is `pending`.
//!
//! Authentication is by oubli's bearer tokens. A controller's token sends its own
//! instruction, so the request is approved at once; a DPO's (or an admin's) names the
//! controller in its extension (`extensions["<our domain>"].controller_id`) and the
//! request waits for the controller's confirmation like any other. Answers and the
//! status callbacks are signed with the processor's key (`crypto::opendsr`); errors are
//! 400 (or 401, 403, 404) with the specification's `error` object, naming the field.

use crate::app::App;
use crate::auth::{Caller, Role};
use crate::notify::opendsr::{Link, status_of};
use crate::request::Kind;
use crate::request::intake::{Accepted, Submission};
use crate::request::rows::{IdentityInput, NewRequest};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The version of the specification this API follows.
pub const API_VERSION: &str = "2.0";

/// OpenDSR identity types oubli takes, and the identity kinds they become.
const IDENTITY_TYPES: [(&str, &str); 2] = [
    ("email", "email"),
    ("controller_customer_id", "customer-id"),
];

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/opendsr/v1/discovery", get(discovery))
        .route("/opendsr/v1/certificate.pem", get(certificate))
        .route("/opendsr/v1/requests", axum::routing::post(create))
        .route("/opendsr/v1/requests/{id}", get(status).delete(cancel))
        .route(
            "/opendsr/v1/opengdpr_requests",
            axum::routing::post(create_v1),
        )
        .route(
            "/opendsr/v1/opengdpr_requests/{id}",
            get(status).delete(cancel),
        )
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_JSON_BODY))
}

/// An OpenDSR error: its HTTP status, what went wrong, and the field at fault.
#[derive(Debug)]
pub struct OpenDsrError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl OpenDsrError {
    fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        OpenDsrError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    fn status(status: StatusCode, message: impl Into<String>) -> Self {
        OpenDsrError {
            status,
            message: message.into(),
            field: None,
        }
    }
}

impl From<anyhow::Error> for OpenDsrError {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "an OpenDSR call failed");
        OpenDsrError::status(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<sqlx::Error> for OpenDsrError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

impl IntoResponse for OpenDsrError {
    fn into_response(self) -> Response {
        let errors: Vec<Value> = self
            .field
            .iter()
            .map(
                |field| json!({ "domain": "Validation", "reason": field, "message": self.message }),
            )
            .collect();
        let mut body = json!({ "error": { "code": self.status.as_u16(), "message": self.message, "errors": errors } });
        if let Some(field) = &self.field {
            body["error"]["field"] = field.clone().into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
        response
    }
}

/// A JSON answer signed with the processor's key, with the headers of both versions.
async fn signed(
    app: &Arc<App>,
    status: StatusCode,
    body: &Value,
) -> Result<Response, OpenDsrError> {
    let processor = processor(app).await?;
    // Signed once what it says is on disk, relaxed commits included (a request's
    // completion is one): see `store::flush`.
    app.store
        .everything_on_disk()
        .await
        .map_err(anyhow::Error::from)?;
    let bytes = body.to_string();
    let signature = processor.sign(bytes.as_bytes());
    let mut response = (status, [("content-type", "application/json")], bytes).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-opendsr-processor-domain", &processor.domain),
        ("x-opendsr-signature", &signature),
        ("x-opengdpr-processor-domain", &processor.domain),
        ("x-opengdpr-signature", &signature),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

/// The processor's key and certificate, made off the async threads the first time.
async fn processor(app: &Arc<App>) -> Result<Arc<crate::crypto::opendsr::Processor>, OpenDsrError> {
    let app = app.clone();
    Ok(tokio::task::spawn_blocking(move || app.processor())
        .await
        .map_err(anyhow::Error::from)??)
}

fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What oubli takes: OpenDSR 2.0; e-mail addresses and the controller's customer ids,
/// raw; erasure, access and portability; and where the certificate that signs its answers
/// and callbacks is.
#[utoipa::path(get, path = "/opendsr/v1/discovery", tag = "opendsr",
    responses((status = 200, description = "`{api_version, supported_identities, supported_subject_request_types, processor_certificate}`, signed (`X-OpenDSR-Signature`)", body = Object)))]
pub async fn discovery(State(app): State<Arc<App>>) -> Result<Response, OpenDsrError> {
    let identities: Vec<Value> = IDENTITY_TYPES
        .iter()
        .map(|(kind, _)| json!({ "identity_type": kind, "identity_format": "raw" }))
        .collect();
    let body = json!({
        "api_version": API_VERSION,
        "supported_identities": identities,
        "supported_subject_request_types": ["erasure", "access", "portability"],
        "processor_certificate": format!("{}/opendsr/v1/certificate.pem", app.config.base_url().trim_end_matches('/')),
    });
    signed(&app, StatusCode::OK, &body).await
}

/// The X.509 certificate (PEM) whose key signs oubli's OpenDSR answers and callbacks.
#[utoipa::path(get, path = "/opendsr/v1/certificate.pem", tag = "opendsr",
    responses((status = 200, content_type = "application/x-pem-file", body = String)))]
pub async fn certificate(State(app): State<Arc<App>>) -> Result<Response, OpenDsrError> {
    let processor = processor(&app).await?;
    Ok((
        [("content-type", "application/x-pem-file")],
        processor.certificate.clone(),
    )
        .into_response())
}

/// An OpenDSR request as sent.
#[derive(Debug, Deserialize)]
struct Incoming {
    subject_request_id: String,
    subject_request_type: String,
    submitted_time: String,
    #[serde(default)]
    subject_identities: Vec<IncomingIdentity>,
    api_version: Option<String>,
    #[serde(default)]
    status_callback_urls: Vec<String>,
    regulation: Option<String>,
    #[serde(default)]
    extensions: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct IncomingIdentity {
    identity_type: String,
    identity_value: String,
    identity_format: String,
}

/// Submit an OpenDSR request (version 2.0: `regulation` is required).
#[utoipa::path(post, path = "/opendsr/v1/requests", tag = "opendsr", request_body = Object,
    responses((status = 201, description = "`{controller_id, expected_completion_time, received_time, encoded_request, subject_request_id, processor_signature}`, signed", body = Object),
              (status = 400, description = "`{error: {code, message, errors}}` naming the field", body = Object),
              (status = 403, description = "Neither a controller's, a DPO's nor an admin's token", body = Object),
              (status = 413, description = "A body over 256 KiB", body = Object)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, OpenDsrError> {
    receive(app, caller, body, true).await
}

/// Submit an OpenGDPR 1.0 request (the earlier path; `regulation` may be left out).
#[utoipa::path(post, path = "/opendsr/v1/opengdpr_requests", tag = "opendsr", request_body = Object,
    responses((status = 201, description = "As `POST /opendsr/v1/requests`", body = Object),
              (status = 400, description = "The field at fault", body = Object),
              (status = 403, description = "Neither a controller's, a DPO's nor an admin's token", body = Object),
              (status = 413, description = "A body over 256 KiB", body = Object)),
    security(("bearer" = [])))]
pub async fn create_v1(
    State(app): State<Arc<App>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, OpenDsrError> {
    receive(app, caller, body, false).await
}

async fn receive(
    app: Arc<App>,
    caller: Caller,
    raw: Bytes,
    version_two: bool,
) -> Result<Response, OpenDsrError> {
    if !matches!(caller.role, Role::Controller | Role::Dpo | Role::Admin) {
        return Err(OpenDsrError::status(
            StatusCode::FORBIDDEN,
            "OpenDSR requests are sent with a controller's or a DPO's token",
        ));
    }
    let mut reader = serde_json::Deserializer::from_slice(&raw);
    let incoming: Incoming = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        // serde's own words may quote the value, which may be an identity.
        let why = match e.inner().classify() {
            serde_json::error::Category::Data => {
                "missing, or not of the type the specification gives"
            }
            _ => "the body is not JSON",
        };
        OpenDsrError::field(if path == "." { "body".into() } else { path }, why)
    })?;
    reader
        .end()
        .map_err(|_| OpenDsrError::field("body", "something follows the JSON object"))?;
    let id = &incoming.subject_request_id;
    let uuid = uuid::Uuid::parse_str(id).ok();
    if uuid.is_none_or(|u| u.get_version_num() != 4 || u.hyphenated().to_string() != *id) {
        return Err(OpenDsrError::field(
            "subject_request_id",
            "a UUID v4 in lower case, made by the controller",
        ));
    }
    let kind = match incoming.subject_request_type.as_str() {
        "erasure" => Kind::Erasure,
        // The access package is JSON, which is the portable copy too.
        "access" | "portability" => Kind::Access,
        _ => {
            return Err(OpenDsrError::field(
                "subject_request_type",
                "one of erasure, access, portability",
            ));
        }
    };
    let submitted = chrono::DateTime::parse_from_rfc3339(&incoming.submitted_time)
        .map_err(|_| OpenDsrError::field("submitted_time", "an RFC 3339 date and time"))?;
    match incoming.regulation.as_deref() {
        Some("gdpr") => {}
        None if !version_two => {}
        None => {
            return Err(OpenDsrError::field(
                "regulation",
                "required in OpenDSR 2.0: \"gdpr\"",
            ));
        }
        Some(_) => {
            return Err(OpenDsrError::field(
                "regulation",
                "oubli carries out GDPR requests only: \"gdpr\"",
            ));
        }
    }
    if incoming.subject_identities.is_empty() || incoming.subject_identities.len() > 20 {
        return Err(OpenDsrError::field(
            "subject_identities",
            "1 to 20 identities",
        ));
    }
    let mut identities = Vec::new();
    for (i, identity) in incoming.subject_identities.iter().enumerate() {
        let Some((_, kind)) = IDENTITY_TYPES
            .iter()
            .find(|(t, _)| *t == identity.identity_type)
        else {
            return Err(OpenDsrError::field(
                format!("subject_identities[{i}].identity_type"),
                "oubli takes email and controller_customer_id (see /opendsr/v1/discovery)",
            ));
        };
        if identity.identity_format != "raw" {
            return Err(OpenDsrError::field(
                format!("subject_identities[{i}].identity_format"),
                "only raw: the connected systems are searched for the values as they store them, which a hash cannot be",
            ));
        }
        let value = identity.identity_value.trim();
        if value.is_empty() || value.len() > 512 {
            return Err(OpenDsrError::field(
                format!("subject_identities[{i}].identity_value"),
                "1 to 512 characters",
            ));
        }
        identities.push(IdentityInput {
            kind: (*kind).to_owned(),
            value: value.to_owned(),
        });
    }
    if incoming.status_callback_urls.len() > 10 {
        return Err(OpenDsrError::field("status_callback_urls", "at most 10"));
    }
    for (i, url) in incoming.status_callback_urls.iter().enumerate() {
        let parsed = url::Url::parse(url).ok().filter(|u| {
            url.len() <= 2000 && matches!(u.scheme(), "https" | "http") && u.host().is_some()
        });
        let Some(parsed) = parsed else {
            return Err(OpenDsrError::field(
                format!("status_callback_urls[{i}]"),
                "an absolute http(s) URL of at most 2,000 characters",
            ));
        };
        if !app.config.opendsr_private_callbacks && internal(&parsed) {
            return Err(OpenDsrError::field(
                format!("status_callback_urls[{i}]"),
                "a loopback, private or link-local address: oubli does not post inside its own network (opendsr_private_callbacks allows it)",
            ));
        }
    }
    // Whose request: the controller's own token, or the controller the extension names.
    let domain = app.opendsr_domain();
    let named = incoming
        .extensions
        .get(&domain)
        .and_then(|e| e.get("controller_id"))
        .and_then(Value::as_str);
    let controller_id = match (caller.role, &caller.controller_id, named) {
        (Role::Controller, Some(own), None) => own.clone(),
        (Role::Controller, Some(own), Some(named)) if named == own => own.clone(),
        (Role::Controller, _, _) => {
            return Err(OpenDsrError::field(
                format!("extensions.{domain}.controller_id"),
                "a controller's token sends its own requests only",
            ));
        }
        (_, _, Some(named)) => named.to_owned(),
        (_, _, None) => {
            return Err(OpenDsrError::field(
                format!("extensions.{domain}.controller_id"),
                "a DPO's request names the controller it goes to in the extension of this processor's domain",
            ));
        }
    };
    // The checks of `POST /v1/requests`: the controller, and identity kinds one of its
    // systems understands (else nothing would be searched, and "completed" would say
    // more than was done).
    let checked = super::requests::CreateRequest {
        controller_id: controller_id.clone(),
        kind,
        identities,
        changes: Vec::new(),
        external_ref: Some(format!("opendsr:{id}")),
        not_before: None,
    };
    let renamed = |field: String| {
        field
            .replacen("identities", "subject_identities", 1)
            .replace(".kind", ".identity_type")
            .replace(".value", ".identity_value")
    };
    let refused = |e: super::ApiError| match e {
        super::ApiError::Unprocessable { field, message } if field == "controller_id" => {
            OpenDsrError::field(format!("extensions.{domain}.controller_id"), message)
        }
        super::ApiError::Unprocessable { field, message } => {
            OpenDsrError::field(renamed(field), message)
        }
        super::ApiError::Forbidden(m) => {
            OpenDsrError::field(format!("extensions.{domain}.controller_id"), m)
        }
        other => OpenDsrError::status(other.status(), other.to_string()),
    };
    let controller = super::requests::validate(&app, &caller, &checked)
        .await
        .map_err(refused)?;
    let suppression = super::requests::suppression_entries(&app, &checked)
        .await
        .map_err(refused)?;
    let identities = checked.identities;
    // Loaded before anything is accepted: a request is never taken and then answered 500.
    let processor = processor(&app).await?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw));
    // The controller's ids are its own: another token may not take one over.
    let taken: Option<(String, String)> = sqlx::query_as(
        "SELECT r.submitted_by, o.body_sha256 FROM opendsr_requests o JOIN requests r ON r.id = o.request_id \
         WHERE o.controller_id = $1 AND o.subject_request_id = $2",
    )
    .bind(&controller.id)
    .bind(id)
    .fetch_optional(&app.store.read)
    .await?;
    if taken
        .as_ref()
        .is_some_and(|(by, sent)| *by != caller.token_id || *sent != digest)
    {
        return Err(OpenDsrError::field(
            "subject_request_id",
            "this controller already has a request with this subject_request_id (sent again, a request must be byte for byte the same)",
        ));
    }
    // The controller's own instruction needs no confirmation.
    let own = caller.role == Role::Controller;
    let submission = Submission {
        request: NewRequest {
            controller_id: controller.id.clone(),
            kind,
            identities,
            changes: Vec::new(),
            external_ref: Some(format!("opendsr:{id}")),
            submitted_by: caller.token_id.clone(),
            // Per controller, with a character `/v1` keys cannot hold.
            idempotency_key: Some(format!("opendsr\u{1f}{}\u{1f}{id}", controller.id)),
            not_before: None,
            suppression,
            system_id: None,
            retention_run_id: None,
            opendsr: Some(Link {
                subject_request_id: id.clone(),
                api_version: incoming
                    .api_version
                    .clone()
                    .unwrap_or_else(|| if version_two { API_VERSION } else { "1.0" }.into()),
                regulation: incoming.regulation.clone(),
                submitted_time: time(submitted.to_utc()),
                callbacks: incoming.status_callback_urls.clone(),
                body_sha256: digest.clone(),
            }),
            // The subject asked the controller then: the month runs from then.
            deadline_from: Some(submitted.timestamp_millis()),
        },
        actor: caller.actor(),
        webhook: controller.webhook_url.is_some(),
        auto_approve: own,
        approver: own.then(|| caller.actor()),
        max_attempts: app.config.max_attempts,
        link_hours: app.config.approval_link_hours,
    };
    let accepted = match app.intake.submit(submission).await {
        Ok(accepted) => accepted,
        // Another token sent the same id at the same moment: the database kept one.
        Err(e)
            if e.downcast_ref::<sqlx::Error>()
                .and_then(sqlx::Error::as_database_error)
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            return Err(OpenDsrError::field(
                "subject_request_id",
                "this controller already has a request with this subject_request_id",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let request = match accepted {
        Accepted::Created(request) => {
            app.webhooks_ready.notify_waiters();
            if own {
                app.tasks_ready.notify_waiters();
            }
            request
        }
        // The same request sent again (a retry after a lost answer): the same answer.
        Accepted::Replayed(request) => request,
        Accepted::KeyReused(_) => {
            return Err(OpenDsrError::field(
                "subject_request_id",
                "this subject_request_id was sent before with another request",
            ));
        }
    };
    let body = json!({
        "controller_id": request.controller_id,
        "expected_completion_time": time(request.due_at),
        "received_time": time(request.received_at),
        "encoded_request": base64::engine::general_purpose::STANDARD.encode(&raw),
        "subject_request_id": id,
        "processor_signature": processor.sign(&raw),
    });
    signed(&app, StatusCode::CREATED, &body).await
}

/// Whether a callback URL names this machine or a private network: `localhost`, or an
/// address the sandbox also refuses. (A name that resolves to one is not caught here.)
fn internal(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        // The sandbox's own list: loopback, private, shared, link-local, multicast and
        // the IPv6 forms that embed one.
        Some(url::Host::Ipv4(ip)) => crate::runtime::capability::http::is_private(ip.into()),
        Some(url::Host::Ipv6(ip)) => crate::runtime::capability::http::is_private(ip.into()),
        None => true,
    }
}

/// The request the caller sent (or may see) under a subject_request_id.
async fn find(
    app: &App,
    caller: &Caller,
    subject_request_id: &str,
) -> Result<(String, String, String), OpenDsrError> {
    let found: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT request_id, controller_id, api_version FROM opendsr_requests WHERE subject_request_id = $1 ORDER BY created_at",
    )
    .bind(subject_request_id)
    .fetch_all(&app.store.read)
    .await?;
    let mut visible = found
        .into_iter()
        .filter(|(_, controller, _)| caller.sees(controller));
    match (visible.next(), visible.next()) {
        (Some(one), None) => Ok(one),
        (Some(_), Some(_)) => Err(OpenDsrError::status(
            StatusCode::CONFLICT,
            "several controllers this token sees have a request with this subject_request_id: use a token limited to one",
        )),
        (None, _) => Err(OpenDsrError::status(
            StatusCode::NOT_FOUND,
            format!("no OpenDSR request {subject_request_id} that this token may see"),
        )),
    }
}

/// The status of an OpenDSR request: `pending` (received, awaiting the controller,
/// approved), `in_progress` (running, or failed and awaiting a retry), `completed`, or
/// `cancelled` (cancelled or rejected); `results_url` for a completed access or
/// portability request (its package).
#[utoipa::path(get, path = "/opendsr/v1/requests/{id}", tag = "opendsr", params(("id" = String, Path, description = "subject_request_id")),
    responses((status = 200, description = "`{controller_id, expected_completion_time, subject_request_id, request_status, api_version, results_url}`, signed", body = Object),
              (status = 404, description = "No such request this token may see", body = Object),
              (status = 409, description = "Several controllers this token sees used this id", body = Object)),
    security(("bearer" = [])))]
pub async fn status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, OpenDsrError> {
    let (request_id, _, api_version) = find(&app, &caller, &id).await?;
    let request = crate::request::rows::get(&app.store, &app.keys.sealer, &request_id)
        .await?
        .ok_or_else(|| OpenDsrError::status(StatusCode::NOT_FOUND, "the request is gone"))?;
    let told = status_of(request.status.as_str());
    let mut body = json!({
        "controller_id": request.controller_id,
        "expected_completion_time": time(request.due_at),
        "subject_request_id": id,
        "request_status": told,
        "api_version": api_version,
        "extensions": { app.opendsr_domain(): crate::notify::opendsr::extension(request.status.as_str()) },
    });
    if told == "completed" && request.kind == Kind::Access {
        body["results_url"] = format!(
            "{}/v1/requests/{request_id}/package",
            app.config.base_url().trim_end_matches('/')
        )
        .into();
    }
    signed(&app, StatusCode::OK, &body).await
}

/// Cancel an OpenDSR request while it is `pending`: 202, and its callbacks say
/// `cancelled`.
#[utoipa::path(delete, path = "/opendsr/v1/requests/{id}", tag = "opendsr", params(("id" = String, Path, description = "subject_request_id")),
    responses((status = 202, description = "`{controller_id, subject_request_id, received_time, api_version}`, signed", body = Object),
              (status = 400, description = "It is no longer pending", body = Object),
              (status = 403, description = "Not the token that sent it, nor an admin", body = Object),
              (status = 404, description = "No such request this token may see", body = Object),
              (status = 409, description = "Several controllers this token sees used this id", body = Object)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, OpenDsrError> {
    if !matches!(caller.role, Role::Controller | Role::Dpo | Role::Admin) {
        return Err(OpenDsrError::status(
            StatusCode::FORBIDDEN,
            "OpenDSR requests are cancelled with a controller's or a DPO's token",
        ));
    }
    let (request_id, controller_id, api_version) = find(&app, &caller, &id).await?;
    let (status, submitted_by): (String, String) =
        sqlx::query_as("SELECT status, submitted_by FROM requests WHERE id = $1")
            .bind(&request_id)
            .fetch_one(&app.store.read)
            .await?;
    if caller.role != Role::Admin && submitted_by != caller.token_id {
        return Err(OpenDsrError::status(
            StatusCode::FORBIDDEN,
            "only the token that sent a request (or an admin) cancels it; a controller rejects a DPO's request with POST /v1/requests/{id}/reject",
        ));
    }
    let answer = json!({
        "controller_id": controller_id,
        "subject_request_id": id,
        "received_time": time(chrono::Utc::now()),
        "api_version": api_version,
    });
    // Cancelled already (a DELETE sent again after a lost answer): the same answer.
    if status == "cancelled" {
        return signed(&app, StatusCode::ACCEPTED, &answer).await;
    }
    if status_of(&status) != "pending" {
        return Err(OpenDsrError::field(
            "subject_request_id",
            format!(
                "a request can be cancelled only while pending; this one is {}",
                status_of(&status)
            ),
        ));
    }
    let mut tx = app.store.begin().await?;
    match crate::request::lifecycle::cancel(
        &mut tx,
        &request_id,
        &caller.actor(),
        Some("cancelled through OpenDSR"),
    )
    .await?
    {
        Some(Ok(())) => tx.commit().await?,
        Some(Err(refusal)) => {
            return Err(OpenDsrError::field(
                "subject_request_id",
                refusal.to_string(),
            ));
        }
        None => {
            return Err(OpenDsrError::status(
                StatusCode::NOT_FOUND,
                "the request is gone",
            ));
        }
    }
    app.webhooks_ready.notify_waiters();
    signed(&app, StatusCode::ACCEPTED, &answer).await
}

#[cfg(test)]
mod tests {
    use super::internal;

    #[test]
    fn callbacks_inside_the_network_are_recognised() {
        for url in [
            "http://localhost/x",
            "http://api.localhost./x",
            "http://127.0.0.1:8080/x",
            "http://10.1.2.3/x",
            "http://192.168.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/x",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[fe80::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            // What the sandbox's list adds: shared address space, documentation, Teredo.
            "http://100.64.0.1/x",
            "http://[2001:db8::1]/x",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x",
        ] {
            assert!(internal(&url::Url::parse(url).unwrap()), "{url}");
        }
        for url in [
            "https://controller.example/cb",
            "https://93.184.216.34/cb",
            "https://[2606:4700:4700::1111]/cb",
        ] {
            assert!(!internal(&url::Url::parse(url).unwrap()), "{url}");
        }
    }
}
