//! The demo helpdesk API: a small HTTP service holding contacts, orders, events and
//! consents, with the four pagination styles the REST connector reads (page number,
//! cursor, `Link` header, offset) and bearer authentication. `oubli demo api` serves it on
//! loopback so that `examples/rest-system.toml` can be tried; the tests run it too.
//!
//! Its search matches loosely (case-insensitive substring), as many real APIs do, so the
//! connector's exact identity check is exercised: searching `person1@example.org` also
//! returns `the.person1@example.org`.
//!
//! A contact's notes hang from it (`GET /api/contacts/{id}/notes`, then `/api/notes/{id}`)
//! and hold no identity: the connector reaches them through the contact. Like some
//! frameworks, it refuses a request body sent chunked (without `Content-Length`).
//!
//! A contact's e-mail address cannot be patched: as in many real services it changes in
//! three steps, which the declarative REST connector cannot express and the hand-written
//! plugin in `examples/email-change-plugin` does: `POST /api/contacts/{id}/emails` adds the
//! new address unverified and answers a verification token, `POST …/emails/verify` with
//! that token verifies it, and `POST …/emails/primary` makes a verified address the
//! contact's.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Results per page when the client does not say.
const PAGE_SIZE: usize = 2;

/// The service's data: collection → records, each with a string `id`.
pub struct DemoApi {
    token: String,
    records: Mutex<BTreeMap<String, Vec<Value>>>,
    /// Addresses added to contacts and not yet primary: (contact id, address, token,
    /// verified).
    pending: Mutex<Vec<(String, String, String, bool)>>,
    /// Verification tokens handed out so far, so that each is new.
    issued: std::sync::atomic::AtomicU64,
}

/// How a collection is searched and paged.
struct Spec {
    /// Query parameter → record field it searches.
    search: &'static [(&'static str, &'static str)],
    style: Style,
}

#[derive(Clone, Copy)]
enum Style {
    Page,
    Cursor,
    Link,
    Offset,
}

fn spec(collection: &str) -> Option<Spec> {
    Some(match collection {
        "contacts" => Spec {
            search: &[("email", "email"), ("phone", "phone")],
            style: Style::Page,
        },
        "orders" => Spec {
            search: &[("customer_email", "customer_email")],
            style: Style::Cursor,
        },
        "events" => Spec {
            search: &[("user", "user")],
            style: Style::Link,
        },
        "consents" => Spec {
            search: &[("email", "email")],
            style: Style::Offset,
        },
        _ => return None,
    })
}

/// The e-mail address of demo person `n`.
pub fn person_email(n: u64) -> String {
    format!("person{n}@example.org")
}

