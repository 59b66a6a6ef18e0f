//! Mentions: the subject's identity values inside free text of other rows (another
//! customer's support ticket quoting the subject's e-mail), in the columns a table names
//! in `mentions`. Found by a case-insensitive substring search of the bound value (never
//! a pattern built from it), kept only where the value stands as a whole; exported as the
//! text around it; erased by replacing only the occurrences with `[erased]`.

use crate::dataset::{Dataset, Table};
use oubli_connector::sql::{self, Statement, Value};
use oubli_connector::{Error, Identity, Result, Subject};

/// Identity values shorter than this are not looked for inside text.
pub const MIN_CHARS: usize = 5;
/// What replaces each occurrence.
pub const REDACTED: &str = "[erased]";
/// Characters of context exported on each side of an occurrence.
const CONTEXT: usize = 40;

/// One row whose mention columns name the subject.
pub struct Mention {
    pub table: usize,
    /// The row's key, as read (bound as is to change the row).
    pub key: Value,
    /// Each mention column that names the subject: (column, its text, the kinds found).
    pub columns: Vec<(String, String, Vec<String>)>,
}

/// The identities looked for in text: strong, and long enough not to match by chance.
fn searched<'a>(dataset: &Dataset, subject: &'a Subject) -> Vec<(&'a Identity, String)> {
    subject
        .identities
        .iter()
        .filter(|i| !dataset.is_weak(&i.kind))
        .map(|i| (i, i.value.trim().to_lowercase()))
        .filter(|(_, v)| v.chars().count() >= MIN_CHARS)
        .collect()
}

/// Whether `text` names `value` (lower case) as a whole.
fn names(text: &str, value: &str) -> bool {
    oubli_connector::mentions(&text.to_lowercase(), value)
}

/// Every row of the dataset's tables whose mention columns name the subject.
///
/// # Errors
/// As [`sql::query`]; a failure when the host's row limit cut a list.
pub fn find(dataset: &Dataset, subject: &Subject) -> Result<Vec<Mention>> {
    let values = searched(dataset, subject);
    let mut out: Vec<Mention> = Vec::new();
    if values.is_empty() {
        return Ok(out);
    }
    let text = sql::text_type();
    for (index, table) in dataset.tables.iter().enumerate() {
        if table.mentions.is_empty() {
            continue;
        }
        let mut params = Vec::new();
        let mut tests = Vec::new();
        let casts: Vec<String> = table
            .mentions
            .iter()
            .map(|column| format!("CAST({} AS {text})", sql::ident(column)))
            .collect();
        for (_, value) in &values {
            let (test, taken) = sql::contains_text_in(&casts, value, params.len() + 1);
            tests.push(test);
            params.extend(taken);
        }
        let list: Vec<String> = table.mentions.iter().map(|c| sql::ident(c)).collect();
        let rows = sql::query(
            &format!(
                "SELECT {}, {} FROM {} WHERE {}",
                dataset.key_read(table),
                list.join(", "),
                sql::ident(&table.name),
                tests.join(" OR ")
            ),
            params,
        )?;
        if rows.rows.len() >= sql::MAX_ROWS as usize {
            return Err(Error::Failed(format!(
                "more than {} rows of {} mention the subject, more than the SQL connector handles in one call",
                sql::MAX_ROWS,
                table.name
            )));
        }
        for row in rows.rows {
            let Some((key, texts)) = row.split_first() else {
                continue;
            };
            let mut columns = Vec::new();
            for (column, value) in table.mentions.iter().zip(texts) {
                let Value::Text(text) = value else { continue };
                let kinds: Vec<String> = values
                    .iter()
                    .filter(|(_, v)| names(text, v))
                    .map(|(i, _)| i.kind.clone())
                    .collect();
                if !kinds.is_empty() {
                    columns.push((column.clone(), text.clone(), kinds));
                }
            }
            if !columns.is_empty() {
                out.push(Mention {
                    table: index,
                    key: table.row_key(key.clone())?,
                    columns,
                });
            }
        }
    }
    Ok(out)
}

