//! Admin endpoints: controllers, their connected systems, plugins and tokens.

use super::{ApiError, ErrorBody, Json, MAX_PLUGIN_BODY, Page, created, require};
use crate::app::App;
use crate::audit;
use crate::auth::{self, Caller, Role};
use crate::controller::{
    self, ConnectedSystem, Controller, NewController, NewSystem, PluginStatus, RegisteredPlugin,
};
use crate::runtime::RuntimeError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/controllers",
            post(create_controller).get(list_controllers),
        )
        .route("/v1/controllers/{id}", get(get_controller))
        .route(
            "/v1/controllers/{id}/systems",
            post(create_system).get(list_systems),
        )
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/plugins/{digest}", get(get_plugin))
        .route("/v1/tokens", post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/keys", get(keys))
        .route("/v1/audit", get(audit_events))
        .route("/v1/audit/head", get(audit_head))
}

/// The plugin upload, with its own body limit.
pub fn plugin_upload_router() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/plugins", post(upload_plugin))
        .layer(DefaultBodyLimit::max(MAX_PLUGIN_BODY))
}

/// A controller just created, with its webhook secret, shown only this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedController {
    pub controller: Controller,
    /// Verifies the `webhook-signature` of oubli's webhooks (Standard Webhooks).
    pub webhook_secret: String,
}

pub(super) fn check_url(field: &str, url: &str) -> Result<(), ApiError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ApiError::field(
            field,
            format!("{url:?} is not an http(s) URL"),
        )),
    }
}

fn check_email(field: &str, email: &str) -> Result<(), ApiError> {
    match email.parse::<lettre::Address>() {
        Ok(_) => Ok(()),
        Err(e) => Err(ApiError::field(
            field,
            format!("{email:?} is not an e-mail address: {e}"),
        )),
    }
}

/// Create a controller.
#[utoipa::path(post, path = "/v1/controllers", tag = "admin", request_body = NewController,
    responses((status = 201, body = CreatedController), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_controller(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(body): Json<NewController>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Admin])?;
    if body.name.trim().is_empty() || body.name.len() > 200 {
        return Err(ApiError::field(
            "name",
            "the name must be 1 to 200 characters",
        ));
    }
    if let Some(url) = &body.webhook_url {
        check_url("webhook_url", url)?;
    }
    if let Some(email) = &body.contact_email {
        check_email("contact_email", email)?;
    }
    let mut tx = app.store.begin().await?;
    let (controller, webhook_secret) = match controller::create_controller(&mut tx, &body).await {
        Err(e) if crate::store::is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!(
                "a controller named {:?} exists already",
                body.name
            )));
        }
        created => created?,
    };
    audit::append(
        &mut tx,
        &caller.actor(),
        "controller.created",
        None,
        json!({ "controller_id": controller.id, "name": controller.name }),
    );
    tx.commit().await?;
    Ok(created(CreatedController {
        controller,
        webhook_secret,
    })
    .into_response())
}

/// List the controllers the token may see.
#[utoipa::path(get, path = "/v1/controllers", tag = "admin", responses((status = 200, body = Page<Controller>)), security(("bearer" = [])))]
pub async fn list_controllers(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<Page<Controller>>, ApiError> {
    let items = controller::list_controllers(&app.store)
        .await?
        .into_iter()
        .filter(|c| caller.sees(&c.id))
        .collect();
    Ok(Json(Page { items, next: None }))
}

/// A controller the caller may see, for a step only the controller itself (or an admin)
/// takes.
pub(super) async fn own_controller(
    app: &App,
    caller: &Caller,
    id: &str,
) -> Result<Controller, ApiError> {
    require(caller, &[Role::Admin, Role::Controller])?;
    visible_controller(app, caller, id).await
}

pub(super) async fn visible_controller(
    app: &App,
    caller: &Caller,
    id: &str,
) -> Result<Controller, ApiError> {
    controller::get_controller(&app.store, id)
        .await?
        .filter(|c| caller.sees(&c.id))
        .ok_or_else(|| ApiError::NotFound(format!("no controller {id:?}")))
}

/// Get a controller.
#[utoipa::path(get, path = "/v1/controllers/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = Controller), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_controller(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Controller>, ApiError> {
    Ok(Json(visible_controller(&app, &caller, &id).await?))
}

