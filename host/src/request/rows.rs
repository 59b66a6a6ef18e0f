//! Requests in the database: creation, reads, lists and the transitions, each in the
//! caller's transaction together with its audit event.
//!
//! The subject's identities and the new values of a rectification are personal data:
//! they are sealed at rest (see [`Sealer`]), and once the request is closed and its
//! retention period has passed they are replaced by keyed hashes ([`redact_subject`]).

use super::{Kind, Status, Transition};
use crate::audit;
use crate::crypto::seal::{OpenError, Sealer};
use crate::store::{Sql, Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One identity of the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityInput {
    /// What the value is: `email`, `phone`, `customer-id`…
    pub kind: String,
    pub value: String,
}

/// One change of a rectification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeInput {
    /// Limit the change to one collection (table, object type); every collection that
    /// has the field when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub field: String,
    /// The new value, any JSON value.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
}

/// One identity of the subject as oubli holds it: its value while the request is open
/// and during the retention period after, then only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    pub kind: String,
    /// Absent once the request's retention period has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// HMAC-SHA256 of `kind:value` under the service's identity-hash key, hex: the same
    /// hash the erasure certificate shows. Present once the value was redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
}

/// One change of a rectification as oubli holds it: the new value until the request's
/// retention period has passed, then only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub field: String,
    /// Absent once the request's retention period has passed (`null` is a value).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<Object>)]
    pub value: Option<serde_json::Value>,
    /// HMAC-SHA256 of `field:value` (the value as compact JSON), hex. Present once the
    /// value was redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
}

/// Reads a value that is there as `Some`, `null` included; one that is not is `None`.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

impl From<&IdentityInput> for Identity {
    fn from(input: &IdentityInput) -> Self {
        Identity {
            kind: input.kind.clone(),
            value: Some(input.value.clone()),
            hmac_sha256: None,
        }
    }
}

impl From<&ChangeInput> for Change {
    fn from(input: &ChangeInput) -> Self {
        Change {
            collection: input.collection.clone(),
            field: input.field.clone(),
            value: Some(input.value.clone()),
            hmac_sha256: None,
        }
    }
}

/// A data subject request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Request {
    pub id: String,
    pub controller_id: String,
    pub kind: Kind,
    pub status: Status,
    pub identities: Vec<Identity>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// The submitter's own reference, e.g. a ticket number.
    pub external_ref: Option<String>,
    pub received_at: DateTime<Utc>,
    /// One calendar month after receipt, plus any extension (Art. 12(3)).
    pub due_at: DateTime<Utc>,
    /// Whether the deadline has passed while the request is still open.
    pub overdue: bool,
    pub extended_months: u32,
    pub extension_reason: Option<String>,
    /// The request's tasks run no earlier than this, once it is approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// The controller's reason, when it rejected the request.
    pub decision_reason: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    /// How many records the connected systems located (erasure), exported (access) or
    /// changed (rectification), over the tasks that succeeded; `null` before any did.
    pub records_found: Option<u64>,
    /// What the status alone does not say: a completed request in which no system found
    /// any record of the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// When the identities and new values were replaced by keyed hashes, the request's
    /// retention period having passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_redacted_at: Option<DateTime<Utc>>,
    /// Why the identities and changes cannot be read (they are then empty): sealed with
    /// a data key this process does not have, or changed in the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_error: Option<String>,
    /// Whether `subject_error` is a data key this process does not have (which another
    /// may), rather than data changed in the database (which nothing opens).
    #[serde(skip)]
    pub subject_key_missing: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    controller_id: String,
    kind: String,
    status: String,
    identities: String,
    changes: String,
    external_ref: Option<String>,
    received_at: i64,
    due_at: i64,
    extended_months: i64,
    extension_reason: Option<String>,
    decision_reason: Option<String>,
    completed_at: Option<i64>,
    subject_redacted_at: Option<i64>,
    not_before: Option<i64>,
    records_found: Option<i64>,
    tasks_without_result: i64,
}

/// `records_found` and `tasks_without_result` of the row of `requests`, as a literal
/// that `concat!` can put into statements.
macro_rules! counts {
    () => {
        "(SELECT CASE WHEN COUNT(*) = COUNT(found) THEN CAST(SUM(found) AS BIGINT) END \
      FROM tasks WHERE tasks.request_id = requests.id AND tasks.result IS NOT NULL) AS records_found, \
     (SELECT COUNT(*) FROM tasks WHERE tasks.request_id = requests.id AND tasks.result IS NULL) AS tasks_without_result"
    };
}

