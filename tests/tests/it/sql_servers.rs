//! The first-party SQL connector against real PostgreSQL and MySQL/MariaDB servers, each
//! test in a database of its own (skipped when the server's URL is not set).

use oubli::demo::customer_email;
use oubli::runtime::{
    Change, Grant, Outcome, Plugin, RecordState, Runtime, RuntimeError, SystemConfig,
};
use oubli_tests::{ServerDb, load, runtime, server_crm_script, subject};
use std::sync::Arc;

/// The testkit plugin, and a system `name` granted the database at `url`, with a
/// deadline of `timeout_ms` where given.
fn testkit(
    url: &str,
    name: &str,
    timeout_ms: Option<u64>,
) -> (Arc<Runtime>, Arc<Plugin>, Arc<Grant>) {
    let rt = runtime();
    let plugin = load(&rt, "oubli_testkit");
    let limits = timeout_ms.map_or(String::new(), |ms| format!("[limits]\ntimeout_ms = {ms}\n"));
    let config = SystemConfig::from_toml(&format!(
        "name = \"{name}\"\n{limits}[capabilities]\nsql = {{ url = \"{url}\" }}\n"
    ))
    .unwrap();
    let sys = rt.prepare(&config).unwrap();
    (rt, plugin, sys)
}

/// The first column of the rows `statement` returns, read by the testkit in a `locate`.
async fn rows(
    rt: &Arc<Runtime>,
    plugin: &Arc<Plugin>,
    sys: &Arc<Grant>,
    statement: &str,
) -> Vec<String> {
    let s = subject(&[("behaviour", "sql"), ("statement", statement)]);
    let found = rt.locate(plugin, sys, &s).await.unwrap();
    found.into_iter().map(|r| r.key).collect()
}

