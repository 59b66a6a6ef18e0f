//! The destruction report ("PV de destruction") of the erasures a controller's retention
//! rules filed over a period: per system and collection, how many records were deleted,
//! anonymised or retained and under which legal bases, from the recorded results of the
//! requests that completed; how many requests are still open or failed (so that nothing
//! is counted that was not done); the subjects only as keyed hashes. Signed like a
//! certificate and verifiable with `oubli certificate verify`.
//!
//! A report covers a period (asked for at any time) or one retention run: the run's is
//! issued once every request the run filed has settled, kept as issued and sent to the
//! controller (`expiry::issue_reports`).

use super::Tally;
use super::package::escape;
use crate::crypto::Keys;
use crate::queue;
use crate::request::rows;
use crate::store::{Store, to_rfc3339};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a report covers.
pub enum Scope<'a> {
    /// The requests filed by the controller's retention rules received in `[from, to)`
    /// (milliseconds).
    Period { from: i64, to: i64 },
    /// The requests one retention run filed.
    Run(&'a Run),
}

/// A retention run as its report names it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub id: String,
    pub rule_id: String,
    pub rule: String,
    pub system_id: String,
    #[serde(skip)]
    pub started_at: i64,
    #[serde(skip)]
    pub finished_at: Option<i64>,
    /// Subjects the connector listed as expired that a request can name, each once.
    pub expired: Option<i64>,
    /// Requests it filed (new ones).
    pub filed: i64,
    /// There were more than one run files; the next run goes on.
    pub more: bool,
    /// Why it stopped early, when it did.
    pub error: Option<String>,
}

/// The signed destruction report of `scope`: the erasures filed by `controller_id`'s
/// retention rules over a period, or by one run.
///
/// # Errors
/// When the database cannot be read.
pub async fn report(
    store: &Store,
    keys: &Keys,
    controller_id: &str,
    controller_name: &str,
    scope: Scope<'_>,
) -> anyhow::Result<Value> {
    let filed: Vec<(String, String)> = match scope {
        Scope::Period { from, to } => {
            sqlx::query_as(
                "SELECT id, submitted_by FROM requests WHERE controller_id = $1 AND submitted_by LIKE 'retention:%' \
                 AND received_at >= $2 AND received_at < $3 ORDER BY id",
            )
            .bind(controller_id)
            .bind(from)
            .bind(to)
            .fetch_all(&store.read)
            .await?
        }
        Scope::Run(run) => {
            sqlx::query_as(
                "SELECT id, submitted_by FROM requests WHERE controller_id = $1 AND retention_run_id = $2 ORDER BY id",
            )
            .bind(controller_id)
            .bind(&run.id)
            .fetch_all(&store.read)
            .await?
        }
    };
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut systems: BTreeMap<String, BTreeMap<String, Tally>> = BTreeMap::new();
    let mut subjects = Vec::new();
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    for (id, by) in &filed {
        let Some(request) = rows::get(store, &keys.sealer, id).await? else {
            continue;
        };
        *rules
            .entry(by.trim_start_matches("retention:").to_owned())
            .or_default() += 1;
        *by_status
            .entry(request.status.as_str().to_owned())
            .or_default() += 1;
        let identities = super::hashed_identities(keys, &request);
        subjects
            .push(json!({ "request_id": id, "status": request.status, "identities": identities }));
        if request.status != crate::request::Status::Completed {
            continue;
        }
        for (_, system, result) in queue::results(store, &keys.sealer, id).await? {
            Tally::add_all(systems.entry(system).or_default(), &result);
        }
    }
    let completed = by_status.get("completed").copied().unwrap_or(0);
    let (period, run) = match scope {
        Scope::Period { from, to } => (
            json!({ "from": to_rfc3339(from), "to": to_rfc3339(to) }),
            Value::Null,
        ),
        Scope::Run(run) => (
            json!({ "from": to_rfc3339(run.started_at), "to": run.finished_at.map(to_rfc3339) }),
            serde_json::to_value(run)?,
        ),
    };
    let document = json!({
        "type": "oubli.destruction-report",
        "version": 2,
        "issuer": format!("oubli {}", env!("CARGO_PKG_VERSION")),
        "controller": { "id": controller_id, "name": controller_name },
        "period": period,
        "run": run,
        "as_of": to_rfc3339(crate::store::now_ms()),
        "requests": { "filed": subjects.len(), "by_status": by_status, "by_rule": rules },
        "note": (completed < subjects.len() as u64).then_some(
            "the counts are those of the completed requests only: the others are listed under subjects with their status, and nothing of them is counted as erased"),
        "systems": systems.into_iter().map(|(name, collections)| json!({
            "name": name,
            "collections": collections.into_iter().map(|(collection, t)| json!({
                "name": collection,
                "deleted": t.deleted,
                "anonymised": t.anonymised,
                "retained": t.retained,
                "legal_bases": t.legal_bases,
                "masked_fields": t.masked,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "subjects": subjects,
    });
    // Signed once what it attests is on disk (see `store::flush`).
    store.everything_on_disk().await?;
    Ok(keys.sign(document))
}

/// A printable page of a signed report.
pub fn html(signed: &Value) -> String {
    let r = &signed["certificate"];
    let text = |v: &Value| match v {
        Value::String(s) => escape(s),
        Value::Null => "—".into(),
        other => escape(&other.to_string()),
    };
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Destruction report</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}.warn{{border:2px solid #b00;padding:.5em}}</style></head><body>\n\
         <h1>Destruction report / Procès-verbal de destruction</h1>\n\
         <p>{} — {} → {}</p>\n<p>Requests filed by retention rules: {}; by status: {}</p>\n",
        text(&r["controller"]["name"]),
        text(&r["period"]["from"]),
        text(&r["period"]["to"]),
        text(&r["requests"]["filed"]),
        text(&r["requests"]["by_status"]),
    );
    if r["run"].is_object() {
        page.push_str(&format!(
            "<p>Retention run {} of the rule {}: {} subjects expired, {} erasures filed{}. As of {}.</p>\n",
            text(&r["run"]["id"]),
            text(&r["run"]["rule"]),
            text(&r["run"]["expired"]),
            text(&r["run"]["filed"]),
            r["run"]["error"]
                .as_str()
                .map(|e| format!("; it stopped early: {}", escape(e)))
                .unwrap_or_default(),
            text(&r["as_of"]),
        ));
    }
    if r["note"].is_string() {
        page.push_str(&format!("<p class=\"warn\">{}</p>\n", text(&r["note"])));
    }
    for system in r["systems"].as_array().into_iter().flatten() {
        page.push_str(&format!(
            "<h2>{}</h2>\n<table><tr><th>Collection</th><th>Deleted</th><th>Anonymised</th><th>Retained</th><th>Legal bases</th></tr>\n",
            text(&system["name"])
        ));
        for c in system["collections"].as_array().into_iter().flatten() {
            page.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                text(&c["name"]),
                text(&c["deleted"]),
                text(&c["anonymised"]),
                text(&c["retained"]),
                c["legal_bases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join("<br>")
            ));
        }
        page.push_str("</table>\n");
    }
    page.push_str(&format!(
        "<p>Signed with {} key {}: verify the JSON with <code>oubli certificate verify</code>.</p>\n</body></html>\n",
        text(&signed["signature"]["algorithm"]),
        text(&signed["signature"]["key_id"])
    ));
    page
}
