//! The API holds against misuse: a reused idempotency key, answers in the documented error
//! shape whatever goes wrong, and uploads refused before their body is read.

use super::email;
use oubli_tests::Service;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_reused_for_another_request_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let submit = |identities: Value| {
        let body = json!({ "controller_id": service.demo.controller_id, "kind": "erasure", "identities": identities });
        let request = service
            .http
            .post(format!("{}/v1/requests", service.url))
            .bearer_auth(&service.demo.dpo)
            .header("Idempotency-Key", "ticket-12")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = submit(email(1)).await;
    assert_eq!(status, 201, "{first}");
    // The same submission again is the first request.
    let (status, again) = submit(email(1)).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    // Another person under the same ticket number is not merged into it.
    let (status, error) = submit(email(2)).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "Idempotency-Key");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(first["id"].as_str().unwrap())
    );
    let (_, list) = service.get("/v1/requests", &service.demo.dpo).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let dpo = service.demo.dpo.clone();
    // A value a field cannot take names the field.
    for kind in [json!(7), Value::Null, json!(["erasure"])] {
        let body = json!({ "controller_id": service.demo.controller_id, "kind": kind, "identities": email(1) });
        let (status, error) = service.post("/v1/requests", &dpo, body).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (422, Some("kind")),
            "{error}"
        );
    }
    // A method a path does not take, a path that is not UTF-8.
    let response = service
        .http
        .delete(format!("{}/v1/requests", service.url))
        .bearer_auth(&dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers().contains_key("allow"));
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "method_not_allowed", "{error}");
    let response = service
        .http
        .get(format!("{}/v1/requests/%FF", service.url))
        .bearer_auth(&dpo)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["message"].as_str().unwrap().contains("UTF-8"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_by_anyone_but_an_admin_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let address = service.url.trim_start_matches("http://").to_owned();
    // Announces 60 MiB and sends 16 bytes: the answer comes without the rest.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/plugins?name=big HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/wasm\r\nContent-Length: {}\r\n\r\n",
        service.demo.controller,
        60 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[0u8; 16]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the refusal comes before the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("\"code\":\"forbidden\""), "{answer}");
}