/// Waits up to 5 s for no row of `table` to match `condition`; the rows left.
async fn until_none(db: &ServerDb, table: &str, condition: &str) -> i64 {
    let mut left = i64::MAX;
    for _ in 0..50 {
        left = db.count(table, condition).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    left
}

/// [`system`] with a dataset of `tables` (a JSON array) in place of the demo's.
fn with_tables(url: &str, tables: serde_json::Value) -> SystemConfig {
    let mut config = system(url);
    config
        .config
        .insert("dataset".into(), serde_json::json!({ "tables": tables }));
    config
}

fn system(url: &str) -> SystemConfig {
    let mut config = oubli::demo::crm_system("crm", std::path::Path::new("unused"));
    config
        .capabilities
        .sql
        .as_mut()
        .expect("the demo grants sql")
        .url = url.to_owned();
    config
}

async fn journey(var: &str) {
    let Some(db) = ServerDb::create(var).await else {
        return;
    };
    db.execute(&server_crm_script(20)).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let sys = rt.prepare(&system(&db.url)).unwrap();

    // Customer 5: 3 orders, 6 items, 3 invoices, no ticket; customer 15 shares the first name.
    let s = subject(&[("email", &customer_email(5))]);
    let found = rt.locate(&plugin, &sys, &s).await.unwrap();
    assert_eq!(found.len(), 1 + 3 + 6 + 3, "{found:?}");
    let by_id = rt
        .locate(&plugin, &sys, &subject(&[("customer-id", "5")]))
        .await
        .unwrap();
    assert_eq!(
        by_id.len(),
        found.len(),
        "an integer key column is searched with an integer"
    );
    assert!(
        rt.locate(&plugin, &sys, &subject(&[("customer-id", "five")]))
            .await
            .unwrap()
            .is_empty()
    );
    for hostile in ["' OR 1=1 --", "5 OR 1=1", "x'); DROP TABLE customers; --"] {
        let h = subject(&[("email", hostile), ("customer-id", hostile)]);
        assert!(
            rt.locate(&plugin, &sys, &h).await.unwrap().is_empty(),
            "{hostile}"
        );
        assert!(
            rt.erase(&plugin, &sys, &h).await.unwrap().is_empty(),
            "{hostile}"
        );
    }
    assert_eq!(db.count("customers", "1 = 1").await, 20);

    // Access pages through every record with its fields.
    let page = rt.access(&plugin, &sys, &s, None).await.unwrap();
    assert!(page.records.iter().any(|r| {
        r.collection == "customers"
            && r.fields
                .iter()
                .any(|f| f.name == "email" && f.value == format!("\"{}\"", customer_email(5)))
    }));

    // Rectify one field of one customer.
    let change = Change {
        collection: Some("customers".into()),
        field: "city".into(),
        value: "\"Brest\"".into(),
    };
    rt.rectify(&plugin, &sys, &s, &[change]).await.unwrap();
    assert_eq!(db.count("customers", "city = 'Brest'").await, 1);
    assert_eq!(db.count("customers", "id = 5 AND city = 'Brest'").await, 1);

    // Erase: deleted children-first, invoices kept under their legal basis, others untouched.
    let others = db.count("orders", "customer_id <> 5").await;
    let erased = rt.erase(&plugin, &sys, &s).await.unwrap();
    assert_eq!(
        erased
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Retained { .. }))
            .count(),
        3
    );
    assert_eq!(db.count("customers", "id = 5").await, 0);
    assert_eq!(
        db.count(
            "order_items",
            "order_id IN (SELECT id FROM orders WHERE customer_id = 5)"
        )
        .await,
        0
    );
    assert_eq!(
        db.count(
            "invoices",
            "billing_email = 'customer5@example.org' AND customer_id IS NULL"
        )
        .await,
        3
    );
    assert_eq!(db.count("orders", "customer_id <> 5").await, others);
    let again = rt.erase(&plugin, &sys, &s).await.unwrap();
    assert_eq!(
        again.len(),
        3,
        "a second erase finds only the retained invoices: {again:?}"
    );
    assert_eq!(db.count("customers", "1 = 1").await, 19);

    // Read back by key: the customer is gone, the invoices kept; the sweep reads every
    // table of the database and finds the address only in the retained invoices.
    let verified = rt.verify(&plugin, &sys, &s, &found).await.unwrap();
    assert_eq!(verified.len(), found.len());
    assert!(
        verified.iter().all(|v| match v.collection.as_str() {
            "invoices" => matches!(v.state, RecordState::Holds(_)),
            _ => v.state == RecordState::Gone,
        }),
        "{verified:?}"
    );
    let swept = rt.sweep(&plugin, &sys, &s, 100).await.unwrap();
    assert!(!swept.cut_short && swept.skipped.is_empty(), "{swept:?}");
    assert_eq!(swept.covered.len(), 5, "{swept:?}");
    assert!(
        !swept.hits.is_empty() && swept.hits.iter().all(|h| h.collection == "invoices"),
        "{swept:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sql_connector_works_on_postgresql() {
    journey("OUBLI_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sql_connector_works_on_mysql() {
    journey("OUBLI_TEST_MYSQL_URL").await;
}

/// On MySQL/MariaDB an erasure's statements are narrowed to the keys found (MariaDB reads
/// and locks the whole table otherwise), and each must reach as many rows as were found:
/// here a trigger moves a found row out of the subject's reach during the erasure, and
/// the erasure fails, naming the table, instead of reporting the row erased. A table
/// whose key is neither an integer nor a text (a DECIMAL) is erased by its condition
/// alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_mysql_erasure_that_reaches_fewer_rows_than_it_found_fails() {
    let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE a (id INT PRIMARY KEY, email VARCHAR(100));
         CREATE TABLE b (id VARCHAR(20) PRIMARY KEY, email VARCHAR(100));
         CREATE TABLE c (id DECIMAL(10, 1) PRIMARY KEY, email VARCHAR(100));
         INSERT INTO a VALUES (1, 's@example.org'), (2, 'f@example.org');
         INSERT INTO b VALUES ('b1', 's@example.org'), ('b2', 'o@example.org'), ('B3 ', 'f@example.org');
         INSERT INTO c VALUES (0.1, 's@example.org'), (0.2, 'f@example.org');
         CREATE TRIGGER moves AFTER DELETE ON a FOR EACH ROW UPDATE b SET email = 'moved@example.org' WHERE email = OLD.email AND OLD.id = 1",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let table = |name: &str| {
        serde_json::json!({
            "name": name, "key": "id",
            "identities": { "email": "email" }, "columns": { "email": "contact" }
        })
    };
    let config = with_tables(&db.url, serde_json::json!(["a", "b", "c"].map(table)));
    let sys = rt.prepare(&config).unwrap();
    let s = subject(&[("email", "s@example.org")]);
    assert_eq!(rt.locate(&plugin, &sys, &s).await.unwrap().len(), 3);
    let error = rt.erase(&plugin, &sys, &s).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.contains("reached 0 of the 1 rows of b")),
        "{error:?}"
    );
    assert_eq!(db.count("b", "email = 'moved@example.org'").await, 1);
    // Without the trigger's interference every key reaches its row: a key with a
    // trailing space, one in capitals, and a DECIMAL key through the condition alone.
    let f = subject(&[("email", "f@example.org")]);
    let found = rt.locate(&plugin, &sys, &f).await.unwrap();
    let erased = rt.erase(&plugin, &sys, &f).await.unwrap();
    assert_eq!(erased.len(), 3, "{erased:?}");
    let verified = rt.verify(&plugin, &sys, &f, &found).await.unwrap();
    assert!(
        verified.iter().all(|v| v.state == RecordState::Gone),
        "{verified:?}"
    );
    for table in ["a", "b", "c"] {
        assert_eq!(
            db.count(table, "email = 'f@example.org'").await,
            0,
            "{table}"
        );
    }
    assert_eq!(db.count("b", "email = 'o@example.org'").await, 1);
}

