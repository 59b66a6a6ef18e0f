//! The OpenDSR API driven by a client written from the specification (opengdpr/OpenDSR,
//! `specification.md`), not from oubli's code: discovery, the processor's certificate,
//! an erasure with the specification's example payload, signed status callbacks through
//! completion, the status, a cancellation, the earlier OpenGDPR path, and refusals
//! naming the field. Every signature is checked with the public key of the certificate
//! the discovery points to (RSASSA-PKCS1-v1_5, SHA-256, over the body's bytes).

use super::receiver;
use base64::Engine as _;
use oubli_tests::Service;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use x509_cert::der::{DecodePem, Encode};

/// The processor's public key, from the certificate at the discovery's address.
async fn processor_key(certificate_url: &str) -> VerifyingKey<sha2::Sha256> {
    let pem = reqwest::get(certificate_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let certificate = x509_cert::Certificate::from_pem(pem.as_bytes()).expect("an X.509 PEM");
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    VerifyingKey::new(rsa::RsaPublicKey::from_public_key_der(&spki).expect("an RSA key"))
}

fn verifies(key: &VerifyingKey<sha2::Sha256>, signature: &str, body: &[u8]) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify(body, &signature).is_ok()
}

/// A raw call: status, headers, body bytes.
async fn call(
    service: &Service,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", service.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A call whose answer must carry the processor's signature in `signature`: its status
/// and body.
async fn signed_call(
    service: &Service,
    key: &VerifyingKey<sha2::Sha256>,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    signature: &str,
) -> (u16, String) {
    let (status, headers, body) = call(service, method, path, token, body).await;
    assert!(
        verifies(key, &header(&headers, signature), body.as_bytes()),
        "{path}: {body}"
    );
    (status, body)
}

/// The specification's example request (§7.2), made valid JSON, with `regulation` as
/// its README's example has it, for `id`, `email` and `callback`.
fn example(id: &str, email: &str, callback: &str) -> Value {
    json!({
        "regulation": "gdpr",
        "subject_request_id": id,
        "subject_request_type": "erasure",
        "submitted_time": "2018-10-02T15:00:00Z",
        "subject_identities": [
            { "identity_type": "email", "identity_value": email, "identity_format": "raw" }
        ],
        "api_version": "2.0",
        "status_callback_urls": [callback],
        "extensions": {
            "example-processor.com": { "foo-processor-custom-id": 123456, "property_id": "123456" },
            "example-other-processor.com": { "foo-other-processor-custom-id": 654321 }
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opendsr_controller_erases_through_the_specification_and_checks_every_signature() {
    let dir = tempfile::tempdir().unwrap();
    // The callbacks go to this machine, which oubli refuses unless told otherwise.
    let service =
        Service::spawn_app(dir.path(), &[("OUBLI_OPENDSR_PRIVATE_CALLBACKS", "true")]).await;
    let demo = service.demo.clone();
    let (callback_url, received, _receiver) = receiver(0).await;

    // Discovery, signed with the key of the certificate it names.
    let (status, headers, body) = call(
        &service,
        reqwest::Method::GET,
        "/opendsr/v1/discovery",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let discovery: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["api_version"], "2.0");
    assert!(
        discovery["supported_identities"]
            .as_array()
            .unwrap()
            .contains(&json!({ "identity_type": "email", "identity_format": "raw" })),
        "{discovery}"
    );
    assert_eq!(
        discovery["supported_subject_request_types"],
        json!(["erasure", "access", "portability"])
    );
    let key = processor_key(discovery["processor_certificate"].as_str().unwrap()).await;
    assert!(verifies(
        &key,
        &header(&headers, "x-opendsr-signature"),
        body.as_bytes()
    ));
    let domain = header(&headers, "x-opendsr-processor-domain");
    assert_eq!(domain, "127.0.0.1");

    // The controller's own erasure: received, approved by its sender, carried out.
    let id = "a7551968-d5d6-44b2-9831-815ac9017798";
    let sent = example(id, "customer4@example.org", &callback_url).to_string();
    let (status, body) = signed_call(
        &service,
        &key,
        reqwest::Method::POST,
        "/opendsr/v1/requests",
        Some(&demo.controller),
        Some(sent.clone()),
        "x-opendsr-signature",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["subject_request_id"], id);
    assert_eq!(created["controller_id"], demo.controller_id.as_str());
    let encoded = base64::engine::general_purpose::STANDARD
        .decode(created["encoded_request"].as_str().unwrap())
        .unwrap();
    assert_eq!(encoded, sent.as_bytes(), "the request as received");
    assert!(verifies(
        &key,
        created["processor_signature"].as_str().unwrap(),
        sent.as_bytes()
    ));
    // The month runs from when the subject asked the controller (`submitted_time`), not
    // from oubli's receipt: this one was overdue on arrival.
    assert_eq!(created["expected_completion_time"], "2018-11-02T15:00:00Z");
    for field in ["expected_completion_time", "received_time"] {
        chrono::DateTime::parse_from_rfc3339(created[field].as_str().unwrap()).unwrap();
    }
    // Sent again (its answer lost): the same request.
    let (status, _, again) = call(
        &service,
        reqwest::Method::POST,
        "/opendsr/v1/requests",
        Some(&demo.controller),
        Some(sent.clone()),
    )
    .await;
    assert_eq!(status, 201, "{again}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["received_time"], created["received_time"]);

    // Callbacks through completion, each signed and naming this endpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let done = received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b.contains("\"completed\""));
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed callback"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let told: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, body)| {
            let signature = headers
                .get("x-opendsr-signature")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(verifies(&key, signature, body.as_bytes()), "{body}");
            assert_eq!(
                headers.get("x-opendsr-processor-domain").unwrap(),
                domain.as_str()
            );
            let callback: Value = serde_json::from_str(body).unwrap();
            assert_eq!(callback["status_callback_url"], callback_url.as_str());
            assert!(
                callback["extensions"][domain.as_str()]["status"].is_string(),
                "{callback}"
            );
            assert_eq!(callback["subject_request_id"], id);
            assert_eq!(callback["controller_id"], demo.controller_id.as_str());
            callback["request_status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(told, ["pending", "in_progress", "completed"]);
    let crm_left =
        oubli_tests::count(&demo.crm, "customers", "email = 'customer4@example.org'").await;
    assert_eq!(crm_left, 0, "erased");

    let (status, body) = signed_call(
        &service,
        &key,
        reqwest::Method::GET,
        &format!("/opendsr/v1/requests/{id}"),
        Some(&demo.controller),
        None,
        "x-opendsr-signature",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["request_status"], "completed");
    // Completed is not cancellable.
    let (status, _, body) = call(
        &service,
        reqwest::Method::DELETE,
        &format!("/opendsr/v1/requests/{id}"),
        Some(&demo.controller),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // A portability request's results are at its results_url, for the controller that
    // sent it.
    let copy = "3f2c1d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f";
    let mut portable = example(copy, "customer7@example.org", &callback_url);
    portable["subject_request_type"] = json!("portability");
    let (status, body) = signed_call(
        &service,
        &key,
        reqwest::Method::POST,
        "/opendsr/v1/requests",
        Some(&demo.controller),
        Some(portable.to_string()),
        "x-opendsr-signature",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let results_url = loop {
        let (_, _, body) = call(
            &service,
            reqwest::Method::GET,
            &format!("/opendsr/v1/requests/{copy}"),
            Some(&demo.controller),
            None,
        )
        .await;
        let state: Value = serde_json::from_str(&body).unwrap();
        if state["request_status"] == "completed" {
            break state["results_url"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let package = reqwest::Client::new()
        .get(&results_url)
        .bearer_auth(&demo.controller)
        .send()
        .await
        .unwrap();
    assert_eq!(package.status(), 200);
    assert!(
        package
            .text()
            .await
            .unwrap()
            .contains("customer7@example.org")
    );

    // A DPO's request through the earlier path (no `regulation`) waits for the
    // controller, and is cancelled while pending.
    let other = "0b9b6a3e-8f53-4a1e-9c55-3f0b7e2d1c44";
    let mut earlier = example(other, "customer5@example.org", &callback_url);
    earlier.as_object_mut().unwrap().remove("regulation");
    earlier["api_version"] = json!("1.0");
    earlier["extensions"] = json!({ domain.clone(): { "controller_id": demo.controller_id } });
    let (status, body) = signed_call(
        &service,
        &key,
        reqwest::Method::POST,
        "/opendsr/v1/opengdpr_requests",
        Some(&demo.dpo),
        Some(earlier.to_string()),
        "x-opengdpr-signature",
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, _, body) = call(
        &service,
        reqwest::Method::GET,
        &format!("/opendsr/v1/opengdpr_requests/{other}"),
        Some(&demo.dpo),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["request_status"],
        "pending"
    );
    // An extension adds to the month that ran from `submitted_time`.
    let (_, listed) = service.get("/v1/requests?limit=500", &demo.dpo).await;
    let oubli_id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["external_ref"] == format!("opendsr:{other}"))
        .expect("the OpenDSR request among the DPO's")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, extended) = service
        .post(
            &format!("/v1/requests/{oubli_id}/extend"),
            &demo.dpo,
            json!({ "months": 1, "reason": "several systems to search" }),
        )
        .await;
    assert_eq!(status, 200, "{extended}");
    let (_, _, body) = call(
        &service,
        reqwest::Method::GET,
        &format!("/opendsr/v1/requests/{other}"),
        Some(&demo.dpo),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["expected_completion_time"],
        "2018-12-02T15:00:00Z"
    );
    // Only its sender (or an admin) cancels it: the controller rejects instead.
    let (status, _, body) = call(
        &service,
        reqwest::Method::DELETE,
        &format!("/opendsr/v1/requests/{other}"),
        Some(&demo.controller),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = signed_call(
        &service,
        &key,
        reqwest::Method::DELETE,
        &format!("/opendsr/v1/requests/{other}"),
        Some(&demo.dpo),
        None,
        "x-opendsr-signature",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // Sent again after a lost answer: the same answer.
    let (status, _, body) = call(
        &service,
        reqwest::Method::DELETE,
        &format!("/opendsr/v1/requests/{other}"),
        Some(&demo.dpo),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !received
        .lock()
        .unwrap()
        .iter()
        .any(|(_, b)| b.contains(other) && b.contains("\"cancelled\""))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no cancelled callback"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Refusals: 400 with the specification's error object naming the field.
    let refused = |mut body: Value, change: &dyn Fn(&mut Value)| {
        change(&mut body);
        body.to_string()
    };
    let fresh = "5d1c3b7e-2a4f-4c8e-9b6d-1e2f3a4b5c6d";
    for (body, field) in [
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["subject_request_id"] = json!("A7551968-D5D6-44B2-9831-815AC9017798")
            }),
            "subject_request_id",
        ),
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b.as_object_mut().unwrap().remove("regulation");
            }),
            "regulation",
        ),
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["subject_identities"][0]["identity_format"] = json!("sha256")
            }),
            "subject_identities[0].identity_format",
        ),
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["subject_request_type"] = json!("rectification")
            }),
            "subject_request_type",
        ),
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["status_callback_urls"] = json!(["ftp://example.org/x"])
            }),
            "status_callback_urls[0]",
        ),
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["submitted_time"] = json!(17)
            }),
            "submitted_time",
        ),
        // The same id with another request.
        (
            example(id, "customer6@example.org", &callback_url).to_string(),
            "subject_request_id",
        ),
        // The same request with other callbacks is another request.
        (
            example(
                id,
                "customer4@example.org",
                "https://controller.example/other",
            )
            .to_string(),
            "subject_request_id",
        ),
        // A value where an object belongs: named, not quoted.
        (
            refused(example(fresh, "a@example.org", &callback_url), &|b| {
                b["subject_identities"] = json!(["a@example.org"])
            }),
            "subject_identities[0]",
        ),
    ] {
        let (status, _, answer) = call(
            &service,
            reqwest::Method::POST,
            "/opendsr/v1/requests",
            Some(&demo.controller),
            Some(body),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], 400, "{answer}");
        assert_eq!(answer["error"]["errors"][0]["reason"], field, "{answer}");
        assert!(!answer.to_string().contains("a@example.org"), "{answer}");
    }
    let (status, _, _) = call(
        &service,
        reqwest::Method::POST,
        "/opendsr/v1/requests",
        None,
        Some(example(fresh, "a@example.org", &callback_url).to_string()),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = call(
        &service,
        reqwest::Method::GET,
        &format!("/opendsr/v1/requests/{fresh}"),
        Some(&demo.controller),
        None,
    )
    .await;
    assert_eq!(status, 404);
}