/// The field an `InvalidConfig` message names, e.g. `limits.memory_mb: …`.
fn config_error(error: &RuntimeError) -> ApiError {
    // A message that starts with its place ("config.api.auth: …", "limits.memory_mb: …")
    // names the field.
    let named = |m: &str| {
        m.split_once(": ")
            .map(|(f, _)| f)
            .filter(|f| {
                [
                    "config",
                    "capabilities",
                    "limits",
                    "secrets",
                    "name",
                    "plugin",
                ]
                .iter()
                .any(|known| {
                    *f == *known
                        || f.strip_prefix(known)
                            .is_some_and(|rest| rest.starts_with(['.', '[']))
                })
            })
            .map(str::to_owned)
    };
    let (field, message) = match error {
        RuntimeError::InvalidConfig(m) => (named(m).unwrap_or_else(|| "config".into()), m.clone()),
        // A capability not granted, a system that refused the credentials or could not
        // be reached: what the body grants is at fault, unless the plugin says where.
        RuntimeError::Denied(m) | RuntimeError::Unavailable(m) => (
            named(m).unwrap_or_else(|| "capabilities".into()),
            error.to_string(),
        ),
        RuntimeError::Failed(m) => (
            named(m).unwrap_or_else(|| "config".into()),
            error.to_string(),
        ),
        RuntimeError::Trap(_) | RuntimeError::Timeout(_) | RuntimeError::OutOfMemory(_) => {
            ("plugin".into(), error.to_string())
        }
    };
    ApiError::field(field, message)
}

/// Connect a system to a controller: the registered plugin that reaches it, the
/// capabilities it grants, and its Art. 15 information.
#[utoipa::path(post, path = "/v1/controllers/{id}/systems", tag = "admin", params(("id" = String, Path)), request_body = NewSystem,
    responses((status = 201, body = ConnectedSystem), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_system(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<NewSystem>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Admin])?;
    visible_controller(&app, &caller, &id).await?;
    match controller::get_plugin(&app.store, &body.plugin).await? {
        None => {
            return Err(ApiError::field(
                "plugin",
                format!(
                    "no registered plugin has the digest {:?}; upload it to /v1/plugins first",
                    body.plugin
                ),
            ));
        }
        Some(plugin) if plugin.status == PluginStatus::Compiling => {
            return Err(ApiError::Conflict(format!(
                "the plugin {} is still being compiled; connect it once GET /v1/plugins/{} says ready",
                plugin.digest, plugin.digest
            )));
        }
        Some(plugin) if plugin.status == PluginStatus::Failed => {
            return Err(ApiError::field(
                "plugin",
                format!(
                    "the plugin {} could not be registered: {}",
                    plugin.digest,
                    plugin.error.unwrap_or_default()
                ),
            ));
        }
        Some(_) => {}
    }
    let probe = crate::runtime::SystemConfig {
        name: body.name.clone(),
        digest: Some(body.plugin.clone()),
        limits: body.limits.clone(),
        capabilities: body.capabilities.clone(),
        secrets: body.secrets.clone(),
        config: body.config.clone(),
    };
    let prepared = app.runtime.prepare(&probe).map_err(|e| config_error(&e))?;
    // The plugin checks the configuration against the system (tables, columns, API
    // description) before any request can reach it.
    let plugin = app
        .plugin(&body.plugin)
        .await
        .map_err(|e| config_error(&e))?;
    app.runtime
        .validate(&plugin, &prepared)
        .await
        .map_err(|e| config_error(&e))?;
    let mut tx = app.store.begin().await?;
    let system = match controller::create_system(&mut tx, &id, &body).await {
        Err(e) if crate::store::is_unique_violation(&e) => {
            return Err(ApiError::Conflict(format!(
                "the controller has a system named {:?} already",
                body.name
            )));
        }
        created => created?,
    };
    audit::append(
        &mut tx,
        &caller.actor(),
        "system.created",
        None,
        json!({ "system_id": system.id, "controller_id": id, "plugin": system.plugin }),
    );
    tx.commit().await?;
    Ok(created(system).into_response())
}

