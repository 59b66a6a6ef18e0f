//! oubli's SQL connector: finds, exports, rectifies and erases a data subject's rows in
//! a relational database described by the system's `config.dataset`.
//!
//! Every statement goes through the host's `sql` capability with bound parameters only;
//! identifiers come from the configuration and are quoted. Tables reach the subject either
//! directly, through identity columns (`email`, `customer-id`, …), or through a relation to
//! a parent table, over as many hops as the configuration chains.

mod dataset;
mod mentions;
mod phone;
mod retention;

use dataset::{Catalogue, Dataset, EraseAction, Mask, Matching, Searched, Table};
use oubli_connector::sql::{self, Statement, Value};
use oubli_connector::{
    Action, Change, Connector, Erased, Error, Field, Info, MatchKind, Outcome, Page,
    PersonalRecord, RecordRef, RecordState, Rectified, Result, Subject, SweepHit, SweepReport,
    Verified, export_connector,
};

/// Rows per page of `access`.
const PAGE_SIZE: usize = 200;
/// Keys per statement when rows are changed by key.
const KEY_CHUNK: usize = 500;

struct SqlConnector;

/// A `WHERE` condition and its parameters, built for one table and one subject.
#[derive(Debug, Clone)]
struct Condition {
    sql: String,
    params: Vec<Value>,
    /// On MySQL/MariaDB, for a table reached both through its own identities and
    /// through its parent: each alternative of the condition and its parameters, to
    /// gather the rows they reach first when reading ([`condition`]).
    parts: Vec<(String, Vec<Value>)>,
}

/// One test of an identity against a column of a table, with its parameters.
struct IdentityTest {
    kind: String,
    column: String,
    /// Whether the stored value may differ from the typed one (a matching rule).
    normalised: bool,
    sql: String,
    params: Vec<Value>,
}

/// The tests of the subject's identities against `table`'s identity columns, numbering
/// placeholders from `first` on.
fn identity_tests(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    first: usize,
) -> Vec<IdentityTest> {
    let mut tests: Vec<IdentityTest> = Vec::new();
    let mut used = 0;
    for identity in &subject.identities {
        let Some(rule) = table.identities.get(&identity.kind) else {
            continue;
        };
        let column = sql::ident(&rule.column);
        let mut params = Vec::new();
        let mut next = |value: Value| {
            params.push(value);
            used += 1;
            sql::placeholder(first + used - 1)
        };
        let integer = dataset.is_integer(&table.name, &rule.column);
        let test = if integer {
            // Not an integer: it cannot be in this column.
            let Ok(n) = identity.value.trim().parse::<i64>() else {
                continue;
            };
            format!("{column} = {}", next(Value::Integer(n)))
        } else if dataset.is_uuid(&table.name, &rule.column) {
            // Not a UUID in any form PostgreSQL reads: it cannot be in this column.
            if !uuid_shaped(&identity.value) {
                continue;
            }
            format!(
                "{column} = CAST({} AS uuid)",
                next(Value::Text(identity.value.trim().to_owned()))
            )
        } else {
            match &rule.matching {
                // MySQL's usual collations ignore case, accents and trailing spaces: the
                // indexed comparison is narrowed to the exact bytes.
                Matching::Exact if matches!(sql::dialect(), sql::Dialect::Mysql) => format!(
                    "({column} = {} AND {column} = BINARY {})",
                    next(Value::Text(identity.value.clone())),
                    next(Value::Text(identity.value.clone()))
                ),
                Matching::Exact => {
                    format!("{column} = {}", next(Value::Text(identity.value.clone())))
                }
                Matching::CaseInsensitive | Matching::Email => {
                    let (expression, value) = if rule.matching == Matching::Email {
                        (
                            format!("lower(trim({column}))"),
                            identity.value.trim().to_owned(),
                        )
                    } else {
                        (format!("lower({column})"), identity.value.clone())
                    };
                    if matches!(sql::dialect(), sql::Dialect::Mysql) {
                        // Case folded on purpose, accents not: `josé` is not `jose`.
                        format!(
                            "({expression} = lower({}) AND {expression} = BINARY lower({}))",
                            next(Value::Text(value.clone())),
                            next(Value::Text(value))
                        )
                    } else {
                        format!("{expression} = lower({})", next(Value::Text(value)))
                    }
                }
                Matching::Phone { region } => {
                    let forms = phone::forms(&identity.value, region.as_deref());
                    if forms.is_empty() {
                        continue;
                    }
                    let list: Vec<String> =
                        forms.into_iter().map(|f| next(Value::Text(f))).collect();
                    format!("{} IN ({})", digits_of(&column), list.join(", "))
                }
            }
        };
        tests.push(IdentityTest {
            kind: identity.kind.clone(),
            column: rule.column.clone(),
            normalised: !integer && rule.matching.normalises(),
            sql: test,
            params,
        });
    }
    tests
}

/// Whether `value` may be a UUID as PostgreSQL reads one: 32 hexadecimal digits, in any
/// case, with hyphens and braces anywhere (PostgreSQL accepts fewer places; a value it
/// refuses fails the call rather than match nothing).
fn uuid_shaped(value: &str) -> bool {
    let digits: Vec<char> = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, '-' | '{' | '}'))
        .collect();
    digits.len() == 32 && digits.iter().all(char::is_ascii_hexdigit)
}

/// A condition `condition` built: for which table, subject and first placeholder.
#[derive(Debug)]
pub(crate) struct Built {
    table: String,
    /// The first placeholder's number where placeholders are numbered (PostgreSQL);
    /// elsewhere 0, as the text does not depend on it.
    first: usize,
    identities: Vec<(String, String)>,
    condition: Option<Condition>,
}

/// The condition that selects `table`'s rows belonging to `subject`, to read them,
/// numbering placeholders from `first`. `None` when nothing links the table to the
/// subject's identities.
///
/// MariaDB (before 11.1) reads the whole table for `a OR x IN (SELECT …)`, running the
/// subquery for every row. On MySQL/MariaDB the keys each alternative reaches are
/// gathered first, each alternative on its own index, and the rows are read by those
/// keys, the whole condition still checked on them (a key another row shares takes no
/// other row). Only where the key is declared NOT NULL ([`Dataset::never_null_keys`]): a
/// NULL key is in no list of keys, and its row, left out, would never meet the key
/// checks that refuse it (`OR key IS NULL` would keep MariaDB from reading by the keys).
/// Only at the top: the parents' conditions inside stay plain, so that the statement
/// does not double at each level of parents.
fn condition(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    first: usize,
) -> Option<Condition> {
    let plain = plain_condition(dataset, table, subject, first)?;
    if plain.parts.len() < 2 || !dataset.never_null_keys.contains(&table.name) {
        return Some(plain);
    }
    let key = sql::ident(&table.key);
    let name = sql::ident(&table.name);
    let branches: Vec<String> = plain
        .parts
        .iter()
        .map(|(part, _)| format!("SELECT {key} FROM {name} WHERE {part}"))
        .collect();
    // (`?` placeholders: the parameters are bound in the order they are written.)
    let params = plain
        .parts
        .iter()
        .flat_map(|(_, params)| params.iter().cloned())
        .chain(plain.params.iter().cloned())
        .collect();
    Some(Condition {
        sql: format!(
            "({key} IN (SELECT oubli_hits.{key} FROM ({}) AS oubli_hits) AND {})",
            branches.join(" UNION "),
            plain.sql
        ),
        params,
        parts: Vec::new(),
    })
}