/// `records_found` sums `tasks.found` over the tasks with a result (which only a run that
/// succeeded sets); unknown when one of them predates the count.
const COLUMNS: &str = concat!(
    "id, controller_id, kind, status, identities, changes, external_ref, received_at, due_at, extended_months, extension_reason, decision_reason, completed_at, subject_redacted_at, not_before, ",
    counts!()
);

/// The detail a request in `status` with `records_found` gets (see [`Request::status_detail`]).
fn status_detail(
    kind: Kind,
    status: Status,
    records_found: Option<i64>,
    tasks_without_result: i64,
) -> Option<String> {
    // Every system ran, and still the rectification failed: a change was applied nowhere.
    if kind == Kind::Rectification && status == Status::Failed && tasks_without_result == 0 {
        return Some(
            "a change had no place in any connected system (or the controller has none), so it was not made; the request.failed event of the audit trail names it by its position in the request's changes".into(),
        );
    }
    if kind == Kind::Objection && status == Status::Completed {
        return Some(
            "the subject's identities were put on the controller's suppression list (as keyed hashes); nothing was asked of the connected systems".into(),
        );
    }
    if status != Status::Completed || records_found != Some(0) {
        return None;
    }
    let what = match kind {
        Kind::Objection => return None,
        Kind::Erasure => "nothing was erased",
        Kind::Access => "the access package is empty",
        Kind::Rectification => "nothing was changed",
    };
    Some(format!(
        "no connected system found any record of the subject, so {what}; connectors match identities as their configuration says, often exactly (a typo or another spelling may match nothing): check them before answering the subject"
    ))
}

/// The subject's e-mail address among a request's sealed identities, for a message to
/// them; `None` when it names none or they cannot be opened.
pub fn subject_email(sealer: &Sealer, id: &str, sealed: &str) -> Option<String> {
    let opened = sealer.open_for(sealed, &context(id, "identities")).ok()?;
    let identities: Vec<Identity> = serde_json::from_slice(&opened).ok()?;
    identities
        .into_iter()
        .find(|i| i.kind == "email")
        .and_then(|i| i.value)
}

/// What a request's identities or changes are sealed for: their request and column, so
/// that they open nowhere else.
fn context(id: &str, column: &str) -> String {
    format!("request:{id}:{column}")
}

impl Row {
    /// The request, its identities and changes opened with `sealer` (or, redacted, read
    /// as they are). Data that cannot be opened leaves them empty, with the reason in
    /// `subject_error`, so that the rest of the request stays readable.
    fn open(self, sealer: &Sealer) -> anyhow::Result<Request> {
        let status: Status = self.status.parse().map_err(anyhow::Error::msg)?;
        let mut subject_error = None;
        let mut subject_key_missing = false;
        let (identities, changes) = if self.subject_redacted_at.is_some() {
            (
                serde_json::from_str(&self.identities)?,
                serde_json::from_str(&self.changes)?,
            )
        } else {
            let opened = sealer
                .open_for(&self.identities, &context(&self.id, "identities"))
                .and_then(|i| {
                    Ok((
                        i,
                        sealer.open_for(&self.changes, &context(&self.id, "changes"))?,
                    ))
                });
            match opened {
                Ok((identities, changes)) => (
                    serde_json::from_slice(&identities)?,
                    serde_json::from_slice(&changes)?,
                ),
                Err(error) => {
                    subject_key_missing = matches!(error, OpenError::UnknownKey(_));
                    subject_error = Some(format!("the subject's data cannot be opened: {error}"));
                    (Vec::new(), Vec::new())
                }
            }
        };
        let row = self;
        let kind: Kind = row.kind.parse().map_err(anyhow::Error::msg)?;
        Ok(Request {
            kind,
            records_found: row.records_found.map(|n| n.max(0) as u64),
            status_detail: status_detail(kind, status, row.records_found, row.tasks_without_result),
            overdue: !status.is_final() && row.due_at < now_ms(),
            status,
            identities,
            changes,
            id: row.id,
            controller_id: row.controller_id,
            external_ref: row.external_ref,
            received_at: to_rfc3339(row.received_at),
            due_at: to_rfc3339(row.due_at),
            extended_months: row.extended_months as u32,
            extension_reason: row.extension_reason,
            not_before: row.not_before.map(to_rfc3339),
            decision_reason: row.decision_reason,
            completed_at: row.completed_at.map(to_rfc3339),
            subject_redacted_at: row.subject_redacted_at.map(to_rfc3339),
            subject_error,
            subject_key_missing,
        })
    }
}

