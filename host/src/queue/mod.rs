//! The task queue: one task per request and connected system, claimed with a lease,
//! heart-beaten while it runs, retried with capped jittered backoff when the failure is
//! retryable, and fenced by the lease token unique to each claim (`lease_owner`), so
//! that a worker whose lease was taken over cannot write a stale result.
//!
//! Task statuses are bound from [`TaskStatus::as_str`], never written as literals in SQL.
//! The queue writes no request status; the claim and the page store only read whether a
//! task's request is still to be carried out.

use crate::audit;
use crate::retry::Backoff;
use crate::store::{self, Backend, Sql, Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl TaskStatus {
    /// The name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
        }
    }

    /// The status stored as `text`; a text no version of oubli writes is an error.
    fn parse(text: &str) -> sqlx::Result<TaskStatus> {
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown task status {text:?}").into()))
    }
}

/// One request in one connected system.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    pub request_id: String,
    pub system_id: String,
    pub system_name: String,
    pub status: TaskStatus,
    /// Runs begun, interrupted ones included.
    pub attempts: u32,
    /// Runs whose worker stopped before finishing (a crash, a kill, a lease taken over):
    /// they are retried with backoff and do not count against `max_attempts`.
    pub interrupted: u32,
    /// Runs that ended (`attempts - interrupted`) are at most this many.
    pub max_attempts: u32,
    /// When a queued task will next be tried.
    pub run_after: DateTime<Utc>,
    pub last_error: Option<String>,
    /// `unavailable`, `timeout`, `trap`, `out-of-memory`, `denied`, `invalid-config`,
    /// `failed` or `lease-lost`.
    pub last_error_kind: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A task a worker holds the lease of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: String,
    pub request_id: String,
    pub system_id: String,
    /// The attempt this run is (1 for the first), counting interrupted runs.
    #[sqlx(try_from = "i64")]
    pub attempt: u32,
    #[sqlx(try_from = "i64")]
    pub max_attempts: u32,
    /// How many runs before this one were interrupted (their worker stopped before
    /// finishing): they do not count against `max_attempts`.
    #[sqlx(try_from = "i64")]
    pub interrupted: u32,
    /// Whether this claim took the task over from a run that was interrupted.
    #[sqlx(default)]
    pub took_over: bool,
    /// The status of the task's request when the task was claimed (read by the claim
    /// itself, so that starting approved requests needs no read of its own).
    pub request_status: String,
    /// The controller of the task's request.
    pub controller_id: String,
    /// What the task's earlier runs left of an erasure, as the claim found it.
    #[sqlx(flatten)]
    pub erasure: ErasureState,
    /// The fencing token, `<owner>:<random>`, unique to this claim: every later write
    /// checks it, so a worker whose lease was taken over cannot write, even when the task's
    /// attempt count was reset by a retry since.
    pub lease: String,
}

impl Claimed {
    /// The runs of the task that ended, this one included: what `max_attempts` bounds.
    pub fn runs(&self) -> u32 {
        self.attempt.saturating_sub(self.interrupted)
    }
}

/// SQL for the wait before a task whose run was interrupted is taken again, after `{k}`
/// earlier interruptions (`$base` and `$cap` in milliseconds): none after the first,
/// then `base × 2^(k-1)` up to `cap`, so that a task whose runs keep dying (a process
/// in a crash loop) is not taken again and again at once.
fn interrupted_delay(k: &str, base: &str, cap: &str) -> String {
    format!(
        "CASE WHEN {k} = 0 THEN 0 WHEN {k} > 20 THEN {cap} \
         WHEN ({base} << CAST({k} - 1 AS INTEGER)) > {cap} THEN {cap} \
         ELSE ({base} << CAST({k} - 1 AS INTEGER)) END"
    )
}

