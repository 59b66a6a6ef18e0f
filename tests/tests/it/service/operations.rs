//! What operators and their tooling see: liveness and readiness for load balancers and
//! orchestrators.

use oubli_tests::Service;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_unready_when_the_database_is_gone_while_healthz_stays_alive() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let get = |path: &'static str| {
        let service = &service;
        async move {
            let response = service
                .http
                .get(format!("{}{path}", service.url))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = response.json().await.unwrap();
            (status, retry, body)
        }
    };
    let (status, _, ready) = get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert!(ready["migrations"].as_i64().unwrap() >= 10, "{ready}");
    assert!(ready["signing_key"].is_string(), "{ready}");

    // The database goes away under the running service.
    service.app().store.write.close().await;
    let (status, retry, unready) = get("/readyz").await;
    assert_eq!(status, 503, "{unready}");
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(unready["status"], "unready");
    assert!(
        unready["database"]
            .as_str()
            .unwrap()
            .contains("cannot be reached for writing"),
        "{unready}"
    );
    let (status, _, alive) = get("/healthz").await;
    assert_eq!((status, &alive["status"]), (200, &Value::from("ok")));
}