/// On MySQL/MariaDB a table reached both through its own identities and through its
/// parent is read by the keys each reaches, where its key is declared NOT NULL; where the
/// key may be NULL it is read by its condition, so that a row with a NULL key, reached
/// through the parent alone, still fails the request rather than go unseen.
#[tokio::test(flavor = "multi_thread")]
async fn a_mysql_row_with_a_null_key_reached_through_its_parent_fails_the_request() {
    let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE p (id INT PRIMARY KEY, email VARCHAR(100));
         CREATE TABLE n (ref VARCHAR(20), p_id INT, email VARCHAR(100));
         CREATE TABLE k (id INT PRIMARY KEY, p_id INT, email VARCHAR(100));
         INSERT INTO p VALUES (1, 'z@example.org'), (2, 'y@example.org');
         INSERT INTO n VALUES ('n1', 1, 'z@example.org'), (NULL, 1, 'other@example.org'), ('n2', 2, 'y@example.org');
         INSERT INTO k VALUES (1, 1, 'other@example.org'), (2, 2, 'z@example.org'), (3, 2, 'y@example.org')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let table = |name: &str, key: &str| {
        let mut table = serde_json::json!({
            "name": name, "key": key,
            "identities": { "email": "email" }, "columns": { "email": "contact" }
        });
        if name != "p" {
            table["parent"] = serde_json::json!({ "table": "p", "column": "p_id" });
        }
        table
    };
    let config = with_tables(
        &db.url,
        serde_json::json!([table("p", "id"), table("n", "ref"), table("k", "id")]),
    );
    let sys = rt.prepare(&config).unwrap();
    let error = rt
        .locate(&plugin, &sys, &subject(&[("email", "z@example.org")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("a row of n") && m.contains("(NULL)")),
        "{error:?}"
    );
    // The NOT NULL key of k, read by the keys gathered: its own row and its parent's.
    let mut found: Vec<(String, String)> = rt
        .locate(&plugin, &sys, &subject(&[("email", "y@example.org")]))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.collection, r.key))
        .collect();
    found.sort();
    let expected = [("k", "2"), ("k", "3"), ("n", "n2"), ("p", "2")];
    assert_eq!(found, expected.map(|(t, k)| (t.to_owned(), k.to_owned())));
}