/// List a controller's connected systems.
#[utoipa::path(get, path = "/v1/controllers/{id}/systems", tag = "admin", params(("id" = String, Path)),
    responses((status = 200, body = Page<ConnectedSystem>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_systems(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Page<ConnectedSystem>>, ApiError> {
    // A system's configuration may hold a database URL with a password: admins only.
    require(&caller, &[Role::Admin])?;
    visible_controller(&app, &caller, &id).await?;
    Ok(Json(Page {
        items: controller::list_systems(&app.store, &id).await?,
        next: None,
    }))
}

/// Register a plugin: the body is the `.wasm` component; `name` names it. The answer
/// gives the digest to pin in a connected system.
#[utoipa::path(post, path = "/v1/plugins", tag = "admin", params(("name" = String, Query, min_length = 1, max_length = 100, pattern = "\\S",
        description = "A name for people: 1 to 100 characters, not only spaces"),
        ("Prefer" = Option<String>, Header, description = "`wait=N`: seconds to wait for the compilation before answering 202 (default 20, at most 60)")),
    request_body(description = "The plugin's .wasm component (whatever the Content-Type)",
        content((Vec<u8> = "application/wasm"), (Vec<u8> = "application/octet-stream"))),
    responses((status = 201, description = "Compiled and described: systems can use it", body = RegisteredPlugin),
              (status = 202, description = "Stored and still compiling in the background; poll the `Location`", body = RegisteredPlugin,
               headers(("Location" = String, description = "`/v1/plugins/{digest}`"))),
              (status = 422, body = ErrorBody), (status = 413, body = ErrorBody)), security(("bearer" = [])))]
pub async fn upload_plugin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    // The role is checked before a byte of the body is read: only an admin's upload
    // takes memory.
    require(&caller, &[Role::Admin])?;
    let body = axum::body::to_bytes(body, MAX_PLUGIN_BODY)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(MAX_PLUGIN_BODY)
            } else {
                ApiError::BadRequest {
                    field: Some("body".into()),
                    message: format!("the body could not be read: {e}"),
                }
            }
        })?;
    let name = params
        .get("name")
        .filter(|n| !n.trim().is_empty() && n.chars().count() <= 100)
        .map(|n| n.trim())
        .ok_or_else(|| ApiError::BadRequest {
            field: Some("name".into()),
            message: "give the plugin a name of 1 to 100 characters: POST /v1/plugins?name=…"
                .into(),
        })?;
    if name.to_ascii_lowercase().starts_with("builtin:") {
        return Err(ApiError::field(
            "name",
            "names starting with `builtin:` are reserved for oubli's first-party plugins",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::field(
            "body",
            "the body must be the plugin's .wasm component",
        ));
    }
    let (wait, asked) = upload_wait(&headers);
    let (plugin, compile) =
        controller::receive_plugin(&app.store, name, &body, &caller.actor()).await?;
    // The compilation runs on its own, with the bytes in hand: a client that stops
    // waiting (or the wait running out) leaves it going, and a process that stops is
    // compiled again at start.
    let compiling = compile
        .then(|| app.compile_in_background(&plugin.digest, Some((name.to_owned(), body.into()))));
    let deadline = tokio::time::Instant::now() + wait;
    let refused = |digest: &str| {
        ApiError::field(
            "body",
            format!(
                "the plugin {digest} was refused while it compiled (see plugin.refused in the audit trail)"
            ),
        )
    };
    let current = match compiling {
        Some(handle) => match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(Ok(ready))) => Some(ready),
            Ok(Ok(Err(controller::RegisterError::Plugin(e)))) => {
                // Refused while the client waits: nothing of it stays registered.
                controller::remove_failed_plugin(&app.store, &plugin.digest).await?;
                return Err(ApiError::field("body", e.to_string()));
            }
            Ok(Ok(Err(controller::RegisterError::Store(e)))) => return Err(e.into()),
            Ok(Err(e)) => return Err(ApiError::Internal(e.into())),
            Err(_) => controller::get_plugin(&app.store, &plugin.digest).await?,
        },
        // Another upload of the same file compiles it: wait for that one.
        None => loop {
            let current = controller::get_plugin(&app.store, &plugin.digest).await?;
            if current
                .as_ref()
                .is_none_or(|p| p.status != PluginStatus::Compiling)
                || tokio::time::Instant::now() >= deadline
            {
                break current;
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + POLL)).await;
        },
    };
    // Gone: the upload that compiled it was refused and removed it.
    let plugin = current.ok_or_else(|| refused(&plugin.digest))?;
    let mut answer = match plugin.status {
        PluginStatus::Ready => created(plugin).into_response(),
        PluginStatus::Failed => {
            if compile {
                // Failed just as the wait ran out: refused like within it.
                controller::remove_failed_plugin(&app.store, &plugin.digest).await?;
            }
            return Err(ApiError::field(
                "body",
                plugin.error.unwrap_or_else(|| "the plugin failed".into()),
            ));
        }
        PluginStatus::Compiling => {
            let location = format!("/v1/plugins/{}", plugin.digest);
            (
                StatusCode::ACCEPTED,
                [(axum::http::header::LOCATION, location)],
                Json(plugin),
            )
                .into_response()
        }
    };
    if asked {
        answer.headers_mut().insert(
            "preference-applied",
            axum::http::HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
                .expect("digits are a header value"),
        );
    }
    Ok(answer)
}

