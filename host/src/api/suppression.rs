//! A controller's suppression list: started, read and ended by the controller (or an
//! admin); checked one identity at a time or a whole campaign file at once by those who
//! run campaigns for it; entries taken off with a reason. Every check is recorded in the
//! audit trail (how many, never who).

use super::{ApiError, Json, require};
use crate::app::App;
use crate::audit;
use crate::auth::{Caller, Role};
use crate::suppression::{self, Entry, Kept, Settings, Unreadable};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/controllers/{id}/suppression",
            put(configure_suppression)
                .get(read_suppression)
                .delete(end_suppression),
        )
        .route("/v1/suppression/check", post(check_suppression))
        .route("/v1/suppression/remove", post(remove_suppressed))
}

/// The bulk check, which streams a body of any size.
pub fn csv_router() -> Router<Arc<App>> {
    Router::new().route("/v1/suppression/check.csv", post(check_suppression_csv))
}

/// Starting a list, or changing its purpose or region.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Configure {
    /// What the list is for, stated for the audit trail and for whoever checks it.
    #[schema(min_length = 1, max_length = 500)]
    pub purpose: String,
    /// ISO 3166 alpha-2 region (`FR`) a phone number without its country code is read in.
    #[serde(default)]
    pub phone_region: Option<String>,
}

/// Ending a list, which deletes its entries.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct End {
    /// Why, for the audit trail.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// An identity to check or remove, given in clear or as the SHA-256 of its normalised
/// value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// `email`, `phone`, or any other kind the controller's requests use.
    pub kind: String,
    /// The value as written; normalised by its kind before it is hashed.
    #[serde(default)]
    pub value: Option<String>,
    /// Instead of `value`: the lowercase hex SHA-256 of the normalised value.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// A check of identities against a controller's list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub controller_id: String,
    /// 1 to 1,000 identities.
    #[schema(min_items = 1, max_items = 1000)]
    pub identities: Vec<Probe>,
}

/// Entries to take off a list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    pub controller_id: String,
    /// 1 to 1,000 identities.
    #[schema(min_items = 1, max_items = 1000)]
    pub identities: Vec<Probe>,
    /// Why they come off (e.g. the person gave consent again), for the audit trail.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// The answer for one identity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    pub kind: String,
    /// Whether the identity is on the list; `null` when it cannot be read.
    pub suppressed: Option<bool>,
    /// Why it cannot be read (a phone number without country code and no region…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answers of a check, in the order of the identities asked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checked {
    /// The list's stated purpose.
    pub purpose: String,
    pub results: Vec<Verdict>,
}

/// What ending a list or removing entries did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// Entries deleted.
    pub removed: u64,
}

fn reason(text: &str, field: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() || text.chars().count() > 500 {
        return Err(ApiError::field(field, "1 to 500 characters, not blank"));
    }
    Ok(())
}

/// The list of the controller a body or query names (`controller_id`) and the caller may
/// see, or a 422 naming that field; a 409 when its entries are keyed with another key.
async fn list_named(app: &App, caller: &Caller, controller_id: &str) -> Result<Kept, ApiError> {
    let kept = if caller.sees(controller_id) {
        suppression::kept(&app.store, controller_id).await?
    } else {
        None
    };
    let list = kept.ok_or_else(|| {
        ApiError::field(
            "controller_id",
            format!(
                "the controller {controller_id:?} keeps no suppression list (or does not exist)"
            ),
        )
    })?;
    if list.key_fingerprint != suppression::fingerprint(&app.keys) {
        return Err(ApiError::Conflict(
            "this list's entries are keyed with another identity hash key (it changed since the list was started): none of them can be matched, so nothing is answered; restore that key, or end the list and start it again".into(),
        ));
    }
    Ok(list)
}

