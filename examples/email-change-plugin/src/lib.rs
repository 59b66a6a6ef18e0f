//! An example connector written by hand with the SDK's HTTP helpers, for an API whose
//! flows the declarative REST connector cannot describe: in the demo helpdesk API
//! (`oubli demo api`) a contact's e-mail address changes in three steps, `POST
//! /contacts/{id}/emails` (the new address, unverified, answered with a token), `POST
//! …/emails/verify` with that token, then `POST …/emails/primary`. Other fields change
//! with a `PATCH`. It locates, exports, rectifies and erases contacts found by e-mail.
//!
//! Its configuration (`config.api_url`, the API's root, e.g. `http://127.0.0.1:8089/api`)
//! and the bearer token (the system's secret `api_token`, which only the host sees) are
//! all it needs. Build it with the other plugins (`cargo build --release --target
//! wasm32-wasip2` in `plugins/`): it is `oubli_example_email_change.wasm`.
#![forbid(unsafe_code)]

use oubli_connector::http::{self, Method, Request, Response, Retry};
use oubli_connector::{
    Action, Change, Connector, Erased, Error, Field, Info, MatchKind, Outcome, Page,
    PersonalRecord, RecordRef, Rectified, Result, Subject, config, export_connector,
};
use serde_json::{Value, json};

struct EmailChange;

/// The fields of a contact that are exported and may be rectified.
const FIELDS: [(&str, &str); 4] = [
    ("email", "contact"),
    ("name", "identity"),
    ("phone", "contact"),
    ("newsletter", "marketing"),
];

