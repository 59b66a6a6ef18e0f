//! The dataset configuration: which tables hold personal data, how they reach the data
//! subject, and what erasure does to each.

pub use oubli_connector::EraseAction;
use oubli_connector::sql::Value;
use oubli_connector::{Error, Result, config};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub tables: Vec<Table>,
    /// Identity kinds others may share (a household's phone, a name): they confirm a row
    /// that a strong identity reached, or reach it on their own when `weak_agreement` of
    /// them agree; a row only one of them matches is exported as unconfirmed, never
    /// erased.
    #[serde(default = "default_weak")]
    pub weak_identities: Vec<String>,
    /// How many weak identities must match a row to reach it without a strong one
    /// (0: never).
    #[serde(default = "default_agreement")]
    pub weak_agreement: usize,
    /// Retention rules by name, for `expired`: which subjects of a table have outlived
    /// their period.
    #[serde(default)]
    pub retention: BTreeMap<String, crate::retention::Rule>,
    /// The identity columns of an integer type, as (table, column), read from the
    /// database's catalogue: their values are bound as integers, and a value that is not
    /// an integer matches nothing there (PostgreSQL refuses to compare an integer column
    /// with text; MySQL would convert `'5 OR 1=1'` to 5).
    #[serde(skip)]
    integer_columns: std::collections::BTreeSet<(String, String)>,
    /// The identity columns of PostgreSQL's `uuid` type, as (table, column): a value is
    /// compared as a UUID (in any of the forms PostgreSQL reads), and one that cannot be a
    /// UUID matches nothing there.
    #[serde(skip)]
    uuid_columns: std::collections::BTreeSet<(String, String)>,
    /// The columns that hold JSON documents or arrays, as (table, column): exported as
    /// JSON rather than as the text the host passes them in.
    #[serde(skip)]
    json_columns: std::collections::BTreeSet<(String, String)>,
    /// The columns declared as text, as (table, column): bytes read from them (MySQL's
    /// binary collations) are exported as text.
    #[serde(skip)]
    text_columns: std::collections::BTreeSet<(String, String)>,
    /// On PostgreSQL, table → the declared type of its key when a key read back as text
    /// must be cast to compare with it (`uuid`, `numeric`, an enum…).
    #[serde(skip)]
    key_casts: BTreeMap<String, String>,
    /// On PostgreSQL, the tables whose key is an integer, compared with an integer.
    #[serde(skip)]
    integer_keys: std::collections::BTreeSet<String>,
    /// On MySQL/MariaDB, the tables whose key is an integer or a text, whose text form
    /// names exactly its row: `erase` narrows its statements to the found keys there.
    #[serde(skip)]
    pub narrowed_keys: std::collections::BTreeSet<String>,
    /// On MySQL/MariaDB, the tables whose key is declared NOT NULL: their rows may be
    /// read by the keys each alternative of their condition reaches (`condition`), which
    /// would leave out a row whose key is NULL.
    #[serde(skip)]
    pub never_null_keys: std::collections::BTreeSet<String>,
    /// On SQLite, the tables whose key column has INTEGER or TEXT affinity by its declared
    /// type: such a column compares its values with a key's text as SQLite converts it,
    /// so that its index finds the row.
    #[serde(skip)]
    affine_keys: BTreeMap<String, KeyAffinity>,
    /// The conditions already built from this dataset (see `condition` in `lib.rs`): a
    /// call asks for the same table's rows of the same subject several times (each
    /// child's condition holds its parent's).
    #[serde(skip)]
    pub(crate) conditions: std::cell::RefCell<Vec<crate::Built>>,
}

/// The affinity of a SQLite key column that lets `verify` find a row through its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAffinity {
    Integer,
    Text,
}

/// A table or column name as the database compares names: SQLite folds ASCII only (as its
/// `lower()` does), MySQL any case.
fn fold_name(name: &str) -> String {
    if matches!(
        oubli_connector::sql::dialect(),
        oubli_connector::sql::Dialect::Sqlite
    ) {
        name.to_ascii_lowercase()
    } else {
        name.to_lowercase()
    }
}

fn default_weak() -> Vec<String> {
    ["phone", "name", "birth-date", "address"]
        .map(str::to_owned)
        .to_vec()
}

fn default_agreement() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub name: String,
    /// The primary key column.
    pub key: String,
    /// Identity kind → the column that holds it, e.g. `email = "email"` (matched
    /// exactly), or with a matching rule, e.g.
    /// `email = { column = "email", match = "email" }`.
    #[serde(default)]
    pub identities: BTreeMap<String, IdentityColumn>,
    /// The relation that links this table to the subject through a parent table.
    pub parent: Option<Relation>,
    /// Column → data category, for every column that holds personal data. These columns
    /// are exported by `access` and may be rectified.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Column → the `table.column` it copies (`shipping_phone = "customers.phone"`): a
    /// rectification of the original changes the copy in the same transaction, and an
    /// erasure masks the copy in a kept row as the original is masked (nulled when the
    /// original's rows are deleted), unless `erase.columns` names it.
    #[serde(default)]
    pub copies: BTreeMap<String, String>,
    /// Text columns where people are mentioned (a ticket's body): searched for the
    /// subject's identity values in rows that are not the subject's; exported as the
    /// text around them; erased by replacing only the occurrences.
    #[serde(default)]
    pub mentions: Vec<String>,
    #[serde(default)]
    pub erase: Erase,
}

/// The column that holds one identity kind, and how a value is matched against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityColumn {
    pub column: String,
    pub matching: Matching,
}

/// How an identity value is compared with a column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Matching {
    /// `column = value`: what is stored must be what was typed.
    #[default]
    Exact,
    /// `lower(column) = lower(value)`; an index on `lower(column)` serves it.
    CaseInsensitive,
    /// An e-mail address: trimmed and case-folded on both sides.
    Email,
    /// A phone number: compared by its digits, as stored in international form
    /// (`+33 6 12 34 56 78`, `0033…`) or in national form of `region` (`06 12 34 56 78`).
    Phone { region: Option<String> },
}

impl Matching {
    /// Whether the stored value may differ from the typed one (for `locate`'s `matched`).
    pub fn normalises(&self) -> bool {
        *self != Matching::Exact
    }
}

