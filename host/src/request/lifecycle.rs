//! A request's lifecycle: the one module that writes a request's status.
//!
//! Each step (approve, reject, cancel, retry, extend, start, settle) checks that it follows from
//! the request's status ([`super::Status::apply`]), writes the new status, appends its
//! audit event and does its side effects (queue the tasks, close them, store the
//! decision's reason), all in the caller's transaction, and answers a typed
//! [`Refusal`] when it cannot be taken. Submission is [`super::intake`], which inserts
//! the request as `received` and forwards it through here. The queue below knows
//! nothing of request statuses: it records tasks, and this module settles the request
//! when none is left to run.

use super::rows::{Stage, stage_in};
use super::{Kind, Status, Transition};
use crate::audit;
use crate::queue::{self, Claimed, Finished, RunOutcome};
use crate::retry::Backoff;
use crate::store::{Store, Tx, now_ms};
use std::time::Duration;

/// Why a step was not taken: the API answers 409 with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The step does not follow from the request's status.
    #[error("{0}")]
    Illegal(String),
    /// The subject's data was replaced by keyed hashes: the request moves no further.
    #[error("{0}")]
    Redacted(String),
    /// The deadline is already extended as far as Art. 12(3) allows.
    #[error("{0}")]
    ExtensionLimit(String),
}

/// Extends the deadline by `months`, within the two months Art. 12(3) allows in total,
/// and records the event, in the caller's transaction. Returns the request as it now
/// is, or why the extension is refused.
///
/// # Errors
/// The outer error when the database fails.
pub async fn extend(
    tx: &mut Tx<'_>,
    sealer: &crate::crypto::seal::Sealer,
    request: &super::rows::Request,
    months: u32,
    reason: &str,
    actor: &str,
) -> anyhow::Result<Result<super::rows::Request, Refusal>> {
    if request.status.is_final() {
        return Ok(Err(Refusal::Illegal(format!(
            "cannot extend the deadline of a request that is {}",
            request.status
        ))));
    }
    let total = request.extended_months + months;
    if total > super::MAX_EXTENSION_MONTHS {
        return Ok(Err(Refusal::ExtensionLimit(format!(
            "the deadline can be extended by at most {} months in total (Art. 12(3)); it is already extended by {}",
            super::MAX_EXTENSION_MONTHS,
            request.extended_months
        ))));
    }
    // From when the subject's request reached the controller, where that was earlier.
    let from: Option<i64> = sqlx::query_scalar("SELECT deadline_from FROM requests WHERE id = $1")
        .bind(&request.id)
        .fetch_one(&mut **tx)
        .await?;
    let due = super::due_at(
        from.map_or(request.received_at, crate::store::to_rfc3339),
        total,
    );
    super::rows::set_extension(tx, &request.id, total, reason, due).await?;
    crate::notify::subject::queue(tx, &request.id, "request.extended").await?;
    audit::append(
        tx,
        actor,
        "request.extended",
        Some(&request.id),
        serde_json::json!({ "months": months, "reason": reason, "due_at": due }),
    );
    Ok(Ok(super::rows::get_in(tx, sealer, &request.id)
        .await?
        .expect("the request exists")))
}

/// Moves a request along its lifecycle and records the event. Returns the new status,
/// or why the step is refused.
///
/// # Errors
/// The outer error when the database fails.
#[tracing::instrument(name = "request.step", skip_all, fields(request = %request.id, step = ?transition, actor = %actor))]
pub async fn transition(
    tx: &mut Tx<'_>,
    request: &Stage,
    transition: Transition,
    actor: &str,
    details: serde_json::Value,
) -> anyhow::Result<Result<Status, Refusal>> {
    let redacted = || {
        format!(
            "cannot {} this request: its subject's data was replaced by keyed hashes after the retention period; submit a new request",
            transition.verb()
        )
    };
    // Retrying is the one step a redacted request could otherwise take: say why it cannot.
    if request.redacted && transition == Transition::Retry {
        return Ok(Err(Refusal::Redacted(redacted())));
    }
    let next = match request.status.apply(transition) {
        Ok(next) => next,
        Err(reason) => return Ok(Err(Refusal::Illegal(reason))),
    };
    let now = now_ms();
    let completed = (next == Status::Completed).then_some(now);
    // A redacted request has no subject left to act on: it moves no further.
    // The update says whether the request came through OpenDSR, whose sender is told of
    // each change: the others need no statement for it.
    let updated: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE requests SET status = $1, updated_at = $2, completed_at = COALESCE($3, completed_at) \
         WHERE id = $4 AND status = $5 AND subject_redacted_at IS NULL \
         RETURNING (SELECT o.request_id FROM opendsr_requests o WHERE o.request_id = requests.id)",
    )
    .bind(next.as_str())
    .bind(now)
    .bind(completed)
    .bind(&request.id)
    .bind(request.status.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(opendsr) = updated else {
        // Redacted since it was read (by another process's purge job).
        let redacted_at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT subject_redacted_at FROM requests WHERE id = $1")
                .bind(&request.id)
                .fetch_optional(&mut **tx)
                .await?;
        if redacted_at.flatten().is_some() {
            return Ok(Err(Refusal::Redacted(redacted())));
        }
        anyhow::bail!(
            "request {} changed status while it was being updated",
            request.id
        );
    };
    audit::append(
        tx,
        actor,
        &format!("request.{}", next.as_str()),
        Some(&request.id),
        details,
    );
    if opendsr.is_some() {
        crate::notify::opendsr::status_changed(tx, &request.id, next.as_str()).await?;
    }
    Ok(Ok(next))
}