/// What a new request holds, validated by the caller.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub controller_id: String,
    pub kind: Kind,
    pub identities: Vec<IdentityInput>,
    pub changes: Vec<ChangeInput>,
    pub external_ref: Option<String>,
    /// The token that submitted it; idempotency keys are per token.
    pub submitted_by: String,
    pub idempotency_key: Option<String>,
    /// Milliseconds before which its tasks do not run.
    pub not_before: Option<i64>,
    /// What the request adds to its controller's suppression list when it completes (an
    /// erasure) or is approved (an objection): keyed hashes, made while the identities
    /// are in clear.
    pub suppression: Option<Vec<crate::suppression::Entry>>,
    /// The one system the request concerns (a retention rule's), instead of every system
    /// of the controller.
    pub system_id: Option<String>,
    /// The retention run that filed it, whose destruction report counts it.
    pub retention_run_id: Option<String>,
    /// Received through the OpenDSR API: the controller's id for it and its callbacks.
    pub opendsr: Option<crate::notify::opendsr::Link>,
    /// When the subject's request reached the controller (milliseconds), where the
    /// controller says so (OpenDSR's `submitted_time`): the deadline runs from then when
    /// it is earlier than oubli's receipt.
    pub deadline_from: Option<i64>,
}

impl Request {
    /// Whether `new` asks for what this request asked: the same controller, kind,
    /// reference, identities and changes (the identities and changes as far as they are
    /// still held: after the retention period only their kinds and fields are).
    pub fn same_as(&self, new: &NewRequest) -> bool {
        let mut theirs: Vec<(&str, Option<&str>)> = new
            .identities
            .iter()
            .map(|i| (i.kind.as_str(), Some(i.value.as_str())))
            .collect();
        let mut ours: Vec<(&str, Option<&str>)> = self
            .identities
            .iter()
            .map(|i| (i.kind.as_str(), i.value.as_deref()))
            .collect();
        if self.identities.iter().any(|i| i.value.is_none()) {
            theirs.iter_mut().for_each(|i| i.1 = None);
            ours.iter_mut().for_each(|i| i.1 = None);
        }
        theirs.sort_unstable();
        ours.sort_unstable();
        let held = self.changes.iter().all(|c| c.value.is_some());
        let changes = self.changes.len() == new.changes.len()
            && self.changes.iter().zip(&new.changes).all(|(a, b)| {
                a.collection == b.collection
                    && a.field == b.field
                    && (!held || a.value.as_ref() == Some(&b.value))
            });
        self.controller_id == new.controller_id
            && self.kind == new.kind
            && self.not_before.map(|t| t.timestamp_millis()) == new.not_before
            && self.external_ref == new.external_ref
            && ours == theirs
            && changes
    }
}

/// The request a submitter already created under an idempotency key.
///
/// # Errors
/// When the database cannot be read.
pub async fn by_idempotency_key(
    tx: &mut Tx<'_>,
    sealer: &Sealer,
    submitted_by: &str,
    key: &str,
) -> anyhow::Result<Option<Request>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM requests WHERE submitted_by = $1 AND idempotency_key = $2"
    ))
    .bind(submitted_by)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.open(sealer)).transpose()
}