/// Refuses a kind that is not lowercase letters, digits and dashes, or that no system of
/// the controller understands: nothing of that kind can be on its list, and an answer
/// "not suppressed" for it (`Email` for `email`) would claim a check that was not made.
async fn known_kinds<'k>(
    app: &App,
    controller_id: &str,
    kinds: impl Iterator<Item = &'k str>,
    field: &str,
) -> Result<(), ApiError> {
    let known = crate::controller::identity_kinds(&app.store, controller_id).await?;
    for (i, kind) in kinds.enumerate() {
        if !known.iter().any(|k| k == kind) {
            let place = if field == "column" {
                field.to_owned()
            } else {
                format!("{field}[{i}].kind")
            };
            return Err(ApiError::field(
                place,
                format!(
                    "no system of this controller understands the identity kind {kind:?}, so none is on its list; known kinds: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The entries of identities given in clear or as digests, each or why it cannot be
/// read.
fn entries(app: &App, probes: &[Probe], region: Option<&str>) -> Vec<Result<Entry, Unreadable>> {
    probes
        .iter()
        .map(|probe| match (&probe.value, &probe.sha256) {
            (Some(value), None) => Entry::of_value(&app.keys, &probe.kind, value, region),
            (None, Some(digest)) => suppression::parse_digest(digest)
                .map(|digest| Entry::of(&app.keys, &probe.kind, &digest)),
            _ => Err(Unreadable::Blank),
        })
        .collect()
}

fn probes_shape(probes: &[Probe]) -> Result<(), ApiError> {
    if probes.is_empty() || probes.len() > 1000 {
        return Err(ApiError::field("identities", "1 to 1,000 identities"));
    }
    for (i, probe) in probes.iter().enumerate() {
        if probe.value.is_some() == probe.sha256.is_some() {
            return Err(ApiError::field(
                format!("identities[{i}]"),
                "give either value or sha256",
            ));
        }
        if probe.kind.is_empty() || probe.kind.len() > 40 {
            return Err(ApiError::field(
                format!("identities[{i}].kind"),
                "1 to 40 characters",
            ));
        }
    }
    Ok(())
}

/// Start the controller's suppression list, or change its purpose or phone region.
/// From then on, an erasure submitted for it adds the subject's identities (as keyed
/// hashes) when it completes, and an objection when it is approved.
#[utoipa::path(put, path = "/v1/controllers/{id}/suppression", tag = "suppression", params(("id" = String, Path)),
    request_body = Configure, responses((status = 200, body = Settings)), security(("bearer" = [])))]
pub async fn configure_suppression(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<Configure>,
) -> Result<Json<Settings>, ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    reason(&body.purpose, "purpose")?;
    let region = body.phone_region.as_deref().map(str::to_ascii_uppercase);
    if let Some(region) = &region
        && !suppression::is_region(region)
    {
        return Err(ApiError::field(
            "phone_region",
            format!("{region:?} is not an ISO 3166 alpha-2 region with phone numbers, e.g. FR"),
        ));
    }
    let mut tx = app.store.begin().await?;
    suppression::set(
        &mut tx,
        &id,
        body.purpose.trim(),
        region.as_deref(),
        &suppression::fingerprint(&app.keys),
        &caller.actor(),
    )
    .await?;
    tx.commit().await?;
    let settings = suppression::settings(&app.store, &id).await?;
    Ok(Json(settings.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("the list just started is gone"))
    })?))
}

/// Whether a controller keeps a suppression list, and the list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListState {
    pub kept: bool,
    /// The list, when it is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Settings>,
}

/// Whether the controller keeps a suppression list, and its purpose, region and size.
#[utoipa::path(get, path = "/v1/controllers/{id}/suppression", tag = "suppression", params(("id" = String, Path)),
    responses((status = 200, body = ListState)), security(("bearer" = [])))]
pub async fn read_suppression(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ListState>, ApiError> {
    super::admin::visible_controller(&app, &caller, &id).await?;
    let list = suppression::settings(&app.store, &id).await?;
    Ok(Json(ListState {
        kept: list.is_some(),
        list,
    }))
}

/// End the controller's suppression list: its entries are deleted.
#[utoipa::path(delete, path = "/v1/controllers/{id}/suppression", tag = "suppression", params(("id" = String, Path)),
    request_body = End, responses((status = 200, body = Removed), (status = 409, description = "The controller keeps no list", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn end_suppression(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<End>,
) -> Result<Json<Removed>, ApiError> {
    super::admin::own_controller(&app, &caller, &id).await?;
    reason(&body.reason, "reason")?;
    let mut tx = app.store.begin().await?;
    let removed = suppression::end(&mut tx, &id, body.reason.trim(), &caller.actor())
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!("the controller {id:?} keeps no suppression list"))
        })?;
    tx.commit().await?;
    Ok(Json(Removed { removed }))
}

async fn audit_check(
    app: &App,
    caller: &Caller,
    controller_id: &str,
    checked: usize,
    suppressed: usize,
) -> Result<(), ApiError> {
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        &caller.actor(),
        "suppression.checked",
        None,
        json!({ "controller_id": controller_id, "checked": checked, "suppressed": suppressed }),
    );
    tx.commit().await?;
    Ok(())
}

/// Check identities against a controller's suppression list, before a campaign. Each
/// is normalised by its kind (see the README) or given as the SHA-256 of its normalised
/// value.
#[utoipa::path(post, path = "/v1/suppression/check", tag = "suppression", request_body = Check,
    responses((status = 200, body = Checked), (status = 409, description = "The list's entries are keyed with another identity hash key: nothing can be matched", body = super::ErrorBody)), security(("bearer" = [])))]
