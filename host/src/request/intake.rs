//! Intake with group commit: submissions that arrive together are written in one
//! transaction, so that many accepted requests share one durable commit (one `fsync`).
//! Each submission is answered only after its transaction is on disk.

use super::rows::{self as requests, NewRequest, Request};
use crate::crypto::seal::Sealer;
use crate::store::{OnDisk, Store};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Submissions written in one transaction at most.
const MAX_BATCH: usize = 256;

/// A validated submission.
#[derive(Debug, Clone)]
pub struct Submission {
    pub request: NewRequest,
    /// Who submits, for the audit trail.
    pub actor: String,
    /// The controller has a webhook URL: queue a `request.forwarded` delivery.
    pub webhook: bool,
    /// Approve at once (the controller approves its own DPO's requests automatically, or
    /// a retention rule files it).
    pub auto_approve: bool,
    /// Who approves it then, for the audit trail (`policy:auto-approve` by default).
    pub approver: Option<String>,
    /// Attempts of each task, for an auto-approved request.
    pub max_attempts: u32,
    /// Hours the approval link of a request awaiting its controller works.
    pub link_hours: u64,
}

/// How a submission was taken.
#[derive(Debug, Clone)]
pub enum Accepted {
    /// A new request.
    Created(Request),
    /// The request first submitted with the same idempotency key.
    Replayed(Request),
    /// The key was used by this submitter for another request (which is given): the
    /// submission is refused, not merged into it.
    KeyReused(Request),
}

type Job = (Submission, oneshot::Sender<anyhow::Result<Accepted>>);

/// The intake writer: one task that owns request creation.
#[derive(Debug, Clone)]
pub struct Intake {
    sender: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the writer task on the current tokio runtime; `sealer` seals the subjects'
    /// identities and changes.
    pub fn start(store: Store, sealer: Arc<Sealer>) -> Intake {
        let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
        // Submitters wait on its commits.
        tokio::spawn(crate::store::foreground(run(store, sealer, receiver)));
        Intake { sender }
    }

    /// Writes a submission; returns once it is durably committed.
    ///
    /// # Errors
    /// When the database write fails, or the writer has stopped.
    pub async fn submit(&self, submission: Submission) -> anyhow::Result<Accepted> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((submission, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the intake writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the intake writer stopped before answering"))?
    }
}

async fn run(store: Store, sealer: Arc<Sealer>, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let submissions: Vec<&Submission> = batch.iter().map(|(s, _)| s).collect();
        match write(&store, &sealer, &submissions).await {
            // Answered once on disk, while the next batch is written.
            Ok((accepted, written)) => {
                tokio::spawn(async move {
                    let flushed = written.on_disk().await;
                    for ((_, reply), accepted) in batch.into_iter().zip(accepted) {
                        let _ = reply.send(match &flushed {
                            Ok(()) => Ok(accepted),
                            Err(e) => Err(anyhow::anyhow!("{e}")),
                        });
                    }
                });
            }
            // One bad submission must not fail the others: write each on its own.
            Err(error) if batch.len() > 1 => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    size = batch.len(),
                    "a batched intake failed; writing its submissions one by one"
                );
                for (submission, reply) in batch {
                    let result = match write(&store, &sealer, &[&submission]).await {
                        Ok((mut accepted, written)) => written
                            .on_disk()
                            .await
                            .map(|()| accepted.remove(0))
                            .map_err(anyhow::Error::from),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                let (_, reply) = batch.remove(0);
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Writes a batch in one transaction; the commit is on disk once the returned
/// [`OnDisk`] says so.
async fn write(
    store: &Store,
    sealer: &Sealer,
    submissions: &[&Submission],
) -> anyhow::Result<(Vec<Accepted>, OnDisk)> {
    let mut tx = store.begin().await?;
    let mut accepted = Vec::with_capacity(submissions.len());
    for submission in submissions {
        let new = &submission.request;
        if let Some(key) = &new.idempotency_key
            && let Some(first) =
                requests::by_idempotency_key(&mut tx, sealer, &new.submitted_by, key).await?
        {
            accepted.push(if first.same_as(new) {
                Accepted::Replayed(first)
            } else {
                Accepted::KeyReused(first)
            });
            continue;
        }
        let mut request = requests::insert(&mut tx, sealer, new, &submission.actor).await?;
        // A person at the controller decides through a link, sent by webhook and e-mail.
        let link = if submission.auto_approve {
            None
        } else {
            let link =
                crate::notify::links::create(&mut tx, &request.id, submission.link_hours).await?;
            crate::notify::email::queue(
                &mut tx,
                &request.id,
                "request.forwarded",
                crate::notify::email::CONTROLLER,
                Some(&link),
            )
            .await?;
            Some(link)
        };
        if submission.webhook {
            let mut data = json!({ "request_id": request.id, "kind": request.kind, "due_at": request.due_at, "external_ref": request.external_ref });
            if let Some(link) = &link {
                data["approval_link"] = link.clone().into();
            }
            crate::notify::insert(
                &mut tx,
                &request.controller_id,
                &request.id,
                "request.forwarded",
                data,
            )
            .await?;
        }
        if submission.auto_approve {
            let order = super::lifecycle::Order {
                kind: new.kind,
                not_before: new.not_before,
                system_id: new.system_id.as_deref(),
            };
            let tasks = super::lifecycle::approve_as(
                &mut tx,
                &request.stage(),
                &order,
                submission
                    .approver
                    .as_deref()
                    .unwrap_or("policy:auto-approve"),
                submission.max_attempts,
            )
            .await?
            .map_err(anyhow::Error::msg)?;
            // Approved, with its tasks queued: the approval changed its status alone. A
            // request without tasks settled at once, and is read again.
            if tasks > 0 {
                request.status = super::Status::Approved;
            } else {
                request = requests::get_in(&mut tx, sealer, &request.id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the new request vanished"))?;
            }
        }
        accepted.push(Accepted::Created(request));
    }
    let written = tx.commit_unflushed().await?;
    Ok((accepted, written))
}
