//! What a call asks of a plugin ([`Op`]) and what it returned ([`Reply`]), and the checks
//! a reply passes before the host keeps it: what a plugin returns ends up on a
//! certificate, in an access package or in a task's error, so it must be printable,
//! bounded, and free of the system's secrets.

use super::bindings::{since_v0_1_0 as v1, since_v0_2_0 as v2};
use super::state::CallState;
use super::system::SecretForms;
use super::types::{
    Change, Erased, ExpiredPage, GuestError, Info, Outcome, Page, RecordRef, RecordState,
    Rectified, Subject, SweepReport, Verified,
};
use crate::runtime::capability::sql::Access;
use wasmtime::Store;

/// The longest legal basis a certificate shows, in characters.
pub const MAX_LEGAL_BASIS_CHARS: usize = 1_000;
/// The longest collection, key, field name or category, in characters.
pub const MAX_LABEL_CHARS: usize = 4_096;
/// The largest field value an export may hold, in bytes of JSON.
pub const MAX_FIELD_VALUE_BYTES: usize = 1 << 20;
/// The deepest nesting a field value may have.
pub const MAX_FIELD_VALUE_DEPTH: usize = 32;

/// One call of the contract.
pub(super) enum Op {
    Describe,
    Validate,
    Locate(Subject),
    Access(Subject, Option<String>),
    Rectify(Subject, Vec<Change>),
    Erase(Subject),
    /// Contract 0.2: read these records back by key.
    Verify(Subject, Vec<RecordRef>),
    /// Contract 0.2: search beyond the configured matching, within a budget.
    Sweep(Subject, u32),
    /// Contract 0.2: the subjects past retention under a rule, a page at a time.
    Expired(String, Option<String>),
}

/// What a call returned.
pub(super) enum Reply {
    Info(Info),
    Validated,
    Records(Vec<RecordRef>),
    Page(Page),
    Rectified(Rectified),
    Erased(Vec<Erased>),
    Verified(Vec<Verified>),
    Swept(SweepReport),
    Expired(ExpiredPage),
}

/// An instance of a plugin, of the contract version it implements.
pub(super) enum Instance {
    V0_1(v1::Plugin),
    V0_2(v2::Plugin),
}

/// The calls whose signature is the same in every contract version, as match arms on
/// `$op`, followed by the version's own arms.
macro_rules! calls_of_every_version {
    ($op:expr, $guest:ident, $store:ident, { $($own:tt)* }) => {
        match $op {
            Op::Describe => Ok(Reply::Info($guest.call_describe(&mut *$store).await?.into())),
            Op::Validate => $guest
                .call_validate(&mut *$store)
                .await?
                .map(|()| Reply::Validated),
            Op::Locate(subject) => $guest
                .call_locate(&mut *$store, &(&subject).into())
                .await?
                .map(|records| Reply::Records(records.into_iter().map(Into::into).collect())),
            Op::Access(subject, cursor) => $guest
                .call_access(&mut *$store, &(&subject).into(), cursor.as_deref())
                .await?
                .map(|page| Reply::Page(page.into())),
            Op::Erase(subject) => $guest
                .call_erase(&mut *$store, &(&subject).into())
                .await?
                .map(|erased| Reply::Erased(erased.into_iter().map(Into::into).collect())),
            $($own)*
        }
    };
}

