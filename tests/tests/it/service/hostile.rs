//! Hostile plugins in the running service: each fails its own task while the other
//! systems are served and the process stays within its memory.

use oubli_tests::Service;
use serde_json::json;

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
