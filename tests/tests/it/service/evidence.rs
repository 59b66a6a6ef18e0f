//! What the evidence claims: a record located before an erasure that the erasure made
//! unreachable instead of erasing fails the task, and a request that matched nothing
//! says so in the request, the certificate and the package.

use super::{approve, email};
use oubli_tests::{Service, count};
use serde_json::json;

/// A plugin whose erasure deletes the links through which its people are found, reports
/// only the links, and finds nothing afterwards: the people it located before are still
/// there, and the task fails naming their collection instead of certifying.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_that_makes_a_located_record_unreachable_fails_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[("OUBLI_MAX_ATTEMPTS", "2")]).await;
    let admin = service.demo.admin.clone();
    let db = dir.path().join("hidden.db");
    {
        use sqlx::Connection;
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
                .await
                .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE hidden (id INTEGER PRIMARY KEY, visible INTEGER NOT NULL); \
             INSERT INTO hidden VALUES (1, 1), (2, 1);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let (status, plugin) = service.upload_testkit(&admin, "testkit").await;
    assert_eq!(status, 201, "{plugin}");
    let (_, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Linked Org", "auto_approve": true }),
        )
        .await;
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &admin,
            json!({ "name": "linked", "plugin": plugin["digest"],
                    "capabilities": { "sql": { "url": format!("sqlite://{}", db.display()) } } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dpo = service.token(&admin, "dpo", &controller).await;
    let erase = |behaviour: &'static str| {
        let (service, dpo, controller) = (&service, dpo.clone(), controller.clone());
        async move {
            let body = json!({ "controller_id": controller, "kind": "erasure",
                               "identities": [{ "kind": "behaviour", "value": behaviour }] });
            let (status, request) = service.post("/v1/requests", &dpo, body).await;
            assert_eq!(status, 201, "{request}");
            let id = request["id"].as_str().unwrap().to_owned();
            let request = service
                .poll(&format!("/v1/requests/{id}"), &dpo, |r| {
                    !matches!(r["status"].as_str(), Some("running" | "approved"))
                })
                .await;
            assert_eq!(request["status"], "failed", "{request}");
            let (_, tasks) = service.get(&format!("/v1/requests/{id}/tasks"), &dpo).await;
            let (status, refused) = service
                .get(&format!("/v1/requests/{id}/certificate"), &dpo)
                .await;
            assert_eq!(
                status, 409,
                "no certificate for a failed erasure: {refused}"
            );
            tasks["items"][0].clone()
        }
    };
    let unaccounted =
        "record(s) located before the erasure were neither reported by `erase` nor found again";

    // The links reported deleted, the people reported by nobody and no longer found.
    let task = erase("hide").await;
    let error = task["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("2 {unaccounted} (2 in people)")),
        "{task}"
    );
    assert_eq!(
        count(&db, "hidden", "1 = 1").await,
        2,
        "the people are still there"
    );

    // The same, with an error after hiding them: the retry that finds nothing does not
    // pass either (only a run that died before storing its report leaves that open).
    tamper_db(&db, "UPDATE hidden SET visible = 1").await;
    let task = erase("hide-unavailable").await;
    assert_eq!(task["attempts"], 2, "{task}");
    let error = task["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("4 {unaccounted} (2 in links, 2 in people)")),
        "{task}"
    );
    assert_eq!(count(&db, "hidden", "1 = 1").await, 2);
}

async fn tamper_db(db: &std::path::Path, statement: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// An erasure whose e-mail is typed in another case than stored matches nothing, but the
/// SQL connector's sweep finds the customer's data in any case: the task fails saying
/// where, instead of certifying that nothing was held. An erasure and an access for an
/// address held nowhere complete, and the request, the certificate and the package say
/// that no record matched, with what each system searched by.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_matches_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let dpo = service.demo.dpo.clone();
    let typo = json!([{ "kind": "email", "value": "Customer5@Example.org" }]);

    let mistyped = service.submit("erasure", typo.clone(), None).await;
    approve(&service, &mistyped).await;
    let request = service.settled(&mistyped).await;
    assert_eq!(request["status"], "failed", "{request}");
    let (_, tasks) = service
        .get(&format!("/v1/requests/{mistyped}/tasks"), &dpo)
        .await;
    let error = tasks["items"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("the sweep after the erasure found the subject's identity values in")
            && error.contains("in customers (email)")
            && !error.contains("ustomer5"),
        "{error}"
    );

    let nobody = json!([{ "kind": "email", "value": "nobody.at.all@example.org" }]);
    let erasure = service.submit("erasure", nobody, None).await;
    approve(&service, &erasure).await;
    let request = service.settled(&erasure).await;
    assert_eq!(request["status"], "completed", "{request}");
    assert_eq!(request["records_found"], 0, "{request}");
    assert!(
        request["status_detail"]
            .as_str()
            .unwrap()
            .contains("no connected system found any record of the subject, so nothing was erased"),
        "{request}"
    );
    let (status, signed) = service
        .get(&format!("/v1/requests/{erasure}/certificate"), &dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    let certificate = &signed["certificate"];
    assert_eq!(certificate["nothing_found"], true, "{certificate}");
    assert_eq!(certificate["records_found"], 0);
    let system = &certificate["systems"][0];
    assert!(
        system["note"]
            .as_str()
            .unwrap()
            .contains("no record matched the subject in system crm"),
        "{system}"
    );
    assert_eq!(system["search"]["identity_kinds_given"], json!(["email"]));
    assert_eq!(
        system["search"]["identity_kinds_the_plugin_can_search"],
        json!(["email"])
    );
    assert_eq!(system["verification"]["records_located_before_erasure"], 0);
    assert_eq!(certificate["version"], 3);
    // The printable page says it too, in French and in English.
    for (lang, title, warning) in [
        (
            "fr",
            "Procès-verbal de destruction",
            "Aucun système n'a trouvé d'enregistrement",
        ),
        (
            "en",
            "Erasure certificate",
            "No system found any record of the subject",
        ),
    ] {
        let page = service
            .http
            .get(format!(
                "{}/v1/requests/{erasure}/certificate.html?lang={lang}",
                service.url
            ))
            .bearer_auth(&dpo)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let page = page.text().await.unwrap();
        assert!(page.contains(title) && page.contains(warning), "{page}");
        assert!(!page.contains("Customer5"), "no identity value on the page");
    }
    assert_eq!(
        count(&service.demo.crm, "customers", "id = 5").await,
        1,
        "the customer typed in another case is still there"
    );

    // Spelled as stored, the same customer is found and erased, and the certificate
    // says how many records were located before the erasure and that each was reported.
    let found = service.submit("erasure", email(5), None).await;
    approve(&service, &found).await;
    let request = service.settled(&found).await;
    assert_eq!(request["status"], "completed", "{request}");
    let records = request["records_found"].as_u64().unwrap();
    assert!(records > 1, "{request}");
    assert!(request["status_detail"].is_null(), "{request}");
    let (_, signed) = service
        .get(&format!("/v1/requests/{found}/certificate"), &dpo)
        .await;
    let certificate = &signed["certificate"];
    assert_eq!(certificate["nothing_found"], false, "{certificate}");
    assert_eq!(certificate["records_found"], records);
    let verification = &certificate["systems"][0]["verification"];
    assert_eq!(verification["records_located_before_erasure"], records);
    assert_eq!(verification["all_located_reported_by_erase"], true);
    // The first-party SQL connector reads every located record back by its primary key.
    assert!(
        verification["method"]
            .as_str()
            .unwrap()
            .starts_with("every located record read back by key"),
        "{verification}"
    );
    assert_eq!(verification["read_back"]["records"], records);
    assert!(
        verification["read_back"]["retained"].as_u64().unwrap() >= 1,
        "the invoices"
    );
    assert!(certificate["systems"][0]["note"].is_null());

    let access = service.submit("access", typo, None).await;
    approve(&service, &access).await;
    let request = service.settled(&access).await;
    assert_eq!(request["records_found"], 0, "{request}");
    assert!(
        request["status_detail"]
            .as_str()
            .unwrap()
            .contains("the access package is empty"),
        "{request}"
    );
    let (status, package) = service
        .get(&format!("/v1/requests/{access}/package"), &dpo)
        .await;
    assert_eq!(status, 200, "{package}");
    assert!(
        package["systems"][0]["note"]
            .as_str()
            .unwrap()
            .contains("no record in system crm matched"),
        "{package}"
    );
    assert_eq!(
        package["systems"][0]["search"]["identity_kinds_the_plugin_can_search"],
        json!(["email"])
    );
}

/// A change that no connected system has a place for is not carried out: each system says
/// it is not applicable there (instead of failing the whole rectification after applying
/// the rest), and the request fails, its event naming the change by its position.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_no_system_has_a_place_for_fails_the_rectification() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let dpo = service.demo.dpo.clone();
    let changes = json!([
        { "field": "city", "value": "Nice" },
        { "field": "shoe_size", "value": 44 },
    ]);
    let id = service
        .submit("rectification", email(11), Some(changes))
        .await;
    approve(&service, &id).await;
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "failed", "{request}");
    assert!(
        request["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("a change had no place in any connected system"),
        "{request}"
    );
    let (_, results) = service
        .get(&format!("/v1/requests/{id}/results"), &dpo)
        .await;
    let result = &results["systems"][0]["result"];
    assert_eq!(result["not_applicable"], json!([1]), "{results}");
    assert_eq!(result["changed"].as_array().unwrap().len(), 1, "{results}");
    let (_, events) = service
        .get(&format!("/v1/requests/{id}/events"), &dpo)
        .await;
    let failed = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "request.failed")
        .expect("a request.failed event");
    let details: serde_json::Value =
        serde_json::from_str(failed["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["changes_applied_nowhere"], json!([1]), "{details}");
    // A retry has no task to run again: the request settles at once, failed again,
    // instead of staying "running".
    let (status, retried) = service
        .post(&format!("/v1/requests/{id}/retry"), &dpo, json!({}))
        .await;
    assert_eq!(status, 200, "{retried}");
    let (_, request) = service.get(&format!("/v1/requests/{id}"), &dpo).await;
    assert_eq!(request["status"], "failed", "{request}");

    // Every change with a place somewhere: completed.
    let id = service
        .submit(
            "rectification",
            email(12),
            Some(json!([{ "field": "city", "value": "Nice" }])),
        )
        .await;
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
}

/// `erasure_checks = "search"` runs neither verify nor sweep, and the certificate says the
/// erasure was verified by search only.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_can_choose_the_checks_and_the_certificate_says_which_ran() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[("OUBLI_ERASURE_CHECKS", "search")]).await;
    let id = service.submit("erasure", email(6), None).await;
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
    let (_, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    let system = &signed["certificate"]["systems"][0];
    assert_eq!(
        system["verification"]["method"], "locate after erase: verified by search only",
        "{system}"
    );
    assert!(system["sweep"].is_null(), "{system}");
}