/// Creates one queued task per connected system of the request's controller, in the
/// caller's transaction. Returns how many.
///
/// # Errors
/// When the database write fails.
pub async fn enqueue(
    tx: &mut Tx<'_>,
    request_id: &str,
    controller_id: &str,
    max_attempts: u32,
    not_before: Option<i64>,
    only_system: Option<&str>,
) -> sqlx::Result<u64> {
    let now = now_ms();
    let run_after = not_before.map_or(now, |t| t.max(now));
    let systems: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM systems WHERE controller_id = $1 AND (CAST($2 AS TEXT) IS NULL OR id = $2) ORDER BY name",
    )
    .bind(controller_id)
    .bind(only_system)
    .fetch_all(&mut **tx)
    .await?;
    if systems.is_empty() {
        return Ok(0);
    }
    // One insert for all of them.
    let mut insert = Sql::new(
        "INSERT INTO tasks (id, request_id, system_id, status, attempts, max_attempts, run_after, created_at, updated_at) VALUES ",
    );
    for (i, system) in systems.iter().enumerate() {
        insert
            .push(if i == 0 { "(" } else { ", (" })
            .bind(uuid::Uuid::now_v7().to_string())
            .push(", ")
            .bind(request_id.to_owned())
            .push(", ")
            .bind(system.clone())
            .push(", ")
            .bind(TaskStatus::Queued.as_str())
            .push(", 0, ")
            .bind(i64::from(max_attempts))
            .push(", ")
            .bind(run_after)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(")");
    }
    insert.execute(&mut **tx).await?;
    announce(tx).await?;
    Ok(systems.len() as u64)
}