impl DemoApi {
    /// `people` persons, each with a contact, `n % 3 + 1` orders, five events and three
    /// consents; person 1 also has a look-alike contact `the.person1@example.org`.
    pub fn new(token: &str, people: u64) -> Arc<Self> {
        let mut records: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut push = |collection: &str, record: Value| {
            let list = records.entry(collection.to_owned()).or_default();
            let mut record = record;
            let singular = collection.trim_end_matches('s');
            let id = format!("{singular}-{}", list.len() + 1);
            record["id"] = json!(id);
            list.push(record);
            id
        };
        for n in 1..=people {
            let email = person_email(n);
            let contact = push(
                "contacts",
                json!({ "email": email, "name": format!("Person {n}"), "phone": format!("+33 7 00 00 {n:04}"),
                        "newsletter": n % 2 == 0, "address": { "city": "Lyon", "street": format!("{n} rue de la Paix") } }),
            );
            // Notes hang from the contact (`/contacts/{id}/notes`) and hold no identity.
            for k in 1..=2 {
                push(
                    "notes",
                    json!({ "contact_id": contact, "body": format!("Call {k} with Person {n}") }),
                );
            }
            if n == 1 {
                push(
                    "contacts",
                    json!({ "email": "the.person1@example.org", "name": "Look-alike", "phone": null, "newsletter": true,
                            "address": { "city": "Paris", "street": "1 rue du Bac" } }),
                );
            }
            for k in 0..=(n % 3) {
                push(
                    "orders",
                    json!({ "customer_email": email, "shipping_name": format!("Person {n}"), "total_cents": 1000 * (k + 1) }),
                );
            }
            for k in 0..5 {
                let kind = ["login", "view", "click"][k % 3];
                push(
                    "events",
                    json!({ "user": email, "type": kind, "at": format!("2026-01-{:02}T10:00:00Z", k + 1) }),
                );
            }
            for purpose in ["newsletter", "profiling", "partners"] {
                push(
                    "consents",
                    json!({ "email": email, "purpose": purpose, "given": n % 2 == 1 }),
                );
            }
        }
        Arc::new(DemoApi {
            token: token.to_owned(),
            records: Mutex::new(records),
            pending: Mutex::new(Vec::new()),
            issued: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The records of a collection, as they are now.
    pub fn records(&self, collection: &str) -> Vec<Value> {
        self.records
            .lock()
            .expect("records")
            .get(collection)
            .cloned()
            .unwrap_or_default()
    }

    /// The service's routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/{collection}", get(search))
            .route(
                "/api/{collection}/{id}",
                get(read).patch(update).put(update).delete(delete),
            )
            .route("/api/contacts/{id}/notes", get(notes_of))
            .route("/api/contacts/{id}/emails", axum::routing::post(add_email))
            .route(
                "/api/contacts/{id}/emails/verify",
                axum::routing::post(verify_email),
            )
            .route(
                "/api/contacts/{id}/emails/primary",
                axum::routing::post(make_primary),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                |State(api): State<Arc<DemoApi>>, request: Request, next: Next| async move {
                    if api.authorised(request.headers()) {
                        next.run(request).await
                    } else {
                        unauthorised()
                    }
                },
            ))
            // Like some frameworks, it reads no chunked body: a request body must come
            // with its Content-Length.
            .layer(axum::middleware::from_fn(
                |request: Request, next: Next| async move {
                    if request.headers().contains_key(header::TRANSFER_ENCODING) {
                        return (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({ "error": "Could not parse an empty JSON body" })),
                        )
                            .into_response();
                    }
                    next.run(request).await
                },
            ))
            .with_state(self.clone())
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Bearer {}", self.token);
        headers
            .get(header::AUTHORIZATION)
            .is_some_and(|value| value.as_bytes() == expected.as_bytes())
    }
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "error": "invalid or missing bearer token" })),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({ "error": "not found" })),
    )
        .into_response()
}