impl Op {
    /// The action's name in the contract.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::Describe => "describe",
            Op::Validate => "validate",
            Op::Locate(_) => "locate",
            Op::Access(..) => "access",
            Op::Rectify(..) => "rectify",
            Op::Erase(_) => "erase",
            Op::Verify(..) => "verify",
            Op::Sweep(..) => "sweep",
            Op::Expired(..) => "expired",
        }
    }

    /// Only `rectify` and `erase` change the system.
    pub(super) fn access(&self) -> Access {
        match self {
            Op::Rectify(..) | Op::Erase(_) => Access::ReadWrite,
            _ => Access::ReadOnly,
        }
    }

    /// The subject's identity values and a rectification's new values: what the call may
    /// not keep in its memo.
    pub(super) fn personal(&self) -> Vec<String> {
        let values = |subject: &Subject| {
            subject
                .identities
                .iter()
                .map(|identity| identity.value.clone())
                .collect::<Vec<_>>()
        };
        match self {
            Op::Locate(subject)
            | Op::Access(subject, _)
            | Op::Erase(subject)
            | Op::Verify(subject, _)
            | Op::Sweep(subject, _) => values(subject),
            Op::Rectify(subject, changes) => {
                let mut personal = values(subject);
                personal.extend(changes.iter().map(|change| {
                    match serde_json::from_str::<serde_json::Value>(&change.value) {
                        Ok(serde_json::Value::String(text)) => text,
                        _ => change.value.clone(),
                    }
                }));
                personal
            }
            Op::Describe | Op::Validate | Op::Expired(..) => Vec::new(),
        }
    }

    pub(super) async fn run(
        self,
        instance: &Instance,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Result<Reply, GuestError>> {
        match instance {
            Instance::V0_1(plugin) => self.run_v0_1(plugin, store).await,
            Instance::V0_2(plugin) => self.run_v0_2(plugin, store).await,
        }
    }

    async fn run_v0_1(
        self,
        plugin: &v1::Plugin,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Result<Reply, GuestError>> {
        let guest = plugin.oubli_connector_connector();
        let reply = calls_of_every_version!(self, guest, store, {
            // A 0.1 plugin has no "not applicable": each change applied or the call failed.
            Op::Rectify(subject, changes) => {
                let changes: Vec<_> = changes.iter().map(Into::into).collect();
                guest
                    .call_rectify(&mut *store, &(&subject).into(), &changes)
                    .await?
                    .map(|changed| {
                        Reply::Rectified(Rectified {
                            changed: changed.into_iter().map(Into::into).collect(),
                            not_applicable: Vec::new(),
                        })
                    })
            }
            Op::Verify(..) | Op::Sweep(..) | Op::Expired(..) => {
                return Ok(Err(GuestError::Failed(
                    "this plugin implements contract 0.1, which has no verify, sweep or expired"
                        .into(),
                )));
            }
        });
        Ok(reply.map_err(Into::into))
    }

    async fn run_v0_2(
        self,
        plugin: &v2::Plugin,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Result<Reply, GuestError>> {
        let guest = plugin.oubli_connector0_2_0_connector();
        let reply = calls_of_every_version!(self, guest, store, {
            Op::Rectify(subject, changes) => {
                let changes: Vec<_> = changes.iter().map(Into::into).collect();
                guest
                    .call_rectify(&mut *store, &(&subject).into(), &changes)
                    .await?
                    .map(|rectified| Reply::Rectified(rectified.into()))
            }
            Op::Verify(subject, records) => {
                let records: Vec<_> = records.iter().map(Into::into).collect();
                guest
                    .call_verify(&mut *store, &(&subject).into(), &records)
                    .await?
                    .map(|verified| Reply::Verified(verified.into_iter().map(Into::into).collect()))
            }
            Op::Sweep(subject, budget) => guest
                .call_sweep(&mut *store, &(&subject).into(), budget)
                .await?
                .map(|report| Reply::Swept(report.into())),
            Op::Expired(rule, cursor) => guest
                .call_expired(&mut *store, &rule, cursor.as_deref())
                .await?
                .map(|page| Reply::Expired(page.into())),
        });
        Ok(reply.map_err(Into::into))
    }
}

impl Reply {
    /// Why the host cannot keep this reply, if it cannot: a label (collection, key,
    /// field name, category) too long or with control or direction-changing
    /// characters, a field value that is not bounded JSON, a legal basis that is not
    /// printable words.
    pub(super) fn check(&self) -> Result<(), String> {
        let label = |what: &str, text: &str| {
            check_label(text)
                .map_err(|reason| format!("the plugin returned a {what} that {reason}"))
        };
        let record = |r: &RecordRef| {
            label("collection", &r.collection)?;
            label("record key", &r.key)?;
            r.categories.iter().try_for_each(|c| label("category", c))?;
            r.matched.iter().try_for_each(|m| {
                label("identity kind", &m.kind)?;
                label("field name", &m.field)
            })?;
            r.via.as_deref().map_or(Ok(()), |via| label("record", via))
        };
        let fields = |what: &str, names: &[String]| names.iter().try_for_each(|n| label(what, n));
        match self {
            Reply::Info(_) | Reply::Validated => Ok(()),
            Reply::Records(records) => records.iter().try_for_each(record),
            Reply::Rectified(rectified) => rectified.changed.iter().try_for_each(record),
            Reply::Verified(verified) => verified.iter().try_for_each(|v| {
                label("collection", &v.collection)?;
                label("record key", &v.key)?;
                match &v.state {
                    RecordState::Gone => Ok(()),
                    RecordState::Cleared(names) | RecordState::Holds(names) => {
                        fields("field name", names)
                    }
                }
            }),
            Reply::Swept(report) => {
                fields("collection", &report.covered)?;
                fields("skipped collection", &report.skipped)?;
                report.hits.iter().try_for_each(|h| {
                    label("collection", &h.collection)?;
                    label("record key", &h.key)?;
                    label("field name", &h.field)?;
                    label("identity kind", &h.kind)
                })
            }
            Reply::Expired(page) => page.subjects.iter().flatten().try_for_each(|i| {
                label("identity kind", &i.kind)?;
                label("identity", &i.value)
            }),
            Reply::Page(page) => {
                for r in &page.records {
                    label("collection", &r.collection)?;
                    label("record key", &r.key)?;
                    for field in &r.fields {
                        label("field name", &field.name)?;
                        if let Some(category) = &field.category {
                            label("category", category)?;
                        }
                        check_json_value(&field.value).map_err(|reason| {
                            format!(
                                "the plugin exported a record of {} with a field {:?} whose value {reason}",
                                r.collection, field.name
                            )
                        })?;
                    }
                }
                Ok(())
            }
            Reply::Erased(erased) => erased.iter().try_for_each(|e| {
                label("collection", &e.collection)?;
                label("record key", &e.key)?;
                match &e.outcome {
                    Outcome::Retained {
                        legal_basis,
                        masked,
                    } => {
                        fields("field name", masked)?;
                        check_legal_basis(legal_basis).map_err(|reason| {
                            format!(
                                "the plugin retained a record of {} with a legal basis that {reason}",
                                e.collection
                            )
                        })
                    }
                    Outcome::Anonymised(masked) => fields("field name", masked),
                    Outcome::Deleted => Ok(()),
                }
            }),
        }
    }

    /// Whether any text of the reply holds a secret in one of its forms.
    pub(super) fn holds(&self, secrets: &SecretForms) -> bool {
        if secrets.is_empty() {
            return false;
        }
        let found = |text: &str| secrets.found_in(text.as_bytes());
        let record = |r: &RecordRef| {
            found(&r.collection)
                || found(&r.key)
                || r.categories.iter().any(|c| found(c))
                || r.via.as_deref().is_some_and(found)
                || r.matched.iter().any(|m| found(&m.kind) || found(&m.field))
        };
        match self {
            Reply::Validated => false,
            Reply::Info(info) => [&info.name, &info.version, &info.description]
                .into_iter()
                .chain(&info.identity_kinds)
                .chain(&info.categories)
                .any(|t| found(t)),
            Reply::Records(records) => records.iter().any(record),
            Reply::Rectified(rectified) => rectified.changed.iter().any(record),
            Reply::Verified(verified) => verified.iter().any(|v| {
                found(&v.collection)
                    || found(&v.key)
                    || match &v.state {
                        RecordState::Gone => false,
                        RecordState::Cleared(names) | RecordState::Holds(names) => {
                            names.iter().any(|n| found(n))
                        }
                    }
            }),
            Reply::Swept(report) => {
                report
                    .covered
                    .iter()
                    .chain(&report.skipped)
                    .any(|t| found(t))
                    || report.hits.iter().any(|h| {
                        found(&h.collection) || found(&h.key) || found(&h.field) || found(&h.kind)
                    })
            }
            Reply::Expired(page) => {
                page.next.as_deref().is_some_and(found)
                    || page
                        .subjects
                        .iter()
                        .flatten()
                        .any(|i| found(&i.kind) || found(&i.value))
            }
            Reply::Page(page) => {
                page.next.as_deref().is_some_and(found)
                    || page.records.iter().any(|r| {
                        found(&r.collection)
                            || found(&r.key)
                            || r.fields.iter().any(|f| {
                                found(&f.name)
                                    || found(&f.value)
                                    || f.category.as_deref().is_some_and(found)
                            })
                    })
            }
            Reply::Erased(erased) => erased.iter().any(|e| {
                found(&e.collection)
                    || found(&e.key)
                    || e.outcome.legal_basis().is_some_and(found)
                    || e.outcome.masked().iter().any(|m| found(m))
            }),
        }
    }
}

/// A label is bounded text without control characters or characters that change the
/// direction of the text around it (which could make a certificate read otherwise).
fn check_label(text: &str) -> Result<(), String> {
    if text.chars().count() > MAX_LABEL_CHARS {
        return Err(format!("is longer than {MAX_LABEL_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("holds control characters".into());
    }
    if text.chars().any(is_bidi_control) {
        return Err("holds characters that change the direction of the text".into());
    }
    Ok(())
}

/// A legal basis is printable text of words a DPO can read on a certificate.
fn check_legal_basis(basis: &str) -> Result<(), String> {
    let visible = basis
        .chars()
        .filter(|c| !c.is_whitespace() && !is_invisible(*c))
        .count();
    if visible == 0 {
        return Err("is empty or only blank or invisible characters".into());
    }
    if basis.chars().count() > MAX_LEGAL_BASIS_CHARS {
        return Err(format!("is longer than {MAX_LEGAL_BASIS_CHARS} characters"));
    }
    check_label(basis)
}

/// Marks and embeddings, overrides and isolates of the Unicode bidirectional algorithm.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Characters that print as nothing: zero-width spaces and joiners, bidi controls, the
/// byte-order mark, soft hyphens, variation selectors, tags.
fn is_invisible(c: char) -> bool {
    is_bidi_control(c)
        || matches!(c,
            '\u{00ad}' | '\u{034f}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
            | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2065}'
            | '\u{206a}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
            | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}' | '\u{e0000}'..='\u{e0fff}')
}

/// A field value is JSON text of bounded size and depth.
fn check_json_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_FIELD_VALUE_BYTES {
        return Err(format!(
            "is larger than {} KiB",
            MAX_FIELD_VALUE_BYTES >> 10
        ));
    }
    // Count nesting before parsing, so that a deep value costs no recursion.
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in value.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if deepest > MAX_FIELD_VALUE_DEPTH {
            return Err(format!(
                "is nested deeper than {MAX_FIELD_VALUE_DEPTH} levels"
            ));
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(drop)
        .map_err(|e| format!("is not JSON text ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_bases_are_printable_words() {
        assert!(check_legal_basis("Art. 17(3)(b): invoices kept 10 years").is_ok());
        for bad in ["", "  ", "\u{200b}", "\u{200b}\u{feff} \u{2060}", "a\u{0}b"] {
            assert!(check_legal_basis(bad).is_err(), "{bad:?}");
        }
        assert!(check_legal_basis(&"x".repeat(8 << 20)).is_err());
        assert!(
            check_legal_basis("Art. 17(3)(b) \u{202e}sraey 01 tpek").is_err(),
            "a right-to-left override"
        );
        assert!(check_label("customers").is_ok());
        assert!(check_label("a\u{2066}b").is_err());
    }

    #[test]
    fn field_values_are_bounded_json() {
        for good in [
            "\"a@example.org\"",
            "42",
            "null",
            "{\"a\":[1,2,{\"b\":\"]]]\"}]}",
        ] {
            assert!(check_json_value(good).is_ok(), "{good}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for bad in ["a@example.org", "{", deep.as_str()] {
            assert!(check_json_value(bad).is_err(), "{bad}");
        }
    }
}
