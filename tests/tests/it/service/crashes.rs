//! Crashes and restarts of the real process: nothing accepted is lost, an interrupted
//! erasure is certified as it happened, and the keys a process needs are checked at start.

use super::{approve, email};
use oubli_tests::{Service, audit_verify, count, serve};
use serde_json::{Value, json};
use std::sync::Arc;

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

/// The helpdesk's task of request `id`.
async fn helpdesk_task(service: &Service, id: &str) -> Value {
    let (_, tasks) = service
        .get(&format!("/v1/requests/{id}/tasks"), &service.demo.dpo)
        .await;
    tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["system_name"] == "helpdesk")
        .cloned()
        .expect("the helpdesk has a task")
}

/// The helpdesk's entry in the erasure certificate of request `id`, which must be issued.
async fn helpdesk_certified(service: &Service, id: &str) -> Value {
    let (status, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    signed["certificate"]["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "helpdesk")
        .cloned()
        .expect("the helpdesk is certified")
}

/// Connects the helpdesk to the demo controller and files an approved erasure of
/// `email`; returns the request's id.
async fn erase_through(service: &Service, helpdesk: &HeldApi, email: &str) -> String {
    connect(service, helpdesk).await;
    let id = service
        .submit(
            "erasure",
            json!([{ "kind": "email", "value": email }]),
            None,
        )
        .await;
    approve(service, &id).await;
    id
}

/// Connects the helpdesk to the demo controller through the REST connector.
async fn connect(service: &Service, helpdesk: &HeldApi) {
    let demo = &service.demo;
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
}

/// A process that dies again and again while a task runs (more times than the task may
/// fail) never fails it: interrupted runs are counted apart, and once a run gets to the
/// end the erasure completes and is certified with the interruptions listed.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_loop_never_fails_a_task_that_was_not_run_to_the_end() {
    let email = oubli::demo::api::person_email(3);
    let helpdesk = held_api("loop-token", &email).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = [("OUBLI_MAX_ATTEMPTS", "2"), ("OUBLI_BACKOFF_BASE_MS", "20")];
    let mut service = Service::start(dir.path(), &settings);
    let demo = service.demo.clone();
    let id = erase_through(&service, &helpdesk, &email).await;
    // Each process runs the helpdesk's task up to the verifying search, and dies there.
    let crashes = 3;
    for _ in 0..crashes {
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            helpdesk.held.notified(),
        )
        .await
        .expect("the task runs again up to the verifying search");
        service.kill9();
        service = Service::start(dir.path(), &settings);
        service.demo = demo.clone();
    }
    helpdesk.open.send_replace(true);
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");
    let task = helpdesk_task(&service, &id).await;
    assert_eq!(task["interrupted"], crashes, "{task}");
    assert_eq!(task["attempts"], crashes + 1, "{task}");
    let (_, trail) = service
        .get(&format!("/v1/requests/{id}/events"), &demo.dpo)
        .await;
    let interruptions = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "task.interrupted")
        .count();
    assert_eq!(interruptions, crashes as usize, "{trail}");
    let entry = helpdesk_certified(&service, &id).await;
    assert_eq!(
        entry["runs"]["earlier_attempts"],
        json!({ "interrupted": crashes }),
        "{entry}"
    );
    assert!(service.terminate());
    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(valid, "{report}");
}

/// A clean stop (SIGTERM) while a task runs hands its lease back: the run is logged as
/// released, neither counted nor taken as an interruption, and the next start runs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_hands_running_tasks_back_without_counting_them() {
    let email = oubli::demo::api::person_email(1);
    let helpdesk = held_api("stop-token", &email).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = [("OUBLI_SHUTDOWN_GRACE_SECS", "1")];
    let service = Service::start(dir.path(), &settings);
    let demo = service.demo.clone();
    let id = erase_through(&service, &helpdesk, &email).await;
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        helpdesk.held.notified(),
    )
    .await
    .expect("the task runs up to the verifying search");
    assert!(service.terminate(), "a SIGTERM stops the service cleanly");
    helpdesk.open.send_replace(true);

    let mut service = Service::start(dir.path(), &settings);
    service.demo = demo.clone();
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");
    let task = helpdesk_task(&service, &id).await;
    assert_eq!(
        (task["attempts"].as_u64(), task["interrupted"].as_u64()),
        (Some(1), Some(0)),
        "{task}"
    );
    let entry = helpdesk_certified(&service, &id).await;
    assert_eq!(
        entry["runs"]["earlier_attempts"],
        json!({ "released": 1 }),
        "{entry}"
    );
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
    let id = erase_through(&service, &helpdesk, &email).await;
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
    let helpdesk_entry = helpdesk_certified(&service, &id).await;
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
    // The REST connector read every located record back by its URL and swept the
    // helpdesk's searches: the retained orders are the only hits.
    assert_eq!(
        orders["masked_fields"],
        json!(["shipping_name"]),
        "{orders}"
    );
    let read_back = &helpdesk_entry["verification"]["read_back"];
    assert_eq!(
        read_back["retained"], orders["retained"],
        "{helpdesk_entry}"
    );
    assert_eq!(
        read_back["gone"].as_u64().unwrap() + read_back["retained"].as_u64().unwrap(),
        read_back["records"].as_u64().unwrap(),
        "{helpdesk_entry}"
    );
    let sweep = &helpdesk_entry["sweep"];
    assert_eq!(sweep["covered"].as_array().unwrap().len(), 4, "{sweep}");
    assert_eq!(sweep["found_outside_retained_records"], 0, "{sweep}");
    assert_eq!(sweep["cut_short"], false, "{sweep}");
    // The printable certificate says what the read-back found, in its own words, and
    // which fields the kept orders had masked.
    let page = service
        .http
        .get(format!("{}/v1/requests/{id}/certificate.html", service.url))
        .bearer_auth(&service.demo.dpo)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("{} read back gone", read_back["gone"]))
            && page.contains(&format!(
                "{} read back kept under their legal basis",
                read_back["retained"]
            ))
            && page.contains("shipping_name"),
        "{page}"
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