/// The condition that selects `table`'s rows belonging to `subject`, as one `OR` of its
/// alternatives, numbering placeholders from `first`; for changes, and inside a child's
/// condition. `None` when nothing links the table to the subject's identities. Built
/// once per table, subject and numbering, then kept with the dataset.
fn plain_condition(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    first: usize,
) -> Option<Condition> {
    let first = if matches!(sql::dialect(), sql::Dialect::Postgres) {
        first
    } else {
        0
    };
    let same = |built: &Built| {
        built.table == table.name
            && built.first == first
            && built.identities.len() == subject.identities.len()
            && built
                .identities
                .iter()
                .zip(&subject.identities)
                .all(|((kind, value), i)| *kind == i.kind && *value == i.value)
    };
    if let Some(built) = dataset.conditions.borrow().iter().find(|b| same(b)) {
        return built.condition.clone();
    }
    // (Built outside the borrow: a child's condition asks for its parent's.)
    let condition = build_condition(dataset, table, subject, first.max(1));
    dataset.conditions.borrow_mut().push(Built {
        table: table.name.clone(),
        first,
        identities: subject
            .identities
            .iter()
            .map(|i| (i.kind.clone(), i.value.clone()))
            .collect(),
        condition: condition.clone(),
    });
    condition
}

fn build_condition(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    first: usize,
) -> Option<Condition> {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    // Each alternative's parameters, for `parts`.
    let mut taken = Vec::new();
    // Strong identities reach a row on their own; weak ones only when enough agree (they
    // confirm a row a strong one reached, which needs no test of its own).
    // Numbered in the order they are written: the strong tests, then the weak ones.
    let strong = identity_tests(dataset, table, &only(dataset, subject, false), first);
    let numbered: usize = strong.iter().map(|t| t.params.len()).sum();
    let weak = identity_tests(
        dataset,
        table,
        &only(dataset, subject, true),
        first + numbered,
    );
    for test in strong {
        parts.push(test.sql);
        taken.push(test.params.len());
        params.extend(test.params);
    }
    // Agreement counts distinct kinds: the same phone given twice, in two spellings, is
    // one identity, not two that agree. (`only` sorts the weak identities by kind, so
    // the tests grouped by kind keep the order they were numbered and written in.)
    let mut kinds: Vec<&str> = weak.iter().map(|t| t.kind.as_str()).collect();
    kinds.dedup();
    if dataset.weak_kinds_agree(kinds.iter().copied()) {
        let sum: Vec<String> = kinds
            .iter()
            .map(|kind| {
                let any: Vec<&str> = weak
                    .iter()
                    .filter(|t| t.kind == *kind)
                    .map(|t| t.sql.as_str())
                    .collect();
                format!("CASE WHEN ({}) THEN 1 ELSE 0 END", any.join(" OR "))
            })
            .collect();
        parts.push(format!(
            "({}) >= {}",
            sum.join(" + "),
            dataset.weak_agreement
        ));
        let before = params.len();
        params.extend(weak.into_iter().flat_map(|t| t.params));
        taken.push(params.len() - before);
    }
    if let Some(relation) = &table.parent {
        let parent = dataset.table(&relation.table)?;
        if let Some(inner) = plain_condition(dataset, parent, subject, first + params.len()) {
            let referenced = relation.references.as_deref().unwrap_or(&parent.key);
            let parents = format!(
                "SELECT {} FROM {} WHERE {}",
                sql::ident(referenced),
                sql::ident(&parent.name),
                inner.sql
            );
            let column = sql::ident(&relation.column);
            parts.push(if matches!(sql::dialect(), sql::Dialect::Postgres) {
                // PostgreSQL scans the whole table for `a OR x IN (SELECT …)` (a hashed
                // subplan cannot join a bitmap OR); the parents' keys as an array, read
                // first, keep both sides on their indexes.
                format!("{column} = ANY (ARRAY({parents}))")
            } else {
                format!("{column} IN ({parents})")
            });
            taken.push(inner.params.len());
            params.extend(inner.params);
        }
    }
    if parts.is_empty() {
        return None;
    }
    let gather =
        matches!(sql::dialect(), sql::Dialect::Mysql) && table.parent.is_some() && parts.len() > 1;
    let split = if gather {
        let mut rest = params.as_slice();
        parts
            .iter()
            .zip(taken)
            .map(|(part, n)| {
                let (mine, after) = rest.split_at(n);
                rest = after;
                (part.clone(), mine.to_vec())
            })
            .collect()
    } else {
        Vec::new()
    };
    Some(Condition {
        sql: format!("({})", parts.join(" OR ")),
        params,
        parts: split,
    })
}

/// The access page of the rows of others that mention the subject, from table
/// `index - n` on: per row, the text around each occurrence, never the whole text.
fn mentions_page(dataset: &Dataset, subject: &Subject, index: usize, n: usize) -> Result<Page> {
    if dataset.tables.iter().all(|t| t.mentions.is_empty()) {
        return Ok(Page {
            records: Vec::new(),
            next: None,
        });
    }
    let own = located(dataset, subject)?;
    let found = mentions::find(dataset, subject)?;
    let mut index = index;
    while index < 2 * n {
        let t = index - n;
        let records: Vec<PersonalRecord> = found
            .iter()
            .filter(|m| m.table == t)
            .filter(|m| {
                let key = m.key.to_key();
                !own.iter().any(|row| row.table == t && row.key == key)
            })
            .map(|m| PersonalRecord {
                collection: format!("{} (mentions of the subject)", dataset.tables[t].name),
                key: m.key.to_key(),
                fields: m
                    .columns
                    .iter()
                    .map(|(column, text, _)| {
                        Field::json(
                            column,
                            serde_json::json!(mentions::excerpts(dataset, subject, text)),
                            Some("mention"),
                        )
                    })
                    .collect(),
            })
            .collect();
        index += 1;
        if !records.is_empty() {
            let next = (index < 2 * n).then(|| format!("{index}:0"));
            return Ok(Page { records, next });
        }
    }
    Ok(Page {
        records: Vec::new(),
        next: None,
    })
}

/// The subject with only its weak (or only its strong) identities.
fn only(dataset: &Dataset, subject: &Subject, weak: bool) -> Subject {
    let mut identities: Vec<_> = subject
        .identities
        .iter()
        .filter(|i| dataset.is_weak(&i.kind) == weak)
        .cloned()
        .collect();
    identities.sort_by(|a, b| a.kind.cmp(&b.kind));
    Subject {
        request_id: subject.request_id.clone(),
        identities,
    }
}

/// `column` with the separators a phone number is written with removed, in SQL every
/// engine runs (SQLite has no `regexp_replace`).
fn digits_of(column: &str) -> String {
    [" ", ".", "-", "(", ")", "+", "/", "\u{a0}"]
        .iter()
        .fold(column.to_owned(), |inner, separator| {
            format!("replace({inner}, '{separator}', '')")
        })
}

