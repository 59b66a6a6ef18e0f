//! The SQL connector's matching rules on each engine (SQLite, and PostgreSQL and
//! MySQL/MariaDB when their URLs are set): e-mail addresses trimmed and case-folded,
//! phone numbers compared by their digits in national or international form, exact
//! matching by default; and `locate` saying which field matched and how, or which parent
//! row a record was reached through.

use oubli::runtime::{MatchKind, RuntimeError, SystemConfig};
use oubli_tests::{ServerDb, load, places, places_of, runtime, subject};
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

    /// Runs each statement as it is (a trigger's body holds semicolons).
    async fn execute_each(&self, statements: &[String]) {
        let pool = self.pool().await;
        for statement in statements {
            sqlx::raw_sql(statement)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        pool.close().await;
    }

    /// Two text columns of each row `select` returns (NULL as an empty string).
    async fn texts(&self, select: &str) -> Vec<[String; 2]> {
        let pool = self.pool().await;
        let rows: Vec<(Option<String>, Option<String>)> =
            sqlx::query_as(select).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.into_iter()
            .map(|(a, b)| [a.unwrap_or_default(), b.unwrap_or_default()])
            .collect()
    }

    /// Every row of the company database, as text, for checking that nothing changed.
    async fn everything(&self) -> Vec<[String; 2]> {
        let mut all = Vec::new();
        for select in [
            "SELECT email, name FROM customers ORDER BY id",
            "SELECT phone, phone FROM customers ORDER BY id",
            "SELECT street, street FROM addresses ORDER BY id",
            "SELECT shipping_phone, shipping_phone FROM orders ORDER BY id",
            "SELECT billing_email, billing_name FROM invoices ORDER BY id",
            "SELECT address, address FROM newsletter ORDER BY id",
            "SELECT body, body FROM tickets ORDER BY id",
        ] {
            all.extend(self.texts(select).await);
        }
        all
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

/// The SQL connector loaded and the system with `dataset` on `url` prepared and
/// validated.
async fn connected(
    url: &str,
    dataset: Value,
) -> (
    std::sync::Arc<oubli::runtime::Runtime>,
    std::sync::Arc<oubli::runtime::Plugin>,
    std::sync::Arc<oubli::runtime::Grant>,
) {
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let sys = rt.prepare(&system(url, dataset)).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("the dataset validates");
    (rt, plugin, sys)
}

/// Every page of the subject's export.
async fn export_all(
    rt: &std::sync::Arc<oubli::runtime::Runtime>,
    plugin: &std::sync::Arc<oubli::runtime::Plugin>,
    sys: &std::sync::Arc<oubli::runtime::Grant>,
    who: &oubli::runtime::Subject,
) -> Vec<oubli::runtime::PersonalRecord> {
    let mut exported = Vec::new();
    let mut cursor = None;
    loop {
        let page = rt.access(plugin, sys, who, cursor.take()).await.unwrap();
        exported.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    exported
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
    let mut dataset = weak_dataset(newsletter_rule);
    // Every identity strong: a phone number reaches rows on its own.
    dataset["weak_identities"] = json!([]);
    dataset
}

/// The same tables with the default strengths: the phone number is weak.
fn weak_dataset(newsletter_rule: Value) -> Value {
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

async fn matching(db: Db, _engine: &str) {
    db.execute(SCHEMA).await;
    let (rt, plugin, sys) = connected(
        db.url(),
        dataset(json!({ "column": "address", "match": "email" })),
    )
    .await;

    // Typed in another case, with spaces: the customer, her order (through her row) and
    // her newsletter subscription stored in capitals; not the look-alike addresses.
    let who = subject(&[("email", " Jane.Doe@Example.COM")]);
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let located = places_of(found.iter().map(|r| (&r.collection, &r.key)));
    let expected = places(&[("customers", "1"), ("orders", "10"), ("newsletter", "20")]);
    assert_eq!(located, expected, "{found:?}");
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

/// A household member sharing the subject's phone: with the phone weak (the default),
/// an e-mail and the phone find only the subject's rows; the phone alone, even given
/// twice, reaches no one and the call says why; two weak identities of different kinds
/// that agree reach a row.
async fn strength(db: Db, _engine: &str) {
    db.execute(SCHEMA).await;
    db.execute("INSERT INTO customers VALUES (4, 'paul.doe@example.com', '06 12 34 56 78', 'Jane'); INSERT INTO orders VALUES (12, 4, 9)").await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let sys = rt
        .prepare(&system(
            db.url(),
            weak_dataset(json!({ "column": "address", "match": "email" })),
        ))
        .unwrap();
    let both = subject(&[
        ("email", "jane.doe@example.com"),
        ("phone", "+33 6 12 34 56 78"),
    ]);
    let found = rt.locate(&plugin, &sys, &both).await.unwrap();
    let located = places_of(found.iter().map(|r| (&r.collection, &r.key)));
    let expected = places(&[("customers", "1"), ("orders", "10"), ("newsletter", "20")]);
    assert_eq!(located, expected, "{found:?}");
    // The phone confirms the customer's row: both identities are named.
    let customer = found.iter().find(|r| r.collection == "customers").unwrap();
    assert_eq!(customer.matched.len(), 2, "{customer:?}");

    // The phone alone reaches no one: locate, access and erasure fail and say why, rather
    // than find nothing or hand over the household's rows; the same phone given twice in
    // two spellings is still one identity.
    for phone in [
        subject(&[("phone", "+33 6 12 34 56 78")]),
        subject(&[("phone", "+33 6 12 34 56 78"), ("phone", "06 12 34 56 78")]),
    ] {
        let error = rt.locate(&plugin, &sys, &phone).await.unwrap_err();
        assert!(error.to_string().contains("only weak ones"), "{error}");
        assert!(rt.access(&plugin, &sys, &phone, None).await.is_err());
        assert!(rt.erase(&plugin, &sys, &phone).await.is_err());
    }
    // With a strong identity, a repeated weak one does not reach the household either.
    let doubled = subject(&[
        ("email", "jane.doe@example.com"),
        ("phone", "+33 6 12 34 56 78"),
        ("phone", "06 12 34 56 78"),
    ]);
    let found = rt.locate(&plugin, &sys, &doubled).await.unwrap();
    assert!(
        !found
            .iter()
            .any(|r| r.collection == "customers" && r.key == "4"),
        "{found:?}"
    );
    assert_eq!(db.keys("customers").await, BTreeSet::from([1, 2, 3, 4]));

    // The sweep after erasing Jane does not count her household's phone as left behind.
    rt.erase(&plugin, &sys, &both).await.unwrap();
    assert_eq!(db.keys("customers").await, BTreeSet::from([2, 3, 4]));
    let swept = rt.sweep(&plugin, &sys, &both, 100).await.unwrap();
    assert!(
        !swept.hits.iter().any(|h| h.collection == "customers"),
        "{swept:?}"
    );
    assert!(
        swept.skipped.iter().any(|s| s.contains("phone")),
        "{swept:?}"
    );

    // Two weak identities that agree reach the row: phone and name.
    let mut two = weak_dataset(json!("address"));
    two["tables"][0]["identities"]["name"] = json!("name");
    let sys = rt.prepare(&system(db.url(), two)).unwrap();
    let found = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("phone", "06 12 34 56 78"), ("name", "Jane")]),
        )
        .await
        .unwrap();
    assert!(
        found
            .iter()
            .any(|r| r.collection == "customers" && r.key == "4"),
        "{found:?}"
    );
}

/// One column of each type a personal-data table commonly has, per engine: the schema,
/// the row of the subject, and what `access` must export for some of its columns.
fn every_type(engine: &str) -> (&'static str, Vec<(&'static str, Value)>) {
    match engine {
        "postgres" => (
            "CREATE TYPE mood AS ENUM ('calm', 'busy');
             CREATE TABLE everything (id UUID PRIMARY KEY, email TEXT, amount NUMERIC(20,6), code CHAR(5), addr INET, net CIDR, mac MACADDR, at_time TIME, at_tz TIMETZ, span INTERVAL, price MONEY, tags TEXT[], scores INT4[], doc JSONB, raw BYTEA, feeling mood, born DATE, seen TIMESTAMPTZ, flag BOOLEAN, ratio FLOAT8, big BIGINT);
             INSERT INTO everything VALUES ('6f1c1e2a-8a3b-4c5d-9e0f-112233445566', 'jane@example.org', 12345.6789, 'AB', '192.168.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', '04:05:06', '04:05:06+02', '1 year 2 months 3 days 04:05:06.5', 12.34, ARRAY['a','b'], ARRAY[1,2], '{\"k\": [1, true]}', '\\x000102', 'calm', '1990-05-17', '2024-01-02T03:04:05Z', true, 0.5, 9007199254740993)",
            vec![
                ("amount", json!("12345.6789")),
                ("code", json!("AB   ")),
                ("addr", json!("192.168.0.1")),
                ("net", json!("10.0.0.0/8")),
                ("mac", json!("08:00:2B:01:02:03")),
                ("at_time", json!("04:05:06")),
                ("at_tz", json!("04:05:06+02:00")),
                ("span", json!("P1Y2M3DT4H5M6.5S")),
                ("price", json!("12.34")),
                ("tags", json!(["a", "b"])),
                ("scores", json!([1, 2])),
                ("doc", json!({"k": [1, true]})),
                ("raw", json!("AAEC")),
                ("feeling", json!("calm")),
                ("born", json!("1990-05-17")),
                ("flag", json!(true)),
                ("ratio", json!(0.5)),
                ("big", json!(9007199254740993_i64)),
            ],
        ),
        "mysql" => (
            "CREATE TABLE everything (id CHAR(36) PRIMARY KEY, email VARCHAR(200), amount DECIMAL(20,6), code CHAR(5), at_time TIME, yr YEAR, bits BIT(8), doc JSON, raw VARBINARY(16), feeling ENUM('calm','busy'), born DATE, seen DATETIME, flag BOOLEAN, ratio DOUBLE, big BIGINT UNSIGNED);
             INSERT INTO everything VALUES ('6f1c1e2a-8a3b-4c5d-9e0f-112233445566', 'jane@example.org', 12345.6789, 'AB', '04:05:06', 1990, b'00000101', '{\"k\": [1, true]}', X'000102', 'calm', '1990-05-17', '2024-01-02 03:04:05', true, 0.5, 18446744073709551615)",
            vec![
                ("amount", json!("12345.678900")),
                ("code", json!("AB")),
                ("at_time", json!("04:05:06")),
                ("yr", json!(1990)),
                ("bits", json!(5)),
                ("doc", json!({"k": [1, true]})),
                ("raw", json!("AAEC")),
                ("feeling", json!("calm")),
                ("born", json!("1990-05-17")),
                ("ratio", json!(0.5)),
                ("big", json!("18446744073709551615")),
            ],
        ),
        _ => (
            "CREATE TABLE everything (id TEXT PRIMARY KEY, email TEXT, amount NUMERIC, code CHAR(5), doc JSON, raw BLOB, born DATE, flag BOOLEAN, ratio REAL, big INTEGER, anything);
             INSERT INTO everything VALUES ('6f1c1e2a-8a3b-4c5d-9e0f-112233445566', 'jane@example.org', 12.5, 'AB', '{\"k\": [1, true]}', X'000102', '1990-05-17', 1, 0.5, 9007199254740993, 'x')",
            vec![
                ("amount", json!(12.5)),
                ("code", json!("AB")),
                ("doc", json!({"k": [1, true]})),
                ("raw", json!("AAEC")),
                ("born", json!("1990-05-17")),
                ("ratio", json!(0.5)),
                ("big", json!(9007199254740993_i64)),
                ("anything", json!("x")),
            ],
        ),
    }
}

/// Every column type is exported as JSON (exact decimals and the types JSON lacks as
/// strings, arrays as arrays, JSON as JSON, bytes in base64), a UUID key is read,
/// verified and erased by, and a column of a type the host cannot pass is refused when
/// the system is validated, naming its table.
async fn types(db: Db, engine: &str) {
    let (schema, expected) = every_type(engine);
    db.execute(schema).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let mut columns = serde_json::Map::new();
    for (column, _) in &expected {
        columns.insert((*column).to_owned(), json!("other"));
    }
    let dataset = json!({ "tables": [{ "name": "everything", "key": "id",
        "identities": { "email": "email" }, "columns": columns }] });
    let sys = rt.prepare(&system(db.url(), dataset)).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("every column can be read");
    let who = subject(&[("email", "jane@example.org")]);
    let page = rt.access(&plugin, &sys, &who, None).await.unwrap();
    assert_eq!(page.records.len(), 1, "{page:?}");
    let record = &page.records[0];
    assert_eq!(record.key, "6f1c1e2a-8a3b-4c5d-9e0f-112233445566");
    for (column, value) in &expected {
        let field = record
            .fields
            .iter()
            .find(|f| f.name == *column)
            .unwrap_or_else(|| panic!("{column} exported: {record:?}"));
        let got: Value = serde_json::from_str(&field.value).unwrap();
        assert_eq!(&got, value, "{engine}: {column}");
    }
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    rt.erase(&plugin, &sys, &who).await.unwrap();
    let verified = rt.verify(&plugin, &sys, &who, &found).await.unwrap();
    assert_eq!(
        verified[0].state,
        oubli::runtime::RecordState::Gone,
        "{verified:?}"
    );
}

/// A column whose type the host cannot pass to a plugin is refused at validation.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_column_type_is_refused_when_the_system_is_validated() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let db = Db::Server(db);
    db.execute("CREATE TABLE shapes (id INT PRIMARY KEY, email TEXT, spot POINT); INSERT INTO shapes VALUES (1, 'a@example.org', '(1,2)')").await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let dataset = json!({ "tables": [{ "name": "shapes", "key": "id",
        "identities": { "email": "email" }, "columns": { "spot": "location" } }] });
    let sys = rt.prepare(&system(db.url(), dataset)).unwrap();
    let error = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.dataset.tables[0]") && m.contains("spot")),
        "{error:?}"
    );
}