/// Inserts a request, received and at once forwarded to its controller, with its
/// identities and changes sealed, and appends both steps to the trail.
///
/// # Errors
/// When the database write fails.
pub async fn insert(
    tx: &mut Tx<'_>,
    sealer: &Sealer,
    new: &NewRequest,
    actor: &str,
) -> anyhow::Result<Request> {
    let id = uuid::Uuid::now_v7().to_string();
    let received = now_ms();
    let from = new.deadline_from.filter(|t| *t < received);
    let due = super::due_at(to_rfc3339(from.unwrap_or(received)), 0).timestamp_millis();
    let status = Status::Received
        .apply(Transition::Forward)
        .map_err(anyhow::Error::msg)?;
    sqlx::query(
        "INSERT INTO requests (id, controller_id, kind, status, identities, changes, external_ref, submitted_by, idempotency_key, received_at, due_at, updated_at, not_before, suppression_hashes, system_id, retention_run_id, deadline_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $12, $13, $14, $15, $16)",
    )
    .bind(&id)
    .bind(&new.controller_id)
    .bind(new.kind.as_str())
    .bind(status.as_str())
    .bind(sealer.seal_for(&serde_json::to_vec(&new.identities)?, &context(&id, "identities")))
    .bind(sealer.seal_for(&serde_json::to_vec(&new.changes)?, &context(&id, "changes")))
    .bind(&new.external_ref)
    .bind(&new.submitted_by)
    .bind(&new.idempotency_key)
    .bind(received)
    .bind(due)
    .bind(new.not_before)
    .bind(
        new.suppression
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?,
    )
    .bind(&new.system_id)
    .bind(&new.retention_run_id)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    if let Some(link) = &new.opendsr {
        crate::notify::opendsr::record(tx, &id, &new.controller_id, link).await?;
    }
    let kinds: Vec<&str> = new.identities.iter().map(|i| i.kind.as_str()).collect();
    let details = serde_json::json!({ "kind": new.kind, "controller_id": new.controller_id, "identity_kinds": kinds });
    audit::append(tx, actor, "request.received", Some(&id), details);
    audit::append(
        tx,
        actor,
        "request.awaiting_controller",
        Some(&id),
        serde_json::json!({}),
    );
    Ok(Request {
        id,
        controller_id: new.controller_id.clone(),
        kind: new.kind,
        status,
        identities: new.identities.iter().map(Identity::from).collect(),
        changes: new.changes.iter().map(Change::from).collect(),
        external_ref: new.external_ref.clone(),
        received_at: to_rfc3339(received),
        due_at: to_rfc3339(due),
        overdue: false,
        extended_months: 0,
        extension_reason: None,
        not_before: new.not_before.map(to_rfc3339),
        decision_reason: None,
        completed_at: None,
        records_found: None,
        status_detail: None,
        subject_redacted_at: None,
        subject_error: None,
        subject_key_missing: false,
    })
}

/// Reads a request inside a transaction, to change it: on PostgreSQL the row stays
/// locked until the transaction ends (see [`stage_in`]), so that two extensions of one
/// deadline add up instead of one overwriting the other.
///
/// # Errors
/// When the database cannot be read.
pub async fn get_in(tx: &mut Tx<'_>, sealer: &Sealer, id: &str) -> anyhow::Result<Option<Request>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM requests WHERE id = $1{}",
        crate::store::for_update(tx)
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|r| r.open(sealer)).transpose()
}

/// How a settled request ended, for the webhook that announces it: no subject data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub kind: Kind,
    pub status: Status,
    pub controller_id: String,
    /// Whether the controller has a webhook URL.
    pub webhook: bool,
    pub records_found: Option<u64>,
    pub status_detail: Option<String>,
    /// When it was received, in ms since the Unix epoch.
    pub received_at: i64,
    /// Whether a retention rule filed it.
    pub by_retention: bool,
}

/// What settling a request reads, in one statement where each part was one of its own
/// (eight for an erasure that completed): where it stands, its kind, its tasks, and what
/// its ending then does. Most requests have no suppression entries, no recipient and no
/// subject notice, and their ending skips reading those again. It reads the tables of
/// the modules that act on it (`tasks`, `recipients`, `subject_notices`); they still do
/// their own reads when there is something to do.
#[derive(Debug, Clone)]
pub struct Settling {
    pub stage: Stage,
    pub kind: Kind,
    /// Its tasks queued or running.
    pub open: i64,
    /// Its tasks that failed for good.
    pub failed: i64,
    /// Its tasks in all.
    pub tasks: i64,
    /// Whether it stores entries for its controller's suppression list.
    pub suppression_entries: bool,
    /// Whether its controller has recipients to tell of an erasure or rectification.
    pub recipients: bool,
    /// The events its controller tells subjects of (a JSON list), if it tells any.
    pub subject_notices: Option<String>,
    webhook: bool,
    records_found: Option<i64>,
    tasks_without_result: i64,
    received_at: i64,
    by_retention: bool,
}

