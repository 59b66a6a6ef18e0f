//! Prometheus metrics at `/metrics`, in the text format. Counted as the code runs: plugin
//! calls (latency histogram by system and action, outcome), task runs by system and
//! outcome, webhook and e-mail delivery attempts by outcome, purge runs, time to
//! completion by request kind. Read from the database at each scrape: requests by kind
//! and status, overdue requests, tasks by status, the age of the oldest due task,
//! webhooks and e-mails by status, the audit trail's length. No label carries personal
//! data: systems by name, kinds, statuses, outcomes.

use super::ApiError;
use crate::app::App;
use crate::request::{Kind, Status};
use crate::store::{Store, now_ms};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};

/// Buckets of the plugin call latency, in seconds.
const CALL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    120.0,
];
/// Buckets of the time from receipt to completion, in seconds: a minute to a quarter.
const COMPLETION_BUCKETS: &[f64] = &[
    60.0,
    600.0,
    3_600.0,
    21_600.0,
    86_400.0,
    259_200.0,
    604_800.0,
    1_209_600.0,
    2_592_000.0,
    5_184_000.0,
    7_776_000.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's metrics recorder, once; what is counted before is lost.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("oubli_plugin_call_seconds".into()),
                    CALL_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("oubli_request_completion_seconds".into()),
                        COMPLETION_BUCKETS,
                    )
                })
                // Series not updated for a day (a system removed) leave the output.
                .map(|b| {
                    b.idle_timeout(
                        metrics_util::MetricKindMask::ALL,
                        Some(std::time::Duration::from_secs(86_400)),
                    )
                })
                .map(PrometheusBuilder::install_recorder);
            match built {
                Ok(Ok(handle)) => {
                    describe();
                    Some(handle)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics are off: no recorder could be installed");
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: the buckets were refused");
                    None
                }
            }
        })
        .as_ref()
}

/// The `# HELP` of each metric.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "oubli_plugin_call_seconds",
        Unit::Seconds,
        "Plugin calls by system and action"
    );
    describe_counter!(
        "oubli_plugin_calls_total",
        "Plugin calls by system, action and outcome (ok or the error kind)"
    );
    describe_counter!(
        "oubli_task_runs_total",
        "Task runs by system and outcome (succeeded or the error kind)"
    );
    describe_counter!(
        "oubli_webhook_attempts_total",
        "Webhook delivery attempts by outcome"
    );
    describe_counter!("oubli_email_attempts_total", "E-mail attempts by outcome");
    describe_counter!("oubli_purge_runs_total", "Runs of the purge job");
    describe_histogram!(
        "oubli_request_completion_seconds",
        Unit::Seconds,
        "Time from receipt to completion or failure, by kind and status"
    );
    describe_gauge!("oubli_requests", "Requests by kind and status");
    describe_gauge!(
        "oubli_requests_overdue",
        "Open requests past their due date"
    );
    describe_gauge!("oubli_tasks", "Tasks by status");
    describe_gauge!(
        "oubli_oldest_due_task_seconds",
        "Age of the oldest queued task that is due"
    );
    describe_gauge!("oubli_webhook_deliveries", "Webhook deliveries by status");
    describe_gauge!("oubli_emails", "E-mails by status");
    describe_gauge!(
        "oubli_audit_events",
        "Length of the audit trail (last sequence number)"
    );
}

/// The metrics, for Prometheus. With `metrics_token` set, only with that bearer token.
pub async fn scrape(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(expected) = app
        .config
        .metrics_token
        .as_deref()
        .filter(|t| !t.is_empty())
    {
        let given = super::bearer(&headers).unwrap_or_default();
        // Compared as hashes: the time taken says nothing of the token.
        if crate::auth::hash(given) != crate::auth::hash(expected) {
            return Err(ApiError::Unauthorized);
        }
    }
    let handle = install()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no metrics recorder is installed")))?;
    read_gauges(&app.store).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

const KINDS: [Kind; 4] = [
    Kind::Access,
    Kind::Rectification,
    Kind::Erasure,
    Kind::Objection,
];
const STATUSES: [Status; 8] = [
    Status::Received,
    Status::AwaitingController,
    Status::Approved,
    Status::Running,
    Status::Completed,
    Status::Failed,
    Status::Rejected,
    Status::Cancelled,
];

/// Sets the gauges read from the database; a label set with nothing is 0, not absent.
async fn read_gauges(store: &Store) -> sqlx::Result<()> {
    let now = now_ms();
    let requests: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT kind, status, COUNT(*) FROM requests GROUP BY kind, status")
            .fetch_all(&store.read)
            .await?;
    for kind in KINDS {
        for status in STATUSES {
            let n = requests
                .iter()
                .find(|(k, s, _)| k == kind.as_str() && s == status.as_str())
                .map_or(0, |r| r.2);
            metrics::gauge!("oubli_requests", "kind" => kind.as_str(), "status" => status.as_str())
                .set(n as f64);
        }
    }
    let overdue: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM requests WHERE status NOT IN ('completed', 'rejected', 'cancelled') AND due_at < $1",
    )
    .bind(now)
    .fetch_one(&store.read)
    .await?;
    metrics::gauge!("oubli_requests_overdue").set(overdue as f64);
    let by_status = |table: &'static str, statuses: &'static [&'static str]| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT status, COUNT(*) FROM {table} GROUP BY status"
        ))
        .fetch_all(&store.read)
        .await?;
        for status in statuses {
            let n = rows.iter().find(|(s, _)| s == status).map_or(0, |r| r.1);
            metrics::gauge!(format!("oubli_{table}"), "status" => *status).set(n as f64);
        }
        Ok::<_, sqlx::Error>(())
    };
    by_status("tasks", &["queued", "running", "succeeded", "failed"]).await?;
    by_status("webhook_deliveries", &["pending", "delivered", "failed"]).await?;
    by_status("emails", &["pending", "sent", "skipped", "failed"]).await?;
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(run_after) FROM tasks WHERE status = $2 AND run_after <= $1",
    )
    .bind(now)
    .bind(crate::queue::TaskStatus::Queued.as_str())
    .fetch_one(&store.read)
    .await?;
    metrics::gauge!("oubli_oldest_due_task_seconds")
        .set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0));
    let trail: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
        .fetch_one(&store.read)
        .await?;
    metrics::gauge!("oubli_audit_events").set(trail as f64);
    Ok(())
}
