//! `/v1/requests`: submitting and following data subject requests (DPO), deciding on them
//! (controller), and reading their results.

use super::{ApiError, ErrorBody, Json, OptionalJson, Page, created, require};
use crate::app::App;
use crate::audit;
use crate::auth::{Caller, Role};
use crate::controller;
use crate::notify;
use crate::queue;
use crate::request::intake::{Accepted, Submission};
use crate::request::lifecycle::{self, Refusal};
use crate::request::store::{
    self as requests, ChangeInput, Filter, IdentityInput, NewRequest, Request,
};
use crate::request::{Kind, Status};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/requests", post(create).get(list))
        .route("/v1/requests/{id}", get(get_one))
        .route("/v1/requests/{id}/cancel", post(cancel))
        .route("/v1/requests/{id}/extend", post(extend))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/reject", post(reject))
        .route("/v1/requests/{id}/retry", post(retry))
        .route("/v1/requests/{id}/tasks", get(tasks))
        .route("/v1/requests/{id}/results", get(results))
        .route("/v1/requests/{id}/webhooks", get(webhooks))
        .route("/v1/requests/{id}/events", get(events))
        .route("/v1/requests/{id}/certificate", get(certificate))
        .route("/v1/requests/{id}/package", get(package))
        .route("/v1/requests/{id}/package.html", get(package_html))
}

/// A new data subject request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The controller whose systems hold the subject's data.
    pub controller_id: String,
    pub kind: Kind,
    /// Who the subject is; each kind must be understood by one of the controller's systems.
    pub identities: Vec<IdentityInput>,
    /// For a rectification: the changes to make.
    #[serde(default)]
    pub changes: Vec<ChangeInput>,
    /// The submitter's own reference, e.g. a ticket number.
    #[serde(default)]
    pub external_ref: Option<String>,
}

/// A reason, required or optional depending on the action.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: Option<String>,
}

/// An extension of the deadline (Art. 12(3)).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// 1 or 2; at most two months in total.
    pub months: u32,
    /// Why the request needs longer; told to the subject.
    pub reason: String,
}

fn is_kind(text: &str) -> bool {
    (1..=40).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

async fn validate(
    app: &App,
    caller: &Caller,
    body: &CreateRequest,
) -> Result<controller::Controller, ApiError> {
    if !caller.sees(&body.controller_id) {
        return Err(ApiError::Forbidden(
            "this token is limited to another controller".into(),
        ));
    }
    let Some(found) = controller::get_controller(&app.store, &body.controller_id).await? else {
        return Err(ApiError::field(
            "controller_id",
            format!("no controller has the id {:?}", body.controller_id),
        ));
    };
    if body.identities.is_empty() {
        return Err(ApiError::field(
            "identities",
            "at least one identity of the subject is needed",
        ));
    }
    if body.identities.len() > 20 {
        return Err(ApiError::field("identities", "at most 20 identities"));
    }
    let known = controller::identity_kinds(&app.store, &body.controller_id).await?;
    for (i, identity) in body.identities.iter().enumerate() {
        if !is_kind(&identity.kind) {
            return Err(ApiError::field(
                format!("identities[{i}].kind"),
                "an identity kind is 1 to 40 lowercase letters, digits or dashes, e.g. email",
            ));
        }
        if !known.contains(&identity.kind) {
            return Err(ApiError::field(
                format!("identities[{i}].kind"),
                format!(
                    "no system of this controller understands the identity kind {:?}; known kinds: {}",
                    identity.kind,
                    known.join(", ")
                ),
            ));
        }
        if identity.value.trim().is_empty() || identity.value.len() > 512 {
            return Err(ApiError::field(
                format!("identities[{i}].value"),
                "the value must be 1 to 512 characters",
            ));
        }
    }
    match (body.kind, body.changes.is_empty()) {
        (Kind::Rectification, true) => {
            return Err(ApiError::field(
                "changes",
                "a rectification needs at least one change",
            ));
        }
        (Kind::Access | Kind::Erasure, false) => {
            return Err(ApiError::field(
                "changes",
                "only a rectification carries changes",
            ));
        }
        _ => {}
    }
    for (i, change) in body.changes.iter().enumerate() {
        if change.field.trim().is_empty() {
            return Err(ApiError::field(
                format!("changes[{i}].field"),
                "the field to change must be named",
            ));
        }
    }
    if body.external_ref.as_ref().is_some_and(|r| r.len() > 200) {
        return Err(ApiError::field("external_ref", "at most 200 characters"));
    }
    Ok(found)
}

/// Submit a request. It is forwarded to the controller at once; nothing runs before the
/// controller approves it, unless the controller approves its own DPO's requests
/// automatically.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = CreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retrying with the same key returns the first request")),
    responses((status = 201, body = Request), (status = 200, description = "Replay of an idempotent submission", body = Request),
              (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin])?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| (1..=200).contains(&k.len()))
                .ok_or_else(|| ApiError::BadRequest {
                    field: Some("Idempotency-Key".into()),
                    message: "the key must be 1 to 200 visible ASCII characters".into(),
                })?,
        ),
    };
    let found = validate(&app, &caller, &body).await?;
    let auto_approve = found.auto_approve
        && caller.role == Role::Dpo
        && caller.controller_id.as_deref() == Some(found.id.as_str());
    let submission = Submission {
        request: NewRequest {
            controller_id: body.controller_id,
            kind: body.kind,
            identities: body.identities,
            changes: body.changes,
            external_ref: body.external_ref,
            submitted_by: caller.token_id.clone(),
            idempotency_key: key.map(str::to_owned),
        },
        actor: caller.actor(),
        webhook: found.webhook_url.is_some(),
        auto_approve,
        base_url: app
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", app.config.listen)),
        max_attempts: app.config.max_attempts,
    };
    let webhook = submission.webhook;
    match app.intake.submit(submission).await? {
        Accepted::Replayed(first) => {
            let mut response = Json(first).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Accepted::Created(request) => {
            if webhook {
                app.webhooks_ready.notify_waiters();
            }
            if auto_approve {
                app.tasks_ready.notify_waiters();
            }
            Ok(created(request).into_response())
        }
    }
}