/// The byte ranges where `value` (lower case) stands as a whole in `text`.
fn occurrences(text: &str, value: &str) -> Vec<(usize, usize)> {
    let lower = text.to_lowercase();
    // Lower-casing may change byte lengths (rare scripts): then nothing is cut by
    // position, and the caller fails rather than cut in the wrong place.
    if lower.len() != text.len() {
        return Vec::new();
    }
    lower
        .match_indices(value)
        .map(|(at, _)| (at, at + value.len()))
        .filter(|(at, end)| {
            // The occurrence with the character before it and the two after it: whole
            // by the same rule as everywhere else.
            let from = lower[..*at]
                .char_indices()
                .next_back()
                .map_or(*at, |(i, _)| i);
            let to = lower[*end..]
                .char_indices()
                .nth(2)
                .map_or(lower.len(), |(i, _)| end + i);
            names(&lower[from..to], value)
        })
        .collect()
}

/// `text` with every whole occurrence of the subject's values replaced by
/// [`REDACTED`]; `None` when one could not be cut out safely.
pub fn redact(dataset: &Dataset, subject: &Subject, text: &str) -> Option<String> {
    let mut out = text.to_owned();
    for (_, value) in searched(dataset, subject) {
        let mut found = occurrences(&out, &value);
        found.reverse();
        for (start, end) in found {
            out.replace_range(start..end, REDACTED);
        }
        if names(&out, &value) {
            return None;
        }
    }
    Some(out)
}

/// The text around each occurrence, for the subject's export: never the whole text of
/// someone else's row.
pub fn excerpts(dataset: &Dataset, subject: &Subject, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (_, value) in searched(dataset, subject) {
        for (start, end) in occurrences(text, &value) {
            let before: String = text[..start]
                .chars()
                .rev()
                .take(CONTEXT)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after: String = text[end..].chars().take(CONTEXT).collect();
            out.push(format!("…{before}{}{after}…", &text[start..end]));
        }
    }
    out
}

/// The statement that writes the redacted text of one mention column, only if the text
/// is still what was read (else the transaction fails and the task is retried).
pub fn rewrite(
    dataset: &Dataset,
    table: &Table,
    key: &Value,
    column: &str,
    before: &str,
    after: &str,
) -> Statement {
    Statement::new(format!(
        "UPDATE {} SET {c} = {} WHERE {} = {} AND {c} = {}",
        sql::ident(&table.name),
        sql::placeholder(1),
        sql::ident(&table.key),
        dataset.key_param(&table.name, &sql::placeholder(2)),
        sql::placeholder(3),
        c = sql::ident(column),
    ))
    .bind(Value::Text(after.to_owned()))
    .bind(key.clone())
    .bind(Value::Text(before.to_owned()))
}

/// Whether any mention column of the row `key` of `table` still names the subject; the
/// columns that do.
pub fn still_named(
    dataset: &Dataset,
    table: &Table,
    key: &str,
    subject: &Subject,
) -> Result<Option<Vec<String>>> {
    let list: Vec<String> = table.mentions.iter().map(|c| sql::ident(c)).collect();
    let (equals, value) = dataset.key_equals(table, key);
    let rows = sql::query(
        &format!(
            "SELECT {} FROM {} WHERE {equals}",
            list.join(", "),
            sql::ident(&table.name),
        ),
        vec![value],
    )?;
    let Some(row) = rows.rows.first() else {
        return Ok(None);
    };
    let values = searched(dataset, subject);
    Ok(Some(
        table
            .mentions
            .iter()
            .zip(row)
            .filter(|(_, v)| matches!(v, Value::Text(t) if values.iter().any(|(_, value)| names(t, value))))
            .map(|(c, _)| c.clone())
            .collect(),
    ))
}