/// PostgreSQL's catalogue as the connector reads it: a domain counts as its base type (a
/// key declared as a domain over `BIGINT` is matched as an integer, a domain over `TEXT[]`
/// is exported as an array), and the credentials see only what they hold a privilege on:
/// a table granted column by column is read, one not granted is refused at validation.
/// Where the server has `citext`, the sweep searches a `citext` column as text. The sweep
/// claims as covered only what it could read whole: not a table with a column the role
/// may only change, or one granted nothing, or rows row-level security hides; a view is
/// searched with no row key.
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_domains_and_privileges_are_read_from_the_catalogue() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let role = format!("{name}_reader");
    db.execute(&format!(
        "CREATE DOMAIN person_id AS BIGINT CHECK (VALUE > 0);
         CREATE DOMAIN labels AS TEXT[];
         CREATE TABLE people (id person_id PRIMARY KEY, email TEXT, tags labels, salary INT);
         INSERT INTO people VALUES (7, 'jane@example.org', ARRAY['a', 'b'], 1), (8, 'joe@example.org', NULL, 2);
         CREATE TABLE secrets (id INT PRIMARY KEY, email TEXT);
         CREATE TABLE tickets (id INT PRIMARY KEY, title TEXT, body TEXT, status VARCHAR(20));
         INSERT INTO tickets VALUES (1, 'From jane@example.org', 'Jane (jane@example.org) asks', 'open');
         CREATE ROLE {role} LOGIN;
         GRANT SELECT (id, email, tags) ON people TO {role};
         GRANT SELECT (id, title, status), UPDATE (body, status) ON tickets TO {role};
         CREATE TABLE memos (id INT PRIMARY KEY, title TEXT, secret TEXT);
         INSERT INTO memos VALUES (1, 'From jane@example.org', 'jane@example.org');
         GRANT SELECT (id, title) ON memos TO {role};
         CREATE TABLE letters (id INT PRIMARY KEY, owner TEXT, body TEXT);
         INSERT INTO letters VALUES (1, 'someone', 'Dear jane@example.org');
         ALTER TABLE letters ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON letters FOR SELECT USING (owner = current_user);
         GRANT SELECT ON letters TO {role};
         CREATE VIEW letters_seen WITH (security_invoker = true) AS SELECT id, body FROM letters;
         GRANT SELECT ON letters_seen TO {role};
         CREATE VIEW contacts AS SELECT id, email FROM people;
         GRANT SELECT ON contacts TO {role}"
    ))
    .await;
    let citext = {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let available: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_available_extensions WHERE name = 'citext'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        available > 0
    };
    if citext {
        db.execute(&format!(
            "CREATE EXTENSION citext;
             CREATE TABLE notes (id INT PRIMARY KEY, body CITEXT);
             INSERT INTO notes VALUES (1, 'Call JANE@example.org back'), (2, 'nothing here');
             GRANT SELECT ON notes TO {role}"
        ))
        .await;
    } else {
        eprintln!("citext is not available on this server: its sweep is not tested");
    }
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let people = json!({ "name": "people", "key": "id",
        "identities": { "customer_id": "id", "email": "email" },
        "columns": { "tags": "profile" } });
    let as_role = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(as_role, db.url, "the test's URL names the user postgres");
    let sys = rt
        .prepare(&system(&as_role, json!({ "tables": [people.clone()] })))
        .unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("the granted columns are seen");
    let found = rt
        .locate(&plugin, &sys, &subject(&[("customer_id", "7")]))
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["7"],
        "{found:?}"
    );
    let page = rt
        .access(
            &plugin,
            &sys,
            &subject(&[("email", "jane@example.org")]),
            None,
        )
        .await
        .unwrap();
    let tags = page.records[0]
        .fields
        .iter()
        .find(|f| f.name == "tags")
        .expect("tags exported");
    assert_eq!(
        serde_json::from_str::<Value>(&tags.value).unwrap(),
        json!(["a", "b"])
    );
    let who = subject(&[("email", "jane@example.org")]);
    let report = rt.sweep(&plugin, &sys, &who, 1_000).await.unwrap();
    // A column the role may update but not read is not searched, and said so: the
    // table is not claimed covered, while its readable columns are searched. (Granted
    // columns one by one, the role cannot read a row's `ctid`: the hit names no row.)
    let tickets: Vec<(&str, &str)> = report
        .hits
        .iter()
        .filter(|h| h.collection == "tickets")
        .map(|h| (h.field.as_str(), h.key.as_str()))
        .collect();
    assert_eq!(tickets, [("title", "")], "{report:?}");
    assert!(!report.covered.iter().any(|t| t == "tickets"), "{report:?}");
    assert!(only_body_not_searched(&report), "{report:?}");
    // A column granted nothing is not even listed: a table granted column by column is
    // read whole to know, and not claimed covered when that fails (`people`: its salary;
    // `memos`: a text column); nor is one whose rows row-level security hides.
    assert_eq!(fields_hit(&report, "people"), ["email"], "{report:?}");
    assert_eq!(fields_hit(&report, "memos"), ["title"], "{report:?}");
    assert!(not_all_columns(&report, "people"), "{report:?}");
    assert!(not_all_columns(&report, "memos"), "{report:?}");
    // (A view reading its tables with the reader's rights is subject to their policies,
    // while `row_security_active` says false of any view.)
    for table in ["letters", "letters_seen"] {
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s.starts_with(&format!("{table}: row-level security"))),
            "{table}: {report:?}"
        );
    }
    // A view's rows have no `ctid`: its hits name no row, and it is searched whole.
    let contacts: Vec<(&str, &str)> = report
        .hits
        .iter()
        .filter(|h| h.collection == "contacts")
        .map(|h| (h.field.as_str(), h.key.as_str()))
        .collect();
    assert_eq!(contacts, [("email", "")], "{report:?}");
    assert!(report.covered.iter().any(|t| t == "contacts"), "{report:?}");
    for table in ["people", "memos", "letters", "letters_seen"] {
        assert!(
            !report.covered.iter().any(|t| t == table),
            "{table}: {report:?}"
        );
    }
    if citext {
        // (`notes` is outside the dataset: its rows are named by their `ctid`.)
        assert_eq!(fields_hit(&report, "notes"), ["body"], "{report:?}");
    }
    // A column the role was not granted, and a table it was not.
    for (n, table) in [
        json!({ "name": "people", "key": "id", "identities": { "email": "email" },
            "columns": { "salary": "financial" } }),
        json!({ "name": "secrets", "key": "id", "identities": { "email": "email" },
            "columns": {} }),
    ]
    .into_iter()
    .enumerate()
    {
        let sys = rt
            .prepare(&system(&as_role, json!({ "tables": [table] })))
            .unwrap();
        let error = rt.validate(&plugin, &sys).await.unwrap_err();
        let named = if n == 0 { "salary" } else { "secrets" };
        assert!(
            matches!(&error, RuntimeError::InvalidConfig(m) if m.contains(named)),
            "{named}: {error:?}"
        );
    }
    drop(rt);
    db.execute(&format!(
        "REVOKE ALL ON people FROM {role}; REVOKE ALL ON tickets FROM {role}; REVOKE ALL ON memos FROM {role}; \
         REVOKE ALL ON letters FROM {role}; DROP OWNED BY {role}; DROP ROLE {role}"
    ))
    .await;
}