impl Settling {
    /// How the request ended once it moved to `status` (the tasks are as read).
    pub fn settled(&self, status: Status) -> Settled {
        Settled {
            kind: self.kind,
            status,
            controller_id: self.stage.controller_id.clone(),
            webhook: self.webhook,
            records_found: self.records_found.map(|n| n.max(0) as u64),
            status_detail: status_detail(
                self.kind,
                status,
                self.records_found,
                self.tasks_without_result,
            ),
            received_at: self.received_at,
            by_retention: self.by_retention,
        }
    }
}

/// Reads what settling the request `id` needs (see [`Settling`]), in the caller's
/// transaction. It takes no lock: on PostgreSQL the caller locks the request's row first
/// ([`stage_in`]), so that the counts are read after another worker's end committed.
///
/// # Errors
/// When the database fails.
pub async fn settling_in(tx: &mut Tx<'_>, id: &str) -> anyhow::Result<Option<Settling>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        controller_id: String,
        status: String,
        subject_redacted_at: Option<i64>,
        kind: String,
        open: i64,
        failed: i64,
        tasks: i64,
        suppression_entries: i64,
        recipients: i64,
        subject_notices: Option<String>,
        webhook_url: Option<String>,
        records_found: Option<i64>,
        tasks_without_result: i64,
        received_at: i64,
        submitted_by: String,
    }
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT requests.controller_id, requests.status, requests.subject_redacted_at, requests.kind, \
         (SELECT COUNT(*) FROM tasks WHERE tasks.request_id = requests.id AND tasks.status IN ($2, $3)) AS open, \
         (SELECT COUNT(*) FROM tasks WHERE tasks.request_id = requests.id AND tasks.status = $4) AS failed, \
         (SELECT COUNT(*) FROM tasks WHERE tasks.request_id = requests.id) AS tasks, \
         CAST(CASE WHEN requests.suppression_hashes IS NULL THEN 0 ELSE 1 END AS BIGINT) AS suppression_entries, \
         CAST(CASE WHEN EXISTS (SELECT 1 FROM recipients WHERE recipients.controller_id = requests.controller_id \
                                AND recipients.removed_at IS NULL) THEN 1 ELSE 0 END AS BIGINT) AS recipients, \
         (SELECT n.events FROM subject_notices n WHERE n.controller_id = requests.controller_id) AS subject_notices, \
         controllers.webhook_url, requests.received_at, requests.submitted_by, ",
        counts!(),
        " FROM requests JOIN controllers ON controllers.id = requests.controller_id WHERE requests.id = $1"
    ))
    .bind(id)
    .bind(crate::queue::TaskStatus::Queued.as_str())
    .bind(crate::queue::TaskStatus::Running.as_str())
    .bind(crate::queue::TaskStatus::Failed.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| {
        Ok(Settling {
            stage: Stage {
                id: id.to_owned(),
                controller_id: row.controller_id,
                status: row.status.parse().map_err(anyhow::Error::msg)?,
                redacted: row.subject_redacted_at.is_some(),
            },
            kind: row.kind.parse().map_err(anyhow::Error::msg)?,
            open: row.open,
            failed: row.failed,
            tasks: row.tasks,
            suppression_entries: row.suppression_entries != 0,
            recipients: row.recipients != 0,
            subject_notices: row.subject_notices,
            webhook: row.webhook_url.is_some(),
            records_found: row.records_found,
            tasks_without_result: row.tasks_without_result,
            received_at: row.received_at,
            by_retention: row.submitted_by.starts_with("retention:"),
        })
    })
    .transpose()
}

/// Where a request stands in its lifecycle, without the subject's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub id: String,
    pub controller_id: String,
    pub status: Status,
    /// Whether its subject's data was replaced by keyed hashes.
    pub redacted: bool,
}

impl Request {
    /// Where the request stands.
    pub fn stage(&self) -> Stage {
        Stage {
            id: self.id.clone(),
            controller_id: self.controller_id.clone(),
            status: self.status,
            redacted: self.subject_redacted_at.is_some(),
        }
    }
}

/// Reads where a request stands inside a transaction, to take a step from there: on
/// PostgreSQL the row stays locked until the transaction ends, so that two writers of
/// one request (a decision and a worker, two workers) take turns instead of one failing
/// its step on a status that changed under it.
///
/// # Errors
/// When the database cannot be read.
pub async fn stage_in(tx: &mut Tx<'_>, id: &str) -> anyhow::Result<Option<Stage>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: String,
        controller_id: String,
        status: String,
        subject_redacted_at: Option<i64>,
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT id, controller_id, status, subject_redacted_at FROM requests WHERE id = $1{}",
        crate::store::for_update(tx)
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    row.map(|row| {
        Ok(Stage {
            id: row.id,
            controller_id: row.controller_id,
            status: row.status.parse().map_err(anyhow::Error::msg)?,
            redacted: row.subject_redacted_at.is_some(),
        })
    })
    .transpose()
}

