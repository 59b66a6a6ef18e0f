//! The SDK for oubli connector plugins.
//!
//! A connector finds one data subject's personal data in one connected system and
//! exports, rectifies or erases it. You implement [`Connector`] on a type, call
//! [`export_connector!`] once, and build with `cargo build --release --target
//! wasm32-wasip2`. oubli runs every call in a fresh sandboxed instance: keep no state in
//! globals between calls.
//!
//! The host's capabilities have typed helpers here, each usable only when the connected
//! system grants it:
//! - [`log`] and [`config`] (capability `host`);
//! - [`sql`]: parameterised statements that the host runs against the system's database
//!   (capability `sql`); the connection URL never reaches the plugin;
//! - [`http`]: outgoing HTTP to the system's allow-listed hosts (capability `http`), with
//!   `{{secret:NAME}}` placeholders in header values that the host fills in on the way
//!   out.
//!
//! # Example
//!
//! A connector for a newsletter table in the system's database:
//!
//! ```no_run
//! use oubli_connector::{
//!     export_connector, sql, Action, Connector, Erased, Error, Field, Info, MatchKind, Outcome,
//!     Page, PersonalRecord, RecordRef, Result, Subject,
//! };
//!
//! struct Newsletter;
//!
//! fn find(subject: &Subject) -> Result<Vec<(i64, String)>> {
//!     let Some(email) = subject.identity("email") else { return Ok(Vec::new()) };
//!     let rows = sql::query(
//!         &format!("SELECT id, email FROM subscribers WHERE email = {}", sql::placeholder(1)),
//!         vec![sql::Value::Text(email.to_owned())],
//!     )?;
//!     rows.rows
//!         .iter()
//!         .map(|row| match (&row[0], &row[1]) {
//!             (sql::Value::Integer(id), sql::Value::Text(email)) => Ok((*id, email.clone())),
//!             _ => Err(Error::Failed("unexpected column types".into())),
//!         })
//!         .collect()
//! }
//!
//! impl Connector for Newsletter {
//!     fn describe() -> Info {
//!         Info {
//!             name: "newsletter".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Newsletter subscribers".into(),
//!             actions: vec![Action::Locate, Action::Access, Action::Erase],
//!             identity_kinds: vec!["email".into()],
//!             categories: vec!["contact".into()],
//!         }
//!     }
//!
//!     fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
//!         Ok(find(&subject)?
//!             .into_iter()
//!             .map(|(id, _)| {
//!                 RecordRef::new("subscribers", id.to_string(), vec!["contact".into()])
//!                     .matched_by("email", "email", MatchKind::Exact)
//!             })
//!             .collect())
//!     }
//!
//!     fn access(subject: Subject, _cursor: Option<String>) -> Result<Page> {
//!         let records = find(&subject)?
//!             .into_iter()
//!             .map(|(id, email)| PersonalRecord {
//!                 collection: "subscribers".into(),
//!                 key: id.to_string(),
//!                 fields: vec![Field::new("email", &email, Some("contact"))],
//!             })
//!             .collect();
//!         Ok(Page { records, next: None })
//!     }
//!
//!     fn erase(subject: Subject) -> Result<Vec<Erased>> {
//!         let found = find(&subject)?;
//!         let deletes = found
//!             .iter()
//!             .map(|(id, _)| {
//!                 sql::Statement::new(format!("DELETE FROM subscribers WHERE id = {}", sql::placeholder(1)))
//!                     .bind(sql::Value::Integer(*id))
//!             })
//!             .collect();
//!         sql::transaction(deletes)?;
//!         Ok(found
//!             .into_iter()
//!             .map(|(id, _)| Erased {
//!                 collection: "subscribers".into(),
//!                 key: id.to_string(),
//!                 outcome: Outcome::Deleted,
//!             })
//!             .collect())
//!     }
//! }
//!
//! export_connector!(Newsletter);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit/0.2.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_oubli_plugin",
        default_bindings_module: "oubli_connector::bindings",
        generate_all,
    });
}

pub mod http;