impl<'de> Deserialize<'de> for IdentityColumn {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        enum Written {
            Column(String),
            Rule(Rule),
        }
        // A string or a table, told apart by what the input holds (an untagged enum
        // would buffer the value and build an error for every rule written as a table).
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = Written;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a column name or a table")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                column: &str,
            ) -> std::result::Result<Written, E> {
                Ok(Written::Column(column.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Written, A::Error> {
                Rule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Written::Rule)
            }
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rule {
            column: String,
            #[serde(rename = "match", default)]
            how: Option<String>,
            region: Option<String>,
        }
        let rule = match deserializer.deserialize_any(Either).map_err(|_| {
            serde::de::Error::custom(
                "an identity is a column name, or { column = \"…\", match = \"exact\" | \"case-insensitive\" | \"email\" | \"phone\", region = \"FR\" }",
            )
        })? {
            Written::Column(column) => return Ok(IdentityColumn { column, matching: Matching::Exact }),
            Written::Rule(rule) => rule,
        };
        let matching = match rule.how.as_deref().unwrap_or("exact") {
            "exact" => Matching::Exact,
            "case-insensitive" => Matching::CaseInsensitive,
            "email" => Matching::Email,
            "phone" => {
                if let Some(region) = &rule.region
                    && crate::phone::calling_code(region).is_none()
                {
                    return Err(serde::de::Error::custom(format!(
                        "region {region:?} is not a region oubli knows the calling code of ({})",
                        crate::phone::REGIONS.join(", ")
                    )));
                }
                Matching::Phone {
                    region: rule.region.as_ref().map(|r| r.to_ascii_uppercase()),
                }
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "match = {other:?}: expected exact, case-insensitive, email or phone"
                )));
            }
        };
        if rule.region.is_some() && !matches!(matching, Matching::Phone { .. }) {
            return Err(serde::de::Error::custom(
                "region is only for match = \"phone\"",
            ));
        }
        Ok(IdentityColumn {
            column: rule.column,
            matching,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    /// The parent table.
    pub table: String,
    /// This table's column that references the parent.
    pub column: String,
    /// The parent's referenced column; the parent's key when left out.
    pub references: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erase {
    #[serde(default)]
    pub action: EraseAction,
    /// For `retain`: the legal basis, as it will appear on the erasure certificate.
    pub legal_basis: Option<String>,
    /// For `anonymise` and `retain`: what each identifying column becomes.
    #[serde(default)]
    pub columns: BTreeMap<String, Mask>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Mask {
    /// `NULL`.
    Null,
    /// The text `[erased]`.
    Redacted,
    /// `erased-<table>-<key>`: unique, for columns with a unique constraint.
    ErasedKey,
    /// The value's keyed hash (HMAC-SHA256 under a key the host keeps, 64 hex digits):
    /// the same value gives the same hash, so joins, grouping and unique constraints
    /// survive. Pseudonymisation, not anonymisation, while oubli keeps the key.
    KeyedHash,
}

impl Mask {
    /// Whether each row gets a value of its own, so rows are changed one by one.
    pub fn per_row(self) -> bool {
        matches!(self, Mask::ErasedKey | Mask::KeyedHash)
    }
}

impl Dataset {
    /// Reads and validates `config.dataset`.
    ///
    /// # Errors
    /// `invalid-config` naming the path of the first problem found.
    pub fn load() -> Result<Self> {
        // SQLite needs the catalogue only to export (declared JSON columns) and to look
        // keys up by their declared type (`verify`): the other calls spare themselves the
        // read.
        if matches!(
            oubli_connector::sql::dialect(),
            oubli_connector::sql::Dialect::Sqlite
        ) {
            return Dataset::parsed();
        }
        Dataset::load_kept()
    }

    /// `config.dataset` parsed and validated, copies masked like their originals; nothing
    /// read from the database.
    fn parsed() -> Result<Self> {
        let mut dataset: Dataset = config::parse("dataset")?;
        dataset.validate()?;
        dataset.mask_copies();
        Ok(dataset)
    }

    /// As [`Dataset::load`], with the columns' declared types on every dialect: what
    /// `access` needs to export each column as its type, and `verify` to look each key up
    /// by its type.
    ///
    /// # Errors
    /// As [`Dataset::load`].
    pub fn load_typed() -> Result<Self> {
        Dataset::load_kept()
    }

    /// As [`Dataset::load`], with the catalogue of the dataset's tables it read.
    ///
    /// # Errors
    /// As [`Dataset::load`].
    pub fn load_with_catalogue() -> Result<(Self, Catalogue)> {
        Dataset::with_catalogue(Catalogue::of)
    }

    /// As [`Dataset::load_with_catalogue`], with the catalogue kept between calls where
    /// that is safe ([`Catalogue::of_kept`]).
    fn load_kept() -> Result<Self> {
        Ok(Dataset::with_catalogue(Catalogue::of_kept)?.0)
    }

    fn with_catalogue(read: fn(&Dataset) -> Result<Catalogue>) -> Result<(Self, Catalogue)> {
        let mut dataset = Dataset::parsed()?;
        let catalogue = read(&dataset)?;
        use oubli_connector::sql::{self, Dialect};
        // SQLite compares an integer column with text by value, and has no UUID type.
        if !matches!(sql::dialect(), Dialect::Sqlite) {
            dataset.integer_columns = identity_columns_of(&dataset, &catalogue, integer_type);
        }
        if matches!(sql::dialect(), Dialect::Postgres) {
            dataset.uuid_columns = identity_columns_of(&dataset, &catalogue, |ty| ty == "uuid");
        }
        dataset.json_columns = dataset
            .tables
            .iter()
            .flat_map(|t| t.columns.keys().map(move |c| (t, c)))
            .filter(|(t, c)| {
                catalogue.column_type(&t.name, c).is_some_and(|ty| {
                    ty.contains("json")
                        || ty == "array"
                        || ty.starts_with('_')
                        || ty.ends_with("[]")
                })
            })
            .map(|(t, c)| (t.name.clone(), c.clone()))
            .collect();
        dataset.text_columns = dataset
            .tables
            .iter()
            .flat_map(|t| t.columns.keys().map(move |c| (t, c)))
            .filter(|(t, c)| {
                catalogue
                    .column_type(&t.name, c)
                    .is_some_and(|ty| ty.contains("char") || ty.contains("text"))
            })
            .map(|(t, c)| (t.name.clone(), c.clone()))
            .collect();
        if matches!(sql::dialect(), Dialect::Sqlite) {
            // SQLite's affinity rules, in their order: "INT" gives INTEGER; "CHAR",
            // "CLOB" or "TEXT" give TEXT. REAL and NUMERIC columns are left out: a real
            // read back as text need not convert back to the same real; so are views,
            // whose rows need not have their declared types.
            dataset.affine_keys = dataset
                .tables
                .iter()
                .filter(|t| !catalogue.is_view(&t.name))
                .filter_map(|t| {
                    let ty = catalogue.column_type(&t.name, &t.key)?;
                    let affinity = if ty.contains("int") {
                        KeyAffinity::Integer
                    } else if ["char", "clob", "text"].iter().any(|a| ty.contains(a)) {
                        KeyAffinity::Text
                    } else {
                        return None;
                    };
                    Some((t.name.clone(), affinity))
                })
                .collect();
        }
        if matches!(sql::dialect(), Dialect::Postgres) {
            dataset.key_casts = dataset
                .tables
                .iter()
                .filter_map(|t| {
                    let ty = catalogue.column_type(&t.name, &t.key)?;
                    let plain = ty.contains("char") || ty == "text" || integer_type(ty);
                    (!plain).then(|| (t.name.clone(), ty.to_owned()))
                })
                .collect();
            dataset.integer_keys = dataset
                .tables
                .iter()
                .filter(|t| {
                    catalogue
                        .column_type(&t.name, &t.key)
                        .is_some_and(integer_type)
                })
                .map(|t| t.name.clone())
                .collect();
        }
        if matches!(sql::dialect(), Dialect::Mysql) {
            // A key is named in the evidence by its text, and read back by it: a float's
            // text need not compare equal to it (`0.1`), a byte string's need not be its
            // bytes (invalid UTF-8 is read as `?`), and bits, JSON and geometry have no
            // text that finds them again.
            for (i, table) in dataset.tables.iter().enumerate() {
                if let Some(ty) = catalogue
                    .column_type(&table.name, &table.key)
                    .filter(|ty| MYSQL_UNNAMED_KEYS.iter().any(|u| ty.ends_with(u)))
                {
                    return Err(Error::InvalidConfig(format!(
                        "config.dataset.tables[{i}].key: the key column {:?} of {} is of type {ty}, whose text does not name its row exactly (a float's text rounds it, bytes that are not text are read as `?`): the evidence could name a row that is not there, or miss one; declare as key a column of an integer, decimal, text, date or time type",
                        table.key, table.name
                    )));
                }
            }
            // A float's or a bit string's text need not compare equal to it, and a
            // byte string's need not be its bytes.
            dataset.narrowed_keys = dataset
                .tables
                .iter()
                .filter(|t| {
                    catalogue.column_type(&t.name, &t.key).is_some_and(|ty| {
                        integer_type(ty) || ty.contains("char") || ty.ends_with("text")
                    })
                })
                .map(|t| t.name.clone())
                .collect();
            dataset.never_null_keys = dataset
                .tables
                .iter()
                .filter(|t| catalogue.never_null(&t.name, &t.key))
                .map(|t| t.name.clone())
                .collect();
        }
        Ok((dataset, catalogue))
    }

    /// The condition `key = <key>` for a key of `table` read back as text, and its
    /// parameter (the first): on PostgreSQL and MySQL compared as the key's own type, and
    /// on SQLite through the key's affinity where the catalogue gave one, so that the key's
    /// index serves it.
    pub fn key_equals(&self, table: &Table, key: &str) -> (String, oubli_connector::sql::Value) {
        use oubli_connector::sql::{self, Dialect, Value};
        let column = sql::ident(&table.key);
        // SQLite: a key column declared without a type may hold `5` or `'5'`, which only
        // the text of both compares alike; a "gone" must not come from a type mismatch.
        // A column with TEXT affinity holds text (or a blob), and one with INTEGER
        // affinity an integer whose text is the key (or a blob, or a real or text under
        // any other key): there the key, as text and as a blob, finds the row through the
        // index, and the text of both must still be equal. A real's text is rounded, so
        // any other key, and any other column, is compared as text, reading the table.
        if matches!(sql::dialect(), Dialect::Sqlite) {
            let text = format!("CAST({column} AS TEXT) = ?1");
            let indexed = match self.affine_keys.get(&table.name) {
                Some(KeyAffinity::Text) => true,
                Some(KeyAffinity::Integer) => {
                    key.parse::<i64>().is_ok_and(|n| n.to_string() == key)
                }
                None => false,
            };
            let equals = if indexed {
                format!("{column} IN (?1, CAST(?1 AS BLOB)) AND {text}")
            } else {
                text
            };
            return (equals, Value::Text(key.to_owned()));
        }
        if self.integer_keys.contains(&table.name)
            && let Ok(n) = key.parse::<i64>()
        {
            return (
                format!("{column} = {}", sql::placeholder(1)),
                Value::Integer(n),
            );
        }
        (
            format!(
                "{column} = {}",
                self.key_param(&table.name, &sql::placeholder(1))
            ),
            Value::Text(key.to_owned()),
        )
    }

    /// What reads `table`'s key for a change by it: as the database writes it (as
    /// `locate` names the row), which compares equal to it when bound back, cast to the
    /// key's type where needed ([`Dataset::key_param`]). As the host would read it, a
    /// timestamp is in RFC 3339, a MySQL `TINYINT(1)` a boolean that compares equal to 1,
    /// a binary-collated text its bytes: none names its row. (SQLite's keys are read as
    /// they are: an untyped key column may hold `5` and `'5'`; PostgreSQL's integer keys
    /// are compared as integers.)
    pub fn key_read(&self, table: &Table) -> String {
        use oubli_connector::sql::{self, Dialect};
        let key = sql::ident(&table.key);
        match sql::dialect() {
            Dialect::Sqlite => key,
            Dialect::Postgres if self.integer_keys.contains(&table.name) => key,
            Dialect::Postgres | Dialect::Mysql => format!("CAST({key} AS {})", sql::text_type()),
        }
    }

    /// The placeholder `placeholder` for a key of `table`, cast to the key's type where
    /// the database would not compare it with text (a UUID key on PostgreSQL).
    pub fn key_param(&self, table: &str, placeholder: &str) -> String {
        match self.key_casts.get(table) {
            // The SQL standard's names of built-in types, as the catalogue gives them, are
            // no type's name once quoted (`"double precision"` is `float8`).
            Some(ty) if PG_STANDARD_TYPE_NAMES.contains(&ty.as_str()) => {
                format!("CAST({placeholder} AS {ty})")
            }
            Some(ty) => format!("CAST({placeholder} AS {})", oubli_connector::sql::ident(ty)),
            None => placeholder.to_owned(),
        }
    }

    /// The original a `copies` entry names, as (table, column).
    pub fn original<'a>(&'a self, copy_of: &'a str) -> Option<(&'a Table, &'a str)> {
        let (table, column) = copy_of.split_once('.')?;
        Some((self.table(table)?, column))
    }

    /// The copies of `table.column`, as (table, copy column).
    pub fn copies_of<'a>(&'a self, table: &'a str, column: &'a str) -> Vec<(&'a Table, &'a str)> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.copies
                    .iter()
                    .filter(move |(_, of)| of.split_once('.') == Some((table, column)))
                    .map(move |(copy, _)| (t, copy.as_str()))
            })
            .collect()
    }

    /// Gives each copy in a table whose rows are kept the mask of its original (null when
    /// the original's rows are deleted), unless the table's `erase.columns` names it: what
    /// erase applies, verify checks and the certificate names.
    fn mask_copies(&mut self) {
        let mut inherited = Vec::new();
        for (i, table) in self.tables.iter().enumerate() {
            if table.erase.action == EraseAction::Delete {
                continue;
            }
            for (copy, of) in &table.copies {
                if table.erase.columns.contains_key(copy) {
                    continue;
                }
                let mask = self
                    .original(of)
                    .and_then(|(t, c)| t.erase.columns.get(c).copied())
                    .unwrap_or(Mask::Null);
                inherited.push((i, copy.clone(), mask));
            }
        }
        for (i, copy, mask) in inherited {
            self.tables[i].erase.columns.insert(copy, mask);
        }
    }

    /// Whether these weak kinds, each counted once, are enough to reach a row without a
    /// strong identity (`weak_agreement`).
    pub fn weak_kinds_agree<'a>(&self, kinds: impl Iterator<Item = &'a str>) -> bool {
        let distinct: std::collections::BTreeSet<&str> = kinds.collect();
        self.weak_agreement > 0 && distinct.len() >= self.weak_agreement
    }

    /// Whether identities of `kind` are weak (see [`Dataset::weak_identities`]).
    pub fn is_weak(&self, kind: &str) -> bool {
        self.weak_identities.iter().any(|k| k == kind)
    }

    /// Whether `table.column` is declared as text.
    pub fn is_text(&self, table: &str, column: &str) -> bool {
        self.text_columns
            .contains(&(table.to_owned(), column.to_owned()))
    }

    /// Whether `table.column` holds JSON documents or arrays.
    pub fn is_json(&self, table: &str, column: &str) -> bool {
        self.json_columns
            .contains(&(table.to_owned(), column.to_owned()))
    }

    /// Whether `table.column` is an identity column of PostgreSQL's `uuid` type.
    pub fn is_uuid(&self, table: &str, column: &str) -> bool {
        self.uuid_columns
            .contains(&(table.to_owned(), column.to_owned()))
    }

    /// Whether `table.column` holds integers.
    pub fn is_integer(&self, table: &str, column: &str) -> bool {
        self.integer_columns
            .contains(&(table.to_owned(), column.to_owned()))
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    fn validate(&self) -> Result<()> {
        for (name, rule) in &self.retention {
            rule.validate(name, self)?;
        }
        for (i, table) in self.tables.iter().enumerate() {
            let path = format!("config.dataset.tables[{i}]");
            let invalid = |path: String, message: &str| -> Result<()> {
                Err(Error::InvalidConfig(format!(
                    "{path}: {message} (table {:?})",
                    table.name
                )))
            };
            if self.tables.iter().filter(|t| t.name == table.name).count() > 1 {
                return invalid(path, "the table is listed twice");
            }
            if table.identities.is_empty() && table.parent.is_none() && table.mentions.is_empty() {
                return invalid(
                    path,
                    "neither identities nor parent link the table to the subject",
                );
            }
            if let Some(parent) = &table.parent
                && self.table(&parent.table).is_none()
            {
                return invalid(
                    format!("{path}.parent.table"),
                    &format!("no table named {:?} in the dataset", parent.table),
                );
            }
            if self.depth(table).is_none() {
                return invalid(
                    format!("{path}.parent"),
                    "the parent relations form a cycle",
                );
            }
            for (copy, of) in &table.copies {
                match self.original(of) {
                    Some((original, column)) if original.columns.contains_key(column) => {}
                    _ => {
                        return invalid(
                            format!("{path}.copies.{copy}"),
                            &format!(
                                "{of:?} is not a `table.column` of the dataset whose column is listed in its `columns`"
                            ),
                        );
                    }
                }
            }
            let erase = &table.erase;
            if let Some((setting, why)) =
                erase
                    .action
                    .missing(erase.legal_basis.as_deref(), erase.columns.len(), "columns")
            {
                return invalid(format!("{path}.erase.{setting}"), why);
            }
        }
        Ok(())
    }

    /// Hops from `table` to a table without parent; `None` on a cycle.
    fn depth(&self, table: &Table) -> Option<usize> {
        let mut current = table;
        for hops in 0..=self.tables.len() {
            match &current.parent {
                None => return Some(hops),
                Some(relation) => current = self.table(&relation.table)?,
            }
        }
        None
    }

    /// The tables, deepest children first; at one depth, those whose rows are deleted
    /// before those whose rows are masked: a mask of a column that another table's key
    /// references with `ON UPDATE CASCADE` would otherwise give that table's row a new
    /// key first, which its `DELETE` by the found keys would then miss.
    pub fn erase_order(&self) -> Vec<&Table> {
        let mut tables: Vec<&Table> = self.tables.iter().collect();
        tables.sort_by_key(|t| {
            (
                std::cmp::Reverse(self.depth(t).unwrap_or(0)),
                t.erase.action != EraseAction::Delete,
            )
        });
        tables
    }
}

