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
    Action, Connector, Erased, Error, Info, Page, RecordRef, Result, Subject, config,
    export_connector, log,
};

struct Testkit;

fn seen(what: &str, key: impl Into<String>) -> RecordRef {
    RecordRef {
        collection: what.into(),
        key: key.into(),
        categories: Vec::new(),
    }
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
                let mut request = Request::get(argument(&subject, "url")?);
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
            other => Err(Error::Failed(format!(
                "unknown testkit behaviour {other:?}"
            ))),
        }
    }

    fn access(_subject: Subject, _cursor: Option<String>) -> Result<Page> {
        Ok(Page {
            records: Vec::new(),
            next: None,
        })
    }

    fn erase(_subject: Subject) -> Result<Vec<Erased>> {
        Ok(Vec::new())
    }
}

export_connector!(Testkit);
