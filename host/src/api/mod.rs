//! The REST API under `/v1`: JSON in and out, bearer tokens, errors as
//! `{code, message, field}`, and the OpenAPI document at `/v1/openapi.json`.

mod admin;
mod approval;
mod console;
mod error;
mod metrics;
mod opendsr;
mod pages;
mod recipients;
mod requests;
mod retention_rules;
mod schemas;
mod subject_notices;
mod suppression;
pub use metrics::install as install_metrics;
use schemas::Answers;

pub use error::{ApiError, ErrorBody, Json};

use crate::app::App;
use crate::auth::{self, Caller, Role};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::get;
use axum::{Router, extract::DefaultBodyLimit};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::OpenApi;

/// The largest JSON body the API reads.
pub const MAX_JSON_BODY: usize = 256 << 10;
/// The largest plugin upload.
pub const MAX_PLUGIN_BODY: usize = 64 << 20;

/// Sends `next`'s answer once every durable commit made so far is on disk (at once when
/// none waits to be flushed), unless the answer is marked [`crate::store::Covered`] (its
/// handler's own commit is on disk and covers all it tells of), or is a probe's.
async fn on_disk(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // The probes and metrics tell of the process, not of what it committed.
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let answer = next.run(request).await;
    if probe || answer.extensions().get::<crate::store::Covered>().is_some() {
        return answer;
    }
    match app.store.on_disk().await {
        Ok(()) => answer,
        Err(e) => {
            tracing::error!(error = %e, "an answer was held back: the service database cannot be written to disk");
            axum::response::IntoResponse::into_response(ApiError::Internal(
                anyhow::Error::new(e).context("the service database cannot be written to disk"),
            ))
        }
    }
}

/// The service's HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(requests::router())
        .merge(admin::router())
        .merge(suppression::router())
        .merge(recipients::router())
        .merge(subject_notices::router())
        .merge(retention_rules::router())
        .merge(opendsr::router())
        // JSON bodies are limited by the `Json` extractor, which answers 413 cleanly.
        .layer(DefaultBodyLimit::disable())
        .merge(admin::plugin_upload_router())
        .merge(suppression::csv_router())
        .merge(pages_router())
        .route(
            "/v1/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .fallback(|| async {
            ApiError::NotFound("no such endpoint; the API is described at /v1/openapi.json".into())
        })
        .layer(axum::middleware::map_response(error::json_errors))
        // Someone waits on every answer: its transactions go before the workers'.
        .layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| {
                crate::store::foreground(next.run(request))
            },
        ))
        // No answer tells of what a power cut could still undo: it waits until every
        // durable commit made so far is on disk, or is covered by its handler's own
        // (see `store::flush`, `store::Covered`).
        .layer(axum::middleware::from_fn_with_state(app.clone(), on_disk))
        // Every answer, JSON or a page (the certificate and package pages under /v1 too),
        // carries the pages' security headers.
        .layer(axum::middleware::from_fn(pages::headers))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::http::Request<axum::body::Body>| {
                    tracing::info_span!(
                        "http",
                        method = %request.method(),
                        path = %pages::loggable_path(request.uri().path()),
                    )
                },
            ),
        )
        .with_state(app)
}

/// Whether this process can serve: its database answers for reading and writing and
/// holds this build's migrations, and its keys are loaded. 200 or 503, for load balancers
/// and orchestrators; no token needed and nothing personal said.
async fn readyz(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let key = app.keys.public().key_id;
    match app.store.readiness(std::time::Duration::from_secs(2)).await {
        Ok(version) => axum::Json(serde_json::json!({
            "status": "ready",
            "database": "ok",
            "migrations": version,
            "signing_key": key,
        }))
        .into_response(),
        Err(unready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({
                "status": "unready",
                "database": unready,
                "signing_key": key,
            })),
        )
            .into_response(),
    }
}

/// The token of an `Authorization: Bearer …` header (either case), trimmed.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The pages for people: the approval page of a link, and the console.
fn pages_router() -> Router<Arc<App>> {
    use axum::routing::post;
    Router::new()
        .route("/", get(console::home))
        .route("/assets/oubli.css", get(pages::stylesheet))
        .route(
            "/approve/{token}",
            get(approval::show).post(approval::decide),
        )
        .route("/console", get(console::list))
        .route("/console/", get(console::home))
        .route(
            "/console/sign-in",
            get(console::sign_in_page).post(console::sign_in),
        )
        .route("/console/sign-out", post(console::sign_out))
        .route("/console/requests/{id}", get(console::request))
        .route(
            "/console/requests/{id}/{step}",
            get(console::download).post(console::act),
        )
        .route("/console/audit", get(console::audit))
        .route("/console/admin", get(console::admin))
}

