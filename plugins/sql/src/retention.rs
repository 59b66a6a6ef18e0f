//! Retention rules (`dataset.retention`): which subjects of a table have outlived their
//! period, for the contract's `expired`. A rule names a table with identities whose rows
//! are deleted by an erasure, the column the period runs from (a timestamp or a date; on
//! SQLite, ISO-8601 text) and the period in days, and optionally a value another column
//! must hold (`status = 'former'`). A row whose column is empty (or, on SQLite, not a
//! time) has not started its period and never expires.
//!
//! A subject is named by the row itself where the table's key is mapped as an identity
//! (`customer-id = "id"`), so that the erasure reaches that row and what hangs from it,
//! not another account with the same e-mail address; otherwise by its strong identities
//! only (a row with weak ones alone is left out: a phone may be a household's).

use crate::dataset::{Catalogue, Dataset};
use oubli_connector::sql::{self, Dialect, Value};
use oubli_connector::{Error, ExpiredPage, Identity, Result};
use serde::Deserialize;

/// Subjects listed per page.
const PAGE: usize = 200;

/// One retention rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A table of the dataset with identities: its rows are the subjects.
    pub table: String,
    /// The column the period runs from, e.g. `deactivated_at`.
    pub column: String,
    /// Days after `column` at which the subject expires (at least 1).
    pub after_days: u32,
    /// Only rows where another column holds a value, e.g.
    /// `{ "column": "status", "equals": "former" }`.
    #[serde(default)]
    pub when: Option<Condition>,
}

/// A column that must hold a value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub column: String,
    /// A string, a number or a boolean.
    pub equals: serde_json::Value,
}

impl Rule {
    /// Checks the rule against the dataset, naming its place in the configuration.
    ///
    /// # Errors
    /// `invalid-config` with the path of the first problem.
    pub fn validate(&self, name: &str, dataset: &Dataset) -> Result<()> {
        let path = format!("config.dataset.retention.{name}");
        let Some(table) = dataset.table(&self.table) else {
            return Err(Error::InvalidConfig(format!(
                "{path}.table: no table named {:?} in the dataset",
                self.table
            )));
        };
        if table.identities.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "{path}.table: the table {:?} maps no identity, so its rows name no subject to erase",
                self.table
            )));
        }
        if table.erase.action != crate::dataset::EraseAction::Delete {
            return Err(Error::InvalidConfig(format!(
                "{path}.table: an erasure keeps the rows of {:?} (erase.action), so an expired row would stay expired and be listed again at every run",
                self.table
            )));
        }
        if self.after_days == 0 {
            return Err(Error::InvalidConfig(format!(
                "{path}.after_days: a period is at least one day"
            )));
        }
        if let Some(when) = &self.when
            && !matches!(
                when.equals,
                serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
            )
        {
            return Err(Error::InvalidConfig(format!(
                "{path}.when.equals: a string, a number or a boolean"
            )));
        }
        Ok(())
    }

    /// Checks that the columns the rule names exist.
    ///
    /// # Errors
    /// `invalid-config` naming the column that does not.
    pub fn check_against(&self, name: &str, catalogue: &Catalogue) -> Result<()> {
        let path = format!("config.dataset.retention.{name}");
        let mut columns = vec![(format!("{path}.column"), &self.column)];
        if let Some(when) = &self.when {
            columns.push((format!("{path}.when.column"), &when.column));
        }
        for (place, column) in columns {
            if catalogue.column_type(&self.table, column).is_none() {
                return Err(Error::InvalidConfig(format!(
                    "{place}: the table {:?} has no column {column:?}",
                    self.table
                )));
            }
        }
        let declared = catalogue
            .column_type(&self.table, &self.column)
            .unwrap_or_default();
        if time_kind(declared).is_none() {
            return Err(Error::InvalidConfig(format!(
                "{path}.column: {:?} is declared {declared:?}, which this connector cannot read as a time here (a timestamp or a date; on SQLite, ISO-8601 text)",
                self.column
            )));
        }
        Ok(())
    }
}

/// How a column's values are compared with the cutoff, by its declared type and the
/// dialect; `None` when they cannot be read as times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKind {
    /// SQLite: any text, through `julianday` (which is NULL for what is not a time).
    SqliteText,
    /// PostgreSQL: a timestamp or date.
    PgTime,
    /// PostgreSQL: text, read as a timestamp (a value that is not one fails the call).
    PgText,
    /// MySQL: DATETIME, TIMESTAMP or DATE.
    MysqlTime,
}

fn time_kind(declared: &str) -> Option<TimeKind> {
    let numeric = ["int", "real", "floa", "doub", "numeric", "decimal", "bool"]
        .iter()
        .any(|t| declared.contains(t));
    let texty = ["char", "text", "clob"]
        .iter()
        .any(|t| declared.contains(t));
    let timely = ["time", "date"].iter().any(|t| declared.contains(t));
    match sql::dialect() {
        Dialect::Sqlite if !numeric => Some(TimeKind::SqliteText),
        Dialect::Postgres if timely && !numeric => Some(TimeKind::PgTime),
        Dialect::Postgres if texty => Some(TimeKind::PgText),
        Dialect::Mysql if timely && !numeric && !texty => Some(TimeKind::MysqlTime),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time in seconds since the epoch (UTC), and the same with a
/// space for MySQL's `DATETIME`.
fn iso(seconds: i64) -> (String, String) {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Days to a civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3_600, rest / 60 % 60, rest % 60);
    (
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}"),
    )
}

