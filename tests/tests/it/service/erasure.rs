//! Erasure journeys: approval before anything runs, the data really gone, failures that
//! say why and retries, the signed certificate, and the audit trail checked offline.

use super::{approve, email};
use oubli_tests::{Service, audit_verify, count, tamper};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_runs_only_after_approval_and_really_erases() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
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
async fn failed_tasks_say_why_and_a_retry_runs_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[("OUBLI_MAX_ATTEMPTS", "2")]).await;
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
    assert_eq!(
        invoices["masked_fields"],
        json!([]),
        "kept whole: {invoices}"
    );
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