/// A column's value as `access` exports it: JSON documents and arrays as JSON, bytes in
/// base64, exact decimals and the other types the host passes as text as strings.
fn exported(dataset: &Dataset, table: &Table, column: &str, value: &Value) -> serde_json::Value {
    match value {
        Value::Text(text) if dataset.is_json(&table.name, column) => {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone()))
        }
        // MariaDB's JSON is a binary-collated LONGTEXT, which arrives as bytes.
        Value::Blob(bytes) if dataset.is_json(&table.name, column) => serde_json::from_slice(bytes)
            .unwrap_or_else(|_| serde_json::Value::String(base64(bytes))),
        Value::Blob(bytes) if dataset.is_text(&table.name, column) => {
            serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Value::Blob(bytes) => serde_json::Value::String(base64(bytes)),
        other => other.to_json(),
    }
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The keys of `table`'s rows that belong to the subject.
fn keys(dataset: &Dataset, table: &Table, subject: &Subject) -> Result<Vec<Value>> {
    Ok(rows_of(dataset, table, subject, &[])?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

/// Refuses a result cut at the host's row limit: a partial list would make a wrong
/// erasure report or a partial rectification.
fn complete(rows: sql::Rows) -> Result<sql::Rows> {
    if rows.rows.len() >= sql::MAX_ROWS as usize {
        return Err(Error::Failed(format!(
            "the subject has {} rows or more in this system, more than the SQL connector handles in one call",
            sql::MAX_ROWS
        )));
    }
    Ok(rows)
}

/// Fails when none of the subject's identity kinds is mapped to a column: the request
/// would otherwise "find nothing" and pass for done.
fn check_mapped(dataset: &Dataset, subject: &Subject) -> Result<()> {
    let mapped = |kind: &str| {
        dataset
            .tables
            .iter()
            .any(|t| t.identities.contains_key(kind))
    };
    let strong = subject
        .identities
        .iter()
        .any(|i| mapped(&i.kind) && !dataset.is_weak(&i.kind));
    let mut weak: Vec<&str> = subject
        .identities
        .iter()
        .filter(|i| mapped(&i.kind) && dataset.is_weak(&i.kind))
        .map(|i| i.kind.as_str())
        .collect();
    weak.sort();
    weak.dedup();
    if strong || dataset.weak_kinds_agree(weak.iter().copied()) {
        return Ok(());
    }
    // Weak identities alone (a phone number) could be someone else's: they reach no row,
    // and "nothing found" would pass for an answer.
    if !weak.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "the subject's identities here are only weak ones ({}), which others may share: they confirm a row a strong identity reaches but never reach one alone (config.dataset weak_identities, weak_agreement = {}); give a strong identity such as an e-mail address or a customer id",
            weak.join(", "),
            dataset.weak_agreement
        )));
    }
    Err(subject.unsearchable(
        dataset
            .tables
            .iter()
            .flat_map(|t| t.identities.keys().map(String::as_str)),
    ))
}

/// The shortest identity value `sweep` searches for inside text.
const MIN_SWEEP_CHARS: usize = 5;
/// The most rows one sweep statement reads; more, and the sweep says it was cut short.
const SWEEP_ROWS: u32 = 1_000;

/// `value`'s bytes as PostgreSQL's escape form of bytes writes them (`encode(…,
/// 'escape')`, `bytea_output = 'escape'`): a zero byte and bytes from 128 in octal, a
/// backslash doubled.
fn bytea_escaped(value: &str) -> String {
    value.bytes().fold(String::new(), |mut out, b| {
        match b {
            0 | 128.. => out.push_str(&format!("\\{b:03o}")),
            b'\\' => out.push_str("\\\\"),
            _ => out.push(char::from(b)),
        }
        out
    })
}

/// How text forms that escape characters write `value`, when it holds such characters
/// (`o'brien@x.org` in a `tsvector`, `'o''brien@x.org'`): `'` doubled, or as an XML
/// entity; `&` as an XML entity; `"` and `\` behind a backslash (an array's, a
/// composite's, an `hstore`'s or a JSON text's element); on PostgreSQL, a value with
/// bytes that are not ASCII as bytes inside an array or a composite write it. `sweep`
/// searches each besides the value.
fn spellings(value: &str) -> Vec<String> {
    let mut spellings = Vec::new();
    if value.contains('\'') {
        for quote in ["''", "&apos;", "&#39;"] {
            spellings.push(value.replace('\'', quote));
        }
    }
    if value.contains('&') {
        spellings.push(value.replace('&', "&amp;"));
    }
    if value.contains(['"', '\\']) {
        spellings.push(value.replace('\\', "\\\\").replace('"', "\\\""));
    }
    // Bytes inside a PostgreSQL array or composite, in escape form, and that form's
    // backslashes doubled by the array's or the composite's quoting.
    if matches!(
        oubli_connector::sql::dialect(),
        oubli_connector::sql::Dialect::Postgres
    ) && !value.bytes().all(|b| b != 0 && b != b'\\' && b < 128)
    {
        spellings.push(bytea_escaped(value).replace('\\', "\\\\"));
    }
    spellings
}

/// The condition that one of `columns` holds `value` (in lower case) inside its text, read
/// as [`Searched`] says, whatever the case of its ASCII letters (of every letter where
/// the database folds them), and its parameters.
fn sweep_test(columns: &[(&str, Searched)], value: &str) -> (String, Vec<Value>) {
    use oubli_connector::sql::{self, Dialect};
    let text = || Value::Text(value.to_owned());
    match sql::dialect() {
        // One call of the host's function per row (and 100 columns), which skips numbers:
        // a column with TEXT affinity holds none (it stores them as their text), one
        // declared as a number or a date holds a text only where one was stored against
        // its type, and any other column is read as text, its numbers included.
        Dialect::Sqlite => {
            let args: Vec<String> = columns
                .iter()
                .map(|(c, how)| match how {
                    Searched::Any => how.read(&sql::ident(c)),
                    _ => sql::ident(c),
                })
                .collect();
            let calls: Vec<String> = args
                .chunks(100)
                .map(|chunk| format!("oubli_contains_stored_text(?, {})", chunk.join(", ")))
                .collect();
            let params = calls.iter().map(|_| text()).collect();
            (format!("({})", calls.join(" OR ")), params)
        }
        Dialect::Postgres => {
            // `encode(…, 'escape')` writes a zero byte, a byte from 128 and a backslash
            // as an escape: the value is looked for as written so.
            let escaped = bytea_escaped(value);
            let (texts, bytes): (Vec<_>, Vec<_>) =
                columns.iter().partition(|(_, how)| *how != Searched::Bytes);
            let texts: Vec<String> = texts
                .iter()
                .map(|(c, how)| how.read(&sql::ident(c)))
                .collect();
            let (mut test, mut params) = if texts.is_empty() {
                ("(false)".to_owned(), Vec::new())
            } else {
                sql::contains_text_in(&texts, value, 1)
            };
            if !bytes.is_empty() {
                params.push(Value::Text(escaped));
                let n = params.len();
                for (c, _) in bytes {
                    test = format!(
                        "({test} OR strpos(lower(encode({}, 'escape')), ${n}) > 0)",
                        sql::ident(c)
                    );
                }
            }
            (test, params)
        }
        Dialect::Mysql => {
            let tests: Vec<String> = columns
                .iter()
                .map(|(c, how)| {
                    let c = sql::ident(c);
                    match how {
                        // The column's bytes and the value's, each as `latin1`, which takes
                        // any byte: ASCII letters compare in any case.
                        Searched::Bytes => format!(
                            "instr(lower(CONVERT({c} USING latin1)), lower(CONVERT(CAST(? AS BINARY) USING latin1))) > 0"
                        ),
                        _ => format!("instr(lower(CAST({c} AS CHAR)), ?) > 0"),
                    }
                })
                .collect();
            let params = columns.iter().map(|_| text()).collect();
            (format!("({})", tests.join(" OR ")), params)
        }
    }
}