impl Table {
    /// A row's key as read, refused when it is NULL: such a row could not be named in
    /// the evidence, changed by its key or read back by `verify` (which would find no
    /// row with the key `null` and call it gone).
    pub fn row_key(&self, key: Value) -> Result<Value> {
        if matches!(key, Value::Null) {
            return Err(Error::Failed(format!(
                "a row of {} that this request reaches has no value in its key column {:?} (NULL): it could not be named, changed by its key or read back to verify it, so nothing was done; declare as key (config.dataset, key of table {}) a column that is never NULL, such as the primary key",
                self.name, self.key, self.name
            )));
        }
        Ok(key)
    }

    /// The error for a row whose key another row of the table has too: the key column
    /// is not unique, and changing a row by its key would change the other's too.
    pub fn repeated_key(&self, key: &str) -> Error {
        Error::Failed(format!(
            "more than one row of {} has the key {key:?} (column {:?}) of a row this request reaches: the key is not unique, and a change by key would reach a row that is not the subject's, so nothing was done; declare as key (config.dataset, key of table {}) a unique column, such as the primary key",
            self.name, self.key, self.name
        ))
    }

    /// The distinct data categories of the table's columns.
    pub fn categories(&self) -> Vec<String> {
        let mut categories: Vec<String> = self.columns.values().cloned().collect();
        categories.sort();
        categories.dedup();
        categories
    }
}

