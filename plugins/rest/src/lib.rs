//! oubli's REST connector: finds, exports, rectifies and erases a data subject's records
//! in an HTTP API described by the system's `config.api`.
//!
//! Every request goes through `wasi:http`, so the host checks each one (redirects
//! included) against the system's allow-list and fills in `{{secret:NAME}}` placeholders
//! for the hosts each secret is bound to. Identity values only ever travel percent-encoded
//! in a query string, and a record is the subject's only when its identity field equals
//! the identity (when the collection names that field).

mod api;
mod evidence;
mod mentions;
mod retention;

use api::{Api, Collection, EraseAction, Mask, Pagination};
use oubli_connector::http::{self, Method, Request, Response, Retry};
use oubli_connector::{
    Action, Change, Connector, Erased, Error, Field, Identity, Info, MatchKind, Outcome, Page,
    PersonalRecord, RecordRef, Rectified, Result, Subject, SweepReport, Verified, config,
    export_connector,
};
use serde_json::Value;

/// Result pages followed per search: a search that still has more fails the call (a
/// server that keeps answering "there is more" must not hold it until its deadline, and
/// a cut search would miss records).
const MAX_PAGES: usize = 1000;

struct RestConnector;

/// Where the next search page starts.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A page number or an offset.
    Number(u64),
    /// A cursor from the previous response.
    Cursor(String),
    /// The next page's URL (from a `Link` header).
    Url(String),
}

impl Token {
    fn encode(&self) -> String {
        match self {
            Token::Number(n) => format!("n{n}"),
            Token::Cursor(c) => format!("c{c}"),
            Token::Url(u) => format!("u{u}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        let (tag, rest) = text.split_at_checked(1)?;
        match tag {
            "n" => rest.parse().ok().map(Token::Number),
            "c" => Some(Token::Cursor(rest.to_owned())),
            "u" => Some(Token::Url(rest.to_owned())),
            _ => None,
        }
    }
}

/// One page of search results and where the next one starts.
struct SearchPage {
    records: Vec<Value>,
    next: Option<Token>,
}

fn retry(api: &Api) -> Retry {
    Retry {
        attempts: api.retry.attempts,
        max_wait_seconds: api.retry.max_wait_seconds,
    }
}

fn request(api: &Api, method: Method, url: String) -> Request {
    // An API key in the query goes on every URL, next pages' included; a next page's URL
    // that a server wrote with the key in it (scrubbed by the host) loses that copy first.
    let url = match api.auth.as_ref().and_then(api::Auth::query) {
        Some(key) => {
            let name = key.split('=').next().unwrap_or_default();
            let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
                .chain(std::iter::once(key.as_str()))
                .collect();
            format!("{path}?{}", kept.join("&"))
        }
        None => url,
    };
    let request = api
        .headers
        .iter()
        .fold(Request::new(method, url), |r, (name, value)| {
            r.header(name, value)
        });
    match api.auth.as_ref().and_then(api::Auth::header) {
        Some((name, value)) => request.header(&name, &value),
        None => request,
    }
    .header("accept", "application/json")
}

/// What a request is for, as its errors name it: the method and the configured path
/// (`PATCH /users/{id}`), never the URL, which may carry an identity; and the subject's
/// identity values, which an error never quotes.
struct Exchange<'a> {
    what: String,
    hide: &'a [&'a str],
}

impl<'a> Exchange<'a> {
    fn new(method: Method, template: &str, hide: &'a [&'a str]) -> Self {
        let method = match method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        };
        Exchange {
            what: format!("{method} {template}"),
            hide,
        }
    }

    /// A transport error or an unsuccessful final status, named.
    fn send(&self, api: &Api, request: &Request) -> Result<Response> {
        http::send_retrying(request, retry(api))
            .map_err(|e| self.name(e))?
            .error_for_status_of(&self.what, self.hide)
    }

    /// As [`Exchange::send`], but a record that is gone (404, 410) is `None`.
    fn send_unless_gone(&self, api: &Api, request: &Request) -> Result<Option<Response>> {
        let response = http::send_retrying(request, retry(api)).map_err(|e| self.name(e))?;
        if matches!(response.status, 404 | 410) {
            return Ok(None);
        }
        response
            .error_for_status_of(&self.what, self.hide)
            .map(Some)
    }

    fn name(&self, error: Error) -> Error {
        let named =
            |m: String| format!("{}: {}", self.what, http::excerpt(m.as_bytes(), self.hide));
        match error {
            Error::Unavailable(m) => Error::Unavailable(named(m)),
            Error::Denied(m) => Error::Denied(named(m)),
            Error::Failed(m) => Error::Failed(named(m)),
            other => other,
        }
    }
}

