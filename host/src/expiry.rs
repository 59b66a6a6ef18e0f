//! Retention rules: erasure without a request. A controller's standing instruction (Art.
//! 28(3)(a)) names a rule of one of its systems' connectors; while the rule is enabled,
//! oubli asks the connector every `every_minutes` which subjects have outlived their
//! period (the contract's `expired`) and files an erasure request for each, approved by
//! the rule itself, which then runs like any other: tasks, verification, certificate.
//!
//! A subject is filed once per rule: its submission carries an idempotency key made
//! from the rule and the subject's identities, so a later run that finds them again
//! (their erasure still running, or failed) replays the first request. A dry run lists
//! what a rule would file without filing it. Every rule set, changed or removed, and
//! every run, is in the audit trail.
//!
//! Each run is kept (`retention_runs`), and the requests it files name it. Once all of
//! them have settled, the run's destruction report is issued (`issue_reports`): signed,
//! kept as issued, and sent to the controller by webhook and e-mail in the transaction
//! that issues it. A run that filed nothing issues none.

use crate::app::App;
use crate::audit;
use crate::evidence::destruction::{self, Run, Scope};
use crate::notify::{self, email};
use crate::request::intake::{Accepted, Submission};
use crate::request::rows::{IdentityInput, NewRequest};
use crate::runtime::{Identity, RuntimeError};
use crate::store::{Store, Tx, now_ms, to_rfc3339};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Subjects one run files at most; the next run goes on.
pub const MAX_SUBJECTS: usize = 10_000;

/// A retention rule as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Rule {
    pub id: String,
    pub controller_id: String,
    pub system_id: String,
    /// The rule's name in the system's connector configuration.
    pub rule: String,
    pub every_minutes: i64,
    #[sqlx(try_from = "i64")]
    pub enabled: Enabled,
    #[serde(skip)]
    #[schema(ignore)]
    next_run_at: i64,
    #[serde(skip)]
    #[schema(ignore)]
    last_run_at: Option<i64>,
    /// Subjects the last run found expired, and requests it filed (new ones).
    pub last_subjects: Option<i64>,
    pub last_filed: Option<i64>,
    /// Why the last run stopped, when it did.
    pub last_error: Option<String>,
}

/// Whether a rule runs (stored as 0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Enabled(pub bool);

impl From<i64> for Enabled {
    fn from(n: i64) -> Self {
        Enabled(n != 0)
    }
}

impl Rule {
    /// When it last ran.
    pub fn last_run(&self) -> Option<DateTime<Utc>> {
        self.last_run_at.map(to_rfc3339)
    }

    /// When it runs next, while enabled.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.enabled.0.then(|| to_rfc3339(self.next_run_at))
    }
}

const COLUMNS: &str = "id, controller_id, system_id, rule, every_minutes, enabled, next_run_at, last_run_at, last_subjects, last_filed, last_error";

/// Sets a rule (new, or changed for the same system and rule name) and records it.
///
/// # Errors
/// When the database fails.
pub async fn set(
    tx: &mut Tx<'_>,
    controller_id: &str,
    system_id: &str,
    rule: &str,
    every_minutes: i64,
    enabled: bool,
    actor: &str,
) -> anyhow::Result<Rule> {
    let now = now_ms();
    let id = format!("ret_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(
        "INSERT INTO retention_rules (id, controller_id, system_id, rule, every_minutes, enabled, created_at, updated_at, next_run_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
         ON CONFLICT (system_id, rule) DO UPDATE SET every_minutes = excluded.every_minutes, enabled = excluded.enabled, \
         updated_at = excluded.updated_at, next_run_at = excluded.next_run_at",
    )
    .bind(&id)
    .bind(controller_id)
    .bind(system_id)
    .bind(rule)
    .bind(every_minutes)
    .bind(i64::from(enabled))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let stored: Rule = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM retention_rules WHERE system_id = $1 AND rule = $2"
    ))
    .bind(system_id)
    .bind(rule)
    .fetch_one(&mut **tx)
    .await?;
    audit::append(
        tx,
        actor,
        "retention_rule.set",
        None,
        serde_json::json!({ "controller_id": controller_id, "rule_id": stored.id, "system_id": system_id,
                            "rule": rule, "every_minutes": every_minutes, "enabled": enabled }),
    );
    Ok(stored)
}

