//! Evidence of what oubli did: signed erasure certificates, access packages, and the
//! retention of both; the keys behind them are [`crate::crypto`]'s.
//!
//! An erasure certificate (the "PV de destruction" a processor sends its client) states,
//! per connected system, which plugin (name, version, digest) erased what, by collection:
//! how many records were deleted, anonymised or retained and under which legal basis, and
//! what the verifying `locate` found afterwards, what each system searched by, and, when
//! no system found anything, that nothing matched (never dressed as an erasure). It holds no personal data: the subject's
//! identities appear only as keyed hashes, and records only as counts. It is signed with
//! Ed25519 and verifiable offline with the public key served at `/v1/keys`.

pub mod certificate_html;
pub mod destruction;
pub mod package;
pub mod retention;

use crate::controller;
use crate::crypto::Keys;
use crate::queue;
use crate::request::rows::Request;
use crate::request::{Kind, Status};
use crate::store::Store;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What the evidence jobs and products need of the running service: its database, its
/// keys and its settings (the package's lifetime, the retention periods).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a Store,
    pub keys: &'a Keys,
    pub config: &'a crate::config::Config,
}

/// What a system was asked to search by: the identity kinds the request gave, and which
/// of them its plugin says it can search by. Whether the system's configuration maps each
/// of those is the connector's to check (the SQL and REST connectors fail a subject none
/// of whose kinds they map); how they match is the configuration's.
pub(crate) fn search_scope(
    request: &Request,
    plugin: Option<&controller::RegisteredPlugin>,
) -> Value {
    let given: Vec<&str> = request.identities.iter().map(|i| i.kind.as_str()).collect();
    let supported: Vec<&str> = plugin
        .map(|p| p.info.identity_kinds.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let (searchable, not_searchable): (Vec<&str>, Vec<&str>) =
        given.iter().partition(|kind| supported.contains(kind));
    json!({
        "identity_kinds_given": given,
        "identity_kinds_the_plugin_can_search": searchable,
        "identity_kinds_the_plugin_cannot_search": not_searchable,
        "matching": "as the system's configuration defines",
        "contract": plugin.map(|p| p.contract.clone()),
    })
}

/// What an erasure did in one collection: records by outcome, the legal bases of those
/// retained, the fields masked.
#[derive(Default)]
pub(crate) struct Tally {
    pub deleted: u64,
    pub anonymised: u64,
    pub retained: u64,
    pub legal_bases: Vec<String>,
    /// The fields masked in the anonymised and retained records (names only).
    pub masked: std::collections::BTreeSet<String>,
}

impl Tally {
    /// Counts the `erased` entries of a recorded result, by collection.
    pub(crate) fn add_all(collections: &mut BTreeMap<String, Tally>, result: &Value) {
        for erased in result["erased"].as_array().into_iter().flatten() {
            let tally = collections
                .entry(erased["collection"].as_str().unwrap_or_default().to_owned())
                .or_default();
            tally.masked.extend(
                erased["masked"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.as_str().map(str::to_owned)),
            );
            match erased["outcome"].as_str() {
                Some("deleted") => tally.deleted += 1,
                Some("anonymised") => tally.anonymised += 1,
                _ => {
                    tally.retained += 1;
                    let basis = erased["legal_basis"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    if !tally.legal_bases.contains(&basis) {
                        tally.legal_bases.push(basis);
                    }
                }
            }
        }
    }
}

/// A request's identities as the evidence shows them: kinds and keyed hashes (after the
/// retention period only the hash is left, computed the same way).
pub(crate) fn hashed_identities(keys: &Keys, request: &Request) -> Vec<Value> {
    request
        .identities
        .iter()
        .map(|i| {
            let hash = match (&i.hmac_sha256, &i.value) {
                (Some(hash), _) => hash.clone(),
                (None, value) => keys.identity_hash(&i.kind, value.as_deref().unwrap_or("")),
            };
            json!({ "kind": i.kind, "hmac_sha256": hash })
        })
        .collect()
}

/// Builds and signs the erasure certificate of a completed erasure request.
///
/// # Errors
/// `Ok(Err(reason))` when the request is not a completed erasure (for a 409); the outer
/// error when the database cannot be read.
pub async fn erasure_certificate(
    store: &Store,
    keys: &Keys,
    request: &Request,
) -> anyhow::Result<Result<Value, String>> {
    if request.kind != Kind::Erasure {
        return Ok(Err(format!(
            "a certificate is issued for erasure requests; this one is a {} request",
            request.kind
        )));
    }
    if request.status != Status::Completed {
        return Ok(Err(format!(
            "the certificate is issued once the erasure is completed; the request is {}",
            request.status.as_str().replace('_', " ")
        )));
    }
    // A certificate names the subject: without the identities it would name no one.
    if let Some(error) = &request.subject_error {
        return Ok(Err(format!("no certificate can be issued now: {error}")));
    }
    let controller = controller::get_controller(store, &request.controller_id)
        .await?
        .context("the request's controller")?;
    let attempts = attempts_by_system(store, &request.id).await?;
    let mut systems = Vec::new();
    // Unknown (null) when a result predates the located records, or no system searched.
    let mut records_found = Some(0);
    for (system_id, system_name, result) in queue::results(store, &keys.sealer, &request.id).await?
    {
        let digest = result["plugin"].as_str().unwrap_or_default().to_owned();
        let plugin = controller::get_plugin(store, &digest).await?;
        let mut collections: BTreeMap<String, Tally> = BTreeMap::new();
        Tally::add_all(&mut collections, &result);
        let remaining = result["remaining"].as_array().map_or(0, Vec::len);
        // Results of runs before the located records were stored have none.
        let located = result["located"].as_array().map(Vec::len);
        let places: std::collections::BTreeSet<(&str, &str)> = ["located", "erased"]
            .iter()
            .flat_map(|part| result[*part].as_array().into_iter().flatten())
            .map(|r| {
                (
                    r["collection"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        records_found = match (records_found, located) {
            (Some(n), Some(_)) => Some(n + places.len()),
            _ => None,
        };
        // The counts are those of the run that succeeded; say so when runs before it may
        // have erased records too (a crash or a failure after the erasure itself).
        let outcomes = attempts.get(&system_id).cloned().unwrap_or_default();
        let mut earlier: BTreeMap<String, u64> = BTreeMap::new();
        for outcome in outcomes.iter().take(outcomes.len().saturating_sub(1)) {
            *earlier.entry(outcome.clone()).or_default() += 1;
        }
        let runs = if earlier.is_empty() {
            json!({ "attempts": outcomes.len() })
        } else {
            json!({
                "attempts": outcomes.len(),
                "earlier_attempts": earlier,
                "note": "the counts are those of the last attempt; earlier attempts (interrupted, or failed after erasing) may have erased records, which are not counted; the verification after the last attempt shows what is left",
            })
        };
        let read_back = &result["verification"];
        let method = if read_back["method"] == "verify" {
            "every located record read back by key (verify, contract 0.2), then locate after erase"
        } else {
            "locate after erase: verified by search only"
        };
        let mut verification = json!({
            "method": method,
            "records_remaining": remaining,
            "all_remaining_retained_with_legal_basis": true,
        });
        if read_back["method"] == "verify" {
            verification["read_back"] = json!({
                "records": read_back["records"],
                "gone": read_back["gone"],
                "cleared": read_back["cleared"],
                "retained": read_back["retained"],
                "not_reported_by_erase": read_back["unreported"],
            });
        }
        if let Some(located) = located {
            verification["records_located_before_erasure"] = located.into();
            // Records read back gone or cleared without `erase` reporting them count as
            // unreported too.
            let unreported = result["verification"]["unreported"].as_u64().unwrap_or(0);
            verification["all_located_reported_by_erase"] =
                (result["unreported"].is_null() && unreported == 0).into();
        }
        if !result["unreported"].is_null() {
            verification["unreported"] = result["unreported"].clone();
        }
        let mut system = json!({
            "id": system_id,
            "name": system_name,
            "plugin": {
                "name": plugin.as_ref().map(|p| p.info.name.clone()),
                "version": plugin.as_ref().map(|p| p.info.version.clone()),
                "digest": digest,
            },
            "collections": collections.into_iter().map(|(name, t)| json!({
                "name": name,
                "deleted": t.deleted,
                "anonymised": t.anonymised,
                "retained": t.retained,
                "legal_bases": t.legal_bases,
                "masked_fields": t.masked,
            })).collect::<Vec<_>>(),
            "runs": runs,
            "search": search_scope(request, plugin.as_ref()),
            "verification": verification,
        });
        if !result["sweep"].is_null() {
            let mut sweep = result["sweep"].clone();
            // Nothing is claimed for a sweep that covered nothing.
            sweep["found_outside_retained_records"] =
                if sweep["covered"].as_array().is_some_and(|c| !c.is_empty()) {
                    0.into()
                } else {
                    Value::Null
                };
            if sweep["cut_short"] == true {
                sweep["note"] = "the sweep's budget ran out before it searched everything: what it did not reach is not covered".into();
            } else if sweep["skipped"].as_array().is_some_and(|s| !s.is_empty()) {
                sweep["note"] =
                    "the sweep could not search what `skipped` names: that is not covered".into();
            }
            system["sweep"] = sweep;
        }
        if located == Some(0) && result["erased"].as_array().is_none_or(Vec::is_empty) {
            system["note"] = format!(
                "no record matched the subject in system {system_name}: nothing was erased there"
            )
            .into();
        }
        systems.push(system);
    }
    let identities = hashed_identities(keys, request);
    if systems.is_empty() {
        records_found = None;
    }
    // Art. 19: the notices to the recipients and how each stands. While one is pending
    // the certificate says when it looked (`as_of`); once all are delivered or given up
    // it no longer changes.
    let notices = crate::notify::recipients::told(store, &request.id).await?;
    let mut recipient_notices = json!({ "notices": notices });
    if notices.iter().any(|n| n.status == "pending") {
        recipient_notices["as_of"] = json!(crate::store::to_rfc3339(crate::store::now_ms()));
    }
    let document = json!({
        "type": "oubli.erasure-certificate",
        "version": 3,
        "issuer": format!("oubli {}", env!("CARGO_PKG_VERSION")),
        "request": {
            "id": request.id,
            "external_ref": request.external_ref,
            "received_at": request.received_at,
            "completed_at": request.completed_at,
        },
        "controller": { "id": controller.id, "name": controller.name },
        "subject": { "identities": identities },
        "records_found": records_found,
        "nothing_found": records_found.map(|n| n == 0),
        "systems": systems,
        "recipient_notices": recipient_notices,
    });
    // Signed once what it attests is on disk, relaxed commits included (a task's outcome
    // is one): see `store::flush`.
    store.everything_on_disk().await?;
    Ok(Ok(keys.sign(document)))
}

/// The outcomes of the attempts of a request's tasks, by system, in the order they
/// started; an attempt still without an outcome (its process died) is `unfinished`.
async fn attempts_by_system(
    store: &Store,
    request_id: &str,
) -> sqlx::Result<BTreeMap<String, Vec<String>>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT t.system_id, a.outcome FROM task_attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE t.request_id = $1 ORDER BY a.started_at, a.attempt",
    )
    .bind(request_id)
    .fetch_all(&store.read)
    .await?;
    let mut by_system: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (system, outcome) in rows {
        by_system
            .entry(system)
            .or_default()
            .push(outcome.unwrap_or_else(|| "unfinished".into()));
    }
    Ok(by_system)
}
