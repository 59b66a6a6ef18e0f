//! The host's own types for what crosses the contract: the same whatever contract version
//! a plugin implements. Each version's generated types convert to and from them
//! (`From` impls below), so that the rest of the host never names a version.
//!
//! A 0.1.0 plugin says less than a 0.2.0 one: its records carry no `matched` or `via`,
//! its erasures name no masked fields, and it has no `verify`, `sweep` or `expired`.

use super::bindings::{since_v0_1_0 as v1, since_v0_2_0 as v2};
use serde::{Deserialize, Serialize};

use v1::oubli::connector::types as t1;
use v2::oubli::connector0_2_0::types as t2;

/// One way to recognise the data subject in a system, e.g. `email` = `a@example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub kind: String,
    pub value: String,
}

/// The data subject of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub request_id: String,
    pub identities: Vec<Identity>,
}

/// How an identity matched a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    Exact,
    Normalised,
}

/// Why a record is the subject's: one identity that matched one of its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    pub kind: String,
    pub field: String,
    pub how: MatchKind,
}

/// A pointer to one record that holds the subject's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    pub collection: String,
    pub key: String,
    pub categories: Vec<String>,
    /// The identities that matched the record itself (contract 0.2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<Match>,
    /// The record it was reached through, `collection/key` (contract 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// One field of an exported record; `value` is JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub category: Option<String>,
}

/// One record of the subject's data, exported by `access`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalRecord {
    pub collection: String,
    pub key: String,
    pub fields: Vec<Field>,
}

/// One page of an export; `next` is the cursor of the following one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub records: Vec<PersonalRecord>,
    pub next: Option<String>,
}

/// What erasure did to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Deleted,
    /// The fields masked (none named by a 0.1 plugin).
    Anonymised(Vec<String>),
    Retained {
        legal_basis: String,
        masked: Vec<String>,
    },
}

/// The end state of one record after `erase`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    pub collection: String,
    pub key: String,
    pub outcome: Outcome,
}

/// One change asked for by a rectification; `value` is JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub collection: Option<String>,
    pub field: String,
    pub value: String,
}

/// What `rectify` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rectified {
    pub changed: Vec<RecordRef>,
    /// The positions of the changes this system has no place for (contract 0.2).
    pub not_applicable: Vec<u32>,
}

/// What a record is now, read back by its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "fields", rename_all = "snake_case")]
pub enum RecordState {
    Gone,
    /// Present without the subject's data; the fields that were masked.
    Cleared(Vec<String>),
    /// Present with the subject's data in these fields.
    Holds(Vec<String>),
}

/// The state of one record given to `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub collection: String,
    pub key: String,
    pub state: RecordState,
}

/// One place `sweep` found an identity value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepHit {
    pub collection: String,
    pub key: String,
    pub field: String,
    pub kind: String,
}

/// What `sweep` searched and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub covered: Vec<String>,
    pub skipped: Vec<String>,
    pub hits: Vec<SweepHit>,
    pub cut_short: bool,
}

/// A page of subjects whose retention has run out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredPage {
    pub subjects: Vec<Vec<Identity>>,
    pub next: Option<String>,
}

/// The actions a connector can carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Locate,
    Access,
    Rectify,
    Erase,
    Verify,
    Sweep,
    Expired,
}

/// What a connector tells about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    pub actions: Vec<Action>,
    pub identity_kinds: Vec<String>,
    pub categories: Vec<String>,
}

/// Why a plugin's action failed, as it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    Unavailable(String),
    Denied(String),
    InvalidConfig(String),
    Failed(String),
}

/// The conversions whose shape is the same in every contract version.
macro_rules! same_in_every_version {
    ($t:ident) => {
        impl From<&Identity> for $t::Identity {
            fn from(i: &Identity) -> Self {
                $t::Identity {
                    kind: i.kind.clone(),
                    value: i.value.clone(),
                }
            }
        }

        impl From<&Subject> for $t::Subject {
            fn from(s: &Subject) -> Self {
                $t::Subject {
                    request_id: s.request_id.clone(),
                    identities: s.identities.iter().map(Into::into).collect(),
                }
            }
        }

        impl From<&Change> for $t::Change {
            fn from(c: &Change) -> Self {
                $t::Change {
                    collection: c.collection.clone(),
                    field: c.field.clone(),
                    value: c.value.clone(),
                }
            }
        }

        impl From<$t::Error> for GuestError {
            fn from(e: $t::Error) -> Self {
                match e {
                    $t::Error::Unavailable(m) => GuestError::Unavailable(m),
                    $t::Error::Denied(m) => GuestError::Denied(m),
                    $t::Error::InvalidConfig(m) => GuestError::InvalidConfig(m),
                    $t::Error::Failed(m) => GuestError::Failed(m),
                }
            }
        }

        impl From<$t::Page> for Page {
            fn from(p: $t::Page) -> Self {
                Page {
                    records: p
                        .records
                        .into_iter()
                        .map(|r| PersonalRecord {
                            collection: r.collection,
                            key: r.key,
                            fields: r
                                .fields
                                .into_iter()
                                .map(|f| Field {
                                    name: f.name,
                                    value: f.value,
                                    category: f.category,
                                })
                                .collect(),
                        })
                        .collect(),
                    next: p.next,
                }
            }
        }
    };
}

same_in_every_version!(t1);
same_in_every_version!(t2);