/// Whether `value`, read back from the row with `key`, is what `mask` makes of a column
/// (see [`masked`]).
fn mask_applied(table: &Table, key: &str, value: Option<&Value>, mask: Mask) -> bool {
    let text = match value {
        None => return matches!(mask, Mask::Null | Mask::KeyedHash),
        Some(Value::Text(text)) => text.as_str(),
        Some(_) => return false,
    };
    match mask {
        Mask::Null => false,
        Mask::Redacted => text == "[erased]",
        Mask::ErasedKey => text == format!("erased-{}-{key}", table.name),
        Mask::KeyedHash => oubli_connector::config::is_keyed_hash(text),
    }
}

/// What one record is now, read by its primary key: gone; or, in a table whose rows are
/// deleted, still holding the personal columns that are set; or, in a table whose rows
/// are anonymised or retained, holding the masked columns that do not hold what their
/// mask makes of them, else cleared of them (anonymised) or holding its unmasked personal
/// columns (retained, with its legal basis).
fn read_back(dataset: &Dataset, table: &Table, key: &str) -> Result<RecordState> {
    let mut columns: Vec<&String> = table
        .identities
        .values()
        .map(|i| &i.column)
        .chain(table.columns.keys())
        .chain(table.erase.columns.keys())
        .collect();
    columns.sort();
    columns.dedup();
    let list = if columns.is_empty() {
        "1".to_owned()
    } else {
        columns
            .iter()
            .map(|c| sql::ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // By the key's own type, so that its index finds the row.
    let (equals, value) = dataset.key_equals(table, key);
    let rows = sql::query(
        &format!(
            "SELECT {list} FROM {table} WHERE {equals}",
            table = sql::ident(&table.name),
        ),
        vec![value],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(RecordState::Gone);
    };
    let value = |column: &String| {
        columns
            .iter()
            .position(|c| *c == column)
            .and_then(|i| row.get(i))
            .filter(|v| !matches!(v, Value::Null))
    };
    let set: Vec<String> = columns
        .iter()
        .filter(|c| value(c).is_some())
        .map(|c| (*c).clone())
        .collect();
    if table.erase.action == EraseAction::Delete {
        return Ok(RecordState::Holds(set));
    }
    let masked: Vec<&String> = table.erase.columns.keys().collect();
    let still: Vec<String> = table
        .erase
        .columns
        .iter()
        .filter(|(column, mask)| !mask_applied(table, key, value(column), **mask))
        .map(|(column, _)| column.clone())
        .collect();
    if !still.is_empty() {
        return Ok(RecordState::Holds(still));
    }
    Ok(match table.erase.action {
        EraseAction::Retain => RecordState::Holds(
            set.into_iter()
                .filter(|c| !table.erase.columns.contains_key(c))
                .collect(),
        ),
        _ => RecordState::Cleared(masked.into_iter().cloned().collect()),
    })
}

/// One located row: its table (by index), its key as text, and which of the table's
/// identity tests it passed (bit `j` for test `j`; none when reached through its parent).
struct Located {
    table: usize,
    key: String,
    matched: i64,
    /// The parent row's key, for a table whose relation references it.
    parent: Option<String>,
}

/// Every row of the subject in every table, as (table index, key as text), in one query:
/// one `UNION ALL` branch per table that reaches the subject.
fn located(dataset: &Dataset, subject: &Subject) -> Result<Vec<Located>> {
    let text = sql::text_type();
    let mut branches = Vec::new();
    let mut params = Vec::new();
    for (i, table) in dataset.tables.iter().enumerate() {
        // Which identity tests each row passed, for `matched`: its parameters come first
        // because the select list comes before the condition.
        let tests = identity_tests(dataset, table, subject, params.len() + 1);
        let mut mask_params = Vec::new();
        let mask: Vec<String> = tests
            .into_iter()
            .take(62)
            .enumerate()
            .map(|(j, test)| {
                mask_params.extend(test.params);
                format!("CASE WHEN {} THEN {} ELSE 0 END", test.sql, 1_i64 << j)
            })
            .collect();
        let Some(cond) = condition(
            dataset,
            table,
            subject,
            params.len() + mask_params.len() + 1,
        ) else {
            continue;
        };
        let mask = if mask.is_empty() {
            "0".to_owned()
        } else {
            mask.join(" + ")
        };
        let parent = match &table.parent {
            Some(relation)
                if relation.references.is_none()
                    || dataset.table(&relation.table).map(|p| &p.key)
                        == relation.references.as_ref() =>
            {
                format!("CAST({} AS {text})", sql::ident(&relation.column))
            }
            _ => format!("CAST(NULL AS {text})"),
        };
        branches.push(format!(
            "SELECT {i} AS t, CAST({key} AS {text}) AS k, {mask} AS m, {parent} AS p FROM {table} WHERE {cond}",
            key = sql::ident(&table.key),
            table = sql::ident(&table.name),
            cond = cond.sql
        ));
        params.extend(mask_params);
        params.extend(cond.params);
    }
    if branches.is_empty() {
        return Ok(Vec::new());
    }
    let rows = complete(sql::query(
        &format!("{} ORDER BY 1, 2", branches.join(" UNION ALL ")),
        params,
    )?)?;
    let mut out: Vec<Located> = Vec::with_capacity(rows.rows.len());
    // (A set, not the order: under a collation that ignores case, `a`, `A`, `a` sort
    // together in any order.)
    let mut seen = std::collections::BTreeSet::new();
    for row in rows.rows {
        let [Value::Integer(t), key, Value::Integer(m), parent] = row.as_slice() else {
            return Err(Error::Failed(format!(
                "unexpected row from the locate query: {row:?}"
            )));
        };
        let table = *t as usize;
        let Some(declared) = dataset.tables.get(table) else {
            return Err(Error::Failed(format!(
                "the locate query named table {table}, which the dataset does not have"
            )));
        };
        let key = declared.row_key(key.clone())?.to_key();
        if !seen.insert((table, key.clone())) {
            return Err(declared.repeated_key(&key));
        }
        out.push(Located {
            table,
            key,
            matched: *m,
            parent: (!matches!(parent, Value::Null)).then(|| parent.to_key()),
        });
    }
    Ok(out)
}

fn record_ref(table: &Table, key: &Value) -> RecordRef {
    RecordRef::new(&table.name, key.to_key(), table.categories())
}

/// Statements that apply `assignments` to the rows with the given keys, in chunks,
/// pushed onto `statements`, each with the rows it must reach pushed onto `reaches`.
fn update_by_keys<'t>(
    dataset: &Dataset,
    table: &'t Table,
    assignments: &[(String, Value)],
    keys: &[Value],
    (statements, reaches): (&mut Vec<Statement>, &mut Vec<Reach<'t>>),
) {
    // MySQL/MariaDB compare a list of texts with a decimal key as floating-point numbers
    // when they read the key's index in full, which takes keys that differ past 15
    // digits for one another; one key each compares exactly.
    let chunk = if matches!(sql::dialect(), sql::Dialect::Mysql)
        && !dataset.narrowed_keys.contains(&table.name)
    {
        1
    } else {
        KEY_CHUNK
    };
    for chunk in keys.chunks(chunk) {
        let mut n = 0;
        let mut next = || {
            n += 1;
            sql::placeholder(n)
        };
        let sets: Vec<String> = assignments
            .iter()
            .map(|(column, _)| format!("{} = {}", sql::ident(column), next()))
            .collect();
        let list: Vec<String> = chunk
            .iter()
            .map(|_| dataset.key_param(&table.name, &next()))
            .collect();
        let statement = Statement::new(format!(
            "UPDATE {} SET {} WHERE {} IN ({})",
            sql::ident(&table.name),
            sets.join(", "),
            sql::ident(&table.key),
            list.join(", ")
        ));
        reaches.push(Reach {
            position: statements.len(),
            table,
            keys: chunk.to_vec(),
            deletes: false,
        });
        statements.push(
            assignments
                .iter()
                .map(|(_, value)| value)
                .chain(chunk)
                .cloned()
                .fold(statement, Statement::bind),
        );
    }
}

/// What `mask` makes of a column holding `original` in the row with key `key`.
fn masked(table: &Table, key: &Value, original: &Value, mask: Mask) -> Value {
    match mask {
        Mask::Null => Value::Null,
        Mask::Redacted => Value::Text("[erased]".into()),
        Mask::ErasedKey => Value::Text(format!("erased-{}-{}", table.name, key.to_key())),
        Mask::KeyedHash => match original {
            Value::Null => Value::Null,
            // Already a keyed hash: a second erase leaves it as it is.
            Value::Text(t) if oubli_connector::config::is_keyed_hash(t) => original.clone(),
            other => Value::Text(oubli_connector::config::keyed_hash(&other.to_key())),
        },
    }
}

/// The subject's rows of `table`: each row's key and the values of `columns`, for a
/// change by key. Refused when a key is NULL (no change by key reaches the row) or is
/// shared with any other row, the subject's or another person's (a change by key would
/// reach that row too): each row is read with how many rows of the table have its key.
fn rows_of(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    columns: &[&String],
) -> Result<Vec<(Value, Vec<Value>)>> {
    let Some(cond) = condition(dataset, table, subject, 1) else {
        return Ok(Vec::new());
    };
    let name = sql::ident(&table.name);
    let key = sql::ident(&table.key);
    let select: Vec<String> = std::iter::once(dataset.key_read(table))
        .chain(columns.iter().map(|c| sql::ident(c)))
        .collect();
    let statement = format!(
        "SELECT {}, (SELECT COUNT(*) FROM {name} AS oubli_same WHERE oubli_same.{key} = {name}.{key}) FROM {name} WHERE {} ORDER BY {key}",
        select.join(", "),
        cond.sql,
    );
    let mut out: Vec<(Value, Vec<Value>)> = Vec::new();
    for mut row in complete(sql::query(&statement, cond.params)?)?.rows {
        let sharing = row.pop();
        let values = row.split_off(1.min(row.len()));
        let key = table.row_key(row.pop().unwrap_or(Value::Null))?;
        if !matches!(sharing, Some(Value::Integer(1))) {
            return Err(table.repeated_key(&key.to_key()));
        }
        out.push((key, values));
    }
    Ok(out)
}

impl Connector for SqlConnector {
    fn describe() -> Info {
        Info {
            name: "sql".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Relational databases (SQLite, PostgreSQL, MySQL/MariaDB) described by a dataset configuration".into(),
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
        let (dataset, catalogue) = Dataset::load_with_catalogue()?;
        dataset.check_against(&catalogue)?;
        dataset.check_readable()
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        let dataset = Dataset::load()?;
        check_mapped(&dataset, &subject)?;
        let mut refs = Vec::new();
        // Each table's identity tests, built at its first row.
        let mut tests_of: Vec<Option<Vec<IdentityTest>>> =
            dataset.tables.iter().map(|_| None).collect();
        for row in located(&dataset, &subject)? {
            let Some(table) = dataset.tables.get(row.table) else {
                continue;
            };
            let mut reference = record_ref(table, &Value::Text(row.key));
            // Why it is the subject's: the identity tests the row passed, else its parent.
            let tests = tests_of[row.table]
                .get_or_insert_with(|| identity_tests(&dataset, table, &subject, 1));
            for (j, test) in tests.iter().enumerate().take(62) {
                if row.matched & (1 << j) != 0 {
                    let how = if test.normalised {
                        MatchKind::Normalised
                    } else {
                        MatchKind::Exact
                    };
                    reference = reference.matched_by(&test.kind, &test.column, how);
                }
            }
            // Weak identities that matched confirm, but did not reach the row on their own
            // unless enough kinds agree: then it was reached through its parent.
            let reached_by_itself = reference.matched.iter().any(|m| !dataset.is_weak(&m.kind))
                || dataset.weak_kinds_agree(
                    reference
                        .matched
                        .iter()
                        .filter(|m| dataset.is_weak(&m.kind))
                        .map(|m| m.kind.as_str()),
                );
            if !reached_by_itself && let (Some(relation), Some(key)) = (&table.parent, &row.parent)
            {
                reference = reference.through(format!("{}/{key}", relation.table));
            }
            refs.push(reference);
        }
        // Rows of others that mention the subject in free text.
        for mention in mentions::find(&dataset, &subject)? {
            let table = &dataset.tables[mention.table];
            let key = mention.key.to_key();
            if refs
                .iter()
                .any(|r| r.collection == table.name && r.key == key)
            {
                continue;
            }
            let mut reference = RecordRef::new(&table.name, key, vec!["mention".into()]);
            for (column, _, kinds) in &mention.columns {
                for kind in kinds {
                    reference = reference.matched_by(kind, column, MatchKind::Normalised);
                }
            }
            refs.push(reference);
        }
        Ok(refs)
    }

    fn access(subject: Subject, cursor: Option<String>) -> Result<Page> {
        let dataset = Dataset::load_typed()?;
        check_mapped(&dataset, &subject)?;
        let (mut index, mut offset) = match cursor.as_deref() {
            None => (0, 0),
            Some(text) => text
                .split_once(':')
                .and_then(|(t, o)| Some((t.parse().ok()?, o.parse().ok()?)))
                .ok_or_else(|| Error::Failed(format!("malformed access cursor {text:?}")))?,
        };
        // Tables 0..n are the subject's rows; n..2n the rows of table i - n that mention
        // the subject in free text. (Rows only one weak identity matches are someone
        // else's as likely as the subject's: never exported.)
        let n = dataset.tables.len();
        if index >= n {
            return mentions_page(&dataset, &subject, index, n);
        }
        while index < n {
            let table = &dataset.tables[index];
            let Some(cond) = condition(&dataset, table, &subject, 1) else {
                (index, offset) = (index + 1, 0);
                continue;
            };
            let collection = table.name.clone();
            let columns: Vec<&String> = table.columns.keys().filter(|c| **c != table.key).collect();
            let select: Vec<String> = std::iter::once(&table.key)
                .chain(columns.iter().copied())
                .map(|c| sql::ident(c))
                .collect();
            let statement = format!(
                "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {} OFFSET {}",
                select.join(", "),
                sql::ident(&table.name),
                cond.sql,
                sql::ident(&table.key),
                PAGE_SIZE + 1,
                offset
            );
            let rows = sql::query(&statement, cond.params)?.rows;
            if rows.is_empty() {
                (index, offset) = (index + 1, 0);
                continue;
            }
            let more = rows.len() > PAGE_SIZE;
            let records = rows
                .into_iter()
                .take(PAGE_SIZE)
                .map(|row| {
                    let key = row.first().map(Value::to_key).unwrap_or_default();
                    let fields = columns
                        .iter()
                        .zip(row.iter().skip(1))
                        .map(|(name, value)| {
                            Field::json(
                                name,
                                exported(&dataset, table, name, value),
                                table.columns.get(*name).map(String::as_str),
                            )
                        })
                        .collect();
                    PersonalRecord {
                        collection: collection.clone(),
                        key,
                        fields,
                    }
                })
                .collect();
            let next = if more {
                Some(format!("{index}:{}", offset + PAGE_SIZE))
            } else {
                Some(format!("{}:0", index + 1))
            };
            return Ok(Page { records, next });
        }
        mentions_page(&dataset, &subject, n, n)
    }

    fn rectify(subject: Subject, changes: Vec<Change>) -> Result<Rectified> {
        let dataset = Dataset::load()?;
        check_mapped(&dataset, &subject)?;
        let mut statements = Vec::new();
        let mut reaches = Vec::new();
        // Whether it changes the table's key, the table, the assignments, the keys.
        type Job<'t> = (bool, &'t Table, Vec<(String, Value)>, Vec<Value>);
        let mut jobs: Vec<Job> = Vec::new();
        let mut changed = Vec::new();
        let mut not_applicable = Vec::new();
        for (position, change) in changes.iter().enumerate() {
            let targets: Vec<&Table> = dataset
                .tables
                .iter()
                .filter(|t| change.targets(&t.name))
                .filter(|t| t.columns.contains_key(&change.field))
                .collect();
            // No table here has the column: another system may hold it.
            if targets.is_empty() {
                not_applicable.push(position as u32);
                continue;
            }
            let value = change.parsed_value()?;
            // The column itself, then its copies in the subject's rows of other tables
            // (an order's shipping phone copying the customer's phone).
            let mut places: Vec<(&Table, &str)> = targets
                .iter()
                .map(|t| (*t, change.field.as_str()))
                .collect();
            for table in &targets {
                places.extend(dataset.copies_of(&table.name, &change.field));
            }
            places.sort_by_key(|(t, c)| (t.name.clone(), c.to_string()));
            places.dedup_by_key(|(t, c)| (t.name.clone(), c.to_string()));
            for (table, column) in places {
                // Keys first: a change to an identity column must not hide the other rows.
                let keys = keys(&dataset, table, &subject)?;
                changed.extend(keys.iter().map(|k| record_ref(table, k)));
                jobs.push((
                    column == table.key,
                    table,
                    vec![(column.to_owned(), Value::from_json(&value))],
                    keys,
                ));
            }
        }
        // A change of a key column last: the other changes find their rows by the keys
        // as they were read.
        jobs.sort_by_key(|(changes_key, ..)| *changes_key);
        for (_, table, assignments, keys) in &jobs {
            update_by_keys(
                &dataset,
                table,
                assignments,
                keys,
                (&mut statements, &mut reaches),
            );
        }
        let counts = sql::transaction(statements)?;
        check_reached(&counts, &reaches, "rectification")?;
        changed.sort_by(|a, b| (&a.collection, &a.key).cmp(&(&b.collection, &b.key)));
        changed.dedup_by(|a, b| a.collection == b.collection && a.key == b.key);
        Ok(Rectified {
            changed,
            not_applicable,
        })
    }

    /// Reads each record back by its table's primary key (see [`read_back`]).
    fn verify(subject: Subject, records: Vec<RecordRef>) -> Result<Vec<Verified>> {
        // With the catalogue on SQLite too: each record is read back by its key, which
        // the key's declared type lets an index find instead of a full read of the table.
        let dataset = Dataset::load_typed()?;
        records
            .into_iter()
            .map(|r| {
                let table = dataset.table(&r.collection).ok_or_else(|| {
                    Error::Failed(format!(
                        "verify was given a record of {:?}, a table the dataset does not name",
                        r.collection
                    ))
                })?;
                // A row of someone else that mentioned the subject: only its mention
                // columns are the subject's.
                let mention = !r.matched.is_empty()
                    && r.matched.iter().all(|m| table.mentions.contains(&m.field));
                let state = if mention {
                    match mentions::still_named(&dataset, table, &r.key, &subject)? {
                        None => RecordState::Gone,
                        Some(still) if still.is_empty() => RecordState::Cleared(
                            r.matched.iter().map(|m| m.field.clone()).collect(),
                        ),
                        Some(still) => RecordState::Holds(still),
                    }
                } else {
                    read_back(&dataset, table, &r.key)?
                };
                Ok(Verified {
                    collection: r.collection,
                    key: r.key,
                    state,
                })
            })
            .collect()
    }

    /// Lists the subjects of a retention rule of `dataset.retention` whose period ran out.
    fn expired(rule: String, cursor: Option<String>) -> Result<oubli_connector::ExpiredPage> {
        let (dataset, catalogue) = Dataset::load_with_catalogue()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        retention::expired(&dataset, &catalogue, &rule, cursor.as_deref(), now)
    }

    /// Looks for the subject's identity values, in any case, inside every text-like column
    /// of every table the credentials can read (not only the dataset's): one statement
    /// per table and identity, within `budget` statements.
    fn sweep(subject: Subject, budget: u32) -> Result<SweepReport> {
        let dataset = Dataset::load()?;
        let mut report = SweepReport {
            covered: Vec::new(),
            skipped: Vec::new(),
            hits: Vec::new(),
            cut_short: false,
        };
        // A sweep reads every row of every table: an operator may turn it off for a
        // large system, and the certificate then says that nothing was swept.
        if oubli_connector::config::get("sweep").as_deref() == Some("false") {
            report
                .skipped
                .push("every table: the system's configuration turns the sweep off (config.sweep = false)".into());
            return Ok(report);
        }
        let catalogue = Catalogue::read(None, true)?;
        if catalogue.cut() {
            report.cut_short = true;
            report.skipped.push(format!(
                "the tables after the first {} text columns of the catalogue (the most one statement reads)",
                sql::MAX_ROWS
            ));
        }
        // Bytes inside arrays and composites are written in hexadecimal by default; as
        // `escape` writes them, printable ASCII stays as it is. (The session is reset
        // after the call.)
        // A refused statement rolls the call's transaction back, and the setting with it:
        // it is set again after each.
        let escape_bytes = || -> Result<()> {
            if matches!(sql::dialect(), sql::Dialect::Postgres) {
                sql::query(
                    "SELECT pg_catalog.set_config('bytea_output', 'escape', false)",
                    Vec::new(),
                )?;
            }
            Ok(())
        };
        escape_bytes()?;
        for table in catalogue.broken() {
            report.skipped.push(format!(
                "{table}: the database could not list its columns (a view whose table is gone, or a virtual table, which connections lent to plugins do not open); it was not searched"
            ));
        }
        let mut spent = 1;
        let mut values = Vec::new();
        for identity in &subject.identities {
            // Others may share a weak identity (a household's phone): finding it elsewhere
            // says nothing about what the erasure left.
            if dataset.is_weak(&identity.kind) {
                report.skipped.push(format!(
                    "identities of kind {} are weak (others may share them) and are not searched",
                    identity.kind
                ));
                continue;
            }
            let value = identity.value.trim().to_lowercase();
            // A value this short would be found inside unrelated text everywhere.
            if value.chars().count() < MIN_SWEEP_CHARS {
                report.skipped.push(format!(
                    "identities of kind {} shorter than {MIN_SWEEP_CHARS} characters are not searched in free text",
                    identity.kind
                ));
            } else {
                // Text forms that escape some characters hold such a value escaped.
                for spelling in spellings(&value) {
                    values.push((identity.kind.clone(), spelling));
                }
                values.push((identity.kind.clone(), value));
            }
        }
        // Nothing to look for: nothing is claimed covered.
        if values.is_empty() {
            return Ok(report);
        }
        let tables = catalogue.text_columns();
        // The list cut by the host's row limit may end inside a table: not all of its
        // columns are known.
        let straddling = tables.keys().last().copied().filter(|_| catalogue.cut());
        'tables: for (table, text) in tables {
            if straddling == Some(table) {
                report.skipped.push(format!(
                    "{table}: the catalogue's list was cut inside its columns; it is not searched"
                ));
                continue;
            }
            // Columns the credentials may change but not read (a column-level grant) are
            // not searched, and the table is not claimed covered.
            if !text.unreadable.is_empty() {
                report.skipped.push(format!(
                    "{table}: the credentials may not read its column(s) {}, which were not searched",
                    text.unreadable.join(", ")
                ));
            }
            let mut complete = text.unreadable.is_empty();
            if catalogue.rows_hidden(table) {
                report.skipped.push(format!(
                    "{table}: row-level security hides, or may hide, some of its rows from the credentials (a table under a policy, or a view reading its tables with their rights); the rows they see were searched"
                ));
                complete = false;
            }
            if !text.unsearchable.is_empty() {
                report.skipped.push(format!(
                    "{table}: its column(s) {} hold what they hold in a form that cannot be searched (a full-text index's terms), and were not searched",
                    text.unsearchable.join(", ")
                ));
                complete = false;
            }
            let mut columns = text.readable;
            if columns.is_empty() {
                continue;
            }
            // An SQLite view's rows need not have its declared types (a `UNION`'s later
            // parts): a column declared as text is read as text, its numbers included.
            if matches!(sql::dialect(), sql::Dialect::Sqlite) && catalogue.is_view(table) {
                for (_, how) in &mut columns {
                    if *how == Searched::Text {
                        *how = Searched::Any;
                    }
                }
            }
            // An SQLite table declared as numbers and dates only: scanning it for the few
            // texts stored there against their declared types costs a read of every row,
            // so it is not searched, and said so.
            if columns.iter().all(|(_, how)| *how == Searched::Stray) {
                report.skipped.push(format!(
                    "{table}: its columns are declared as numbers or dates; a text stored in them was not searched"
                ));
                continue;
            }
            // A column granted nothing is not in the catalogue at all: where columns may
            // be granted one by one, reading every column says whether any was left out.
            if catalogue.read_in_part(table) && complete {
                if spent >= budget {
                    report.cut_short = true;
                    break 'tables;
                }
                spent += 1;
                let every = format!("SELECT * FROM {} LIMIT 0", sql::ident(table));
                match sql::query(&every, Vec::new()) {
                    Ok(_) => {}
                    Err(Error::Unavailable(m)) => return Err(Error::Unavailable(m)),
                    Err(_) => {
                        report.skipped.push(format!(
                            "{table}: the credentials may read only some of its columns (reading all of them was refused), so whether the others hold text is not known; those they may read were searched"
                        ));
                        complete = false;
                        escape_bytes()?;
                    }
                }
            }
            let reads: Vec<String> = columns
                .iter()
                .map(|(c, how)| how.read(&sql::ident(c)))
                .collect();
            let key = match (dataset.table(table), sql::dialect()) {
                (Some(t), _) => sql::ident(&t.key),
                (None, sql::Dialect::Sqlite) if catalogue.keyless(table) => "''".to_owned(),
                (None, sql::Dialect::Sqlite) => "rowid".to_owned(),
                // Where only some columns are granted, `ctid` cannot be read either, and a
                // view's rows have none: the hits then name the table and column, not the
                // row (as on MySQL).
                (None, sql::Dialect::Postgres)
                    if catalogue.read_in_part(table) || catalogue.is_view(table) =>
                {
                    "''".to_owned()
                }
                (None, sql::Dialect::Postgres) => "ctid".to_owned(),
                (None, sql::Dialect::Mysql) => "''".to_owned(),
            };
            // One scan per table and identity: every text column tested in one statement.
            for (kind, value) in &values {
                if spent >= budget {
                    report.cut_short = true;
                    break 'tables;
                }
                spent += 1;
                let (test, params) = sweep_test(&columns, value);
                // A system-versioned table's earlier versions of rows still hold what
                // they held: searched too (an erasure leaves them unless its history is
                // deleted).
                let history = if catalogue.versioned(table) {
                    " FOR SYSTEM_TIME ALL"
                } else {
                    ""
                };
                let statement = format!(
                    "SELECT CAST({key} AS {text}), {reads} FROM {table}{history} WHERE {tests} LIMIT {SWEEP_ROWS}",
                    text = sql::text_type(),
                    reads = reads.join(", "),
                    table = sql::ident(table),
                    tests = test,
                );
                let rows = match sql::query(&statement, params) {
                    Ok(rows) => rows,
                    Err(Error::Unavailable(m)) => return Err(Error::Unavailable(m)),
                    Err(_) => {
                        report
                            .skipped
                            .push(format!("{table}: the database refused to read it"));
                        complete = false;
                        escape_bytes()?;
                        continue;
                    }
                };
                if rows.rows.len() as u32 >= SWEEP_ROWS {
                    report.cut_short = true;
                }
                for row in &rows.rows {
                    let key = row.first().map(Value::to_key).unwrap_or_default();
                    for ((column, _), cell) in columns.iter().zip(row.iter().skip(1)) {
                        // Bytes are read as they are (and a driver may hand back a cast
                        // of bytes as bytes): what is not UTF-8 in them ends a value.
                        let text = match cell {
                            Value::Text(text) => text.to_lowercase(),
                            Value::Blob(bytes) => String::from_utf8_lossy(bytes).to_lowercase(),
                            _ => continue,
                        };
                        if oubli_connector::mentions(&text, value) {
                            report.hits.push(SweepHit {
                                collection: table.to_owned(),
                                key: key.clone(),
                                field: (*column).to_owned(),
                                kind: kind.clone(),
                            });
                        }
                    }
                }
            }
            if complete {
                report.covered.push(table.to_owned());
            }
        }
        Ok(report)
    }

    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        let dataset = Dataset::load()?;
        check_mapped(&dataset, &subject)?;
        let found = located(&dataset, &subject)?;
        let mut statements = Vec::new();
        // The statements narrowed to found keys, or changing rows by key.
        let mut narrowed: Vec<Reach> = Vec::new();
        let mut report = Vec::new();
        // Children before parents, so that foreign keys hold and each child's condition
        // still reaches its parent while the transaction runs.
        for table in dataset.erase_order() {
            let index = dataset
                .tables
                .iter()
                .position(|t| std::ptr::eq(t, table))
                .unwrap_or_default();
            let found_keys: Vec<&String> = found
                .iter()
                .filter(|row| row.table == index)
                .map(|row| &row.key)
                .collect();
            if found_keys.is_empty() {
                continue;
            }
            let erase = &table.erase;
            let outcome = erase.action.outcome(
                erase.legal_basis.as_deref(),
                erase.columns.keys().cloned().collect(),
            );
            if erase.action == EraseAction::Delete {
                narrowed.extend(where_subject_found(
                    &dataset,
                    table,
                    &subject,
                    ("DELETE FROM", "", &[]),
                    &found_keys,
                    &mut statements,
                ));
            } else if erase.columns.values().any(|m| m.per_row()) {
                // Each row gets values of its own: change them by key.
                let columns: Vec<&String> = erase.columns.keys().collect();
                for (key, originals) in rows_of(&dataset, table, &subject, &columns)? {
                    let assignments: Vec<(String, Value)> = erase
                        .columns
                        .iter()
                        .zip(&originals)
                        .map(|((column, mask), original)| {
                            (column.clone(), masked(table, &key, original, *mask))
                        })
                        .collect();
                    update_by_keys(
                        &dataset,
                        table,
                        &assignments,
                        std::slice::from_ref(&key),
                        (&mut statements, &mut narrowed),
                    );
                }
            } else if !erase.columns.is_empty() {
                let dummy = Value::Null;
                let values: Vec<Value> = erase
                    .columns
                    .values()
                    .map(|m| masked(table, &dummy, &dummy, *m))
                    .collect();
                let sets: Vec<String> = erase
                    .columns
                    .keys()
                    .enumerate()
                    .map(|(i, c)| format!("{} = {}", sql::ident(c), sql::placeholder(i + 1)))
                    .collect();
                narrowed.extend(where_subject_found(
                    &dataset,
                    table,
                    &subject,
                    ("UPDATE", &format!("SET {}", sets.join(", ")), &values),
                    &found_keys,
                    &mut statements,
                ));
            }
            report.extend(found_keys.into_iter().map(|key| Erased {
                collection: table.name.clone(),
                key: key.clone(),
                outcome: outcome.clone(),
            }));
        }
        // Rows of others that mention the subject: only the occurrences are replaced, and
        // only if the text is still what was read.
        let mut rewrites = 0;
        for mention in mentions::find(&dataset, &subject)? {
            let table = &dataset.tables[mention.table];
            let key = mention.key.to_key();
            if found
                .iter()
                .any(|row| row.table == mention.table && row.key == key)
            {
                continue;
            }
            let mut columns = Vec::new();
            for (column, before, _) in &mention.columns {
                let after = mentions::redact(&dataset, &subject, before).ok_or_else(|| {
                    Error::Failed(format!(
                        "a mention of the subject in {}.{column} could not be cut out of its text safely",
                        table.name
                    ))
                })?;
                statements.push(mentions::rewrite(
                    &dataset,
                    table,
                    &mention.key,
                    column,
                    before,
                    &after,
                ));
                rewrites += 1;
                columns.push(column.clone());
            }
            report.push(Erased {
                collection: table.name.clone(),
                key,
                outcome: Outcome::Anonymised(columns),
            });
        }
        let counts = sql::transaction(statements)?;
        // Each found key names one row (a key repeated was refused).
        check_reached(&counts, &narrowed, "erasure")?;
        if counts.iter().rev().take(rewrites).any(|n| *n != 1) {
            return Err(Error::Unavailable(
                "a text mentioning the subject changed while it was being redacted; the erasure is run again".into(),
            ));
        }
        Ok(report)
    }
}