/// The fields of `collection` a sweep found the subject in.
fn fields_hit<'a>(report: &'a oubli::runtime::SweepReport, collection: &str) -> Vec<&'a str> {
    report
        .hits
        .iter()
        .filter(|h| h.collection == collection)
        .map(|h| h.field.as_str())
        .collect()
}

/// Whether the sweep says that `tickets.body`, and not `tickets.title`, was not searched.
fn only_body_not_searched(report: &oubli::runtime::SweepReport) -> bool {
    report
        .skipped
        .iter()
        .any(|s| s.starts_with("tickets:") && s.contains("body") && !s.contains("title"))
}

/// Whether the sweep says that some columns of `table` could not be seen.
fn not_all_columns(report: &oubli::runtime::SweepReport, table: &str) -> bool {
    report.skipped.iter().any(|s| {
        s.starts_with(&format!(
            "{table}: the credentials may read only some of its columns"
        ))
    })
}

/// MySQL/MariaDB credentials granted some columns one by one: the sweep searches the
/// columns they may read, names those they may only change as not searched, and says of a
/// table with a column granted nothing that its other columns are unknown; neither table
/// is claimed covered (both were refused whole before). On MariaDB a system-versioned
/// table's history is searched too.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_columns_granted_one_by_one_are_swept_as_far_as_they_may_be_read() {
    let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await else {
        return;
    };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    // (MySQL takes user names of at most 32 characters.)
    let user = format!("r{}", &name[name.len() - 16..]);
    db.execute(&format!(
        "CREATE TABLE people (id INT PRIMARY KEY, email VARCHAR(200));
         INSERT INTO people VALUES (7, 'jane@example.org');
         CREATE TABLE tickets (id INT PRIMARY KEY, title TEXT, body TEXT);
         INSERT INTO tickets VALUES (1, 'From jane@example.org', 'Jane (jane@example.org) asks');
         CREATE USER '{user}'@'%';
         GRANT SELECT ON {name}.people TO '{user}'@'%';
         GRANT SELECT (id, title), UPDATE (body) ON {name}.tickets TO '{user}'@'%';
         CREATE TABLE memos (id INT PRIMARY KEY, title TEXT, secret TEXT);
         INSERT INTO memos VALUES (1, 'From jane@example.org', 'jane@example.org');
         GRANT SELECT (id, title) ON {name}.memos TO '{user}'@'%'"
    ))
    .await;
    // MariaDB keeps earlier versions of a system-versioned table's rows: a deleted row's
    // e-mail is still in its history.
    let mariadb = {
        let pool = sqlx::MySqlPool::connect(&db.url).await.unwrap();
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        version.contains("MariaDB")
    };
    if mariadb {
        db.execute(&format!(
            "CREATE TABLE past (id INT PRIMARY KEY, email VARCHAR(200)) WITH SYSTEM VERSIONING;
             INSERT INTO past VALUES (3, 'jane@example.org');
             DELETE FROM past WHERE id = 3;
             GRANT SELECT ON {name}.past TO '{user}'@'%'"
        ))
        .await;
    }
    let as_user = db.url.replacen("root@", &format!("{user}@"), 1);
    assert_ne!(as_user, db.url, "the test's URL names the user root");
    let people = json!({ "name": "people", "key": "id", "identities": { "email": "email" },
        "columns": {} });
    let (rt, plugin, sys) = connected(&as_user, json!({ "tables": [people] })).await;
    let who = subject(&[("email", "jane@example.org")]);
    let report = rt.sweep(&plugin, &sys, &who, 1_000).await.unwrap();
    assert_eq!(fields_hit(&report, "tickets"), ["title"], "{report:?}");
    assert_eq!(fields_hit(&report, "memos"), ["title"], "{report:?}");
    if mariadb {
        assert_eq!(fields_hit(&report, "past"), ["email"], "{report:?}");
        assert_eq!(report.covered, ["past", "people"], "{report:?}");
    } else {
        assert_eq!(report.covered, ["people"], "{report:?}");
    }
    assert!(only_body_not_searched(&report), "{report:?}");
    assert!(not_all_columns(&report, "memos"), "{report:?}");
    drop(rt);
    db.execute(&format!("DROP USER '{user}'@'%'")).await;
}