pub use bindings::oubli::connector0_2_0::types::{
    Action, Change, Erased, Error, ExpiredPage, Field, Identity, Info, Match, MatchKind, Outcome,
    Page, PersonalRecord, RecordRef, RecordState, Rectified, Retention, Subject, SweepHit,
    SweepReport, Verified,
};

/// The error type of the capabilities, which contract 0.2.0 imports from 0.1.0 unchanged.
use bindings::oubli::connector0_1_0::types::Error as CapabilityError;

impl From<CapabilityError> for Error {
    fn from(error: CapabilityError) -> Self {
        match error {
            CapabilityError::Unavailable(m) => Error::Unavailable(m),
            CapabilityError::Denied(m) => Error::Denied(m),
            CapabilityError::InvalidConfig(m) => Error::InvalidConfig(m),
            CapabilityError::Failed(m) => Error::Failed(m),
        }
    }
}

impl RecordRef {
    /// A record reached through `collection` and `key`, holding `categories`, whose
    /// reasons are added with [`RecordRef::matched_by`] or [`RecordRef::through`].
    pub fn new(collection: &str, key: impl Into<String>, categories: Vec<String>) -> Self {
        RecordRef {
            collection: collection.to_owned(),
            key: key.into(),
            categories,
            matched: Vec::new(),
            via: None,
        }
    }

    /// Says that the identity of `kind` matched the record's `field`.
    pub fn matched_by(mut self, kind: &str, field: &str, how: MatchKind) -> Self {
        self.matched.push(Match {
            kind: kind.to_owned(),
            field: field.to_owned(),
            how,
        });
        self
    }

    /// Says that the record was reached through `parent` (`collection/key`).
    pub fn through(mut self, parent: impl Into<String>) -> Self {
        self.via = Some(parent.into());
        self
    }
}

/// The result of every connector action.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// What a connector implements. Each function runs in a fresh instance.
///
/// The contract (see `wit/0.2.0/connector.wit`): `locate` only reads; `access` pages with
/// an opaque cursor; `erase` is idempotent and reports every record's end state, with the
/// legal basis for anything it retains; only [`Error::Unavailable`] is retried by the
/// host.
pub trait Connector {
    /// Describes the connector without touching the system.
    fn describe() -> Info;

    /// Checks the system's configuration against the system, changing nothing. The host
    /// calls it when the system is connected; the default accepts any configuration.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the configuration path that is wrong.
    fn validate() -> Result<()> {
        Ok(())
    }

    /// Finds the subject's records.
    ///
    /// # Errors
    /// An [`Error`] saying why the system could not be searched.
    fn locate(subject: Subject) -> Result<Vec<RecordRef>>;

    /// Exports one page of the subject's data.
    ///
    /// # Errors
    /// An [`Error`] saying why the data could not be read.
    fn access(subject: Subject, cursor: Option<String>) -> Result<Page>;

    /// Applies a rectification. Connectors that cannot rectify keep this default, and
    /// leave [`Action::Rectify`] out of their [`Info`].
    ///
    /// # Errors
    /// An [`Error`] saying why the change could not be made.
    fn rectify(subject: Subject, changes: Vec<Change>) -> Result<Rectified> {
        let _ = (subject, changes);
        Err(Error::Failed(
            "this connector does not support rectification".into(),
        ))
    }

    /// Reads each record back by its collection and key (never by a search) and says
    /// what it is now. Connectors that cannot keep this default and leave
    /// [`Action::Verify`] out of their [`Info`]: their erasures are then verified by
    /// `locate` only, and the certificate says so.
    ///
    /// # Errors
    /// An [`Error`] saying why the records could not be read.
    fn verify(subject: Subject, records: Vec<RecordRef>) -> Result<Vec<Verified>> {
        let _ = (subject, records);
        Err(Error::Failed(
            "this connector does not support verify".into(),
        ))
    }

    /// Searches for the subject's identity values beyond the configured matching, within
    /// `budget` statements or requests. Connectors that cannot keep this default and
    /// leave [`Action::Sweep`] out of their [`Info`].
    ///
    /// # Errors
    /// An [`Error`] saying why the system could not be searched.
    fn sweep(subject: Subject, budget: u32) -> Result<SweepReport> {
        let _ = (subject, budget);
        Err(Error::Failed(
            "this connector does not support sweep".into(),
        ))
    }