pub async fn check_suppression(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(body): Json<Check>,
) -> Result<Json<Checked>, ApiError> {
    require(&caller, &[Role::Admin, Role::Dpo, Role::Controller])?;
    probes_shape(&body.identities)?;
    let list = list_named(&app, &caller, &body.controller_id).await?;
    known_kinds(
        &app,
        &body.controller_id,
        body.identities.iter().map(|p| p.kind.as_str()),
        "identities",
    )
    .await?;
    let entries = entries(&app, &body.identities, list.phone_region.as_deref());
    let hashes: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.as_ref().ok().map(|e| e.hash.as_str()))
        .collect();
    let listed = suppression::listed(&app.store, &body.controller_id, &hashes).await?;
    let results: Vec<Verdict> = body
        .identities
        .iter()
        .zip(&entries)
        .map(|(probe, entry)| match entry {
            Ok(entry) => Verdict {
                kind: probe.kind.clone(),
                suppressed: Some(listed.contains(&entry.hash)),
                error: None,
            },
            Err(why) => Verdict {
                kind: probe.kind.clone(),
                suppressed: None,
                error: Some(why.to_string()),
            },
        })
        .collect();
    let suppressed = results
        .iter()
        .filter(|r| r.suppressed == Some(true))
        .count();
    audit_check(
        &app,
        &caller,
        &body.controller_id,
        results.len(),
        suppressed,
    )
    .await?;
    Ok(Json(Checked {
        purpose: list.purpose,
        results,
    }))
}

/// Take entries off a controller's suppression list (e.g. the person consented again),
/// with the reason, which the audit trail keeps.
#[utoipa::path(post, path = "/v1/suppression/remove", tag = "suppression", request_body = Remove,
    responses((status = 200, body = Removed), (status = 409, description = "The list's entries are keyed with another identity hash key: nothing can be matched", body = super::ErrorBody)), security(("bearer" = [])))]
pub async fn remove_suppressed(
    State(app): State<Arc<App>>,
    caller: Caller,
    Json(body): Json<Remove>,
) -> Result<Json<Removed>, ApiError> {
    require(&caller, &[Role::Admin, Role::Controller])?;
    probes_shape(&body.identities)?;
    reason(&body.reason, "reason")?;
    let list = list_named(&app, &caller, &body.controller_id).await?;
    known_kinds(
        &app,
        &body.controller_id,
        body.identities.iter().map(|p| p.kind.as_str()),
        "identities",
    )
    .await?;
    let mut found = Vec::new();
    for (i, entry) in entries(&app, &body.identities, list.phone_region.as_deref())
        .into_iter()
        .enumerate()
    {
        found.push(
            entry.map_err(|why| ApiError::field(format!("identities[{i}]"), why.to_string()))?,
        );
    }
    let mut tx = app.store.begin().await?;
    let removed = suppression::remove(
        &mut tx,
        &body.controller_id,
        &found,
        body.reason.trim(),
        &caller.actor(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Removed { removed }))
}

/// The columns of a campaign file to check: `header` (of the kind of the same name) or
/// `header:kind`.
fn csv_columns(query: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    let columns: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k == "column")
        .map(|(_, v)| match v.rsplit_once(':') {
            Some((header, kind)) => (header.to_owned(), kind.to_owned()),
            None => (v.clone(), v.clone()),
        })
        .collect();
    if columns.is_empty() {
        return Err(ApiError::BadRequest {
            field: Some("column".into()),
            message: "name at least one column to check: column=email, or column=Mobile:phone for a header and its kind".into(),
        });
    }
    if let Some((header, kind)) = columns.iter().find(|(h, k)| h.is_empty() || k.is_empty()) {
        return Err(ApiError::field(
            "column",
            format!("a column is header or header:kind, not {header:?}:{kind:?}"),
        ));
    }
    Ok(columns)
}

/// Bulk check of a campaign file: the body is CSV with a header row; the answer is the
/// same file with a last column `suppressed`: `yes` when a checked column's identity is
/// on the list, `unreadable` when none is and one cannot be read (a phone number without
/// country code…), `no` otherwise. Streamed both ways: a file of any length, in
/// constant memory.
#[utoipa::path(post, path = "/v1/suppression/check.csv", tag = "suppression",
    params(("controller_id" = String, Query), ("column" = Vec<String>, Query, min_items = 1,
                description = "header, or header:kind (a header that is not the kind's name); repeated for several columns"),
           ("digests" = Option<bool>, Query, description = "the cells hold SHA-256 digests of normalised values")),
    request_body(description = "CSV with a header row (whatever the Content-Type)",
        content((String = "text/csv"), (String = "text/plain"))),
    responses((status = 200, content_type = "text/csv", body = String), (status = 409, description = "The list's entries are keyed with another identity hash key: nothing can be matched", body = super::ErrorBody)), security(("bearer" = [])))]
