//! The REST connector against json-server, a third-party REST application installed from
//! the npm registry (`tests/apps`) and started on loopback: a substring search that
//! returns other people, Link-header pages, JSON merge patches, and deletions that
//! cascade; and behind HTTP Basic authentication by express-basic-auth. Skipped unless
//! `OUBLI_TEST_JSON_SERVER` is set.

use oubli::runtime::{Change, RecordState, RuntimeError, SystemConfig};
use oubli_tests::{JsonServer, load, places, places_of, refusal, runtime, subject};
use serde_json::{Value, json};

fn db() -> Value {
    json!({
        "users": [
            { "id": 1, "email": "jane.doe@example.net", "name": "Jane Doe" },
            { "id": 2, "email": "e.doe@example.net", "name": "E. Doe" },
            { "id": 3, "email": "paul@example.net", "name": "Paul" },
        ],
        "subscriptions": [
            { "id": 20, "email": "e.doe@example.net", "list": "news" },
            { "id": 21, "email": "jane.doe@example.net", "list": "offers" },
            { "id": 22, "email": "e.doe@example.net", "list": "offers" },
        ],
        "addresses": [
            { "id": 10, "userId": 1, "street": "1 rue des Lilas" },
            { "id": 11, "userId": 2, "street": "2 rue des Lilas" },
            { "id": 12, "userId": 2, "street": "5 quai Gailleton" },
        ],
        "orders": [
            { "id": 40, "userId": 2, "total": 5 },
            { "id": 41, "userId": 1, "total": 7 },
        ],
        "notes": [
            { "id": 30, "author": "paul@example.net", "body": "Call E.Doe@example.net about the refund, then close." },
            { "id": 31, "author": "e.doe@example.net", "body": "My own note" },
            { "id": 32, "author": "paul@example.net", "body": "Nothing to see" },
        ],
    })
}

/// Users found by json-server's full-text `q` (a case-insensitive substring search),
/// one per page through the `Link` header; subscriptions by their exact `email` filter;
/// addresses, which hold no identity, through each user found (`/users/{id}/addresses`).
fn system(server: &JsonServer) -> SystemConfig {
    let mut config = SystemConfig::from_toml(
        r#"
name = "json-server"
[capabilities]
host = true
[capabilities.http]
allow = []
allow_private = true
"#,
    )
    .unwrap();
    config.capabilities.http.as_mut().unwrap().allow = vec![server.address.clone()];
    config.config.insert(
        "api".into(),
        json!({
            "base_url": server.url,
            "collections": [
                { "name": "users", "id": "id",
                  "search": { "path": "/users", "by": { "email": "q" },
                              "params": { "_page": "1", "_limit": "1" }, "pagination": { "style": "link" } },
                  "identities": { "email": "email" },
                  "fields": { "email": "contact", "name": "identity" },
                  "read": { "path": "/users/{id}" }, "update": { "path": "/users/{id}" },
                  "delete": { "path": "/users/{id}" } },
                { "name": "subscriptions", "id": "id",
                  "search": { "path": "/subscriptions", "by": { "email": "email" } },
                  "identities": { "email": "email" },
                  "fields": { "email": "contact", "list": "marketing" },
                  "read": { "path": "/subscriptions/{id}" },
                  "delete": { "path": "/subscriptions/{id}" } },
                { "name": "notes", "id": "id",
                  "search": { "path": "/notes", "by": { "email": "q" } },
                  "identities": { "email": "author" },
                  "fields": { "author": "contact", "body": "communications" },
                  "mentions": ["body"],
                  "read": { "path": "/notes/{id}" }, "update": { "path": "/notes/{id}" },
                  "delete": { "path": "/notes/{id}" } },
                { "name": "addresses", "id": "id",
                  "parent": { "collection": "users", "field": "id" },
                  "search": { "path": "/users/{parent}/addresses" },
                  "fields": { "street": "location" },
                  "read": { "path": "/addresses/{id}" },
                  "delete": { "path": "/addresses/{id}" } },
                { "name": "orders", "id": "id",
                  "parent": { "collection": "users", "field": "id", "key": "userId" },
                  "search": { "path": "/orders", "params": { "userId": "{parent}" } },
                  "fields": { "total": "purchases" },
                  "read": { "path": "/orders/{id}" },
                  "delete": { "path": "/orders/{id}" } },
            ],
        }),
    );
    config
}