/// Parameters of the request list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[allow(dead_code)]
struct ListParams {
    /// Only requests in this status.
    status: Option<Status>,
    /// Only requests of this kind.
    kind: Option<Kind>,
    /// Only this controller's requests.
    controller_id: Option<String>,
    /// Only open requests past their deadline (true), or only the others (false).
    overdue: Option<bool>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<u32>,
}

fn param<T: std::str::FromStr>(
    params: &HashMap<String, String>,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| ApiError::BadRequest {
                field: Some(name.into()),
                message: format!("{name} must be {what}, not {v:?}"),
            })
        })
        .transpose()
}

/// List requests, oldest first. Controller tokens see only the requests forwarded to
/// their controller.
#[utoipa::path(get, path = "/v1/requests", tag = "requests", params(ListParams),
    responses((status = 200, body = Page<Request>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<Request>>, ApiError> {
    let known = [
        "status",
        "kind",
        "controller_id",
        "overdue",
        "after",
        "limit",
    ];
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::BadRequest {
            field: Some(unknown.clone()),
            message: format!("unknown parameter {unknown:?}; known: {}", known.join(", ")),
        });
    }
    let limit = param::<u32>(&params, "limit", "a number from 1 to 500")?.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest {
            field: Some("limit".into()),
            message: "limit must be a number from 1 to 500".into(),
        });
    }
    let mut controller_id = params.get("controller_id").cloned();
    if let Some(scope) = &caller.controller_id {
        if controller_id.as_ref().is_some_and(|c| c != scope) {
            return Err(ApiError::Forbidden(
                "this token is limited to another controller".into(),
            ));
        }
        controller_id = Some(scope.clone());
    }
    let filter = Filter {
        controller_id,
        status: param(&params, "status", "a request status")?,
        kind: param(&params, "kind", "access, rectification or erasure")?,
        overdue: param(&params, "overdue", "true or false")?,
        after: params.get("after").cloned(),
        limit: limit + 1,
    };
    let mut items = requests::list(&app.store, &app.keys.sealer, &filter).await?;
    let next = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items.last().map(|r| r.id.clone()).unwrap_or_default()
    });
    if !items.is_empty() {
        let ids: Vec<&str> = items.iter().map(|r| r.id.as_str()).collect();
        let mut tx = app.store.begin().await?;
        audit::append(
            &mut tx,
            &caller.actor(),
            "requests.listed",
            None,
            json!({ "request_ids": ids }),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(Json(Page { items, next }))
}

/// The request, if the caller may see it.
async fn visible(app: &App, caller: &Caller, id: &str) -> Result<Request, ApiError> {
    requests::get(&app.store, &app.keys.sealer, id)
        .await?
        .filter(|r| caller.sees(&r.controller_id))
        .ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))
}