/// PostgreSQL's `information_schema.columns` as far as [`Catalogue::read`] uses it, for
/// the current schema: `table_name`, `column_name`, and `data_type` (a user-defined
/// type's name in place of `USER-DEFINED`, so that a `citext` column counts as text), read
/// from `pg_catalog` directly: the view costs several times more, in planning above all,
/// on every call that reads it. Like the view: tables, views, foreign and partitioned
/// tables, not another session's temporary ones; the columns the user owns or holds a
/// privilege on; a domain described by its base type; `ARRAY` for arrays, the type's SQL
/// name for built-in types. Functions and types are named with their schema, so that a
/// `search_path` putting another schema first changes nothing. `readable` (1 or 0) says
/// whether the user may read the column (one granted `UPDATE` alone is listed too),
/// `whole` whether they may read the whole table (its `ctid` included), not only columns
/// granted one by one (a column granted nothing is not listed at all), `hidden`
/// whether row-level security hides rows from them, or may (a view that reads its
/// tables with the user's rights, `security_invoker`: `row_security_active` is false for
/// a view, whatever its tables' policies hide), `is_view` whether the relation
/// is a view (whose rows have no `ctid`), and `searched` how `sweep` searches the column
/// (see [`Searched`]), from the type's category, which a domain shares with its base
/// type whatever the depth: `never` for numbers, booleans, dates and times, time spans,
/// network addresses, bit strings and geometry (and arrays of them), `bytes` for
/// `bytea`, `text` for any other type (bytes inside one, an array's or a composite's,
/// are written as text as `bytea_output = 'escape'` has them, which `sweep` sets).
const PG_COLUMNS: &str = "SELECT c.relname AS table_name, a.attname AS column_name, \
     CASE WHEN c.relkind = 'v' THEN 1 ELSE 0 END AS is_view, \
     CASE WHEN pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT') THEN 1 ELSE 0 END AS readable, \
     CASE WHEN pg_catalog.has_table_privilege(c.oid, 'SELECT') THEN 1 ELSE 0 END AS whole, \
     CASE WHEN pg_catalog.row_security_active(c.oid) OR (c.relkind = 'v' AND EXISTS (SELECT 1 \
     FROM pg_catalog.unnest(c.reloptions) AS o WHERE pg_catalog.lower(o) LIKE 'security_invoker%' \
     AND pg_catalog.lower(o) NOT IN ('security_invoker=f', 'security_invoker=fa', 'security_invoker=fal', \
     'security_invoker=fals', 'security_invoker=false', 'security_invoker=of', 'security_invoker=off', \
     'security_invoker=n', 'security_invoker=no', 'security_invoker=0'))) THEN 1 ELSE 0 END AS hidden, \
     CASE WHEN t.typcategory IN ('B', 'D', 'G', 'I', 'N', 'T', 'V') THEN 'never' \
     WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytes' \
     WHEN e.typcategory IN ('B', 'D', 'G', 'I', 'N', 'T', 'V') THEN 'never' ELSE 'text' END AS searched, \
     CASE WHEN coalesce(b.typelem, t.typelem) <> 0 AND coalesce(b.typlen, t.typlen) = -1 THEN 'ARRAY' \
     WHEN coalesce(b.typnamespace, t.typnamespace) = 'pg_catalog'::pg_catalog.regnamespace \
     THEN pg_catalog.format_type(coalesce(b.oid, t.oid), NULL) \
     ELSE coalesce(b.typname, t.typname)::pg_catalog.text END AS data_type, \
     CASE WHEN a.attnotnull THEN 1 ELSE 0 END AS not_null \
     FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_type AS b ON t.typtype = 'd' AND b.oid = t.typbasetype \
     LEFT JOIN pg_catalog.pg_type AS e ON t.typcategory = 'A' AND e.oid = coalesce(b.typelem, t.typelem) \
     WHERE n.nspname = pg_catalog.current_schema() AND NOT pg_catalog.pg_is_other_temp_schema(n.oid) \
     AND c.relkind IN ('r', 'v', 'f', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
     AND (pg_catalog.pg_has_role(c.relowner, 'USAGE') \
     OR pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES'))";

/// The same from the view itself: where the credentials may read the view but not the
/// catalogue's tables (a hardened server). Whether a view reads its tables with the
/// user's rights is not known there: every view counts as one whose rows may be hidden.
const PG_COLUMNS_VIEW: &str = "SELECT table_name, column_name, \
     CASE WHEN EXISTS (SELECT 1 FROM information_schema.views AS v WHERE v.table_schema = columns.table_schema \
     AND v.table_name = columns.table_name) THEN 1 ELSE 0 END AS is_view, \
     CASE WHEN pg_catalog.has_column_privilege(pg_catalog.quote_ident(table_schema::text) || '.' || \
     pg_catalog.quote_ident(table_name::text), column_name::text, 'SELECT') THEN 1 ELSE 0 END AS readable, \
     CASE WHEN pg_catalog.has_table_privilege(pg_catalog.quote_ident(table_schema::text) || '.' || \
     pg_catalog.quote_ident(table_name::text), 'SELECT') THEN 1 ELSE 0 END AS whole, \
     CASE WHEN pg_catalog.row_security_active(pg_catalog.quote_ident(table_schema::text) || '.' || \
     pg_catalog.quote_ident(table_name::text)) OR EXISTS (SELECT 1 FROM information_schema.views AS v \
     WHERE v.table_schema = columns.table_schema AND v.table_name = columns.table_name) \
     THEN 1 ELSE 0 END AS hidden, \
     CASE WHEN data_type IN (NEVER_TEXT) THEN 'never' WHEN data_type = 'bytea' THEN 'bytes' \
     ELSE 'text' END AS searched, \
     CASE WHEN data_type = 'USER-DEFINED' THEN udt_name ELSE data_type END AS data_type, \
     CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END AS not_null \
     FROM information_schema.columns WHERE table_schema = current_schema()";

/// What tells on PostgreSQL whether the dataset's tables (`TABLES`, their names as
/// parameters) are as they were: the schema and user; for each table, each of its
/// columns, each column's type and a domain's base type, the id and the transaction that
/// last wrote its row in the catalogue (creating, altering, dropping, renaming or granting
/// any of them writes such a row anew); and the user's rights on each column as the
/// catalogue's read tests them (which a change of the user's roles changes too).
const PG_FINGERPRINT: &str = "SELECT pg_catalog.concat_ws('|', pg_catalog.current_schema(), CURRENT_USER, \
     pg_catalog.string_agg(c.oid::pg_catalog.text || ':' || c.xmin::pg_catalog.text || '.' || a.attnum::pg_catalog.text \
     || '.' || a.xmin::pg_catalog.text || '.' || t.oid::pg_catalog.text || '.' || t.xmin::pg_catalog.text \
     || '.' || coalesce(b.oid::pg_catalog.text || '.' || b.xmin::pg_catalog.text, '') || '.' \
     || CASE WHEN pg_catalog.pg_has_role(c.relowner, 'USAGE') THEN 'o' ELSE '' END \
     || CASE WHEN pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES') THEN 'p' ELSE '' END \
     || CASE WHEN pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT') THEN 'r' ELSE '' END \
     || CASE WHEN pg_catalog.has_table_privilege(c.oid, 'SELECT') THEN 'w' ELSE '' END, ',' \
     ORDER BY c.oid, a.attnum)) \
     FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 \
     JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_type AS b ON t.typtype = 'd' AND b.oid = t.typbasetype \
     WHERE n.nspname = pg_catalog.current_schema() AND c.relname IN (TABLES)";

/// The memo's key of the dataset's catalogue.
const KEPT_CATALOGUE: &str = "dataset catalogue";

/// The catalogue's rows as kept in the memo, with the fingerprint they were read under.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeptRows {
    fingerprint: String,
    rows: Vec<Vec<serde_json::Value>>,
}