/// A key as a cursor, and back.
fn cursor_of(key: &Value) -> Option<String> {
    match key {
        Value::Integer(i) => Some(format!("i:{i}")),
        Value::Text(t) => Some(format!("t:{t}")),
        _ => None,
    }
}

fn key_of(cursor: &str) -> Result<Value> {
    match cursor.split_once(':') {
        Some(("i", n)) => n.parse().map(Value::Integer).map_err(|_| {
            Error::Failed(format!(
                "the cursor {cursor:?} is not one of this connector's"
            ))
        }),
        Some(("t", t)) => Ok(Value::Text(t.to_owned())),
        _ => Err(Error::Failed(format!(
            "the cursor {cursor:?} is not one of this connector's"
        ))),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Text(t) if !t.trim().is_empty() => Some(t.clone()),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A page of the subjects whose retention under `name` has run out at `now` (seconds).
///
/// # Errors
/// `invalid-config` for a rule that does not exist; the database's refusal otherwise.
pub fn expired(
    dataset: &Dataset,
    catalogue: &Catalogue,
    name: &str,
    cursor: Option<&str>,
    now: i64,
) -> Result<ExpiredPage> {
    let rule = dataset.retention.get(name).ok_or_else(|| {
        let names: Vec<&String> = dataset.retention.keys().collect();
        Error::InvalidConfig(format!(
            "config.dataset.retention: no rule named {name:?}; rules: {names:?}"
        ))
    })?;
    rule.check_against(name, catalogue)?;
    let table = dataset
        .table(&rule.table)
        .ok_or_else(|| Error::InvalidConfig(format!("no table named {:?}", rule.table)))?;
    let (cutoff, cutoff_mysql) = iso(now - i64::from(rule.after_days) * 86_400);
    let column = sql::ident(&rule.column);
    let declared = catalogue
        .column_type(&rule.table, &rule.column)
        .unwrap_or_default()
        .to_owned();
    let kind = time_kind(&declared).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "config.dataset.retention.{name}.column: {:?} is declared {declared:?}, which this connector cannot read as a time here",
            rule.column
        ))
    })?;
    let mut params = vec![];
    let next = |value: Value, params: &mut Vec<Value>| {
        params.push(value);
        sql::placeholder(params.len())
    };
    let before = match kind {
        TimeKind::SqliteText => format!(
            "julianday({column}) < julianday({})",
            next(Value::Text(cutoff), &mut params)
        ),
        TimeKind::PgTime => format!(
            "{column} < CAST({} AS TIMESTAMPTZ)",
            next(Value::Text(cutoff), &mut params)
        ),
        TimeKind::PgText => format!(
            "CAST(NULLIF(TRIM({column}), '') AS TIMESTAMPTZ) < CAST({} AS TIMESTAMPTZ)",
            next(Value::Text(cutoff), &mut params)
        ),
        TimeKind::MysqlTime => format!(
            "{column} < CAST({} AS DATETIME)",
            next(Value::Text(cutoff_mysql), &mut params)
        ),
    };
    let mut conditions = vec![format!("{column} IS NOT NULL"), before];
    if let Some(when) = &rule.when {
        let value = match &when.equals {
            serde_json::Value::String(s) => Value::Text(s.clone()),
            serde_json::Value::Bool(b) => Value::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or_default()),
            },
            _ => Value::Null,
        };
        conditions.push(format!(
            "{} = {}",
            sql::ident(&when.column),
            next(value, &mut params)
        ));
    }
    let key = sql::ident(&table.key);
    if let Some(cursor) = cursor {
        conditions.push(format!("{key} > {}", next(key_of(cursor)?, &mut params)));
    }
    // The row itself where its key is an identity; else its strong identities.
    let by_key: Vec<(&String, &String)> = table
        .identities
        .iter()
        .filter(|(_, column)| column.column == table.key)
        .map(|(kind, column)| (kind, &column.column))
        .take(1)
        .collect();
    let kinds: Vec<(&String, &String)> = if by_key.is_empty() {
        table
            .identities
            .iter()
            .filter(|(kind, _)| !dataset.is_weak(kind))
            .map(|(kind, column)| (kind, &column.column))
            .collect()
    } else {
        by_key
    };
    if kinds.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "config.dataset.retention.{name}.table: the table {:?} maps only weak identities, which may be shared and name no one on their own",
            rule.table
        )));
    }
    let selected: Vec<String> = std::iter::once(key.clone())
        .chain(kinds.iter().map(|(_, c)| sql::ident(c)))
        .collect();
    let statement = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {key} LIMIT {PAGE}",
        selected.join(", "),
        sql::ident(&table.name),
        conditions.join(" AND ")
    );
    let rows = sql::query(&statement, params)?;
    let full = rows.rows.len() >= PAGE;
    let next_cursor = if full {
        rows.rows.last().and_then(|r| r.first()).and_then(cursor_of)
    } else {
        None
    };
    let subjects = rows
        .rows
        .iter()
        .map(|row| {
            kinds
                .iter()
                .zip(&row[1..])
                .filter_map(|((kind, _), value)| {
                    text(value).map(|value| Identity {
                        kind: (*kind).clone(),
                        value,
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|identities| !identities.is_empty())
        .collect();
    Ok(ExpiredPage {
        subjects,
        next: next_cursor,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_written_as_iso_8601() {
        assert_eq!(super::iso(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(super::iso(951_782_400).0, "2000-02-29T00:00:00Z");
        assert_eq!(super::iso(1_796_558_645).1, "2026-12-06 12:04:05");
    }
}