/// Records that the caller read the subject's personal data.
async fn audit_read(app: &App, caller: &Caller, id: &str, what: &str) -> Result<(), ApiError> {
    let mut tx = app.store.begin().await?;
    audit::append(&mut tx, &caller.actor(), what, Some(id), json!({})).await?;
    tx.commit().await?;
    Ok(())
}

/// Get a request, with its status, deadline and the subject's identities.
#[utoipa::path(get, path = "/v1/requests/{id}", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Request), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Request>, ApiError> {
    let request = visible(&app, &caller, &id).await?;
    audit_read(&app, &caller, &id, "request.read").await?;
    Ok(Json(request))
}

/// Applies `transition` to a visible request and returns the open transaction, for the
/// caller to add to and commit.
/// The answer to a lifecycle step: a missing request is a 404, a refused step a 409.
fn taken(step: Option<Result<(), Refusal>>, id: &str) -> Result<(), ApiError> {
    step.ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))?
        .map_err(ApiError::from)
}

async fn reread(app: &App, id: &str) -> Result<Json<Request>, ApiError> {
    Ok(Json(
        requests::get(&app.store, &app.keys.sealer, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))?,
    ))
}

/// Cancel a request that has not started running.
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", tag = "requests", params(("id" = String, Path)), request_body(content = Reason, description = "Optional"),
    responses((status = 200, body = Request), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<Reason>,
) -> Result<Json<Request>, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin])?;
    visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    taken(
        lifecycle::cancel(&mut tx, &id, &caller.actor(), body.reason.as_deref()).await?,
        &id,
    )?;
    tx.commit().await?;
    reread(&app, &id).await
}

/// Extend the deadline by one or two months (two in total at most), with a reason.
#[utoipa::path(post, path = "/v1/requests/{id}/extend", tag = "requests", params(("id" = String, Path)), request_body = Extension,
    responses((status = 200, body = Request), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn extend(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Extension>,
) -> Result<Json<Request>, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin])?;
    if !(1..=crate::request::MAX_EXTENSION_MONTHS).contains(&body.months) {
        return Err(ApiError::field(
            "months",
            "the deadline is extended by 1 or 2 months (Art. 12(3))",
        ));
    }
    if body.reason.trim().is_empty() {
        return Err(ApiError::field(
            "reason",
            "an extension needs a reason, which is told to the subject",
        ));
    }
    visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    let request = requests::get_in(&mut tx, &app.keys.sealer, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))?;
    let extended = requests::extend(
        &mut tx,
        &app.keys.sealer,
        &request,
        body.months,
        body.reason.trim(),
        &caller.actor(),
    )
    .await?
    .map_err(ApiError::Conflict)?;
    tx.commit().await?;
    Ok(Json(extended))
}

/// Approve a forwarded request (its controller, or an admin); its tasks are queued at once.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Request), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Request>, ApiError> {
    require(&caller, &[Role::Controller, Role::Admin])?;
    let request = visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    let current = requests::stage_in(&mut tx, &id)
        .await?
        .unwrap_or_else(|| request.stage());
    lifecycle::approve(&mut tx, &current, &caller.actor(), app.config.max_attempts)
        .await?
        .map_err(ApiError::from)?;
    tx.commit().await?;
    app.tasks_ready.notify_waiters();
    reread(&app, &id).await
}

/// Reject a forwarded request (its controller, or an admin), with a reason.
#[utoipa::path(post, path = "/v1/requests/{id}/reject", tag = "requests", params(("id" = String, Path)), request_body = Reason,
    responses((status = 200, body = Request), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn reject(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Reason>,
) -> Result<Json<Request>, ApiError> {
    require(&caller, &[Role::Controller, Role::Admin])?;
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::field("reason", "a rejection needs a reason"))?;
    visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    taken(
        lifecycle::reject(&mut tx, &id, &caller.actor(), reason).await?,
        &id,
    )?;
    tx.commit().await?;
    reread(&app, &id).await
}

/// Re-queue the failed tasks of a failed request.
#[utoipa::path(post, path = "/v1/requests/{id}/retry", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Request), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retry(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Request>, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin])?;
    visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    taken(lifecycle::retry(&mut tx, &id, &caller.actor()).await?, &id)?;
    tx.commit().await?;
    app.tasks_ready.notify_waiters();
    reread(&app, &id).await
}

/// The request's tasks: one per connected system, with status, attempts and last error.
#[utoipa::path(get, path = "/v1/requests/{id}/tasks", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Page<queue::Task>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn tasks(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Page<queue::Task>>, ApiError> {
    visible(&app, &caller, &id).await?;
    Ok(Json(Page {
        items: queue::list(&app.store, &id).await?,
        next: None,
    }))
}