/// On MySQL/MariaDB a change by key reaches exactly the subject's rows whatever the key's
/// type: a DECIMAL key past 15 digits (which a list of texts compares as floating-point
/// numbers, taking a neighbour's row) and a TIMESTAMP key (which the host reads in RFC
/// 3339, finding no row) are changed one by one as the database writes them; a FLOAT key,
/// whose text does not name its row, is refused with its path; and rows a cascade
/// deleted within the erasure are reported erased.
#[tokio::test(flavor = "multi_thread")]
async fn mysql_changes_by_key_reach_exactly_the_subject_s_rows() {
    let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE d4 (k DECIMAL(30,0) PRIMARY KEY, email VARCHAR(100), note VARCHAR(100), KEY(email));
         INSERT INTO d4 VALUES (1, 'a@x.org', 'n'), (2, 'a@x.org', 'n'), (3, 'a@x.org', 'n'),
           (12345678901234567890, 'a@x.org', 'n'), (12345678901234567891, 'b@x.org', 'n');
         CREATE TABLE ts (k TIMESTAMP NOT NULL PRIMARY KEY, email VARCHAR(100), note VARCHAR(50));
         INSERT INTO ts VALUES ('2024-01-01 00:00:00', 'a@x.org', 'n'), ('2024-01-02 00:00:00', 'a@x.org', 'n'), ('2024-01-03 00:00:00', 'b@x.org', 'n');
         CREATE TABLE cm (id INT PRIMARY KEY, parent_id INT NULL, email VARCHAR(100),
           FOREIGN KEY (parent_id) REFERENCES cm(id) ON DELETE CASCADE);
         INSERT INTO cm VALUES (1, NULL, 'a@x.org'), (2, 1, 'a@x.org'), (3, NULL, 'b@x.org');
         CREATE TABLE fl (k FLOAT PRIMARY KEY, email VARCHAR(100));
         INSERT INTO fl VALUES (0.1, 'a@x.org');
         CREATE TABLE ti (k TINYINT(1) PRIMARY KEY, email VARCHAR(100), note VARCHAR(100));
         INSERT INTO ti VALUES (1, 'b@x.org', 'n'), (2, 'a@x.org', 'n')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let table = |name: &str, key: &str, erase: serde_json::Value| {
        serde_json::json!({
            "name": name, "key": key, "identities": { "email": "email" },
            "columns": { "email": "contact", "note": "contact" }, "erase": erase
        })
    };
    let masked = serde_json::json!({ "action": "anonymise", "columns": { "note": "erased-key" } });
    let config = with_tables(
        &db.url,
        serde_json::json!([
            table("d4", "k", masked.clone()),
            table("ts", "k", masked.clone()),
            table("ti", "k", masked)
        ]),
    );
    let sys = rt.prepare(&config).unwrap();
    let a = subject(&[("email", "a@x.org")]);
    let change = Change {
        collection: None,
        field: "note".into(),
        value: "\"changed\"".into(),
    };
    // (A TINYINT(1) key is read by the driver as a boolean, which compares equal to 1.)
    let rectified = rt.rectify(&plugin, &sys, &a, &[change]).await.unwrap();
    assert_eq!(rectified.changed.len(), 7, "{rectified:?}");
    assert_eq!(db.count("d4", "note = 'changed'").await, 4);
    assert_eq!(db.count("ts", "note = 'changed'").await, 2);
    assert_eq!(db.count("ti", "note = 'changed' AND k = 2").await, 1);
    let erased = rt.erase(&plugin, &sys, &a).await.unwrap();
    assert_eq!(erased.len(), 7, "{erased:?}");
    assert_eq!(db.count("ts", "note LIKE 'erased-ts-%'").await, 2);
    assert_eq!(db.count("d4", "note LIKE 'erased-d4-%'").await, 4);
    assert_eq!(db.count("ti", "note = 'erased-ti-2'").await, 1);
    for other in ["d4", "ts", "ti"] {
        assert_eq!(
            db.count(other, "email = 'b@x.org' AND note = 'n'").await,
            1,
            "{other}"
        );
    }

    // A row its parent's deletion cascaded to, in the same statement.
    let config = with_tables(
        &db.url,
        serde_json::json!([{
            "name": "cm", "key": "id", "identities": { "email": "email" },
            "columns": { "email": "contact" }
        }]),
    );
    let sys = rt.prepare(&config).unwrap();
    let erased = rt.erase(&plugin, &sys, &a).await.unwrap();
    assert_eq!(erased.len(), 2, "{erased:?}");
    assert_eq!(db.count("cm", "1 = 1").await, 1);

    let config = with_tables(
        &db.url,
        serde_json::json!([{
            "name": "fl", "key": "k", "identities": { "email": "email" },
            "columns": { "email": "contact" }
        }]),
    );
    let sys = rt.prepare(&config).unwrap();
    let error = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.dataset.tables[0].key:") && m.contains("float")),
        "{error:?}"
    );
}