/// A controller's rules.
///
/// # Errors
/// When the database cannot be read.
pub async fn list(store: &Store, controller_id: &str) -> sqlx::Result<Vec<Rule>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM retention_rules WHERE controller_id = $1 ORDER BY id"
    ))
    .bind(controller_id)
    .fetch_all(&store.read)
    .await
}

/// One of a controller's rules.
///
/// # Errors
/// When the database cannot be read.
pub async fn get(store: &Store, controller_id: &str, id: &str) -> sqlx::Result<Option<Rule>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM retention_rules WHERE controller_id = $1 AND id = $2"
    ))
    .bind(controller_id)
    .bind(id)
    .fetch_optional(&store.read)
    .await
}

/// Removes a rule and records it; `false` when the controller has no such rule.
///
/// # Errors
/// When the database fails.
pub async fn remove(
    tx: &mut Tx<'_>,
    controller_id: &str,
    id: &str,
    actor: &str,
) -> sqlx::Result<bool> {
    let removed = sqlx::query("DELETE FROM retention_rules WHERE controller_id = $1 AND id = $2")
        .bind(controller_id)
        .bind(id)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    if removed {
        audit::append(
            tx,
            actor,
            "retention_rule.removed",
            None,
            serde_json::json!({ "controller_id": controller_id, "rule_id": id }),
        );
    }
    Ok(removed)
}

/// The subjects whose retention under `rule` has run out, page after page, at most
/// [`MAX_SUBJECTS`]; and whether there were more.
///
/// # Errors
/// The connector's error.
pub async fn expired(
    app: &App,
    rule: &Rule,
    run: Option<&str>,
) -> Result<(Vec<Vec<Identity>>, bool), RuntimeError> {
    let (ready, plugin) = connector(app, &rule.system_id).await?;
    let mut subjects = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    // A subject listed twice (a server that pages loosely) is counted and filed once.
    let mut named = std::collections::HashSet::new();
    for _ in 0..MAX_PAGES {
        let page = app
            .runtime
            .expired(&plugin, &ready.grant, &rule.rule, cursor.clone())
            .await?;
        if let Some(run) = run
            && !beat(&app.store, run)
                .await
                .map_err(|e| RuntimeError::Unavailable(format!("{e:#}")))?
        {
            return Err(RuntimeError::Failed(CLOSED.into()));
        }
        // What a request takes: 1 to 20 identities of 1 to 512 characters.
        subjects.extend(page.subjects.into_iter().filter(|s| {
            (1..=20).contains(&s.len())
                && s.iter()
                    .all(|i| !i.value.trim().is_empty() && i.value.len() <= 512)
                && named.insert(key_of_identities(s))
        }));
        if subjects.len() > MAX_SUBJECTS || (subjects.len() == MAX_SUBJECTS && page.next.is_some())
        {
            subjects.truncate(MAX_SUBJECTS);
            return Ok((subjects, true));
        }
        match page.next {
            Some(next) if !seen.insert(next.clone()) => {
                return Err(RuntimeError::Failed(format!(
                    "the connector gave the cursor {next:?} twice: its pages go round in circles"
                )));
            }
            Some(next) => cursor = Some(next),
            None => return Ok((subjects, false)),
        }
    }
    Err(RuntimeError::Failed(format!(
        "the connector gave more than {MAX_PAGES} pages for {MAX_SUBJECTS} subjects at most"
    )))
}

/// A system and its loaded plugin, which must implement `expired`.
async fn connector(
    app: &App,
    system_id: &str,
) -> Result<(Arc<crate::app::CachedSystem>, Arc<crate::runtime::Plugin>), RuntimeError> {
    let ready = app.system(system_id).await?;
    if !ready.plugin.info.actions.iter().any(|a| a == "expired") {
        return Err(RuntimeError::InvalidConfig(format!(
            "the connector of system {:?} does not implement expired (contract 0.2)",
            ready.system.name
        )));
    }
    let plugin = app.plugin(&ready.system.plugin).await?;
    Ok((ready, plugin))
}

/// Pages of `expired` one run reads at most, whatever the connector says.
const MAX_PAGES: usize = 1_000;