    /// Lists the subjects whose retention under `rule` has run out, a page at a time.
    /// Connectors that cannot keep this default and leave [`Action::Expired`] out.
    ///
    /// # Errors
    /// An [`Error`] saying why the system could not be searched.
    fn expired(rule: String, cursor: Option<String>) -> Result<ExpiredPage> {
        let _ = (rule, cursor);
        Err(Error::Failed(
            "this connector does not support retention rules".into(),
        ))
    }

    /// Erases the subject's data, idempotently.
    ///
    /// # Errors
    /// An [`Error`] saying why the data could not be erased.
    fn erase(subject: Subject) -> Result<Vec<Erased>>;
}

impl Subject {
    /// The value of the first identity of the given kind, if the DPO gave one.
    pub fn identity(&self, kind: &str) -> Option<&str> {
        self.identities
            .iter()
            .find(|identity| identity.kind == kind)
            .map(|identity| identity.value.as_str())
    }
}

impl Subject {
    /// The error for a subject none of whose identity kinds the system searches by: the
    /// request must fail rather than "find nothing" and pass for done.
    pub fn unsearchable<'a>(&self, searched: impl IntoIterator<Item = &'a str>) -> Error {
        let mut kinds: Vec<&str> = searched.into_iter().collect();
        kinds.sort_unstable();
        kinds.dedup();
        let given: Vec<&str> = self.identities.iter().map(|i| i.kind.as_str()).collect();
        Error::InvalidConfig(format!(
            "none of the subject's identity kinds ({}) is searched by this system, which searches by {}",
            given.join(", "),
            kinds.join(", ")
        ))
    }
}

impl Change {
    /// Whether the change applies to `collection` (to every one when it names none).
    pub fn targets(&self, collection: &str) -> bool {
        self.collection.as_deref().is_none_or(|c| c == collection)
    }

    /// The new value, parsed from its JSON text.
    ///
    /// # Errors
    /// [`Error::Failed`] when it is not JSON.
    pub fn parsed_value(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.value)
            .map_err(|e| Error::Failed(format!("the new value of {} is not JSON: {e}", self.field)))
    }
}

impl Field {
    /// A field holding a string value, encoded as JSON text.
    pub fn new(name: &str, value: &str, category: Option<&str>) -> Self {
        Self::json(name, serde_json::Value::String(value.to_owned()), category)
    }

    /// A field holding any JSON value.
    pub fn json(name: &str, value: serde_json::Value, category: Option<&str>) -> Self {
        Field {
            name: name.to_owned(),
            value: value.to_string(),
            category: category.map(str::to_owned),
        }
    }
}

/// Exports a [`Connector`] implementation as the plugin's `oubli:connector/connector`.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        const _: () = {
            struct OubliConnectorExport;

            impl $crate::bindings::exports::oubli::connector0_2_0::connector::Guest for OubliConnectorExport {
                fn describe() -> $crate::Info {
                    <$connector as $crate::Connector>::describe()
                }
                fn validate() -> $crate::Result<()> {
                    <$connector as $crate::Connector>::validate()
                }
                fn locate(subject: $crate::Subject) -> $crate::Result<Vec<$crate::RecordRef>> {
                    <$connector as $crate::Connector>::locate(subject)
                }
                fn access(
                    subject: $crate::Subject,
                    cursor: Option<String>,
                ) -> $crate::Result<$crate::Page> {
                    <$connector as $crate::Connector>::access(subject, cursor)
                }
                fn rectify(
                    subject: $crate::Subject,
                    changes: Vec<$crate::Change>,
                ) -> $crate::Result<$crate::Rectified> {
                    <$connector as $crate::Connector>::rectify(subject, changes)
                }
                fn erase(subject: $crate::Subject) -> $crate::Result<Vec<$crate::Erased>> {
                    <$connector as $crate::Connector>::erase(subject)
                }
                fn verify(
                    subject: $crate::Subject,
                    records: Vec<$crate::RecordRef>,
                ) -> $crate::Result<Vec<$crate::Verified>> {
                    <$connector as $crate::Connector>::verify(subject, records)
                }
                fn sweep(subject: $crate::Subject, budget: u32) -> $crate::Result<$crate::SweepReport> {
                    <$connector as $crate::Connector>::sweep(subject, budget)
                }
                fn expired(
                    rule: String,
                    cursor: Option<String>,
                ) -> $crate::Result<$crate::ExpiredPage> {
                    <$connector as $crate::Connector>::expired(rule, cursor)
                }
            }

            $crate::bindings::__export_oubli_plugin!(OubliConnectorExport with_types_in $crate::bindings);
        };
    };
}