/// The client's address: the connection's, or, for a connection from a trusted proxy,
/// the last address in `X-Forwarded-For` that is not a trusted proxy (the ones before it
/// were written by the client and prove nothing).
pub fn client_ip(parts: &Parts, trusted: &[std::net::IpAddr]) -> std::net::IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<std::net::IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.contains(a))
        .unwrap_or(peer)
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let ip = client_ip(parts, &app.config.trusted_proxies);
        if let Some(wait) = app.throttle.blocked(ip) {
            return Err(ApiError::Throttled(wait.as_secs().max(1)));
        }
        let token = bearer(&parts.headers);
        let caller = match token {
            Some(token) if !token.is_empty() => auth::authenticate(&app.store, token).await?,
            _ => None,
        };
        caller.ok_or_else(|| {
            let failures = app.throttle.fail(ip);
            tracing::warn!(%ip, failures, path = %parts.uri.path(), "authentication failed");
            ApiError::Unauthorized
        })
    }
}

/// Refuses callers whose role is not among `roles`.
///
/// # Errors
/// [`ApiError::Forbidden`] naming the roles that may.
pub fn require(caller: &Caller, roles: &[Role]) -> Result<(), ApiError> {
    if roles.contains(&caller.role) {
        return Ok(());
    }
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(ApiError::Forbidden(format!(
        "this needs a token with role {}; yours is {}",
        names.join(" or "),
        caller.role.as_str()
    )))
}

/// A JSON body that may be left out, read as `T::default()` then.
#[derive(Debug, Default)]
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let empty = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|l| l == "0")
            || (request.headers().get(header::CONTENT_TYPE).is_none()
                && request.headers().get(header::TRANSFER_ENCODING).is_none());
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(v)| OptionalJson(v))
    }
}

/// A page of a list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// 201 Created with a JSON body.
pub fn created<T: serde::Serialize>(body: T) -> (StatusCode, Json<T>) {
    (StatusCode::CREATED, Json(body))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "oubli", description = "Carries out GDPR data subject requests through sandboxed WebAssembly connectors."),
    paths(
        requests::create, requests::list, requests::get_one, requests::cancel, requests::extend, requests::approve,
        requests::reject, requests::retry, requests::tasks, requests::results, requests::webhooks, requests::events, requests::emails,
        requests::certificate, requests::certificate_html, requests::package, requests::package_html, admin::keys, admin::audit_events, admin::audit_head,
        admin::create_controller, admin::list_controllers, admin::get_controller, admin::create_system, admin::list_systems,
        admin::upload_plugin, admin::list_plugins, admin::get_plugin, admin::create_token, admin::revoke_token,
        suppression::configure_suppression, suppression::read_suppression, suppression::end_suppression, suppression::check_suppression,
        suppression::remove_suppressed, suppression::check_suppression_csv,
        recipients::add_recipient, recipients::list_recipients, recipients::remove_recipient, recipients::notice,
        subject_notices::configure_subject_notices, subject_notices::read_subject_notices, subject_notices::stop_subject_notices,
        retention_rules::set_retention_rule, retention_rules::list_retention_rules, retention_rules::get_retention_rule,
        retention_rules::remove_retention_rule, retention_rules::dry_run_retention_rule,
        retention_rules::destruction_report, retention_rules::destruction_report_html,
        retention_rules::list_retention_runs, retention_rules::get_retention_run, retention_rules::run_report,
        retention_rules::run_report_html,
        opendsr::discovery, opendsr::certificate, opendsr::create, opendsr::create_v1, opendsr::status, opendsr::cancel,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &Answers),
    tags((name = "requests", description = "Data subject requests"), (name = "admin", description = "Controllers, systems, plugins and tokens"),
        (name = "suppression", description = "Suppression lists: who must not be contacted again"),
        (name = "recipients", description = "Recipients told of erasures and rectifications (Art. 19)"),
        (name = "subject notices", description = "E-mails to the data subjects"),
        (name = "retention", description = "Retention rules: erasure without a request"),
        (name = "opendsr", description = "OpenDSR 2.0 (formerly OpenGDPR), for controllers' platforms")),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, for `oubli openapi`.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// What the evidence needs of the running service.
pub fn evidence(app: &App) -> crate::evidence::Context<'_> {
    crate::evidence::Context {
        store: &app.store,
        keys: &app.keys,
        config: &app.config,
    }
}