/// Tells the workers of every process that tasks were queued, when the caller's
/// transaction commits (PostgreSQL `NOTIFY`); in-process workers are woken through
/// the app's `tasks_ready` by the caller.
///
/// # Errors
/// When the database fails.
pub async fn announce(tx: &mut Tx<'_>) -> sqlx::Result<()> {
    if tx.backend_name() == store::POSTGRES_DRIVER {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(store::TASKS_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Claims up to `limit` tasks that are due, or whose lease expired, for `lease`, in one
/// transaction of their own (the request lifecycle's `claim_many` claims them in the
/// transaction that starts their requests: see [`claim_in`]).
///
/// # Errors
/// When the database fails.
pub async fn claim_many(
    store: &Store,
    owner: &str,
    lease: Duration,
    backoff: &Backoff,
    limit: usize,
) -> anyhow::Result<Vec<Claimed>> {
    store::retrying(|| async {
        let mut tx = store.relaxed().await?;
        let claimed = claim_in(&mut tx, owner, lease, backoff, limit).await?;
        tx.commit().await?;
        Ok(claimed)
    })
    .await
}

/// When the next task becomes claimable without anything new being queued: the earliest
/// `run_after` of a queued task of an approved or running request, or the moment a running
/// task's lease (and the wait after it) runs out; `None` when nothing is pending. Idle
/// workers sleep until then instead of polling (a new task wakes them).
///
/// # Errors
/// When the database cannot be read.
pub async fn next_due(store: &Store, backoff: &Backoff) -> sqlx::Result<Option<i64>> {
    let delay = interrupted_delay("t.interrupted", "$3", "$4");
    sqlx::query_scalar(&format!(
        "SELECT MIN(CASE WHEN t.status = $1 THEN t.run_after ELSE t.lease_expires_at + {delay} END) \
         FROM tasks t JOIN requests r ON r.id = t.request_id \
         WHERE r.status IN ('approved', 'running') AND t.status IN ($1, $2)"
    ))
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskStatus::Running.as_str())
    .bind(backoff.base.as_millis() as i64)
    .bind(backoff.cap.as_millis() as i64)
    .fetch_one(&store.read)
    .await
}

/// Claims up to `limit` tasks that are due, or whose lease expired, for `lease`, in the
/// caller's transaction: their attempts are recorded, and each says its request's status
/// and controller as the claim read them.
///
/// # Errors
/// When the database fails.
pub async fn claim_in(
    tx: &mut Tx<'_>,
    owner: &str,
    lease: Duration,
    backoff: &Backoff,
    limit: usize,
) -> anyhow::Result<Vec<Claimed>> {
    let now = now_ms();
    // Workers of other processes skip the rows this one is claiming instead of waiting.
    let skip_locked = if store::on_postgres(tx) {
        " FOR UPDATE OF t SKIP LOCKED"
    } else {
        ""
    };
    let nonce = format!("{:016x}", rand::random::<u64>());
    // Only tasks of approved or running requests: a request cancelled after its approval
    // keeps queued tasks that must not run. A task still marked running whose lease ran
    // out was interrupted: it is taken over (after a wait that grows with its
    // interruptions) and the interruption counted apart.
    let delay = interrupted_delay("t.interrupted", "$8", "$9");
    let mut claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "UPDATE tasks SET status = $6, attempts = attempts + 1, \
         interrupted = interrupted + CASE WHEN status = $6 THEN 1 ELSE 0 END, \
         lease_owner = $1 || ':' || $5 || ':' || id, lease_expires_at = $2, updated_at = $3 \
         WHERE id IN (SELECT t.id FROM tasks t JOIN requests r ON r.id = t.request_id \
                      WHERE r.status IN ('approved', 'running') \
                        AND ((t.status = $7 AND t.run_after <= $3) \
                             OR (t.status = $6 AND t.lease_expires_at + {delay} < $3)) \
                      ORDER BY t.run_after, t.id LIMIT $4{skip_locked}) \
         RETURNING id, request_id, system_id, attempts AS attempt, max_attempts, interrupted, lease_owner AS lease, \
         (SELECT r.status FROM requests r WHERE r.id = tasks.request_id) AS request_status, \
         (SELECT r.controller_id FROM requests r WHERE r.id = tasks.request_id) AS controller_id, located, erased",
    ))
    .bind(owner)
    .bind(now + lease.as_millis() as i64)
    .bind(now)
    .bind(limit as i64)
    .bind(&nonce)
    .bind(TaskStatus::Running.as_str())
    .bind(TaskStatus::Queued.as_str())
    .bind(backoff.base.as_millis() as i64)
    .bind(backoff.cap.as_millis() as i64)
    .fetch_all(&mut **tx)
    .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    for task in claimed.iter_mut().filter(|t| t.interrupted > 0) {
        // The run taken over ends as interrupted (one that is in fact still alive finds
        // its lease gone and ends as `lease-lost`).
        let open = sqlx::query(
            "UPDATE task_attempts SET finished_at = $1, outcome = 'interrupted' WHERE task_id = $2 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(&task.id)
        .execute(&mut **tx)
        .await?;
        task.took_over = open.rows_affected() > 0;
    }
    let mut attempts = Sql::new(
        "INSERT INTO task_attempts (lease, task_id, attempt, worker, started_at, renewed_at) VALUES ",
    );
    for (i, task) in claimed.iter().enumerate() {
        attempts
            .push(if i == 0 { "(" } else { ", (" })
            .bind(task.lease.clone())
            .push(", ")
            .bind(task.id.clone())
            .push(", ")
            .bind(i64::from(task.attempt))
            .push(", ")
            .bind(owner.to_owned())
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(")");
    }
    attempts.execute(&mut **tx).await?;
    Ok(claimed)
}

/// Claims the next task that is due, or whose lease expired, for `lease`.
///
/// # Errors
/// When the database fails.
pub async fn claim(
    store: &Store,
    owner: &str,
    lease: Duration,
    backoff: &Backoff,
) -> anyhow::Result<Option<Claimed>> {
    Ok(claim_many(store, owner, lease, backoff, 1).await?.pop())
}

/// Renews the lease; false when the task is no longer this worker's.
///
/// # Errors
/// When the database fails.
pub async fn heartbeat(store: &Store, task: &Claimed, lease: Duration) -> sqlx::Result<bool> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE tasks SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = $4",
    )
    .bind(now + lease.as_millis() as i64)
    .bind(&task.id)
    .bind(&task.lease)
    .bind(TaskStatus::Running.as_str())
    .execute(&store.write)
    .await?;
    if done.rows_affected() == 1 {
        sqlx::query("UPDATE task_attempts SET renewed_at = $1 WHERE lease = $2")
            .bind(now)
            .bind(&task.lease)
            .execute(&store.write)
            .await?;
    }
    Ok(done.rows_affected() == 1)
}

/// How a run of a task ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// The result as stored (JSON, sealed by the worker: see [`crate::crypto::seal`]),
    /// how many records the run located, exported or changed, and for a rectification
    /// the positions of the changes the system has no place for.
    Succeeded {
        result: String,
        found: u64,
        unapplied: Option<Vec<u32>>,
    },
    /// A failure; `retryable` ones are tried again until the attempts run out.
    Failed {
        kind: String,
        message: String,
        retryable: bool,
    },
}

