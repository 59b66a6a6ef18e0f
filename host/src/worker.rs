//! The worker: claims a task, runs the request's action in the system through its
//! plugin, checks the effect, and records the outcome.
//!
//! - erasure: `locate`, whose records are stored with the task before anything
//!   changes; `erase`, whose report is stored too; then `locate` again to verify. Only
//!   records reported as retained (with their legal basis) may remain, and every record
//!   located before, in this run or an earlier one, must have been reported by an
//!   `erase`: one that was neither reported nor found again may have been made
//!   unreachable rather than erased (contract 0.1 verifies by search only);
//! - access: every page of `access`, sealed and stored as it comes (one page held at a
//!   time), the task's result naming the run whose pages they are;
//! - rectification: `rectify`, then `access` to check that the changed records hold the
//!   new values.

use crate::app::App;
use crate::queue::{self, Claimed, Finished, RunOutcome};
use crate::request::Kind;
use crate::request::rows::{self as requests, Request};
use crate::runtime::{
    Change, Grant, Identity, PersonalRecord, Plugin, RecordRef, RecordState, RuntimeError, Subject,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Records given to one `verify` call.
pub const VERIFY_CHUNK: usize = 1_000;
/// Pages of `access` after which a plugin is taken to be looping.
pub const MAX_PAGES: u32 = 10_000;
/// Bytes of exported records one task may store (names, keys and values): the bound on
/// what a plugin can make the host keep, whatever it returns.
pub const MAX_EXPORT_BYTES: usize = 64 << 20;

/// Runs one claimed task: the plugin calls, with the lease renewed meanwhile, and until the
/// finisher has recorded how the run ended (a batch may wait for the database).
async fn run_task(app: &Arc<App>, task: Claimed, request: Read, reports: &mpsc::Sender<Report>) {
    let lease = Duration::from_secs(app.config.lease_secs);
    let mut paged = false;
    // A run taken over from a worker that stopped runs like any other: interrupted runs
    // are not failures of the system (it may have done the work), so they never count
    // against `max_attempts`; the claim backs off instead (`queue::claim_many`).
    let (outcome, heartbeat) = {
        // Ends when the lease is no longer this worker's (it expired while the database
        // was out of reach, and another worker took the task).
        let mut heartbeat = {
            let (app, task) = (app.clone(), task.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match queue::heartbeat(&app.store, &task, lease).await {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(task = %task.id, error = %e, "renewing a lease failed")
                        }
                    }
                }
            })
        };
        // A run whose lease was taken over stops at once, so that a task never runs in two
        // places at the same time.
        let outcome = tokio::select! {
            outcome = execute(app, &task, request, &mut paged) => outcome,
            _ = &mut heartbeat => RunOutcome::Failed {
                kind: "lease-lost".into(),
                message: "the task's lease was taken over by another worker; this run was stopped".into(),
                retryable: true,
            },
        };
        (outcome, heartbeat)
    };
    if let RunOutcome::Failed {
        kind,
        message,
        retryable,
    } = &outcome
    {
        tracing::warn!(task = %task.id, request = %task.request_id, attempt = task.attempt, kind, retryable, "task failed: {message}");
    }
    let ended = match &outcome {
        RunOutcome::Succeeded { .. } => "succeeded".to_owned(),
        RunOutcome::Failed { kind, .. } => kind.clone(),
    };
    let system = app
        .system(&task.system_id)
        .await
        .map_or_else(|_| "unknown".to_owned(), |s| s.system.name.clone());
    tracing::Span::current().record("outcome", ended.as_str());
    metrics::counter!("oubli_task_runs_total", "system" => system, "outcome" => ended).increment(1);
    let mut backoff = app.config.task_backoff().delay(task.runs());
    // A system that said when to come back (HTTP Retry-After) is not asked sooner.
    if let RunOutcome::Failed { message, .. } = &outcome
        && let Some(asked) = crate::retry::retry_after(message)
    {
        backoff = backoff.max(asked);
    }
    let run = Finished {
        task,
        outcome,
        backoff,
        paged,
    };
    let (reply, recorded) = tokio::sync::oneshot::channel();
    if reports.send((run, reply)).await.is_ok() {
        let _ = recorded.await;
    }
    heartbeat.abort();
}

