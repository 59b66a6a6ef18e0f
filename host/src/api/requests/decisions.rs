//! The steps people take on a request: approve, reject, cancel, retry, extend. Each goes
//! through `request::lifecycle`, which refuses a step that does not follow.

use super::*;

/// An extension of the deadline (Art. 12(3)).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    /// 1 or 2; at most two months in total.
    #[schema(minimum = 1, maximum = 2)]
    pub months: u32,
    /// Why the request needs longer; told to the subject.
    pub reason: String,
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
    let extended = crate::request::lifecycle::extend(
        &mut tx,
        &app.keys.sealer,
        &request,
        body.months,
        body.reason.trim(),
        &caller.actor(),
    )
    .await??;
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
) -> Result<axum::response::Response, ApiError> {
    require(&caller, &[Role::Controller, Role::Admin])?;
    let request = visible(&app, &caller, &id).await?;
    let mut tx = app.store.begin().await?;
    let current = requests::stage_in(&mut tx, &id)
        .await?
        .unwrap_or_else(|| request.stage());
    lifecycle::approve(&mut tx, &current, &caller.actor(), app.config.max_attempts)
        .await?
        .map_err(ApiError::from)?;
    // Read in the step's transaction, so that the answer is the state this step made and
    // everything it tells of was read before its commit, whose flush covers it
    // (`store::Covered`).
    let approved = requests::get_in(&mut tx, &app.keys.sealer, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no request {id:?}")))?;
    tx.commit().await?;
    app.tasks_ready.notify_waiters();
    let mut answer = axum::response::IntoResponse::into_response(Json(approved));
    answer.extensions_mut().insert(crate::store::Covered);
    Ok(answer)
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
    // Read before the workers are woken, so that the answer is the state this step made.
    let request = reread(&app, &id).await;
    app.tasks_ready.notify_waiters();
    request
}
