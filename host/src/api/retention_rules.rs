//! Retention rules (`expiry`): a controller sets, lists, tries (dry run) and removes the
//! standing instructions that erase subjects whose retention period ran out.

use super::{ApiError, Json, created, require};
use crate::app::App;
use crate::auth::{Caller, Role};
use crate::expiry::{self, DryRun, Rule, RunState};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/controllers/{id}/retention-rules",
            get(list_retention_rules).post(set_retention_rule),
        )
        .route(
            "/v1/controllers/{id}/retention-rules/{rule_id}",
            get(get_retention_rule).delete(remove_retention_rule),
        )
        .route(
            "/v1/controllers/{id}/retention-rules/{rule_id}/dry-run",
            post(dry_run_retention_rule),
        )
        .route(
            "/v1/controllers/{id}/destruction-report",
            get(destruction_report),
        )
        .route(
            "/v1/controllers/{id}/destruction-report.html",
            get(destruction_report_html),
        )
        .route(
            "/v1/controllers/{id}/retention-runs",
            get(list_retention_runs),
        )
        .route(
            "/v1/controllers/{id}/retention-runs/{run_id}",
            get(get_retention_run),
        )
        .route(
            "/v1/controllers/{id}/retention-runs/{run_id}/report",
            get(run_report),
        )
        .route(
            "/v1/controllers/{id}/retention-runs/{run_id}/report.html",
            get(run_report_html),
        )
}

/// Which runs to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only the runs of this rule.
    rule_id: Option<String>,
    /// At most this many, newest first (1 to 500, default 50).
    limit: Option<i64>,
}

/// A controller's retention runs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Runs {
    pub items: Vec<RunState>,
}

/// A retention run, how its report went out, and how many of its requests are still
/// open.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunState,
    /// Requests it filed that have not settled; its report waits for them.
    pub open_requests: i64,
    /// The report's webhook to the controller.
    pub webhooks: Vec<crate::notify::Delivery>,
    /// The report's e-mail to the controller's contact address.
    pub emails: Vec<crate::notify::email::Email>,
}

/// The controller's retention runs, newest first: what each found and filed, and whether
/// its destruction report was issued.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-runs", tag = "retention", params(("id" = String, Path), RunQuery),
    responses((status = 200, body = Runs), (status = 422, description = "`limit` out of range", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_retention_runs(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<RunQuery>,
) -> Result<Json<Runs>, ApiError> {
    super::admin::visible_controller(&app, &caller, &id).await?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "from 1 to 500"));
    }
    let items = expiry::runs(&app.store, &id, query.rule_id.as_deref(), limit).await?;
    Ok(Json(Runs { items }))
}

async fn run_view(
    app: &App,
    caller: &Caller,
    id: &str,
    run_id: &str,
) -> Result<(RunState, Option<serde_json::Value>), ApiError> {
    super::admin::visible_controller(app, caller, id).await?;
    expiry::run_of(&app.store, id, run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no retention run {run_id} of this controller")))
}

/// One retention run, with the deliveries of its report.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-runs/{run_id}", tag = "retention",
    params(("id" = String, Path), ("run_id" = String, Path)), responses((status = 200, body = RunView)), security(("bearer" = [])))]