fn failed(error: &RuntimeError) -> RunOutcome {
    RunOutcome::Failed {
        kind: error.kind().into(),
        message: error.to_string(),
        retryable: error.is_retryable(),
    }
}

/// A claimed task's request as read with the others of its claim (see [`read_requests`]):
/// `None` when it no longer exists, an error's text when the read failed.
type Read = Result<Option<requests::Request>, String>;

/// Reads the requests of a claim's tasks in one statement (a request's tasks are often
/// claimed together), one answer per task.
async fn read_requests(app: &App, claimed: &[Claimed]) -> Vec<Read> {
    let mut ids: Vec<String> = claimed.iter().map(|t| t.request_id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    match requests::get_many(&app.store, &app.keys.sealer, ids).await {
        Ok(read) => claimed
            .iter()
            .map(|t| match read.get(&t.request_id) {
                None => Ok(None),
                Some(Ok(request)) => Ok(Some(request.clone())),
                Some(Err(e)) => Err(format!("{e:#}")),
            })
            .collect(),
        Err(e) => claimed.iter().map(|_| Err(format!("{e:#}"))).collect(),
    }
}

/// Runs the task's action on its `request`; `paged` turns true once pages of an export
/// may have been stored.
async fn execute(app: &Arc<App>, task: &Claimed, request: Read, paged: &mut bool) -> RunOutcome {
    let loaded = async {
        let request = request
            .map_err(|e| RuntimeError::Unavailable(format!("reading the request: {e}")))?
            .ok_or_else(|| RuntimeError::Failed("the request no longer exists".into()))?;
        let ready = app.system(&task.system_id).await?;
        let (system, registered) = (&ready.system, &ready.plugin);
        let needed: &[&str] = match request.kind {
            Kind::Erasure => &["erase", "locate"],
            Kind::Access => &["access"],
            Kind::Rectification => &["rectify", "access"],
            // Never queued: an objection is recorded on the suppression list.
            Kind::Objection => {
                return Err(RuntimeError::Failed(
                    "an objection asks nothing of the connected systems".into(),
                ));
            }
        };
        if let Some(missing) = needed
            .iter()
            .find(|a| !registered.info.actions.iter().any(|b| b == *a))
        {
            return Err(RuntimeError::InvalidConfig(format!(
                "the plugin {} of system {} does not support `{missing}`, which a request of kind {} needs",
                registered.name, system.name, request.kind
            )));
        }
        let plugin = app.plugin(&system.plugin).await?;
        use crate::config::ErasureChecks;
        let level = app.config.erasure_checks;
        let checks = Checks {
            verify: level != ErasureChecks::Search
                && registered.info.actions.iter().any(|a| a == "verify"),
            sweep: level == ErasureChecks::All
                && registered.info.actions.iter().any(|a| a == "sweep"),
        };
        Ok::<_, RuntimeError>((request, ready.grant.clone(), plugin, checks))
    };
    let (request, system, plugin, checks) = match loaded.await {
        Ok(loaded) => loaded,
        Err(error) => return failed(&error),
    };
    // No plugin acts on an approval or a configuration that a power cut could still undo
    // (see `store::flush`).
    if let Err(e) = app.store.on_disk().await {
        return failed(&RuntimeError::Unavailable(format!(
            "the service database cannot be written to disk: {e}"
        )));
    }
    // This process cannot read the subject's data: with its data key missing here,
    // another process may, so the task is retried; data changed in the database opens
    // nowhere, so the task fails.
    if let Some(error) = &request.subject_error {
        return failed(&if request.subject_key_missing {
            RuntimeError::Unavailable(error.clone())
        } else {
            RuntimeError::Failed(error.clone())
        });
    }
    // A request whose subject's data was redacted is closed; it never runs again.
    let Some(identities) = request
        .identities
        .iter()
        .map(|i| {
            i.value.clone().map(|value| Identity {
                kind: i.kind.clone(),
                value,
            })
        })
        .collect::<Option<Vec<_>>>()
    else {
        return failed(&RuntimeError::Failed(
            "the subject's identities were redacted after the request's retention period".into(),
        ));
    };
    let subject = Subject {
        request_id: request.id.clone(),
        identities,
    };
    let result = match request.kind {
        Kind::Erasure => erase(app, task, &plugin, &system, &subject, checks).await,
        Kind::Access => {
            *paged = true;
            // The result names this run, whose pages `queue::results` reads back.
            export(app, &plugin, &system, &subject, &mut Pages::Store(task))
                .await
                .map(|(pages, records)| {
                    (
                        json!({ "plugin": plugin.digest, "pages_of": task.lease, "pages": pages }),
                        records,
                    )
                })
        }
        Kind::Rectification => rectify(app, &plugin, &system, &subject, &request).await,
        Kind::Objection => Err(RuntimeError::Failed(
            "an objection asks nothing of the connected systems".into(),
        )),
    };
    match result {
        // What a system returned may be personal data (an export): sealed at rest.
        Ok((value, found)) => RunOutcome::Succeeded {
            // Positions only, not personal data: kept in the clear for the request's settle.
            unapplied: value["unapplied"].as_array().map(|positions| {
                positions
                    .iter()
                    .filter_map(|p| p.as_u64().map(|p| p as u32))
                    .collect()
            }),
            result: app.keys.sealer.seal_json(&value),
            found,
        },
        Err(error) => failed(&error),
    }
}

/// A record's place in a system: its collection and key.
type Place = (String, String);

type Places = std::collections::BTreeMap<Place, serde_json::Value>;

/// Opens one part of a sealed erasure state, `{erase_pending, records}`: whether an
/// `erase` started without its report being stored, and the records (JSON objects with
/// `collection` and `key`) by place.
fn open_places(app: &App, sealed: Option<&str>) -> Result<(bool, Places), RuntimeError> {
    let Some(sealed) = sealed else {
        return Ok(Default::default());
    };
    let value = app.keys.sealer.open_json(sealed).map_err(|e| {
        RuntimeError::Failed(format!(
            "the task's stored erasure state cannot be read: {e:#}"
        ))
    })?;
    let pending = value["erase_pending"].as_bool().unwrap_or(false);
    let records = value["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let place = (
                r["collection"].as_str().unwrap_or_default().to_owned(),
                r["key"].as_str().unwrap_or_default().to_owned(),
            );
            (place, r.clone())
        })
        .collect();
    Ok((pending, records))
}