/// Copies: an order's shipping phone and an invoice's billing phone copy the customer's
/// phone. Rectifying the phone changes every copy of the subject's rows in the same
/// transaction, and no one else's; erasure deletes the customer and order, and nulls the
/// copy in the invoice it keeps, which verify then reads back cleared of it.
async fn copies(db: Db, _engine: &str) {
    db.execute("
        CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(200), phone VARCHAR(40));
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, shipping_phone VARCHAR(40));
        CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_id INTEGER, billing_phone VARCHAR(40), amount INTEGER);
        INSERT INTO customers VALUES (1, 'jane@example.com', '0611111111');
        INSERT INTO customers VALUES (2, 'john@example.com', '0622222222');
        INSERT INTO orders VALUES (10, 1, '0611111111');
        INSERT INTO orders VALUES (11, 2, '0622222222');
        INSERT INTO invoices VALUES (20, 1, '0611111111', 100);
        INSERT INTO invoices VALUES (21, 2, '0622222222', 200)").await;
    let dataset = json!({ "tables": [
        { "name": "customers", "key": "id", "identities": { "email": "email" },
          "columns": { "email": "contact", "phone": "contact" } },
        { "name": "orders", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "columns": { "shipping_phone": "contact" },
          "copies": { "shipping_phone": "customers.phone" } },
        { "name": "invoices", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "columns": { "billing_phone": "contact", "amount": "billing" },
          "copies": { "billing_phone": "customers.phone" },
          "erase": { "action": "retain", "legal_basis": "Art. 17(3)(b) GDPR: invoices are kept ten years" } },
    ]});
    let (rt, plugin, sys) = connected(db.url(), dataset.clone()).await;
    let who = subject(&[("email", "jane@example.com")]);
    let change = oubli::runtime::Change {
        collection: Some("customers".into()),
        field: "phone".into(),
        value: "\"0699999999\"".into(),
    };
    let rectified = rt.rectify(&plugin, &sys, &who, &[change]).await.unwrap();
    let changed = places_of(rectified.changed.iter().map(|r| (&r.collection, &r.key)));
    assert_eq!(
        changed,
        places(&[("customers", "1"), ("invoices", "20"), ("orders", "10")])
    );
    let pool = db.pool().await;
    let phones: Vec<(String,)> = sqlx::query_as(
        "SELECT phone FROM customers UNION ALL SELECT shipping_phone FROM orders UNION ALL SELECT billing_phone FROM invoices",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let phones: Vec<String> = phones.into_iter().map(|(p,)| p).collect();
    assert_eq!(
        phones.iter().filter(|p| *p == "0699999999").count(),
        3,
        "{phones:?}"
    );
    assert_eq!(
        phones.iter().filter(|p| *p == "0622222222").count(),
        3,
        "{phones:?}"
    );

    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let erased = rt.erase(&plugin, &sys, &who).await.unwrap();
    let invoice = erased.iter().find(|e| e.collection == "invoices").unwrap();
    assert_eq!(invoice.outcome.masked(), ["billing_phone".to_owned()]);
    let kept: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT billing_phone FROM invoices WHERE id = 20")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept, vec![(None,)]);
    pool.close().await;
    let verified = rt.verify(&plugin, &sys, &who, &found).await.unwrap();
    let invoice = verified
        .iter()
        .find(|v| v.collection == "invoices")
        .unwrap();
    assert!(
        matches!(&invoice.state, oubli::runtime::RecordState::Holds(fields) if !fields.contains(&"billing_phone".to_owned())),
        "{invoice:?}"
    );

    // A copy of something the dataset does not export is refused with its path.
    let mut wrong = dataset;
    wrong["tables"][1]["copies"]["shipping_phone"] = json!("customers.fax");
    let bad = rt.prepare(&system(db.url(), wrong)).unwrap();
    let error = rt.validate(&plugin, &bad).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.dataset.tables[1].copies.shipping_phone")),
        "{error:?}"
    );
}