/// How one run of a task ended, to be recorded.
#[derive(Debug, Clone)]
pub struct Finished {
    pub task: Claimed,
    pub outcome: RunOutcome,
    /// The delay before the next attempt, if the failure is retried.
    pub backoff: Duration,
    /// Whether the run may have written pages (an access task).
    pub paged: bool,
}

/// Records how one run ended, in the caller's transaction, if the run still holds its
/// task (fenced by its lease token): the task's status and result or error, the end of
/// the attempt, its exported pages kept or deleted, and the audit event. Returns whether
/// it was recorded; a stale run's result is dropped. The caller then settles the request
/// (see the request lifecycle's `finish`): the queue knows nothing of its status.
///
/// # Errors
/// When the database fails.
pub async fn record(tx: &mut Tx<'_>, actor: &str, run: &Finished) -> anyhow::Result<bool> {
    let now = now_ms();
    let Finished {
        task,
        outcome,
        backoff,
        paged,
    } = run;
    let (status, event, mut details) = match outcome {
        RunOutcome::Succeeded { .. } => (
            TaskStatus::Succeeded,
            "task.succeeded",
            serde_json::json!({}),
        ),
        RunOutcome::Failed {
            kind,
            message,
            retryable,
        } if *retryable && task.runs() < task.max_attempts => (
            TaskStatus::Queued,
            "task.retry_scheduled",
            serde_json::json!({ "error": kind, "message": message, "retry_in_ms": backoff.as_millis() as u64 }),
        ),
        RunOutcome::Failed { kind, message, .. } => (
            TaskStatus::Failed,
            "task.failed",
            serde_json::json!({ "error": kind, "message": message }),
        ),
    };
    let (result, found, unapplied, error, error_kind) = match outcome {
        RunOutcome::Succeeded {
            result,
            found,
            unapplied,
        } => (
            Some(result.clone()),
            Some(*found as i64),
            unapplied
                .as_ref()
                .map(|u| serde_json::Value::from(u.clone()).to_string()),
            None,
            None,
        ),
        RunOutcome::Failed { kind, message, .. } => (
            None,
            None,
            None,
            Some(message.as_str()),
            Some(kind.as_str()),
        ),
    };
    // A run that succeeded carries what its erasure located and was reported in its
    // result: the state kept across runs goes.
    let updated = sqlx::query(
        "UPDATE tasks SET status = $1, result = COALESCE($2, result), last_error = $3, last_error_kind = $4, run_after = $5, \
         lease_owner = NULL, lease_expires_at = NULL, updated_at = $6, found = COALESCE($10, found), unapplied = COALESCE($11, unapplied), \
         located = CASE WHEN $2 IS NULL THEN located END, erased = CASE WHEN $2 IS NULL THEN erased END \
         WHERE id = $7 AND lease_owner = $8 AND status = $9",
    )
    .bind(status.as_str())
    .bind(result)
    .bind(error)
    .bind(error_kind)
    .bind(if status == TaskStatus::Queued { now + backoff.as_millis() as i64 } else { now })
    .bind(now)
    .bind(&task.id)
    .bind(&task.lease)
    .bind(TaskStatus::Running.as_str())
    .bind(found)
    .bind(unapplied)
    .execute(&mut **tx)
    .await?;
    let ended = match (updated.rows_affected(), status) {
        (0, _) => "lease-lost",
        (_, TaskStatus::Queued) => "retry",
        (_, status) => status.as_str(),
    };
    // Exported pages are kept only for the run whose result names them: those of a
    // run that failed or lost its lease are never read, and a task that failed for
    // good keeps none (runs that crashed may have left some).
    let stale_pages = match ended {
        "failed" => Some("DELETE FROM task_pages WHERE task_id = $1"),
        "succeeded" if *paged => Some("DELETE FROM task_pages WHERE task_id = $1 AND lease <> $2"),
        _ if *paged => Some("DELETE FROM task_pages WHERE task_id = $1 AND lease = $2"),
        _ => None,
    };
    if let Some(statement) = stale_pages {
        let mut query = sqlx::query(statement).bind(&task.id);
        if statement.contains("$2") {
            query = query.bind(&task.lease);
        }
        query.execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE task_attempts SET finished_at = $1, outcome = $2 WHERE lease = $3")
        .bind(now)
        .bind(ended)
        .bind(&task.lease)
        .execute(&mut **tx)
        .await?;
    if updated.rows_affected() == 0 {
        tracing::warn!(task = %task.id, attempt = task.attempt, "dropping the result of a task whose lease was taken over");
        return Ok(false);
    }
    details["task_id"] = task.id.clone().into();
    details["system_id"] = task.system_id.clone().into();
    details["attempt"] = task.attempt.into();
    audit::append(tx, actor, event, Some(&task.request_id), details);
    Ok(true)
}

/// The positions of a rectification's changes that no system of the request had a place
/// for, once every task has said which it could not apply (empty otherwise), in the
/// caller's transaction.
///
/// # Errors
/// When the database cannot be read.
pub async fn changes_applied_nowhere(
    tx: &mut Tx<'_>,
    request_id: &str,
) -> anyhow::Result<Vec<u32>> {
    let rows: Vec<Option<String>> =
        sqlx::query_scalar("SELECT unapplied FROM tasks WHERE request_id = $1")
            .bind(request_id)
            .fetch_all(&mut **tx)
            .await?;
    let mut nowhere: Option<std::collections::BTreeSet<u32>> = None;
    for row in rows {
        // A task that did not say (not a rectification, or it failed) settles nothing.
        let Some(text) = row else {
            return Ok(Vec::new());
        };
        let here: std::collections::BTreeSet<u32> = serde_json::from_str(&text)?;
        nowhere = Some(match nowhere {
            None => here,
            Some(before) => before.intersection(&here).copied().collect(),
        });
    }
    Ok(nowhere.unwrap_or_default().into_iter().collect())
}

/// Hands the leases of this worker's running tasks back, so another worker takes them at
/// once; the interrupted attempt is not counted.
///
/// # Errors
/// When the database fails.
pub async fn release(store: &Store, worker: &str) -> sqlx::Result<u64> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    // The rows first, held until the end (PostgreSQL): a worker of another process cannot
    // take one of them over between the two writes below.
    let hold = match store.backend() {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let leases: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT lease_owner FROM tasks WHERE status = $1 AND lease_owner LIKE $2 || ':%'{hold}"
    ))
    .bind(TaskStatus::Running.as_str())
    .bind(worker)
    .fetch_all(&mut *tx)
    .await?;
    let mut released = 0;
    for lease in &leases {
        sqlx::query(
            "UPDATE task_attempts SET finished_at = $1, outcome = 'released' WHERE lease = $2 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(lease)
        .execute(&mut *tx)
        .await?;
        released += sqlx::query(
            "UPDATE tasks SET status = $3, attempts = attempts - 1, lease_owner = NULL, lease_expires_at = NULL, run_after = $1 \
             WHERE lease_owner = $2 AND status = $4",
        )
        .bind(now)
        .bind(lease)
        .bind(TaskStatus::Queued.as_str())
        .bind(TaskStatus::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(released)
}

/// On the start of the only process of an SQLite database: the tasks still marked running
/// were interrupted when the last process stopped. Their attempts end as `interrupted`,
/// counted apart from the runs that ended, and they are queued again: at once after a
/// first interruption, later after a wait that grows with each (see
/// [`interrupted_delay`]). Each is audited as `task.interrupted`. Returns how many.
///
/// # Errors
/// When the database fails.
pub async fn resume_interrupted(store: &Store, backoff: &Backoff) -> sqlx::Result<u64> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    let interrupted: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT id, request_id, system_id, attempts, interrupted FROM tasks WHERE status = $1 ORDER BY id",
    )
    .bind(TaskStatus::Running.as_str())
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE task_attempts SET finished_at = $1, outcome = 'interrupted' WHERE finished_at IS NULL",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let delay = interrupted_delay("interrupted", "$4", "$5");
    sqlx::query(&format!(
        "UPDATE tasks SET status = $2, interrupted = interrupted + 1, lease_owner = NULL, lease_expires_at = NULL, \
         run_after = $1 + {delay}, updated_at = $1 WHERE status = $3"
    ))
    .bind(now)
    .bind(TaskStatus::Queued.as_str())
    .bind(TaskStatus::Running.as_str())
    .bind(backoff.base.as_millis() as i64)
    .bind(backoff.cap.as_millis() as i64)
    .execute(&mut *tx)
    .await?;
    for (task, request, system, attempt, before) in &interrupted {
        audit::append(
            &mut tx,
            "system",
            "task.interrupted",
            Some(request),
            interruption(task, system, *attempt, before + 1),
        );
    }
    tx.commit().await?;
    Ok(interrupted.len() as u64)
}

