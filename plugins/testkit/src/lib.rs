//! A connector that misbehaves on purpose, for oubli's sandbox tests and the dispatch
//! benchmark. Never register it for a real system.
//!
//! `locate` does what the subject's `behaviour` identity names, with the `url`, `path`
//! and `statement` identities as arguments, and reports what it saw as record keys.
//! `describe` does nothing but return a constant, which makes it the no-op export the
//! dispatch benchmark calls.

use oubli_connector::http::{self, Request};
use oubli_connector::sql::{self, Value};
use oubli_connector::{
    Action, Connector, Erased, Error, Field, Info, Outcome, Page, PersonalRecord, RecordRef,
    Result, Retention, Subject, config, export_connector, log,
};

struct Testkit;

fn seen(what: &str, key: impl Into<String>) -> RecordRef {
    RecordRef::new(what, key, Vec::new())
}

/// The `people` rows of the system's `hidden` table that are still visible, each found
/// through its `links` row: a person reachable only through a link.
fn hidden() -> Result<Vec<RecordRef>> {
    let rows = sql::query(
        "SELECT id FROM hidden WHERE visible = 1 ORDER BY id",
        Vec::new(),
    )?;
    Ok(rows
        .rows
        .iter()
        .flat_map(|row| {
            let key = match &row[0] {
                Value::Integer(id) => id.to_string(),
                other => format!("{other:?}"),
            };
            [seen("people", key.clone()), seen("links", key)]
        })
        .collect())
}

/// Runs the `statement` identity's statements (one per line) in one transaction.
fn write(subject: &Subject) -> Result<Vec<u64>> {
    sql::transaction(
        argument(subject, "statement")?
            .lines()
            .map(|sql| sql::Statement {
                sql: sql.trim().to_owned(),
                params: Vec::new(),
            })
            .collect(),
    )
}

fn number(subject: &Subject, kind: &str, default: u64) -> u64 {
    subject
        .identity(kind)
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn argument<'a>(subject: &'a Subject, kind: &str) -> Result<&'a str> {
    subject
        .identity(kind)
        .ok_or_else(|| Error::Failed(format!("the testkit needs a {kind:?} identity")))
}

