//! Retention rules (`api.retention`) for the contract's `expired`: which subjects of a
//! collection have outlived their period. A rule names a collection whose records an
//! erasure deletes, the field its period runs from (`deactivatedAt`), the period in days,
//! the search parameters that ask the API for the records past it (`{cutoff}` replaced
//! by the moment the period started before, e.g. `deactivatedAt_lte = "{cutoff}"`), and
//! optionally a value another field must hold (`status = "former"`).
//!
//! The API's filter only narrows the listing: every record it returns is checked here
//! (its date past the period, the condition met), so an API that ignores a parameter
//! cannot make anyone expire early. A record whose date is missing, unreadable or a
//! placeholder (before 1990: `0`, `1970-01-01`, `0001-01-01`) never expires; a page on
//! which no date can be read fails the call, naming the setting.
//!
//! A subject is named by the identity mapped to the record's id (the erasure then
//! reaches that record, not another account with the same address), or else by every
//! kind `name_by` lists (a record lacking one is left out).

use crate::api::{self, Api, Collection, EraseAction, Pagination};
use crate::{Sought, Token, search_page};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use oubli_connector::{Error, ExpiredPage, Identity, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One retention rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The collection whose records are the subjects (one searched by identity, whose
    /// erasure deletes the record).
    pub collection: String,
    /// The path of the field the period runs from: RFC 3339 text, a date
    /// (`2026-01-31`, read as midnight UTC), a date and time without an offset (read as
    /// UTC), or a Unix time in seconds or milliseconds as a JSON number.
    pub field: String,
    /// Days after `field` at which the subject expires (at least 1).
    pub after_days: u32,
    /// Query parameters added to the collection's search to list the records past their
    /// period, `{cutoff}` standing for the moment `after_days` ago.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// How `{cutoff}` is written.
    #[serde(default)]
    pub cutoff: Cutoff,
    /// Only records where a field holds a value, e.g.
    /// `{ "field": "status", "equals": "former" }`.
    #[serde(default)]
    pub when: Option<Condition>,
    /// The identity kinds that name a subject (each mapped in the collection's
    /// `identities` and `search.by`).
    #[serde(default)]
    pub name_by: Vec<String>,
}

/// How the cutoff is written in the search parameters.
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
pub enum Cutoff {
    /// `2026-11-06T20:15:00Z`
    #[default]
    Rfc3339,
    /// `2026-11-06`
    Date,
    /// Seconds since 1970.
    UnixSeconds,
    /// Milliseconds since 1970.
    UnixMillis,
}

/// A field that must hold a value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: String,
    /// A string, a number or a boolean.
    pub equals: Value,
}

/// Checks every rule against the collections, naming its place in the configuration.
///
/// # Errors
/// `invalid-config` with the path of the first problem.
pub fn check(api: &Api) -> Result<()> {
    for (name, rule) in &api.retention {
        let path = format!("config.api.retention.{name}");
        let invalid = |setting: &str, why: String| {
            Err(Error::InvalidConfig(format!("{path}.{setting}: {why}")))
        };
        let Some(collection) = api.collections.iter().find(|c| c.name == rule.collection) else {
            return invalid(
                "collection",
                format!("no collection named {:?}", rule.collection),
            );
        };
        if collection.parent.is_some() || collection.search.path.contains("{identity}") {
            return invalid(
                "collection",
                format!(
                    "{:?} is not listed by a search of its own (it hangs from a parent, or its search path holds an identity)",
                    rule.collection
                ),
            );
        }
        if collection.erase.action != EraseAction::Delete {
            return invalid(
                "collection",
                format!(
                    "an erasure keeps the records of {:?} (erase.action), so an expired record would stay expired and be listed again at every run",
                    rule.collection
                ),
            );
        }
        if rule.after_days == 0 {
            return invalid("after_days", "a period is at least one day".into());
        }
        if let Some(when) = &rule.when
            && !matches!(
                when.equals,
                Value::String(_) | Value::Number(_) | Value::Bool(_)
            )
        {
            return invalid("when.equals", "a string, a number or a boolean".into());
        }
        let paging: Vec<&str> = match &collection.search.pagination {
            Pagination::None | Pagination::Link => Vec::new(),
            Pagination::Page {
                param, size_param, ..
            } => std::iter::once(param.as_str())
                .chain(size_param.as_deref())
                .collect(),
            Pagination::Offset {
                param, limit_param, ..
            } => vec![param.as_str(), limit_param.as_str()],
            Pagination::Cursor { param, .. } => vec![param.as_str()],
        };
        if let Some((key, _)) = rule.params.iter().find(|(k, _)| {
            collection.search.params.contains_key(*k) || paging.contains(&k.as_str())
        }) {
            return invalid(
                "params",
                format!(
                    "{key:?} is already one of the collection's search or pagination parameters"
                ),
            );
        }
        naming(collection, rule)
            .map_err(|why| Error::InvalidConfig(format!("{path}.name_by: {why}")))?;
    }
    Ok(())
}

