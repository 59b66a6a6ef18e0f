//! A connector for a newsletter's `subscribers` table, written against the SDK 0.1
//! (contract `oubli:connector@0.1.0`) as its documentation shows, and never updated: the
//! tests run it in the same service as plugins of contract 0.2.0, to prove that a
//! plugin of an older contract keeps loading, running and being certified (as verified
//! by search only).

use oubli_connector::{
    Action, Connector, Erased, Error, Field, Info, Outcome, Page, PersonalRecord, RecordRef,
    Result, Subject, export_connector, sql,
};

struct Newsletter;

fn find(subject: &Subject) -> Result<Vec<(i64, String)>> {
    let Some(email) = subject.identity("email") else {
        return Ok(Vec::new());
    };
    let rows = sql::query(
        &format!(
            "SELECT id, email FROM subscribers WHERE email = {}",
            sql::placeholder(1)
        ),
        vec![sql::Value::Text(email.to_owned())],
    )?;
    rows.rows
        .iter()
        .map(|row| match (&row[0], &row[1]) {
            (sql::Value::Integer(id), sql::Value::Text(email)) => Ok((*id, email.clone())),
            _ => Err(Error::Failed("unexpected column types".into())),
        })
        .collect()
}

impl Connector for Newsletter {
    fn describe() -> Info {
        Info {
            name: "newsletter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Newsletter subscribers (SDK 0.1)".into(),
            actions: vec![Action::Locate, Action::Access, Action::Erase],
            identity_kinds: vec!["email".into()],
            categories: vec!["contact".into()],
        }
    }

    fn locate(subject: Subject) -> Result<Vec<RecordRef>> {
        Ok(find(&subject)?
            .into_iter()
            .map(|(id, _)| RecordRef {
                collection: "subscribers".into(),
                key: id.to_string(),
                categories: vec!["contact".into()],
            })
            .collect())
    }

    fn access(subject: Subject, _cursor: Option<String>) -> Result<Page> {
        let records = find(&subject)?
            .into_iter()
            .map(|(id, email)| PersonalRecord {
                collection: "subscribers".into(),
                key: id.to_string(),
                fields: vec![Field::new("email", &email, Some("contact"))],
            })
            .collect();
        Ok(Page {
            records,
            next: None,
        })
    }

    fn erase(subject: Subject) -> Result<Vec<Erased>> {
        let found = find(&subject)?;
        let deletes = found
            .iter()
            .map(|(id, _)| {
                sql::Statement::new(format!(
                    "DELETE FROM subscribers WHERE id = {}",
                    sql::placeholder(1)
                ))
                .bind(sql::Value::Integer(*id))
            })
            .collect();
        sql::transaction(deletes)?;
        Ok(found
            .into_iter()
            .map(|(id, _)| Erased {
                collection: "subscribers".into(),
                key: id.to_string(),
                outcome: Outcome::Deleted,
            })
            .collect())
    }
}

export_connector!(Newsletter);