pub async fn check_suppression_csv(
    State(app): State<Arc<App>>,
    caller: Caller,
    Query(query): Query<Vec<(String, String)>>,
    body: Body,
) -> Result<Response, ApiError> {
    require(&caller, &[Role::Admin, Role::Dpo, Role::Controller])?;
    let known = ["controller_id", "column", "digests"];
    if let Some((unknown, _)) = query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(ApiError::BadRequest {
            field: Some(unknown.clone()),
            message: format!("unknown parameter {unknown:?}; known: {}", known.join(", ")),
        });
    }
    let params: HashMap<&str, &str> = query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let controller_id = params
        .get("controller_id")
        .map(|c| (*c).to_owned())
        .ok_or_else(|| ApiError::BadRequest {
            field: Some("controller_id".into()),
            message: "controller_id is required".into(),
        })?;
    let digests = match params.get("digests").copied() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest {
                field: Some("digests".into()),
                message: format!("digests must be true or false, not {other:?}"),
            });
        }
    };
    let columns = csv_columns(&query)?;
    let list = list_named(&app, &caller, &controller_id).await?;
    known_kinds(
        &app,
        &controller_id,
        columns.iter().map(|(_, kind)| kind.as_str()),
        "column",
    )
    .await?;
    // Each bulk check holds a blocking thread while it runs: at most two at once, the
    // others wait their turn.
    let turn = BULK_CHECKS
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let listed = Arc::new(suppression::all(&app.store, &controller_id).await?);

    // The body's chunks go to the blocking thread through a bounded channel (the upload
    // waits while the thread is behind), the flagged file comes back the same way.
    let (chunks, input) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(16);
    let (output, answer) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (header, header_checked) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the body: {e}"));
            let failed = chunk.is_err();
            if chunks.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let job = Flag {
        app: app.clone(),
        listed,
        columns,
        digests,
        region: list.phone_region.clone(),
    };
    let counted = tokio::task::spawn_blocking(move || {
        let failed = output.clone();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.run(ChunkReader::new(input), header, output)
        }));
        run.unwrap_or_else(|_| {
            // The answer must not end as if the file were complete.
            let _ = failed.blocking_send(Err(std::io::Error::other(
                "the bulk check stopped on an internal error",
            )));
            Tally::default()
        })
    });
    match header_checked.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the bulk check stopped before reading the header"
            )));
        }
    }
    // The check is recorded when the thread is done, whether the file was read through
    // or not (the client left, a row could not be read).
    let (app_done, caller_done) = (app.clone(), caller.clone());
    tokio::spawn(async move {
        let tally = counted.await.unwrap_or_default();
        drop(turn);
        let recorded = audit_bulk(&app_done, &caller_done, &controller_id, &tally).await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "recording a bulk suppression check failed");
        }
    });
    let stream = futures::stream::unfold(answer, |mut answer| async move {
        answer.recv().await.map(|chunk| (chunk, answer))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Bulk checks running at once in this process.
static BULK_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What a bulk check read: rows flagged and found, and whether it read the whole file.
#[derive(Debug, Default)]
struct Tally {
    rows: usize,
    suppressed: usize,
    complete: bool,
}

async fn audit_bulk(
    app: &App,
    caller: &Caller,
    controller_id: &str,
    tally: &Tally,
) -> Result<(), ApiError> {
    let mut tx = app.store.begin().await?;
    audit::append(
        &mut tx,
        &caller.actor(),
        "suppression.checked",
        None,
        json!({ "controller_id": controller_id, "checked": tally.rows, "suppressed": tally.suppressed,
                "bulk": true, "complete": tally.complete }),
    );
    tx.commit().await?;
    Ok(())
}

/// The blocking half of a bulk check.
struct Flag {
    app: Arc<App>,
    listed: Arc<HashSet<String>>,
    columns: Vec<(String, String)>,
    digests: bool,
    region: Option<String>,
}

impl Flag {
    /// Reads the file, writes it back flagged; returns what it read.
    fn run(
        self,
        input: ChunkReader,
        header: tokio::sync::oneshot::Sender<Result<(), ApiError>>,
        output: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Tally {
        let mut tally = Tally::default();
        let since_record = input.since_record.clone();
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let headers = match reader.byte_headers() {
            Ok(headers) => headers.clone(),
            Err(e) => {
                let _ = header.send(Err(ApiError::field(
                    "body",
                    format!("the body is not CSV with a header row: {e}"),
                )));
                return tally;
            }
        };
        let mut places = Vec::new();
        for (name, kind) in &self.columns {
            let Some(at) = headers.iter().position(|h| h == name.as_bytes()) else {
                let names: Vec<String> = headers
                    .iter()
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .collect();
                let _ = header.send(Err(ApiError::field(
                    "column",
                    format!(
                        "the file has no column {name:?}; its header row names: {}",
                        names.join(", ")
                    ),
                )));
                return tally;
            };
            places.push((at, kind.clone()));
        }
        if header.send(Ok(())).is_err() {
            return tally;
        }
        let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(Sink {
            buffer: Vec::with_capacity(Sink::CHUNK),
            output: output.clone(),
        });
        let mut first = headers.clone();
        first.push_field(b"suppressed");
        if writer.write_byte_record(&first).is_err() {
            return tally;
        }
        since_record.store(0, std::sync::atomic::Ordering::Relaxed);
        let width = headers.len();
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => since_record.store(0, std::sync::atomic::Ordering::Relaxed),
                Ok(false) => break,
                Err(e) => {
                    // Whatever was flagged so far is sent first, then the answer breaks off.
                    let _ = writer.flush();
                    let _ = output.blocking_send(Err(std::io::Error::other(format!(
                        "row {}: {e}",
                        tally.rows + 1
                    ))));
                    return tally;
                }
            }
            tally.rows += 1;
            let flag = if record.len() == width {
                self.flag(&record, &places)
            } else {
                // A row that does not line up with the header: its cells may not be
                // what the header names.
                "unreadable"
            };
            if flag == "yes" {
                tally.suppressed += 1;
            }
            record.push_field(flag.as_bytes());
            // Fails only when the client has gone.
            if writer.write_byte_record(&record).is_err() {
                return tally;
            }
        }
        tally.complete = writer.flush().is_ok();
        tally
    }

    /// `yes` when a checked cell is on the list; otherwise `unreadable` when one cannot
    /// be read (not UTF-8, not a phone number…), `empty` when every one is blank, `no`.
    fn flag(&self, record: &csv::ByteRecord, places: &[(usize, String)]) -> &'static str {
        let (mut unreadable, mut read) = (false, false);
        for (at, kind) in places {
            let Ok(cell) = std::str::from_utf8(record.get(*at).unwrap_or_default()) else {
                unreadable = true;
                continue;
            };
            if cell.trim().is_empty() {
                continue;
            }
            read = true;
            let entry = if self.digests {
                suppression::parse_digest(cell).map(|d| Entry::of(&self.app.keys, kind, &d))
            } else {
                Entry::of_value(&self.app.keys, kind, cell, self.region.as_deref())
            };
            match entry {
                Ok(entry) => {
                    if self.listed.contains(&entry.hash) {
                        return "yes";
                    }
                }
                Err(_) => unreadable = true,
            }
        }
        if unreadable {
            "unreadable"
        } else if read {
            "no"
        } else {
            "empty"
        }
    }
}