fn keep_rows(fingerprint: &str, rows: &oubli_connector::sql::Rows) -> Vec<u8> {
    let value = |v: &Value| match v {
        Value::Null => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(n) => serde_json::Value::from(*n),
        Value::Real(r) => serde_json::Value::from(*r),
        Value::Text(t) => serde_json::Value::String(t.clone()),
        Value::Blob(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
    };
    let kept = KeptRows {
        fingerprint: fingerprint.to_owned(),
        rows: rows
            .rows
            .iter()
            .map(|row| row.iter().map(value).collect())
            .collect(),
    };
    serde_json::to_vec(&kept).unwrap_or_default()
}

/// The kept rows, if they were read under `fingerprint`.
fn kept_rows(kept: &[u8], fingerprint: &str) -> Option<oubli_connector::sql::Rows> {
    let kept: KeptRows = serde_json::from_slice(kept).ok()?;
    if kept.fingerprint != fingerprint {
        return None;
    }
    let value = |v: serde_json::Value| match v {
        serde_json::Value::Bool(b) => Some(Value::Boolean(b)),
        serde_json::Value::Number(n) => n.as_i64().map(Value::Integer),
        serde_json::Value::String(t) => Some(Value::Text(t)),
        serde_json::Value::Null => Some(Value::Null),
        _ => None,
    };
    let rows = kept
        .rows
        .into_iter()
        .map(|row| row.into_iter().map(value).collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()?;
    Some(oubli_connector::sql::Rows {
        columns: Vec::new(),
        rows,
    })
}

/// A table's columns that may hold text (see [`Catalogue::text_columns`]).
#[derive(Debug, Default)]
pub struct TextColumns<'a> {
    pub readable: Vec<(&'a str, Searched)>,
    pub unreadable: Vec<&'a str>,
    /// Those that may hold text that `sweep` cannot search (see [`Searched::Not`]).
    pub unsearchable: Vec<&'a str>,
}

/// How `sweep` reads a column as text (see [`searched`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Searched {
    /// As its value's text: text itself, and the text form of arrays, enums, composites,
    /// XML, JSON, UUIDs and of SQLite's blobs. (On SQLite a column with TEXT affinity,
    /// where a number is stored as its text.)
    Text,
    /// An SQLite column of no type, or of a type naming neither text nor a number
    /// (`UUID`, `BLOB`): any value, a number searched as its text.
    Any,
    /// Bytes (PostgreSQL's `bytea`, MySQL's `BLOB`, `BINARY`, `VARBINARY`), searched for
    /// the value's bytes with ASCII letters in any case: as `encode(…, 'escape')` writes
    /// them on PostgreSQL (its cast to text would be hexadecimal), as `latin1` on MySQL
    /// (a cast to text gives nothing for bytes that are not UTF-8 on some servers).
    Bytes,
    /// An SQLite column declared as a number or a date: only a value stored there as text
    /// or bytes (SQLite keeps a text it cannot convert as it is); its numbers are not
    /// searched, so a customer number is not found in every count and amount.
    Stray,
    /// A column that may hold text `sweep` cannot search: SQLite's shadow tables of an
    /// index, and full-text indexes that keep no text of their own.
    Not,
}

impl Searched {
    /// What `sweep` reads of `column` (an identifier, quoted) where it found the value:
    /// the text it searched, or the bytes themselves.
    pub fn read(self, column: &str) -> String {
        use oubli_connector::sql;
        match self {
            Searched::Bytes => column.to_owned(),
            Searched::Stray => format!(
                "CASE WHEN typeof({column}) IN ('text', 'blob') THEN CAST({column} AS TEXT) END"
            ),
            Searched::Text | Searched::Any | Searched::Not => {
                format!("CAST({column} AS {})", sql::text_type())
            }
        }
    }
}

/// `'a', 'b', …`: constant names for an SQL `IN` list.
fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    quoted.join(", ")
}

/// PostgreSQL's types that cannot hold text, as `information_schema.columns` names
/// them, for the catalogue read from that view (`pg_catalog` gives each type's category):
/// numbers, booleans, dates and times, network addresses, bit strings, geometry, and the
/// system's identifiers.
const POSTGRES_NEVER_TEXT: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
    "money",
    "boolean",
    "date",
    "time without time zone",
    "time with time zone",
    "timestamp without time zone",
    "timestamp with time zone",
    "interval",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "bit",
    "bit varying",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "oid",
    "xid",
    "xid8",
    "cid",
    "tid",
    "pg_lsn",
    "regclass",
    "regtype",
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regnamespace",
    "regrole",
    "regconfig",
    "regdictionary",
    "regcollation",
];

/// MySQL's and MariaDB's types that cannot hold text (`information_schema.columns`'
/// `data_type`).
const MYSQL_NEVER_TEXT: &[&str] = &[
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "integer",
    "bigint",
    "decimal",
    "numeric",
    "float",
    "double",
    "real",
    "bit",
    "bool",
    "boolean",
    "date",
    "datetime",
    "timestamp",
    "time",
    "year",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
    "vector",
];

/// PostgreSQL's built-in types whose name in the catalogue (`format_type`) is the SQL
/// standard's, not the type's own (`boolean` for `bool`).
const PG_STANDARD_TYPE_NAMES: &[&str] = &[
    "boolean",
    "real",
    "double precision",
    "timestamp with time zone",
    "timestamp without time zone",
    "time with time zone",
    "time without time zone",
    "bit varying",
    "character varying",
    "character",
];

/// MySQL's and MariaDB's types (as `information_schema.columns.data_type` names them,
/// matched at their end: `tinyblob`, `multipoint`) whose text does not name a value
/// exactly: a key of one cannot name its row.
const MYSQL_UNNAMED_KEYS: &[&str] = &[
    "float",
    "double",
    "real",
    "binary",
    "blob",
    "bit",
    "json",
    "geometry",
    "point",
    "linestring",
    "polygon",
    "collection",
    "vector",
];

/// MySQL's and MariaDB's types of bytes.
const MYSQL_BYTES: &[&str] = &[
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
];

/// Whether and how `sweep` searches a column of the declared type `ty` (lower case):
/// every type that may hold the subject's identity values as text, which is every type
/// but numbers, dates and times, booleans, addresses, bits and geometry. (A number equal
/// to a customer number says nothing of the subject; the dataset's identities find it
/// where it is one.) SQLite declares no types it keeps to: a column declared as a number
/// or a date is searched for the values stored in it as text ([`Searched::Stray`]).
/// (On PostgreSQL the catalogue says it from the type's category, see `PG_COLUMNS`; this
/// serves where it does not.)
pub fn searched(dialect: oubli_connector::sql::Dialect, ty: &str) -> Option<Searched> {
    use oubli_connector::sql::Dialect;
    match dialect {
        Dialect::Postgres if POSTGRES_NEVER_TEXT.contains(&ty) => None,
        Dialect::Postgres if ty == "bytea" => Some(Searched::Bytes),
        Dialect::Mysql if MYSQL_NEVER_TEXT.contains(&ty) => None,
        Dialect::Mysql if MYSQL_BYTES.contains(&ty) => Some(Searched::Bytes),
        Dialect::Postgres | Dialect::Mysql => Some(Searched::Text),
        Dialect::Sqlite => {
            // SQLite's affinity rules, in their order: INTEGER, TEXT, BLOB (no type
            // either), REAL, then NUMERIC for any other name, of which those naming
            // numbers and dates are taken as such.
            Some(if ty.contains("int") {
                Searched::Stray
            } else if ["char", "clob", "text"].iter().any(|t| ty.contains(t)) {
                Searched::Text
            } else if ty.contains("blob") || ty.is_empty() {
                Searched::Any
            } else if [
                "real", "floa", "doub", "numeric", "decimal", "bool", "date", "time",
            ]
            .iter()
            .any(|t| ty.contains(t))
            {
                Searched::Stray
            } else {
                Searched::Any
            })
        }
    }
}