pub async fn get_retention_run(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<RunView>, ApiError> {
    let (run, _) = run_view(&app, &caller, &id, &run_id).await?;
    let about = crate::notify::About::Run(&run_id);
    Ok(Json(RunView {
        open_requests: expiry::open_requests(&app.store, &run_id).await?,
        webhooks: crate::notify::list_about(&app.store, about).await?,
        emails: crate::notify::email::list_about(&app.store, about).await?,
        run,
    }))
}

async fn issued_report(
    app: &App,
    caller: &Caller,
    id: &str,
    run_id: &str,
) -> Result<serde_json::Value, ApiError> {
    let (run, report) = run_view(app, caller, id, run_id).await?;
    match (report, run.report_status.as_str()) {
        (Some(report), _) => Ok(report),
        (None, "none") => Err(ApiError::NotFound(
            "this run filed no erasure, so it has no destruction report".into(),
        )),
        (None, _) => Err(ApiError::Conflict(format!(
            "the report is issued once every request the run filed has settled; {} are still open",
            expiry::open_requests(&app.store, run_id).await?
        ))),
    }
}

/// The signed destruction report of one retention run, as issued (and sent) once every
/// request it filed had settled. Verify it with `oubli certificate verify`.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-runs/{run_id}/report", tag = "retention",
    params(("id" = String, Path), ("run_id" = String, Path)),
    responses((status = 200, description = "`{certificate, signature}`", body = Object),
              (status = 404, description = "No such run, or it filed nothing", body = super::ErrorBody),
              (status = 409, description = "Not issued yet: requests of the run are still open", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_report(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(issued_report(&app, &caller, &id, &run_id).await?))
}

/// A run's destruction report as a printable page.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-runs/{run_id}/report.html", tag = "retention",
    params(("id" = String, Path), ("run_id" = String, Path)),
    responses((status = 200, content_type = "text/html", body = String),
              (status = 404, description = "No such run, or it filed nothing", body = super::ErrorBody),
              (status = 409, description = "Not issued yet", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_report_html(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, run_id)): Path<(String, String)>,
) -> Result<axum::response::Html<String>, ApiError> {
    let signed = issued_report(&app, &caller, &id, &run_id).await?;
    Ok(axum::response::Html(crate::evidence::destruction::html(
        &signed,
    )))
}

/// The period of a report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// Start (RFC 3339), included; 30 days before `to` by default.
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// End (RFC 3339), excluded; now by default. At most 366 days after `from`.
    to: Option<chrono::DateTime<chrono::Utc>>,
}

async fn signed_report(
    app: &App,
    caller: &Caller,
    id: &str,
    period: &Period,
) -> Result<serde_json::Value, ApiError> {
    let controller = super::admin::visible_controller(app, caller, id).await?;
    let to = period.to.unwrap_or_else(chrono::Utc::now);
    let from = period.from.unwrap_or(to - chrono::Duration::days(30));
    if from >= to || to - from > chrono::Duration::days(366) {
        return Err(ApiError::field(
            "from",
            "the period runs from `from` to a later `to`, at most 366 days",
        ));
    }
    let signed = crate::evidence::destruction::report(
        &app.store,
        &app.keys,
        id,
        &controller.name,
        crate::evidence::destruction::Scope::Period {
            from: from.timestamp_millis(),
            to: to.timestamp_millis(),
        },
    )
    .await?;
    let mut tx = app.store.begin().await?;
    crate::audit::append(
        &mut tx,
        &caller.actor(),
        "destruction_report.issued",
        None,
        serde_json::json!({ "controller_id": id, "from": from, "to": to }),
    );
    tx.commit().await?;
    Ok(signed)
}

/// The signed destruction report of the erasures the controller's retention rules filed
/// over a period: counts per system and collection from the completed ones, the others
/// by status, the subjects as keyed hashes. Verify it with `oubli certificate verify`.
#[utoipa::path(get, path = "/v1/controllers/{id}/destruction-report", tag = "retention", params(("id" = String, Path), Period),
    responses((status = 200, description = "`{certificate, signature}`", body = Object),
              (status = 422, description = "`from` is not before `to`, or the period is longer than 366 days", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn destruction_report(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(period): axum::extract::Query<Period>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(signed_report(&app, &caller, &id, &period).await?))
}

/// The destruction report as a printable page.
#[utoipa::path(get, path = "/v1/controllers/{id}/destruction-report.html", tag = "retention", params(("id" = String, Path), Period),
    responses((status = 200, content_type = "text/html", body = String),
              (status = 422, description = "`from` is not before `to`, or the period is longer than 366 days", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn destruction_report_html(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    axum::extract::Query(period): axum::extract::Query<Period>,
) -> Result<axum::response::Html<String>, ApiError> {
    let signed = signed_report(&app, &caller, &id, &period).await?;
    Ok(axum::response::Html(crate::evidence::destruction::html(
        &signed,
    )))
}

/// A retention rule to set (a new one, or the same system and rule name changed).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRule {
    /// One of the controller's systems, whose connector implements `expired`.
    pub system_id: String,
    /// The rule's name in the system's connector configuration (for the SQL connector,
    /// a key of `dataset.retention`).
    #[schema(min_length = 1, max_length = 100)]
    pub rule: String,
    /// Minutes between runs, 1 to 10,080 (a week).
    #[schema(minimum = 1, maximum = 10080)]
    pub every_minutes: i64,
    /// Whether it runs; set it false first and look at a dry run.
    #[serde(default)]
    pub enabled: bool,
}

/// A rule as it stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleState {
    #[serde(flatten)]
    pub rule: Rule,
    pub last_run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// While enabled.
    pub next_run_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A controller's rules.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rules {
    pub items: Vec<RuleState>,
}

fn state(rule: Rule) -> RuleState {
    RuleState {
        last_run_at: rule.last_run(),
        next_run_at: rule.next_run(),
        rule,
    }
}

async fn rule_of(app: &App, caller: &Caller, id: &str, rule_id: &str) -> Result<Rule, ApiError> {
    super::admin::visible_controller(app, caller, id).await?;
    expiry::get(&app.store, id, rule_id).await?.ok_or_else(|| {
        ApiError::NotFound(format!("the controller has no retention rule {rule_id:?}"))
    })
}

/// Set a retention rule: the controller's standing instruction to erase, in one of its
/// systems, every subject whose retention under the connector's rule has run out. Each
/// is filed as an erasure request approved by the rule.
#[utoipa::path(post, path = "/v1/controllers/{id}/retention-rules", tag = "retention", params(("id" = String, Path)),
    request_body = SetRule, responses((status = 201, body = RuleState)), security(("bearer" = [])))]
