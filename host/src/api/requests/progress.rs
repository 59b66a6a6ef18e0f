//! Following a request: its tasks, results, webhook deliveries and audit events.

use super::*;

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

/// The request's e-mails (to its controller and its DPO), oldest first, with every
/// attempt: sent, retried, given up, or skipped with the reason (no `[smtp]`, no address,
/// nothing left to decide).
#[utoipa::path(get, path = "/v1/requests/{id}/emails", tag = "requests", params(("id" = String, Path)),
    responses((status = 200, body = Page<notify::email::Email>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn emails(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Page<notify::email::Email>>, ApiError> {
    require(&caller, &[Role::Dpo, Role::Admin, Role::Auditor])?;
    visible(&app, &caller, &id).await?;
    Ok(Json(Page {
        items: notify::email::list(&app.store, &id).await?,
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
    Ok(Json(Page {
        items: audit::of_request(&app.store, &id).await?,
        next: None,
    }))
}
