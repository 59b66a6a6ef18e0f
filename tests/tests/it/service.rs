//! The request service through the real binary: journeys from submission to the data
//! really being gone, exported or changed; decisions, deadlines, idempotency, webhooks,
//! crashes and bad input.

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use oubli_tests::{Service, audit_verify, count, serve, tamper};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::{Arc, Mutex};

fn email(n: u64) -> Value {
    json!([{ "kind": "email", "value": format!("customer{n}@example.org") }])
}

async fn approve(service: &Service, id: &str) {
    let (status, body) = service
        .post(
            &format!("/v1/requests/{id}/approve"),
            &service.demo.controller,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_runs_only_after_approval_and_really_erases() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let id = service.submit("erasure", email(5), None).await;

    let (_, request) = service
        .get(&format!("/v1/requests/{id}"), &service.demo.dpo)
        .await;
    assert_eq!(request["status"], "awaiting_controller");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        count(&service.demo.crm, "customers", "id = 5").await,
        1,
        "nothing runs before the controller approves"
    );

    approve(&service, &id).await;
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");
    assert!(request["completed_at"].is_string());
    assert_eq!(count(&service.demo.crm, "customers", "id = 5").await, 0);
    assert_eq!(
        count(&service.demo.crm, "orders", "customer_id = 5").await,
        0
    );
    assert_eq!(
        count(
            &service.demo.crm,
            "invoices",
            "billing_email = 'customer5@example.org'"
        )
        .await,
        3
    );
    assert_eq!(count(&service.demo.crm, "customers", "1 = 1").await, 59);

    let (_, tasks) = service
        .get(&format!("/v1/requests/{id}/tasks"), &service.demo.dpo)
        .await;
    assert_eq!(tasks["items"][0]["status"], "succeeded");
    assert_eq!(tasks["items"][0]["system_name"], "crm");
    let (_, results) = service
        .get(&format!("/v1/requests/{id}/results"), &service.demo.dpo)
        .await;
    let erased = results["systems"][0]["result"]["erased"]
        .as_array()
        .unwrap();
    let retained = erased
        .iter()
        .filter(|e| {
            e["outcome"] == "retained" && e["legal_basis"].as_str().unwrap().contains("17(3)(b)")
        })
        .count();
    assert_eq!(retained, 3, "{results}");
    assert!(
        results["systems"][0]["result"]["remaining"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["collection"] == "invoices")
    );

    let actions = service
        .actions(&format!("/v1/requests/{id}/events"), &service.demo.dpo)
        .await;
    for expected in [
        "request.received",
        "request.awaiting_controller",
        "request.approved",
        "request.running",
        "task.succeeded",
        "request.completed",
        "request.results_read",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_exports_and_rectification_changes_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
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

#[tokio::test(flavor = "multi_thread")]
async fn rejection_cancellation_and_illegal_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
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
    let service = Service::start(dir.path(), &[]);
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
async fn concurrent_submissions_with_one_idempotency_key_make_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let service = Arc::new(Service::start(dir.path(), &[]));
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
    let service = Service::start(dir.path(), &[]);
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
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            header("webhook-id"),
            header("webhook-timestamp"),
            body
        )
        .as_bytes(),
    );
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
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
async fn bad_input_gets_a_clear_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
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
async fn a_kill_during_processing_loses_nothing_and_every_erasure_completes() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[("OUBLI_WORKERS", "2")]);
    let demo = service.demo.clone();
    let mut ids = Vec::new();
    for n in 11..=40 {
        ids.push((n, service.submit("erasure", email(n), None).await));
    }
    for (_, id) in &ids {
        approve(&service, id).await;
    }
    // Kill it while tasks run: wait for the first completions, then crash.
    loop {
        let (_, done) = service
            .get("/v1/requests?status=completed", &demo.dpo)
            .await;
        if !done["items"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    service.kill9();

    let mut service = Service::start(dir.path(), &[("OUBLI_WORKERS", "2")]);
    service.demo = demo;
    for (n, id) in &ids {
        let request = service.settled(id).await;
        assert_eq!(request["status"], "completed", "{request}");
        assert_eq!(
            count(&service.demo.crm, "customers", &format!("id = {n}")).await,
            0
        );
        let (_, results) = service
            .get(&format!("/v1/requests/{id}/results"), &service.demo.dpo)
            .await;
        let remaining = results["systems"][0]["result"]["remaining"]
            .as_array()
            .unwrap();
        assert_eq!(
            remaining.len() as u64,
            n % 3 + 1,
            "only the invoices remain for customer {n}"
        );
    }
    assert_eq!(count(&service.demo.crm, "customers", "1 = 1").await, 30);
    assert!(service.terminate(), "a SIGTERM stops the service cleanly");
}

/// The demo helpdesk API behind a gate that, once the subject's deletable records are
/// all gone, holds the next search (the verifying `locate`) until it is opened.
struct HeldApi {
    api: Arc<oubli::demo::api::DemoApi>,
    address: std::net::SocketAddr,
    held: Arc<tokio::sync::Notify>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
    _secret: tempfile::NamedTempFile,
}

async fn held_api(token: &str, email: &str) -> HeldApi {
    use axum::extract::Request;
    use axum::middleware::{self, Next};
    let api = oubli::demo::api::DemoApi::new(token, 3);
    let held = Arc::new(tokio::sync::Notify::new());
    let open = Arc::new(tokio::sync::watch::channel(false).0);
    let (gate_api, gate_held, gate_open) = (api.clone(), held.clone(), open.clone());
    let email = email.to_owned();
    let router = api
        .router()
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let (api, held, open, email) = (
                gate_api.clone(),
                gate_held.clone(),
                gate_open.clone(),
                email.clone(),
            );
            async move {
                let search =
                    request.method() == "GET" && request.uri().path().matches('/').count() == 2;
                let gone = [
                    ("contacts", "email"),
                    ("events", "user"),
                    ("consents", "email"),
                ]
                .iter()
                .all(|(collection, field)| {
                    api.records(collection)
                        .iter()
                        .all(|r| r[*field] != json!(email))
                });
                if search && gone && !*open.borrow() {
                    held.notify_one();
                    let _ = open.subscribe().wait_for(|o| *o).await;
                }
                next.run(request).await
            }
        }));
    let (address, _server) = serve(router).await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), token).unwrap();
    HeldApi {
        api,
        address,
        held,
        open,
        _secret: secret,
    }
}

