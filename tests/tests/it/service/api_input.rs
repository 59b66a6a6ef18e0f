//! The API's answers to bad and concurrent input, its OpenAPI document, and the token
//! command.

use super::email;
use oubli_tests::Service;
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let url = format!("{}/v1/requests", service.url);
    let dpo = service.demo.dpo.clone();
    let send = |body: String, content_type: &'static str| {
        let (http, url, dpo) = (service.http.clone(), url.clone(), dpo.clone());
        async move {
            let response = http
                .post(url)
                .bearer_auth(dpo)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let controller = service.demo.controller_id.clone();

    let (status, error) = send("{\"controller_id\": ".into(), "application/json").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_body")),
        "{error}"
    );

    let body = json!({ "controller_id": controller, "kind": "erasure", "identities": email(1), "colour": "blue" });
    let (status, error) = send(body.to_string(), "application/json").await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("colour"),
        "{error}"
    );

    let body = json!({ "controller_id": controller, "kind": "erasure", "identities": [{ "kind": "shoe-size", "value": "44" }] });
    let (status, error) = send(body.to_string(), "application/json").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("identities[0].kind")),
        "{error}"
    );

    let body = json!({ "controller_id": controller, "kind": "forget", "identities": email(1) });
    let (status, error) = send(body.to_string(), "application/json").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("kind")),
        "{error}"
    );

    let body = json!({ "controller_id": controller, "kind": "erasure", "identities": [{ "kind": "email" }] });
    let (status, error) = send(body.to_string(), "application/json").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("identities[0].value")),
        "{error}"
    );

    let body =
        json!({ "controller_id": controller, "kind": "rectification", "identities": email(1) });
    let (status, error) = send(body.to_string(), "application/json").await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("changes")),
        "{error}"
    );

    let huge = json!({ "controller_id": controller, "kind": "erasure", "identities": email(1), "external_ref": "x".repeat(1 << 20) });
    let (status, error) = send(huge.to_string(), "application/json").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (413, Some("payload_too_large")),
        "{error}"
    );

    let (status, error) = send("kind=erasure".into(), "application/x-www-form-urlencoded").await;
    assert_eq!(status, 400, "{error}");

    let (status, error) = service.get("/v1/requests", "oubli_not-a-token").await;
    assert_eq!(
        (status, error["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = service.get("/v1/nothing-here", &dpo).await;
    assert_eq!(status, 404);

    let (_, list) = service.get("/v1/requests", &dpo).await;
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "no bad submission was stored"
    );

    // Repeated failures from one address are throttled, and logged.
    let mut last = 0;
    for _ in 0..12 {
        last = service.get("/v1/requests", "oubli_wrong").await.0;
    }
    assert_eq!(last, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_submissions_with_one_idempotency_key_make_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(Service::spawn_app(dir.path(), &[]).await);
    let body = json!({ "controller_id": service.demo.controller_id, "kind": "erasure", "identities": email(9) });
    let mut submissions = Vec::new();
    for _ in 0..8 {
        let (service, body) = (service.clone(), body.clone());
        submissions.push(tokio::spawn(async move {
            let response = service
                .http
                .post(format!("{}/v1/requests", service.url))
                .bearer_auth(&service.demo.dpo)
                .header("Idempotency-Key", "ticket-4711")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for submission in submissions {
        let (status, id) = submission.await.unwrap();
        created += usize::from(status == 201);
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    let (_, list) = service.get("/v1/requests", &service.demo.dpo).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_created_twice_at_once_give_one_conflict_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let admin = service.demo.admin.clone();
    let create = |path: String, body: serde_json::Value| {
        let (service, admin) = (&service, admin.clone());
        async move { service.post(&path, &admin, body).await }
    };
    let body = json!({ "name": "Twice Org" });
    let (a, b) = tokio::join!(
        create("/v1/controllers".into(), body.clone()),
        create("/v1/controllers".into(), body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} {}", a.1, b.1);
    let conflict = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("exists already"),
        "{conflict}"
    );
    let created = if a.0 == 201 { &a.1 } else { &b.1 };
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();

    let digest = service.builtin_digest(&admin, "sql").await;
    let crm = dir.path().join("twice.db");
    oubli::demo::create_crm(&crm, 3).await.unwrap();
    let system = oubli::demo::crm_system("crm", &crm);
    let body = json!({ "name": "crm", "plugin": digest, "capabilities": system.capabilities, "config": system.config });
    let path = format!("/v1/controllers/{controller}/systems");
    let (a, b) = tokio::join!(create(path.clone(), body.clone()), create(path, body));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} {}", a.1, b.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_and_the_token_command_work() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let document: Value = service
        .http
        .get(format!("{}/v1/openapi.json", service.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/requests",
        "/v1/requests/{id}/approve",
        "/v1/controllers/{id}/systems",
        "/v1/plugins",
        "/v1/tokens",
    ] {
        assert!(
            document["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
    assert!(document["components"]["schemas"].get("Request").is_some());

    // A second service on the same data folder is refused before it touches anything.
    let second = std::process::Command::new(oubli_tests::oubli_binary())
        .arg("serve")
        .env("OUBLI_LISTEN", "127.0.0.1:0")
        .env("OUBLI_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another oubli process is running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    let output = std::process::Command::new(oubli_tests::oubli_binary())
        .args([
            "token",
            "create",
            "--role",
            "auditor",
            "--label",
            "external audit",
        ])
        .env("OUBLI_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let auditor = created["token"].as_str().unwrap();
    let (status, _) = service.get("/v1/requests", auditor).await;
    assert_eq!(status, 200);
    let (status, _) = service
        .post("/v1/controllers", auditor, json!({ "name": "nope" }))
        .await;
    assert_eq!(status, 403);
}
