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

/// The value of the sample `name` whose labels include `labels`, parsed from the text
/// format by a Prometheus parser of its own.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// `/metrics` is protected by its token, parses as Prometheus text, and moves as an
/// erasure runs: requests by kind and status, plugin calls and task runs by system, the
/// audit trail's length.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_move_as_requests_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[("OUBLI_METRICS_TOKEN", "scrape-secret")]).await;
    let scrape = |token: Option<&'static str>| {
        let service = &service;
        async move {
            let mut request = service.http.get(format!("{}/metrics", service.url));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };
    let (status, _) = scrape(None).await;
    assert_eq!(status, 401, "the metrics need their token");
    let (status, _) = scrape(Some("wrong")).await;
    assert_eq!(status, 401);
    let parse = |text: &str| {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    let (status, text) = scrape(Some("scrape-secret")).await;
    assert_eq!(status, 200, "{text}");
    let before = parse(&text);
    let trail_before = sample(&before, "oubli_audit_events", &[]).unwrap();
    assert_eq!(
        sample(
            &before,
            "oubli_requests",
            &[("kind", "erasure"), ("status", "completed")]
        ),
        Some(0.0),
        "{text}"
    );

    let id = service.submit("erasure", super::email(3), None).await;
    super::approve(&service, &id).await;
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");

    let (_, text) = scrape(Some("scrape-secret")).await;
    let after = parse(&text);
    assert_eq!(
        sample(
            &after,
            "oubli_requests",
            &[("kind", "erasure"), ("status", "completed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&after, "oubli_requests_overdue", &[]), Some(0.0));
    assert!(sample(&after, "oubli_audit_events", &[]).unwrap() > trail_before);
    assert!(
        sample(
            &after,
            "oubli_plugin_call_seconds_count",
            &[("system", "crm"), ("action", "erase")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &after,
            "oubli_task_runs_total",
            &[("system", "crm"), ("outcome", "succeeded")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        sample(&after, "oubli_tasks", &[("status", "succeeded")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("@example"),
        "no label or value carries the subject's data"
    );
}

/// Every metric the Grafana dashboard in `examples/` queries is one oubli describes.
#[test]
fn the_dashboard_queries_only_metrics_oubli_exports() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/examples/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let exported = std::fs::read_to_string(format!("{root}/host/src/api/metrics.rs")).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("oubli_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(&format!("\"{base}\"")),
                    "the dashboard queries {name}, which oubli does not export"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports the spans of its work
/// over OTLP/HTTP (JSON) to a receiver started here: the task and its plugin calls, with
/// the system and action, and no identity of the subject.
#[tokio::test(flavor = "multi_thread")]
async fn traces_reach_an_otlp_receiver() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                axum::Json(serde_json::json!({}))
            }
        }),
    );
    let (address, _server) = oubli_tests::serve(router).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{address}");
    let service = Service::start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let id = service.submit("erasure", super::email(4), None).await;
    super::approve(&service, &id).await;
    let request = service.settled(&id).await;
    assert_eq!(request["status"], "completed", "{request}");
    // A clean stop sends what is still buffered.
    assert!(service.terminate());
    let exported = received.lock().unwrap().join("\n");
    for expected in [
        "\"plugin.call\"",
        "\"task\"",
        "\"request.step\"",
        "\"erase\"",
        "\"crm\"",
        "\"oubli\"",
    ] {
        assert!(exported.contains(expected), "no {expected} in {exported}");
    }
    assert!(
        !exported.contains("customer4@") && !exported.contains("@example"),
        "no identity in the traces"
    );
}