/// A statement of a transaction that must change exactly `keys.len()` rows of `table`,
/// one per key: narrowed to keys found, or changing rows by key (each named by one row,
/// see [`rows_of`]).
struct Reach<'t> {
    position: usize,
    table: &'t Table,
    keys: Vec<Value>,
    /// A `DELETE`: rows gone by other means (a cascade from a row deleted before it in
    /// the transaction, which the count leaves out) are as it would have left them.
    deletes: bool,
}

/// Checks, after the transaction, that each statement of `reaches` changed a row for
/// each of its keys; `what` names the change ("erasure"). A statement that reached fewer
/// left a row found for the subject as it was, which the report would otherwise call
/// changed: the call fails as `unavailable` (what was done is committed; it is run again,
/// from the rows as they are then). A `DELETE` short of its count passes when none of its
/// keys' rows is left.
fn check_reached(counts: &[u64], reaches: &[Reach], what: &str) -> Result<()> {
    for reach in reaches {
        let reached = counts.get(reach.position).copied().unwrap_or_default();
        let expected = reach.keys.len() as u64;
        if reached == expected {
            continue;
        }
        if reach.deletes && reached < expected {
            let list: Vec<String> = (1..=reach.keys.len()).map(sql::placeholder).collect();
            let left = sql::query(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE {} IN ({})",
                    sql::ident(&reach.table.name),
                    sql::ident(&reach.table.key),
                    list.join(", ")
                ),
                reach.keys.clone(),
            )?;
            if matches!(
                left.rows.first().and_then(|r| r.first()),
                Some(Value::Integer(0))
            ) {
                continue;
            }
        }
        return Err(Error::Unavailable(format!(
            "the {what} reached {reached} of the {expected} rows of {} found for the subject (rows changed since they were found); what it reached is committed, and the {what} is run again",
            reach.table.name
        )));
    }
    Ok(())
}