/// The database's tables and columns with their declared types, from its catalogue.
pub struct Catalogue {
    /// Whether column names match case-insensitively (SQLite, MySQL), or exactly
    /// (PostgreSQL, where quoted identifiers keep their case).
    folded: bool,
    /// Whether table names do: as columns, except on a MySQL server that keeps them as
    /// given and compares them exactly (`lower_case_table_names = 0`, Linux's default),
    /// where `Orders` and `orders` are two tables.
    tables_folded: bool,
    /// (table, column) → declared type, lowercase.
    columns: BTreeMap<(String, String), String>,
    /// (table, column) → how `sweep` searches it, for the columns that may hold text.
    search: BTreeMap<(String, String), Searched>,
    /// SQLite's tables whose rows have no `rowid` (views, WITHOUT ROWID and virtual
    /// tables).
    keyless: BTreeSet<String>,
    /// The columns declared NOT NULL.
    never_null: BTreeSet<(String, String)>,
    /// The tables whose columns the catalogue could not give (SQLite: a view whose table
    /// is gone, a virtual table of a module the host lacks).
    broken: Vec<String>,
    /// The views among them (SQLite, PostgreSQL): a view's declared types are those of
    /// its first `SELECT` (SQLite), which need not hold for the rows of the others; its
    /// rows have no `ctid` (PostgreSQL).
    views: BTreeSet<String>,
    /// The columns the credentials may not read (granted another privilege only).
    unreadable: BTreeSet<(String, String)>,
    /// The tables of which they may read only some columns, granted one by one: not
    /// their rows' `ctid` (PostgreSQL); every table on MySQL, where that is not known.
    in_part: BTreeSet<String>,
    /// The tables whose rows row-level security hides in part from them, and the views
    /// through which it may (PostgreSQL).
    rows_hidden: BTreeSet<String>,
    /// The system-versioned tables (MariaDB), whose earlier versions of rows a plain
    /// `SELECT` does not see.
    versioned: BTreeSet<String>,
    cut: bool,
}

impl Catalogue {
    /// Reads the catalogue of the system's database (its current schema) for the tables
    /// named (every table when `None`), in order. With `text_only`, only the columns that may hold text
    /// columns (what `sweep` reads). `cut` says whether the host's row limit cut the list.
    ///
    /// # Errors
    /// As [`sql::query`].
    pub fn read(tables: Option<&[&str]>, text_only: bool) -> Result<Self> {
        let (rows, broken, folded) = Catalogue::read_rows(tables, text_only)?;
        Ok(Catalogue::from_rows(&rows, broken, folded))
    }

    /// The rows of the catalogue's query, the tables that could not be read, and whether
    /// names are compared in any case (see [`Catalogue::read`]).
    fn read_rows(
        tables: Option<&[&str]>,
        text_only: bool,
    ) -> Result<(oubli_connector::sql::Rows, Vec<String>, bool)> {
        use oubli_connector::sql::{self, Dialect};
        let folded = !matches!(sql::dialect(), Dialect::Postgres);
        let mut params = Vec::new();
        let mut filter = String::new();
        let (table_col, type_col) = match sql::dialect() {
            Dialect::Sqlite => ("m.name", "p.type"),
            Dialect::Postgres => ("table_name", "data_type"),
            Dialect::Mysql => ("c.table_name", "c.data_type"),
        };
        if let Some(names) = tables {
            if names.is_empty() {
                let none = sql::Rows {
                    columns: Vec::new(),
                    rows: Vec::new(),
                };
                return Ok((none, Vec::new(), folded));
            }
            let list: Vec<String> = names
                .iter()
                .map(|name| {
                    params.push(Value::Text(if folded {
                        fold_name(name)
                    } else {
                        (*name).to_owned()
                    }));
                    sql::placeholder(params.len())
                })
                .collect();
            let compared = if folded {
                format!("lower({table_col})")
            } else {
                table_col.to_owned()
            };
            filter.push_str(&format!(" AND {compared} IN ({})", list.join(", ")));
        }
        if text_only {
            // Every column that may hold text (see [`searched`]); on SQLite every column
            // but a rowid's alias and a STRICT table's numbers, since any may hold a text
            // where its table is searched anyway.
            match sql::dialect() {
                Dialect::Sqlite | Dialect::Postgres => filter.push_str(" AND searched <> 'never'"),
                Dialect::Mysql => filter.push_str(&format!(
                    " AND lower({type_col}) NOT IN ({})",
                    quoted_list(MYSQL_NEVER_TEXT)
                )),
            }
        }
        let statement = |source: &str, one: &str| match sql::dialect() {
            // Each row: table, column, declared type, whether a view, whether the column
            // and whether the whole table may be read, whether rows are hidden, whether
            // the table keeps earlier versions of its rows, whether table names are
            // compared exactly where columns' are not.
            // On SQLite also whether rows have no `rowid` to name them by (views, WITHOUT
            // ROWID and virtual tables). Generated columns are listed (`hidden` 2 and 3)
            // and a virtual table's hidden ones are not. A rowid's alias (`INTEGER
            // PRIMARY KEY` without an index of its own: not `DESC`) and a STRICT table's
            // numbers hold no text. An index's shadow tables hold what they hold in a
            // form that cannot be searched: those of a full-text index that keeps its
            // text (in `<name>_content`, searched like a table, as is an R*Tree's
            // `<name>_rowid`) or of an R*Tree only derive from what is searched, and are
            // left out; the others, and a full-text index that keeps no text of its own
            // (`content=`), are named as not searched.
            // (The dataset's own tables, read on every call, need none of that: they are
            // read as before, at less than half the cost.)
            Dialect::Sqlite if !text_only => format!(
                "SELECT m.name, p.name, p.type, m.type = 'view', 1, 1, 0, 0, 0, '', 0, p.\"notnull\" \
                 FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p \
                 WHERE m.type IN ('table', 'view'){filter}{one} ORDER BY 1, 2"
            ),
            Dialect::Sqlite => format!(
                "SELECT m.name, p.name, p.type, m.type = 'view', 1, 1, 0, 0, 0, \
                 CASE WHEN l.type = 'shadow' AND (m.name LIKE '%\\_content' ESCAPE '\\' OR m.name LIKE '%\\_rowid' ESCAPE '\\') THEN '' \
                 WHEN l.type = 'shadow' AND EXISTS (SELECT 1 FROM sqlite_master AS v \
                 WHERE v.type = 'table' AND lower(v.sql) LIKE 'create virtual table%' \
                 AND substr(m.name, 1, length(v.name) + 1) = v.name || '_' \
                 AND (lower(v.sql) LIKE '%using rtree%' \
                 OR EXISTS (SELECT 1 FROM sqlite_master AS c WHERE c.name = v.name || '_content'))) THEN 'never' \
                 WHEN l.type = 'shadow' OR (l.type = 'virtual' AND lower(m.sql) LIKE '%using fts%' \
                 AND NOT EXISTS (SELECT 1 FROM sqlite_master AS c WHERE c.name = m.name || '_content')) THEN 'not' \
                 WHEN l.strict AND lower(p.type) IN ('int', 'integer', 'real') THEN 'never' \
                 WHEN NOT l.wr AND p.pk = 1 AND lower(p.type) = 'integer' \
                 AND (SELECT count(*) FROM pragma_table_info(m.name) AS k WHERE k.pk > 0) = 1 \
                 AND NOT EXISTS (SELECT 1 FROM pragma_index_list(m.name) AS i WHERE i.origin = 'pk') THEN 'never' \
                 ELSE '' END AS searched, \
                 m.type = 'view' OR l.wr OR l.type = 'virtual', p.\"notnull\" \
                 FROM sqlite_master AS m JOIN pragma_table_list(m.name) AS l ON l.schema = 'main' \
                 JOIN pragma_table_xinfo(m.name) AS p ON p.hidden IN (0, 2, 3) \
                 WHERE m.type IN ('table', 'view'){filter}{one} ORDER BY 1, 2"
            ),
            Dialect::Postgres => format!(
                "SELECT table_name, column_name, data_type, is_view, readable, whole, hidden, 0, 0, searched, 0, not_null FROM ({source}) AS columns WHERE true{filter} ORDER BY 1, 2"
            ),
            // `privileges` lists the user's privileges on the column ("select,update"). Whether
            // the whole table may be read is not known: the view lists only the columns the
            // user holds a privilege on.
            // Whether a table is system-versioned, asked per column of the current schema:
            // joined with `information_schema.tables` instead, MariaDB reads the tables of
            // every schema (8.5 against 1.2 ms for two tables).
            Dialect::Mysql => format!(
                "SELECT c.table_name, c.column_name, c.data_type, 0, FIND_IN_SET('select', c.`privileges`) > 0, 0, 0, \
                 EXISTS (SELECT 1 FROM information_schema.tables AS t WHERE t.table_schema = DATABASE() \
                 AND t.table_name = c.table_name AND t.table_type = 'SYSTEM VERSIONED'), \
                 @@lower_case_table_names = 0, '', 0, c.is_nullable = 'NO' FROM information_schema.columns AS c \
                 WHERE c.table_schema = DATABASE(){filter} ORDER BY 1, 2"
            ),
        };
        let mut broken = Vec::new();
        let rows = match sql::query(&statement(PG_COLUMNS, ""), params.clone()) {
            Err(e) if matches!(sql::dialect(), Dialect::Postgres) => {
                // The view runs with its owner's rights on the catalogue's tables.
                let view = PG_COLUMNS_VIEW.replace("NEVER_TEXT", &quoted_list(POSTGRES_NEVER_TEXT));
                sql::query(&statement(&view, ""), params).map_err(|_| e)?
            }
            // A view whose table is gone, or a virtual table of a module the host lacks,
            // fails the whole list: it is read a table at a time, and those that fail
            // are named.
            Err(Error::Unavailable(m)) => return Err(Error::Unavailable(m)),
            Err(e) if matches!(sql::dialect(), Dialect::Sqlite) => {
                let names = sql::query(
                    &format!(
                        "SELECT m.name FROM sqlite_master AS m WHERE m.type IN ('table', 'view'){} ORDER BY 1",
                        filter.split(" AND searched").next().unwrap_or_default()
                    ),
                    params.clone(),
                )
                .map_err(|_| e)?;
                let mut rows = sql::Rows {
                    columns: Vec::new(),
                    rows: Vec::new(),
                };
                for name in names.rows.into_iter().filter_map(|r| r.into_iter().next()) {
                    let mut one = params.clone();
                    one.push(name.clone());
                    match sql::query(&statement("", " AND m.name = ?"), one) {
                        Ok(read) => rows.rows.extend(read.rows),
                        Err(Error::Unavailable(m)) => return Err(Error::Unavailable(m)),
                        Err(_) => broken.push(fold(&name, folded)),
                    }
                }
                rows
            }
            read => read?,
        };
        Ok((rows, broken, folded))
    }

