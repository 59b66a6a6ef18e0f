//! The access package of a completed access request (Art. 15 and Art. 20): every record
//! each connected system exported, per system and collection, with each system's Art. 15
//! information, as JSON and as an HTML summary. The records are sealed at rest (see
//! [`crate::crypto::seal`]); the package can be downloaded until it expires, `package_ttl_days`
//! after completion, and the purge job then deletes the records.

use super::Context;
use crate::request::rows::Request;
use crate::request::{Kind, Status};
use crate::store::now_ms;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

/// Why there is no package to give.
#[derive(Debug)]
pub enum Unavailable {
    /// Not an access request, or not completed yet.
    NotReady(String),
    /// Expired, and purged or about to be.
    Expired(String),
}

/// When the package of a request completed at `completed_at` expires.
pub fn expires_at(ctx: Context<'_>, completed_at: DateTime<Utc>) -> DateTime<Utc> {
    completed_at + Duration::days(ctx.config.package_ttl_days as i64)
}

/// The machine-readable package.
///
/// # Errors
/// When the database cannot be read or a sealed result cannot be opened.
pub async fn build(
    ctx: Context<'_>,
    request: &Request,
) -> anyhow::Result<Result<Value, Unavailable>> {
    if request.kind != Kind::Access {
        return Ok(Err(Unavailable::NotReady(format!(
            "an access package is made for access requests; this one is a {} request",
            request.kind
        ))));
    }
    let (Status::Completed, Some(completed_at)) = (request.status, request.completed_at) else {
        return Ok(Err(Unavailable::NotReady(format!(
            "the access package is ready once the request is completed; it is {}",
            request.status.as_str().replace('_', " ")
        ))));
    };
    let expires = expires_at(ctx, completed_at);
    let purged: Option<i64> =
        sqlx::query_scalar("SELECT package_purged_at FROM requests WHERE id = $1")
            .bind(&request.id)
            .fetch_one(&ctx.store.read)
            .await?;
    if purged.is_some() || expires <= Utc::now() {
        return Ok(Err(Unavailable::Expired(format!(
            "the access package expired on {} and its records were deleted; submit a new access request to export the data again",
            expires.to_rfc3339()
        ))));
    }
    let controller = crate::controller::get_controller(ctx.store, &request.controller_id).await?;
    let mut systems = Vec::new();
    for (system_id, name, result) in
        crate::queue::results(ctx.store, &ctx.keys.sealer, &request.id).await?
    {
        let connected = crate::controller::get_system(ctx.store, &system_id).await?;
        // The plugin that made the export (results from before it was recorded: the
        // system's plugin now).
        let digest = match (result["plugin"].as_str(), &connected) {
            (Some(digest), _) => Some(digest.to_owned()),
            (None, Some(system)) => Some(system.plugin.clone()),
            (None, None) => None,
        };
        let plugin = match digest {
            Some(digest) => crate::controller::get_plugin(ctx.store, &digest).await?,
            None => None,
        };
        let article15 = connected.map(|s| s.article15).unwrap_or_default();
        if result["records_deleted"] == true {
            return Ok(Err(Unavailable::Expired(format!(
                "the records system {name} exported were deleted; submit a new access request to export the data again"
            ))));
        }
        let records: Vec<Value> = result["records"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|record| {
                let fields: Vec<Value> = record["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        let text = f["value"].as_str().unwrap_or("null");
                        json!({
                            "name": f["name"],
                            "value": serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned())),
                            "category": f["category"],
                        })
                    })
                    .collect();
                json!({ "collection": record["collection"], "key": record["key"], "fields": fields })
            })
            .collect();
        let mut system = json!({
            "system": name,
            "article15": article15,
            "search": super::search_scope(request, plugin.as_ref()),
            "records": records,
        });
        if records.is_empty() {
            system["note"] =
                format!("no record in system {name} matched the identities given in the request")
                    .into();
        }
        systems.push(system);
    }
    Ok(Ok(json!({
        "format": "oubli-access-package/1",
        "request_id": request.id,
        "controller": controller.map(|c| json!({ "id": c.id, "name": c.name })),
        "received_at": request.received_at,
        "completed_at": completed_at,
        "expires_at": expires,
        "systems": systems,
        "rights": RIGHTS.iter().map(|(article, right)| json!({ "article": article, "right": right })).collect::<Vec<_>>(),
    })))
}