// Contract 0.1.0.

impl From<t1::RecordRef> for RecordRef {
    fn from(r: t1::RecordRef) -> Self {
        RecordRef {
            collection: r.collection,
            key: r.key,
            categories: r.categories,
            matched: Vec::new(),
            via: None,
        }
    }
}

impl From<t1::Erased> for Erased {
    fn from(e: t1::Erased) -> Self {
        Erased {
            collection: e.collection,
            key: e.key,
            outcome: match e.outcome {
                t1::Outcome::Deleted => Outcome::Deleted,
                t1::Outcome::Anonymised => Outcome::Anonymised(Vec::new()),
                t1::Outcome::Retained(legal_basis) => Outcome::Retained {
                    legal_basis,
                    masked: Vec::new(),
                },
            },
        }
    }
}

impl From<t1::Info> for Info {
    fn from(i: t1::Info) -> Self {
        Info {
            name: i.name,
            version: i.version,
            description: i.description,
            actions: i
                .actions
                .into_iter()
                .map(|a| match a {
                    t1::Action::Locate => Action::Locate,
                    t1::Action::Access => Action::Access,
                    t1::Action::Rectify => Action::Rectify,
                    t1::Action::Erase => Action::Erase,
                })
                .collect(),
            identity_kinds: i.identity_kinds,
            categories: i.categories,
        }
    }
}

// Contract 0.2.0.

impl From<t2::Identity> for Identity {
    fn from(i: t2::Identity) -> Self {
        Identity {
            kind: i.kind,
            value: i.value,
        }
    }
}

impl From<&RecordRef> for t2::RecordRef {
    fn from(r: &RecordRef) -> Self {
        t2::RecordRef {
            collection: r.collection.clone(),
            key: r.key.clone(),
            categories: r.categories.clone(),
            matched: r
                .matched
                .iter()
                .map(|m| t2::Match {
                    kind: m.kind.clone(),
                    field: m.field.clone(),
                    how: match m.how {
                        MatchKind::Exact => t2::MatchKind::Exact,
                        MatchKind::Normalised => t2::MatchKind::Normalised,
                    },
                })
                .collect(),
            via: r.via.clone(),
        }
    }
}

impl From<t2::RecordRef> for RecordRef {
    fn from(r: t2::RecordRef) -> Self {
        RecordRef {
            collection: r.collection,
            key: r.key,
            categories: r.categories,
            matched: r
                .matched
                .into_iter()
                .map(|m| Match {
                    kind: m.kind,
                    field: m.field,
                    how: match m.how {
                        t2::MatchKind::Exact => MatchKind::Exact,
                        t2::MatchKind::Normalised => MatchKind::Normalised,
                    },
                })
                .collect(),
            via: r.via,
        }
    }
}

impl From<t2::Erased> for Erased {
    fn from(e: t2::Erased) -> Self {
        Erased {
            collection: e.collection,
            key: e.key,
            outcome: match e.outcome {
                t2::Outcome::Deleted => Outcome::Deleted,
                t2::Outcome::Anonymised(masked) => Outcome::Anonymised(masked),
                t2::Outcome::Retained(r) => Outcome::Retained {
                    legal_basis: r.legal_basis,
                    masked: r.masked,
                },
            },
        }
    }
}

impl From<t2::Rectified> for Rectified {
    fn from(r: t2::Rectified) -> Self {
        Rectified {
            changed: r.changed.into_iter().map(Into::into).collect(),
            not_applicable: r.not_applicable,
        }
    }
}

impl From<t2::Verified> for Verified {
    fn from(v: t2::Verified) -> Self {
        Verified {
            collection: v.collection,
            key: v.key,
            state: match v.state {
                t2::RecordState::Gone => RecordState::Gone,
                t2::RecordState::Cleared(fields) => RecordState::Cleared(fields),
                t2::RecordState::Holds(fields) => RecordState::Holds(fields),
            },
        }
    }
}

impl From<t2::SweepReport> for SweepReport {
    fn from(s: t2::SweepReport) -> Self {
        SweepReport {
            covered: s.covered,
            skipped: s.skipped,
            hits: s
                .hits
                .into_iter()
                .map(|h| SweepHit {
                    collection: h.collection,
                    key: h.key,
                    field: h.field,
                    kind: h.kind,
                })
                .collect(),
            cut_short: s.cut_short,
        }
    }
}

impl From<t2::ExpiredPage> for ExpiredPage {
    fn from(p: t2::ExpiredPage) -> Self {
        ExpiredPage {
            subjects: p
                .subjects
                .into_iter()
                .map(|s| s.into_iter().map(Into::into).collect())
                .collect(),
            next: p.next,
        }
    }
}

impl From<t2::Info> for Info {
    fn from(i: t2::Info) -> Self {
        Info {
            name: i.name,
            version: i.version,
            description: i.description,
            actions: i
                .actions
                .into_iter()
                .map(|a| match a {
                    t2::Action::Locate => Action::Locate,
                    t2::Action::Access => Action::Access,
                    t2::Action::Rectify => Action::Rectify,
                    t2::Action::Erase => Action::Erase,
                    t2::Action::Verify => Action::Verify,
                    t2::Action::Sweep => Action::Sweep,
                    t2::Action::Expired => Action::Expired,
                })
                .collect(),
            identity_kinds: i.identity_kinds,
            categories: i.categories,
        }
    }
}