pub async fn set_retention_rule(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<SetRule>,
) -> Result<(StatusCode, Json<RuleState>), ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    let system = crate::controller::get_system(&app.store, &body.system_id)
        .await?
        .filter(|s| s.controller_id == id)
        .ok_or_else(|| {
            ApiError::field(
                "system_id",
                format!("the controller has no system {:?}", body.system_id),
            )
        })?;
    let rule = body.rule.trim();
    if rule.is_empty() || rule.chars().count() > 100 {
        return Err(ApiError::field("rule", "1 to 100 characters, not blank"));
    }
    if !(1..=10_080).contains(&body.every_minutes) {
        return Err(ApiError::field("every_minutes", "1 to 10,080 minutes"));
    }
    let plugin = crate::controller::get_plugin(&app.store, &system.plugin).await?;
    if !plugin.is_some_and(|p| p.info.actions.iter().any(|a| a == "expired")) {
        return Err(ApiError::field(
            "system_id",
            format!(
                "the connector of system {:?} does not implement expired (contract 0.2), so it cannot say who expired",
                system.name
            ),
        ));
    }
    // A rule the connector does not know is refused now, not at every run.
    if let Err(e) = expiry::probe(&app, &system.id, rule).await {
        return Err(match e {
            crate::runtime::RuntimeError::InvalidConfig(m) => ApiError::field("rule", m),
            other => ApiError::Conflict(format!(
                "the connector could not be asked who expired under this rule: {other}"
            )),
        });
    }
    let mut tx = app.store.begin().await?;
    let stored = expiry::set(
        &mut tx,
        &id,
        &system.id,
        rule,
        body.every_minutes,
        body.enabled,
        &caller.actor(),
    )
    .await?;
    tx.commit().await?;
    Ok(created(state(stored)))
}

/// The controller's retention rules, with how their last run went.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-rules", tag = "retention", params(("id" = String, Path)),
    responses((status = 200, body = Rules)), security(("bearer" = [])))]
pub async fn list_retention_rules(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Rules>, ApiError> {
    super::admin::visible_controller(&app, &caller, &id).await?;
    let items = expiry::list(&app.store, &id)
        .await?
        .into_iter()
        .map(state)
        .collect();
    Ok(Json(Rules { items }))
}

/// One retention rule.
#[utoipa::path(get, path = "/v1/controllers/{id}/retention-rules/{rule_id}", tag = "retention",
    params(("id" = String, Path), ("rule_id" = String, Path)), responses((status = 200, body = RuleState)), security(("bearer" = [])))]
pub async fn get_retention_rule(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<Json<RuleState>, ApiError> {
    Ok(Json(state(rule_of(&app, &caller, &id, &rule_id).await?)))
}

/// Remove a retention rule: it runs no more (requests it filed go on).
#[utoipa::path(delete, path = "/v1/controllers/{id}/retention-rules/{rule_id}", tag = "retention",
    params(("id" = String, Path), ("rule_id" = String, Path)), responses((status = 204, description = "Removed")), security(("bearer" = [])))]
pub async fn remove_retention_rule(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require(&caller, &[Role::Admin, Role::Controller])?;
    rule_of(&app, &caller, &id, &rule_id).await?;
    let mut tx = app.store.begin().await?;
    expiry::remove(&mut tx, &id, &rule_id, &caller.actor()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the rule would file now, without filing anything: how many subjects, by identity
/// kind (never their values).
#[utoipa::path(post, path = "/v1/controllers/{id}/retention-rules/{rule_id}/dry-run", tag = "retention",
    params(("id" = String, Path), ("rule_id" = String, Path)),
    responses((status = 200, body = DryRun), (status = 409, description = "The connector could not say who expired", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn dry_run_retention_rule(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((id, rule_id)): Path<(String, String)>,
) -> Result<Json<DryRun>, ApiError> {
    require(&caller, &[Role::Admin, Role::Controller])?;
    let rule = rule_of(&app, &caller, &id, &rule_id).await?;
    match expiry::dry_run(&app, &rule, &caller.actor()).await? {
        Ok(found) => Ok(Json(found)),
        Err(e) => Err(ApiError::Conflict(format!(
            "the connector could not list who expired: {e}"
        ))),
    }
}