/// Reads the request and takes `step` with `details`, in the caller's transaction.
async fn take(
    tx: &mut Tx<'_>,
    id: &str,
    step: Transition,
    actor: &str,
    details: serde_json::Value,
) -> anyhow::Result<Option<Result<Status, Refusal>>> {
    let Some(stage) = stage_in(tx, id).await? else {
        return Ok(None);
    };
    Ok(Some(transition(tx, &stage, step, actor, details).await?))
}

/// Rejects a request awaiting its controller, storing the reason. `None` when there is
/// no such request.
///
/// # Errors
/// When the database fails.
pub async fn reject(
    tx: &mut Tx<'_>,
    id: &str,
    actor: &str,
    reason: &str,
) -> anyhow::Result<Option<Result<(), Refusal>>> {
    let details = serde_json::json!({ "reason": reason });
    let Some(taken) = take(tx, id, Transition::Reject, actor, details).await? else {
        return Ok(None);
    };
    if taken.is_ok() {
        super::rows::set_decision_reason(tx, id, reason).await?;
        crate::suppression::forget(tx, id).await?;
    }
    Ok(Some(taken.map(drop)))
}

/// Cancels a request that has not started running and of which no worker took a task:
/// its queued tasks never run. `None` when there is no such request.
///
/// # Errors
/// When the database fails.
pub async fn cancel(
    tx: &mut Tx<'_>,
    id: &str,
    actor: &str,
    reason: Option<&str>,
) -> anyhow::Result<Option<Result<(), Refusal>>> {
    let details = serde_json::json!({ "reason": reason });
    let Some(stage) = stage_in(tx, id).await? else {
        return Ok(None);
    };
    // Between a worker's claim of a task and the request's start, the request is still
    // approved: a cancellation then would come after a system began carrying it out.
    if stage.status == Status::Approved && queue::taken_tasks(tx, id).await? > 0 {
        return Ok(Some(Err(Refusal::Illegal(
            "a connected system is already carrying out this request: it can no longer be cancelled".into(),
        ))));
    }
    let taken = transition(tx, &stage, Transition::Cancel, actor, details).await?;
    if taken.is_ok() {
        queue::cancel_queued(tx, id).await?;
        crate::suppression::forget(tx, id).await?;
    }
    Ok(Some(taken.map(drop)))
}

/// Runs a failed request again: its failed tasks are queued with fresh attempts.
/// `None` when there is no such request.
///
/// # Errors
/// When the database fails.
pub async fn retry(
    tx: &mut Tx<'_>,
    id: &str,
    actor: &str,
) -> anyhow::Result<Option<Result<(), Refusal>>> {
    let Some(taken) = take(tx, id, Transition::Retry, actor, serde_json::json!({})).await? else {
        return Ok(None);
    };
    // Nothing to run again (a rectification failed because a change was applied
    // nowhere): the request settles at once instead of waiting for tasks that never come.
    if taken.is_ok() && queue::requeue_failed(tx, id).await? == 0 {
        settle(tx, id, actor).await?;
    }
    Ok(Some(taken.map(drop)))
}