fn ids(records: &[Value]) -> Vec<i64> {
    records.iter().filter_map(|r| r["id"].as_i64()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_server_gives_exactly_the_subjects_records_and_erases_them() {
    let Some(server) = JsonServer::start(&db()).await else {
        return;
    };
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&system(&server)).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("json-server connects");
    let who = subject(&[("email", "e.doe@example.net")]);

    // `q=e.doe@example.net` returns jane.doe@example.net too: only the exact one counts.
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let expected = places(&[
        ("users", "2"),
        ("subscriptions", "20"),
        ("subscriptions", "22"),
        ("addresses", "11"),
        ("addresses", "12"),
        ("orders", "40"),
        ("notes", "31"),
    ]);
    // Her records, and Paul's note that names her.
    let mut with_mention = expected.clone();
    with_mention.insert(("notes".to_owned(), "30".to_owned()));
    assert_eq!(
        places_of(found.iter().map(|r| (&r.collection, &r.key))),
        with_mention
    );
    let address = found.iter().find(|r| r.key == "11").unwrap();
    assert_eq!(address.via.as_deref(), Some("users/2"), "{address:?}");
    let mut exported = Vec::new();
    let mut cursor = None;
    loop {
        let page = rt.access(&plugin, &sys, &who, cursor.take()).await.unwrap();
        exported.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let (quoted, own): (Vec<_>, Vec<_>) = exported
        .iter()
        .partition(|r| r.collection == "notes (mentions of the subject)");
    assert_eq!(
        places_of(own.iter().map(|r| (&r.collection, &r.key))),
        expected,
        "each record once: {exported:?}"
    );
    assert_eq!(quoted.len(), 1, "{exported:?}");
    assert_eq!(quoted[0].key, "30");
    assert!(
        quoted[0].fields[0]
            .value
            .contains("E.Doe@example.net about the refund"),
        "{quoted:?}"
    );

    // The merge patch reaches the server whole.
    let change = Change {
        collection: Some("users".into()),
        field: "name".into(),
        value: json!("E. Doe-Martin").to_string(),
    };
    let rectified = rt.rectify(&plugin, &sys, &who, &[change]).await.unwrap();
    assert_eq!(rectified.changed.len(), 1, "{rectified:?}");
    let users = server.records("users").await;
    assert_eq!(users[1]["name"], "E. Doe-Martin");
    assert_eq!(users[1]["email"], "e.doe@example.net", "the rest kept");
    assert_eq!(users[0]["name"], "Jane Doe");

    // json-server deletes a user's addresses with the user: they are gone (404) when
    // their turn comes, which is their end state all the same.
    let erased = rt.erase(&plugin, &sys, &who).await.unwrap();
    assert_eq!(erased.len(), 8, "{erased:?}");
    assert_eq!(ids(&server.records("orders").await), [41]);
    let notes = server.records("notes").await;
    assert_eq!(ids(&notes), [30, 32], "her note deleted, Paul's kept");
    assert_eq!(
        notes[0]["body"], "Call [erased] about the refund, then close.",
        "only the mention replaced"
    );
    assert_eq!(
        ids(&server.records("addresses").await),
        [10],
        "Jane's stays"
    );
    assert_eq!(
        ids(&server.records("users").await),
        [1, 3],
        "Jane and Paul stay"
    );
    assert_eq!(ids(&server.records("subscriptions").await), [21]);
    let verified = rt.verify(&plugin, &sys, &who, &found).await.unwrap();
    for v in &verified {
        let expected = if v.key == "30" {
            RecordState::Cleared(vec!["body".into()])
        } else {
            RecordState::Gone
        };
        assert_eq!(v.state, expected, "{v:?}");
    }
    let swept = rt.sweep(&plugin, &sys, &who, 100).await.unwrap();
    assert!(swept.hits.is_empty() && !swept.cut_short, "{swept:?}");

    // Erased again (a retry): nothing left, nothing else touched.
    let again = rt.erase(&plugin, &sys, &who).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(ids(&server.records("users").await), [1, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_server_misconfigured_is_refused_at_connect_time() {
    let Some(server) = JsonServer::start(&db()).await else {
        return;
    };
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");

    let mut config = system(&server);
    config.config["api"]["collections"][1]["search"]["path"] = json!("/subscription");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[1].search.path:") && m.contains("404")),
        "{error:?}"
    );

    // The substring search without a field to check its results against.
    let mut config = system(&server);
    config.config["api"]["collections"][0]
        .as_object_mut()
        .unwrap()
        .remove("identities");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[0].identities:")),
        "{error:?}"
    );

    // Nothing listens on the configured port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = system(&server);
    config.config["api"]["base_url"] = json!(format!("http://127.0.0.1:{port}"));
    config.capabilities.http.as_mut().unwrap().allow = vec![format!("127.0.0.1:{port}")];
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.starts_with("config.api.base_url:")),
        "{error:?}"
    );
    // A results path the answers do not have: refused, not "nothing found".
    let mut config = system(&server);
    config.config["api"]["collections"][1]["search"]["results"] = json!("data");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[1].search:") && m.contains("\"data\"")),
        "{error:?}"
    );

    // A child collection whose search does not use its parent.
    let mut config = system(&server);
    config.config["api"]["collections"][3]["search"]["path"] = json!("/addresses");
    config.config["api"]["collections"][3]["parent"]["key"] = json!("userId");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[3].search:") && m.contains("{parent}")),
        "{error:?}"
    );
    // {parent} only in the parameters, without the child's field to check it against.
    let mut config = system(&server);
    config.config["api"]["collections"][4]["parent"]
        .as_object_mut()
        .unwrap()
        .remove("key");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[4].parent.key:")),
        "{error:?}"
    );
    assert_eq!(server.records("users").await.len(), 3, "nothing changed");
}