/// A plugin's statement that outlives its call is stopped on the server, and a call that
/// must only read cannot write, whatever it sends.
async fn contained(var: &str, sleep: &str, running: (&str, &str)) {
    let Some(db) = ServerDb::create(var).await else {
        return;
    };
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT); INSERT INTO people VALUES (1, 'kept@example.org')")
        .await;
    let (rt, plugin, sys) = testkit(&db.url, "server", Some(1000));
    let started = std::time::Instant::now();
    let error = rt
        .locate(
            &plugin,
            &sys,
            &subject(&[("behaviour", "sql"), ("statement", sleep)]),
        )
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_000 + 2_000),
        "{:?}",
        started.elapsed()
    );
    // The statement is gone from the server within moments, not after its 25 s.
    assert_eq!(
        until_none(&db, running.0, running.1).await,
        0,
        "the plugin's statement still runs on the server"
    );

    // The refusals do not depend on the deadline: a system with the default one, so that
    // a busy machine does not turn a refusal into a timeout.
    let (rt, plugin, sys) = testkit(&db.url, "server", None);
    for (behaviour, statement) in [
        ("sql", "DELETE FROM people"),
        ("sql-write", "DELETE FROM people"),
        ("sql-write", "COMMIT\nDELETE FROM people"),
        ("sql", "SELECT 1; DELETE FROM people"),
        // MySQL commits implicitly before DDL, which would end a READ ONLY transaction.
        ("sql", "CREATE TABLE stolen (x INTEGER)"),
        (
            "sql",
            "/* a comment first */ CREATE TABLE stolen (x INTEGER)",
        ),
    ] {
        let error = rt
            .locate(
                &plugin,
                &sys,
                &subject(&[("behaviour", behaviour), ("statement", statement)]),
            )
            .await
            .expect_err(statement);
        assert!(!error.is_retryable(), "{statement}: {error:?}");
    }
    assert_eq!(db.count("people", "1 = 1").await, 1, "nothing was written");
    assert_eq!(
        db.count("information_schema.tables", "table_name = 'stolen'")
            .await,
        0,
        "no table was created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_statement_is_contained_on_postgresql() {
    contained(
        "OUBLI_TEST_POSTGRES_URL",
        "SELECT pg_sleep(25)",
        (
            "pg_stat_activity",
            "query LIKE 'SELECT pg_sleep(25)%' AND state = 'active'",
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_statement_is_contained_on_mysql() {
    contained(
        "OUBLI_TEST_MYSQL_URL",
        "SELECT SLEEP(25)",
        (
            "information_schema.processlist",
            "info LIKE 'SELECT SLEEP(25)%'",
        ),
    )
    .await;
}

/// The pool hands its connections out untested, and a session's first round trip tests
/// them: connections the server ended while they sat in the pool are replaced, and the
/// calls after go on as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_connection_ended_while_pooled_is_replaced() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let (rt, plugin, sys) = testkit(&db.url, "ended", None);
    let backend = || {
        let (rt, plugin, sys) = (rt.clone(), plugin.clone(), sys.clone());
        async move {
            rows(&rt, &plugin, &sys, "SELECT pg_backend_pid()")
                .await
                .remove(0)
        }
    };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    for _ in 0..2 {
        // Calls at once leave several connections in the pool…
        let calls: Vec<_> = (0..4).map(|_| tokio::spawn(backend())).collect();
        let mut served = Vec::new();
        for call in calls {
            served.push(call.await.unwrap());
        }
        // … which the server ends (as a restart would).
        db.execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await;
        for _ in 0..4 {
            let next = backend().await;
            assert!(!served.contains(&next), "{next} was ended: {served:?}");
        }
    }
}

/// What a call sets on its PostgreSQL session (a setting, the schema search path) ends
/// with the call: the next calls, on the same pooled connections, start from the
/// server's defaults.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_session_s_settings_end_with_its_call() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let (rt, plugin, sys) = testkit(&db.url, "settings", None);
    let read = |statement| rows(&rt, &plugin, &sys, statement);
    let defaults =
        read("SELECT current_setting('application_name') || '|' || current_setting('search_path')")
            .await;
    assert_eq!(
        read("SELECT set_config('application_name', 'left by a plugin', false)").await,
        ["left by a plugin"]
    );
    rt.erase(
        &plugin,
        &sys,
        &subject(&[
            ("behaviour", "sql-write"),
            ("statement", "SET search_path = nowhere"),
        ]),
    )
    .await
    .unwrap();
    for _ in 0..8 {
        assert_eq!(
            read("SELECT current_setting('application_name') || '|' || current_setting('search_path')").await,
            defaults
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_catches_its_cancel_on_postgresql_is_ended_at_the_deadline() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    stubborn_plugin_is_ended(&db).await;
}

/// The host's own statements name `pg_catalog`'s functions: a `search_path` that puts
/// look-alikes first (a schema the plugin's credentials could write, set as their
/// role's or database's default) changes neither the backend the host records for the
/// call nor the one it ends at the deadline.
#[tokio::test(flavor = "multi_thread")]
async fn look_alike_functions_first_in_the_search_path_do_not_save_a_stopped_plugin() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    db.execute(&format!(
        "CREATE SCHEMA evil;
         CREATE FUNCTION evil.pg_backend_pid() RETURNS integer LANGUAGE sql AS 'SELECT 1';
         CREATE FUNCTION evil.pg_terminate_backend(integer) RETURNS boolean LANGUAGE sql AS 'SELECT true';
         ALTER DATABASE {name} SET search_path = evil, pg_catalog, public"
    ))
    .await;
    stubborn_plugin_is_ended(&db).await;
}

/// A plugin whose statement catches every cancel is ended on the server at its deadline.
async fn stubborn_plugin_is_ended(db: &ServerDb) {
    let (rt, plugin, sys) = testkit(&db.url, "stubborn", Some(1000));
    // A statement timeout or a cancel request is caught and the loop goes on.
    let stubborn = "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(60); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$";
    let error = rt
        .erase(
            &plugin,
            &sys,
            &subject(&[("behaviour", "sql-write"), ("statement", stubborn)]),
        )
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(
        until_none(db, "pg_stat_activity", "query LIKE 'DO $$ BEGIN LOOP%'").await,
        0,
        "the plugin's backend still runs on the server"
    );
}

/// A read-only call's statements run in one READ ONLY transaction, begun with the
/// session: `write` (a statement that deletes every row of `people`, starting with
/// `SELECT` or `WITH`) is refused before and after a statement that failed (which on
/// PostgreSQL aborted the transaction, and on MySQL/MariaDB may have ended it, as a
/// deadlock does: the call gets a new one), the call reads on, and asks `settings`
/// where there are some that tell (each must be `on`, or `1`); the next read-write call
/// writes.
async fn stays_read_only_after_an_error(
    db: &ServerDb,
    write: &str,
    failing: &str,
    settings: Option<&str>,
) {
    use oubli::runtime::bindings::sql::{Statement, Value};
    use oubli::runtime::sql::{Access, SqlTarget};
    use std::time::{Duration, Instant};
    let statement = |sql: &str| Statement {
        sql: sql.into(),
        params: Vec::new(),
    };
    let write = statement(write);
    let target = std::sync::Arc::new(SqlTarget::new(&db.url).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reading = target.session(Access::ReadOnly, deadline);
    let refused = reading.query(&write, 10).await.unwrap_err();
    assert!(
        format!("{refused:?}").to_lowercase().contains("read-only"),
        "{refused:?}"
    );
    reading.query(&statement(failing), 10).await.unwrap_err();
    if let Some(settings) = settings {
        let set = reading.query(&statement(settings), 10).await.unwrap();
        for value in &set.rows[0] {
            assert!(
                matches!(value, Value::Text(t) if t == "on" || t == "1")
                    || *value == Value::Integer(1),
                "{set:?}"
            );
        }
    }
    let refused = reading.query(&write, 10).await.unwrap_err();
    assert!(
        format!("{refused:?}").to_lowercase().contains("read-only"),
        "{refused:?}"
    );
    let read = reading
        .query(&statement("SELECT email FROM people"), 10)
        .await
        .unwrap();
    assert_eq!(read.rows.len(), 1);
    reading.finish().await;
    assert_eq!(db.count("people", "1 = 1").await, 1);

    let mut writing = target.session(Access::ReadWrite, deadline);
    let gone = writing.query(&write, 10).await.unwrap();
    assert_eq!(gone.rows[0], [Value::Integer(1)]);
    writing.finish().await;
    assert_eq!(db.count("people", "1 = 1").await, 0);
}

/// On PostgreSQL, where the new transaction has a statement timeout again.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_postgresql_call_stays_read_only_after_an_error() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT); INSERT INTO people VALUES (1, 'kept@example.org')")
        .await;
    stays_read_only_after_an_error(
        &db,
        "WITH gone AS (DELETE FROM people RETURNING id) SELECT count(*) FROM gone",
        "SELECT 1 / 0",
        Some("SELECT current_setting('transaction_read_only'), CASE WHEN current_setting('statement_timeout') <> '0' THEN 'on' END"),
    )
    .await;
}

/// On MySQL/MariaDB, the write a stored function that deletes, called from a `SELECT`.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_mysql_call_stays_read_only_after_an_error() {
    let Some(db) = ServerDb::create("OUBLI_TEST_MYSQL_URL").await else {
        return;
    };
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT); INSERT INTO people VALUES (1, 'kept@example.org')")
        .await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE FUNCTION wipe() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM people; RETURN ROW_COUNT(); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    stays_read_only_after_an_error(
        &db,
        "SELECT wipe()",
        "SELECT * FROM missing_table",
        // (No variable tells the current transaction's mode: the refused write tells.)
        None,
    )
    .await;
}