/// Claims up to `limit` due tasks for `owner` (see [`queue::claim_in`]), starts the
/// approved requests among theirs and audits the runs this claim took over from workers
/// that stopped (`task.interrupted`).
///
/// On SQLite all of it is one transaction, and the requests' statuses are those the claim
/// read in it (the single writer keeps them current). On PostgreSQL the claim commits
/// first, without locking the requests, and the starts follow in a second transaction
/// that reads each request again under its lock, in the order of their ids: locking the
/// requests in the claim's transaction, after its tasks, would deadlock with a
/// cancellation (which locks the request, then its tasks), and another process's claim
/// may start the same request first. Should the process die between the two, the request
/// is started when its tasks settle, and the attempt log has the runs taken over as
/// `interrupted` either way.
///
/// # Errors
/// When the claim fails; nothing is claimed then.
pub async fn claim_many(
    store: &Store,
    owner: &str,
    lease: Duration,
    backoff: &Backoff,
    limit: usize,
) -> anyhow::Result<Vec<Claimed>> {
    let postgres = store.backend() == crate::store::Backend::Postgres;
    let claimed = crate::store::retrying(|| async {
        let mut tx = store.relaxed().await?;
        let claimed = queue::claim_in(&mut tx, owner, lease, backoff, limit).await?;
        if !postgres {
            start_and_audit(&mut tx, owner, &claimed, false).await?;
        }
        tx.commit().await?;
        Ok(claimed)
    })
    .await?;
    let to_start = claimed
        .iter()
        .any(|c| c.took_over || c.request_status == Status::Approved.as_str());
    if postgres && to_start {
        // The tasks are this worker's now: a failure of what follows (the start is made
        // again when the tasks settle) must not drop them.
        let started = async {
            let mut tx = store.relaxed().await?;
            start_and_audit(&mut tx, owner, &claimed, true).await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        if let Err(e) = started.await {
            tracing::warn!(
                error = format!("{e:#}"),
                "starting the requests of claimed tasks failed; they start when their tasks settle"
            );
        }
    }
    Ok(claimed)
}

/// Starts the approved requests of `claimed` and audits the runs taken over, in `tx`:
/// with each request's status read again under its lock (`read_again`), or as the claim
/// read it in this same transaction.
async fn start_and_audit(
    tx: &mut Tx<'_>,
    owner: &str,
    claimed: &[Claimed],
    read_again: bool,
) -> anyhow::Result<()> {
    let actor = format!("worker:{owner}");
    // Most claims are of requests already running: only approved ones are started.
    let mut approved: Vec<&Claimed> = claimed
        .iter()
        .filter(|c| c.request_status == Status::Approved.as_str())
        .collect();
    approved.sort_unstable_by(|a, b| a.request_id.cmp(&b.request_id));
    approved.dedup_by(|a, b| a.request_id == b.request_id);
    for task in approved {
        let stage = if read_again {
            stage_in(tx, &task.request_id).await?
        } else {
            // The step's own update checks that the subject's data was not redacted.
            Some(Stage {
                id: task.request_id.clone(),
                controller_id: task.controller_id.clone(),
                status: Status::Approved,
                redacted: false,
            })
        };
        if let Some(stage) = stage
            && stage.status == Status::Approved
        {
            // Refused only when it changed since (cancelled, redacted): nothing to start.
            let _ =
                transition(tx, &stage, Transition::Start, &actor, serde_json::json!({})).await?;
        }
    }
    for task in claimed.iter().filter(|c| c.took_over) {
        let details = queue::interruption(
            &task.id,
            &task.system_id,
            i64::from(task.attempt) - 1,
            i64::from(task.interrupted),
        );
        audit::append(
            tx,
            &actor,
            "task.interrupted",
            Some(&task.request_id),
            details,
        );
    }
    Ok(())
}

/// Completes or fails a running request whose tasks are all done.
pub async fn settle(tx: &mut Tx<'_>, request_id: &str, actor: &str) -> anyhow::Result<()> {
    // Two workers ending a request's last two tasks at once would each count the other's
    // as still open, and neither settle it: on PostgreSQL the request's row is locked
    // first, so that the second counts once the first has committed. (SQLite's single
    // writer already serialises them.)
    if crate::store::on_postgres(tx) {
        stage_in(tx, request_id).await?;
    }
    let Some(settling) = super::rows::settling_in(tx, request_id).await? else {
        return Ok(());
    };
    if settling.open > 0 {
        return Ok(());
    }
    let mut request = settling.stage.clone();
    // Tasks that ran for a request whose start was not recorded (its worker died between
    // the claim and the start): start it now.
    if request.status == Status::Approved
        && transition(
            tx,
            &request,
            Transition::Start,
            actor,
            serde_json::json!({}),
        )
        .await?
        .is_ok()
    {
        let Some(started) = stage_in(tx, request_id).await? else {
            return Ok(());
        };
        request = started;
    }
    if request.status != Status::Running {
        return Ok(());
    }
    // A rectification whose change no system had a place for was not carried out; one
    // for a controller without systems changed nothing. (Only a rectification's tasks
    // say which changes they could not apply.)
    let rectification = settling.kind == Kind::Rectification;
    let nowhere = if rectification {
        queue::changes_applied_nowhere(tx, request_id).await?
    } else {
        Vec::new()
    };
    let no_system = rectification && settling.tasks == 0;
    let step = if settling.failed > 0 || !nowhere.is_empty() || no_system {
        Transition::Fail
    } else {
        Transition::Complete
    };
    let mut details = serde_json::json!({ "failed_tasks": settling.failed });
    if !nowhere.is_empty() {
        details["changes_applied_nowhere"] = nowhere.into();
    }
    if no_system {
        details["no_system_to_rectify"] = true.into();
    }
    if let Ok(status) = transition(tx, &request, step, actor, details).await? {
        if step == Transition::Complete {
            if settling.suppression_entries {
                crate::suppression::record(tx, request_id, actor).await?;
            }
            // Only an erasure or a rectification is told to the recipients (Art. 19).
            if settling.recipients && matches!(settling.kind, Kind::Erasure | Kind::Rectification) {
                crate::notify::recipients::notify(tx, request_id, actor).await?;
            }
        }
        announce(tx, request_id, &settling, status).await?;
    }
    Ok(())
}

/// Queues the e-mail that tells the DPO how a request ended, and the webhook that tells
/// the controller (`request.completed` or `request.failed`), with what was found and the
/// status detail, when the controller has a webhook URL.
async fn announce(
    tx: &mut Tx<'_>,
    request_id: &str,
    settling: &super::rows::Settling,
    status: Status,
) -> anyhow::Result<()> {
    let settled = settling.settled(status);
    let event = match settled.status {
        Status::Completed => "request.completed",
        _ => "request.failed",
    };
    // For Prometheus (`/metrics`); counted even if the transaction is then rolled back.
    metrics::histogram!(
        "oubli_request_completion_seconds",
        "kind" => settled.kind.as_str(),
        "status" => settled.status.as_str()
    )
    .record((now_ms() - settled.received_at).max(0) as f64 / 1000.0);
    // An erasure a retention rule filed and that completed is told in the destruction
    // report, not by one e-mail each; a failure is told.
    if !(settled.by_retention && settled.status == super::Status::Completed) {
        crate::notify::email::queue(tx, request_id, event, crate::notify::email::DPO, None).await?;
    }
    // The subject is told only of what was found: a request in which no system found
    // anything is for the DPO to check before anyone answers the subject.
    if settled.status == super::Status::Completed && settled.records_found.is_some_and(|n| n > 0) {
        let told = match settled.kind {
            super::Kind::Erasure => Some("erasure.completed"),
            super::Kind::Access => Some("access.completed"),
            _ => None,
        };
        if let Some(event) = told {
            let events = settling.subject_notices.as_deref();
            crate::notify::subject::queue_told(tx, request_id, event, events).await?;
        }
    }
    if !settled.webhook {
        return Ok(());
    }
    let data = serde_json::json!({
        "request_id": request_id,
        "kind": settled.kind,
        "status": settled.status,
        "records_found": settled.records_found,
        // Known only when every system ran (a completed request) and counted.
        "nothing_found": (settled.status == Status::Completed)
            .then_some(settled.records_found.map(|n| n == 0))
            .flatten(),
        "status_detail": settled.status_detail,
    });
    crate::notify::insert(tx, &settled.controller_id, request_id, event, data).await?;
    Ok(())
}

/// Approves a request awaiting its controller and queues one task per connected system,
/// in the caller's transaction. Returns how many tasks, or why the request cannot be
/// approved.
///
/// # Errors
/// When the database fails.
pub async fn approve(
    tx: &mut Tx<'_>,
    request: &Stage,
    actor: &str,
    max_attempts: u32,
) -> anyhow::Result<Result<u64, Refusal>> {
    let (kind, not_before, system_id): (String, Option<i64>, Option<String>) =
        sqlx::query_as("SELECT kind, not_before, system_id FROM requests WHERE id = $1")
            .bind(&request.id)
            .fetch_one(&mut **tx)
            .await?;
    let order = Order {
        kind: kind.parse().map_err(anyhow::Error::msg)?,
        not_before,
        system_id: system_id.as_deref(),
    };
    approve_as(tx, request, &order, actor, max_attempts).await
}

/// What approving a request queues: its kind, when its tasks may run, and the one system
/// it concerns, if one.
pub struct Order<'a> {
    pub kind: Kind,
    pub not_before: Option<i64>,
    pub system_id: Option<&'a str>,
}