/// json-server behind HTTP Basic authentication (express-basic-auth): the connector's
/// `auth.basic` gets in with the password from a secret, and a wrong password is refused
/// when the system is connected.
#[tokio::test(flavor = "multi_thread")]
async fn json_server_behind_basic_auth_takes_the_secret_password() {
    let password = "s3cret-pass+word";
    let Some(server) = JsonServer::start_with(&db(), Some(password)).await else {
        return;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let with_password = |secret: &str| {
        std::fs::write(file.path(), secret).unwrap();
        let mut config = system(&server);
        config.config["api"]["auth"] =
            json!({ "basic": { "username": "oubli", "password_secret": "api_password" } });
        config.secrets = std::collections::BTreeMap::from([(
            "api_password".to_owned(),
            oubli::runtime::system::SecretRef {
                env: None,
                file: Some(file.path().display().to_string()),
                hosts: vec!["127.0.0.1".into()],
            },
        )]);
        rt.prepare(&config).unwrap()
    };

    let sys = with_password(password);
    rt.validate(&plugin, &sys)
        .await
        .expect("the password is right");
    let found = rt
        .locate(&plugin, &sys, &subject(&[("email", "e.doe@example.net")]))
        .await
        .unwrap();
    assert!(
        found
            .iter()
            .any(|r| r.collection == "users" && r.key == "2"),
        "{found:?}"
    );

    let sys = with_password("not-the-password");
    let error = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.starts_with("config.api.auth:") && m.contains("401")),
        "{error:?}"
    );
    assert!(!error.to_string().contains(password), "{error}");
}

/// An identity in the path (`/users/{identity}`): json-server answers the one record, or
/// 404 for no one, which is "nothing found" there and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn json_server_looked_up_by_an_identity_in_the_path() {
    let Some(server) = JsonServer::start(&db()).await else {
        return;
    };
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let mut config = system(&server);
    config.config["api"]["collections"] = json!([
        { "name": "users", "id": "id",
          "search": { "path": "/users/{identity}", "by": { "user-id": "" } },
          "identities": { "user-id": "id" },
          "fields": { "email": "contact", "name": "identity" },
          "read": { "path": "/users/{id}" }, "delete": { "path": "/users/{id}" } },
    ]);
    let sys = rt.prepare(&config).unwrap();
    rt.validate(&plugin, &sys).await.unwrap();
    let found = rt
        .locate(&plugin, &sys, &subject(&[("user-id", "2")]))
        .await
        .unwrap();
    assert_eq!(
        places_of(found.iter().map(|r| (&r.collection, &r.key))),
        places(&[("users", "2")])
    );
    let nobody = rt
        .locate(&plugin, &sys, &subject(&[("user-id", "99")]))
        .await
        .unwrap();
    assert!(nobody.is_empty(), "{nobody:?}");
    // A value that would climb the path stays one segment.
    let climbing = rt
        .locate(&plugin, &sys, &subject(&[("user-id", "../users")]))
        .await
        .unwrap();
    assert!(climbing.is_empty(), "{climbing:?}");

    // Paged, a lookup that answers one record would ask for page after page.
    let mut paged = config.clone();
    paged.config["api"]["collections"][0]["search"]["pagination"] =
        json!({ "style": "page", "param": "page" });
    let error = refusal(&rt, &plugin, &paged).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[0].search.pagination:")),
        "{error:?}"
    );

    config.config["api"]["collections"][0]["search"]["by"] = json!({ "user-id": "id" });
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[0].search:")),
        "{error:?}"
    );
}