fn number(query: &HashMap<String, String>, name: &str, default: usize) -> usize {
    query
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn search(
    State(api): State<Arc<DemoApi>>,
    Path(collection): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(spec) = spec(&collection) else {
        return not_found();
    };
    let matching: Vec<Value> = api
        .records(&collection)
        .into_iter()
        .filter(|record| {
            spec.search.iter().any(|(param, field)| {
                query.get(*param).is_some_and(|wanted| {
                    record[*field]
                        .as_str()
                        .is_some_and(|v| v.to_lowercase().contains(&wanted.to_lowercase()))
                })
            })
        })
        .collect();
    let page_of = |start: usize, size: usize| -> Vec<Value> {
        matching.iter().skip(start).take(size).cloned().collect()
    };
    match spec.style {
        Style::Page => {
            let page = number(&query, "page", 1).max(1);
            let size = number(&query, "per_page", PAGE_SIZE).max(1);
            axum::Json(json!({ "data": page_of((page - 1) * size, size), "page": page }))
                .into_response()
        }
        Style::Cursor => {
            let start = query
                .get("cursor")
                .and_then(|c| c.strip_prefix("after-"))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let items = page_of(start, PAGE_SIZE);
            let end = start + items.len();
            let next = (end < matching.len()).then(|| format!("after-{end}"));
            axum::Json(json!({ "items": items, "next_cursor": next })).into_response()
        }
        Style::Link => {
            let page = number(&query, "page", 1).max(1);
            let items = page_of((page - 1) * PAGE_SIZE, PAGE_SIZE);
            let mut response = axum::Json(Value::Array(items)).into_response();
            if page * PAGE_SIZE < matching.len() {
                let mut next = url::form_urlencoded::Serializer::new(String::new());
                let mut params: Vec<_> = query.iter().filter(|(k, _)| *k != "page").collect();
                params.sort();
                for (k, v) in params {
                    next.append_pair(k, v);
                }
                next.append_pair("page", &(page + 1).to_string());
                let link = format!("</api/{collection}?{}>; rel=\"next\"", next.finish());
                if let Ok(value) = link.parse() {
                    response.headers_mut().insert(header::LINK, value);
                }
            }
            response
        }
        Style::Offset => {
            let offset = number(&query, "offset", 0);
            let limit = number(&query, "limit", PAGE_SIZE).max(1);
            axum::Json(json!({ "results": page_of(offset, limit), "total": matching.len() }))
                .into_response()
        }
    }
}

async fn read(
    State(api): State<Arc<DemoApi>>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    match api
        .records(&collection)
        .into_iter()
        .find(|r| r["id"] == json!(id))
    {
        Some(record) => axum::Json(json!({ "data": record })).into_response(),
        None => not_found(),
    }
}

/// Merges a JSON object into the record (RFC 7396 merge patch).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) if value.is_object() && existing.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

async fn update(
    State(api): State<Arc<DemoApi>>,
    Path((collection, id)): Path<(String, String)>,
    axum::Json(patch): axum::Json<Value>,
) -> Response {
    if patch.get("id").is_some_and(|v| *v != json!(id)) {
        return unprocessable("the id cannot change");
    }
    if collection == "contacts" && patch.get("email").is_some() {
        return unprocessable(
            "a contact's e-mail address changes through POST /api/contacts/{id}/emails, then …/emails/verify and …/emails/primary",
        );
    }
    let mut records = api.records.lock().expect("records");
    let Some(record) = records
        .get_mut(&collection)
        .and_then(|list| list.iter_mut().find(|r| r["id"] == json!(id)))
    else {
        return not_found();
    };
    merge(record, &patch);
    axum::Json(json!({ "data": record })).into_response()
}

/// A contact's notes.
async fn notes_of(State(api): State<Arc<DemoApi>>, Path(id): Path<String>) -> Response {
    if !contact_exists(&api, &id) {
        return not_found();
    }
    let notes: Vec<Value> = api
        .records("notes")
        .into_iter()
        .filter(|note| note["contact_id"] == json!(id))
        .collect();
    axum::Json(json!({ "data": notes })).into_response()
}

fn unprocessable(message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

fn contact_exists(api: &DemoApi, id: &str) -> bool {
    api.records("contacts").iter().any(|r| r["id"] == json!(id))
}

/// Step 1: the new address, unverified; answers the token that verifies it.
async fn add_email(
    State(api): State<Arc<DemoApi>>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(email) = body["email"].as_str().filter(|e| e.contains('@')) else {
        return unprocessable("`email` must be an e-mail address");
    };
    if !contact_exists(&api, &id) {
        return not_found();
    }
    let mut pending = api.pending.lock().expect("pending");
    let n = api
        .issued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    let token = format!("verify-{id}-{n}");
    pending.push((id, email.to_owned(), token.clone(), false));
    (
        StatusCode::CREATED,
        axum::Json(json!({ "email": email, "verified": false, "token": token })),
    )
        .into_response()
}

/// Step 2: the token verifies the address it was given for.
async fn verify_email(
    State(api): State<Arc<DemoApi>>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut pending = api.pending.lock().expect("pending");
    let Some(entry) = pending
        .iter_mut()
        .find(|(contact, _, token, _)| *contact == id && body["token"] == json!(token))
    else {
        return unprocessable("unknown verification token");
    };
    entry.3 = true;
    axum::Json(json!({ "email": entry.1, "verified": true })).into_response()
}

/// Step 3: a verified address becomes the contact's.
async fn make_primary(
    State(api): State<Arc<DemoApi>>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut pending = api.pending.lock().expect("pending");
    let Some(at) = pending.iter().position(|(contact, email, _, verified)| {
        *contact == id && body["email"] == json!(email) && *verified
    }) else {
        return unprocessable("only a verified address of this contact can become primary");
    };
    let (_, email, _, _) = pending.remove(at);
    let mut records = api.records.lock().expect("records");
    let Some(record) = records
        .get_mut("contacts")
        .and_then(|list| list.iter_mut().find(|r| r["id"] == json!(id)))
    else {
        return not_found();
    };
    record["email"] = json!(email);
    axum::Json(json!({ "data": record })).into_response()
}

async fn delete(
    State(api): State<Arc<DemoApi>>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let mut records = api.records.lock().expect("records");
    let Some(list) = records.get_mut(&collection) else {
        return not_found();
    };
    let before = list.len();
    list.retain(|r| r["id"] != json!(id));
    if list.len() == before {
        not_found()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}