/// The identity kinds that name a subject under `rule`.
fn naming(collection: &Collection, rule: &Rule) -> std::result::Result<Vec<String>, String> {
    let reachable = |kind: &str| {
        collection.identities.contains_key(kind) && collection.search.by.contains_key(kind)
    };
    if !rule.name_by.is_empty() {
        return match rule.name_by.iter().find(|k| !reachable(k)) {
            Some(kind) => Err(format!(
                "{kind:?} is not mapped in both the collection's identities and search.by, so an erasure could not find the subject by it"
            )),
            None => Ok(rule.name_by.clone()),
        };
    }
    if let Some(kind) = collection
        .identities
        .iter()
        .find(|(kind, path)| **path == collection.id && reachable(kind))
        .map(|(kind, _)| kind.clone())
    {
        return Ok(vec![kind]);
    }
    Err("no identity is mapped to the record's id (e.g. customer-id = \"id\" in identities and search.by), so name the kinds that name a subject; an erasure by them reaches every record that holds them, the subject's other accounts included".into())
}

/// The earliest moment read as a date (1990-01-01): before it, a value is a placeholder
/// for "not set" (0, `1970-01-01`, `0001-01-01`), not a moment the period runs from.
const EARLIEST: i64 = 631_152_000;

/// Reads a moment from a record's field, in seconds since 1970; `None` when it is not
/// one (or is a placeholder).
fn moment(value: &Value) -> Option<i64> {
    read_moment(value).filter(|at| *at >= EARLIEST)
}

fn read_moment(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            let n = n.as_i64()?;
            // Past about 5138 in seconds, or 1973 in milliseconds: taken as milliseconds.
            Some(if n.checked_abs()? >= 100_000_000_000 {
                n / 1000
            } else {
                n
            })
        }
        Value::String(s) => {
            let s = s.trim();
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp())
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                        .map(|d| d.and_utc().timestamp())
                })
                .or_else(|_| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| {
                        d.and_hms_opt(0, 0, 0)
                            .unwrap_or_default()
                            .and_utc()
                            .timestamp()
                    })
                })
                .ok()
        }
        _ => None,
    }
}

fn written(cutoff: i64, format: Cutoff) -> String {
    let at = DateTime::<Utc>::from_timestamp(cutoff, 0).unwrap_or_default();
    match format {
        Cutoff::Rfc3339 => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Cutoff::Date => at.format("%Y-%m-%d").to_string(),
        Cutoff::UnixSeconds => cutoff.to_string(),
        Cutoff::UnixMillis => (cutoff * 1000).to_string(),
    }
}

/// Whether a record's field equals the condition's value.
fn meets(record: &Value, when: &Condition) -> bool {
    match (api::at(record, &when.field), &when.equals) {
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Some(a), b) => a == b,
        (None, _) => false,
    }
}

