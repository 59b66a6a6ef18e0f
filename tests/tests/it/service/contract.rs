//! Contract 0.2's evidence through the service: an erasure read back by key and swept,
//! a plugin that lies about its erasure, leftovers in another spelling or in free text,
//! and a plugin built with the 0.1 SDK erasing in the same service.

use oubli_tests::{Service, count};
use serde_json::{Value, json};

/// A controller with two systems: `people` on the evidence kit (contract 0.2, verify and
/// sweep) and `newsletter` on a plugin built with the SDK 0.1; each with a SQLite
/// database of its own in `dir`.
struct Setup {
    dpo: String,
    controller: String,
    people: std::path::PathBuf,
    newsletter: std::path::PathBuf,
}

async fn database(path: &std::path::Path, script: &str) {
    use sqlx::Connection;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
    sqlx::raw_sql(script).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

async fn setup(service: &Service, dir: &std::path::Path) -> Setup {
    let admin = service.demo.admin.clone();
    let people = dir.join("people.db");
    database(
        &people,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL, visible INTEGER NOT NULL DEFAULT 1); \
         CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); \
         INSERT INTO people (id, email) VALUES (1, 'jane@example.org'), (2, 'john@example.org');",
    )
    .await;
    let newsletter = dir.join("newsletter.db");
    database(
        &newsletter,
        "CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT NOT NULL); \
         INSERT INTO subscribers VALUES (7, 'jane@example.org'), (8, 'john@example.org');",
    )
    .await;
    let (_, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Two Contracts", "auto_approve": true }),
        )
        .await;
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();
    for (name, file, db) in [
        ("people", "oubli_evidencekit", &people),
        ("newsletter", "oubli_compat_newsletter", &newsletter),
    ] {
        let (status, plugin) = service.upload_plugin(&admin, name, file).await;
        assert_eq!(status, 201, "{plugin}");
        let (status, body) = service
            .post(
                &format!("/v1/controllers/{controller}/systems"),
                &admin,
                json!({ "name": name, "plugin": plugin["digest"],
                        "capabilities": { "sql": { "url": format!("sqlite://{}", db.display()) } } }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let dpo = service.token(&admin, "dpo", &controller).await;
    Setup {
        dpo,
        controller,
        people,
        newsletter,
    }
}

/// Submits an erasure and waits until it settles; returns the request.
async fn erase(service: &Service, setup: &Setup, identities: Value) -> Value {
    let body =
        json!({ "controller_id": setup.controller, "kind": "erasure", "identities": identities });
    let (status, request) = service.post("/v1/requests", &setup.dpo, body).await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap();
    service
        .poll(&format!("/v1/requests/{id}"), &setup.dpo, |r| {
            !matches!(r["status"].as_str(), Some("running" | "approved"))
        })
        .await
}

async fn task_error(service: &Service, setup: &Setup, id: &str, system: &str) -> String {
    let (_, tasks) = service
        .get(&format!("/v1/requests/{id}/tasks"), &setup.dpo)
        .await;
    tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["system_name"] == system)
        .and_then(|t| t["last_error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Both contracts erase in one service: the 0.2 plugin's records are read back by key
/// and swept, the 0.1 plugin's are verified by search, and the certificate says which.
#[tokio::test(flavor = "multi_thread")]
async fn plugins_of_both_contracts_erase_in_one_service_and_the_certificate_says_how_each_was_verified()
 {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let setup = setup(&service, dir.path()).await;
    let request = erase(
        &service,
        &setup,
        json!([{ "kind": "email", "value": "jane@example.org" }]),
    )
    .await;
    assert_eq!(request["status"], "completed", "{request}");
    assert_eq!(count(&setup.people, "people", "id = 1").await, 0);
    assert_eq!(count(&setup.newsletter, "subscribers", "id = 7").await, 0);
    assert_eq!(
        count(&setup.people, "people", "1 = 1").await,
        1,
        "john stays"
    );

    let id = request["id"].as_str().unwrap();
    let (status, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &setup.dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    let systems = signed["certificate"]["systems"].as_array().unwrap();
    let system = |name: &str| systems.iter().find(|s| s["name"] == name).unwrap().clone();
    let people = system("people");
    assert_eq!(people["search"]["contract"], "0.2.0", "{people}");
    assert!(
        people["verification"]["method"]
            .as_str()
            .unwrap()
            .starts_with("every located record read back by key"),
        "{people}"
    );
    assert_eq!(people["verification"]["read_back"]["gone"], 1, "{people}");
    assert_eq!(people["sweep"]["covered"], json!(["people", "notes"]));
    assert_eq!(people["sweep"]["cut_short"], false);
    assert_eq!(people["sweep"]["found_outside_retained_records"], 0);
    let newsletter = system("newsletter");
    assert_eq!(newsletter["search"]["contract"], "0.1.0", "{newsletter}");
    assert_eq!(
        newsletter["verification"]["method"],
        "locate after erase: verified by search only"
    );
    assert!(newsletter["sweep"].is_null());
}

/// A plugin whose erasure only hides the record and reports it deleted, so that its own
/// search finds nothing afterwards, gets no certificate: reading the record back by key
/// finds it, and the task says where (collection and field, never the value).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_claims_an_erasure_it_did_not_do_gets_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let setup = setup(&service, dir.path()).await;
    let request = erase(
        &service,
        &setup,
        json!([{ "kind": "email", "value": "jane@example.org" }, { "kind": "behaviour", "value": "lie" }]),
    )
    .await;
    assert_eq!(request["status"], "failed", "{request}");
    let id = request["id"].as_str().unwrap();
    let error = task_error(&service, &setup, id, "people").await;
    assert!(
        error.contains("1 record(s) located before the erasure still hold the subject's data when read back by key (1 in people (email))"),
        "{error}"
    );
    assert!(!error.contains("jane"), "no value in the error: {error}");
    let (status, _) = service
        .get(&format!("/v1/requests/{id}/certificate"), &setup.dpo)
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        count(&setup.people, "people", "id = 1").await,
        1,
        "still there"
    );

    // Reported deleted, and said to be cleared when read back: a contradiction fails too.
    database(&setup.people, "UPDATE people SET visible = 1").await;
    let request = erase(
        &service,
        &setup,
        json!([{ "kind": "email", "value": "jane@example.org" }, { "kind": "behaviour", "value": "lie-cleared" }]),
    )
    .await;
    assert_eq!(request["status"], "failed", "{request}");
    let error = task_error(&service, &setup, request["id"].as_str().unwrap(), "people").await;
    assert!(
        error.contains(
            "1 record(s) reported deleted are still there when read back by key (1 in people)"
        ),
        "{error}"
    );
}

/// A copy stored in another case and a mention in another record's free text are not
/// found by the configured exact matching, so the erasure leaves them; the sweep finds
/// both, and the task fails naming the collections and fields.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_case_copy_and_a_mention_left_behind_are_caught_by_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let setup = setup(&service, dir.path()).await;
    database(
        &setup.people,
        "INSERT INTO people (id, email) VALUES (3, 'Jane@Example.org'); \
         INSERT INTO notes VALUES (1, 'Call back jane@example.org about the refund');",
    )
    .await;
    let request = erase(
        &service,
        &setup,
        json!([{ "kind": "email", "value": "jane@example.org" }]),
    )
    .await;
    assert_eq!(request["status"], "failed", "{request}");
    let error = task_error(&service, &setup, request["id"].as_str().unwrap(), "people").await;
    assert!(
        error.contains("found the subject's identity values in 2 record(s) the erasure did not reach (1 in notes (body), 1 in people (email))"),
        "{error}"
    );
    assert!(!error.contains("jane"), "no value in the error: {error}");
    assert_eq!(
        count(&setup.people, "people", "id = 1").await,
        0,
        "the exact match went"
    );
}

/// A verify that answers for a record twice, or for one it was not given, fails the task:
/// its answers cannot be matched to the records asked.
#[tokio::test(flavor = "multi_thread")]
async fn a_verify_that_answers_twice_or_for_another_record_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let setup = setup(&service, dir.path()).await;
    for (behaviour, says) in [
        ("verify-twice", "answered twice for a record of people"),
        (
            "verify-other",
            "answered for a record of people it was not asked about",
        ),
    ] {
        database(
            &setup.people,
            "INSERT OR IGNORE INTO people (id, email) VALUES (1, 'jane@example.org')",
        )
        .await;
        let request = erase(
            &service,
            &setup,
            json!([{ "kind": "email", "value": "jane@example.org" }, { "kind": "behaviour", "value": behaviour }]),
        )
        .await;
        assert_eq!(request["status"], "failed", "{behaviour}: {request}");
        let error = task_error(&service, &setup, request["id"].as_str().unwrap(), "people").await;
        assert!(error.contains(says), "{behaviour}: {error}");
    }
}