/// Saves the located records (with whether an `erase` is about to start) and, once it
/// ended, its report; fails the run when its lease was taken over.
async fn save_places(
    app: &App,
    task: &Claimed,
    located: &Places,
    erase_pending: bool,
    reported: Option<&Places>,
) -> Result<(), RuntimeError> {
    let seal = |places: &Places| {
        app.keys.sealer.seal_json(&json!({
            "erase_pending": erase_pending,
            "records": places.values().collect::<Vec<_>>(),
        }))
    };
    let (located, erased) = (Some(seal(located)), reported.map(seal));
    match queue::save_erasure_state(&app.store, task, located.as_deref(), erased.as_deref()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(RuntimeError::Unavailable(
            "the task's lease was taken over by another worker; this run was stopped".into(),
        )),
        Err(e) => Err(RuntimeError::Unavailable(format!(
            "storing the erasure's state: {e:#}"
        ))),
    }
}

/// "3 in orders, 1 in customers": how many of `places` each collection holds, without
/// their keys (which may be personal data: an e-mail used as a key).
fn by_collection<'a>(places: impl Iterator<Item = &'a Place>) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for (collection, _) in places {
        *counts.entry(collection.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(collection, n)| format!("{n} in {collection}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checks of an erasure its plugin offers beyond searching (contract 0.2).
#[derive(Debug, Clone, Copy)]
struct Checks {
    /// Reads each located record back by key.
    verify: bool,
    /// Searches beyond the configured matching.
    sweep: bool,
}

/// "1 in people (email), 2 in notes (body)": where records still hold the subject's data,
/// by collection, with the fields (never keys or values).
fn by_collection_fields(places: &[(&Place, &[String])]) -> String {
    let mut counts: std::collections::BTreeMap<&str, (usize, BTreeSet<&str>)> = Default::default();
    for ((collection, _), fields) in places {
        let entry = counts.entry(collection.as_str()).or_default();
        entry.0 += 1;
        entry.1.extend(fields.iter().map(String::as_str));
    }
    counts
        .iter()
        .map(|(collection, (n, fields))| {
            let fields: Vec<&str> = fields.iter().copied().collect();
            format!("{n} in {collection} ({})", fields.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs an erasure in one system (see the module's description). Returns the result and
/// how many records were located, in this run and earlier ones.
async fn erase(
    app: &Arc<App>,
    task: &Claimed,
    plugin: &Arc<Plugin>,
    system: &Arc<Grant>,
    subject: &Subject,
    checks: Checks,
) -> Result<(serde_json::Value, u64), RuntimeError> {
    let state = &task.erasure;
    let (report_lost, mut located) = open_places(app, state.located.as_deref())?;
    let (_, mut reported) = open_places(app, state.erased.as_deref())?;
    let found_now: Vec<_> = app.runtime.locate(plugin, system, subject).await?;
    // Records located by an earlier run whose `erase` started but whose report was never
    // stored (the process died in between, or lost its lease): that erase may have
    // removed them. Those this run finds again were not removed by it.
    let mut located_before: BTreeSet<Place> = if report_lost {
        located.keys().cloned().collect()
    } else {
        BTreeSet::new()
    };
    for record in found_now {
        let place = (record.collection.clone(), record.key.clone());
        located_before.remove(&place);
        located.insert(place, json!(record));
    }
    // Stored before anything changes: a record this erasure makes unreachable without
    // erasing it is still checked, in this run or the next.
    save_places(app, task, &located, true, None).await?;
    let erased = match app.runtime.erase(plugin, system, subject).await {
        Ok(erased) => erased,
        // Only a run that died leaves the flag set: a plugin's error says what happened.
        Err(error) => {
            save_places(app, task, &located, false, None).await?;
            return Err(error);
        }
    };
    let report = crate::runtime::erased_json(&erased);
    for record in report.as_array().into_iter().flatten() {
        let place = (
            record["collection"].as_str().unwrap_or_default().to_owned(),
            record["key"].as_str().unwrap_or_default().to_owned(),
        );
        reported.insert(place, record.clone());
    }
    // A plugin that verifies by key needs no stored report to check a rerun: each
    // located record is read back. Without `verify`, the report is stored (one more
    // durable write) so that a rerun after a crash knows what this erase reported.
    if !checks.verify {
        save_places(app, task, &located, false, Some(&reported)).await?;
    }
    let remaining = app.runtime.locate(plugin, system, subject).await?;
    let retained = |place: &Place| {
        reported
            .get(place)
            .is_some_and(|r| r["outcome"] == "retained")
    };
    let left: Vec<Place> = remaining
        .iter()
        .map(|r| (r.collection.clone(), r.key.clone()))
        .filter(|place| !retained(place))
        .collect();
    if !left.is_empty() {
        return Err(RuntimeError::Failed(format!(
            "after the erasure, {} record(s) the plugin did not report as retained are still there ({})",
            left.len(),
            by_collection(left.iter())
        )));
    }
    let mut verification = json!({ "method": "locate" });
    if checks.verify {
        verification = verify(app, plugin, system, subject, &located, &reported).await?;
    }
    let (lost_report, unaccounted): (Vec<&Place>, Vec<&Place>) = located
        .keys()
        .filter(|place| !checks.verify && !reported.contains_key(*place))
        .partition(|place| located_before.contains(*place));
    if !unaccounted.is_empty() {
        return Err(RuntimeError::Failed(format!(
            "{} record(s) located before the erasure were neither reported by `erase` nor found again ({}): they may have been made unreachable rather than erased, and a plugin of contract 0.1 can only verify by searching",
            unaccounted.len(),
            by_collection(unaccounted.into_iter())
        )));
    }
    let mut result = json!({
        "plugin": plugin.digest,
        "located": located.values().collect::<Vec<_>>(),
        "erased": report,
        "remaining": remaining,
        "verification": verification,
    });
    if checks.sweep {
        result["sweep"] = sweep(app, plugin, system, subject, &reported).await?;
    }
    if !lost_report.is_empty() {
        result["unreported"] = json!({
            "records": lost_report.len(),
            "collections": by_collection(lost_report.into_iter()),
            "note": "located by an earlier run whose erase was interrupted before its report was stored; not found again by search, which is the only verification contract 0.1 offers",
        });
    }
    // What was found: located, or erased without having been located.
    let found = located
        .keys()
        .chain(reported.keys())
        .collect::<BTreeSet<_>>();
    Ok((result, found.len() as u64))
}

/// Reads every located record back by key (contract 0.2). Each answer must be for a
/// record asked about, once; each record must be gone, or cleared of the subject's data
/// (not if reported deleted), or still hold it only if reported retained and not in a
/// field the retention says it masked. Returns the counts over the records asked.
async fn verify(
    app: &Arc<App>,
    plugin: &Arc<Plugin>,
    system: &Arc<Grant>,
    subject: &Subject,
    located: &Places,
    reported: &Places,
) -> Result<serde_json::Value, RuntimeError> {
    let records = located
        .values()
        .map(|r| serde_json::from_value::<RecordRef>(r.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            RuntimeError::Failed(format!("the task's located records cannot be read: {e}"))
        })?;
    // In chunks, so that a subject with many records stays within what one call may
    // carry across the sandbox.
    let mut verified = Vec::with_capacity(records.len());
    for chunk in records.chunks(VERIFY_CHUNK) {
        verified.extend(app.runtime.verify(plugin, system, subject, chunk).await?);
    }
    // `Runtime::verify` has checked that each record asked was answered once.
    let states: std::collections::BTreeMap<Place, RecordState> = verified
        .into_iter()
        .map(|record| ((record.collection, record.key), record.state))
        .collect();
    let (mut gone, mut cleared, mut kept, mut unreported) = (0, 0, 0, 0);
    let mut holding: Vec<(Place, Vec<String>)> = Vec::new();
    let mut contradicted = Vec::new();
    for (place, state) in &states {
        let report = reported.get(place);
        let outcome = report.and_then(|r| r["outcome"].as_str());
        if report.is_none() {
            unreported += 1;
        }
        let masked: Vec<&str> = report
            .and_then(|r| r["masked"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str())
            .collect();
        match state {
            RecordState::Gone => gone += 1,
            RecordState::Cleared(_) if outcome == Some("deleted") => contradicted.push(place),
            RecordState::Cleared(_) => cleared += 1,
            RecordState::Holds(fields)
                if outcome == Some("retained")
                    && !fields.iter().any(|f| masked.contains(&f.as_str())) =>
            {
                kept += 1
            }
            RecordState::Holds(fields) => holding.push((place.clone(), fields.clone())),
        }
    }
    if !holding.is_empty() {
        let places: Vec<(&Place, &[String])> =
            holding.iter().map(|(p, f)| (p, f.as_slice())).collect();
        return Err(RuntimeError::Failed(format!(
            "{} record(s) located before the erasure still hold the subject's data when read back by key ({}), though not reported retained (or in fields reported masked)",
            holding.len(),
            by_collection_fields(&places)
        )));
    }
    if !contradicted.is_empty() {
        return Err(RuntimeError::Failed(format!(
            "{} record(s) reported deleted are still there when read back by key ({})",
            contradicted.len(),
            by_collection(contradicted.into_iter())
        )));
    }
    Ok(json!({
        "method": "verify",
        "records": states.len(),
        "gone": gone,
        "cleared": cleared,
        "retained": kept,
        "unreported": unreported,
    }))
}

/// Sweeps the system for the subject's identity values beyond the configured matching
/// (contract 0.2): a hit outside a record reported retained fails the erasure. Returns
/// what was covered.
async fn sweep(
    app: &Arc<App>,
    plugin: &Arc<Plugin>,
    system: &Arc<Grant>,
    subject: &Subject,
    reported: &Places,
) -> Result<serde_json::Value, RuntimeError> {
    let report = app
        .runtime
        .sweep(plugin, system, subject, app.config.sweep_budget)
        .await?;
    let mut outside: std::collections::BTreeMap<Place, Vec<String>> = Default::default();
    let mut in_retained = 0;
    // A hit is excused only in a record kept on purpose, and not in a field it masked.
    let excused = |place: &Place, field: &str| {
        reported.get(place).is_some_and(|r| {
            r["outcome"] == "retained"
                && !r["masked"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m == field))
        })
    };
    for hit in &report.hits {
        let place = (hit.collection.clone(), hit.key.clone());
        if excused(&place, &hit.field) {
            in_retained += 1;
        } else {
            outside.entry(place).or_default().push(hit.field.clone());
        }
    }
    if !outside.is_empty() {
        let places: Vec<(&Place, &[String])> =
            outside.iter().map(|(p, f)| (p, f.as_slice())).collect();
        return Err(RuntimeError::Failed(format!(
            "the sweep after the erasure found the subject's identity values in {} record(s) the erasure did not reach ({}): a copy in another spelling or a mention in free text, left behind",
            outside.len(),
            by_collection_fields(&places)
        )));
    }
    // What the plugin wrote goes on a certificate that names the subject only by keyed
    // hashes: a text that quotes an identity (a database error echoing it) is withheld.
    let values: Vec<String> = subject
        .identities
        .iter()
        .map(|i| i.value.to_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    let withhold = |texts: Vec<String>| -> Vec<String> {
        texts
            .into_iter()
            .map(|t| {
                let lower = t.to_lowercase();
                if values.iter().any(|v| lower.contains(v.as_str())) {
                    "[withheld: the text named the subject]".to_owned()
                } else {
                    t
                }
            })
            .collect()
    };
    Ok(json!({
        "budget": app.config.sweep_budget,
        "covered": withhold(report.covered),
        "skipped": withhold(report.skipped),
        "hits_in_retained_records": in_retained,
        "cut_short": report.cut_short,
    }))
}

/// Where the pages of an export go as they come, so that no more than one is held.
enum Pages<'a> {
    /// Sealed and stored under the run's lease.
    Store(&'a Claimed),
    /// Only the records named are kept.
    Keep(&'a BTreeSet<(&'a str, &'a str)>, Vec<PersonalRecord>),
}

/// Runs `access` page after page, handing each to `pages`; stops at the task's budget of
/// pages and bytes. Returns the number of pages and of records.
async fn export(
    app: &Arc<App>,
    plugin: &Arc<Plugin>,
    system: &Arc<Grant>,
    subject: &Subject,
    pages: &mut Pages<'_>,
) -> Result<(u32, u64), RuntimeError> {
    let mut cursor = None;
    let mut bytes = 0usize;
    let mut records = 0u64;
    for number in 0..MAX_PAGES {
        let page = app
            .runtime
            .access(plugin, system, subject, cursor.take())
            .await?;
        bytes += page
            .records
            .iter()
            .map(|r| {
                64 + r.collection.len()
                    + r.key.len()
                    + r.fields
                        .iter()
                        .map(|f| {
                            48 + f.name.len()
                                + f.value.len()
                                + f.category.as_ref().map_or(0, String::len)
                        })
                        .sum::<usize>()
            })
            .sum::<usize>()
            + page.next.as_ref().map_or(0, String::len);
        records += page.records.len() as u64;
        if bytes > MAX_EXPORT_BYTES {
            return Err(RuntimeError::Failed(format!(
                "the plugin exported more than {} MiB for one subject; oubli stops there rather than keep more",
                MAX_EXPORT_BYTES >> 20
            )));
        }
        match pages {
            Pages::Store(task) => {
                // Straight to JSON text: a tree of values would take many times the page.
                let text = serde_json::to_vec(&page.records).map_err(|e| {
                    RuntimeError::Failed(format!("the page cannot be written as JSON: {e}"))
                })?;
                let sealed = app.keys.sealer.seal(&text);
                match queue::store_page(&app.store, task, number, &sealed).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(RuntimeError::Unavailable(
                            "the task's lease was taken over by another worker; this run was stopped"
                                .into(),
                        ));
                    }
                    Err(e) => {
                        return Err(RuntimeError::Unavailable(format!(
                            "storing a page of the export: {e:#}"
                        )));
                    }
                }
            }
            Pages::Keep(wanted, kept) => kept.extend(
                page.records
                    .into_iter()
                    .filter(|r| wanted.contains(&(r.collection.as_str(), r.key.as_str()))),
            ),
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok((number + 1, records)),
        }
    }
    Err(RuntimeError::Failed(format!(
        "the plugin returned more than {MAX_PAGES} pages; it is taken to be looping"
    )))
}

async fn rectify(
    app: &Arc<App>,
    plugin: &Arc<Plugin>,
    system: &Arc<Grant>,
    subject: &Subject,
    request: &Request,
) -> Result<(serde_json::Value, u64), RuntimeError> {
    let Some(wanted) = request
        .changes
        .iter()
        .map(|c| c.value.as_ref().map(|value| (c, value)))
        .collect::<Option<Vec<_>>>()
    else {
        return Err(RuntimeError::Failed(
            "the new values were redacted after the request's retention period".into(),
        ));
    };
    let changes: Vec<Change> = wanted
        .iter()
        .map(|(c, value)| Change {
            collection: c.collection.clone(),
            field: c.field.clone(),
            value: value.to_string(),
        })
        .collect();
    let changed = app
        .runtime
        .rectify(plugin, system, subject, &changes)
        .await?;
    // A system that changed no record applied no change, whatever it says.
    let unapplied: Vec<u32> = if changed.changed.is_empty() {
        (0..changes.len() as u32).collect()
    } else {
        changed.not_applicable.clone()
    };
    let touched: BTreeSet<(&str, &str)> = changed
        .changed
        .iter()
        .map(|r| (r.collection.as_str(), r.key.as_str()))
        .collect();
    // Only the changed records are kept from the export.
    let mut pages = Pages::Keep(&touched, Vec::new());
    export(app, plugin, system, subject, &mut pages).await?;
    let Pages::Keep(_, records) = pages else {
        unreachable!("the pages were kept")
    };
    let mut verified = BTreeSet::new();
    for record in &records {
        for (change, value) in wanted.iter().filter(|(c, _)| {
            c.collection
                .as_deref()
                .is_none_or(|c| c == record.collection)
        }) {
            let Some(field) = record.fields.iter().find(|f| f.name == change.field) else {
                continue;
            };
            let now: serde_json::Value = serde_json::from_str(&field.value)
                .unwrap_or(serde_json::Value::String(field.value.clone()));
            // The message names the field, never its values: it is kept in the audit trail.
            if now != **value {
                return Err(RuntimeError::Failed(format!(
                    "after the rectification, a record of {} does not hold the new value of {}",
                    record.collection, change.field
                )));
            }
            verified.insert((record.collection.as_str(), record.key.as_str()));
        }
    }
    // Records changed through an identity (a new e-mail address) are no longer found with
    // the old one: they are reported as not verified rather than passed.
    let unverified: Vec<String> = touched
        .difference(&verified)
        .map(|(c, k)| format!("{c}/{k}"))
        .collect();
    Ok((
        json!({ "plugin": plugin.digest, "changed": changed.changed, "not_applicable": changed.not_applicable,
                "unapplied": unapplied, "verified": verified.len(), "unverified": unverified }),
        changed.changed.len() as u64,
    ))
}

type Report = (Finished, tokio::sync::oneshot::Sender<bool>);

/// Records finished runs, batching those that end together into one transaction.
async fn finisher(app: Arc<App>, owner: String, mut reports: mpsc::Receiver<Report>) {
    while let Some(first) = reports.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match reports.try_recv() {
                Ok(report) => batch.push(report),
                Err(_) => break,
            }
        }
        let runs: Vec<Finished> = batch.iter().map(|(run, _)| run.clone()).collect();
        match crate::request::lifecycle::finish_many(&app.store, &owner, &runs).await {
            Ok(recorded) => {
                for ((_, reply), recorded) in batch.into_iter().zip(recorded) {
                    let _ = reply.send(recorded);
                }
            }
            // Not recorded: the leases expire and the tasks run again.
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                runs = runs.len(),
                "recording task outcomes failed"
            ),
        }
    }
}

/// Runs tasks until `shutdown` turns true: claims as many due tasks as there are idle
/// workers in one transaction, runs each on its own, and records their outcomes in
/// batches. On shutdown, running tasks finish within the grace period, or their leases
/// are handed back.
pub async fn run(app: Arc<App>, owner: String, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let workers = app.config.workers;
    let idle = Arc::new(Semaphore::new(workers));
    let lease = Duration::from_secs(app.config.lease_secs);
    let backoff = app.config.task_backoff();
    let (reports, received) = mpsc::channel::<Report>(4 * workers);
    let finisher = tokio::spawn(finisher(app.clone(), owner.clone(), received));
    let mut running = tokio::task::JoinSet::new();
    while !*shutdown.borrow() {
        while running.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = idle.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.changed() => continue,
        };
        let mut permits = vec![permit];
        while let Ok(more) = idle.clone().try_acquire_owned() {
            permits.push(more);
        }
        // Listening before looking: a task queued while the claim runs (or while the next
        // due time is read) wakes this loop, rather than being missed until the next look.
        let woken = app.tasks_ready.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let claimed = match crate::request::lifecycle::claim_many(
            &app.store,
            &owner,
            lease,
            &backoff,
            permits.len(),
        )
        .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "claiming tasks failed");
                Vec::new()
            }
        };
        let found = !claimed.is_empty();
        let read = read_requests(&app, &claimed).await;
        for ((task, request), permit) in claimed.into_iter().zip(read).zip(permits.drain(..)) {
            let (app, reports) = (app.clone(), reports.clone());
            let span = tracing::info_span!(
                "task",
                task = %task.id,
                request = %task.request_id,
                system = %task.system_id,
                attempt = task.attempt,
                outcome = tracing::field::Empty
            );
            running.spawn(tracing::Instrument::instrument(
                async move {
                    run_task(&app, task, request, &reports).await;
                    drop(permit);
                },
                span,
            ));
        }
        drop(permits);
        if !found {
            let wait = idle_wait(&app, &backoff).await;
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // Wait for the running tasks: each gives its permit back once its outcome is recorded.
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    let all = u32::try_from(workers).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, idle.acquire_many(all))
        .await
        .is_err()
    {
        // Stop waiting for them: their results would be refused once the leases are back.
        running.abort_all();
        match queue::release(&app.store, &owner).await {
            Ok(n) => tracing::warn!(tasks = n, "handed running tasks back at shutdown"),
            Err(e) => {
                tracing::error!(error = %e, "handing tasks back failed; their leases will expire")
            }
        }
    }
    drop(reports);
    let _ = finisher.await;
}

/// How long an idle worker sleeps before it looks again when nothing wakes it: until the
/// next task falls due (a retry's backoff, a `not_before`, a lease that runs out), at most
/// `IDLE_CHECK`. A task queued meanwhile wakes it at once (in this process, or through
/// PostgreSQL's `LISTEN`), so the cap only bounds a lost notification.
async fn idle_wait(app: &App, backoff: &crate::retry::Backoff) -> Duration {
    let next = crate::queue::next_due(&app.store, backoff).await;
    let now = crate::store::now_ms();
    match next {
        Ok(Some(at)) => {
            Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).clamp(IDLE_MIN, IDLE_CHECK)
        }
        Ok(None) => IDLE_CHECK,
        // The database is away: look again soon, as before.
        Err(_) => IDLE_MIN * 5,
    }
}

/// The longest an idle worker sleeps without a wake-up.
const IDLE_CHECK: Duration = Duration::from_secs(10);
/// The shortest: a task that is due but was not claimed (taken by another process) is not
/// looked at again in a busy loop.
const IDLE_MIN: Duration = Duration::from_millis(250);

/// Wakes this process's workers whenever another process announces queued tasks
/// (PostgreSQL `LISTEN`), until `shutdown` turns true. Workers poll as well, so a lost
/// connection only delays them; it is opened again after a pause.
pub async fn listen(
    app: std::sync::Arc<crate::app::App>,
    url: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let listening = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(crate::store::TASKS_CHANNEL).await?;
            loop {
                listener.recv().await?;
                app.tasks_ready.notify_waiters();
            }
        };
        let failed: sqlx::Result<()> = tokio::select! {
            failed = listening => failed,
            _ = shutdown.changed() => return,
        };
        if let Err(e) = failed {
            tracing::warn!(error = %e, "listening for queued tasks failed; polling meanwhile");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