/// Asks the connector of `system_id` for the first page of `rule`, to refuse a rule it
/// does not know when it is set.
///
/// # Errors
/// The connector's error (`InvalidConfig` for a rule it does not have).
pub async fn probe(app: &App, system_id: &str, rule: &str) -> Result<(), RuntimeError> {
    let (ready, plugin) = connector(app, system_id).await?;
    app.runtime
        .expired(&plugin, &ready.grant, rule, None)
        .await
        .map(drop)
}

/// What a dry run found: how many subjects, by identity kind, without their values.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    /// Subjects listed as expired that a request can name (1 to 20 identities of 1 to 512
    /// characters), each counted once.
    pub subjects: usize,
    /// Identity kind → how many of the subjects have one.
    pub identity_kinds: BTreeMap<String, usize>,
    /// There were more than a run files at once (10,000); the next runs go on.
    pub more: bool,
}

/// What `rule` would file now, without filing anything; recorded.
///
/// # Errors
/// The connector's error, or the database's.
pub async fn dry_run(
    app: &App,
    rule: &Rule,
    actor: &str,
) -> anyhow::Result<Result<DryRun, RuntimeError>> {
    let (subjects, more) = match expired(app, rule, None).await {
        Ok(found) => found,
        Err(e) => return Ok(Err(e)),
    };
    let mut kinds = BTreeMap::new();
    for subject in &subjects {
        for identity in subject {
            *kinds.entry(identity.kind.clone()).or_insert(0) += 1;
        }
    }
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        actor,
        "retention_rule.dry_run",
        None,
        serde_json::json!({ "rule_id": rule.id, "subjects": subjects.len(), "more": more }),
    );
    tx.commit().await?;
    Ok(Ok(DryRun {
        subjects: subjects.len(),
        identity_kinds: kinds,
        more,
    }))
}

/// The idempotency key of a subject under a rule: the same subject is filed once.
fn key_of(rule: &Rule, subject: &[Identity]) -> String {
    format!("{}:{}", rule.id, key_of_identities(subject))
}

/// A digest of a subject's identities, whatever their order.
fn key_of_identities(subject: &[Identity]) -> String {
    let mut identities: Vec<String> = subject
        .iter()
        .map(|i| format!("{}\u{1f}{}", i.kind, i.value))
        .collect();
    identities.sort();
    let digest = Sha256::digest(identities.join("\u{1e}").as_bytes());
    hex::encode(&digest[..16])
}

/// What a run says when it finds itself closed as interrupted (its beat had stopped).
const CLOSED: &str =
    "the run was closed as interrupted while it went on (its beat had stopped); it stopped filing";

/// Moves a running run's beat on; `false` when it is no longer running (closed as
/// interrupted by another process).
async fn beat(store: &Store, run_id: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query(
        "UPDATE retention_runs SET beat_at = $1 WHERE id = $2 AND report_status = 'running'",
    )
    .bind(now_ms())
    .bind(run_id)
    .execute(&store.write)
    .await?
    .rows_affected()
        == 1)
}

/// Runs the enabled rules that are due, each at most once per process at a time (a rule
/// is claimed by moving its next run); returns how many ran.
///
/// # Errors
/// When the database fails.
pub async fn run_due(app: &Arc<App>) -> anyhow::Result<usize> {
    let now = now_ms();
    let due: Vec<Rule> = sqlx::query_as(&format!(
        "UPDATE retention_rules SET next_run_at = $1 + every_minutes * 60000 \
         WHERE enabled = 1 AND next_run_at <= $1 RETURNING {COLUMNS}"
    ))
    .bind(now)
    .fetch_all(&app.store.write)
    .await?;
    for rule in &due {
        // One rule's failure does not keep the others from running.
        if let Err(e) = run(app, rule).await {
            tracing::error!(rule = %rule.id, error = format!("{e:#}"), "a retention run failed");
        }
    }
    Ok(due.len())
}