fn base() -> Result<String> {
    let url = config::require("api_url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::InvalidConfig(
            "config.api_url: the API's root, an http:// or https:// URL".into(),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Sends a request with the bearer token and JSON accepted; an unsuccessful status is
/// an error naming `what` (never the URL: it may hold the e-mail address).
fn send(
    method: Method,
    url: String,
    body: Option<&Value>,
    what: &str,
    hide: &[&str],
) -> Result<Response> {
    let mut request = Request::new(method, url)
        .header("authorization", "Bearer {{secret:api_token}}")
        .header("accept", "application/json");
    if let Some(body) = body {
        request = request.json(body);
    }
    let retry = Retry {
        attempts: 3,
        max_wait_seconds: 10,
    };
    http::send_retrying(&request, retry)?.error_for_status_of(what, hide)
}

/// The subject's contacts: those the API's (loose) search returns whose `email` is the
/// subject's, in any case.
fn contacts(subject: &Subject) -> Result<Vec<Value>> {
    let Some(email) = subject.identity("email").map(str::trim) else {
        return Err(subject.unsearchable(["email"]));
    };
    let base = base()?;
    let mut found = Vec::new();
    for page in 1.. {
        if page > 1000 {
            return Err(Error::Failed(
                "the contact search still had pages after 1,000: refused rather than cut short"
                    .into(),
            ));
        }
        let url = format!(
            "{base}/contacts?email={}&page={page}&per_page=50",
            http::encode(email)
        );
        let answer = send(Method::Get, url, None, "GET /contacts", &[email])?.json()?;
        let Some(results) = answer["data"].as_array().cloned() else {
            return Err(Error::Failed(
                "the contact search answered no `data` array: nothing can be said about who is there".into(),
            ));
        };
        let more = results.len() >= 50;
        found.extend(results.into_iter().filter(|c| {
            c["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        }));
        if !more {
            break;
        }
    }
    Ok(found)
}

fn id_of(contact: &Value) -> Result<String> {
    contact["id"]
        .as_str()
        .filter(|id| !id.is_empty() && *id != "." && *id != "..")
        .map(str::to_owned)
        .ok_or_else(|| Error::Failed("a contact without a usable id".into()))
}

/// Changes a contact's e-mail address in the API's three steps.
fn change_email(base: &str, id: &str, new: &str, hide: &[&str]) -> Result<()> {
    let emails = format!("{base}/contacts/{}/emails", http::encode(id));
    let added = send(
        Method::Post,
        emails.clone(),
        Some(&json!({ "email": new })),
        "POST /contacts/{id}/emails",
        hide,
    )?
    .json()?;
    let token = added["token"]
        .as_str()
        .ok_or_else(|| Error::Failed("adding the address answered no verification token".into()))?;
    send(
        Method::Post,
        format!("{emails}/verify"),
        Some(&json!({ "token": token })),
        "POST /contacts/{id}/emails/verify",
        hide,
    )?;
    send(
        Method::Post,
        format!("{emails}/primary"),
        Some(&json!({ "email": new })),
        "POST /contacts/{id}/emails/primary",
        hide,
    )?;
    Ok(())
}

impl Connector for EmailChange {
    fn describe() -> Info {
        Info {
            name: "example-email-change".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Demo helpdesk contacts, with the API's three-step e-mail change".into(),
            actions: vec![
                Action::Locate,
                Action::Access,
                Action::Rectify,
                Action::Erase,
            ],
            identity_kinds: vec!["email".into()],
            categories: FIELDS.iter().map(|(_, c)| (*c).to_owned()).collect(),
        }
    }

    fn validate() -> Result<()> {
        base().map(|_| ())
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        let categories: Vec<String> = FIELDS.iter().map(|(_, c)| (*c).to_owned()).collect();
        contacts(&subject)?
            .iter()
            .map(|c| {
                let how = if c["email"].as_str() == subject.identity("email").map(str::trim) {
                    MatchKind::Exact
                } else {
                    MatchKind::Normalised
                };
                Ok(RecordRef::new("contacts", id_of(c)?, categories.clone())
                    .matched_by("email", "email", how))
            })
            .collect()
    }

    fn access(subject: Subject, _cursor: Option<String>) -> Result<Page> {
        let records = contacts(&subject)?
            .iter()
            .map(|c| {
                Ok(PersonalRecord {
                    collection: "contacts".into(),
                    key: id_of(c)?,
                    fields: FIELDS
                        .iter()
                        .map(|(name, category)| Field::json(name, c[*name].clone(), Some(category)))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            records,
            next: None,
        })
    }

    fn rectify(subject: Subject, changes: Vec<Change>) -> Result<Rectified> {
        let base = base()?;
        let mut not_applicable = Vec::new();
        let mut email = None;
        let mut patch = serde_json::Map::new();
        for (position, change) in changes.iter().enumerate() {
            let known = FIELDS.iter().any(|(name, _)| *name == change.field);
            if !change.targets("contacts") || !known {
                not_applicable.push(position as u32);
                continue;
            }
            let value = change.parsed_value()?;
            if change.field == "email" {
                let new = value.as_str().filter(|e| e.contains('@')).ok_or_else(|| {
                    Error::Failed("the new e-mail address is not an address".into())
                })?;
                email = Some(new.to_owned());
            } else {
                patch.insert(change.field.clone(), value);
            }
        }
        if patch.is_empty() && email.is_none() {
            // Nothing here to change: nothing is reported changed.
            return Ok(Rectified {
                changed: Vec::new(),
                not_applicable,
            });
        }
        // Every contact first: the e-mail change would hide the others from the search.
        let found = contacts(&subject)?;
        let mut hide: Vec<&str> = subject
            .identities
            .iter()
            .map(|i| i.value.as_str())
            .collect();
        if let Some(new) = &email {
            hide.push(new);
        }
        let mut changed = Vec::new();
        for contact in &found {
            let id = id_of(contact)?;
            if !patch.is_empty() {
                send(
                    Method::Patch,
                    format!("{base}/contacts/{}", http::encode(&id)),
                    Some(&Value::Object(patch.clone())),
                    "PATCH /contacts/{id}",
                    &hide,
                )?;
            }
            if let Some(new) = &email {
                change_email(&base, &id, new, &hide)?;
            }
            changed.push(RecordRef::new("contacts", id, Vec::new()));
        }
        Ok(Rectified {
            changed,
            not_applicable,
        })
    }

    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        let base = base()?;
        let hide: Vec<&str> = subject
            .identities
            .iter()
            .map(|i| i.value.as_str())
            .collect();
        let mut erased = Vec::new();
        for contact in contacts(&subject)? {
            let id = id_of(&contact)?;
            let response = http::send_retrying(
                &Request::new(
                    Method::Delete,
                    format!("{base}/contacts/{}", http::encode(&id)),
                )
                .header("authorization", "Bearer {{secret:api_token}}"),
                Retry {
                    attempts: 3,
                    max_wait_seconds: 10,
                },
            )?;
            // Gone already (a retry after a crash): the end state is the same.
            if response.status != 404 {
                response.error_for_status_of("DELETE /contacts/{id}", &hide)?;
            }
            erased.push(Erased {
                collection: "contacts".into(),
                key: id,
                outcome: Outcome::Deleted,
            });
        }
        Ok(erased)
    }
}

export_connector!(EmailChange);
