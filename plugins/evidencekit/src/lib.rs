//! A connector of contract 0.2 for oubli's tests of the evidence: it keeps people in a
//! `people (id, email, visible)` table of the system's database, and free text in
//! `notes (id, body)`. Never register it for a real system.
//!
//! - `locate` finds the visible people whose `email` equals the subject's, exactly;
//! - `erase` deletes them, or, when the subject's `behaviour` identity is `lie` or
//!   `lie-cleared`, only hides them and still reports them deleted;
//! - `verify` reads each person back by id: gone, or still holding `email` (said to be
//!   cleared of it under `lie-cleared`); under `verify-twice` it answers for the first
//!   record twice, under `verify-other` also for a record it was not given;
//! - `sweep` looks for the e-mail in any case in `people.email` and inside `notes.body`,
//!   one statement per table, and stops when the budget runs out.

use oubli_connector::sql::{self, Statement, Value};
use oubli_connector::{
    Action, Connector, Erased, Error, Info, MatchKind, Outcome, Page, RecordRef, RecordState,
    Result, Subject, SweepHit, SweepReport, Verified, export_connector,
};

struct EvidenceKit;

fn email(subject: &Subject) -> Result<&str> {
    subject
        .identity("email")
        .ok_or_else(|| subject.unsearchable(["email"]))
}

fn ids(sql_text: &str, value: &str) -> Result<Vec<i64>> {
    let rows = sql::query(sql_text, vec![Value::Text(value.to_owned())])?;
    rows.rows
        .iter()
        .map(|row| match row.first() {
            Some(Value::Integer(id)) => Ok(*id),
            other => Err(Error::Failed(format!("unexpected id {other:?}"))),
        })
        .collect()
}

impl Connector for EvidenceKit {
    fn describe() -> Info {
        Info {
            name: "evidencekit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "erases, lies about it on request, verifies and sweeps, for tests".into(),
            actions: vec![
                Action::Locate,
                Action::Access,
                Action::Erase,
                Action::Verify,
                Action::Sweep,
            ],
            // `behaviour` only chooses how it misbehaves.
            identity_kinds: vec!["email".into(), "behaviour".into()],
            categories: vec!["contact".into()],
        }
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        let people = ids(
            &format!(
                "SELECT id FROM people WHERE email = {} AND visible = 1 ORDER BY id",
                sql::placeholder(1)
            ),
            email(&subject)?,
        )?;
        Ok(people
            .into_iter()
            .map(|id| {
                RecordRef::new("people", id.to_string(), vec!["contact".into()]).matched_by(
                    "email",
                    "email",
                    MatchKind::Exact,
                )
            })
            .collect())
    }

    fn access(_subject: Subject, _cursor: Option<String>) -> Result<Page> {
        Ok(Page {
            records: Vec::new(),
            next: None,
        })
    }

    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        let found = Self::locate(subject.clone())?;
        let lie = matches!(subject.identity("behaviour"), Some("lie" | "lie-cleared"));
        let statements = found
            .iter()
            .map(|r| {
                let verb = if lie {
                    "UPDATE people SET visible = 0"
                } else {
                    "DELETE FROM people"
                };
                Statement::new(format!("{verb} WHERE id = {}", sql::placeholder(1)))
                    .bind(Value::Integer(r.key.parse().unwrap_or_default()))
            })
            .collect();
        sql::transaction(statements)?;
        Ok(found
            .into_iter()
            .map(|r| Erased {
                collection: r.collection,
                key: r.key,
                outcome: Outcome::Deleted,
            })
            .collect())
    }

    fn verify(subject: Subject, records: Vec<RecordRef>) -> Result<Vec<Verified>> {
        // `lie-cleared`: a row still there is said to be cleared of the subject's data.
        let cleared = subject.identity("behaviour") == Some("lie-cleared");
        let mut verified = records
            .into_iter()
            .map(|r| {
                // The SDK's keyed read; only the lie is this plugin's own.
                let state = match sql::read_back("people", "id", &r.key, &["email"])? {
                    RecordState::Holds(_) if cleared => RecordState::Cleared(vec!["email".into()]),
                    state => state,
                };
                Ok(Verified {
                    collection: r.collection,
                    key: r.key,
                    state,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        match (subject.identity("behaviour"), verified.first().cloned()) {
            (Some("verify-twice"), Some(first)) => verified.push(first),
            (Some("verify-other"), Some(first)) => verified.push(Verified {
                key: "999999".into(),
                ..first
            }),
            _ => {}
        }
        Ok(verified)
    }

    fn sweep(subject: Subject, budget: u32) -> Result<SweepReport> {
        let value = email(&subject)?;
        let searches = [
            (
                "people",
                "email",
                "SELECT id FROM people WHERE lower(email) = lower({p})",
            ),
            (
                "notes",
                "body",
                "SELECT id FROM notes WHERE instr(lower(body), lower({p})) > 0",
            ),
        ];
        let mut report = SweepReport {
            covered: Vec::new(),
            skipped: Vec::new(),
            hits: Vec::new(),
            cut_short: false,
        };
        for (spent, (table, field, query)) in searches.iter().enumerate() {
            if spent as u32 >= budget {
                report.cut_short = true;
                break;
            }
            let query = query.replace("{p}", &sql::placeholder(1));
            for id in ids(&query, value)? {
                report.hits.push(SweepHit {
                    collection: (*table).into(),
                    key: id.to_string(),
                    field: (*field).into(),
                    kind: "email".into(),
                });
            }
            report.covered.push((*table).into());
        }
        Ok(report)
    }
}

export_connector!(EvidenceKit);