/// [`approve`] for a caller that knows the request's [`Order`] (the intake, which has
/// just written it).
///
/// # Errors
/// When the database fails.
pub async fn approve_as(
    tx: &mut Tx<'_>,
    request: &Stage,
    order: &Order<'_>,
    actor: &str,
    max_attempts: u32,
) -> anyhow::Result<Result<u64, Refusal>> {
    let objection = order.kind == Kind::Objection;
    if objection && !crate::suppression::kept_in(tx, &request.controller_id).await? {
        return Ok(Err(Refusal::Illegal(
            "an objection puts the subject on the controller's suppression list, and the controller keeps none any more: start one (PUT /v1/controllers/{id}/suppression) or reject the request".into(),
        )));
    }
    if let Err(reason) = transition(
        tx,
        request,
        Transition::Approve,
        actor,
        serde_json::json!({}),
    )
    .await?
    {
        return Ok(Err(reason));
    }
    // An objection asks nothing of the systems: approving it puts the subject on the
    // suppression list, as it completes.
    let tasks = if objection {
        0
    } else {
        queue::enqueue(
            tx,
            &request.id,
            &request.controller_id,
            max_attempts,
            order.not_before,
            order.system_id,
        )
        .await?
    };
    if tasks == 0 {
        settle_empty(tx, &request.id, actor).await?;
    }
    Ok(Ok(tasks))
}

