//! The API configuration: where the API is, how to authenticate, and for each collection
//! how to search the subject, read, update and delete a record, and page through results.

pub use oubli_connector::EraseAction;
use oubli_connector::{Error, Result, config};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// `https://api.example.org/v1`; endpoint paths are appended to it.
    pub base_url: String,
    /// Headers sent with every request; values may hold `{{secret:NAME}}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How oubli authenticates, its credentials always in secrets.
    pub auth: Option<Auth>,
    #[serde(default)]
    pub retry: RetryConfig,
    pub collections: Vec<Collection>,
    /// Retention rules by name, for the contract's `expired` (`retention.rs`).
    #[serde(default)]
    pub retention: BTreeMap<String, crate::retention::Rule>,
}

/// One way of authenticating; every credential is the name of a system secret, which the
/// host fills in on the way out (the plugin never sees it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// HTTP Basic (RFC 7617): `{ basic = { username = "oubli", password_secret = "NAME" } }`.
    Basic {
        username: String,
        password_secret: String,
    },
    /// `Authorization: Bearer …`: `{ bearer = { token_secret = "NAME" } }`.
    Bearer { token_secret: String },
    /// An API key in a header: `{ header = { name = "X-Api-Key", secret = "NAME" } }`.
    Header { name: String, secret: String },
    /// An API key in the query string: `{ query = { name = "api_key", secret = "NAME" } }`.
    Query { name: String, secret: String },
}

impl Auth {
    /// The header this sends with every request, if any.
    pub fn header(&self) -> Option<(String, String)> {
        match self {
            Auth::Basic {
                username,
                password_secret,
            } => Some((
                "authorization".into(),
                format!("Basic {{{{basic:{username}:{password_secret}}}}}"),
            )),
            Auth::Bearer { token_secret } => Some((
                "authorization".into(),
                format!("Bearer {{{{secret:{token_secret}}}}}"),
            )),
            Auth::Header { name, secret } => {
                Some((name.clone(), format!("{{{{secret:{secret}}}}}")))
            }
            Auth::Query { .. } => None,
        }
    }