/// Mentions: another customer's ticket quotes the subject's address in another case. It
/// is located (matched on its body), exported as the text around the address only,
/// erased by replacing the address and keeping the rest of the text, read back cleared,
/// and the sweep then finds nothing.
async fn mentions(db: Db, _engine: &str) {
    let preamble = "The customer called about a parcel that never arrived at the depot.";
    let tail = "She asks for a refund of the whole order and a written apology.";
    db.execute(&format!(
        "
        CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(200));
        CREATE TABLE tickets (id INTEGER PRIMARY KEY, customer_id INTEGER, body TEXT);
        INSERT INTO customers VALUES (1, 'jane@example.com');
        INSERT INTO customers VALUES (2, 'john@example.com');
        INSERT INTO tickets VALUES (1, 1, 'My own ticket');
        INSERT INTO tickets VALUES (2, 2, '{preamble} Forwarded from JANE@example.com: {tail}');
        INSERT INTO tickets VALUES (3, 2, 'Write to xjane@example.com or jane@example.com.uk')"
    ))
    .await;
    let dataset = json!({ "tables": [
        { "name": "customers", "key": "id", "identities": { "email": "email" },
          "columns": { "email": "contact" } },
        { "name": "tickets", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "columns": { "body": "communications" }, "mentions": ["body"] },
    ]});
    let (rt, plugin, sys) = connected(db.url(), dataset).await;
    let who = subject(&[("email", "jane@example.com")]);
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let located = places_of(found.iter().map(|r| (&r.collection, &r.key)));
    assert_eq!(
        located,
        places(&[("customers", "1"), ("tickets", "1"), ("tickets", "2")]),
        "{found:?}"
    );
    let mention = found.iter().find(|r| r.key == "2").unwrap();
    assert_eq!(mention.matched[0].field, "body");

    let exported = export_all(&rt, &plugin, &sys, &who).await;
    let quoted = exported
        .iter()
        .find(|r| r.collection == "tickets (mentions of the subject)")
        .unwrap_or_else(|| panic!("{exported:?}"));
    assert_eq!(quoted.key, "2");
    let excerpts: Vec<String> = serde_json::from_str(&quoted.fields[0].value).unwrap();
    assert_eq!(excerpts.len(), 1, "{excerpts:?}");
    assert!(excerpts[0].contains("JANE@example.com"), "{excerpts:?}");
    assert!(
        !excerpts[0].contains("The customer called"),
        "only the text around it: {excerpts:?}"
    );

    rt.erase(&plugin, &sys, &who).await.unwrap();
    let pool = db.pool().await;
    // MariaDB's TEXT reaches the Any driver as bytes.
    let bodies: Vec<(String,)> = if db.url().starts_with("mysql") {
        let raw: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT body FROM tickets ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        raw.into_iter()
            .map(|(b,)| (String::from_utf8(b).unwrap(),))
            .collect()
    } else {
        sqlx::query_as("SELECT body FROM tickets ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    pool.close().await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        bodies[0].0,
        format!("{preamble} Forwarded from [erased]: {tail}")
    );
    assert_eq!(
        bodies[1].0,
        "Write to xjane@example.com or jane@example.com.uk"
    );
    let verified = rt.verify(&plugin, &sys, &who, &found).await.unwrap();
    let ticket = verified.iter().find(|v| v.key == "2").unwrap();
    assert_eq!(
        ticket.state,
        oubli::runtime::RecordState::Cleared(vec!["body".into()])
    );
    let swept = rt.sweep(&plugin, &sys, &who, 100).await.unwrap();
    assert!(swept.hits.is_empty(), "{swept:?}");
}