/// How often an upload waiting for another one's compilation looks again.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// How long an upload waits for its compilation by default, and at most.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
const UPLOAD_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The wait a client asked for with `Prefer: wait=N` (RFC 7240), at most a minute, and
/// whether it asked.
fn upload_wait(headers: &HeaderMap) -> (std::time::Duration, bool) {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| p.trim().strip_prefix("wait=")?.trim().parse::<u64>().ok())
        .map_or((UPLOAD_WAIT, false), |s| {
            (std::time::Duration::from_secs(s).min(UPLOAD_WAIT_MAX), true)
        })
}

async fn compiled_or_current(app: &App, digest: &str) -> Result<RegisteredPlugin, ApiError> {
    controller::get_plugin(&app.store, digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no plugin {digest:?}")))
}

/// One registered plugin: how its compilation went (poll it after a 202 from the
/// upload).
#[utoipa::path(get, path = "/v1/plugins/{digest}", tag = "admin", params(("digest" = String, Path)),
    responses((status = 200, body = RegisteredPlugin)), security(("bearer" = [])))]
pub async fn get_plugin(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<Json<RegisteredPlugin>, ApiError> {
    require(&caller, &[Role::Admin])?;
    Ok(Json(compiled_or_current(&app, &digest).await?))
}

/// List the registered plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "admin", responses((status = 200, body = Page<RegisteredPlugin>)), security(("bearer" = [])))]
pub async fn list_plugins(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<Page<RegisteredPlugin>>, ApiError> {
    require(&caller, &[Role::Admin])?;
    Ok(Json(Page {
        items: controller::list_plugins(&app.store).await?,
        next: None,
    }))
}

/// A new token.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub role: Role,
    /// Required for the controller role; limits a DPO or auditor to one controller.
    #[serde(default)]
    pub controller_id: Option<String>,
    /// What the token is for, e.g. who holds it.
    pub label: String,
    /// Where oubli e-mails its holder how the requests it filed went (DPO tokens).
    #[serde(default)]
    pub email: Option<String>,
}

/// A token just created; its secret is shown only this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    pub role: Role,
    pub controller_id: Option<String>,
}

/// Create a token.
#[utoipa::path(post, path = "/v1/tokens", tag = "admin", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Admin])?;
    if body.role == Role::Admin && body.controller_id.is_some() {
        return Err(ApiError::field(
            "controller_id",
            "an admin token cannot be limited to one controller",
        ));
    }
    if body.role == Role::Controller && body.controller_id.is_none() {
        return Err(ApiError::field(
            "controller_id",
            "a controller token must name its controller",
        ));
    }
    if let Some(controller_id) = &body.controller_id
        && controller::get_controller(&app.store, controller_id)
            .await?
            .is_none()
    {
        return Err(ApiError::field(
            "controller_id",
            format!("no controller has the id {controller_id:?}"),
        ));
    }
    if let Some(email) = &body.email {
        check_email("email", email)?;
    }
    let mut tx = app.store.begin().await?;
    let (id, token) = auth::create(
        &mut tx,
        body.role,
        body.controller_id.as_deref(),
        &body.label,
    )
    .await?;
    if let Some(email) = &body.email {
        auth::set_email(&mut tx, &id, email).await?;
    }
    audit::append(
        &mut tx,
        &caller.actor(),
        "token.created",
        None,
        json!({ "token_id": id, "role": body.role, "controller_id": body.controller_id }),
    );
    tx.commit().await?;
    Ok(created(CreatedToken {
        id,
        token,
        role: body.role,
        controller_id: body.controller_id,
    })
    .into_response())
}