/// One page of the subjects of `name` whose period ran out at `now` (seconds): one page
/// of the API's listing, each record checked.
///
/// # Errors
/// `invalid-config` for a rule the configuration does not have; the API's errors.
pub fn expired(api: &Api, name: &str, cursor: Option<&str>, now: i64) -> Result<ExpiredPage> {
    let Some(rule) = api.retention.get(name) else {
        return Err(Error::InvalidConfig(format!(
            "config.api.retention: no rule named {name:?}"
        )));
    };
    let collection = api
        .collections
        .iter()
        .find(|c| c.name == rule.collection)
        .ok_or_else(|| Error::InvalidConfig(format!("config.api.retention.{name}.collection")))?;
    let kinds = naming(collection, rule).map_err(Error::InvalidConfig)?;
    let token = cursor
        .map(|c| Token::decode(c).ok_or_else(|| Error::Failed(format!("malformed cursor {c:?}"))))
        .transpose()?;
    let cutoff = now - i64::from(rule.after_days) * 86_400;
    let params: Vec<(String, String)> = rule
        .params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.replace("{cutoff}", &written(cutoff, rule.cutoff)),
            )
        })
        .collect();
    let page = search_page(api, collection, Sought::Listing(&params), token.as_ref())?;
    // A page on which no record has a date this reads, or none has the condition's
    // field, says the rule does not fit the records: "no one expired" would be a guess.
    let set = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
    // A field no record has at all (not even as null) is a name the API does not use.
    if !page.records.is_empty()
        && page
            .records
            .iter()
            .all(|r| api::at(r, &rule.field).is_none())
    {
        return Err(Error::InvalidConfig(format!(
            "config.api.retention.{name}.field: none of the {} records listed has a field at {:?}",
            page.records.len(),
            rule.field
        )));
    }
    let dated = page
        .records
        .iter()
        .filter(|r| set(api::at(r, &rule.field)))
        .count();
    let readable = page
        .records
        .iter()
        .filter(|r| api::at(r, &rule.field).and_then(read_moment).is_some())
        .count();
    if dated > 0 && readable == 0 {
        return Err(Error::InvalidConfig(format!(
            "config.api.retention.{name}.field: none of the {dated} records listed holds a moment at {:?} (RFC 3339 text, a date, or a Unix time as a JSON number)",
            rule.field
        )));
    }
    if let Some(when) = &rule.when
        && !page.records.is_empty()
        && !page.records.iter().any(|r| set(api::at(r, &when.field)))
    {
        return Err(Error::InvalidConfig(format!(
            "config.api.retention.{name}.when.field: none of the {} records listed has a value at {:?}",
            page.records.len(),
            when.field
        )));
    }
    let subjects = page
        .records
        .iter()
        .filter(|record| {
            api::at(record, &rule.field)
                .and_then(moment)
                .is_some_and(|at| at <= cutoff)
                && rule.when.as_ref().is_none_or(|w| meets(record, w))
        })
        .filter_map(|record| {
            // Named by every kind of `name_by`, or left out: fewer would reach more.
            kinds
                .iter()
                .map(|kind| {
                    api::at(record, &collection.identities[kind])
                        .and_then(api::scalar_text)
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                        .map(|value| Identity {
                            kind: kind.clone(),
                            value,
                        })
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect();
    Ok(ExpiredPage {
        subjects,
        next: page.next.map(|t| t.encode()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_read_in_every_documented_form() {
        let day = 1_767_225_600; // 2026-01-01T00:00:00Z
        for (value, expected) in [
            (serde_json::json!("2026-01-01T00:00:00Z"), Some(day)),
            (serde_json::json!("2026-01-01T01:00:00+01:00"), Some(day)),
            (serde_json::json!("2026-01-01T00:00:00"), Some(day)),
            (serde_json::json!("2026-01-01 00:00:00.250"), Some(day)),
            (serde_json::json!("2026-01-01"), Some(day)),
            (serde_json::json!(day), Some(day)),
            (serde_json::json!(day * 1000), Some(day)),
            (serde_json::json!("soon"), None),
            (serde_json::json!(0), None),
            (serde_json::json!(i64::MIN), None),
            (serde_json::json!("1970-01-01T00:00:00Z"), None),
            (serde_json::json!("0001-01-01T00:00:00Z"), None),
            (serde_json::json!(null), None),
            (serde_json::json!(true), None),
        ] {
            assert_eq!(moment(&value), expected, "{value}");
        }
        assert_eq!(written(day, Cutoff::Rfc3339), "2026-01-01T00:00:00Z");
        assert_eq!(written(day, Cutoff::Date), "2026-01-01");
        assert_eq!(written(day, Cutoff::UnixMillis), format!("{day}000"));
    }

    #[test]
    fn a_condition_compares_numbers_by_value() {
        let record = serde_json::json!({ "status": "former", "tier": 2 });
        let when = |field: &str, equals: Value| Condition {
            field: field.into(),
            equals,
        };
        assert!(meets(&record, &when("status", "former".into())));
        assert!(!meets(&record, &when("status", "Former".into())));
        assert!(meets(&record, &when("tier", serde_json::json!(2.0))));
        assert!(!meets(&record, &when("missing", "former".into())));
    }
}