/// The company database of [`oubli_tests::company`] against its oracle: locate returns
/// exactly Jane's rows and the ticket that mentions her (not her husband's rows sharing
/// her phone and street, not her homonym's); access exports her rows and the mention
/// apart; rectification changes every copy of her phone and name; a dataset that would
/// delete invoices is refused by the database's trigger with nothing changed; erasure
/// goes children first past the NO ACTION key, leaves only her invoice with its
/// identifying fields masked and the other ticket with the mention replaced; verify and
/// sweep agree.
async fn company(db: Db, engine: &str) {
    use oubli_tests::company;
    db.execute_each(&company::schema(engine)).await;
    let (rt, plugin, sys) = connected(db.url(), company::dataset()).await;
    let jane = subject(&company::JANE);
    let oracle = company::oracle();
    let mention = company::mention();

    let found = rt.locate(&plugin, &sys, &jane).await.unwrap();
    let mut expected = oracle.clone();
    expected.insert(mention.clone());
    assert_eq!(
        places_of(found.iter().map(|r| (&r.collection, &r.key))),
        expected,
        "{found:?}"
    );
    // Her order: her phone confirms it, but it was reached through her customer row
    // (Paul's order, with the same phone, was not reached at all); her address likewise.
    let order = found.iter().find(|r| r.key == "10").unwrap();
    assert_eq!(order.via.as_deref(), Some("customers/1"), "{order:?}");
    assert_eq!(order.matched[0].kind, "phone", "{order:?}");
    let address = found.iter().find(|r| r.key == "50").unwrap();
    assert_eq!(address.via.as_deref(), Some("customers/1"), "{address:?}");

    let exported = export_all(&rt, &plugin, &sys, &jane).await;
    let own = places_of(
        exported
            .iter()
            .filter(|r| !r.collection.ends_with("(mentions of the subject)"))
            .map(|r| (&r.collection, &r.key)),
    );
    assert_eq!(own, oracle, "{exported:?}");
    let quoted: Vec<&str> = exported
        .iter()
        .filter(|r| r.collection == "tickets (mentions of the subject)")
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(quoted, ["41"]);

    // Rectification: her phone and her name, wherever they were copied.
    let change = |field: &str, value: &str| oubli::runtime::Change {
        collection: Some("customers".into()),
        field: field.into(),
        value: Value::String(value.into()).to_string(),
    };
    let rectified = rt
        .rectify(
            &plugin,
            &sys,
            &jane,
            &[
                change("phone", "+33 6 99 99 99 99"),
                change("name", "Jane Martin"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        places_of(rectified.changed.iter().map(|r| (&r.collection, &r.key))),
        places(&[
            ("customers", "1"),
            ("invoices", "20"),
            ("orders", "10"),
            ("orders", "11")
        ]),
        "{rectified:?}"
    );
    assert!(rectified.not_applicable.is_empty(), "{rectified:?}");
    assert_eq!(
        db.texts("SELECT phone, name FROM customers ORDER BY id")
            .await,
        [
            ["+33 6 99 99 99 99", "Jane Martin"],
            ["06 12 34 56 78", "Paul Doe"],
            ["07 00 00 00 00", "Jane Doe"],
        ]
    );
    assert_eq!(
        db.texts("SELECT shipping_phone, shipping_phone FROM orders ORDER BY id")
            .await
            .into_iter()
            .map(|[phone, _]| phone)
            .collect::<Vec<_>>(),
        [
            "+33 6 99 99 99 99",
            "+33 6 99 99 99 99",
            "06 12 34 56 78",
            "07 00 00 00 00"
        ]
    );
    assert_eq!(
        db.texts("SELECT billing_email, billing_name FROM invoices ORDER BY id")
            .await,
        [
            ["Jane.Doe@Example.com", "Jane Martin"],
            ["jane.doe2@example.com", "Jane Doe"],
        ],
        "a copy of an unchanged field is left as it was stored"
    );
    let jane = subject(&[
        company::JANE[0],
        ("phone", "+33 6 99 99 99 99"),
        ("name", "Jane Martin"),
        company::JANE[3],
    ]);

    // A dataset that would delete invoices: the database's trigger refuses, the erasure
    // fails saying so, and nothing of anyone changed.
    let mut deleting = company::dataset();
    deleting["tables"][3]["erase"] = json!({ "action": "delete" });
    let wrong = rt.prepare(&system(db.url(), deleting)).unwrap();
    let before = db.everything().await;
    let refused = rt.erase(&plugin, &wrong, &jane).await.unwrap_err();
    assert!(
        refused.to_string().contains(company::REFUSAL),
        "the database's own words: {refused}"
    );
    assert!(!refused.is_retryable(), "{refused:?}");
    assert_eq!(
        db.everything().await,
        before,
        "one transaction: nothing changed"
    );

    let erased = rt.erase(&plugin, &sys, &jane).await.unwrap();
    assert_eq!(
        places_of(erased.iter().map(|e| (&e.collection, &e.key))),
        expected,
        "{erased:?}"
    );
    for (table, keys) in company::left_after_erasure() {
        assert_eq!(db.keys(table).await, keys, "{table}");
    }
    let invoice = erased.iter().find(|e| e.key == "20").unwrap();
    assert_eq!(
        invoice.outcome.masked(),
        ["billing_email".to_owned(), "billing_name".to_owned()]
    );
    let ticket = db
        .texts("SELECT body, body FROM tickets WHERE id = 41")
        .await;
    assert_eq!(ticket[0][0], "My wife [erased] will pick it up");
    let verified = rt.verify(&plugin, &sys, &jane, &found).await.unwrap();
    for v in &verified {
        match (v.collection.as_str(), v.key.as_str()) {
            ("invoices", "20") => assert_eq!(
                v.state,
                oubli::runtime::RecordState::Holds(vec!["amount".into()]),
                "kept under its legal basis, its identifying fields masked"
            ),
            ("tickets", "41") => assert_eq!(
                v.state,
                oubli::runtime::RecordState::Cleared(vec!["body".into()])
            ),
            _ => assert_eq!(v.state, oubli::runtime::RecordState::Gone, "{v:?}"),
        }
    }
    let swept = rt.sweep(&plugin, &sys, &jane, 1000).await.unwrap();
    assert!(swept.hits.is_empty(), "{swept:?}");
    assert!(!swept.cut_short, "{swept:?}");
}

/// One test per engine for a journey `fn(Db, engine)`: SQLite always, PostgreSQL and
/// MySQL/MariaDB when their URLs are set.
macro_rules! on_every_engine {
    ($($journey:ident),* $(,)?) => {$(
        mod $journey {
            use super::{Db, ServerDb};

            #[tokio::test(flavor = "multi_thread")]
            async fn on_sqlite() {
                super::$journey(Db::sqlite().await, "sqlite").await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_postgresql() {
                if let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await {
                    super::$journey(Db::Server(db), "postgres").await;
                }
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_mysql() {
                if let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await {
                    super::$journey(Db::Server(db), "mysql").await;
                }
            }
        }
    )*};
}

/// Retention (`expired`): only the rows past their period that meet `when` are listed,
/// each by its key (mapped as an identity); a row without a time never expires; a rule
/// on a numeric column is refused when the system is validated; an unknown rule is a
/// configuration error.
async fn retention(db: Db, engine: &str) {
    let time = match engine {
        "postgres" => "TIMESTAMP",
        "mysql" => "DATETIME",
        _ => "TEXT",
    };
    let recent = (chrono::Utc::now() - chrono::Duration::days(5))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    db.execute(&format!(
        "CREATE TABLE members (id INTEGER PRIMARY KEY, email VARCHAR(200), status VARCHAR(20), left_at {time}, joined INTEGER);
        INSERT INTO members VALUES (1, 'old-former@example.org', 'former', '2020-01-02 10:00:00', 1);
        INSERT INTO members VALUES (2, 'old-active@example.org', 'active', '2020-01-02 10:00:00', 1);
        INSERT INTO members VALUES (3, 'new-former@example.org', 'former', '{recent}', 1);
        INSERT INTO members VALUES (4, 'never-left@example.org', 'former', NULL, 1)"
    ))
    .await;
    let dataset = |column: &str| {
        json!({ "tables": [{ "name": "members", "key": "id",
            "identities": { "customer-id": "id", "email": "email" }, "columns": { "email": "contact" } }],
            "retention": { "former": { "table": "members", "column": column, "after_days": 30,
                "when": { "column": "status", "equals": "former" } } } })
    };
    let (rt, plugin, sys) = connected(db.url(), dataset("left_at")).await;
    let page = rt.expired(&plugin, &sys, "former", None).await.unwrap();
    let listed: Vec<Vec<(String, String)>> = page
        .subjects
        .iter()
        .map(|s| {
            s.iter()
                .map(|i| (i.kind.clone(), i.value.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        listed,
        [[("customer-id".to_owned(), "1".to_owned())]],
        "{engine}"
    );
    assert_eq!(page.next, None);
    let unknown = rt.expired(&plugin, &sys, "nope", None).await.unwrap_err();
    assert!(
        matches!(&unknown, RuntimeError::InvalidConfig(m) if m.contains("no rule named")),
        "{unknown:?}"
    );

    let sys = rt.prepare(&system(db.url(), dataset("joined"))).unwrap();
    let refused = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&refused, RuntimeError::InvalidConfig(m) if m.starts_with("config.dataset.retention.former.column")),
        "{engine}: {refused:?}"
    );
}

/// The sweep searches every column that may hold the subject's identity values as text,
/// not only those declared as text: PostgreSQL's arrays, XML, `name`, composites, enums
/// (one named like a built-in type too), full text vectors and bytes (through domains,
/// the value next to bytes that are not ASCII), under a nondeterministic collation too;
/// MySQL's bytes (some not UTF-8), enums and sets; SQLite's columns declared otherwise
/// that hold a text anyway. PostgreSQL's arrays of bytes are named as not searched. Numbers are not searched (a customer number is
/// not found in an amount), and an SQLite table declared as numbers alone is named as
/// not searched. Tables whose names differ only in case on a MySQL server that tells
/// them apart are searched each under its name.
async fn sweep_types(db: Db, engine: &str) {
    let (schema, expected): (&str, &[&str]) = match engine {
        "postgres" => (
            "CREATE TYPE contact AS (label TEXT, address TEXT);
             CREATE TYPE public.line AS ENUM ('jane@example.org', 'other');
             CREATE DOMAIN some_bytes AS BYTEA;
             CREATE DOMAIN more_bytes AS some_bytes;
             CREATE DOMAIN some_number AS BIGINT;
             CREATE DOMAIN more_number AS some_number;
             CREATE TABLE traces (id INT PRIMARY KEY, tags TEXT[], doc XML, who NAME, raw BYTEA, card contact, words TSVECTOR, amount BIGINT, kind public.line, quoted more_bytes, total more_number);
             INSERT INTO traces VALUES (1, ARRAY['vip', 'Jane@Example.org'], '<to>jane@example.org</to>', 'jane@example.org', convert_to('mail JANE@example.org today', 'UTF8'), ROW('home', 'jane@example.org'), to_tsvector('simple', 'jane@example.org'), 12345, 'jane@example.org', convert_to('Write to \u{201c}jane@example.org\u{201d}', 'UTF8'), 12345);
             CREATE VIEW traces_seen WITH (security_invoker = f) AS SELECT id, who FROM traces;
             CREATE TYPE attachment AS (name TEXT, data BYTEA);
             CREATE TABLE packed (id INT PRIMARY KEY, note TEXT, parts BYTEA[], att attachment);
             INSERT INTO packed VALUES (1, 'x', ARRAY[convert_to('mail jane@example.org', 'UTF8')], ROW('a', convert_to('to jane@example.org', 'UTF8')));
             CREATE COLLATION any_case (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
             CREATE TABLE folded (id INT PRIMARY KEY, email TEXT COLLATE any_case);
             INSERT INTO folded VALUES (1, 'Jane@Example.org');
             CREATE TABLE counts (id INT PRIMARY KEY, n BIGINT);
             INSERT INTO counts VALUES (1, 12345);
             CREATE VIEW a_broken AS SELECT CAST(1 / (id - id) AS TEXT) AS t FROM counts",
            &["card", "doc", "kind", "quoted", "raw", "tags", "who", "words"],
        ),
        "mysql" => (
            "CREATE TABLE traces (id INT PRIMARY KEY, raw BLOB, bin VARBINARY(64), kind ENUM('none', 'jane@example.org'), labels SET('a', 'jane@example.org'), amount BIGINT);
             INSERT INTO traces VALUES (1, CONCAT(X'FF', CAST(' mail jane@example.org' AS BINARY)), CAST('JANE@example.org' AS BINARY), 'jane@example.org', 'a,jane@example.org', 12345);
             CREATE TABLE counts (id INT PRIMARY KEY, n BIGINT);
             INSERT INTO counts VALUES (1, 12345)",
            &["bin", "kind", "labels", "raw"],
        ),
        _ => (
            "CREATE TABLE traces (id INTEGER PRIMARY KEY, note TEXT, amount INTEGER, stamp DATETIME, raw BLOB, ref UUID, score REAL);
             INSERT INTO traces VALUES (1, 'nothing here', 'jane@example.org', 12345, X'6D61696C206A616E65406578616D706C652E6F7267', 'Jane@example.org', 12345);
             CREATE TABLE counts (id INTEGER PRIMARY KEY, n INTEGER);
             INSERT INTO counts VALUES (1, 'jane@example.org');
             CREATE TABLE strict_counts (id INTEGER PRIMARY KEY, n INTEGER, r REAL) STRICT;
             CREATE TABLE accounts (uid TEXT, domain TEXT, email TEXT GENERATED ALWAYS AS (uid || '@' || domain) STORED);
             INSERT INTO accounts (uid, domain) VALUES ('jane', 'example.org');
             CREATE TABLE legacy (id INTEGER PRIMARY KEY DESC, note TEXT);
             INSERT INTO legacy VALUES ('jane@example.org', 'moved');
             CREATE TABLE pairs (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
             INSERT INTO pairs VALUES ('a', 'jane@example.org');
             CREATE VIRTUAL TABLE notes_fts USING fts5(body);
             INSERT INTO notes_fts VALUES ('call jane@example.org');
             CREATE VIRTUAL TABLE words USING fts5(body, content='');
             INSERT INTO words (rowid, body) VALUES (1, 'customer jane@example.org');
             CREATE TABLE old (x TEXT);
             CREATE VIEW stale AS SELECT x FROM old;
             DROP TABLE old",
            &["amount", "raw", "ref"],
        ),
    };
    db.execute(&format!(
        "CREATE TABLE customers (id INT PRIMARY KEY, email VARCHAR(200));
         INSERT INTO customers VALUES (12345, 'jane@example.org');
         {schema}"
    ))
    .await;
    // A MySQL server that compares table names exactly (Linux's default) holds `Notes`
    // and `notes` as two tables: each is searched under its own name.
    let exact_names = engine == "mysql" && {
        let pool = db.pool().await;
        let setting: i64 = sqlx::query_scalar("SELECT CAST(@@lower_case_table_names AS SIGNED)")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        setting == 0
    };
    if exact_names {
        db.execute(
            "CREATE TABLE Notes (id INT PRIMARY KEY, body TEXT);
             INSERT INTO Notes VALUES (1, 'Call jane@example.org');
             CREATE TABLE notes (id INT PRIMARY KEY, body TEXT);
             INSERT INTO notes VALUES (1, 'nothing')",
        )
        .await;
    }
    let customers = json!({ "name": "customers", "key": "id",
        "identities": { "customer_id": "id", "email": "email" }, "columns": {} });
    let (rt, plugin, sys) = connected(db.url(), json!({ "tables": [customers] })).await;
    let who = subject(&[("email", "jane@example.org"), ("customer_id", "12345")]);
    let report = rt.sweep(&plugin, &sys, &who, 1_000).await.unwrap();
    let mut hit = fields_hit(&report, "traces");
    hit.sort_unstable();
    hit.dedup();
    assert_eq!(hit, expected, "{engine}: {report:?}");
    // Every hit is the e-mail's: the customer number in numbers is not searched.
    assert!(
        report.hits.iter().all(|h| h.kind == "email"),
        "{engine}: {report:?}"
    );
    assert!(report.covered.iter().any(|t| t == "traces"), "{report:?}");
    let counts_skipped = report
        .skipped
        .iter()
        .any(|s| s.starts_with("counts: its columns are declared as numbers"));
    assert_eq!(counts_skipped, engine == "sqlite", "{engine}: {report:?}");
    if engine == "sqlite" {
        // A generated column, a key declared `INTEGER PRIMARY KEY DESC` (no rowid's
        // alias: it holds text), a table without rowids (its hits name no row).
        // A full-text index keeping its text: its text is searched, its other shadow
        // tables (derived from that text) are left out. (The index itself cannot be
        // listed through the plugins' connection, and is named: see below.)
        for (table, field) in [
            ("accounts", "email"),
            ("legacy", "id"),
            ("pairs", "v"),
            ("notes_fts_content", "c0"),
        ] {
            assert_eq!(fields_hit(&report, table), [field], "{table}: {report:?}");
            assert!(
                report.covered.iter().any(|t| t == table),
                "{table}: {report:?}"
            );
        }
        assert!(
            report
                .hits
                .iter()
                .any(|h| h.collection == "pairs" && h.key.is_empty()),
            "{report:?}"
        );
        assert!(
            !report
                .skipped
                .iter()
                .chain(&report.covered)
                .any(|t| t.starts_with("notes_fts_data")),
            "{report:?}"
        );
        // A full-text index without its own text, and its shadow tables, cannot be
        // searched; a view whose table is gone cannot be listed: each is named, and the
        // rest is searched.
        for table in ["words", "words_data", "stale", "notes_fts"] {
            assert!(
                report
                    .skipped
                    .iter()
                    .any(|s| s.starts_with(&format!("{table}: "))),
                "{table}: {report:?}"
            );
            assert!(
                !report.covered.iter().any(|t| t == table),
                "{table}: {report:?}"
            );
        }
    }
    // A STRICT table's numbers cannot hold a text: nothing is said of it.
    assert!(
        !report
            .skipped
            .iter()
            .any(|s| s.starts_with("strict_counts")),
        "{engine}: {report:?}"
    );
    assert!(
        !report.covered.iter().any(|t| t == "counts"),
        "{engine}: {report:?}"
    );
    if engine == "postgres" {
        // A view given `security_invoker = f` reads its tables with its owner's rights.
        assert_eq!(fields_hit(&report, "traces_seen"), ["who"], "{report:?}");
        assert!(
            report.covered.iter().any(|t| t == "traces_seen"),
            "{report:?}"
        );
        // Bytes inside an array or a composite are read as the text they hold, also
        // after a statement the database refused (which rolls back the session's
        // setting for them).
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s == "a_broken: the database refused to read it"),
            "{report:?}"
        );
        let mut packed = fields_hit(&report, "packed");
        packed.sort_unstable();
        assert_eq!(packed, ["att", "parts"], "{report:?}");
        assert!(report.covered.iter().any(|t| t == "packed"), "{report:?}");
        // A nondeterministic collation refuses substring searches: the sweep searches
        // under the database's default one.
        assert_eq!(fields_hit(&report, "folded"), ["email"], "{report:?}");
        assert!(report.covered.iter().any(|t| t == "folded"), "{report:?}");
        // Text forms escape a quote in a value: it is searched as they write it.
        db.execute_each(&[
            "CREATE TABLE quoted (id INT PRIMARY KEY, words TSVECTOR, doc XML, tags TEXT[], parts BYTEA[])"
                .to_owned(),
            r#"INSERT INTO quoted VALUES (1, '''o''''brien@example.org''', '<to>o&apos;brien@example.org</to>', NULL, NULL), (2, NULL, NULL, ARRAY['"jo"@example.org'], ARRAY[convert_to('to josé@example.org', 'UTF8')])"#
                .to_owned(),
        ])
        .await;
        let quoted = subject(&[
            ("email", "o'brien@example.org"),
            ("email", "\"jo\"@example.org"),
            ("email", "josé@example.org"),
        ]);
        let report = rt.sweep(&plugin, &sys, &quoted, 1_000).await.unwrap();
        let mut hit = fields_hit(&report, "quoted");
        hit.sort_unstable();
        hit.dedup();
        assert_eq!(hit, ["doc", "parts", "tags", "words"], "{report:?}");
    }
    if exact_names {
        assert_eq!(fields_hit(&report, "Notes"), ["body"], "{report:?}");
        assert!(fields_hit(&report, "notes").is_empty(), "{report:?}");
        for table in ["Notes", "notes"] {
            assert!(
                report.covered.iter().any(|t| t == table),
                "{table}: {report:?}"
            );
        }
    }
}

on_every_engine!(
    matching,
    strength,
    types,
    copies,
    mentions,
    company,
    retention,
    sweep_types
);

/// On PostgreSQL the SQL connector keeps the dataset's catalogue in the system's memo and
/// uses it again only while the database says its tables are unchanged: the call after
/// the first one reads no catalogue; after a column turns from integers to text, the
/// next call reads it again and finds a customer number that is not an integer (which a
/// stale catalogue would have skipped, finding nothing).
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_s_kept_catalogue_follows_a_change_of_the_tables() {
    use oubli::runtime::sql::Sent;
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE people (id INT PRIMARY KEY, customer_no BIGINT, email TEXT);
         INSERT INTO people VALUES (1, 77, 'jane@example.org')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let people = json!({ "name": "people", "key": "id",
        "identities": { "customer_id": "customer_no", "email": "email" } });
    let sys = rt
        .prepare(&system(&db.url, json!({ "tables": [people] })))
        .unwrap();
    let target = sys.sql.clone().unwrap();
    target.record();
    let catalogue_reads = || {
        target
            .take_recorded()
            .iter()
            .filter(|sent| matches!(sent, Sent::Query(q) if q.sql.contains("row_security_active")))
            .count()
    };
    let keys = |found: Vec<oubli::runtime::RecordRef>| {
        found.into_iter().map(|r| r.key).collect::<Vec<_>>()
    };
    // (After the column's type changes, the same statement is bound with a text where
    // each pooled connection prepared it for a number: the host prepares it again.)
    let locate = |value: &'static str| {
        let (rt, plugin, sys) = (rt.clone(), plugin.clone(), sys.clone());
        async move {
            let subject = subject(&[("customer_id", value)]);
            rt.locate(&plugin, &sys, &subject).await.unwrap()
        }
    };
    assert_eq!(keys(locate("77").await), ["1"]);
    assert_eq!(catalogue_reads(), 1, "the first call reads the catalogue");
    assert_eq!(keys(locate("77").await), ["1"]);
    assert_eq!(catalogue_reads(), 0, "the next one uses the kept one");
    db.execute(
        "ALTER TABLE people ALTER COLUMN customer_no TYPE TEXT;
         INSERT INTO people VALUES (2, 'AB-77', 'joe@example.org')",
    )
    .await;
    assert_eq!(keys(locate("AB-77").await), ["2"]);
    assert_eq!(catalogue_reads(), 1, "a changed table is read again");
    // A grant on a column changes what is kept too.
    db.execute("GRANT SELECT (email) ON people TO PUBLIC").await;
    assert_eq!(keys(locate("AB-77").await), ["2"]);
    assert_eq!(catalogue_reads(), 1);
    assert_eq!(keys(locate("AB-77").await), ["2"]);
    assert_eq!(catalogue_reads(), 0);
}

/// A column whose type has "int" in its name but holds no integers (an enum
/// `print_status`, an `interval`) is not taken for an integer column, where a value that
/// is not a number was skipped and the row never found: the value is compared, and where
/// PostgreSQL cannot compare it with text the call fails rather than find nothing. A
/// `uuid` identity column is compared as a UUID, in any of the forms PostgreSQL reads.
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_identity_columns_of_other_types_are_compared_as_their_type() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute(
        "CREATE TYPE print_status AS ENUM ('queued', 'printed');
         CREATE TABLE jobs (id INT PRIMARY KEY, status print_status, waited INTERVAL, \
         ref UUID, email TEXT);
         INSERT INTO jobs VALUES (1, 'printed', '2 days', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'jane@example.org'),
           (2, 'queued', '1 day', 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'joe@example.org')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let jobs = json!({ "name": "jobs", "key": "id",
        "identities": { "account": "status", "customer_id": "waited", "email": "email" } });
    let sys = rt
        .prepare(&system(&db.url, json!({ "tables": [jobs] })))
        .unwrap();
    for (kind, value) in [("account", "printed"), ("customer_id", "2 days")] {
        match rt.locate(&plugin, &sys, &subject(&[(kind, value)])).await {
            Ok(found) => assert_eq!(
                found.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
                ["1"],
                "{kind}"
            ),
            Err(error) => assert!(
                format!("{error:?}").contains("operator does not exist"),
                "{kind}: {error:?}"
            ),
        }
    }
    let jobs = json!({ "name": "jobs", "key": "id",
        "identities": { "customer_id": "ref", "email": "email" } });
    let sys = rt
        .prepare(&system(&db.url, json!({ "tables": [jobs] })))
        .unwrap();
    for (value, expected) in [
        ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", vec!["1"]),
        (" {A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11} ", vec!["1"]),
        ("a0eebc999c0b4ef8bb6d6bb9bd380a11", vec!["1"]),
        ("not a uuid", vec![]),
    ] {
        let found = rt
            .locate(&plugin, &sys, &subject(&[("customer_id", value)]))
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            expected,
            "{value}"
        );
    }
}
