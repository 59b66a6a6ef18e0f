//! Submitting a request and reading requests: the create, list and get endpoints.

use super::*;

/// A new data subject request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The controller whose systems hold the subject's data.
    pub controller_id: String,
    pub kind: Kind,
    /// Who the subject is; each kind must be understood by one of the controller's systems.
    #[schema(min_items = 1)]
    pub identities: Vec<IdentityInput>,
    /// For a rectification: the changes to make.
    #[serde(default)]
    pub changes: Vec<ChangeInput>,
    /// The submitter's own reference, e.g. a ticket number.
    #[serde(default)]
    pub external_ref: Option<String>,
    /// Once approved, the request waits until then before its systems are asked (e.g.
    /// the end of a cooling-off period). At most one month after submission, the
    /// deadline; a time already past does not wait.
    #[serde(default)]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

fn is_kind(text: &str) -> bool {
    (1..=40).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the submission puts on the controller's suppression list when it completes (an
/// erasure) or is approved (an objection), if the controller keeps a list: the keyed
/// hashes of its identities. An erasure leaves out an identity the list cannot read (a
/// phone number without its country code and no region set); an objection is refused.
pub(in crate::api) async fn suppression_entries(
    app: &App,
    body: &CreateRequest,
) -> Result<Option<Vec<suppression::Entry>>, ApiError> {
    if !matches!(body.kind, Kind::Erasure | Kind::Objection) {
        return Ok(None);
    }
    let Some(list) = suppression::kept(&app.store, &body.controller_id).await? else {
        if body.kind == Kind::Objection {
            return Err(ApiError::field(
                "kind",
                "an objection puts the subject on the controller's suppression list, and this controller keeps none (PUT /v1/controllers/{id}/suppression starts one)",
            ));
        }
        return Ok(None);
    };
    let mut entries = Vec::new();
    for (i, identity) in body.identities.iter().enumerate() {
        match suppression::Entry::of_value(
            &app.keys,
            &identity.kind,
            &identity.value,
            list.phone_region.as_deref(),
        ) {
            Ok(entry) => entries.push(entry),
            Err(why) if body.kind == Kind::Objection => {
                return Err(ApiError::field(
                    format!("identities[{i}].value"),
                    why.to_string(),
                ));
            }
            Err(_) => {}
        }
    }
    Ok(Some(entries))
}

pub(in crate::api) async fn validate(
    app: &App,
    caller: &Caller,
    body: &CreateRequest,
) -> Result<controller::Controller, ApiError> {
    if !caller.sees(&body.controller_id) {
        return Err(ApiError::Forbidden(
            "this token is limited to another controller".into(),
        ));
    }
    let Some((found, known)) =
        controller::with_identity_kinds(&app.store, &body.controller_id).await?
    else {
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
        (Kind::Access | Kind::Erasure | Kind::Objection, false) => {
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
    if let Some(not_before) = body.not_before {
        if body.kind == Kind::Objection {
            return Err(ApiError::field(
                "not_before",
                "an objection asks nothing of the systems, so it has nothing to hold back; it takes effect when approved",
            ));
        }
        let now = chrono::Utc::now();
        if not_before > crate::request::due_at(now, 0) {
            return Err(ApiError::field(
                "not_before",
                format!(
                    "the request would wait past its deadline (one month after submission, {}); a later start needs a later request",
                    crate::request::due_at(now, 0).to_rfc3339()
                ),
            ));
        }
    }
    Ok(found)
}

/// Submit a request. It is forwarded to the controller at once; nothing runs before the
/// controller approves it, unless the controller approves its own DPO's requests
/// automatically.
#[utoipa::path(post, path = "/v1/requests", tag = "requests", request_body = CreateRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,200}$",
        description = "1 to 200 visible ASCII characters. Retrying with the same key and body returns the first request; another body is a 422")),
    responses((status = 201, body = Request), (status = 200, description = "Replay of an idempotent submission", body = Request),
              (status = 422, description = "A field at fault, or an Idempotency-Key used for another request", body = ErrorBody), (status = 401, body = ErrorBody)),
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
    let suppression = suppression_entries(&app, &body).await?;
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
            not_before: body.not_before.map(|t| t.timestamp_millis()),
            suppression,
            system_id: None,
            retention_run_id: None,
            opendsr: None,
            deadline_from: None,
        },
        actor: caller.actor(),
        webhook: found.webhook_url.is_some(),
        auto_approve,
        approver: None,
        max_attempts: app.config.max_attempts,
        link_hours: app.config.approval_link_hours,
    };
    let webhook = submission.webhook;
    match app.intake.submit(submission).await? {
        Accepted::KeyReused(first) => Err(ApiError::field(
            "Idempotency-Key",
            format!(
                "this key was used for another request ({}), which asked for something else; \
                 a new request needs a new key",
                first.id
            ),
        )),
        // Both answers tell only of what was read before the intake's commit, which is
        // on disk now (`store::Covered`).
        Accepted::Replayed(first) => {
            let mut response = Json(first).into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            response.extensions_mut().insert(crate::store::Covered);
            Ok(response)
        }
        Accepted::Created(request) => {
            if webhook {
                app.webhooks_ready.notify_waiters();
            }
            if auto_approve {
                app.tasks_ready.notify_waiters();
            }
            let mut response = created(request).into_response();
            response.extensions_mut().insert(crate::store::Covered);
            Ok(response)
        }
    }
}

/// Parameters of the request list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
    #[param(minimum = 1, maximum = 500)]
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
        kind: param(
            &params,
            "kind",
            "access, rectification, erasure or objection",
        )?,
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
        );
        tx.commit().await?;
    }
    Ok(Json(Page { items, next }))
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