/// A retention rule of the REST connector, run by the real service against json-server:
/// the former customers whose deactivation is more than 30 days old are erased with
/// their orders (none early, no active customer, none whose date is missing or
/// unreadable), whether the API filters by date or ignores the filter, and the run's
/// destruction report counts them.
#[tokio::test(flavor = "multi_thread")]
async fn json_server_customers_past_their_retention_period_are_erased_by_a_rule() {
    let ago = |days: i64| {
        (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let db = json!({
        "customers": [
            { "id": 1, "email": "old.former@example.net", "status": "former", "deactivatedAt": ago(40) },
            { "id": 2, "email": "recent.former@example.net", "status": "former", "deactivatedAt": ago(10) },
            { "id": 3, "email": "old.active@example.net", "status": "active", "deactivatedAt": ago(40) },
            { "id": 4, "email": "never@example.net", "status": "former", "deactivatedAt": null },
            { "id": 5, "email": "garbled@example.net", "status": "former", "deactivatedAt": "someday" },
            { "id": 6, "email": "long.gone@example.net", "status": "former",
              "deactivatedAt": (chrono::Utc::now() - chrono::Duration::days(400)).format("%Y-%m-%d").to_string() },
            { "id": 7, "email": "just.in@example.net", "status": "former", "deactivatedAt": ago(29) },
            // A placeholder for "not set", which the server's filter lets through.
            { "id": 8, "email": "placeholder@example.net", "status": "former", "deactivatedAt": "1970-01-01T00:00:00Z" },
        ],
        "orders": [
            { "id": 40, "customerId": 1, "total": 5 },
            { "id": 41, "customerId": 2, "total": 7 },
            { "id": 42, "customerId": 6, "total": 9 },
        ],
    });
    let Some(server) = JsonServer::start(&db).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = oubli_tests::Service::spawn_app(dir.path(), &[]).await;
    let demo = service.demo.clone();
    let controller = demo.controller_id.clone();
    let mut config = SystemConfig::from_toml(
        "name = \"shop-api\"\n[capabilities]\nhost = true\n[capabilities.http]\nallow = []\nallow_private = true\n",
    )
    .unwrap();
    config.capabilities.http.as_mut().unwrap().allow = vec![server.address.clone()];
    let rule = |params: Value| {
        json!({ "collection": "customers", "field": "deactivatedAt", "after_days": 30, "params": params,
                "when": { "field": "status", "equals": "former" } })
    };
    let api = json!({
        "base_url": server.url,
        "collections": [
            { "name": "customers", "id": "id",
              "search": { "path": "/customers", "by": { "email": "email", "customer-id": "id" },
                          "pagination": { "style": "page", "param": "_page", "size_param": "_limit", "size": 2 } },
              "identities": { "email": "email", "customer-id": "id" },
              "fields": { "email": "contact", "status": "account" },
              "read": { "path": "/customers/{id}" }, "delete": { "path": "/customers/{id}" } },
            { "name": "orders", "id": "id",
              "parent": { "collection": "customers", "field": "id", "key": "customerId" },
              "search": { "path": "/orders", "params": { "customerId": "{parent}" } },
              "fields": { "total": "purchases" },
              "read": { "path": "/orders/{id}" }, "delete": { "path": "/orders/{id}" } },
        ],
        // json-server compares `deactivatedAt_lte` as text, which ISO 8601 allows; the
        // second rule asks for everyone, and the connector's own check decides.
        "retention": {
            "former-customers": rule(json!({ "deactivatedAt_lte": "{cutoff}" })),
            "unfiltered": rule(json!({})),
        },
    });
    let digest = service.builtin_digest(&demo.admin, "rest").await;
    let connect = |api: Value| json!({ "name": "shop-api", "plugin": digest, "capabilities": config.capabilities, "config": { "api": api } });
    // A rule on records an erasure keeps is refused when the system is connected.
    let mut kept = api.clone();
    kept["collections"][0]["erase"] = json!({ "action": "retain", "legal_basis": "Art. 17(3)(b)" });
    kept["collections"][0]["update"] = json!({ "path": "/customers/{id}" });
    let (status, refused) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &demo.admin,
            connect(kept),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["field"], "config.api.retention.former-customers.collection",
        "{refused}"
    );
    let (status, connected) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &demo.admin,
            connect(api.clone()),
        )
        .await;
    assert_eq!(status, 201, "{connected}");
    let system_id = connected["id"].as_str().unwrap().to_owned();

    let rules = format!("/v1/controllers/{controller}/retention-rules");
    for name in ["former-customers", "unfiltered"] {
        let (status, set) = service
            .post(
                &rules,
                &demo.admin,
                json!({ "system_id": system_id, "rule": name, "every_minutes": 60 }),
            )
            .await;
        assert_eq!(status, 201, "{set}");
        let id = set["id"].as_str().unwrap().to_owned();
        let (status, dry) = service
            .post(&format!("{rules}/{id}/dry-run"), &demo.admin, json!({}))
            .await;
        assert_eq!(status, 200, "{dry}");
        // Customers 1 and 6, each named by its id (not by an address someone may share).
        assert_eq!(dry["subjects"], 2, "{name}: {dry}");
        assert_eq!(
            dry["identity_kinds"],
            json!({ "customer-id": 2 }),
            "{name}: {dry}"
        );
    }
    let (status, _) = service
        .post(
            &rules,
            &demo.admin,
            json!({ "system_id": system_id, "rule": "former-customers", "every_minutes": 60, "enabled": true }),
        )
        .await;
    assert_eq!(status, 201);
    let runs_path = format!("/v1/controllers/{controller}/retention-runs");
    let runs = service
        .poll(&runs_path, &demo.admin, |r| {
            r["items"][0]["report_status"] == "issued"
        })
        .await;
    let run = &runs["items"][0];
    assert_eq!(
        (&run["expired"], &run["filed"]),
        (&json!(2), &json!(2)),
        "{run}"
    );
    assert_eq!(ids(&server.records("customers").await), [2, 3, 4, 5, 7, 8]);
    assert_eq!(ids(&server.records("orders").await), [41]);
    let (status, report) = service
        .get(
            &format!("{runs_path}/{}/report", run["id"].as_str().unwrap()),
            &demo.admin,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let collections = &report["certificate"]["systems"][0]["collections"];
    let deleted = |name: &str| {
        collections
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["deleted"].clone())
    };
    assert_eq!(deleted("customers"), Some(json!(2)), "{report}");
    assert_eq!(deleted("orders"), Some(json!(2)), "{report}");
    // A parameter that is the pagination's is refused when the system is connected; a
    // field the records do not have when the rule is set: named, never "no one expired".
    let mut clashing = api.clone();
    clashing["retention"]["former-customers"]["params"] = json!({ "_page": "{cutoff}" });
    let (status, refused) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &demo.admin,
            connect(clashing),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["field"], "config.api.retention.former-customers.params",
        "{refused}"
    );
    let mut mistyped = api.clone();
    mistyped["retention"]["former-customers"]["field"] = json!("deactivatedat");
    let mut second = connect(mistyped);
    second["name"] = json!("shop-api-mistyped");
    let (status, other) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &demo.admin,
            second,
        )
        .await;
    assert_eq!(status, 201, "{other}");
    let (status, refused) = service
        .post(
            &rules,
            &demo.admin,
            json!({ "system_id": other["id"], "rule": "former-customers", "every_minutes": 60 }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("rule")),
        "{refused}"
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("config.api.retention.former-customers.field"),
        "{refused}"
    );
    // An unknown rule is the configuration's error, named.
    let (status, refused) = service
        .post(
            &rules,
            &demo.admin,
            json!({ "system_id": system_id, "rule": "formr", "every_minutes": 60 }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("rule")),
        "{refused}"
    );
}
