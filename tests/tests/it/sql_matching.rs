//! The SQL connector's matching rules on each engine (SQLite, and PostgreSQL and
//! MySQL/MariaDB when their URLs are set): e-mail addresses trimmed and case-folded,
//! phone numbers compared by their digits in national or international form, exact
//! matching by default; and `locate` saying which field matched and how, or which parent
//! row a record was reached through.

use oubli::runtime::{MatchKind, RuntimeError, SystemConfig};
use oubli_tests::{ServerDb, load, runtime, subject};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// A scratch database on one engine, dropped after the test.
enum Db {
    /// The database's folder, removed on drop, and its URL.
    Sqlite(#[allow(dead_code)] tempfile::TempDir, String),
    Server(ServerDb),
}

impl Db {
    async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("shop.db").display());
        Db::Sqlite(dir, url)
    }

    fn url(&self) -> &str {
        match self {
            Db::Sqlite(_, url) => url,
            Db::Server(db) => &db.url,
        }
    }

    async fn pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = match self {
            Db::Sqlite(_, url) => format!("{url}?mode=rwc"),
            Db::Server(db) => db.url.clone(),
        };
        sqlx::AnyPool::connect(&url).await.unwrap()
    }

    async fn execute(&self, script: &str) {
        let pool = self.pool().await;
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::raw_sql(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }

    async fn keys(&self, table: &str) -> BTreeSet<i64> {
        let pool = self.pool().await;
        let keys: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT CAST(id AS {}) FROM {table}",
            if self.url().starts_with("mysql") {
                "SIGNED"
            } else {
                "BIGINT"
            }
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        keys.into_iter().collect()
    }
}

const SCHEMA: &str = "
CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(200), phone VARCHAR(40), name VARCHAR(100));
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total INTEGER);
CREATE TABLE newsletter (id INTEGER PRIMARY KEY, address VARCHAR(200));
INSERT INTO customers VALUES (1, 'jane.doe@example.com', '+33 6 12 34 56 78', 'Jane');
INSERT INTO customers VALUES (2, 'john@example.com', '01 23 45 67 89', 'John');
INSERT INTO customers VALUES (3, 'e.doe@example.com', NULL, 'E');
INSERT INTO orders VALUES (10, 1, 5);
INSERT INTO orders VALUES (11, 2, 7);
INSERT INTO newsletter VALUES (20, '  JANE.DOE@Example.com ');
INSERT INTO newsletter VALUES (21, 'john@example.com');
INSERT INTO newsletter VALUES (22, 'xjane.doe@example.com');
";

fn dataset(newsletter_rule: Value) -> Value {
    json!({ "tables": [
        { "name": "customers", "key": "id",
          "identities": {
              "email": { "column": "email", "match": "email" },
              "phone": { "column": "phone", "match": "phone", "region": "FR" } },
          "columns": { "email": "contact", "phone": "contact", "name": "identity" } },
        { "name": "orders", "key": "id",
          "parent": { "table": "customers", "column": "customer_id" },
          "columns": { "total": "purchases" } },
        { "name": "newsletter", "key": "id",
          "identities": { "email": newsletter_rule },
          "columns": { "address": "contact" } },
    ]})
}

fn system(url: &str, dataset: Value) -> SystemConfig {
    let mut config = oubli::demo::crm_system("shop", std::path::Path::new("unused"));
    config.capabilities.sql.as_mut().unwrap().url = url.to_owned();
    config.config.insert("dataset".into(), dataset);
    config
}

async fn matching(db: Db) {
    db.execute(SCHEMA).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let sys = rt
        .prepare(&system(
            db.url(),
            dataset(json!({ "column": "address", "match": "email" })),
        ))
        .unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("the dataset validates");

    // Typed in another case, with spaces: the customer, her order (through her row) and
    // her newsletter subscription stored in capitals; not the look-alike addresses.
    let who = subject(&[("email", " Jane.Doe@Example.COM")]);
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let places: BTreeSet<(String, String)> = found
        .iter()
        .map(|r| (r.collection.clone(), r.key.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> =
        [("customers", "1"), ("orders", "10"), ("newsletter", "20")]
            .map(|(c, k)| (c.to_owned(), k.to_owned()))
            .into();
    assert_eq!(places, expected, "{found:?}");
    let customer = found.iter().find(|r| r.collection == "customers").unwrap();
    assert_eq!(customer.matched.len(), 1, "{customer:?}");
    assert_eq!(
        (
            customer.matched[0].kind.as_str(),
            customer.matched[0].field.as_str()
        ),
        ("email", "email")
    );
    assert_eq!(customer.matched[0].how, MatchKind::Normalised);
    let order = found.iter().find(|r| r.collection == "orders").unwrap();
    assert!(order.matched.is_empty(), "{order:?}");
    assert_eq!(order.via.as_deref(), Some("customers/1"), "{order:?}");

    // A phone number in national form finds the one stored in international form, and
    // the other way round; too few digits find nothing.
    for (typed, key) in [("06.12.34.56.78", "1"), ("+33 1 23 45 67 89", "2")] {
        let found = rt
            .locate(&plugin, &sys, &subject(&[("phone", typed)]))
            .await
            .unwrap();
        assert!(
            found
                .iter()
                .any(|r| r.collection == "customers" && r.key == key),
            "{typed}: {found:?}"
        );
        assert_eq!(
            found.iter().filter(|r| r.collection == "customers").count(),
            1,
            "{typed}: {found:?}"
        );
    }
    assert!(
        rt.locate(&plugin, &sys, &subject(&[("phone", "56 78")]))
            .await
            .unwrap()
            .is_empty()
    );

    // Exact matching (a bare column name) keeps the stored spelling apart.
    let exact = rt
        .prepare(&system(db.url(), dataset(json!("address"))))
        .unwrap();
    let found = rt.locate(&plugin, &exact, &who).await.unwrap();
    assert!(
        !found.iter().any(|r| r.collection == "newsletter"),
        "{found:?}"
    );
    let found = rt
        .locate(
            &plugin,
            &exact,
            &subject(&[("email", "jane.doe@example.com")]),
        )
        .await
        .unwrap();
    let customer = found.iter().find(|r| r.collection == "customers").unwrap();
    assert_eq!(customer.matched[0].how, MatchKind::Normalised);

    // Erasure reaches what locate found, and nothing else.
    rt.erase(&plugin, &sys, &who).await.unwrap();
    assert_eq!(db.keys("customers").await, BTreeSet::from([2, 3]));
    assert_eq!(db.keys("orders").await, BTreeSet::from([11]));
    assert_eq!(db.keys("newsletter").await, BTreeSet::from([21, 22]));

    // An unknown rule or region is refused with its path.
    for (rule, says) in [
        (json!({ "column": "address", "match": "fuzzy" }), "fuzzy"),
        (
            json!({ "column": "address", "match": "phone", "region": "XX" }),
            "XX",
        ),
        (
            json!({ "column": "address", "match": "email", "region": "FR" }),
            "region",
        ),
    ] {
        let bad = rt.prepare(&system(db.url(), dataset(rule))).unwrap();
        let error = rt.validate(&plugin, &bad).await.unwrap_err();
        assert!(
            matches!(&error, RuntimeError::InvalidConfig(m) if m.contains("config.dataset") && m.contains(says)),
            "{error:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn matching_rules_on_sqlite() {
    matching(Db::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn matching_rules_on_postgresql() {
    if let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await {
        matching(Db::Server(db)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn matching_rules_on_mysql() {
    if let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await {
        matching(Db::Server(db)).await;
    }
}