/// Where the flagged file is written: chunks handed to the answer's stream.
struct Sink {
    buffer: Vec<u8>,
    output: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Sink {
    const CHUNK: usize = 64 << 10;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(Self::CHUNK),
        ));
        self.output
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client has gone"))
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The largest row a campaign file may have: the CSV reader holds a whole record, so a
/// quote never closed must not make it hold the rest of the body.
const MAX_RECORD: usize = 64 << 10;

/// A `Read` over the chunks of a request body handed over from the async side, which
/// refuses to read more than [`MAX_RECORD`] (and the reader's read-ahead) since the
/// reader last took a whole record (`since_record`, reset by [`Flag::run`]).
struct ChunkReader {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    since_record: Arc<std::sync::atomic::AtomicUsize>,
}

impl ChunkReader {
    fn new(chunks: tokio::sync::mpsc::Receiver<Result<Bytes, String>>) -> Self {
        ChunkReader {
            chunks,
            current: Bytes::new(),
            since_record: Arc::default(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let taken = self.current.split_to(n);
        // The CSV reader reads ahead by at most its buffer (8 KiB) past a record.
        if self.since_record.fetch_add(n, Ordering::Relaxed) + n > MAX_RECORD + (8 << 10) {
            return Err(std::io::Error::other(format!(
                "a row is longer than {} KiB (a quote never closed?)",
                MAX_RECORD >> 10
            )));
        }
        buf[..n].copy_from_slice(&taken);
        Ok(n)
    }
}