/// On PostgreSQL a connection keeps its prepared statements between calls: one bound
/// with parameters of other types than it was prepared with (a number, then a text), or
/// whose result's types changed since (an `ALTER TABLE`), is prepared again and run, in
/// a read-only call, a read-write one and a transaction, instead of failing the call.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgresql_statement_prepared_for_other_types_is_prepared_again() {
    use oubli::runtime::bindings::sql::{Statement, Value};
    use oubli::runtime::sql::{Access, SqlTarget};
    use std::time::{Duration, Instant};
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, code INTEGER); INSERT INTO people VALUES (1, 7)")
        .await;
    let target = std::sync::Arc::new(SqlTarget::new(&db.url).unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let echo = |value: Value| Statement {
        sql: "SELECT CAST($1 AS TEXT)".into(),
        params: vec![value],
    };
    let read = Statement {
        sql: "SELECT code FROM people".into(),
        params: Vec::new(),
    };
    let update = |value: Value| Statement {
        sql: "UPDATE people SET code = $1".into(),
        params: vec![value],
    };
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let mut session = target.session(access, deadline);
        let rows = session.query(&echo(Value::Integer(7)), 10).await.unwrap();
        assert_eq!(rows.rows[0], [Value::Text("7".into())]);
        let rows = session
            .query(&echo(Value::Text("x".into())), 10)
            .await
            .unwrap();
        assert_eq!(rows.rows[0], [Value::Text("x".into())], "{access:?}");
        session.finish().await;
    }
    // The pooled connection kept `read` prepared for an integer column.
    let mut session = target.session(Access::ReadWrite, deadline);
    assert_eq!(
        session.query(&read, 10).await.unwrap().rows[0],
        [Value::Integer(7)]
    );
    session
        .transaction(&[update(Value::Integer(8))])
        .await
        .unwrap();
    session.finish().await;
    db.execute("ALTER TABLE people ALTER COLUMN code TYPE TEXT")
        .await;
    let mut session = target.session(Access::ReadOnly, deadline);
    assert_eq!(
        session.query(&read, 10).await.unwrap().rows[0],
        [Value::Text("8".into())]
    );
    session.finish().await;
    let mut session = target.session(Access::ReadWrite, deadline);
    let counts = session
        .transaction(&[update(Value::Text("AB-9".into()))])
        .await
        .unwrap();
    assert_eq!(counts, [1]);
    session.finish().await;
    assert_eq!(db.count("people", "code = 'AB-9'").await, 1);
}