/// Reads a request.
///
/// # Errors
/// When the database cannot be read.
pub async fn get(store: &Store, sealer: &Sealer, id: &str) -> anyhow::Result<Option<Request>> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM requests WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.read)
        .await?;
    row.map(|r| r.open(sealer)).transpose()
}

/// Reads the requests `ids` (those that exist, in no order), in one statement, each by
/// its id and opened on its own: one that cannot be opened fails alone.
///
/// # Errors
/// When the database cannot be read.
pub async fn get_many(
    store: &Store,
    sealer: &Sealer,
    ids: Vec<String>,
) -> anyhow::Result<std::collections::HashMap<String, anyhow::Result<Request>>> {
    if ids.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let mut query = Sql::new(format!("SELECT {COLUMNS} FROM requests WHERE id IN "));
    query.bind_list(ids);
    let rows: Vec<Row> = query.fetch_all(&store.read).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id.clone(), r.open(sealer)))
        .collect())
}

/// Filters of the request list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub controller_id: Option<String>,
    pub status: Option<Status>,
    pub kind: Option<Kind>,
    pub overdue: Option<bool>,
    /// Requests with an id after this one (ids grow with time).
    pub after: Option<String>,
    pub limit: u32,
}

/// Lists requests, oldest first, one page at a time.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, sealer: &Sealer, filter: &Filter) -> anyhow::Result<Vec<Request>> {
    let mut query = Sql::new(format!("SELECT {COLUMNS} FROM requests WHERE 1 = 1"));
    if let Some(controller) = &filter.controller_id {
        query.push(" AND controller_id = ").bind(controller.clone());
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").bind(status.as_str());
    }
    if let Some(kind) = filter.kind {
        query.push(" AND kind = ").bind(kind.as_str());
    }
    if let Some(overdue) = filter.overdue {
        let open = "status NOT IN ('completed', 'rejected', 'cancelled')";
        if overdue {
            query
                .push(&format!(" AND {open} AND due_at < "))
                .bind(now_ms());
        } else {
            query
                .push(&format!(" AND NOT ({open} AND due_at < "))
                .bind(now_ms())
                .push(")");
        }
    }
    if let Some(after) = &filter.after {
        query.push(" AND id > ").bind(after.clone());
    }
    query
        .push(" ORDER BY id LIMIT ")
        .bind(i64::from(filter.limit));
    let rows: Vec<Row> = query.fetch_all(&store.read).await?;
    rows.into_iter().map(|r| r.open(sealer)).collect()
}