/// The subject's identity values, which errors never quote.
fn hidden(subject: &Subject) -> Vec<&str> {
    subject
        .identities
        .iter()
        .map(|i| i.value.as_str())
        .collect()
}

fn url(api: &Api, path: &str) -> String {
    format!("{}{path}", api.base_url.trim_end_matches('/'))
}

fn record_url(api: &Api, template: &str, id: &str) -> Result<String> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(Error::Failed(format!(
            "the API returned a record id that cannot go in a URL: {id:?}"
        )));
    }
    Ok(url(api, &template.replace("{id}", &api::encode(id))))
}

/// Fetches one page of `collection`'s search for one identity.
/// What one search is for: an identity of the subject, or a parent record's value (for a
/// collection reached through its parent).
#[derive(Clone, Copy)]
enum Sought<'a> {
    Identity(&'a Identity),
    Parent(&'a str),
    /// A listing with these parameters (a retention rule's), no identity.
    Listing(&'a [(String, String)]),
}

fn search_page(
    api: &Api,
    collection: &Collection,
    sought: Sought<'_>,
    token: Option<&Token>,
) -> Result<SearchPage> {
    let search = &collection.search;
    let parent = match sought {
        Sought::Parent(value) => Some(value),
        Sought::Identity(_) | Sought::Listing(_) => None,
    };
    let fill = |text: &str| match parent {
        Some(value) => text.replace("{parent}", value),
        None => text.to_owned(),
    };
    // Where this page starts, for page-number and offset pagination.
    let number = match token {
        Some(Token::Number(n)) => Some(*n),
        _ => None,
    };
    let target = if let Some(Token::Url(next)) = token {
        next.clone()
    } else {
        let mut query: Vec<(String, String)> = search
            .params
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect();
        // An identity goes in the query, or in the path (`/users/{identity}`) where `by`
        // maps its kind to "".
        if let Sought::Identity(identity) = sought
            && !search.by[&identity.kind].is_empty()
        {
            query.push((search.by[&identity.kind].clone(), identity.value.clone()));
        }
        if let Sought::Listing(params) = sought {
            query.extend(params.iter().cloned());
        }
        match (&search.pagination, token) {
            (
                Pagination::Page {
                    param,
                    start,
                    size_param,
                    size,
                },
                _,
            ) => {
                let page = number.unwrap_or(*start);
                query.push((param.clone(), page.to_string()));
                if let (Some(p), Some(s)) = (size_param, size) {
                    query.push((p.clone(), s.to_string()));
                }
            }
            (
                Pagination::Offset {
                    param,
                    limit_param,
                    size,
                },
                _,
            ) => {
                let offset = number.unwrap_or(0);
                query.push((param.clone(), offset.to_string()));
                query.push((limit_param.clone(), size.to_string()));
            }
            (Pagination::Cursor { param, .. }, Some(Token::Cursor(cursor))) => {
                query.push((param.clone(), cursor.clone()));
            }
            _ => {}
        }
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", api::encode(k), api::encode(v)))
            .collect();
        let path = match sought {
            Sought::Parent(value) => search.path.replace("{parent}", &api::encode(value)),
            Sought::Listing(_) => search.path.clone(),
            Sought::Identity(identity) => search
                .path
                .replace("{identity}", &api::encode(identity.value.trim())),
        };
        if query.is_empty() {
            url(api, &path)
        } else {
            format!("{}?{}", url(api, &path), query.join("&"))
        }
    };
    // A lookup by identity in the path answers 404 for no one.
    let in_path = matches!(sought, Sought::Identity(i) if search.by[&i.kind].is_empty());
    // `.` and `..` would name another path than a record's, whatever the server makes of
    // them: no one's identity.
    if let Sought::Identity(identity) = sought
        && in_path
        && matches!(identity.value.trim(), "" | "." | "..")
    {
        return Ok(SearchPage {
            records: Vec::new(),
            next: None,
        });
    }
    let hide = match sought {
        Sought::Identity(identity) => vec![identity.value.as_str()],
        // A parent's value may be an identity too (a user keyed by e-mail).
        Sought::Parent(value) => vec![value],
        Sought::Listing(_) => Vec::new(),
    };
    let exchange = Exchange::new(Method::Get, &search.path, &hide);
    let request = request(api, Method::Get, target.clone());
    let response = if in_path {
        match exchange.send_unless_gone(api, &request)? {
            Some(response) => response,
            None => {
                return Ok(SearchPage {
                    records: Vec::new(),
                    next: None,
                });
            }
        }
    } else {
        exchange.send(api, &request)?
    };
    let response_url = target;
    let body = response.json()?;
    let results = match &search.results {
        Some(path) => api::at(&body, path),
        None => Some(&body),
    };
    let records = match results {
        Some(Value::Array(items)) => items.clone(),
        // A lookup in the path answers the one record.
        Some(record @ Value::Object(_)) if in_path => vec![record.clone()],
        Some(Value::Null) => Vec::new(),
        // Not "nothing found": a results path the answer does not have would make every
        // search find nothing, and an erasure pass for done.
        None => {
            return Err(Error::Failed(format!(
                "the search answer of {} has nothing at {:?} (config.api search.results): it holds {}",
                collection.name,
                search.results.as_deref().unwrap_or_default(),
                match &body {
                    Value::Object(map) => format!(
                        "the keys {}",
                        map.keys()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => "no object".into(),
                }
            )));
        }
        Some(_) => {
            return Err(Error::Failed(format!(
                "the search results of {} are not an array (config.api search.results = {:?})",
                collection.name, search.results
            )));
        }
    };
    let count = records.len() as u64;
    let next = match &search.pagination {
        Pagination::None => None,
        Pagination::Page { start, size, .. } => {
            let page = number.unwrap_or(*start);
            let more = match size {
                Some(size) => count >= *size,
                None => count > 0,
            };
            more.then_some(Token::Number(page + 1))
        }
        Pagination::Offset { size, .. } => {
            let offset = number.unwrap_or(0);
            (count >= *size && count > 0).then_some(Token::Number(offset + count))
        }
        Pagination::Cursor { next, .. } => api::at(&body, next)
            .and_then(api::scalar_text)
            .filter(|c| !c.is_empty())
            .map(Token::Cursor),
        Pagination::Link => response
            .header("link")
            .and_then(api::next_link)
            .map(|next| http::resolve(&response_url, &next))
            .transpose()?
            .map(Token::Url),
    };
    if next.is_some() && next.as_ref() == token {
        return Err(Error::Failed(format!(
            "the API returned the same page of {} twice; its pagination is not what config.api describes",
            collection.name
        )));
    }
    Ok(SearchPage { records, next })
}

/// Whether the record holds `identity` in the collection's field for its kind; records of
/// collections that name no such field are taken as the API returned them.
fn holds(collection: &Collection, record: &Value, identity: &Identity) -> bool {
    let Some(path) = collection.identities.get(&identity.kind) else {
        return true;
    };
    let Some(value) = api::at(record, path).and_then(api::scalar_text) else {
        return false;
    };
    if identity.kind == "email" {
        // The domain is case-insensitive, and services fold the rest in practice.
        value.eq_ignore_ascii_case(identity.value.trim())
    } else {
        value == identity.value.trim()
    }
}

fn record_id(collection: &Collection, record: &Value) -> Result<String> {
    api::at(record, &collection.id)
        .and_then(api::scalar_text)
        .ok_or_else(|| {
            Error::Failed(format!(
                "a record of {} has no id at {:?}",
                collection.name, collection.id
            ))
        })
}

/// The subject's identities this collection can search by, in the subject's order.
fn searchable<'a>(collection: &Collection, subject: &'a Subject) -> Vec<&'a Identity> {
    subject
        .identities
        .iter()
        .filter(|i| collection.search.by.contains_key(&i.kind) && !i.value.trim().is_empty())
        .collect()
}

/// Every record of the subject in `collection`, each once, as (id, record).
/// Every record of the subject in `collection` and, where it declares `mentions`, every
/// record of someone else that names the subject there, each once.
fn found(api: &Api, collection: &Collection, subject: &Subject) -> Result<Vec<Found>> {
    let mut out: Vec<Found> = Vec::new();
    let values = mentions::values(collection, subject);
    for identity in searchable(collection, subject) {
        let mut token = None;
        for pages in 1.. {
            if pages > MAX_PAGES {
                return Err(Error::Failed(format!(
                    "the search of {} by {} still had results after {MAX_PAGES} pages: refused rather than cut short (a narrower search, or a larger page size in config.api {} search.pagination)",
                    collection.name, identity.kind, collection.name
                )));
            }
            let page = search_page(api, collection, Sought::Identity(identity), token.as_ref())?;
            for record in page.records {
                let own = holds(collection, &record, identity);
                let mentioned = if own {
                    Vec::new()
                } else {
                    mentions::fields(collection, &record, &values)
                };
                if !own && mentioned.is_empty() {
                    continue;
                }
                let id = record_id(collection, &record)?;
                match out.iter_mut().find(|known| known.id == id) {
                    // Found as a mention, then as the subject's own: it is theirs.
                    Some(known) if own => known.mentioned.clear(),
                    Some(_) => {}
                    None => out.push(Found {
                        id,
                        record,
                        via: None,
                        mentioned,
                    }),
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Runs the collection's search once with an identity no one has, so that a wrong
/// address, path or credential is refused when the system is connected rather than at
/// its first request; the error names the setting to look at.
fn probe(api: &Api, index: usize, collection: &Collection) -> Result<()> {
    // A collection reached through its parent needs a parent record's value: it is
    // searched with the first request's parents.
    // E-mail first: the kind whose made-up value an API is least likely to refuse.
    let Some(kind) = collection
        .search
        .by
        .keys()
        .find(|k| *k == "email")
        .or_else(|| collection.search.by.keys().next())
    else {
        return Ok(());
    };
    let value = match kind.as_str() {
        "email" => "oubli-connection-check@example.invalid",
        "phone" => "+10000000000",
        _ => "oubli-connection-check",
    };
    let identity = Identity {
        kind: kind.clone(),
        value: value.to_owned(),
    };
    let at = format!("config.api.collections[{index}]");
    if collection.search.by[kind].is_empty() {
        // A lookup in the path answers 404 for no one and for a wrong path alike: the
        // credentials and the host are checked, the path cannot be.
        oubli_connector::log::warn(&format!(
            "{at}.search.path: a lookup by an identity in the path answers 404 both for no one and for a wrong path; check the path yourself (e.g. with oubli plugin call … --action locate for a known subject)"
        ));
    }
    match search_page(api, collection, Sought::Identity(&identity), None) {
        Ok(_) => Ok(()),
        Err(Error::Failed(m)) if m.contains("HTTP status 404") || m.contains("HTTP status 405") => {
            Err(Error::InvalidConfig(format!(
                "{at}.search.path: the API has no such search (or config.api.base_url is not the API's root): {m}"
            )))
        }
        // The API refused the made-up value itself: it answered, and took the credentials.
        Err(Error::Failed(m)) if m.contains("HTTP status 400") || m.contains("HTTP status 422") => {
            oubli_connector::log::warn(&format!(
                "{at}.search: the API refused the connection check's made-up identity ({m}); the search path and credentials could not be checked further"
            ));
            Ok(())
        }
        Err(Error::Failed(m) | Error::InvalidConfig(m)) => Err(Error::InvalidConfig(format!(
            "{at}.search: a search for an identity no one has did not answer as configured: {m}"
        ))),
        Err(Error::Denied(m)) => Err(Error::Denied(format!(
            "config.api.auth: checking {}: {m}",
            collection.name
        ))),
        Err(Error::Unavailable(m)) => Err(Error::Unavailable(format!(
            "config.api.base_url: the API did not answer when {} was checked: {m}",
            collection.name
        ))),
    }
}

/// A record of the subject: its id, the record as the search returned it, and for a
/// collection reached through its parent, the parent record (`users/7`).
struct Found {
    id: String,
    record: Value,
    via: Option<String>,
    /// For a record of someone else that names the subject: its mention fields, with the
    /// kinds each names; empty for the subject's own records.
    mentioned: Vec<(String, Vec<String>)>,
}

/// Every record of the subject in every collection, in the configuration's order: a
/// collection with identities by its searches, a collection with a `parent` by its
/// search once per record found in the parent collection.
fn found_all(api: &Api, subject: &Subject) -> Result<Vec<Vec<Found>>> {
    let mut all: Vec<Vec<Found>> = Vec::new();
    for collection in &api.collections {
        let Some(parent) = &collection.parent else {
            all.push(found(api, collection, subject)?);
            continue;
        };
        let index = api
            .collections
            .iter()
            .position(|c| c.name == parent.collection)
            .filter(|i| *i < all.len())
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "the parent of {} is not a collection listed before it",
                    collection.name
                ))
            })?;
        let mut children: Vec<Found> = Vec::new();
        for parent_record in all[index].iter().filter(|p| p.mentioned.is_empty()) {
            let value = api::at(&parent_record.record, &parent.field)
                .and_then(api::scalar_text)
                .ok_or_else(|| {
                    Error::Failed(format!(
                        "a record of {} has no {:?} to reach its {} with (config.api {} parent.field)",
                        parent.collection, parent.field, collection.name, collection.name
                    ))
                })?;
            // `.` and `..` would climb out of the parent's path, and an empty value is no
            // filter at all on many APIs.
            if value.trim().is_empty() || value == "." || value == ".." {
                return Err(Error::Failed(format!(
                    "a record of {} has a {:?} that cannot reach its {} ({value:?})",
                    parent.collection, parent.field, collection.name
                )));
            }
            let mut token = None;
            for pages in 1.. {
                if pages > MAX_PAGES {
                    return Err(Error::Failed(format!(
                        "the search of {} under a record of {} still had results after {MAX_PAGES} pages: refused rather than cut short",
                        collection.name, parent.collection
                    )));
                }
                let page = search_page(api, collection, Sought::Parent(&value), token.as_ref())?;
                for record in page.records {
                    // Not under this parent after all: the server ignored the filter.
                    if let Some(key) = &parent.key
                        && api::at(&record, key).and_then(api::scalar_text).as_deref()
                            != Some(value.as_str())
                    {
                        continue;
                    }
                    let id = record_id(collection, &record)?;
                    if !children.iter().any(|known| known.id == id) {
                        children.push(Found {
                            id,
                            record,
                            via: Some(format!("{}/{}", parent.collection, parent_record.id)),
                            mentioned: Vec::new(),
                        });
                    }
                }
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        all.push(children);
    }
    Ok(all)
}

/// Fails when none of the subject's identity kinds is searchable: the request would
/// otherwise "find nothing" and pass for done.
fn check_searchable(api: &Api, subject: &Subject) -> Result<()> {
    if api
        .collections
        .iter()
        .any(|c| !searchable(c, subject).is_empty())
    {
        return Ok(());
    }
    Err(subject.unsearchable(
        api.collections
            .iter()
            .flat_map(|c| c.search.by.keys().map(String::as_str)),
    ))
}

fn record_ref(collection: &Collection, id: String) -> RecordRef {
    RecordRef::new(&collection.name, id, collection.categories())
}

/// Sends `body` to the collection's update endpoint for record `id`.
fn update(api: &Api, collection: &Collection, id: &str, body: Value, hide: &[&str]) -> Result<()> {
    let endpoint = collection.update.as_ref().ok_or_else(|| {
        Error::InvalidConfig(format!(
            "the collection {} has no update endpoint (config.api collections update)",
            collection.name
        ))
    })?;
    let method = match endpoint.method.as_deref().map(str::to_ascii_uppercase) {
        Some(m) if m == "PUT" => Method::Put,
        _ => Method::Patch,
    };
    let target = record_url(api, &endpoint.path, id)?;
    Exchange::new(method, &endpoint.path, hide)
        .send(api, &request(api, method, target).json(&body))?;
    Ok(())
}

/// The record with id `id` as the collection's `read` endpoint returns it, or `None` when
/// it is gone (404, 410). A success that does not hold that very record (nothing or
/// `null` at `read.record`, another id, a listing after a redirect) is an error, never
/// "gone" nor a record to judge: the configuration or the API is not what it seems.
fn read(api: &Api, collection: &Collection, id: &str, hide: &[&str]) -> Result<Option<Value>> {
    let endpoint = collection.read.as_ref().ok_or_else(|| {
        Error::InvalidConfig(format!(
            "the collection {} has no read endpoint (config.api collections read)",
            collection.name
        ))
    })?;
    let target = record_url(api, &endpoint.path, id)?;
    let Some(response) = Exchange::new(Method::Get, &endpoint.path, hide)
        .send_unless_gone(api, &request(api, Method::Get, target))?
    else {
        return Ok(None);
    };
    let body = response.json()?;
    let record = match &endpoint.record {
        None => Some(body),
        Some(path) => api::at(&body, path).cloned(),
    };
    match record {
        Some(record @ Value::Object(_))
            if api::at(&record, &collection.id)
                .and_then(api::scalar_text)
                .as_deref()
                == Some(id) =>
        {
            Ok(Some(record))
        }
        _ => Err(Error::Failed(format!(
            "reading a record of {} by its URL did not answer with that record (an object whose {:?} is its id at {:?}); check config.api read.path and read.record",
            collection.name,
            collection.id,
            endpoint.record.as_deref().unwrap_or("the response itself")
        ))),
    }
}

fn masked(record: &Value, path: &str, mask: Mask) -> Value {
    match mask {
        Mask::Null => Value::Null,
        Mask::Redacted => Value::String("[erased]".into()),
        Mask::KeyedHash => match api::at(record, path).and_then(api::scalar_text) {
            None => Value::Null,
            Some(text) if config::is_keyed_hash(&text) => Value::String(text),
            Some(text) => Value::String(config::keyed_hash(&text)),
        },
    }
}

/// A record as `access` exports it: read in full by its URL, the configured fields; `None`
/// when it is gone meanwhile.
fn exported(
    api: &Api,
    collection: &Collection,
    id: String,
    subject: &Subject,
) -> Result<Option<PersonalRecord>> {
    let Some(full) = read(api, collection, &id, &hidden(subject))? else {
        return Ok(None);
    };
    let fields = collection
        .fields
        .iter()
        .map(|(path, category)| {
            Field::json(
                path,
                api::at(&full, path).cloned().unwrap_or(Value::Null),
                Some(category),
            )
        })
        .collect();
    Ok(Some(PersonalRecord {
        collection: collection.name.clone(),
        key: id,
        fields,
    }))
}

/// The access cursor: collection, identity (among the collection's searchable ones) and
/// where that search's next page starts.
fn parse_cursor(text: &str) -> Result<(usize, usize, Option<Token>)> {
    let malformed = || Error::Failed(format!("malformed access cursor {text:?}"));
    let mut parts = text.splitn(3, ':');
    let collection = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(malformed)?;
    let identity = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(malformed)?;
    let token = match parts.next() {
        None | Some("") => None,
        Some(t) => Some(Token::decode(t).ok_or_else(malformed)?),
    };
    Ok((collection, identity, token))
}

impl Connector for RestConnector {
    fn describe() -> Info {
        Info {
            name: "rest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "HTTP APIs described by an API configuration (search, read, update, delete, pagination)".into(),
            actions: vec![
                Action::Locate,
                Action::Access,
                Action::Rectify,
                Action::Erase,
                Action::Verify,
                Action::Sweep,
                Action::Expired,
            ],
            identity_kinds: oubli_connector::WELL_KNOWN_KINDS
                .map(String::from)
                .into(),
            categories: Vec::new(),
        }
    }

    fn validate() -> Result<()> {
        let api = Api::load()?;
        for warning in api.warnings() {
            oubli_connector::log::warn(&warning);
        }
        for (i, collection) in api.collections.iter().enumerate() {
            probe(&api, i, collection)?;
        }
        Ok(())
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        let api = Api::load()?;
        check_searchable(&api, &subject)?;
        let mut refs = Vec::new();
        for (collection, records) in api.collections.iter().zip(found_all(&api, &subject)?) {
            for Found {
                id,
                record,
                via,
                mentioned,
            } in records
            {
                if !mentioned.is_empty() {
                    // Someone else's record that names the subject: only its mention fields.
                    let mut reference =
                        RecordRef::new(&collection.name, id, vec!["mention".into()]);
                    for (field, kinds) in &mentioned {
                        for kind in kinds {
                            reference = reference.matched_by(kind, field, MatchKind::Normalised);
                        }
                    }
                    refs.push(reference);
                    continue;
                }
                let mut reference = record_ref(collection, id);
                if let Some(via) = via {
                    reference = reference.through(via);
                }
                // Why it is the subject's: the identity fields that hold an identity.
                for identity in &subject.identities {
                    let Some(path) = collection.identities.get(&identity.kind) else {
                        continue;
                    };
                    if holds(collection, &record, identity) {
                        let exact = api::at(&record, path).and_then(api::scalar_text)
                            == Some(identity.value.clone());
                        let how = if exact {
                            MatchKind::Exact
                        } else {
                            MatchKind::Normalised
                        };
                        reference = reference.matched_by(&identity.kind, path, how);
                    }
                }
                refs.push(reference);
            }
        }
        Ok(refs)
    }

    fn access(subject: Subject, cursor: Option<String>) -> Result<Page> {
        let api = Api::load()?;
        check_searchable(&api, &subject)?;
        let (mut c, mut k, mut token) = match cursor.as_deref() {
            None => (0, 0, None),
            Some(text) => parse_cursor(text)?,
        };
        while let Some(collection) = api.collections.get(c) {
            // A collection reached through its parent: its records in one page (its
            // parents' searches are run again to reach them).
            if collection.parent.is_some() {
                let mut records = Vec::new();
                let all = found_all(&api, &subject)?;
                for child in all.into_iter().nth(c).unwrap_or_default() {
                    records.extend(exported(&api, collection, child.id, &subject)?);
                }
                let next = (c + 1 < api.collections.len()).then(|| format!("{}:0:", c + 1));
                return Ok(Page { records, next });
            }
            let identities = searchable(collection, &subject);
            let Some(identity) = identities.get(k) else {
                (c, k, token) = (c + 1, 0, None);
                continue;
            };
            let page = search_page(&api, collection, Sought::Identity(identity), token.as_ref())?;
            let mut records = Vec::new();
            let values = mentions::values(collection, &subject);
            for record in page.records {
                let own_earlier = identities[..k].iter().any(|earlier| {
                    collection.identities.contains_key(&earlier.kind)
                        && holds(collection, &record, earlier)
                });
                if !holds(collection, &record, identity) {
                    // Someone else's record that names the subject: the text around each
                    // mention, apart from the subject's own records (once, for the first
                    // identity whose search returns it).
                    let earlier: Vec<(&str, &str)> = values
                        .iter()
                        .filter(|(kind, _)| identities[..k].iter().any(|i| i.kind == *kind))
                        .copied()
                        .collect();
                    let mentioned = mentions::fields(collection, &record, &values);
                    if !mentioned.is_empty()
                        && !own_earlier
                        && mentions::fields(collection, &record, &earlier).is_empty()
                    {
                        records.push(PersonalRecord {
                            collection: format!("{} (mentions of the subject)", collection.name),
                            key: record_id(collection, &record)?,
                            fields: mentioned
                                .iter()
                                .map(|(field, _)| {
                                    let text = api::at(&record, field)
                                        .and_then(Value::as_str)
                                        .unwrap_or_default();
                                    Field::json(
                                        field,
                                        serde_json::json!(mentions::excerpts(text, &values)),
                                        Some("mention"),
                                    )
                                })
                                .collect(),
                        });
                    }
                    continue;
                }
                // A record that an earlier identity's search found is exported there.
                if own_earlier {
                    continue;
                }
                let id = record_id(collection, &record)?;
                records.extend(exported(&api, collection, id, &subject)?);
            }
            let next = match page.next {
                Some(next) => Some(format!("{c}:{k}:{}", next.encode())),
                None if k + 1 < identities.len() => Some(format!("{c}:{}:", k + 1)),
                None if c + 1 < api.collections.len() => Some(format!("{}:0:", c + 1)),
                None => None,
            };
            return Ok(Page { records, next });
        }
        Ok(Page {
            records: Vec::new(),
            next: None,
        })
    }

    fn rectify(subject: Subject, changes: Vec<Change>) -> Result<Rectified> {
        let api = Api::load()?;
        check_searchable(&api, &subject)?;
        let mut plan: Vec<(&Collection, serde_json::Map<String, Value>)> = Vec::new();
        let mut not_applicable = Vec::new();
        for (position, change) in changes.iter().enumerate() {
            let value = change.parsed_value()?;
            let targets: Vec<&Collection> = api
                .collections
                .iter()
                .filter(|c| change.targets(&c.name))
                .filter(|c| c.fields.contains_key(&change.field))
                .collect();
            // No collection here has the field: another system may hold it.
            if targets.is_empty() {
                not_applicable.push(position as u32);
            }
            for target in targets {
                let index = match plan.iter().position(|(c, _)| c.name == target.name) {
                    Some(index) => index,
                    None => {
                        plan.push((target, serde_json::Map::new()));
                        plan.len() - 1
                    }
                };
                api::set(&mut plan[index].1, &change.field, value.clone());
            }
        }
        let mut changed = Vec::new();
        // Every record first: a change to an identity field (or to a parent) must not
        // hide the others.
        let mut all = found_all(&api, &subject)?;
        // An error quotes neither the subject's identities nor the new values.
        let new_values: Vec<String> = changes
            .iter()
            .filter_map(|c| match c.parsed_value() {
                Ok(Value::String(text)) => Some(text),
                Ok(other) => Some(other.to_string()),
                Err(_) => None,
            })
            .collect();
        let hide: Vec<&str> = hidden(&subject)
            .into_iter()
            .chain(new_values.iter().map(String::as_str))
            .collect();
        for (collection, body) in plan {
            let index = api
                .collections
                .iter()
                .position(|c| std::ptr::eq(c, collection))
                .unwrap_or_default();
            let records = std::mem::take(&mut all[index]);
            // Someone else's record that names the subject is not theirs to change.
            for Found { id, .. } in records.into_iter().filter(|f| f.mentioned.is_empty()) {
                update(&api, collection, &id, Value::Object(body.clone()), &hide)?;
                changed.push(record_ref(collection, id));
            }
        }
        Ok(Rectified {
            changed,
            not_applicable,
        })
    }

    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        let api = Api::load()?;
        check_searchable(&api, &subject)?;
        let hide = hidden(&subject);
        // Every collection is searched before anything changes: a record found through a
        // field that another collection's erasure removes (a user found by an address)
        // must not become unreachable halfway.
        let targets: Vec<(&Collection, Vec<Found>)> = api
            .collections
            .iter()
            .zip(found_all(&api, &subject)?)
            .collect();
        // Each record is read by its URL before anything changes: `verify` reads it the
        // same way afterwards, so a read endpoint that cannot find it (and would then say
        // "gone") fails here, with nothing changed.
        for (collection, records) in &targets {
            for Found { id, .. } in records {
                if read(&api, collection, id, &hide)?.is_none() {
                    return Err(Error::InvalidConfig(format!(
                        "a record of {} found by the search is not found by its URL (404 or 410): after the erasure it could not be read back; check config.api read.path",
                        collection.name
                    )));
                }
            }
        }
        let mut report = Vec::new();
        // Children before parents: in the reverse of the listing, where a parent comes
        // before its children (an API may refuse to delete a parent that has children,
        // and a retry must still reach children whose parent is gone).
        for (collection, records) in targets.into_iter().rev() {
            let erase = &collection.erase;
            let values = mentions::values(collection, &subject);
            for Found {
                id,
                record,
                mentioned,
                ..
            } in records
            {
                if !mentioned.is_empty() {
                    // Someone else's record: only the occurrences go, the rest of the text
                    // and the record stay. The text is read again just before it is
                    // written, so that an edit made since the search is not overwritten
                    // (the API offers no conditional write to close the window entirely).
                    let Some(current) = read(&api, collection, &id, &hide)? else {
                        // Deleted meanwhile by someone else: verify reads it back gone.
                        continue;
                    };
                    let body = mentions::redaction(&current, &mentioned, &values);
                    update(&api, collection, &id, body, &hide)?;
                    report.push(Erased {
                        collection: collection.name.clone(),
                        key: id,
                        outcome: Outcome::Anonymised(
                            mentioned.into_iter().map(|(f, _)| f).collect(),
                        ),
                    });
                    continue;
                }
                if erase.action != EraseAction::Delete && !erase.fields.is_empty() {
                    let mut body = serde_json::Map::new();
                    for (path, mask) in &erase.fields {
                        api::set(&mut body, path, masked(&record, path, *mask));
                    }
                    update(&api, collection, &id, Value::Object(body), &hide)?;
                }
                if erase.action == EraseAction::Delete {
                    let endpoint = collection.delete.as_ref().expect("checked on load");
                    let target = record_url(&api, &endpoint.path, &id)?;
                    // Gone already (a retry after a crash, say): the end state is the same.
                    Exchange::new(Method::Delete, &endpoint.path, &hide)
                        .send_unless_gone(&api, &request(&api, Method::Delete, target))?;
                }
                report.push(Erased {
                    collection: collection.name.clone(),
                    key: id,
                    outcome: erase.action.outcome(
                        erase.legal_basis.as_deref(),
                        erase.fields.keys().cloned().collect(),
                    ),
                });
            }
        }
        Ok(report)
    }

    fn verify(subject: Subject, records: Vec<RecordRef>) -> Result<Vec<Verified>> {
        evidence::verify(&Api::load()?, &subject, records)
    }

    fn sweep(subject: Subject, budget: u32) -> Result<SweepReport> {
        evidence::sweep(&Api::load()?, &subject, budget)
    }

    /// Lists a page of the subjects of a retention rule of `api.retention` whose period
    /// ran out.
    fn expired(rule: String, cursor: Option<String>) -> Result<oubli_connector::ExpiredPage> {
        let api = Api::load()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        retention::expired(&api, &rule, cursor.as_deref(), now)
    }
}

export_connector!(RestConnector);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_key_goes_on_every_url_once() {
        let api: Api = serde_json::from_value(serde_json::json!({
            "base_url": "https://api.example.org",
            "auth": { "query": { "name": "api_key", "secret": "KEY" } },
            "collections": [],
        }))
        .unwrap();
        let first = request(
            &api,
            Method::Get,
            "https://api.example.org/c?email=a".into(),
        );
        assert_eq!(
            first.url,
            "https://api.example.org/c?email=a&api_key={{secret:KEY}}"
        );
        // A next-page link written by the server with the key in it (scrubbed by the host).
        let next = request(
            &api,
            Method::Get,
            "https://api.example.org/c?email=a&api_key=%5Bredacted%5D&_page=2".into(),
        );
        assert_eq!(
            next.url,
            "https://api.example.org/c?email=a&_page=2&api_key={{secret:KEY}}"
        );
        let bare = request(&api, Method::Get, "https://api.example.org/c/7".into());
        assert_eq!(
            bare.url,
            "https://api.example.org/c/7?api_key={{secret:KEY}}"
        );
    }

    #[test]
    fn cursors_round_trip() {
        for token in [
            Token::Number(3),
            Token::Cursor("a:b".into()),
            Token::Url("https://x/y?p=2".into()),
        ] {
            let text = format!("1:2:{}", token.encode());
            assert_eq!(parse_cursor(&text).unwrap(), (1, 2, Some(token)));
        }
        assert_eq!(parse_cursor("0:1:").unwrap(), (0, 1, None));
        assert!(parse_cursor("x").is_err());
    }
}