/// What one system's task produced.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemResult {
    pub system_id: String,
    pub system: String,
    /// The Art. 15 information of the system.
    pub article15: controller::Article15,
    /// Access: `records`; erasure: `erased` and `remaining`; rectification: `changed`.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

/// The results of a request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Results {
    pub request_id: String,
    pub kind: Kind,
    pub status: Status,
    pub systems: Vec<SystemResult>,
}

/// The results of the request's finished tasks: the exported records of an access, what
/// was erased or retained, what was changed. Reading them is recorded in the audit trail.
#[utoipa::path(get, path = "/v1/requests/{id}/results", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Results), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn results(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Results>, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin, Role::Controller])?;
    let request = visible(&app, &caller, &id).await?;
    let mut systems = Vec::new();
    for (system_id, system, result) in queue::results(&app.store, &app.keys.sealer, &id).await? {
        let article15 = controller::get_system(&app.store, &system_id)
            .await?
            .map(|s| s.article15)
            .unwrap_or_default();
        systems.push(SystemResult {
            system_id,
            system,
            article15,
            result,
        });
    }
    audit_read(&app, &caller, &id, "request.results_read").await?;
    Ok(Json(Results {
        request_id: id,
        kind: request.kind,
        status: request.status,
        systems,
    }))
}

/// The webhook deliveries of the request and how each went.
#[utoipa::path(get, path = "/v1/requests/{id}/webhooks", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Page<notify::Delivery>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn webhooks(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Page<notify::Delivery>>, ApiError> {
    visible(&app, &caller, &id).await?;
    Ok(Json(Page {
        items: notify::list(&app.store, &id).await?,
        next: None,
    }))
}

/// The request's audit events, oldest first.
#[utoipa::path(get, path = "/v1/requests/{id}/events", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Page<audit::Event>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn events(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Page<audit::Event>>, ApiError> {
    require(
        &caller,
        &[Role::Dpo, Role::Admin, Role::Auditor, Role::Controller],
    )?;
    visible(&app, &caller, &id).await?;
    let items: Vec<audit::Event> = sqlx::query_as(&format!(
        "SELECT {} FROM audit_events WHERE request_id = $1 ORDER BY seq",
        audit::COLUMNS
    ))
    .bind(&id)
    .fetch_all(&app.store.read)
    .await?;
    Ok(Json(Page { items, next: None }))
}

/// The access package of a completed access request, or why there is none; every
/// download is an audit event.
async fn download(
    app: &App,
    caller: &Caller,
    id: &str,
    format: &str,
) -> Result<serde_json::Value, ApiError> {
    require(caller, &[Role::Dpo, Role::Admin])?;
    let request = visible(app, caller, id).await?;
    let package = match crate::evidence::package::build(app, &request).await? {
        Ok(package) => package,
        Err(crate::evidence::package::Unavailable::NotReady(m)) => {
            return Err(ApiError::Conflict(m));
        }
        Err(crate::evidence::package::Unavailable::Expired(m)) => return Err(ApiError::Gone(m)),
    };
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        &caller.actor(),
        "package.downloaded",
        Some(id),
        json!({ "format": format }),
    )
    .await?;
    tx.commit().await?;
    Ok(package)
}

/// Download the access package (Art. 15, Art. 20): every record each system exported,
/// per system and collection, with each system's Art. 15 information. Available until
/// `expires_at`; 410 after.
#[utoipa::path(get, path = "/v1/requests/{id}/package", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "the package as JSON"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn package(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(download(&app, &caller, &id, "json").await?))
}

/// The access package as a human-readable HTML page for the data subject.
#[utoipa::path(get, path = "/v1/requests/{id}/package.html", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "the package as HTML", content_type = "text/html"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn package_html(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::response::Html<String>, ApiError> {
    let package = download(&app, &caller, &id, "html").await?;
    Ok(axum::response::Html(crate::evidence::package::html(
        &package,
    )))
}

/// The signed erasure certificate of a completed erasure: per system, the plugin and what
/// was deleted, anonymised or retained (with its legal basis), and the verification. It
/// holds no personal data; verify it offline with the key from `/v1/keys`.
#[utoipa::path(get, path = "/v1/requests/{id}/certificate", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, description = "`{certificate, signature}`"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn certificate(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let request = visible(&app, &caller, &id).await?;
    let signed = crate::evidence::erasure_certificate(&app.store, &app.keys, &request)
        .await?
        .map_err(ApiError::Conflict)?;
    Ok(axum::Json(signed))
}