async fn run(app: &Arc<App>, rule: &Rule) -> anyhow::Result<()> {
    let actor = format!("retention:{}", rule.id);
    let run_id = format!("run_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(
        "INSERT INTO retention_runs (id, rule_id, controller_id, system_id, rule, started_at, beat_at, report_status) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, 'running')",
    )
    .bind(&run_id)
    .bind(&rule.id)
    .bind(&rule.controller_id)
    .bind(&rule.system_id)
    .bind(&rule.rule)
    .bind(now_ms())
    .execute(&app.store.write)
    .await?;
    let (found, filed, error, more) = match expired(app, rule, Some(&run_id)).await {
        Err(e) => (None, 0, Some(e.to_string()), false),
        Ok((subjects, more)) => {
            let mut filed = 0;
            let mut error = None;
            for (n, subject) in subjects.iter().enumerate() {
                if n % 100 == 99 && !beat(&app.store, &run_id).await? {
                    error = Some(CLOSED.to_owned());
                    break;
                }
                let submission = Submission {
                    request: NewRequest {
                        controller_id: rule.controller_id.clone(),
                        kind: crate::request::Kind::Erasure,
                        identities: subject
                            .iter()
                            .map(|i| IdentityInput {
                                kind: i.kind.clone(),
                                value: i.value.clone(),
                            })
                            .collect(),
                        changes: Vec::new(),
                        external_ref: Some(format!("retention:{}:{}", rule.id, rule.rule)),
                        submitted_by: actor.clone(),
                        idempotency_key: Some(key_of(rule, subject)),
                        not_before: None,
                        suppression: None,
                        // The rule's system only: an erasure here is not one elsewhere.
                        system_id: Some(rule.system_id.clone()),
                        retention_run_id: Some(run_id.clone()),
                        opendsr: None,
                        deadline_from: None,
                    },
                    actor: actor.clone(),
                    webhook: false,
                    // The rule is the controller's standing instruction.
                    auto_approve: true,
                    approver: Some(actor.clone()),
                    max_attempts: app.config.max_attempts,
                    link_hours: app.config.approval_link_hours,
                };
                match app.intake.submit(submission).await {
                    Ok(Accepted::Created(_)) => filed += 1,
                    Ok(_) => {}
                    Err(e) => {
                        error = Some(format!("filing an erasure failed: {e:#}"));
                        break;
                    }
                }
            }
            (Some(subjects.len()), filed, error, more)
        }
    };
    if filed > 0 {
        app.tasks_ready.notify_waiters();
    }
    let mut tx = app.store.begin().await?;
    let now = now_ms();
    sqlx::query(
        "UPDATE retention_rules SET last_run_at = $1, last_subjects = $2, last_filed = $3, last_error = $4 WHERE id = $5",
    )
    .bind(now)
    .bind(found.map(|n| n as i64))
    .bind(filed as i64)
    .bind(&error)
    .bind(&rule.id)
    .execute(&mut *tx)
    .await?;
    finish_run(&mut tx, &run_id, now, found, more, error.as_deref()).await?;
    audit::append(
        &mut tx,
        &actor,
        "retention.ran",
        None,
        serde_json::json!({ "rule_id": rule.id, "rule": rule.rule, "system_id": rule.system_id, "run_id": run_id,
                            "expired": found, "filed": filed, "more": more, "error": error }),
    );
    tx.commit().await?;
    if let Some(error) = error {
        tracing::warn!(rule = %rule.id, "a retention run stopped: {error}");
    }
    Ok(())
}

/// A run as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunState {
    pub id: String,
    pub rule_id: String,
    pub rule: String,
    pub system_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Subjects the connector listed as expired that a request can name (1 to 20
    /// identities of 1 to 512 characters), each counted once; none when it could not say.
    pub expired: Option<i64>,
    /// Erasure requests it filed (new ones).
    pub filed: i64,
    /// There were more than a run files at once; the next run goes on.
    pub more: bool,
    pub error: Option<String>,
    /// `running`, `waiting` (for the requests it filed to settle), `issued`, or `none`
    /// (it filed nothing, so there is nothing to report).
    pub report_status: String,
    pub issued_at: Option<DateTime<Utc>>,
}

/// A run as stored.
#[derive(sqlx::FromRow)]
struct RunColumns {
    id: String,
    rule_id: String,
    rule: String,
    system_id: String,
    started_at: i64,
    finished_at: Option<i64>,
    expired: Option<i64>,
    filed: i64,
    more: i64,
    error: Option<String>,
    report_status: String,
    issued_at: Option<i64>,
}