/// On PostgreSQL a key of a built-in type whose catalogue name is the SQL standard's
/// (`double precision`, `timestamp with time zone`, `boolean`) is cast to that type when
/// a row is changed or read back by its key: quoted, that name was no type's, and every
/// rectification of such a table failed.
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_keys_of_standard_named_types_change_and_read_back_their_rows() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE dp (k DOUBLE PRECISION PRIMARY KEY, email TEXT, note TEXT);
         INSERT INTO dp VALUES (0.5, 'a@x.org', 'n'), (1.5, 'b@x.org', 'n');
         CREATE TABLE tz (k TIMESTAMP WITH TIME ZONE PRIMARY KEY, email TEXT, note TEXT);
         INSERT INTO tz VALUES ('2024-01-01 10:00:00+00', 'a@x.org', 'n'), ('2024-01-02 10:00:00+00', 'b@x.org', 'n')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let table = |name: &str| {
        serde_json::json!({
            "name": name, "key": "k", "identities": { "email": "email" },
            "columns": { "email": "contact", "note": "contact" }
        })
    };
    let config = with_tables(&db.url, serde_json::json!([table("dp"), table("tz")]));
    let sys = rt.prepare(&config).unwrap();
    let a = subject(&[("email", "a@x.org")]);
    let change = Change {
        collection: None,
        field: "note".into(),
        value: "\"changed\"".into(),
    };
    let rectified = rt.rectify(&plugin, &sys, &a, &[change]).await.unwrap();
    assert_eq!(rectified.changed.len(), 2, "{rectified:?}");
    assert_eq!(
        db.count("dp", "note = 'changed' AND email = 'a@x.org'")
            .await,
        1
    );
    assert_eq!(
        db.count("tz", "note = 'changed' AND email = 'a@x.org'")
            .await,
        1
    );
    assert_eq!(
        db.count("dp", "note = 'changed'").await + db.count("tz", "note = 'changed'").await,
        2
    );
    let found = rt.locate(&plugin, &sys, &a).await.unwrap();
    let verified = rt.verify(&plugin, &sys, &a, &found).await.unwrap();
    assert!(
        verified
            .iter()
            .all(|v| matches!(&v.state, RecordState::Holds(f) if !f.is_empty())),
        "{verified:?}"
    );
}

