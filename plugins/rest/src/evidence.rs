//! What the REST connector proves after an erasure: `verify` reads each located record
//! back by its URL, and `sweep` runs the collections' searches again with relaxed
//! matching and looks for the subject's identity values in every field of every result.

use crate::api::{self, Api, Collection, EraseAction, Mask};
use oubli_connector::{
    Error, Identity, RecordRef, RecordState, Result, Subject, SweepHit, SweepReport, Verified,
    config,
};
use serde_json::Value;
use std::collections::BTreeSet;

/// Identity values shorter than this are matched against a whole field only, never
/// found inside longer text, where they would match unrelated words and numbers.
const MIN_MENTION_CHARS: usize = 5;

/// Phone numbers are also compared by their digits when they have at least this many.
const MIN_PHONE_DIGITS: usize = 6;

/// One place inside a record: its dotted path and what is there.
pub struct Leaf {
    pub path: String,
    pub text: String,
    /// A string (or an object key), rather than a number.
    pub string: bool,
}

/// Every string, number and object key inside `value`, with its dotted path
/// (`address.city`, `emails.0.address`); a key is a leaf of its own, at its object's path
/// followed by `[key]`, so that an identity used as a key is found and never written in
/// a path.
pub fn leaves(value: &Value, prefix: &str, out: &mut Vec<Leaf>) {
    let join = |part: &str| {
        if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}.{part}")
        }
    };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push(Leaf {
                    path: join("[key]"),
                    text: k.clone(),
                    string: true,
                });
                leaves(v, &join(k), out);
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, v)| leaves(v, &join(&i.to_string()), out)),
        Value::String(s) => out.push(Leaf {
            path: prefix.to_owned(),
            text: s.clone(),
            string: true,
        }),
        Value::Number(n) => out.push(Leaf {
            path: prefix.to_owned(),
            text: n.to_string(),
            string: false,
        }),
        Value::Bool(_) | Value::Null => {}
    }
}