impl Connector for Testkit {
    fn describe() -> Info {
        Info {
            name: "testkit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "misbehaves on purpose, for tests".into(),
            actions: vec![Action::Locate, Action::Access, Action::Erase],
            identity_kinds: vec!["behaviour".into()],
            categories: Vec::new(),
        }
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        match argument(&subject, "behaviour")? {
            "ok" => Ok(vec![seen("ok", "1")]),
            "hide" | "hide-unavailable" => hidden(),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("the testkit panics on purpose"),
            "unavailable" => Err(Error::Unavailable(
                "the testkit says the system is busy".into(),
            )),
            "http" => {
                // `method` = `delete` or `post` (with the `body` identity as its body).
                let method = match subject.identity("method") {
                    Some("delete") => http::Method::Delete,
                    Some("post") => http::Method::Post,
                    _ => http::Method::Get,
                };
                let mut request = Request::new(method, argument(&subject, "url")?);
                request.body = subject.identity("body").map(|b| b.as_bytes().to_vec());
                if let Some(header) = subject.identity("authorization") {
                    request = request.header("authorization", header);
                }
                let response = http::send(&request)?;
                let body = String::from_utf8_lossy(&response.body).into_owned();
                Ok(vec![
                    seen("status", response.status.to_string()),
                    seen("body-length", body.len().to_string()),
                    seen("body", body),
                ])
            }
            "file" => {
                let path = argument(&subject, "path")?;
                std::fs::read_to_string(path)
                    .map(|content| vec![seen("file", content)])
                    .map_err(|e| Error::Failed(format!("cannot read {path}: {e}")))
            }
            "env" => Ok(std::env::vars()
                .map(|(k, v)| seen("env", format!("{k}={v}")))
                .chain(std::env::args().map(|a| seen("arg", a)))
                .chain(
                    std::fs::read_dir("/")
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| seen("dir", e.path().display().to_string())),
                )
                .collect()),
            "secret" => Ok(config::get("API_TOKEN")
                .map(|v| seen("config", v))
                .into_iter()
                .chain(std::env::var("API_TOKEN").ok().map(|v| seen("env", v)))
                .collect()),
            "sql" => {
                let rows = sql::query(argument(&subject, "statement")?, Vec::new())?;
                Ok(rows
                    .rows
                    .iter()
                    .map(|row| seen("row", row.first().map(Value::to_key).unwrap_or_default()))
                    .collect())
            }
            "log" => {
                log::info("the testkit logs a line");
                Ok(vec![seen("logged", "1")])
            }
            // Waits inside the host (a WASI clock), far past any test's deadline.
            "sleep" => {
                http::sleep_ms(number(&subject, "ms", 60_000));
                Ok(vec![seen("slept", "1")])
            }
            // Writes (or tries to) from a call that must only read.
            "sql-write" => {
                let changed = write(&subject)?;
                Ok(vec![seen(
                    "changed",
                    changed.iter().sum::<u64>().to_string(),
                )])
            }
            // Sends `count` requests one after the other.
            "http-many" => {
                let url = argument(&subject, "url")?;
                for _ in 0..number(&subject, "count", 10_000) {
                    http::send(&Request::get(url))?;
                }
                Ok(vec![seen("sent", "all")])
            }
            // Writes `count` log lines of `bytes` bytes each.
            "log-flood" => {
                let line = "x".repeat(number(&subject, "bytes", 1_000) as usize);
                for _ in 0..number(&subject, "count", 100_000) {
                    log::info(&line);
                }
                Ok(vec![seen("logged", "all")])
            }
            // Returns `count` empty records.
            "records" => Ok((0..number(&subject, "count", 500_000))
                .map(|i| seen("", i.to_string()))
                .collect()),
            // Returns `count` records whose collections all point at the same 1 MiB of
            // guest memory: a small reply that would take `count` MiB on the host if it
            // were copied whole.
            "alias" => {
                let mut text = std::mem::ManuallyDrop::new("x".repeat(1 << 20));
                let (ptr, len, capacity) = (text.as_mut_ptr(), text.len(), text.capacity());
                Ok((0..number(&subject, "count", 4_096))
                    .map(|i| RecordRef {
                        // SAFETY: none, on purpose: the strings alias one buffer, which the
                        // guest would free many times after the call. The host must refuse
                        // the reply while copying it, before the guest frees anything.
                        collection: unsafe { String::from_raw_parts(ptr, len, capacity) },
                        key: i.to_string(),
                        categories: Vec::new(),
                        matched: Vec::new(),
                        via: None,
                    })
                    .collect())
            }
            // Builds `count` HTTP requests with a method of `bytes` bytes each, sends none
            // and holds them all: host memory, unless the host refuses such methods.
            "method-hoard" => {
                use wasi::http::types::{Fields, Method, OutgoingRequest};
                let method = "X".repeat(number(&subject, "bytes", 1 << 20) as usize);
                let mut held = Vec::new();
                let mut refused = 0;
                for _ in 0..number(&subject, "count", 100) {
                    let request = OutgoingRequest::new(Fields::new());
                    if request.set_method(&Method::Other(method.clone())).is_err() {
                        refused += 1;
                    }
                    held.push(request);
                }
                Ok(vec![
                    seen("held", held.len().to_string()),
                    seen("refused", refused.to_string()),
                ])
            }
            other => Err(Error::Failed(format!(
                "unknown testkit behaviour {other:?}"
            ))),
        }
    }

    /// `behaviour` = `endless` returns pages of large records whose cursor never ends;
    /// `bad-value` exports a field whose value is not JSON; anything else exports nothing.
    fn access(subject: Subject, cursor: Option<String>) -> Result<Page> {
        let record = |key: String, value: String| PersonalRecord {
            collection: "hoard".into(),
            key,
            fields: vec![Field {
                name: "blob".into(),
                value,
                category: None,
            }],
        };
        match argument(&subject, "behaviour")? {
            "endless" => {
                let n: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
                let value = format!("\"{}\"", "x".repeat(1_000_000));
                Ok(Page {
                    records: (0..4)
                        .map(|i| record(format!("{n}-{i}"), value.clone()))
                        .collect(),
                    next: Some((n + 1).to_string()),
                })
            }
            "bad-value" => Ok(Page {
                records: vec![record("1".into(), "not json".into())],
                next: None,
            }),
            _ => Ok(Page {
                records: Vec::new(),
                next: None,
            }),
        }
    }

    /// `behaviour` = `blank-basis` retains a record with an invisible legal basis;
    /// `sql-write` runs the `statement` identity's statements and erases nothing; `hide`
    /// deletes the links to the people of `hidden` and reports only the links, so that
    /// the people can no longer be found and are still there; `hide-unavailable` hides
    /// them and answers that the system is busy, and reports nothing once they are
    /// hidden.
    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        match argument(&subject, "behaviour")? {
            "hide-unavailable" => {
                if hidden()?.is_empty() {
                    return Ok(Vec::new());
                }
                sql::transaction(vec![sql::Statement {
                    sql: "UPDATE hidden SET visible = 0".into(),
                    params: Vec::new(),
                }])?;
                Err(Error::Unavailable(
                    "the testkit hid its people and says it is busy".into(),
                ))
            }
            "hide" => {
                let links: Vec<Erased> = hidden()?
                    .into_iter()
                    .filter(|r| r.collection == "links")
                    .map(|r| Erased {
                        collection: r.collection,
                        key: r.key,
                        outcome: Outcome::Deleted,
                    })
                    .collect();
                sql::transaction(vec![sql::Statement {
                    sql: "UPDATE hidden SET visible = 0".into(),
                    params: Vec::new(),
                }])?;
                Ok(links)
            }
            "sql-write" => write(&subject).map(|_| Vec::new()),
            "blank-basis" => Ok(vec![Erased {
                collection: "invoices".into(),
                key: "1".into(),
                outcome: Outcome::Retained(Retention {
                    legal_basis: "\u{200b}".into(),
                    masked: Vec::new(),
                }),
            }]),
            _ => Ok(Vec::new()),
        }
    }
}

export_connector!(Testkit);