/// As [`where_subject`], for `erase`, pushed onto `statements`. On MySQL/MariaDB, where
/// the key's text names its row ([`Dataset::narrowed_keys`]), the statement is also
/// narrowed to the keys `locate` found, in chunks: MariaDB reads the whole table for a
/// `DELETE` or `UPDATE` whose condition goes through a parent (`IN (SELECT …)`), locking
/// every row it reads, where the keys let it read those rows alone. Returns the narrowed
/// statements, for the count check after the transaction ([`check_reached`]): a row
/// that no longer meets the condition fails the erasure instead of being reported erased.
fn where_subject_found<'t>(
    dataset: &Dataset,
    table: &'t Table,
    subject: &Subject,
    (verb, middle, values): (&str, &str, &[Value]),
    found: &[&String],
    statements: &mut Vec<Statement>,
) -> Vec<Reach<'t>> {
    // (Filled on MySQL/MariaDB only.)
    if !dataset.narrowed_keys.contains(&table.name) {
        statements.extend(where_subject(dataset, table, subject, verb, middle, values));
        return Vec::new();
    }
    let Some(cond) = plain_condition(dataset, table, subject, values.len() + 1) else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    for chunk in found.chunks(KEY_CHUNK) {
        let list = vec!["?"; chunk.len()].join(", ");
        let statement = Statement::new(format!(
            "{verb} {} {middle} WHERE {} IN ({list}) AND {}",
            sql::ident(&table.name),
            sql::ident(&table.key),
            cond.sql,
        ));
        checks.push(Reach {
            position: statements.len(),
            table,
            keys: chunk
                .iter()
                .map(|key| Value::Text((*key).clone()))
                .collect(),
            deletes: verb.starts_with("DELETE"),
        });
        statements.push(
            values
                .iter()
                .cloned()
                .chain(chunk.iter().map(|key| Value::Text((*key).clone())))
                .chain(cond.params.iter().cloned())
                .fold(statement, Statement::bind),
        );
    }
    checks
}

/// `{verb} {table} {middle} WHERE <the subject's rows>`, with `values` bound before the
/// condition's parameters.
fn where_subject(
    dataset: &Dataset,
    table: &Table,
    subject: &Subject,
    verb: &str,
    middle: &str,
    values: &[Value],
) -> Option<Statement> {
    let cond = plain_condition(dataset, table, subject, values.len() + 1)?;
    let statement = Statement::new(format!(
        "{verb} {} {middle} WHERE {}",
        sql::ident(&table.name),
        cond.sql
    ));
    Some(
        values
            .iter()
            .cloned()
            .chain(cond.params)
            .fold(statement, Statement::bind),
    )
}

export_connector!(SqlConnector);