    /// The catalogue from the rows of its query (see [`Catalogue::read`]).
    fn from_rows(rows: &oubli_connector::sql::Rows, broken: Vec<String>, folded: bool) -> Self {
        use oubli_connector::sql::{self, Dialect};
        let cut = rows.rows.len() >= sql::MAX_ROWS as usize;
        let yes = |v: &Value| matches!(v, Value::Integer(1) | Value::Boolean(true));
        let tables_folded = folded
            && !rows
                .rows
                .first()
                .and_then(|row| row.get(8))
                .is_some_and(yes);
        let mut columns = BTreeMap::new();
        let mut views = BTreeSet::new();
        let mut unreadable = BTreeSet::new();
        let mut in_part = BTreeSet::new();
        let mut rows_hidden = BTreeSet::new();
        let mut versioned = BTreeSet::new();
        let mut search = BTreeMap::new();
        let mut keyless = BTreeSet::new();
        let mut never_null = BTreeSet::new();
        for row in &rows.rows {
            if let [
                table,
                column,
                ty,
                view,
                readable,
                whole,
                hidden,
                kept,
                _,
                how,
                no_rowid,
                not_null,
            ] = row.as_slice()
            {
                let place = (fold(table, tables_folded), fold(column, folded));
                if !yes(whole) {
                    in_part.insert(place.0.clone());
                }
                if yes(hidden) {
                    rows_hidden.insert(place.0.clone());
                }
                if yes(kept) {
                    versioned.insert(place.0.clone());
                }
                if yes(view) {
                    views.insert(place.0.clone());
                }
                if yes(no_rowid) {
                    keyless.insert(place.0.clone());
                }
                if yes(not_null) {
                    never_null.insert(place.clone());
                }
                if !yes(readable) {
                    unreadable.insert(place.clone());
                }
                let ty = fold(ty, true);
                let how = match how {
                    Value::Text(how) if !how.is_empty() => match how.as_str() {
                        "never" => None,
                        "bytes" => Some(Searched::Bytes),
                        "not" => Some(Searched::Not),
                        _ => Some(Searched::Text),
                    },
                    _ => searched(sql::dialect(), &ty),
                };
                if let Some(how) = how {
                    search.insert(place.clone(), how);
                }
                columns.insert(place, ty);
            }
        }
        let mut catalogue = Catalogue {
            folded,
            tables_folded,
            columns,
            search,
            keyless,
            never_null,
            broken,
            views,
            unreadable,
            in_part,
            rows_hidden,
            versioned,
            cut,
        };
        if matches!(sql::dialect(), Dialect::Mysql) {
            catalogue.mark_mariadb_json();
        }
        catalogue
    }