/// A crash after a system erased the subject's records but before the outcome was
/// recorded: after the restart the task runs again, finds nothing left to delete, and the
/// certificate tells it as it is: the counts of the run that succeeded (nothing deleted),
/// the interrupted attempt before it, and a verification that finds no record left.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_an_erasure_and_its_record_reruns_and_certifies_honestly() {
    let email = oubli::demo::api::person_email(2);
    let helpdesk = held_api("crash-token", &email).await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let demo = service.demo.clone();

    // Connect the helpdesk to the demo controller through the REST connector.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rest-system.toml");
    let mut config =
        oubli::runtime::SystemConfig::from_toml(&std::fs::read_to_string(example).unwrap())
            .unwrap();
    config.config["api"]["base_url"] = json!(format!("http://{}/api", helpdesk.address));
    config.capabilities.http.as_mut().unwrap().allow = vec![helpdesk.address.to_string()];
    config.secrets.get_mut("api_token").unwrap().env = None;
    config.secrets.get_mut("api_token").unwrap().file =
        Some(helpdesk._secret.path().display().to_string());
    let mut system = serde_json::to_value(&config).unwrap();
    system.as_object_mut().unwrap().remove("digest");
    system["plugin"] = json!(service.builtin_digest(&demo.admin, "rest").await);
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{}/systems", demo.controller_id),
            &demo.admin,
            system,
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let id = service
        .submit(
            "erasure",
            json!([{ "kind": "email", "value": email }]),
            None,
        )
        .await;
    approve(&service, &id).await;
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        helpdesk.held.notified(),
    )
    .await
    .expect("the verifying search after the erasure reaches the helpdesk");
    // The helpdesk erased contacts, events and consents; oubli has not recorded it.
    service.kill9();
    helpdesk.open.send_replace(true);

    let mut service = Service::start(dir.path(), &[]);
    service.demo = demo;
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");
    for (collection, field) in [
        ("contacts", "email"),
        ("events", "user"),
        ("consents", "email"),
    ] {
        assert!(
            helpdesk
                .api
                .records(collection)
                .iter()
                .all(|r| r[field] != json!(email)),
            "{collection} still holds the subject"
        );
    }
    let (status, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    let helpdesk_entry = signed["certificate"]["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "helpdesk")
        .cloned()
        .expect("the helpdesk is certified");
    let deleted: u64 = helpdesk_entry["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["deleted"].as_u64().unwrap())
        .sum();
    assert_eq!(deleted, 0, "the rerun deleted nothing: {helpdesk_entry}");
    assert_eq!(helpdesk_entry["runs"]["attempts"], 2, "{helpdesk_entry}");
    assert_eq!(
        helpdesk_entry["runs"]["earlier_attempts"],
        json!({ "interrupted": 1 }),
        "{helpdesk_entry}"
    );
    assert!(helpdesk_entry["runs"]["note"].is_string());
    // What is left is only what the plugin retains under a legal basis (the orders).
    let orders = helpdesk_entry["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "orders")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        helpdesk_entry["verification"]["records_remaining"], orders["retained"],
        "{helpdesk_entry}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_tasks_say_why_and_a_retry_runs_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[("OUBLI_MAX_ATTEMPTS", "2")]);
    let admin = service.demo.admin.clone();

    // A plugin uploaded through the API, for a controller that approves its DPO's requests.
    let (status, plugin) = service.upload_testkit(&admin, "testkit").await;
    assert_eq!(status, 201, "{plugin}");
    assert_eq!(plugin["info"]["name"], "testkit");
    assert!(
        plugin["info"]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("erase"))
    );
    let (status, error) = service
        .call(reqwest::Method::POST, "/v1/plugins?name=junk", &admin, None)
        .await;
    assert!(status == 422 || status == 400, "{status} {error}");

    let (_, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Flaky Org", "auto_approve": true }),
        )
        .await;
    let flaky = created["controller"]["id"].as_str().unwrap().to_owned();
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{flaky}/systems"),
            &admin,
            json!({ "name": "flaky", "plugin": plugin["digest"], "limits": { "memory_mb": 9999 } }),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("limits.memory_mb")),
        "{body}"
    );
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{flaky}/systems"),
            &admin,
            json!({ "name": "flaky", "plugin": plugin["digest"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dpo = service.token(&admin, "dpo", &flaky).await;

    let submit = |behaviour: &'static str| {
        let (service, dpo, flaky) = (&service, dpo.clone(), flaky.clone());
        async move {
            let body = json!({ "controller_id": flaky, "kind": "erasure", "identities": [{ "kind": "behaviour", "value": behaviour }] });
            let (status, request) = service.post("/v1/requests", &dpo, body).await;
            assert_eq!(status, 201, "{request}");
            assert_eq!(request["status"], "approved", "auto-approved: {request}");
            request["id"].as_str().unwrap().to_owned()
        }
    };
    let busy = submit("unavailable").await;
    let crash = submit("panic").await;
    let settle = |id: String| {
        let (service, dpo) = (&service, dpo.clone());
        async move {
            service
                .poll(&format!("/v1/requests/{id}"), &dpo, |r| {
                    r["status"] == "failed"
                })
                .await;
            service
                .get(&format!("/v1/requests/{id}/tasks"), &dpo)
                .await
                .1
        }
    };
    let tasks = settle(busy.clone()).await;
    assert_eq!(
        tasks["items"][0]["attempts"], 2,
        "retried up to the maximum: {tasks}"
    );
    assert_eq!(tasks["items"][0]["last_error_kind"], "unavailable");
    let tasks = settle(crash.clone()).await;
    assert_eq!(
        tasks["items"][0]["attempts"], 1,
        "a crash is not retried: {tasks}"
    );
    assert_eq!(tasks["items"][0]["last_error_kind"], "trap");
    assert!(
        tasks["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("panics on purpose"),
        "{tasks}"
    );

    let (status, request) = service
        .post(&format!("/v1/requests/{crash}/retry"), &dpo, json!({}))
        .await;
    assert_eq!(
        (status, request["status"].as_str()),
        (200, Some("running")),
        "{request}"
    );
    let tasks = settle(crash).await;
    assert_eq!(
        tasks["items"][0]["attempts"], 1,
        "the retry started from a fresh attempt: {tasks}"
    );
    let actions = service
        .actions(&format!("/v1/requests/{busy}/events"), &dpo)
        .await;
    assert!(
        ["task.retry_scheduled", "request.failed"]
            .iter()
            .all(|a| actions.iter().any(|b| b == a)),
        "{actions:?}"
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_erasure_has_a_signed_certificate_and_the_audit_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let id = service.submit("erasure", email(12), None).await;
    let (status, error) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    assert_eq!(
        status, 409,
        "no certificate before the erasure is done: {error}"
    );
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");

    let (status, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    let text = signed.to_string();
    assert!(
        !text.contains("customer12@example.org"),
        "the certificate holds no identity in clear"
    );
    let system = &signed["certificate"]["systems"][0];
    assert_eq!(system["plugin"]["name"], "sql");
    assert!(
        system["plugin"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let collections = system["collections"].as_array().unwrap();
    let invoices = collections
        .iter()
        .find(|c| c["name"] == "invoices")
        .unwrap();
    assert_eq!(invoices["retained"], 1);
    assert!(
        invoices["legal_bases"][0]
            .as_str()
            .unwrap()
            .contains("17(3)(b)")
    );
    assert_eq!(
        collections
            .iter()
            .find(|c| c["name"] == "customers")
            .unwrap()["deleted"],
        1
    );
    assert_eq!(
        signed["certificate"]["subject"]["identities"][0]["hmac_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    let (_, keys) = service.get("/v1/keys", "").await;
    let public_key = keys["keys"][0]["public_key"].as_str().unwrap().to_owned();
    let file = dir.path().join("certificate.json");
    let verify = |content: &Value| {
        std::fs::write(&file, content.to_string()).unwrap();
        std::process::Command::new(oubli_tests::oubli_binary())
            .args([
                "certificate",
                "verify",
                file.to_str().unwrap(),
                "--public-key",
                &public_key,
            ])
            .output()
            .unwrap()
    };
    let output = verify(&signed);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let mut forged = signed.clone();
    forged["certificate"]["systems"][0]["collections"][0]["deleted"] = 99.into();
    let output = verify(&forged);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("signature does not match"));

    // The signing key is rotated while the service is stopped: new certificates carry the
    // new key, and the old certificate still verifies with the retired key from /v1/keys.
    let demo = service.demo.clone();
    assert!(service.terminate());
    let rotated = std::process::Command::new(oubli_tests::oubli_binary())
        .args(["keys", "rotate-signing"])
        .env("OUBLI_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let rotated: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    let mut service = Service::start(dir.path(), &[]);
    service.demo = demo;
    let (_, keys) = service.get("/v1/keys", "").await;
    let listed: Vec<(&str, &str)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            (rotated["key_id"].as_str().unwrap(), "current"),
            (signed["signature"]["key_id"].as_str().unwrap(), "retired")
        ]
    );
    let (_, resigned) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    assert_eq!(resigned["signature"]["key_id"], rotated["key_id"]);
    let all: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["public_key"].as_str().unwrap())
        .collect();
    for certificate in [&signed, &resigned] {
        std::fs::write(&file, certificate.to_string()).unwrap();
        let output = std::process::Command::new(oubli_tests::oubli_binary())
            .args(["certificate", "verify", file.to_str().unwrap()])
            .args(all.iter().flat_map(|k| ["--public-key", k]))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }

    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(valid, "{report}");
    let (_, events) = service
        .get(
            &format!("/v1/audit?request_id={id}&action=request.approved"),
            &service.demo.admin,
        )
        .await;
    let approved = events["items"][0]["seq"].as_i64().unwrap();
    tamper(
        dir.path(),
        "UPDATE audit_events SET actor = 'token:someone-else' WHERE seq = $1",
        approved,
    )
    .await;
    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(!valid);
    assert_eq!(report["first_broken"], approved, "{report}");
}

/// An auditor keeps a signed head of the trail; removing events from the trail's end
/// leaves a chain that verifies on its own, but not against the kept head.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_head_finds_events_removed_from_the_end_of_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let id = service.submit("erasure", email(4), None).await;
    let (status, head) = service.get("/v1/audit/head", &service.demo.admin).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(head["certificate"]["type"], "oubli.audit-head");
    let (status, _) = service.get("/v1/audit/head", &service.demo.dpo).await;
    assert_eq!(status, 403, "only admins and auditors");
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
    assert!(service.terminate());

    let kept = dir.path().join("head.json");
    std::fs::write(&kept, head.to_string()).unwrap();
    let verify = |with_head: bool| {
        let head: &[&std::ffi::OsStr] = &["--head".as_ref(), kept.as_os_str()];
        audit_verify(dir.path(), if with_head { head } else { &[] }, &[])
    };
    assert!(verify(true).0, "{}", verify(true).1);

    // Cut the trail back to before the head.
    tamper(
        dir.path(),
        "DELETE FROM audit_events WHERE seq >= $1",
        head["certificate"]["seq"].as_i64().unwrap(),
    )
    .await;
    let (valid, report) = verify(false);
    assert!(
        valid,
        "a chain cut at its end still verifies alone: {report}"
    );
    let (valid, report) = verify(true);
    assert!(!valid);
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("removed from its end"),
        "{report}"
    );
}

/// Removes the data key files of a stopped service; returns how many there were.
fn remove_data_keys(dir: &std::path::Path) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir.join("keys")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("data-")
        {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    removed
}

/// A process without the data key that sealed open requests refuses to start, naming the
/// key, instead of failing those requests one by one; a key missing only for closed
/// requests does not stop it, and those requests say why their subject is unreadable.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_without_the_data_key_of_open_requests_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    service.submit("erasure", email(8), None).await;
    assert!(service.terminate());
    assert_eq!(remove_data_keys(dir.path()), 1);
    let output = std::process::Command::new(oubli_tests::oubli_binary())
        .arg("serve")
        .env("OUBLI_DATA_DIR", dir.path())
        .env("OUBLI_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("sealed with data key") && error.contains("data-*.key"),
        "{error}"
    );

    let closed = tempfile::tempdir().unwrap();
    let service = Service::start(closed.path(), &[]);
    let id = service.submit("erasure", email(8), None).await;
    let (status, body) = service
        .post(
            &format!("/v1/requests/{id}/cancel"),
            &service.demo.dpo,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let demo = service.demo.clone();
    assert!(service.terminate());
    assert_eq!(remove_data_keys(closed.path()), 1);
    let mut service = Service::start(closed.path(), &[]);
    service.demo = demo;
    let (status, request) = service
        .get(&format!("/v1/requests/{id}"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200, "{request}");
    assert!(
        request["subject_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not have")),
        "{request}"
    );
    assert_eq!(request["identities"], json!([]));
}

/// Keys given in the environment (as a container platform's secrets would be) replace
/// the keys folder's: `/v1/keys` serves the given signing key and no key file is made.
#[tokio::test(flavor = "multi_thread")]
async fn keys_can_come_from_the_environment() {
    let generate = || {
        let output = std::process::Command::new(oubli_tests::oubli_binary())
            .args(["keys", "generate"])
            .output()
            .unwrap();
        assert!(output.status.success());
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let (signing, hash) = (generate(), generate());
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("OUBLI_SIGNING_KEY", signing["key"].as_str().unwrap()),
        ("OUBLI_IDENTITY_HASH_KEY", hash["key"].as_str().unwrap()),
    ];
    let purging = [
        ("OUBLI_ACCESS_LOG_RETENTION_DAYS", "0"),
        ("OUBLI_PURGE_INTERVAL_SECS", "1"),
    ];
    let service = Service::start(dir.path(), &[env.as_slice(), &purging].concat());
    let (status, keys) = service.get("/v1/keys", &service.demo.dpo).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(
        keys["keys"][0]["key_id"],
        signing["as_signing_key"]["key_id"]
    );
    assert_eq!(
        keys["keys"][0]["public_key"],
        signing["as_signing_key"]["public_key"]
    );
    assert!(!dir.path().join("keys/signing.ed25519").exists());
    assert!(!dir.path().join("keys/identity-hash.key").exists());
    // A read of a request is purged behind a checkpoint signed with the environment's key.
    let id = service.submit("erasure", email(6), None).await;
    let (status, _) = service
        .get(&format!("/v1/requests/{id}"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200);
    service.checkpoint().await;
    assert!(service.terminate());
    let (valid, report) = audit_verify(dir.path(), &[], &env);
    assert!(valid, "{report}");
    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(
        !valid,
        "without the key, the checkpoints cannot be verified: {report}"
    );
    // Rotating a key given in the environment is the operator's move: the command says how.
    let output = std::process::Command::new(oubli_tests::oubli_binary())
        .args(["keys", "rotate-signing"])
        .env("OUBLI_DATA_DIR", dir.path())
        .envs(env)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("OUBLI_RETIRED_SIGNING_KEYS"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scoped_tokens_see_only_their_controllers_audit_events() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
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
    let service = Service::start(dir.path(), &[]);
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
    let service = Service::start(
        dir.path(),
        &[
            ("OUBLI_PACKAGE_TTL_DAYS", "0"),
            ("OUBLI_PURGE_INTERVAL_SECS", "1"),
        ],
    );
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

/// Past their retention periods (0 days here), a closed request keeps only keyed hashes
/// of its subject's identities, and the access log is purged behind a signed checkpoint
/// that `oubli audit verify` accepts.
#[tokio::test(flavor = "multi_thread")]
async fn past_retention_identities_become_hashes_and_the_access_log_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[
            ("OUBLI_SUBJECT_RETENTION_DAYS", "0"),
            ("OUBLI_ACCESS_LOG_RETENTION_DAYS", "0"),
            ("OUBLI_PURGE_INTERVAL_SECS", "1"),
        ],
    );
    let admin = &service.demo.admin;
    let erasure = service.submit("erasure", email(5), None).await;
    // Open requests keep their identities, sealed at rest.
    let (_, open) = service
        .get(&format!("/v1/requests/{erasure}"), &service.demo.dpo)
        .await;
    assert_eq!(open["identities"][0]["value"], "customer5@example.org");
    let stored = || async {
        use sqlx::Connection;
        let db = format!("sqlite://{}?mode=ro", dir.path().join("oubli.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let text: String = sqlx::query_scalar("SELECT identities FROM requests WHERE id = $1")
            .bind(&erasure)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        text
    };
    let sealed = stored().await;
    assert!(
        sealed.starts_with("sealed:v1:") && !sealed.contains("customer5"),
        "{sealed}"
    );

    approve(&service, &erasure).await;
    assert_eq!(service.settled(&erasure).await["status"], "completed");
    let redacted = service
        .poll(&format!("/v1/requests/{erasure}"), admin, |r| {
            r["subject_redacted_at"].is_string()
        })
        .await;
    let identity = &redacted["identities"][0];
    assert_eq!(identity["kind"], "email");
    assert!(identity.get("value").is_none(), "{redacted}");
    let hashed = stored().await;
    assert!(!hashed.contains("customer5"), "{hashed}");
    // The certificate is still issued, with the same keyed hash.
    let (status, certificate) = service
        .get(
            &format!("/v1/requests/{erasure}/certificate"),
            &service.demo.dpo,
        )
        .await;
    assert_eq!(status, 200, "{certificate}");
    // The hash of the address under the service's identity-hash key, computed here.
    let keys = oubli::crypto::Keys::load_or_create(&dir.path().join("keys")).unwrap();
    let expected = keys.identity_hash("email", "customer5@example.org");
    assert_eq!(identity["hmac_sha256"], expected.as_str());
    assert_eq!(
        certificate["certificate"]["subject"]["identities"][0]["hmac_sha256"],
        expected.as_str()
    );
    // Redacted, it cannot be retried.
    let (status, body) = service
        .post(
            &format!("/v1/requests/{erasure}/retry"),
            &service.demo.dpo,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("keyed hashes"),
        "{body}"
    );

    // The reads above are access-log events: purged, with a checkpoint in their place.
    let signed = service.checkpoint().await;
    assert!(signed["certificate"]["purged"]["events"].as_u64().unwrap() >= 1);
    let actions = service
        .actions(&format!("/v1/audit?request_id={erasure}"), admin)
        .await;
    assert!(
        ["request.completed", "request.subject_redacted"]
            .iter()
            .all(|a| actions.iter().any(|b| b == a)),
        "{actions:?}"
    );
    assert!(service.terminate(), "the service stops cleanly");
    // No access-log event older than what the last checkpoint purged is left.
    let reads: i64 = {
        use sqlx::Connection;
        let db = format!("sqlite://{}?mode=ro", dir.path().join("oubli.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let last: String = sqlx::query_scalar(
            "SELECT details FROM audit_events WHERE action = 'audit.purged' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let last: Value = serde_json::from_str(&last).unwrap();
        let reads: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE at < $1 AND action IN ('request.read', 'requests.listed', 'package.downloaded')",
        )
        .bind(last["certificate"]["purged"]["before"].as_i64().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        reads
    };
    assert_eq!(reads, 0);
    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(valid, "{report}");
    // Without the right key, the checkpoints do not verify.
    let other = tempfile::tempdir().unwrap();
    let stranger = oubli::crypto::Keys::load_or_create(other.path()).unwrap();
    let stranger = stranger.public().public_key;
    let (valid, report) = audit_verify(
        dir.path(),
        &["--public-key".as_ref(), stranger.as_ref()],
        &[],
    );
    assert!(!valid);
    assert!(
        report["message"].as_str().unwrap().contains("checkpoint"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_hold_no_identity_and_no_exported_value() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[(
            "OUBLI_LOG",
            "debug,cranelift_codegen=warn,wasmtime=warn,wasmtime_cranelift=warn",
        )],
    );
    let access = service.submit("access", email(7), None).await;
    let erasure = service.submit("erasure", email(9), None).await;
    let change = json!([{ "collection": "customers", "field": "city", "value": "Saint-Malo" }]);
    let rectify = service
        .submit("rectification", email(8), Some(change))
        .await;
    for id in [&access, &erasure, &rectify] {
        approve(&service, id).await;
        assert_eq!(service.settled(id).await["status"], "completed");
    }
    let (status, _) = service
        .get(&format!("/v1/requests/{access}/package"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200);
    let (status, _) = service
        .get(&format!("/v1/requests/{access}/results"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200);
    let logs = service.output();
    assert!(
        logs.lines().count() > 10,
        "debug logs were written:\n{logs}"
    );
    // Identities, exported values (customer 7's phone, city, gift message) and the new
    // value of a rectification.
    for secret in [
        "customer7@example.org",
        "customer9@example.org",
        "customer8@example.org",
        "+33 6 00 00 00 07",
        "Saint-Malo",
        "Bon anniversaire",
    ] {
        assert!(!logs.contains(secret), "the logs hold {secret:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_fail_their_own_tasks_while_other_systems_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[("OUBLI_MAX_ATTEMPTS", "1"), ("OUBLI_LOG", "info")],
    );
    let admin = service.demo.admin.clone();
    let (status, body) = service.upload_testkit(&admin, "builtin:sql").await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    let (status, plugin) = service.upload_testkit(&admin, "testkit").await;
    assert_eq!(status, 201, "{plugin}");

    let (_, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Hostile Org", "auto_approve": true }),
        )
        .await;
    let hostile = created["controller"]["id"].as_str().unwrap().to_owned();
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{hostile}/systems"),
            &admin,
            json!({ "name": "hostile", "plugin": plugin["digest"], "limits": { "timeout_ms": 1000 }, "capabilities": { "host": true } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dpo = service.token(&admin, "dpo", &hostile).await;
    let submit = |kind: &'static str, behaviour: &'static str| {
        let (service, dpo, hostile) = (&service, dpo.clone(), hostile.clone());
        async move {
            let body = json!({ "controller_id": hostile, "kind": kind, "identities": [{ "kind": "behaviour", "value": behaviour }] });
            let (status, request) = service.post("/v1/requests", &dpo, body).await;
            assert_eq!(status, 201, "{request}");
            request["id"].as_str().unwrap().to_owned()
        }
    };
    // Every worker busy with a plugin that sleeps far past its deadline, and one whose
    // export never ends.
    let mut sleepers = Vec::new();
    for _ in 0..4 {
        sleepers.push(submit("erasure", "sleep").await);
    }
    let endless = submit("access", "endless").await;
    // And one that writes 100,000 lines of 1 kB (100 MB) to the log.
    let noisy = submit("erasure", "log-flood").await;
    // And one whose reply names 4 GiB through strings that alias one guest buffer.
    let aliasing = submit("erasure", "alias").await;

    // Meanwhile the demo CRM is served.
    let started = std::time::Instant::now();
    let ordinary = service
        .submit(
            "access",
            json!([{ "kind": "email", "value": "customer7@example.org" }]),
            None,
        )
        .await;
    let (status, _) = service
        .post(
            &format!("/v1/requests/{ordinary}/approve"),
            &service.demo.controller,
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let request = service.settled(&ordinary).await;
    assert_eq!(request["status"], "completed", "{request}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the ordinary request waited {:?}",
        started.elapsed()
    );

    let task = |id: String| {
        let (service, dpo) = (&service, dpo.clone());
        async move {
            service
                .poll(&format!("/v1/requests/{id}"), &dpo, |r| {
                    r["status"] == "failed"
                })
                .await;
            service
                .get(&format!("/v1/requests/{id}/tasks"), &dpo)
                .await
                .1["items"][0]
                .clone()
        }
    };
    for id in sleepers {
        let task = task(id).await;
        assert_eq!(task["last_error_kind"], "timeout", "{task}");
        assert!(
            task["last_error"].as_str().unwrap().contains("1000 ms"),
            "{task}"
        );
    }
    let exported = task(endless).await;
    assert_eq!(exported["last_error_kind"], "failed", "{exported}");
    assert!(
        exported["last_error"].as_str().unwrap().contains("64 MiB"),
        "{exported}"
    );

    let aliased = task(aliasing).await;
    assert_eq!(aliased["last_error_kind"], "failed", "{aliased}");
    assert!(
        aliased["last_error"]
            .as_str()
            .unwrap()
            .contains("more than 32 MiB at once"),
        "{aliased}"
    );

    // The log flood was cut to the call's limit and reported once.
    service
        .poll(&format!("/v1/requests/{noisy}"), &dpo, |r| {
            r["status"] == "failed"
        })
        .await;
    let output = service.output();
    assert!(
        output.contains("than its limit of 200 lines"),
        "the dropped lines are not reported"
    );
    assert!(
        output.len() < 2 << 20,
        "the service wrote {} bytes of output",
        output.len()
    );

    // The service's peak memory stayed bounded (VmHWM, in kB).
    let status = std::fs::read_to_string(format!("/proc/{}/status", service.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 768 * 1024, "the service peaked at {peak_kb} kB");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_created_twice_at_once_give_one_conflict_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
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