/// The audit details of a run interrupted before it finished.
pub fn interruption(task: &str, system: &str, attempt: i64, interrupted: i64) -> serde_json::Value {
    serde_json::json!({
        "task_id": task,
        "system_id": system,
        "attempt": attempt,
        "interrupted": interrupted,
        "message": "the worker running this attempt stopped before finishing; the task runs again, and interrupted runs do not count against max_attempts",
    })
}

/// Closes the queued tasks of a request cancelled after its approval, in the caller's
/// transaction, so that none of them runs.
///
/// # Errors
/// When the database write fails.
pub async fn cancel_queued(tx: &mut Tx<'_>, request_id: &str) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE tasks SET status = $3, last_error = 'the request was cancelled before this task ran', \
         last_error_kind = 'cancelled', updated_at = $1 WHERE request_id = $2 AND status = $4",
    )
    .bind(now_ms())
    .bind(request_id)
    .bind(TaskStatus::Failed.as_str())
    .bind(TaskStatus::Queued.as_str())
    .execute(&mut **tx)
    .await?;
    // A run that started before the cancellation stores no more pages; those it stored go.
    sqlx::query(
        "DELETE FROM task_pages WHERE task_id IN (SELECT id FROM tasks WHERE request_id = $1)",
    )
    .bind(request_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// How many of a request's tasks a worker has taken (running, or ended), in the caller's
/// transaction. On PostgreSQL the request's queued tasks are locked first: a claim of one
/// that is under way is waited for and counted, and none is claimed until the
/// transaction ends.
///
/// # Errors
/// When the database fails.
pub async fn taken_tasks(tx: &mut Tx<'_>, request_id: &str) -> sqlx::Result<i64> {
    if store::on_postgres(tx) {
        sqlx::query("SELECT id FROM tasks WHERE request_id = $1 AND status = $2 FOR UPDATE")
            .bind(request_id)
            .bind(TaskStatus::Queued.as_str())
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE request_id = $1 AND status <> $2")
        .bind(request_id)
        .bind(TaskStatus::Queued.as_str())
        .fetch_one(&mut **tx)
        .await
}

/// Re-queues a failed request's failed tasks with fresh attempts, in the caller's
/// transaction. Returns how many.
///
/// # Errors
/// When the database write fails.
pub async fn requeue_failed(tx: &mut Tx<'_>, request_id: &str) -> sqlx::Result<u64> {
    let now = now_ms();
    let done = sqlx::query("UPDATE tasks SET status = $3, attempts = 0, interrupted = 0, run_after = $1, updated_at = $1 WHERE request_id = $2 AND status = $4")
        .bind(now)
        .bind(request_id)
        .bind(TaskStatus::Queued.as_str())
        .bind(TaskStatus::Failed.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

type TaskRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

/// A request's tasks, by system name.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, request_id: &str) -> sqlx::Result<Vec<Task>> {
    let rows: Vec<TaskRow> = sqlx::query_as(
        "SELECT t.id, t.request_id, t.system_id, s.name, t.status, t.attempts, t.max_attempts, t.run_after, t.last_error, t.last_error_kind, t.updated_at, t.interrupted \
         FROM tasks t JOIN systems s ON s.id = t.system_id WHERE t.request_id = $1 ORDER BY s.name",
    )
    .bind(request_id)
    .fetch_all(&store.read)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Task {
                id: r.0,
                request_id: r.1,
                system_id: r.2,
                system_name: r.3,
                status: TaskStatus::parse(&r.4)?,
                attempts: r.5 as u32,
                interrupted: r.11 as u32,
                max_attempts: r.6 as u32,
                run_after: to_rfc3339(r.7),
                last_error: r.8,
                last_error_kind: r.9,
                updated_at: to_rfc3339(r.10),
            })
        })
        .collect()
}