/// The subject's rights, stated in the package itself (JSON) and in its summary (HTML).
const RIGHTS: &[(&str, &str)] = &[
    ("Art. 16", "to have the data rectified"),
    ("Art. 17", "to have the data erased"),
    ("Art. 18", "to have its processing restricted"),
    (
        "Art. 20",
        "to receive it in a structured, machine-readable form",
    ),
    ("Art. 21", "to object to its processing"),
    (
        "Art. 77",
        "to lodge a complaint with a supervisory authority",
    ),
];

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => "<em>empty</em>".into(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(", "),
        other => escape(&other.to_string()),
    }
}

/// The human-readable summary of a package: what each system holds, why, for how long,
/// and the subject's rights.
pub fn html(package: &Value) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Your personal data</title>\
         <style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}table{border-collapse:collapse;margin:.5em 0 1.5em}\
         td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}th{background:#f4f4f4}</style></head><body>\n",
    );
    let controller = package["controller"]["name"]
        .as_str()
        .unwrap_or("the controller");
    page.push_str(&format!(
        "<h1>Your personal data held by {}</h1>\n<p>Answer to the access request {} (Art. 15 GDPR), completed on {}. \
         This copy can be downloaded until {}; a machine-readable copy (JSON, Art. 20) comes with it.</p>\n",
        escape(controller),
        show(&package["request_id"]),
        show(&package["completed_at"]),
        show(&package["expires_at"]),
    ));
    for system in package["systems"].as_array().into_iter().flatten() {
        let info = &system["article15"];
        page.push_str(&format!("<h2>{}</h2>\n<table>\n", show(&system["system"])));
        for (label, key) in [
            ("Purposes", "purposes"),
            ("Categories of data", "categories"),
            ("Recipients", "recipients"),
            ("Kept for", "retention"),
            ("Obtained from", "source"),
        ] {
            page.push_str(&format!(
                "<tr><th>{label}</th><td>{}</td></tr>\n",
                show(&info[key])
            ));
        }
        page.push_str("</table>\n");
        let records = system["records"].as_array().cloned().unwrap_or_default();
        if records.is_empty() {
            page.push_str(&format!(
                "<p>No record in this system matched the identities given in the request ({}).</p>\n",
                show(&system["search"]["identity_kinds_given"])
            ));
        }
        for record in records {
            page.push_str(&format!(
                "<h3>{} {}</h3>\n<table><tr><th>Field</th><th>Value</th><th>Category</th></tr>\n",
                show(&record["collection"]),
                show(&record["key"])
            ));
            for field in record["fields"].as_array().into_iter().flatten() {
                page.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    show(&field["name"]),
                    show(&field["value"]),
                    show(&field["category"])
                ));
            }
            page.push_str("</table>\n");
        }
    }
    page.push_str("<h2>Your rights</h2>\n<ul>\n");
    for (article, right) in RIGHTS {
        page.push_str(&format!(
            "<li>{} ({article})</li>\n",
            escape(&format!("You have the right {right}"))
        ));
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

/// Deletes the records of every access package that expired, and records it.
///
/// # Errors
/// When the database fails.
pub async fn purge_expired(ctx: Context<'_>) -> anyhow::Result<usize> {
    let ttl_ms = ctx.config.package_ttl_days as i64 * 86_400_000;
    let expired: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM requests WHERE kind = 'access' AND status = 'completed' \
         AND package_purged_at IS NULL AND completed_at <= $1",
    )
    .bind(now_ms() - ttl_ms)
    .fetch_all(&ctx.store.read)
    .await?;
    let mut purged = 0;
    for id in &expired {
        let mut tx = ctx.store.begin().await?;
        // The purge job of another process may have taken this one since the read.
        let marked = sqlx::query(
            "UPDATE requests SET package_purged_at = $1 WHERE id = $2 AND package_purged_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() == 0 {
            continue;
        }
        let cleared = sqlx::query("UPDATE tasks SET result = NULL WHERE request_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM task_pages WHERE task_id IN (SELECT id FROM tasks WHERE request_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        crate::audit::append(
            &mut tx,
            "system",
            "package.purged",
            Some(id),
            json!({ "tasks": cleared }),
        );
        tx.commit().await?;
        purged += 1;
    }
    Ok(purged)
}