/// Revoke a token.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_token(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    require(&caller, &[Role::Admin])?;
    let mut tx = app.store.begin().await?;
    if !crate::auth::revoke(&mut tx, &id).await? {
        return Err(ApiError::NotFound(format!("no active token {id:?}")));
    }
    audit::append(
        &mut tx,
        &caller.actor(),
        "token.revoked",
        None,
        json!({ "token_id": id }),
    );
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The public keys that verify oubli's certificates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Keys {
    pub keys: Vec<crate::crypto::PublicKey>,
}

/// The public keys that verify erasure certificates: the current one, then those rotated
/// out, which still verify what they signed. No token needed.
#[utoipa::path(get, path = "/v1/keys", tag = "admin", responses((status = 200, body = Keys)))]
pub async fn keys(State(app): State<Arc<App>>) -> Json<Keys> {
    Json(Keys {
        keys: app.keys.publics(),
    })
}

/// The trail's last event (position, hash, time), signed with the certificate key: keep
/// it outside oubli, and `oubli audit verify --head FILE` later tells whether the trail
/// still reaches it (a trail cut short at its end verifies otherwise).
#[utoipa::path(get, path = "/v1/audit/head", tag = "admin",
    responses((status = 200, description = "The head and its signature", body = crate::api::schemas::SignedAuditHead), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit_head(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&caller, &[Role::Admin, Role::Auditor])?;
    if caller.controller_id.is_some() {
        return Err(ApiError::Forbidden(
            "the audit head is a position in the trail of every controller; a token limited to one controller does not read it".into(),
        ));
    }
    audit::signed_head(&app.store, &app.keys)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound("the audit trail is empty".into()))
}

/// The audit trail, oldest first, filtered by request, actor, action or time span.
#[utoipa::path(get, path = "/v1/audit", tag = "admin",
    params(("request_id" = Option<String>, Query), ("actor" = Option<String>, Query), ("action" = Option<String>, Query),
           ("since" = Option<i64>, Query, description = "Events at or after this time, in milliseconds since the Unix epoch"),
           ("until" = Option<i64>, Query, description = "Events before this time, in milliseconds since the Unix epoch"),
           ("after" = Option<i64>, Query, description = "The `next` of the previous page"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000 (default 100)")),
    responses((status = 200, body = Page<audit::Event>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn audit_events(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Page<audit::Event>>, ApiError> {
    require(&caller, &[Role::Admin, Role::Auditor])?;
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| ApiError::BadRequest {
                    field: Some(name.into()),
                    message: format!("{name} must be a number"),
                })
            })
            .transpose()
    };
    let limit = number("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest {
            field: Some("limit".into()),
            message: format!("limit must be from 1 to 1000, not {limit}"),
        });
    }
    let mut query = crate::store::Sql::new(format!(
        "SELECT {} FROM audit_events WHERE seq > ",
        audit::COLUMNS
    ));
    query.bind(number("after")?.unwrap_or(0));
    for column in ["request_id", "actor", "action"] {
        if let Some(value) = params.get(column) {
            query.push(&format!(" AND {column} = ")).bind(value.clone());
        }
    }
    if let Some(since) = number("since")? {
        query.push(" AND at >= ").bind(since);
    }
    if let Some(until) = number("until")? {
        query.push(" AND at < ").bind(until);
    }
    if let Some(scope) = &caller.controller_id {
        query
            .push(" AND request_id IN (SELECT id FROM requests WHERE controller_id = ")
            .bind(scope.clone())
            .push(")");
    }
    query.push(" ORDER BY seq LIMIT ").bind(limit + 1);
    let mut items: Vec<audit::Event> = query.fetch_all(&app.store.read).await?;
    let next = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items.last().map(|e| e.seq.to_string()).unwrap_or_default()
    });
    Ok(Json(Page { items, next }))
}
