//! The controller's decisions and the request's life: rejection, cancellation, illegal
//! steps, the deadline and its extension, webhooks, and what each token may see.

use super::{approve, email};
use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use oubli_tests::{Service, count, serve};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread")]
async fn rejection_cancellation_and_illegal_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let ctl = service.demo.controller.clone();

    let id = service.submit("erasure", email(3), None).await;
    let (status, error) = service
        .post(&format!("/v1/requests/{id}/reject"), &ctl, json!({}))
        .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("reason")));
    let (status, rejected) = service
        .post(
            &format!("/v1/requests/{id}/reject"),
            &ctl,
            json!({ "reason": "not our customer" }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["decision_reason"], "not our customer");
    let (status, error) = service
        .post(&format!("/v1/requests/{id}/approve"), &ctl, json!({}))
        .await;
    assert_eq!(status, 409);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot approve a request that is rejected"),
        "{error}"
    );

    let id = service.submit("erasure", email(4), None).await;
    let (status, cancelled) = service
        .post(
            &format!("/v1/requests/{id}/cancel"),
            &service.demo.dpo,
            json!({ "reason": "withdrawn" }),
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = service
        .post(&format!("/v1/requests/{id}/approve"), &ctl, json!({}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        count(&service.demo.crm, "customers", "id IN (3, 4)").await,
        2,
        "nothing ran"
    );

    // A DPO cannot decide, a controller cannot submit.
    let id = service.submit("access", email(6), None).await;
    let (status, _) = service
        .post(
            &format!("/v1/requests/{id}/approve"),
            &service.demo.dpo,
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
    let (status, error) = service
        .post(
            &format!("/v1/requests/{id}/cancel"),
            &service.demo.dpo,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{error}");
    let (status, _) = service
        .post("/v1/requests", &ctl, json!({ "controller_id": service.demo.controller_id, "kind": "access", "identities": email(1) }))
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_is_a_month_and_extends_by_two_months_at_most() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let id = service.submit("access", email(2), None).await;
    let (_, request) = service
        .get(&format!("/v1/requests/{id}"), &service.demo.dpo)
        .await;
    let received =
        chrono::DateTime::parse_from_rfc3339(request["received_at"].as_str().unwrap()).unwrap();
    let due = chrono::DateTime::parse_from_rfc3339(request["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        due,
        received.checked_add_months(chrono::Months::new(1)).unwrap()
    );
    assert_eq!(request["overdue"], false);

    let path = format!("/v1/requests/{id}/extend");
    let (status, error) = service
        .post(
            &path,
            &service.demo.dpo,
            json!({ "months": 1, "reason": " " }),
        )
        .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("reason")));
    let (status, error) = service
        .post(
            &path,
            &service.demo.dpo,
            json!({ "months": 3, "reason": "complex" }),
        )
        .await;
    assert_eq!((status, error["field"].as_str()), (422, Some("months")));
    let (status, extended) = service
        .post(
            &path,
            &service.demo.dpo,
            json!({ "months": 1, "reason": "many systems" }),
        )
        .await;
    assert_eq!(status, 200, "{extended}");
    let due = chrono::DateTime::parse_from_rfc3339(extended["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        due,
        received.checked_add_months(chrono::Months::new(2)).unwrap()
    );
    assert_eq!(extended["extension_reason"], "many systems");
    let (status, error) = service
        .post(
            &path,
            &service.demo.dpo,
            json!({ "months": 2, "reason": "more" }),
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 months"),
        "{error}"
    );
    let (status, _) = service
        .post(
            &path,
            &service.demo.dpo,
            json!({ "months": 1, "reason": "the last month" }),
        )
        .await;
    assert_eq!(status, 200);

    let (_, overdue) = service
        .get("/v1/requests?overdue=true", &service.demo.dpo)
        .await;
    assert!(overdue["items"].as_array().unwrap().is_empty());
    let (_, open) = service
        .get(
            "/v1/requests?status=awaiting_controller&kind=access",
            &service.demo.dpo,
        )
        .await;
    assert_eq!(open["items"].as_array().unwrap().len(), 1);
    let (status, error) = service
        .get("/v1/requests?status=lost", &service.demo.dpo)
        .await;
    assert_eq!((status, error["field"].as_str()), (400, Some("status")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_gets_a_signed_webhook_and_sees_only_its_own_requests() {
    let received = Arc::new(Mutex::new(Vec::<(HeaderMap, String)>::new()));
    let log = received.clone();
    // The receiver is down for the first attempt.
    let (address, _receiver) = serve(Router::new().route(
        "/hooks",
        post(move |headers: HeaderMap, body: String| {
            let mut log = log.lock().unwrap();
            log.push((headers, body));
            let status = if log.len() == 1 {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            };
            async move { status }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let admin = service.demo.admin.clone();

    let (status, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Other Org", "webhook_url": format!("http://{address}/hooks") }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let other = created["controller"]["id"].as_str().unwrap().to_owned();
    let secret = created["webhook_secret"].as_str().unwrap().to_owned();
    let digest = service.builtin_digest(&admin, "sql").await;
    let other_crm = dir.path().join("other-crm.db");
    oubli::demo::create_crm(&other_crm, 5).await.unwrap();
    let system = oubli::demo::crm_system("shop", &other_crm);
    // The plugin checks the dataset against the database before the system is connected.
    let mut broken = system.config.clone();
    broken["dataset"]["tables"][0]["columns"]["emial"] = json!("contact");
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{other}/systems"),
            &admin,
            json!({ "name": "shop", "plugin": digest, "capabilities": system.capabilities, "config": broken }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["field"], "config.dataset.tables[0].columns.emial",
        "{body}"
    );
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{other}/systems"),
            &admin,
            json!({ "name": "shop", "plugin": digest, "capabilities": system.capabilities, "config": system.config }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, request) = service
        .post("/v1/requests", &admin, json!({ "controller_id": other, "kind": "access", "identities": email(1), "external_ref": "T-1" }))
        .await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while received.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no webhook arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (headers, body) = received.lock().unwrap()[1].clone();
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let expected = oubli_tests::standard_webhooks_signature(
        &secret,
        &header("webhook-id"),
        &header("webhook-timestamp"),
        &body,
    );
    assert_eq!(header("webhook-signature"), expected);
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    let payload: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["type"], "request.forwarded");
    assert_eq!(payload["data"]["request_id"], id.as_str());
    assert!(
        !body.contains("customer1@example.org"),
        "the webhook carries no identities"
    );

    let deliveries = service
        .poll(&format!("/v1/requests/{id}/webhooks"), &admin, |d| {
            d["items"][0]["status"] == "delivered"
        })
        .await;
    assert_eq!(deliveries["items"][0]["last_status"], 200);
    assert_eq!(
        deliveries["items"][0]["log"][0]["status"], 503,
        "{deliveries}"
    );
    assert_eq!(
        deliveries["items"][0]["log"][1]["status"], 200,
        "{deliveries}"
    );
    assert_eq!(deliveries["items"][0]["attempts"], 2);

    // How each request ended is announced too, with what was found: an access that found
    // the subject, and an erasure that matched nothing, which says so.
    let ended = |id: String| {
        let received = received.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let found = received.lock().unwrap().iter().find_map(|(_, body)| {
                    let payload: Value = serde_json::from_str(body).ok()?;
                    (payload["data"]["request_id"] == id.as_str()
                        && payload["type"] != "request.forwarded")
                        .then_some(payload)
                });
                if let Some(payload) = found {
                    return payload;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no completion webhook"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let (status, body) = service
        .post(&format!("/v1/requests/{id}/approve"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = ended(id.clone()).await;
    assert_eq!(done["type"], "request.completed", "{done}");
    assert_eq!(done["data"]["status"], "completed", "{done}");
    assert_eq!(done["data"]["kind"], "access", "{done}");
    assert!(
        done["data"]["records_found"].as_u64().unwrap() > 0,
        "{done}"
    );
    assert_eq!(done["data"]["nothing_found"], false, "{done}");
    assert!(
        done["data"]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/requests/{id}")),
        "{done}"
    );
    let (status, nobody) = service
        .post("/v1/requests", &admin, json!({ "controller_id": other, "kind": "erasure", "identities": [{ "kind": "email", "value": "nobody@example.org" }] }))
        .await;
    assert_eq!(status, 201, "{nobody}");
    let nobody = nobody["id"].as_str().unwrap().to_owned();
    let (status, body) = service
        .post(&format!("/v1/requests/{nobody}/approve"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = ended(nobody.clone()).await;
    assert_eq!(done["type"], "request.completed", "{done}");
    assert_eq!(done["data"]["records_found"], 0, "{done}");
    assert_eq!(done["data"]["nothing_found"], true, "{done}");
    assert!(
        done["data"]["status_detail"]
            .as_str()
            .unwrap()
            .contains("no connected system found any record"),
        "{done}"
    );
    let body = received.lock().unwrap().last().unwrap().1.clone();
    assert!(!body.contains("nobody@example.org"), "{body}");

    // The demo controller's token sees neither the other controller nor its requests.
    let (status, _) = service
        .get(&format!("/v1/requests/{id}"), &service.demo.controller)
        .await;
    assert_eq!(status, 404);
    let (status, _) = service
        .post(
            &format!("/v1/requests/{id}/approve"),
            &service.demo.controller,
            json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = service.get("/v1/requests", &service.demo.controller).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    let (status, _) = service
        .get(
            &format!("/v1/controllers/{other}/systems"),
            &service.demo.controller,
        )
        .await;
    assert_eq!(status, 403, "systems are for admins only");
}

#[tokio::test(flavor = "multi_thread")]
async fn scoped_tokens_see_only_their_controllers_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let admin = service.demo.admin.clone();
    let id = service.submit("access", email(3), None).await;

    let (_, created) = service
        .post("/v1/controllers", &admin, json!({ "name": "Elsewhere" }))
        .await;
    let elsewhere = created["controller"]["id"].as_str().unwrap().to_owned();
    let (status, error) = service
        .post(
            "/v1/tokens",
            &admin,
            json!({ "role": "admin", "controller_id": elsewhere, "label": "x" }),
        )
        .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("controller_id")),
        "an admin token cannot be scoped"
    );

    let token = |controller: &str| {
        let body = json!({ "role": "auditor", "controller_id": controller, "label": "auditor" });
        let service = &service;
        let admin = admin.clone();
        async move {
            service.post("/v1/tokens", &admin, body).await.1["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let outsider = token(&elsewhere).await;
    let insider = token(&service.demo.controller_id).await;
    let (status, events) = service.get("/v1/audit", &outsider).await;
    assert_eq!(status, 200);
    assert!(events["items"].as_array().unwrap().is_empty(), "{events}");
    let (_, events) = service.get("/v1/audit", &insider).await;
    let items = events["items"].as_array().unwrap();
    assert!(
        !items.is_empty() && items.iter().all(|e| e["request_id"] == id.as_str()),
        "{events}"
    );
    // A time span: `since` includes its bound, `until` excludes it.
    let first = items[0]["at"].as_i64().unwrap();
    let (_, span) = service
        .get(
            &format!("/v1/audit?since={first}&until={}", first + 1),
            &insider,
        )
        .await;
    let span = span["items"].as_array().unwrap();
    assert!(
        !span.is_empty() && span.iter().all(|e| e["at"] == first),
        "{span:?}"
    );
    let (_, before) = service
        .get(&format!("/v1/audit?until={first}"), &insider)
        .await;
    assert!(before["items"].as_array().unwrap().is_empty(), "{before}");
    let (status, error) = service.get("/v1/audit?until=soon", &insider).await;
    assert_eq!((status, error["field"].as_str()), (400, Some("until")));
}