    /// The query parameter this adds to every request URL, if any, placeholder as it is.
    pub fn query(&self) -> Option<String> {
        match self {
            Auth::Query { name, secret } => {
                Some(format!("{}={{{{secret:{secret}}}}}", encode(name)))
            }
            _ => None,
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let (setting, secret) = match self {
            Auth::Basic {
                username,
                password_secret,
            } => {
                if username.is_empty() || username.contains([':', '{', '}']) {
                    return Err("basic.username: a user name without ':', '{' or '}'".into());
                }
                ("basic.password_secret", password_secret)
            }
            Auth::Bearer { token_secret } => ("bearer.token_secret", token_secret),
            Auth::Header { name, secret } => {
                if !name_ok(name) {
                    return Err("header.name: a header name (letters, digits, '-', '_')".into());
                }
                ("header.secret", secret)
            }
            Auth::Query { name, secret } => {
                if name.is_empty() {
                    return Err("query.name: the query parameter's name".into());
                }
                ("query.secret", secret)
            }
        };
        if name_ok(secret) {
            Ok(())
        } else {
            Err(format!(
                "{setting}: the name of a secret of the system ([secrets] NAME = {{ env = … }}), not the credential itself"
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per request when the server answers 429 or 5xx.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The longest `Retry-After` waited for inside a call, in seconds.
    #[serde(default = "default_max_wait")]
    pub max_wait_seconds: u64,
}

fn default_attempts() -> u32 {
    3
}

fn default_max_wait() -> u64 {
    10
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            max_wait_seconds: default_max_wait(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    /// The collection's name on certificates and exports, e.g. `contacts`.
    pub name: String,
    pub search: Search,
    /// The path of the record's id within a record, e.g. `id` or `attributes.uuid`.
    pub id: String,
    /// Identity kind → the path of the field holding it in a record. A record found by a
    /// search is kept only when that field equals the identity exactly, so an API that
    /// matches loosely (prefixes, case) cannot pull in another person's record.
    #[serde(default)]
    pub identities: BTreeMap<String, String>,
    /// Field path → data category, for every field that holds personal data: what
    /// `access` exports and `rectify` may change.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Reads one record in full by its URL: what `access` exports and what `verify` reads
    /// back after an erasure. Required.
    pub read: Option<Endpoint>,
    /// Changes one record (rectification and anonymisation).
    pub update: Option<Endpoint>,
    /// Deletes one record.
    pub delete: Option<Endpoint>,
    #[serde(default)]
    pub erase: Erase,
    /// Free-text fields (field paths) where other people's records may name the subject (a
    /// note about them): a search result that is not the subject's but names one of the
    /// searched identities there is a mention, exported as the text around it and erased
    /// by replacing only the occurrences, through `update`.
    #[serde(default)]
    pub mentions: Vec<String>,
    /// Records reached from the records of an earlier collection (a user's addresses):
    /// the search runs once per parent record, `{parent}` in its path or parameters
    /// replaced by the parent record's `field`.
    pub parent: Option<Parent>,
}

/// Where a child collection's records hang: `{ collection = "users", field = "id" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parent {
    pub collection: String,
    /// The path of the value in the parent record, e.g. `id`.
    pub field: String,
    /// The path in a child record that holds the parent's value (`userId`): a child
    /// whose value differs is not kept, so a server that ignores the filter cannot hand
    /// over everyone's records. Required when `{parent}` is only in the parameters.
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The path searched with GET, e.g. `/contacts`.
    pub path: String,
    /// Identity kind → the query parameter that carries it, e.g. `email = "email"`, or
    /// `""` for the kind that goes in the path (`path = "/users/{identity}"`); empty for a
    /// collection reached through its `parent`.
    #[serde(default)]
    pub by: BTreeMap<String, String>,
    /// Query parameters sent with every search, e.g. `fields = "all"`, or
    /// `userId = "{parent}"` in a child collection.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The path of the results array in the response; the response itself when left out.
    pub results: Option<String>,
    #[serde(default)]
    pub pagination: Pagination,
    /// The API returns only records whose field equals the identity exactly, so results
    /// are taken without checking a field of theirs: needed for a kind searched by that
    /// `identities` does not map, and reported by `validate` as a warning.
    #[serde(default)]
    pub exact: bool,
}

/// How a search's results are paged.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "style", rename_all = "lowercase", deny_unknown_fields)]
pub enum Pagination {
    /// One response holds every result.
    #[default]
    None,
    /// `?page=1`, `?page=2`, … until a page is short (or empty when no size is sent).
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        size_param: Option<String>,
        size: Option<u64>,
    },
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, … until a page is short.
    Offset {
        #[serde(default = "offset_param")]
        param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        #[serde(default = "hundred")]
        size: u64,
    },
    /// `?cursor=…` with the next cursor read from the response at `next`, until it is
    /// missing, null or empty.
    Cursor {
        #[serde(default = "cursor_param")]
        param: String,
        next: String,
    },
    /// The next page's URL from the `Link: <…>; rel="next"` header (RFC 8288).
    Link,
}

fn page_param() -> String {
    "page".into()
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn cursor_param() -> String {
    "cursor".into()
}
fn one() -> u64 {
    1
}
fn hundred() -> u64 {
    100
}

/// One record endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The path, with `{id}` where the record's id goes, e.g. `/contacts/{id}`.
    pub path: String,
    /// The method for `update`: `PATCH` (the default) or `PUT`.
    pub method: Option<String>,
    /// For `read`: the path of the record within the response (e.g. `data`).
    pub record: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erase {
    #[serde(default)]
    pub action: EraseAction,
    /// For `retain`: the legal basis, as it will appear on the erasure certificate.
    pub legal_basis: Option<String>,
    /// For `anonymise` and `retain`: field path → what it becomes, sent with `update`.
    #[serde(default)]
    pub fields: BTreeMap<String, Mask>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mask {
    /// JSON `null`.
    Null,
    /// The text `[erased]`.
    Redacted,
    /// The value's keyed hash, computed by the host (see the SQL connector).
    KeyedHash,
}

impl Api {
    /// Reads and checks `config.api`.
    ///
    /// # Errors
    /// `invalid-config` naming the path of the first problem.
    pub fn load() -> Result<Self> {
        let api: Api = config::parse("api")?;
        api.check()?;
        Ok(api)
    }

    fn check(&self) -> Result<()> {
        let invalid = |path: String, message: &str| -> Result<()> {
            Err(Error::InvalidConfig(format!("{path}: {message}")))
        };
        let base = self.base_url.as_str();
        if !(base.starts_with("https://") || base.starts_with("http://"))
            || base
                .split_once("://")
                .is_none_or(|(_, rest)| rest.is_empty())
        {
            return invalid(
                "config.api.base_url".into(),
                "expected an absolute http:// or https:// URL",
            );
        }
        if let Some(auth) = &self.auth
            && let Err(why) = auth.check()
        {
            return Err(Error::InvalidConfig(format!("config.api.auth.{why}")));
        }
        if self.retry.attempts == 0 {
            return invalid("config.api.retry.attempts".into(), "must be at least 1");
        }
        if self.collections.is_empty() {
            return invalid(
                "config.api.collections".into(),
                "no collection is described",
            );
        }
        for (i, c) in self.collections.iter().enumerate() {
            let path = format!("config.api.collections[{i}]");
            if self.collections.iter().filter(|o| o.name == c.name).count() > 1 {
                return invalid(format!("{path}.name"), "two collections have this name");
            }
            match &c.parent {
                None if c.search.by.is_empty() => {
                    return invalid(
                        format!("{path}.search.by"),
                        "no identity kind is mapped to a query parameter",
                    );
                }
                None => {}
                Some(parent) => {
                    if !self.collections[..i]
                        .iter()
                        .any(|p| p.name == parent.collection)
                    {
                        return invalid(
                            format!("{path}.parent.collection"),
                            "must name a collection listed before this one",
                        );
                    }
                    if !c.search.by.is_empty() {
                        return invalid(
                            format!("{path}.search.by"),
                            "a collection reached through its parent is searched with the parent's records only; leave `by` out",
                        );
                    }
                    if !c.search.path.contains("{parent}") && parent.key.is_none() {
                        return invalid(
                            format!("{path}.parent.key"),
                            "with {parent} only in the search parameters, name the child's field that holds the parent's value (key = \"userId\"): a server that ignores the filter would otherwise hand over everyone's records",
                        );
                    }
                    if !c.search.path.contains("{parent}")
                        && !c.search.params.values().any(|v| v.contains("{parent}"))
                    {
                        return invalid(
                            format!("{path}.search"),
                            "a child collection's search path or parameters hold {parent}, e.g. path = \"/users/{parent}/addresses\" or params = { userId = \"{parent}\" }",
                        );
                    }
                }
            }
            if !c.search.path.starts_with('/') {
                return invalid(format!("{path}.search.path"), "must start with /");
            }
            let in_path = c.search.by.values().filter(|p| p.is_empty()).count();
            if in_path > 0 && !matches!(c.search.pagination, Pagination::None) {
                return invalid(
                    format!("{path}.search.pagination"),
                    "a lookup by an identity in the path answers one record: no pagination",
                );
            }
            if in_path > 0 && !c.mentions.is_empty() {
                return invalid(
                    format!("{path}.mentions"),
                    "a lookup by an identity in the path returns only that record: it can find no one else's mention",
                );
            }
            if c.search.path.contains("{identity}") != (in_path > 0) || in_path > 1 {
                return invalid(
                    format!("{path}.search"),
                    "an identity in the path: `path` holds {identity} and `by` maps exactly one kind to \"\" (e.g. path = \"/users/{identity}\", by = { email = \"\" }); otherwise neither",
                );
            }
            if let Some(kind) = c
                .search
                .by
                .keys()
                .find(|kind| !c.identities.contains_key(*kind))
                && !c.search.exact
            {
                return invalid(
                    format!("{path}.identities"),
                    &format!(
                        "the search by {kind} is not checked against the results: name the field that holds it ({kind} = \"field.path\"), or set search.exact = true if the API returns only exact matches (a substring or case-insensitive search returns other people)"
                    ),
                );
            }
            for (name, endpoint) in [
                ("read", &c.read),
                ("update", &c.update),
                ("delete", &c.delete),
            ] {
                if let Some(e) = endpoint {
                    if !e.path.starts_with('/')
                        || !e.path.contains("{id}")
                        || e.path.contains("{parent}")
                    {
                        return invalid(
                            format!("{path}.{name}.path"),
                            "must start with / and hold {id} (and not {parent}: a record is read, changed and deleted by its own id)",
                        );
                    }
                    if let Some(method) = &e.method
                        && !matches!(method.to_ascii_uppercase().as_str(), "PATCH" | "PUT")
                    {
                        return invalid(format!("{path}.{name}.method"), "must be PATCH or PUT");
                    }
                }
            }
            if c.read.is_none() {
                return invalid(
                    format!("{path}.read"),
                    "no read endpoint: after an erasure each record is read back by its URL (404 or 410 = gone), e.g. read = { path = \"/contacts/{id}\" }",
                );
            }
            if c.erase.action == EraseAction::Delete && c.delete.is_none() {
                return invalid(
                    format!("{path}.delete"),
                    "erase.action = delete needs the delete endpoint",
                );
            }
            if let Some((setting, why)) = c.erase.action.missing(
                c.erase.legal_basis.as_deref(),
                c.erase.fields.len(),
                "fields",
            ) {
                return invalid(format!("{path}.erase.{setting}"), why);
            }
            if !c.mentions.is_empty() {
                let put = c
                    .update
                    .as_ref()
                    .and_then(|u| u.method.as_deref())
                    .is_some_and(|m| m.eq_ignore_ascii_case("PUT"));
                if c.update.is_none() || c.parent.is_some() || put {
                    return invalid(
                        format!("{path}.mentions"),
                        "mentions are found by the collection's own searches and erased through its update endpoint with PATCH (a PUT of the mention fields alone would replace the other person's record): it needs `update` without `method = \"PUT\"`, and no `parent`",
                    );
                }
                if c.search.by.keys().any(|k| !c.identities.contains_key(k)) {
                    return invalid(
                        format!("{path}.mentions"),
                        "a collection with mentions maps every searched kind in `identities`: without it, other people's records would pass for the subject's",
                    );
                }
                if let Some(field) = c
                    .mentions
                    .iter()
                    .find(|m| c.identities.values().any(|i| i == *m))
                {
                    return invalid(
                        format!("{path}.mentions"),
                        &format!(
                            "{field:?} is an identity field: a mention field holds free text about others"
                        ),
                    );
                }
            }
            if !c.erase.fields.is_empty() && c.update.is_none() {
                return invalid(
                    format!("{path}.update"),
                    "erase.fields are overwritten through the update endpoint, which is missing",
                );
            }
        }
        crate::retention::check(self)
    }
}

impl Api {
    /// What `validate` warns about: collections whose results are taken unchecked.
    pub fn warnings(&self) -> Vec<String> {
        self.collections
            .iter()
            .enumerate()
            .filter(|(_, c)| c.search.exact && c.search.by.keys().any(|k| !c.identities.contains_key(k)))
            .map(|(i, c)| {
                format!(
                    "config.api.collections[{i}].search.exact: the results of {} are taken as the subject's without checking a field of theirs; make sure the API matches only exact values",
                    c.name
                )
            })
            .collect()
    }
}

impl Collection {
    /// The distinct data categories of the collection's fields.
    pub fn categories(&self) -> Vec<String> {
        let mut categories: Vec<String> = self.fields.values().cloned().collect();
        categories.sort();
        categories.dedup();
        categories
    }
}

/// The value at a dotted path (`data.items`, `attributes.email`, `$.meta.next`; array
/// elements by index, `items.0`).
pub fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.strip_prefix("$.").unwrap_or(path);
    if path.is_empty() || path == "$" {
        return Some(value);
    }
    path.split('.')
        .try_fold(value, |current, part| match current {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// A JSON object holding `value` at the dotted `path` (`address.city` →
/// `{"address": {"city": value}}`), merged into `into`.
pub fn set(into: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    let path = path.strip_prefix("$.").unwrap_or(path);
    match path.split_once('.') {
        None => {
            into.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = into
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Default::default()));
            if !child.is_object() {
                *child = Value::Object(Default::default());
            }
            if let Value::Object(map) = child {
                set(map, rest, value);
            }
        }
    }
}

/// A JSON scalar as text: strings as they are, numbers and booleans as written.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Percent-encodes `text` for a query value or a path segment (RFC 3986: everything but
/// the unreserved characters).
pub fn encode(text: &str) -> String {
    oubli_connector::http::encode(text)
}

/// The `rel="next"` target of a `Link` header, if any.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            })
            .then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_read_and_write_nested_fields() {
        let v = json!({"data": {"items": [{"id": 7}]}, "meta": {"next": "abc"}});
        assert_eq!(at(&v, "data.items.0.id"), Some(&json!(7)));
        assert_eq!(at(&v, "$.meta.next"), Some(&json!("abc")));
        assert_eq!(at(&v, "meta.missing"), None);
        let mut body = serde_json::Map::new();
        set(&mut body, "address.city", json!("Lyon"));
        set(&mut body, "address.zip", json!("69001"));
        set(&mut body, "email", json!(null));
        assert_eq!(
            Value::Object(body),
            json!({"address": {"city": "Lyon", "zip": "69001"}, "email": null})
        );
    }

    #[test]
    fn encodes_hostile_values() {
        assert_eq!(encode("a+b@example.org"), "a%2Bb%40example.org");
        assert_eq!(encode("' OR 1=1 --&x=y"), "%27%20OR%201%3D1%20--%26x%3Dy");
        assert_eq!(encode("../admin"), "..%2Fadmin");
    }

    #[test]
    fn finds_the_next_link() {
        let header = r#"<https://api.example.org/c?page=1>; rel="prev", <https://api.example.org/c?page=3>; rel="next""#;
        assert_eq!(
            next_link(header).as_deref(),
            Some("https://api.example.org/c?page=3")
        );
        assert_eq!(next_link(r#"<https://x/a>; rel="last""#), None);
    }
}