/// Reads until the server closes the connection (or answers), for at most `secs`.
async fn closed_within(stream: &mut tokio::net::TcpStream, secs: u64) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(secs), read)
        .await
        .expect("the server closed the connection");
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(
        dir.path(),
        &[
            ("OUBLI_HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("OUBLI_HTTP_BODY_TIMEOUT_SECS", "1"),
            ("OUBLI_MAX_CONNECTIONS", "16"),
        ],
    )
    .await;
    let address = service.url.trim_start_matches("http://").to_owned();
    // More idle connections than the server serves at once, without a token.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    // Everyone else is still served: the idle ones are closed as their time runs out.
    let (status, _) = service.get("/v1/requests", &service.demo.dpo).await;
    assert_eq!(status, 200);
    for stream in &mut idle[..16] {
        closed_within(stream, 10).await;
    }
    // Headers that never end, and a body that stops coming.
    let mut half = tokio::net::TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: oubli\r\n")
        .await
        .unwrap();
    closed_within(&mut half, 10).await;
    let mut dripping = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/requests HTTP/1.1\r\nHost: oubli\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\"",
        service.demo.dpo
    );
    dripping.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_within(&mut dripping, 10).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    let (status, _) = service.get("/v1/requests", &service.demo.dpo).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_of_the_database_is_a_503_to_retry_not_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    // The database goes away under the running service.
    service.app().store.write.close().await;
    let response = service
        .http
        .post(format!("{}/v1/requests", service.url))
        .bearer_auth(&service.demo.dpo)
        .json(&json!({ "controller_id": service.demo.controller_id, "kind": "erasure", "identities": email(1) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "unavailable", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("try again later"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_of_one_controller_does_not_read_the_trail_s_head() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let admin = service.demo.admin.clone();
    let scoped = service
        .token(&admin, "auditor", &service.demo.controller_id)
        .await;
    let (status, error) = service.get("/v1/audit/head", &scoped).await;
    assert_eq!(status, 403, "{error}");
    let (status, _) = service.get("/v1/audit/head", &admin).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_one_client_s_failures_lock_out_only_that_client() {
    let dir = tempfile::tempdir().unwrap();
    let service =
        Service::spawn_app(dir.path(), &[("OUBLI_TRUSTED_PROXIES", "[\"127.0.0.1\"]")]).await;
    let get = |client: &'static str, token: String| {
        let request = service
            .http
            .get(format!("{}/v1/requests", service.url))
            .bearer_auth(token)
            .header("X-Forwarded-For", format!("203.0.113.9, {client}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let mut last = 0;
    for _ in 0..12 {
        last = get("198.51.100.1", "oubli_wrong".into()).await;
    }
    assert_eq!(last, 429, "the guessing client is throttled");
    // Another client behind the same proxy is not; the address the client wrote first
    // (203.0.113.9, the same for both) counts for nothing.
    assert_eq!(get("198.51.100.2", service.demo.dpo.clone()).await, 200);
    assert_eq!(get("198.51.100.1", service.demo.dpo.clone()).await, 429);
}

/// Uploads `bytes` as a plugin named `name`, asking to wait `wait` seconds at most.
async fn upload(service: &Service, name: &str, bytes: &[u8], wait: u32) -> reqwest::Response {
    service
        .http
        .post(format!("{}/v1/plugins", service.url))
        .query(&[("name", name)])
        .bearer_auth(&service.demo.admin)
        .header("content-type", "application/wasm")
        .header("prefer", format!("wait={wait}"))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

/// Polls a plugin until it is no longer compiling.
async fn settled_plugin(service: &Service, digest: &str) -> Value {
    for _ in 0..600 {
        let (status, plugin) = service
            .get(&format!("/v1/plugins/{digest}"), &service.demo.admin)
            .await;
        assert_eq!(status, 200, "{plugin}");
        if plugin["status"] != "compiling" {
            return plugin;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the plugin {digest} is still compiling after a minute");
}

/// A plugin upload answers when its compilation is done or when the client's wait runs
/// out (202, then poll); the compilation goes on in the background, a stop does not lose
/// it, and a file that is not a plugin is refused with why.
#[tokio::test(flavor = "multi_thread")]
async fn plugins_compile_in_the_background_and_survive_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), &[]);
    let testkit = std::fs::read(oubli_tests::plugin_path("oubli_testkit")).unwrap();
    let digest = oubli::runtime::digest_of(&testkit);

    // No wait: 202 with where to look, and the compilation goes on.
    let answer = upload(&service, "testkit", &testkit, 0).await;
    assert_eq!(answer.status(), 202);
    assert_eq!(
        answer.headers()["location"].to_str().unwrap(),
        format!("/v1/plugins/{digest}")
    );
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], "compiling", "{body}");
    let ready = settled_plugin(&service, &digest).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["info"]["name"], "testkit", "{ready}");
    // The same file again: registered already, 201 at once.
    let again = upload(&service, "testkit", &testkit, 20).await;
    assert_eq!(again.status(), 201);

    // Not a plugin: refused while the client waits, and nothing of it stays.
    let junk = b"\0asm this is not a component".to_vec();
    let answer = upload(&service, "junk", &junk, 20).await;
    assert_eq!(answer.status(), 422);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["field"], "body", "{error}");
    let junk_digest = oubli::runtime::digest_of(&junk);
    let (status, _) = service
        .get(&format!("/v1/plugins/{junk_digest}"), &service.demo.admin)
        .await;
    assert_eq!(status, 404);
    let (_, audit) = service
        .get("/v1/audit?action=plugin.refused", &service.demo.admin)
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");

    // A stop while a plugin compiles: the next start compiles it.
    let demo = service.demo.clone();
    service.kill9();
    oubli_tests::tamper(
        dir.path(),
        "UPDATE plugins SET status = 'compiling', contract = '', compiling_since = created_at WHERE size = $1",
        testkit.len() as i64,
    )
    .await;
    let mut service = Service::start(dir.path(), &[]);
    service.demo = demo;
    let (_, listed) = service.get("/v1/plugins", &service.demo.admin).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["digest"] == digest.as_str()),
        "{listed}"
    );
    let ready = settled_plugin(&service, &digest).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(!ready["contract"].as_str().unwrap().is_empty(), "{ready}");
}