fn digits(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// Whether `text` holds `identity`'s value: as the whole field or as a whole word inside
/// longer text ([`oubli_connector::mentions`]), in any case; values under
/// [`MIN_MENTION_CHARS`] only as the whole field; a phone number also by its digits, in
/// text only (`string`), never in a number.
pub fn mentions(text: &str, identity: &Identity, string: bool) -> bool {
    let value = identity.value.trim().to_lowercase();
    if value.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    if text.trim() == value {
        return true;
    }
    if value.chars().count() >= MIN_MENTION_CHARS && oubli_connector::mentions(&text, &value) {
        return true;
    }
    if identity.kind == "phone" && string {
        let wanted = digits(&value);
        return wanted.len() >= MIN_PHONE_DIGITS && digits(&text) == wanted;
    }
    false
}

/// The fields of `record` that hold any of the subject's identity values, each with the
/// kind found there. A number counts only in one of the collection's identity fields
/// (an order's `quantity: 42` is not customer 42). A path segment that is itself an
/// identity value (an object keyed by e-mail address) is written `[key]`.
fn fields_mentioning(
    collection: &Collection,
    record: &Value,
    subject: &Subject,
) -> Vec<(String, String)> {
    let mut all = Vec::new();
    leaves(record, "", &mut all);
    let identity_fields: BTreeSet<&str> =
        collection.identities.values().map(String::as_str).collect();
    let mut found = Vec::new();
    for leaf in all {
        if !leaf.string && !identity_fields.contains(leaf.path.as_str()) {
            continue;
        }
        if let Some(identity) = subject
            .identities
            .iter()
            .find(|i| mentions(&leaf.text, i, leaf.string))
        {
            let path = leaf
                .path
                .split('.')
                .map(|segment| {
                    if subject
                        .identities
                        .iter()
                        .any(|i| mentions(segment, i, true))
                    {
                        "[key]"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join(".");
            found.push((path, identity.kind.clone()));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Whether the field at `path` holds what `mask` makes of a value.
fn mask_applied(record: &Value, path: &str, mask: Mask) -> bool {
    let value = api::at(record, path).unwrap_or(&Value::Null);
    match (mask, value) {
        (Mask::Null, Value::Null) => true,
        (Mask::Redacted, Value::String(s)) => s == "[erased]",
        (Mask::KeyedHash, Value::Null) => true,
        (Mask::KeyedHash, Value::String(s)) => config::is_keyed_hash(s),
        _ => false,
    }
}

/// The personal fields of the collection (identity fields, `fields`, masked fields).
fn personal_paths(collection: &Collection) -> BTreeSet<&str> {
    collection
        .identities
        .values()
        .chain(collection.fields.keys())
        .chain(collection.erase.fields.keys())
        .map(String::as_str)
        .collect()
}

/// What one record read back is: in a collection whose records are deleted, still there
/// with its personal fields that are set; in one whose records are anonymised or
/// retained, holding the masked fields that do not hold what their mask makes of them;
/// in every case holding any field where an identity value of the subject still appears;
/// else cleared of its masked fields (anonymised) or holding its unmasked personal
/// fields that are set (retained, with its legal basis).
pub fn state(collection: &Collection, record: &Value, subject: &Subject) -> RecordState {
    let is_set = |path: &&str| api::at(record, path).is_some_and(|v| !v.is_null());
    let mut holds: BTreeSet<String> = fields_mentioning(collection, record, subject)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let erase = &collection.erase;
    match erase.action {
        EraseAction::Delete => {
            holds.extend(
                personal_paths(collection)
                    .into_iter()
                    .filter(is_set)
                    .map(str::to_owned),
            );
            // Still there: the host fails a record reported deleted whatever it holds.
            RecordState::Holds(holds.into_iter().collect())
        }
        _ => {
            holds.extend(
                erase
                    .fields
                    .iter()
                    .filter(|(path, mask)| !mask_applied(record, path, **mask))
                    .map(|(path, _)| path.clone()),
            );
            if erase.action == EraseAction::Retain {
                holds.extend(
                    personal_paths(collection)
                        .into_iter()
                        .filter(|p| !erase.fields.contains_key(*p))
                        .filter(is_set)
                        .map(str::to_owned),
                );
            }
            if holds.is_empty() {
                RecordState::Cleared(erase.fields.keys().cloned().collect())
            } else {
                RecordState::Holds(holds.into_iter().collect())
            }
        }
    }
}

/// `verify`: each record read by its URL (the collection's `read` endpoint); 404 or 410
/// is gone.
pub fn verify(api: &Api, subject: &Subject, records: Vec<RecordRef>) -> Result<Vec<Verified>> {
    records
        .into_iter()
        .map(|r| {
            let collection = api
                .collections
                .iter()
                .find(|c| c.name == r.collection)
                .ok_or_else(|| {
                    Error::Failed(format!(
                        "verify was given a record of {:?}, a collection config.api does not describe",
                        r.collection
                    ))
                })?;
            // Someone else's record that named the subject: only its mention fields are the
            // subject's, and they must no longer name them.
            let mention = !r.matched.is_empty()
                && r.matched.iter().all(|m| collection.mentions.contains(&m.field));
            let state = match crate::read(api, collection, &r.key, &crate::hidden(subject))? {
                None => RecordState::Gone,
                Some(record) if mention => {
                    let values = crate::mentions::values(collection, subject);
                    let still: Vec<String> = crate::mentions::fields(collection, &record, &values)
                        .into_iter()
                        .map(|(field, _)| field)
                        .collect();
                    if still.is_empty() {
                        let mut fields: Vec<String> =
                            r.matched.iter().map(|m| m.field.clone()).collect();
                        fields.sort();
                        fields.dedup();
                        RecordState::Cleared(fields)
                    } else {
                        RecordState::Holds(still)
                    }
                }
                Some(record) => state(collection, &record, subject),
            };
            Ok(Verified {
                collection: r.collection,
                key: r.key,
                state,
            })
        })
        .collect()
}

/// The values a sweep searches for one identity: as given and in lower case.
fn spellings(identity: &Identity) -> Vec<Identity> {
    let given = identity.value.trim().to_owned();
    let mut out = vec![given.clone()];
    let lower = given.to_lowercase();
    if lower != given {
        out.push(lower);
    }
    out.into_iter()
        .map(|value| Identity {
            kind: identity.kind.clone(),
            value,
        })
        .collect()
}

/// `sweep`: every collection's search, for every identity kind it takes, with the value
/// as given and in lower case, every page, within `budget` requests; every field of
/// every result (not only the identity fields, and whatever the collection's exact
/// matching would keep) is looked at for the subject's identity values.
pub fn sweep(api: &Api, subject: &Subject, budget: u32) -> Result<SweepReport> {
    let mut report = SweepReport {
        covered: Vec::new(),
        skipped: Vec::new(),
        hits: Vec::new(),
        cut_short: false,
    };
    let mut spent = 0u32;
    let mut seen: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    'collections: for collection in &api.collections {
        let identities = crate::searchable(collection, subject);
        if identities.is_empty() {
            report.skipped.push(match &collection.parent {
                Some(parent) => format!(
                    "{}: reached only through {}, not searched by identity (its located records are read back by key)",
                    collection.name, parent.collection
                ),
                None => format!(
                    "{}: its search takes none of the subject's identity kinds",
                    collection.name
                ),
            });
            continue;
        }
        for identity in identities {
            for spelling in spellings(identity) {
                let mut token = None;
                for page_number in 0..=crate::MAX_PAGES {
                    // A search that keeps saying "there is more" is not searched in full.
                    if page_number == crate::MAX_PAGES {
                        report.cut_short = true;
                        break 'collections;
                    }
                    if spent >= budget {
                        report.cut_short = true;
                        break 'collections;
                    }
                    spent += 1;
                    let page = crate::search_page(
                        api,
                        collection,
                        crate::Sought::Identity(&spelling),
                        token.as_ref(),
                    )?;
                    for record in &page.records {
                        let key = crate::record_id(collection, record)?;
                        for (field, kind) in fields_mentioning(collection, record, subject) {
                            if seen.insert((
                                collection.name.clone(),
                                key.clone(),
                                field.clone(),
                                kind.clone(),
                            )) {
                                report.hits.push(SweepHit {
                                    collection: collection.name.clone(),
                                    key: key.clone(),
                                    field,
                                    kind,
                                });
                            }
                        }
                    }
                    match page.next {
                        Some(next) => token = Some(next),
                        None => break,
                    }
                }
            }
        }
        let kinds: Vec<&str> = crate::searchable(collection, subject)
            .iter()
            .map(|i| i.kind.as_str())
            .collect();
        report.covered.push(format!(
            "{}: searched by {} (as given and in lower case), every field of every result",
            collection.name,
            kinds.join(", ")
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(kind: &str, value: &str) -> Identity {
        Identity {
            kind: kind.into(),
            value: value.into(),
        }
    }

    #[test]
    fn finds_identity_values_in_any_case_and_inside_text() {
        let email = id("email", "Jane.Doe@Example.com");
        assert!(mentions("jane.doe@example.com", &email, true));
        assert!(mentions(
            "Ticket from JANE.DOE@EXAMPLE.COM about",
            &email,
            true
        ));
        assert!(!mentions(
            "e.doe@example.com",
            &id("email", "jane.doe@example.com"),
            true
        ));
        // Short values match whole fields only.
        assert!(mentions("42", &id("customer-id", "42"), true));
        assert!(!mentions("order 1429", &id("customer-id", "42"), true));
        let phone = id("phone", "+33 6 12 34 56 78");
        assert!(mentions("06.12.34.56.78", &id("phone", "0612345678"), true));
        assert!(mentions("+33612345678", &phone, true));
        assert!(!mentions("jane.doe@example.com.uk", &email, true));
        assert!(!mentions("ajane.doe@example.com", &email, true));
        assert!(!mentions("", &phone, true));
    }

    #[test]
    fn lists_nested_leaves_with_their_paths() {
        let mut out = Vec::new();
        leaves(
            &json!({"a": {"b": "x"}, "list": [{"e": "y"}, 3], "n": null}),
            "",
            &mut out,
        );
        let listed: Vec<(&str, &str, bool)> = out
            .iter()
            .map(|l| (l.path.as_str(), l.text.as_str(), l.string))
            .collect();
        assert_eq!(
            listed,
            vec![
                ("[key]", "a", true),
                ("a.[key]", "b", true),
                ("a.b", "x", true),
                ("[key]", "list", true),
                ("list.0.[key]", "e", true),
                ("list.0.e", "y", true),
                ("list.1", "3", false),
                ("[key]", "n", true),
            ]
        );
    }

    #[test]
    fn numbers_count_only_in_identity_fields_and_keys_are_never_written() {
        let collection: Collection = serde_json::from_value(json!({
            "name": "orders", "id": "id",
            "search": { "path": "/orders", "by": { "customer-id": "customer" } },
            "identities": { "customer-id": "customer" },
            "read": { "path": "/orders/{id}" }
        }))
        .unwrap();
        let subject = Subject {
            request_id: "r".into(),
            identities: vec![id("customer-id", "42"), id("email", "jane@example.org")],
        };
        let record = json!({
            "id": 7, "customer": 42, "quantity": 42,
            "aliases": { "jane@example.org": { "note": "x" } },
            "memo": "write to jane@example.org."
        });
        let found: Vec<String> = fields_mentioning(&collection, &record, &subject)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(found, vec!["aliases.[key]", "customer", "memo"]);
    }
}