/// What erasure does to a collection's records, in a connector's configuration
/// (`erase.action = "delete" | "anonymise" | "retain"`), as both first-party connectors
/// read it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EraseAction {
    /// Delete the subject's records.
    #[default]
    Delete,
    /// Keep the records but overwrite their identifying fields.
    Anonymise,
    /// Keep the records under a legal basis (Art. 17(3)), overwriting the listed fields.
    Retain,
}

impl EraseAction {
    /// The end state of a record this action erased.
    pub fn outcome(self, legal_basis: Option<&str>, masked: Vec<String>) -> Outcome {
        match self {
            EraseAction::Delete => Outcome::Deleted,
            EraseAction::Anonymise => Outcome::Anonymised(masked),
            EraseAction::Retain => Outcome::Retained(Retention {
                legal_basis: legal_basis.unwrap_or_default().to_owned(),
                masked,
            }),
        }
    }

    /// What is missing from the settings, as (the setting, why): `retain` needs a legal
    /// basis, `anonymise` something to overwrite (`overwrites`, named `overwrite_key`).
    pub fn missing(
        self,
        legal_basis: Option<&str>,
        overwrites: usize,
        overwrite_key: &'static str,
    ) -> Option<(&'static str, &'static str)> {
        match self {
            EraseAction::Retain if legal_basis.is_none_or(|b| b.trim().is_empty()) => {
                Some(("legal_basis", "retain needs the legal basis (Art. 17(3))"))
            }
            EraseAction::Anonymise if overwrites == 0 => {
                Some((overwrite_key, "anonymise needs what to overwrite"))
            }
            _ => None,
        }
    }
}

/// Log lines in oubli's log, tagged with plugin, system and request (capability `host`).
///
/// Never log identity values or exported data: oubli's logs are not erased.
pub mod log {
    use crate::bindings::oubli::connector0_1_0::host::{self, Level};

    pub fn trace(message: &str) {
        host::log(Level::Trace, message);
    }
    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

/// What the plugin keeps between its calls on the system (capability `host`): each call
/// runs in a fresh instance, so facts the plugin would otherwise read again at every call
/// (a database's catalogue) can be kept here, with what tells whether they still hold.
///
/// The host keeps it in memory, per process, for at most 600 seconds an entry, and forgets
/// it when the system's configuration or plugin changes. Never put personal data in it:
/// an erasure does not reach it. The host refuses a value in which it finds one of the
/// call's identity values or new values, a tripwire for mistakes, not a guarantee.
pub mod memo {
    use crate::bindings::oubli::connector0_2_0::memo as host;

    /// What an earlier call put under `key`, unless it expired or was forgotten.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::get(key)
    }

    /// Keeps `value` under `key` for `seconds` (at most 600).
    ///
    /// # Errors
    /// The host's reason when it refuses: a key over 256 bytes, more than 1 MiB or 32
    /// keys for the system, or a value holding personal data of the call.
    pub fn put(key: &str, value: &[u8], seconds: u32) -> Result<(), String> {
        host::put(key, value, seconds)
    }

    /// Forgets what is under `key`.
    pub fn forget(key: &str) {
        host::forget(key);
    }
}

/// The connected system's `[config]` values (capability `host`).
pub mod config {
    use crate::{Error, Result};