const RUN_COLUMNS: &str = "id, rule_id, rule, system_id, started_at, finished_at, expired, filed, more, error, report_status, issued_at";

fn run_state(r: RunColumns) -> RunState {
    RunState {
        id: r.id,
        rule_id: r.rule_id,
        rule: r.rule,
        system_id: r.system_id,
        started_at: to_rfc3339(r.started_at),
        finished_at: r.finished_at.map(to_rfc3339),
        expired: r.expired,
        filed: r.filed,
        more: r.more != 0,
        error: r.error,
        report_status: r.report_status,
        issued_at: r.issued_at.map(to_rfc3339),
    }
}

/// A controller's runs, newest first, at most `limit`, optionally of one rule.
///
/// # Errors
/// When the database cannot be read.
pub async fn runs(
    store: &Store,
    controller_id: &str,
    rule_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<RunState>> {
    let rows: Vec<RunColumns> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM retention_runs WHERE controller_id = $1 AND ($2 IS NULL OR rule_id = $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(controller_id)
    .bind(rule_id)
    .bind(limit)
    .fetch_all(&store.read)
    .await?;
    Ok(rows.into_iter().map(run_state).collect())
}

/// One of a controller's runs, and its signed report once issued.
///
/// # Errors
/// When the database cannot be read.
pub async fn run_of(
    store: &Store,
    controller_id: &str,
    run_id: &str,
) -> anyhow::Result<Option<(RunState, Option<serde_json::Value>)>> {
    // The report with the run: it may be large, so a listing of runs leaves it out.
    #[derive(sqlx::FromRow)]
    struct WithReport {
        #[sqlx(flatten)]
        run: RunColumns,
        report: Option<String>,
    }
    let row: Option<WithReport> = sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS}, report FROM retention_runs WHERE controller_id = $1 AND id = $2"
    ))
    .bind(controller_id)
    .bind(run_id)
    .fetch_optional(&store.read)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let report = row
        .report
        .as_deref()
        .map(serde_json::from_str)
        .transpose()?;
    Ok(Some((run_state(row.run), report)))
}

/// How many of the requests a run filed have not settled yet.
///
/// # Errors
/// When the database cannot be read.
pub async fn open_requests(store: &Store, run_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM requests WHERE retention_run_id = $1 AND status NOT IN ({SETTLED})"
    ))
    .bind(run_id)
    .fetch_one(&store.read)
    .await
}

