//! Suppression lists and objections, and requests that wait (`not_before`): an erased
//! or objecting person is found on the list however their address or number is written,
//! one at a time or in a campaign file of 100,000 rows, and nothing of them is stored
//! but keyed hashes.

use super::approve;
use base64::Engine as _;
use oubli_tests::{Service, count};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn check(service: &Service, token: &str, identities: Value) -> Vec<Value> {
    let body = json!({ "controller_id": service.demo.controller_id, "identities": identities });
    let (status, answer) = service.post("/v1/suppression/check", token, body).await;
    assert_eq!(status, 200, "{answer}");
    answer["results"].as_array().expect("results").clone()
}

fn suppressed(results: &[Value]) -> Vec<Value> {
    results.iter().map(|r| r["suppressed"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_or_objecting_person_is_suppressed_however_written() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let demo = service.demo.clone();
    let list = format!("/v1/controllers/{}/suppression", demo.controller_id);
    let objection = |n: u64| {
        json!({ "controller_id": demo.controller_id, "kind": "objection",
                "identities": [{ "kind": "email", "value": format!("customer{n}@example.org") }] })
    };

    // No list yet: an objection would be recorded nowhere, so it is refused.
    let (status, refused) = service.post("/v1/requests", &demo.dpo, objection(7)).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["field"], "kind");
    let (status, state) = service.get(&list, &demo.controller).await;
    assert_eq!(
        (status, state["kept"].clone()),
        (200, json!(false)),
        "{state}"
    );

    // Only the controller (or an admin) starts it; a region is checked.
    let start =
        json!({ "purpose": "no marketing after an erasure or an objection", "phone_region": "FR" });
    let (status, _) = service
        .call(reqwest::Method::PUT, &list, &demo.dpo, Some(start.clone()))
        .await;
    assert_eq!(status, 403);
    let (status, wrong) = service
        .call(
            reqwest::Method::PUT,
            &list,
            &demo.controller,
            Some(json!({ "purpose": "x", "phone_region": "ZZ" })),
        )
        .await;
    assert_eq!(
        (status, wrong["field"].clone()),
        (422, json!("phone_region"))
    );
    let (status, settings) = service
        .call(reqwest::Method::PUT, &list, &demo.controller, Some(start))
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["entries"], 0);

    // An erasure by e-mail and phone: once completed, both are on the list.
    let erasure = json!({ "controller_id": demo.controller_id, "kind": "erasure", "identities": [
        { "kind": "email", "value": "customer5@example.org" },
        { "kind": "phone", "value": "+33 6 00 00 00 05" } ] });
    let (status, request) = service.post("/v1/requests", &demo.dpo, erasure).await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");

    let digest = hex::encode(Sha256::digest(b"customer5@example.org"));
    let results = check(
        &service,
        &demo.dpo,
        json!([
            { "kind": "email", "value": "  Customer5@EXAMPLE.org " },
            { "kind": "phone", "value": "06.00.00.00.05" },
            { "kind": "phone", "value": "0033 600 000 005" },
            { "kind": "email", "sha256": digest },
            { "kind": "email", "value": "customer6@example.org" },
            { "kind": "phone", "value": "12" },
        ]),
    )
    .await;
    assert_eq!(
        suppressed(&results),
        [
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!(false),
            Value::Null
        ],
        "{results:?}"
    );
    assert!(results[5]["error"].as_str().unwrap().contains("phone"));

    // A kind no system knows (a capitalised one) would be "not suppressed" without a
    // check: it is refused, as is a controller without a list.
    let (status, refused) = service
        .post(
            "/v1/suppression/check",
            &demo.dpo,
            json!({ "controller_id": demo.controller_id, "identities": [{ "kind": "Email", "value": "customer5@example.org" }] }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("identities[0].kind")),
        "{refused}"
    );
    let (status, refused) = service
        .post(
            "/v1/suppression/check",
            &demo.dpo,
            json!({ "controller_id": "nobody", "identities": [{ "kind": "email", "value": "a@b.c" }] }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("controller_id")),
        "{refused}"
    );

    // An objection erases nothing and puts the subject on the list once approved.
    let (status, request) = service.post("/v1/requests", &demo.dpo, objection(7)).await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(
        check(
            &service,
            &demo.controller,
            json!([{ "kind": "email", "value": "customer7@example.org" }])
        )
        .await[0]["suppressed"],
        false,
        "not before the controller approves"
    );
    approve(&service, &id).await;
    let done = service.settled(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        done["status_detail"]
            .as_str()
            .unwrap()
            .contains("suppression list")
    );
    assert_eq!(count(&demo.crm, "customers", "id = 7").await, 1);
    let (_, tasks) = service
        .get(&format!("/v1/requests/{id}/tasks"), &demo.dpo)
        .await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 0, "{tasks}");

    // A campaign file of 100,000 rows, flagged row by row.
    let mut file = String::from("name,email,Mobile\n");
    for n in 0..100_000u64 {
        let (email, mobile) = match n {
            50_000 => ("CUSTOMER5@example.org".to_owned(), String::new()),
            60_000 => (
                "someone@example.net".to_owned(),
                "+33 6 00 00 00 05".to_owned(),
            ),
            70_000 => ("customer7@example.org".to_owned(), String::new()),
            80_000 => (String::new(), "06 12".to_owned()),
            90_000 => (String::new(), String::new()),
            _ => (
                format!("prospect{n}@example.net"),
                format!(
                    "06 {:02} {:02} {:02} {:02}",
                    n / 1_000_000 % 100 + 10,
                    n / 10_000 % 100,
                    n / 100 % 100,
                    n % 100
                ),
            ),
        };
        file.push_str(&format!("\"Prospect, {n}\",{email},{mobile}\n"));
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let response = client
        .post(format!("{}/v1/suppression/check.csv", service.url))
        .query(&[
            ("controller_id", demo.controller_id.as_str()),
            ("column", "email"),
            ("column", "Mobile:phone"),
        ])
        .bearer_auth(&demo.dpo)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let flagged = response.text().await.unwrap();
    eprintln!("bulk check of 100,000 rows: {:?}", started.elapsed());
    let mut reader = csv::Reader::from_reader(flagged.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["name", "email", "Mobile", "suppressed"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 100_000);
    let flags: Vec<(usize, &str)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| &r[3] != "no")
        .map(|(i, r)| (i, &r[3]))
        .collect();
    assert_eq!(
        flags,
        [
            (50_000, "yes"),
            (60_000, "yes"),
            (70_000, "yes"),
            (80_000, "unreadable"),
            (90_000, "empty")
        ]
    );
    assert_eq!(
        &rows[12][0], "Prospect, 12",
        "the rest of a row is kept as it was"
    );

    // A header the file lacks is named before anything is streamed.
    let response = client
        .post(format!("{}/v1/suppression/check.csv", service.url))
        .query(&[
            ("controller_id", demo.controller_id.as_str()),
            ("column", "phone"),
        ])
        .bearer_auth(&demo.dpo)
        .body("name,email\nx,y\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["field"], "column", "{error}");

    // A quote never closed, then many short rows: the row grows past 64 KiB and the
    // answer breaks off rather than the service holding the rest of the body.
    let mut unclosed = String::from("name,email\n\"never closed,a@example.org\n");
    for n in 0..10_000 {
        unclosed.push_str(&format!("p{n},p{n}@example.net\n"));
    }
    let sent = client
        .post(format!("{}/v1/suppression/check.csv", service.url))
        .query(&[
            ("controller_id", demo.controller_id.as_str()),
            ("column", "email"),
        ])
        .bearer_auth(&demo.dpo)
        .body(unclosed)
        .send()
        .await;
    // No row of the answer is complete, so it may break off before its head is sent,
    // or after: either way it is cut, never ended as if whole.
    match sent {
        Err(e) => assert!(e.is_request(), "{e}"),
        Ok(response) => {
            assert_eq!(response.status(), 200);
            assert!(
                response.text().await.is_err(),
                "the answer is cut, not ended as if whole"
            );
        }
    }

    // The controller takes someone off, with a reason.
    let (status, removed) = service
        .post(
            "/v1/suppression/remove",
            &demo.controller,
            json!({ "controller_id": demo.controller_id, "reason": "consented again on 2026-12-06",
                    "identities": [{ "kind": "email", "value": "customer7@example.org" }] }),
        )
        .await;
    assert_eq!(
        (status, removed["removed"].clone()),
        (200, json!(1)),
        "{removed}"
    );
    assert_eq!(
        check(
            &service,
            &demo.controller,
            json!([{ "kind": "email", "value": "customer7@example.org" }])
        )
        .await[0]["suppressed"],
        false
    );

    // Only keyed hashes are stored, and once on the list not kept with the requests too;
    // every step is in the audit trail.
    assert_eq!(
        count(
            &dir.path().join("oubli.db"),
            "requests",
            "suppression_hashes IS NOT NULL"
        )
        .await,
        0
    );
    let mut stored = std::fs::read(dir.path().join("oubli.db")).unwrap();
    for file in ["oubli.db-wal", "oubli.db-shm"] {
        stored.extend(std::fs::read(dir.path().join(file)).unwrap_or_default());
    }
    for clear in [
        b"customer5@example.org".as_slice(),
        digest.as_bytes(),
        b"+33600000005",
    ] {
        assert!(
            !stored.windows(clear.len()).any(|w| w == clear),
            "{} is stored",
            String::from_utf8_lossy(clear)
        );
    }
    for (action, times) in [
        ("suppression.configured", 1),
        ("suppression.added", 2),
        // Four checks and the cut bulk check, recorded as incomplete.
        ("suppression.checked", 5),
        ("suppression.removed", 1),
    ] {
        // The bulk check is recorded when its thread is done, just after the answer.
        service
            .poll(&format!("/v1/audit?action={action}"), &demo.admin, |page| {
                page["items"].as_array().unwrap().len() == times
            })
            .await;
    }

    // Under another identity hash key no entry can match: a check is refused, never
    // answered "not suppressed".
    assert!(service.terminate());
    let other_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut service = Service::start(dir.path(), &[("OUBLI_IDENTITY_HASH_KEY", &other_key)]);
    service.demo = demo.clone();
    let (status, refused) = service
        .post(
            "/v1/suppression/check",
            &demo.dpo,
            json!({ "controller_id": demo.controller_id, "identities": [{ "kind": "email", "value": "customer5@example.org" }] }),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("identity hash key"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waits_until_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let demo = service.demo.clone();
    let body = |not_before: chrono::DateTime<chrono::Utc>| {
        json!({ "controller_id": demo.controller_id, "kind": "erasure", "not_before": not_before,
                "identities": [{ "kind": "email", "value": "customer3@example.org" }] })
    };
    let (status, refused) = service
        .post(
            "/v1/requests",
            &demo.dpo,
            json!({ "controller_id": demo.controller_id, "kind": "objection", "not_before": chrono::Utc::now(),
                    "identities": [{ "kind": "email", "value": "customer3@example.org" }] }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("not_before")),
        "{refused}"
    );
    let late = chrono::Utc::now() + chrono::Duration::days(40);
    let (status, refused) = service.post("/v1/requests", &demo.dpo, body(late)).await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("not_before")),
        "{refused}"
    );

    let not_before = chrono::Utc::now() + chrono::Duration::seconds(3);
    let (status, request) = service
        .post("/v1/requests", &demo.dpo, body(not_before))
        .await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    assert!(request["not_before"].is_string(), "{request}");
    approve(&service, &id).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (_, waiting) = service.get(&format!("/v1/requests/{id}"), &demo.dpo).await;
    assert_eq!(waiting["status"], "approved", "{waiting}");
    assert_eq!(count(&demo.crm, "customers", "id = 3").await, 1);

    let done = service.settled(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let completed: chrono::DateTime<chrono::Utc> =
        done["completed_at"].as_str().unwrap().parse().unwrap();
    assert!(
        completed >= not_before,
        "completed at {completed}, before {not_before}"
    );
    assert_eq!(count(&demo.crm, "customers", "id = 3").await, 0);
}