    /// The value of `key` as text: strings as they are, other TOML values as JSON.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::oubli::connector0_1_0::host::config(key)
    }

    /// The value of `key`, or an `invalid-config` error naming the missing key.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the system's configuration does not set `key`.
    pub fn require(key: &str) -> Result<String> {
        get(key).ok_or_else(|| Error::InvalidConfig(format!("config.{key} is not set")))
    }

    /// The value of `key` parsed from JSON into `T`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the key is missing or does not have the shape of `T`;
    /// the message carries the path of the offending value.
    pub fn parse<T: serde::de::DeserializeOwned>(key: &str) -> Result<T> {
        let text = require(key)?;
        serde_json::from_str(&text).map_err(|e| Error::InvalidConfig(format!("config.{key}: {e}")))
    }

    /// The keyed hash of `value` for this system (HMAC-SHA256, 64 hex digits), computed
    /// by the host under a key the plugin never sees: the same value gives the same hash,
    /// so it can replace an identifying value and keep joins and unique constraints.
    pub fn keyed_hash(value: &str) -> String {
        crate::bindings::oubli::connector0_1_0::host::keyed_hash(value)
    }

    /// Whether `text` looks like a [`keyed_hash`] (64 lowercase hex digits): a connector
    /// that finds one in a column to hash leaves it, so a second erasure changes nothing.
    pub fn is_keyed_hash(text: &str) -> bool {
        text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// The identity kinds oubli's documentation names, which a configurable connector (whose
/// configuration maps kinds to fields) lists in its [`Info`]: a DPO can file any of them.
pub const WELL_KNOWN_KINDS: [&str; 8] = [
    "email",
    "phone",
    "customer-id",
    "user-id",
    "account",
    "name",
    "birth-date",
    "address",
];

/// Whether `text` holds `value` as a whole: not inside a longer address, number or word
/// (`ann@x.org` is not in `joann@x.org`, nor `jane@x.org` in `jane@x.org.uk`). Compare
/// lower-cased texts for a match in any case. What `sweep` and `verify` use to find an
/// identity value inside free text.
pub fn mentions(text: &str, value: &str) -> bool {
    !mention_spans(text, value).is_empty()
}

/// Where `text` holds `value` as a whole value, as [`mentions`] decides: the byte ranges
/// of each occurrence, in order, to replace only them.
pub fn mention_spans(text: &str, value: &str) -> Vec<std::ops::Range<usize>> {
    if value.is_empty() {
        return Vec::new();
    }
    let part_of = |c: char| c.is_alphanumeric() || "._%+-@".contains(c);
    text.match_indices(value)
        .filter(|(at, _)| {
            let before = text[..*at].chars().next_back();
            // Punctuation that ends a sentence or a clause ends the value too, unless more
            // of an address follows it (`jane@x.org.` is a mention, `jane@x.org.uk` is not).
            let rest = &text[at + value.len()..];
            let mut after = rest.chars();
            let ends = match after.next() {
                None => true,
                Some(c) if c.is_alphanumeric() || c == '@' || c == '_' => false,
                Some(c) if ".%+-".contains(c) => !after.next().is_some_and(part_of),
                Some(_) => true,
            };
            !before.is_some_and(part_of) && ends
        })
        .map(|(at, _)| at..at + value.len())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_mention_is_a_whole_value_not_part_of_another() {
        assert!(mentions(
            "call back jane@example.org today",
            "jane@example.org"
        ));
        assert!(mentions("jane@example.org", "jane@example.org"));
        assert!(mentions("(jane@example.org)", "jane@example.org"));
        assert!(!mentions("joann@example.org", "ann@example.org"));
        assert!(!mentions("jane@example.org.uk", "jane@example.org"));
        assert!(!mentions("+33 6 12 34 56 789", "+33 6 12 34 56 78"));
        assert!(!mentions("anything", ""));
        assert!(mentions("write to jane@example.org.", "jane@example.org"));
        assert!(mentions("jane@example.org. Thanks", "jane@example.org"));
        assert!(!mentions("jane@example.org-old", "jane@example.org"));
    }
}

/// SQL against the connected system's database, run by the host (capability `sql`).
pub mod sql {
    use crate::Result;
    use crate::bindings::oubli::connector0_1_0::sql as host;
    pub use crate::bindings::oubli::connector0_1_0::sql::{Dialect, Rows, Statement, Value};

    /// How many rows [`query`] asks for at most.
    pub const MAX_ROWS: u32 = 10_000;

    /// The database engine of the system.
    pub fn dialect() -> Dialect {
        // Asked of the host once per call (each call has an instance of its own): quoting
        // and placeholders ask for it at every identifier.
        static DIALECT: std::sync::OnceLock<Dialect> = std::sync::OnceLock::new();
        *DIALECT.get_or_init(host::database_dialect)
    }

    /// The type a value is cast to, to compare it as text, in this system's dialect
    /// (`CAST(x AS TEXT)`; MySQL's `CHAR`).
    pub fn text_type() -> &'static str {
        match dialect() {
            Dialect::Mysql => "CHAR",
            Dialect::Sqlite | Dialect::Postgres => "TEXT",
        }
    }

    /// A condition that one of the texts `expressions` (at least one; cast them to text)
    /// holds `value`, given in lower case, whatever the case of the text, with the
    /// parameters it takes in order (PostgreSQL's numbered from `first`; the others are
    /// `?`): `instr(lower(text), value) > 0` for each text (PostgreSQL's `strpos`, under
    /// the database's default collation, which a nondeterministic one is not), which
    /// on SQLite folds ASCII letters only. On SQLite it is one call per row and 100 texts
    /// of a function oubli's host provides, `oubli_contains_folded(value, text, …)`, which
    /// does the same without a lowered copy of each text.
    pub fn contains_text_in(
        expressions: &[String],
        value: &str,
        first: usize,
    ) -> (String, Vec<Value>) {
        let value = || Value::Text(value.to_owned());
        match dialect() {
            // SQLite takes at most 127 arguments per call.
            Dialect::Sqlite => {
                let calls: Vec<String> = expressions
                    .chunks(100)
                    .map(|texts| format!("oubli_contains_folded(?, {})", texts.join(", ")))
                    .collect();
                (
                    format!("({})", calls.join(" OR ")),
                    calls.iter().map(|_| value()).collect(),
                )
            }
            Dialect::Postgres => {
                let tests: Vec<String> = expressions
                    .iter()
                    // A text under a nondeterministic collation refuses `strpos`: it is
                    // searched under the database's default one.
                    .map(|e| format!("strpos(lower(({e}) COLLATE \"default\"), ${first}) > 0"))
                    .collect();
                (format!("({})", tests.join(" OR ")), vec![value()])
            }
            Dialect::Mysql => {
                let tests: Vec<String> = expressions
                    .iter()
                    .map(|e| format!("instr(lower({e}), ?) > 0"))
                    .collect();
                (
                    format!("({})", tests.join(" OR ")),
                    expressions.iter().map(|_| value()).collect(),
                )
            }
        }
    }

    /// The function that finds a substring (`instr(text, part)`; PostgreSQL's `strpos`),
    /// greater than 0 when it is found.
    pub fn find_function() -> &'static str {
        match dialect() {
            Dialect::Postgres => "strpos",
            Dialect::Sqlite | Dialect::Mysql => "instr",
        }
    }

    /// The placeholder for the `n`-th parameter (1-based) in this system's dialect.
    pub fn placeholder(n: usize) -> String {
        match dialect() {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite | Dialect::Mysql => "?".to_owned(),
        }
    }

    /// Quotes an identifier (table or column name) for this system's dialect.
    pub fn ident(name: &str) -> String {
        let quote = match dialect() {
            Dialect::Mysql => '`',
            Dialect::Sqlite | Dialect::Postgres => '"',
        };
        // (Written out: connectors quote every name of every statement they build.)
        let mut quoted = String::with_capacity(name.len() + 2);
        quoted.push(quote);
        for c in name.chars() {
            if c == quote {
                quoted.push(quote);
            }
            quoted.push(c);
        }
        quoted.push(quote);
        quoted
    }

    impl Statement {
        /// A statement with no parameters yet.
        pub fn new(sql: impl Into<String>) -> Self {
            Statement {
                sql: sql.into(),
                params: Vec::new(),
            }
        }

        /// Binds the next parameter.
        pub fn bind(mut self, value: Value) -> Self {
            self.params.push(value);
            self
        }
    }

    impl Value {
        /// The value as JSON, for a [`crate::Field`].
        pub fn to_json(&self) -> serde_json::Value {
            match self {
                Value::Null => serde_json::Value::Null,
                Value::Boolean(b) => (*b).into(),
                Value::Integer(i) => (*i).into(),
                Value::Real(r) => serde_json::Number::from_f64(*r)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                Value::Text(t) => t.clone().into(),
                Value::Blob(b) => b
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
                    .into(),
            }
        }

        /// The value from JSON, as the host binds it.
        pub fn from_json(value: &serde_json::Value) -> Self {
            match value {
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Bool(b) => Value::Boolean(*b),
                serde_json::Value::Number(n) => n
                    .as_i64()
                    .map(Value::Integer)
                    .unwrap_or_else(|| Value::Real(n.as_f64().unwrap_or_default())),
                serde_json::Value::String(s) => Value::Text(s.clone()),
                other => Value::Text(other.to_string()),
            }
        }

        /// The value as text, as used in record keys.
        pub fn to_key(&self) -> String {
            match self {
                Value::Text(t) => t.clone(),
                other => other.to_json().to_string(),
            }
        }
    }

    /// Runs a query and returns its rows (at most [`MAX_ROWS`]).
    ///
    /// # Errors
    /// `unavailable` when the database cannot be reached, `invalid-config` for a statement
    /// the database rejects.
    pub fn query(sql: &str, params: Vec<Value>) -> Result<Rows> {
        host::query(
            &Statement {
                sql: sql.to_owned(),
                params,
            },
            MAX_ROWS,
        )
        .map_err(Into::into)
    }

    /// Reads one row back by its key, for [`Connector::verify`](crate::Connector::verify)
    /// over SQL tables: [`RecordState::Gone`](crate::RecordState::Gone) when no row has
    /// that key; else the `personal` columns that are still set
    /// ([`RecordState::Holds`](crate::RecordState::Holds)), or, when none is,
    /// [`RecordState::Cleared`](crate::RecordState::Cleared) of them. The key is compared
    /// as text, so it works whatever the key column's type (without its index).
    ///
    /// # Errors
    /// As [`query`].
    pub fn read_back(
        table: &str,
        key_column: &str,
        key: &str,
        personal: &[&str],
    ) -> Result<crate::RecordState> {
        let text = text_type();
        let list = if personal.is_empty() {
            "1".to_owned()
        } else {
            personal
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let rows = query(
            &format!(
                "SELECT {list} FROM {} WHERE CAST({} AS {text}) = {}",
                ident(table),
                ident(key_column),
                placeholder(1)
            ),
            vec![Value::Text(key.to_owned())],
        )?;
        let Some(row) = rows.rows.first() else {
            return Ok(crate::RecordState::Gone);
        };
        let set: Vec<String> = personal
            .iter()
            .zip(row)
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(c, _)| (*c).to_owned())
            .collect();
        Ok(if set.is_empty() {
            crate::RecordState::Cleared(personal.iter().map(|c| (*c).to_owned()).collect())
        } else {
            crate::RecordState::Holds(set)
        })
    }

    /// Runs a statement with [`query`]'s row limit.
    ///
    /// # Errors
    /// As [`query`].
    pub fn query_statement(statement: &Statement) -> Result<Rows> {
        host::query(statement, MAX_ROWS).map_err(Into::into)
    }

    /// Runs the statements in one transaction; returns the rows each one changed. Each
    /// statement is exactly one SQL statement.
    ///
    /// # Errors
    /// As [`query`]; when one statement fails, none takes effect. `denied` outside
    /// `rectify` and `erase`, which alone may write.
    pub fn transaction(statements: Vec<Statement>) -> Result<Vec<u64>> {
        host::transaction(&statements).map_err(Into::into)
    }
}