    /// MariaDB's `JSON` is a `LONGTEXT` with a `json_valid` check: its columns are marked
    /// `json`. MySQL has a real JSON type, and its catalogue no `table_name` in
    /// `check_constraints`: the query fails there and nothing changes.
    fn mark_mariadb_json(&mut self) {
        use oubli_connector::sql;
        let Ok(rows) = sql::query(
            "SELECT table_name, check_clause FROM information_schema.check_constraints WHERE constraint_schema = DATABASE() AND check_clause LIKE '%json_valid%'",
            Vec::new(),
        ) else {
            return;
        };
        for row in rows.rows {
            let [Value::Text(table), clause] = row.as_slice() else {
                continue;
            };
            let clause = match clause {
                Value::Text(t) => t.clone(),
                Value::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                _ => continue,
            };
            let Some(column) = clause
                .split_once("json_valid(`")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(column, _)| fold_name(column))
            else {
                continue;
            };
            if let Some(ty) = self.columns.get_mut(&self.key(table, &column)) {
                *ty = "json".into();
            }
        }
    }

    /// The catalogue of the dataset's tables only.
    ///
    /// # Errors
    /// As [`sql::query`].
    pub fn of(dataset: &Dataset) -> Result<Self> {
        let names: Vec<&str> = dataset.tables.iter().map(|t| t.name.as_str()).collect();
        Catalogue::read(Some(&names), false)
    }

    /// As [`Catalogue::of`], kept in the system's memo on PostgreSQL and used again while
    /// the database says that none of the tables, their columns or their columns' types
    /// changed since it was read (see [`PG_FINGERPRINT`]): one light query instead of the
    /// catalogue's. Anywhere else, or when that cannot be told, the catalogue is read.
    ///
    /// # Errors
    /// As [`Catalogue::of`].
    pub fn of_kept(dataset: &Dataset) -> Result<Self> {
        use oubli_connector::{memo, sql};
        if !matches!(sql::dialect(), sql::Dialect::Postgres) {
            return Catalogue::of(dataset);
        }
        let names: Vec<&str> = dataset.tables.iter().map(|t| t.name.as_str()).collect();
        let params: Vec<Value> = names.iter().map(|n| Value::Text((*n).to_owned())).collect();
        let list: Vec<String> = (1..=names.len()).map(sql::placeholder).collect();
        let fingerprint = sql::query(&PG_FINGERPRINT.replace("TABLES", &list.join(", ")), params)
            .ok()
            .and_then(|rows| rows.rows.into_iter().next())
            .and_then(|row| row.into_iter().next());
        let Some(Value::Text(fingerprint)) = fingerprint else {
            return Catalogue::of(dataset);
        };
        if let Some(rows) =
            memo::get(KEPT_CATALOGUE).and_then(|kept| kept_rows(&kept, &fingerprint))
        {
            return Ok(Catalogue::from_rows(&rows, Vec::new(), false));
        }
        // (Read after the fingerprint: a change in between makes the next call read again.)
        let (rows, broken, folded) = Catalogue::read_rows(Some(&names), false)?;
        if broken.is_empty() && rows.rows.len() < sql::MAX_ROWS as usize {
            // Refused only when it could not be kept (its size, or a value that looks
            // like one of the subject's): the next call reads the catalogue again.
            let _ = memo::put(KEPT_CATALOGUE, &keep_rows(&fingerprint, &rows), 600);
        }
        Ok(Catalogue::from_rows(&rows, broken, folded))
    }

    /// Whether the host's row limit cut the list short.
    pub fn cut(&self) -> bool {
        self.cut
    }

    fn key(&self, table: &str, column: &str) -> (String, String) {
        let fold = |name: &str, folded: bool| {
            if folded {
                fold_name(name)
            } else {
                name.to_owned()
            }
        };
        (fold(table, self.tables_folded), fold(column, self.folded))
    }

    /// The columns that may hold text (see [`searched`]) of every table the credentials
    /// have a privilege on, by table: those they may read, which `sweep` searches, with
    /// how, and those they may not. A table of numbers, dates and the like alone is not
    /// listed, except on SQLite (where its columns are all [`Searched::Stray`]).
    pub fn text_columns(&self) -> BTreeMap<&str, TextColumns<'_>> {
        let mut tables: BTreeMap<&str, TextColumns<'_>> = BTreeMap::new();
        for (place, how) in &self.search {
            let entry = tables.entry(&place.0).or_default();
            if self.unreadable.contains(place) {
                entry.unreadable.push(&place.1);
            } else if *how == Searched::Not {
                entry.unsearchable.push(&place.1);
            } else {
                entry.readable.push((&place.1, *how));
            }
        }
        tables
    }

    fn has_table(&self, table: &str) -> bool {
        let (table, _) = self.key(table, "");
        self.columns.keys().any(|(t, _)| *t == table)
    }

    /// Whether the credentials may read only some columns of `table`, granted one by one,
    /// so that columns granted nothing may be missing from the catalogue (PostgreSQL,
    /// where its rows' `ctid` is not readable either), or whether that is not known
    /// (every MySQL table).
    pub fn read_in_part(&self, table: &str) -> bool {
        self.in_part.contains(&self.key(table, "").0)
    }

    /// Whether row-level security hides some of `table`'s rows from the credentials.
    pub fn rows_hidden(&self, table: &str) -> bool {
        self.rows_hidden.contains(&self.key(table, "").0)
    }

    /// Whether `table` keeps earlier versions of its rows (MariaDB's system versioning),
    /// which a `SELECT` reads with `FOR SYSTEM_TIME ALL`.
    pub fn versioned(&self, table: &str) -> bool {
        self.versioned.contains(&self.key(table, "").0)
    }

    /// Whether `table`'s rows have no `rowid` (SQLite).
    pub fn keyless(&self, table: &str) -> bool {
        self.keyless.contains(&self.key(table, "").0)
    }

    /// Whether `table.column` is declared NOT NULL.
    pub fn never_null(&self, table: &str, column: &str) -> bool {
        self.never_null.contains(&self.key(table, column))
    }

    /// The tables whose columns could not be read from the catalogue.
    pub fn broken(&self) -> &[String] {
        &self.broken
    }

    /// Whether `table` is a view (SQLite, PostgreSQL).
    pub(crate) fn is_view(&self, table: &str) -> bool {
        self.views.contains(&self.key(table, "").0)
    }

    /// The declared type of `table.column`, `None` when there is no such column.
    pub(crate) fn column_type(&self, table: &str, column: &str) -> Option<&str> {
        self.columns
            .get(&self.key(table, column))
            .map(String::as_str)
    }
}

impl Dataset {
    /// Checks every table and column the dataset names against the database, naming the
    /// first one that does not exist by its configuration path.
    ///
    /// # Errors
    /// `invalid-config` with the path, e.g. `config.dataset.tables[2].columns.emial`.
    pub fn check_against(&self, catalogue: &Catalogue) -> Result<()> {
        for (name, rule) in &self.retention {
            rule.check_against(name, catalogue)?;
        }
        for (i, table) in self.tables.iter().enumerate() {
            let path = format!("config.dataset.tables[{i}]");
            if !catalogue.has_table(&table.name) {
                return Err(Error::InvalidConfig(format!(
                    "{path}.name: the database has no table {:?}",
                    table.name
                )));
            }
            let mut named: Vec<(String, &str, &str)> =
                vec![(format!("{path}.key"), &table.name, &table.key)];
            for (kind, identity) in &table.identities {
                named.push((
                    format!("{path}.identities.{kind}"),
                    &table.name,
                    &identity.column,
                ));
            }
            for column in table.columns.keys() {
                named.push((format!("{path}.columns.{column}"), &table.name, column));
            }
            for column in table.copies.keys() {
                named.push((format!("{path}.copies.{column}"), &table.name, column));
            }
            for (n, column) in table.mentions.iter().enumerate() {
                named.push((format!("{path}.mentions[{n}]"), &table.name, column));
            }
            for column in table.erase.columns.keys() {
                named.push((
                    format!("{path}.erase.columns.{column}"),
                    &table.name,
                    column,
                ));
            }
            if let Some(relation) = &table.parent {
                named.push((
                    format!("{path}.parent.column"),
                    &table.name,
                    &relation.column,
                ));
                let parent = self.table(&relation.table).expect("validated on load");
                named.push((
                    format!("{path}.parent.references"),
                    &parent.name,
                    relation.references.as_deref().unwrap_or(&parent.key),
                ));
            }
            for (path, table, column) in named {
                if catalogue.column_type(table, column).is_none() {
                    return Err(Error::InvalidConfig(format!(
                        "{path}: the table {table:?} has no column {column:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Dataset {
    /// Reads one row of every table, with every column the dataset names: a column of a
    /// type the host cannot pass to a plugin is refused now, naming its table, rather than
    /// failing every access after the system was connected.
    ///
    /// # Errors
    /// `invalid-config` with the table's path and the host's reason.
    pub fn check_readable(&self) -> Result<()> {
        use oubli_connector::sql;
        for (i, table) in self.tables.iter().enumerate() {
            let mut columns: Vec<&String> = std::iter::once(&table.key)
                .chain(table.identities.values().map(|c| &c.column))
                .chain(table.columns.keys())
                .chain(table.erase.columns.keys())
                .collect();
            columns.sort();
            columns.dedup();
            let list: Vec<String> = columns.iter().map(|c| sql::ident(c)).collect();
            let statement = format!(
                "SELECT {} FROM {} LIMIT 1",
                list.join(", "),
                sql::ident(&table.name)
            );
            if let Err(error) = sql::query(&statement, Vec::new()) {
                return Err(match error {
                    Error::InvalidConfig(why) => {
                        Error::InvalidConfig(format!("config.dataset.tables[{i}]: {why}"))
                    }
                    other => other,
                });
            }
        }
        Ok(())
    }
}

/// A catalogue value (a name, a type) as text, folded to lowercase where names are
/// compared in any case.
fn fold(value: &Value, folded: bool) -> String {
    let text = match value {
        Value::Text(t) => t.clone(),
        Value::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_key(),
    };
    if folded { fold_name(&text) } else { text }
}

/// Whether a server's column type, as the catalogue gives it, is an integer: PostgreSQL's
/// `smallint`, `integer` and `bigint` (a domain is given as its base type), MySQL's
/// integer types. Not whatever has "int" in its name: `interval`, `point` or an enum
/// `print_status` hold values that are not integers, which would then never be looked for.
fn integer_type(ty: &str) -> bool {
    matches!(
        ty,
        "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint"
    )
}

/// The identity columns, as (table, column), whose declared type passes `of_type`. (SQLite
/// compares an integer column with text by value: `'5'` matches 5, `'5 OR 1=1'` matches
/// nothing; its integer columns are not asked for.)
fn identity_columns_of(
    dataset: &Dataset,
    catalogue: &Catalogue,
    of_type: fn(&str) -> bool,
) -> std::collections::BTreeSet<(String, String)> {
    dataset
        .tables
        .iter()
        .flat_map(|t| t.identities.values().map(move |c| (t, &c.column)))
        .filter(|(t, c)| catalogue.column_type(&t.name, c).is_some_and(of_type))
        .map(|(t, c)| (t.name.clone(), c.clone()))
        .collect()
}