/// The results of a request's succeeded tasks, by system name.
///
/// # Errors
/// When the database cannot be read.
pub async fn results(
    store: &Store,
    sealer: &crate::crypto::seal::Sealer,
    request_id: &str,
) -> anyhow::Result<Vec<(String, String, serde_json::Value)>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT s.id, s.name, t.result FROM tasks t JOIN systems s ON s.id = t.system_id \
         WHERE t.request_id = $1 AND t.result IS NOT NULL ORDER BY s.name",
    )
    .bind(request_id)
    .fetch_all(&store.read)
    .await?;
    let mut results = Vec::with_capacity(rows.len());
    for (id, name, result) in rows {
        let mut result = sealer.open_json(&result)?;
        // An export's records were stored page by page, under the run that succeeded.
        if let Some(lease) = result
            .as_object_mut()
            .and_then(|r| r.remove("pages_of"))
            .and_then(|lease| lease.as_str().map(str::to_owned))
        {
            let expected = result
                .as_object_mut()
                .and_then(|r| r.remove("pages"))
                .and_then(|n| n.as_i64());
            let pages: Vec<(i64, String)> = sqlx::query_as(
                "SELECT page, records FROM task_pages WHERE lease = $1 ORDER BY page",
            )
            .bind(&lease)
            .fetch_all(&store.read)
            .await?;
            // Pages deleted since (a purge), or not all there: never shown as "no data".
            let complete = expected == Some(pages.len() as i64)
                && pages.iter().enumerate().all(|(i, (n, _))| *n == i as i64);
            if complete {
                let mut records = Vec::new();
                for (_, page) in pages {
                    match sealer.open_json(&page)? {
                        serde_json::Value::Array(page) => records.extend(page),
                        _ => anyhow::bail!("a stored page of task results is not a list"),
                    }
                }
                result["records"] = records.into();
            } else {
                result["records"] = serde_json::Value::Null;
                result["records_deleted"] = true.into();
            }
        }
        results.push((id, name, result));
    }
    Ok(results)
}

