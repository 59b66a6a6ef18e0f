//! `/v1/requests`: submitting and following data subject requests (DPO), deciding on them
//! (controller), and reading their results.

mod create_read;
mod decisions;
mod downloads;
mod progress;

pub use create_read::*;
pub use decisions::*;
pub use downloads::*;
pub use progress::*;

use super::{ApiError, ErrorBody, Json, OptionalJson, Page, created, require};
use crate::app::App;
use crate::audit;
use crate::auth::{Caller, Role};
use crate::controller;
use crate::notify;
use crate::queue;
use crate::request::intake::{Accepted, Submission};
use crate::request::lifecycle::{self, Refusal};
use crate::request::rows::{
    self as requests, ChangeInput, Filter, IdentityInput, NewRequest, Request,
};
use crate::request::{Kind, Status};
use crate::suppression;
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
        .route("/v1/requests/{id}/emails", get(emails))
        .route("/v1/requests/{id}/certificate", get(certificate))
        .route("/v1/requests/{id}/certificate.html", get(certificate_html))
        .route("/v1/requests/{id}/package", get(package))
        .route("/v1/requests/{id}/package.html", get(package_html))
}

/// A reason, required or optional depending on the action.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    #[serde(default)]
    pub reason: Option<String>,
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
    audit::append(&mut tx, &caller.actor(), what, Some(id), json!({}));
    tx.commit().await?;
    Ok(())
}

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