/// Closes a run: what it found, and whether a report will follow (`waiting` for the
/// requests it filed to settle) or not (`none`: it filed nothing). Counted from the
/// requests that name the run, so an interrupted run counts what it did file.
async fn finish_run(
    tx: &mut Tx<'_>,
    run_id: &str,
    now: i64,
    found: Option<usize>,
    more: bool,
    error: Option<&str>,
) -> sqlx::Result<()> {
    // Only a run still running: one closed as interrupted stays as it was closed.
    sqlx::query(
        "UPDATE retention_runs SET finished_at = $1, expired = $2, more = $3, error = $4, \
         filed = (SELECT COUNT(*) FROM requests WHERE retention_run_id = $5), \
         report_status = CASE WHEN EXISTS (SELECT 1 FROM requests WHERE retention_run_id = $5) THEN 'waiting' ELSE 'none' END \
         WHERE id = $5 AND report_status = 'running'",
    )
    .bind(now)
    .bind(found.map(|n| n as i64))
    .bind(i64::from(more))
    .bind(error)
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How long a run's beat may stand still before the run is taken as interrupted (its
/// process stopped mid-run): longer than the longest connector call (10 minutes).
const RUN_LIMIT_MS: i64 = 30 * 60_000;

/// Statuses after which a request moves no more on its own.
const SETTLED: &str = "'completed', 'failed', 'rejected', 'cancelled'";

/// Issues the destruction report of each run whose requests have all settled: signed,
/// kept with the run as issued, and queued in the same transaction to the controller's
/// webhook (where it has one) and contact address (e-mail, where configured); recorded.
/// Runs left `running` by a stopped process are closed first, as interrupted. Returns
/// how many reports were issued.
///
/// # Errors
/// When the database fails.
pub async fn issue_reports(app: &App) -> anyhow::Result<usize> {
    let stale: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM retention_runs WHERE report_status = 'running' AND beat_at < $1",
    )
    .bind(now_ms() - RUN_LIMIT_MS)
    .fetch_all(&app.store.read)
    .await?;
    for (id,) in stale {
        let mut tx = app.store.begin().await?;
        finish_run(
            &mut tx,
            &id,
            now_ms(),
            None,
            false,
            Some("the run was interrupted: it stopped moving on before it ended (its process stopped, or could not write)"),
        )
        .await?;
        tx.commit().await?;
    }
    let settled: Vec<RunRow> = sqlx::query_as(&format!(
        "SELECT {}, r.controller_id, c.name, c.webhook_url FROM retention_runs r JOIN controllers c ON c.id = r.controller_id \
         WHERE r.report_status = 'waiting' AND NOT EXISTS \
         (SELECT 1 FROM requests q WHERE q.retention_run_id = r.id AND q.status NOT IN ({SETTLED})) ORDER BY r.id LIMIT 16",
        RUN_COLUMNS
            .split(", ")
            .map(|column| format!("r.{column}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .fetch_all(&app.store.read)
    .await?;
    let mut issued = 0;
    for row in settled {
        let r = row.run;
        let run = Run {
            id: r.id,
            rule_id: r.rule_id,
            rule: r.rule,
            system_id: r.system_id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            expired: r.expired,
            filed: r.filed,
            more: r.more != 0,
            error: r.error,
        };
        // One run whose report cannot be made keeps none of the others back.
        let signed = match destruction::report(
            &app.store,
            &app.keys,
            &row.controller_id,
            &row.controller_name,
            Scope::Run(&run),
        )
        .await
        {
            Ok(signed) => signed,
            Err(e) => {
                tracing::error!(run = %run.id, error = format!("{e:#}"), "a destruction report could not be made");
                continue;
            }
        };
        let mut tx = app.store.begin().await?;
        // Issued once, by whichever process gets here first, and only while every request
        // of the run is still settled (none was retried since the report was made).
        let claimed = sqlx::query(&format!(
            "UPDATE retention_runs SET report_status = 'issued', report = $1, issued_at = $2 \
             WHERE id = $3 AND report_status = 'waiting' AND NOT EXISTS \
             (SELECT 1 FROM requests q WHERE q.retention_run_id = $3 AND q.status NOT IN ({SETTLED}))"
        ))
        .bind(signed.to_string())
        .bind(now_ms())
        .bind(&run.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            continue;
        }
        let document = &signed["certificate"];
        if row.webhook_url.is_some() {
            notify::insert_about(
                &mut tx,
                &row.controller_id,
                notify::About::Run(&run.id),
                email::REPORT_EVENT,
                serde_json::json!({
                    "run_id": run.id,
                    "rule_id": run.rule_id,
                    "report_url": format!("{}/v1/controllers/{}/retention-runs/{}/report",
                                          app.config.base_url().trim_end_matches('/'), row.controller_id, run.id),
                    "report": signed,
                }),
            )
            .await?;
        }
        email::queue_report(&mut tx, &run.id).await?;
        audit::append(
            &mut tx,
            &format!("retention:{}", run.rule_id),
            "destruction_report.issued",
            None,
            serde_json::json!({ "controller_id": row.controller_id, "run_id": run.id,
                                "requests": document["requests"], "signature_key": signed["signature"]["key_id"] }),
        );
        tx.commit().await?;
        issued += 1;
    }
    Ok(issued)
}

/// A run whose report is due, with its controller.
#[derive(sqlx::FromRow)]
struct RunRow {
    #[sqlx(flatten)]
    run: RunColumns,
    controller_id: String,
    #[sqlx(rename = "name")]
    controller_name: String,
    webhook_url: Option<String>,
}

/// Runs the due rules, and issues the reports of settled runs, every few seconds until
/// `shutdown` turns true.
pub async fn run_loop(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if let Err(e) = run_due(&app).await {
            tracing::error!(error = format!("{e:#}"), "running retention rules failed");
        }
        match issue_reports(&app).await {
            Ok(0) => {}
            Ok(_) => app.webhooks_ready.notify_waiters(),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "issuing destruction reports failed"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => {}
        }
    }
}