/// What an erasure task located before changing anything, and what its erase calls
/// reported, kept across its runs (each sealed JSON, `None` before the first run); read
/// by the claim.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct ErasureState {
    pub located: Option<String>,
    pub erased: Option<String>,
}

/// Saves the erasure state (the parts given) while the run still holds the task,
/// durably (a power cut after the erase must not lose what it was to erase). Returns
/// `false` when it no longer does.
///
/// # Errors
/// When the database write fails.
pub async fn save_erasure_state(
    store: &Store,
    task: &Claimed,
    located: Option<&str>,
    erased: Option<&str>,
) -> sqlx::Result<bool> {
    // A transaction, so that on SQLite its flush is shared (see `store::flush`).
    let mut tx = store.begin_own().await?;
    let done = sqlx::query(
        "UPDATE tasks SET located = COALESCE($1, located), erased = COALESCE($2, erased) \
         WHERE id = $3 AND lease_owner = $4 AND status = $5",
    )
    .bind(located)
    .bind(erased)
    .bind(&task.id)
    .bind(&task.lease)
    .bind(TaskStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets what a request's runs found in the systems (exported pages, located records,
/// erase reports), in the caller's transaction, once the request's subject is redacted.
///
/// # Errors
/// When the database write fails.
pub async fn forget_run_data(tx: &mut Tx<'_>, request_id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM task_pages WHERE task_id IN (SELECT id FROM tasks WHERE request_id = $1)",
    )
    .bind(request_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE tasks SET located = NULL, erased = NULL WHERE request_id = $1")
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stores one sealed page of an export under the run's lease, while the run still holds
/// the task and its request is still to be carried out (not cancelled meanwhile).
/// Returns `false` when not.
///
/// # Errors
/// When the database fails.
pub async fn store_page(
    store: &Store,
    task: &Claimed,
    page: u32,
    sealed: &str,
) -> anyhow::Result<bool> {
    let stored = sqlx::query(
        "INSERT INTO task_pages (lease, task_id, page, records) \
         SELECT $1, $2, $3, $4 WHERE EXISTS \
         (SELECT 1 FROM tasks t JOIN requests r ON r.id = t.request_id \
          WHERE t.id = $2 AND t.lease_owner = $1 AND t.status = $5 \
          AND r.status IN ('approved', 'running'))",
    )
    .bind(&task.lease)
    .bind(&task.id)
    .bind(i64::from(page))
    .bind(sealed)
    .bind(TaskStatus::Running.as_str())
    .execute(&store.write)
    .await?;
    Ok(stored.rows_affected() == 1)
}