/// Completes an approved request that has no task (its controller has no systems).
///
/// # Errors
/// When the database fails.
pub async fn settle_empty(tx: &mut Tx<'_>, request_id: &str, actor: &str) -> anyhow::Result<()> {
    if let Some(request) = stage_in(tx, request_id).await?
        && request.status == Status::Approved
    {
        transition(
            tx,
            &request,
            Transition::Start,
            actor,
            serde_json::json!({ "tasks": 0 }),
        )
        .await?
        .ok();
        settle(tx, request_id, actor).await?;
    }
    Ok(())
}

/// Records how runs ended, in one transaction, for the runs whose worker still holds the
/// task (fenced by its lease token), and moves each request along when all its tasks are
/// done. Returns, per run, whether it was recorded; a stale run's result is dropped.
///
/// # Errors
/// When the database fails; nothing is recorded then.
pub async fn finish_many(
    store: &Store,
    owner: &str,
    runs: &[Finished],
) -> anyhow::Result<Vec<bool>> {
    crate::store::retrying(|| finish_once(store, owner, runs)).await
}

async fn finish_once(store: &Store, owner: &str, runs: &[Finished]) -> anyhow::Result<Vec<bool>> {
    let actor = format!("worker:{owner}");
    let mut tx = store.relaxed().await?;
    let mut recorded = vec![false; runs.len()];
    // In the order of their requests, whose rows `settle` locks: two batches never hold
    // one each and wait for the other's.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| runs[a].task.request_id.cmp(&runs[b].task.request_id));
    for i in order {
        let run = &runs[i];
        recorded[i] = queue::record(&mut tx, &actor, run).await?;
        if recorded[i] {
            settle(&mut tx, &run.task.request_id, &actor).await?;
        }
    }
    tx.commit().await?;
    Ok(recorded)
}

/// Records how one run ended; see [`finish_many`].
///
/// # Errors
/// When the database fails.
pub async fn finish(
    store: &Store,
    owner: &str,
    task: &Claimed,
    outcome: RunOutcome,
    backoff: Duration,
) -> anyhow::Result<bool> {
    let run = Finished {
        task: task.clone(),
        outcome,
        backoff,
        paged: false,
    };
    Ok(finish_many(store, owner, std::slice::from_ref(&run))
        .await?
        .pop()
        .unwrap_or(false))
}