/// A masked column that another table's key references with `ON UPDATE CASCADE`: that
/// table's rows (at the same depth) are deleted first, not given the mask as a new key
/// by the cascade, missed by their `DELETE` and reported deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_keyed_by_a_masked_column_is_deleted_before_the_mask_cascades() {
    let Some(db) = ServerDb::create("OUBLI_TEST_POSTGRES_URL").await else {
        return;
    };
    db.execute(
        "CREATE TABLE users (id INT PRIMARY KEY, email TEXT UNIQUE, note TEXT);
         CREATE TABLE letters (email TEXT PRIMARY KEY REFERENCES users(email) ON UPDATE CASCADE);
         INSERT INTO users VALUES (1, 'a@x.org', 'n'), (2, 'b@x.org', 'n');
         INSERT INTO letters VALUES ('a@x.org'), ('b@x.org')",
    )
    .await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_sql");
    let config = with_tables(
        &db.url,
        serde_json::json!([
            { "name": "users", "key": "id", "identities": { "email": "email" },
              "columns": { "email": "contact" },
              "erase": { "action": "anonymise", "columns": { "email": "erased-key" } } },
            { "name": "letters", "key": "email", "identities": { "email": "email" },
              "columns": { "email": "contact" } }
        ]),
    );
    let sys = rt.prepare(&config).unwrap();
    let a = subject(&[("email", "a@x.org")]);
    let erased = rt.erase(&plugin, &sys, &a).await.unwrap();
    assert_eq!(erased.len(), 2, "{erased:?}");
    assert_eq!(db.count("letters", "1 = 1").await, 1);
    assert_eq!(db.count("letters", "email = 'b@x.org'").await, 1);
    assert_eq!(db.count("users", "email = 'erased-users-1'").await, 1);
}