/// Writes an extended deadline (see [`super::lifecycle::extend`]).
///
/// # Errors
/// When the database write fails.
pub async fn set_extension(
    tx: &mut Tx<'_>,
    id: &str,
    total_months: u32,
    reason: &str,
    due: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE requests SET extended_months = $1, extension_reason = $2, due_at = $3, updated_at = $4 WHERE id = $5")
        .bind(i64::from(total_months))
        .bind(reason)
        .bind(due.timestamp_millis())
        .bind(now_ms())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the controller's reason on a rejected request.
///
/// # Errors
/// When the database write fails.
pub async fn set_decision_reason(tx: &mut Tx<'_>, id: &str, reason: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE requests SET decision_reason = $1 WHERE id = $2")
        .bind(reason)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The statuses in which a request keeps its subject's data only for the retention
/// period: closed, or failed and left so.
pub const RETAINED_STATUSES: [Status; 4] = [
    Status::Completed,
    Status::Rejected,
    Status::Cancelled,
    Status::Failed,
];

/// Requests in a [`RETAINED_STATUSES`] status since before `closed_before`
/// (milliseconds) that still hold their subject's data, in `(updated_at, id)` order
/// after `after`, at most `limit`.
///
/// # Errors
/// When the database cannot be read.
pub async fn due_for_redaction(
    store: &Store,
    closed_before: i64,
    after: Option<&(i64, String)>,
    limit: i64,
) -> sqlx::Result<Vec<(i64, String)>> {
    let mut query = Sql::new(
        "SELECT updated_at, id FROM requests WHERE subject_redacted_at IS NULL AND status IN ",
    );
    query
        .bind_list(RETAINED_STATUSES.map(Status::as_str))
        .push(" AND updated_at <= ")
        .bind(closed_before);
    if let Some((updated_at, id)) = after {
        query
            .push(" AND (updated_at > ")
            .bind(*updated_at)
            .push(" OR (updated_at = ")
            .bind(*updated_at)
            .push(" AND id > ")
            .bind(id.clone())
            .push("))");
    }
    query.push(" ORDER BY updated_at, id LIMIT ").bind(limit);
    query.fetch_all(&store.read).await
}

/// Replaces the identities and new values of a closed (or failed) request by their keyed
/// hashes (`hash(label, value)`, with `kind` or `field` as label), in the caller's
/// transaction, and records it. Returns false when another process did it first.
///
/// # Errors
/// When the database fails, or the sealed values cannot be opened (nothing changes).
pub async fn redact_subject(
    tx: &mut Tx<'_>,
    sealer: &Sealer,
    id: &str,
    hash: impl Fn(&str, &str) -> String,
) -> anyhow::Result<bool> {
    let Some(request) = get_in(tx, sealer, id).await? else {
        return Ok(false);
    };
    if request.subject_redacted_at.is_some() || !RETAINED_STATUSES.contains(&request.status) {
        return Ok(false);
    }
    if let Some(error) = request.subject_error {
        anyhow::bail!("request {id}: {error}");
    }
    let identities: Vec<Identity> = request
        .identities
        .iter()
        .map(|i| Identity {
            kind: i.kind.clone(),
            hmac_sha256: i
                .hmac_sha256
                .clone()
                .or_else(|| i.value.as_deref().map(|value| hash(&i.kind, value))),
            value: None,
        })
        .collect();
    let changes: Vec<Change> = request
        .changes
        .iter()
        .map(|c| Change {
            collection: c.collection.clone(),
            field: c.field.clone(),
            hmac_sha256: c.hmac_sha256.clone().or_else(|| {
                c.value
                    .as_ref()
                    .map(|value| hash(&c.field, &value.to_string()))
            }),
            value: None,
        })
        .collect();
    let now = now_ms();
    // Only as it was read: a retry that started it again in the meantime wins.
    let updated = sqlx::query(
        "UPDATE requests SET identities = $1, changes = $2, subject_redacted_at = $3, suppression_hashes = NULL \
         WHERE id = $4 AND subject_redacted_at IS NULL AND status = $5",
    )
    .bind(serde_json::to_string(&identities)?)
    .bind(serde_json::to_string(&changes)?)
    .bind(now)
    .bind(id)
    .bind(request.status.as_str())
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    // What systems exported or located for it goes too (a failed or cancelled access
    // request's package is never purged otherwise).
    crate::queue::forget_run_data(tx, id).await?;
    audit::append(
        tx,
        "system",
        "request.subject_redacted",
        Some(id),
        serde_json::json!({ "identities": identities.len(), "changes": changes.len() }),
    );
    Ok(true)
}

/// The ids of the data keys that `sealer` does not have but that sealed the subjects of
/// requests still holding them: first those of open requests (a process without them
/// could not run them), then those of closed ones (only their redaction waits).
///
/// # Errors
/// When the database cannot be read.
pub async fn missing_data_keys(
    store: &Store,
    sealer: &Sealer,
) -> sqlx::Result<(Vec<String>, Vec<String>)> {
    // `sealed:v1:<16 hex digits>:…`: the key id is the 11th to 26th character. A value
    // changed into something else names no key: its request fails on its own.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT DISTINCT substr(identities, 11, 17), \
         CASE WHEN status IN ('completed', 'rejected', 'cancelled') THEN 1 ELSE 0 END \
         FROM requests WHERE subject_redacted_at IS NULL AND identities LIKE 'sealed:v1:%'",
    )
    .fetch_all(&store.read)
    .await?;
    let (mut open, mut closed) = (Vec::new(), Vec::new());
    for (text, is_closed) in rows {
        let Some(id) = text.strip_suffix(':') else {
            continue;
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || sealer.has(id) {
            continue;
        }
        let list = if is_closed == 1 {
            &mut closed
        } else {
            &mut open
        };
        if !list.iter().any(|known| known == id) {
            list.push(id.to_owned());
        }
    }
    Ok((open, closed))
}
