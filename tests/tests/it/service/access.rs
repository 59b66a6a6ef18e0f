//! Access and rectification journeys: the export, the sealed access package and its
//! expiry, and changes that reach the data.

use super::{approve, email};
use oubli_tests::{Service, count};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn access_exports_and_rectification_changes_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let access = service.submit("access", email(7), None).await;
    let change = json!([{ "collection": "customers", "field": "city", "value": "Brest" }]);
    let rectify = service
        .submit("rectification", email(8), Some(change))
        .await;
    approve(&service, &access).await;
    approve(&service, &rectify).await;

    assert_eq!(service.settled(&access).await["status"], "completed");
    let (_, results) = service
        .get(&format!("/v1/requests/{access}/results"), &service.demo.dpo)
        .await;
    let records = results["systems"][0]["result"]["records"]
        .as_array()
        .unwrap();
    assert_eq!(
        records.len(),
        1 + 2 + 4 + 2,
        "customer 7: account, 2 orders, 4 items, 2 invoices"
    );
    let customer = records
        .iter()
        .find(|r| r["collection"] == "customers")
        .unwrap();
    assert!(
        customer["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["value"] == "\"customer7@example.org\"")
    );
    assert!(
        !results["systems"][0]["article15"]["purposes"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    assert_eq!(service.settled(&rectify).await["status"], "completed");
    assert_eq!(
        count(&service.demo.crm, "customers", "id = 8 AND city = 'Brest'").await,
        1
    );
    assert_eq!(
        count(&service.demo.crm, "customers", "city = 'Brest'").await,
        1
    );
    let (_, results) = service
        .get(
            &format!("/v1/requests/{rectify}/results"),
            &service.demo.dpo,
        )
        .await;
    assert_eq!(results["systems"][0]["result"]["verified"], 1, "{results}");

    // A new e-mail address: the changed record is no longer found by the old one, and is
    // reported as not verified rather than passed.
    let change =
        json!([{ "collection": "customers", "field": "email", "value": "new9@example.org" }]);
    let moved = service
        .submit("rectification", email(9), Some(change))
        .await;
    approve(&service, &moved).await;
    assert_eq!(service.settled(&moved).await["status"], "completed");
    assert_eq!(
        count(
            &service.demo.crm,
            "customers",
            "id = 9 AND email = 'new9@example.org'"
        )
        .await,
        1
    );
    let (_, results) = service
        .get(&format!("/v1/requests/{moved}/results"), &service.demo.dpo)
        .await;
    assert_eq!(
        results["systems"][0]["result"]["unverified"],
        json!(["customers/9"]),
        "{results}"
    );
}

/// The stored results of a request's tasks, read from the service's database file.
/// The stored results of a request's tasks, then the stored pages of its exports.
async fn stored_results(service: &Service, id: &str) -> Vec<Option<String>> {
    let path = service.data_dir.join("oubli.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display()))
        .await
        .unwrap();
    let rows: Vec<Option<String>> =
        sqlx::query_scalar(
            "SELECT result FROM tasks WHERE request_id = ?1 UNION ALL \
             SELECT records FROM task_pages WHERE task_id IN (SELECT id FROM tasks WHERE request_id = ?1)",
        )
        .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_package_is_sealed_at_rest_downloadable_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let access = service.submit("access", email(7), None).await;
    let erasure = service.submit("erasure", email(9), None).await;
    approve(&service, &access).await;
    approve(&service, &erasure).await;
    assert_eq!(service.settled(&access).await["status"], "completed");
    assert_eq!(service.settled(&erasure).await["status"], "completed");

    // At rest, the export is sealed: the address is nowhere in the stored result or pages.
    let stored = stored_results(&service, &access).await;
    assert!(
        stored.len() > 1,
        "the export's pages are stored: {stored:?}"
    );
    for stored in stored {
        let stored = stored.expect("a result");
        assert!(stored.starts_with("sealed:v1:"), "{stored}");
        assert!(!stored.contains("customer7"), "{stored}");
    }

    let dpo = &service.demo.dpo;
    let (status, package) = service
        .get(&format!("/v1/requests/{access}/package"), dpo)
        .await;
    assert_eq!(status, 200, "{package}");
    assert_eq!(package["format"], "oubli-access-package/1");
    assert!(package["expires_at"].is_string());
    // The JSON states the subject's rights as the HTML does.
    let articles: Vec<&str> = package["rights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["article"].as_str().unwrap())
        .collect();
    assert_eq!(
        articles,
        [
            "Art. 16", "Art. 17", "Art. 18", "Art. 20", "Art. 21", "Art. 77"
        ]
    );
    let system = &package["systems"][0];
    assert!(
        !system["article15"]["purposes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let records = system["records"].as_array().unwrap();
    assert_eq!(records.len(), 1 + 2 + 4 + 2, "{package}");
    let customer = records
        .iter()
        .find(|r| r["collection"] == "customers")
        .unwrap();
    assert!(
        customer["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "email"
                && f["value"] == "customer7@example.org"
                && f["category"] == "contact"),
        "{customer}"
    );

    let response = service
        .http
        .get(format!("{}/v1/requests/{access}/package.html", service.url))
        .bearer_auth(dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("customer7@example.org") && html.contains("Your rights"));
    assert!(html.contains("supervisory authority (Art. 77)"), "{html}");

    // Only the DPO and admins download it; an erasure has none.
    let (status, _) = service
        .get(
            &format!("/v1/requests/{access}/package"),
            &service.demo.controller,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = service
        .get(&format!("/v1/requests/{erasure}/package"), dpo)
        .await;
    assert_eq!(status, 409, "{body}");

    let (_, events) = service
        .get(
            &format!("/v1/requests/{access}/events"),
            &service.demo.admin,
        )
        .await;
    let downloads: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "package.downloaded")
        .collect();
    assert_eq!(downloads.len(), 2, "{events}");
    assert_eq!(downloads[1]["details"], "{\"format\":\"html\"}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_package_is_purged_and_the_download_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(
        dir.path(),
        &[
            ("OUBLI_PACKAGE_TTL_DAYS", "0"),
            ("OUBLI_PURGE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let access = service.submit("access", email(7), None).await;
    approve(&service, &access).await;
    assert_eq!(service.settled(&access).await["status"], "completed");
    let (status, body) = service
        .get(&format!("/v1/requests/{access}/package"), &service.demo.dpo)
        .await;
    assert_eq!(status, 410, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    service
        .poll(
            &format!("/v1/requests/{access}/events"),
            &service.demo.admin,
            |e| {
                e["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["action"] == "package.purged")
            },
        )
        .await;
    assert!(
        stored_results(&service, &access)
            .await
            .iter()
            .all(Option::is_none)
    );
}
