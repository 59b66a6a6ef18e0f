//! The request service end to end: journeys from submission to the data really being
//! gone, exported or changed; decisions, deadlines, idempotency, webhooks, crashes and
//! bad input.
//!
//! One file per journey. Tests that only use the API run the service in the test's
//! process ([`Service::spawn_app`]); those that kill it, restart it or read its logs run
//! the real binary ([`Service::start`]).

mod access;
mod api_input;
mod company;
mod contract;
mod crashes;
mod decisions;
mod erasure;
mod evidence;
mod expiry;
mod hardening;
mod hostile;
mod opendsr;
mod operations;
mod people;
mod recipients;
mod retention;
mod schema_fuzz;
mod suppression;

use axum::http::HeaderMap;
use oubli_tests::Service;
use oubli_tests::browser::SmtpSink;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub(super) fn email(n: u64) -> Value {
    json!([{ "kind": "email", "value": format!("customer{n}@example.org") }])
}

pub(super) async fn approve(service: &Service, id: &str) {
    let (status, body) = service
        .post(
            &format!("/v1/requests/{id}/approve"),
            &service.demo.controller,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// An erasure of someone no system holds, approved and completed with nothing found;
/// returns its id.
pub(super) async fn erasure_of_no_one(service: &Service) -> String {
    let id = service
        .submit(
            "erasure",
            json!([{ "kind": "email", "value": "nobody@example.org" }]),
            None,
        )
        .await;
    approve(service, &id).await;
    assert_eq!(service.settled(&id).await["records_found"], 0);
    id
}

/// A service whose e-mails go to an SMTP server on loopback.
pub(super) async fn with_mail(dir: &std::path::Path) -> (Service, SmtpSink) {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let service = Service::spawn_app_with(dir, &[], |config| {
        config.smtp = Some(oubli::config::Smtp {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: oubli::config::SmtpSecurity::None,
            username: None,
            password: None,
            from: "oubli <dsr@processor.example>".into(),
            dpo: None,
        });
    })
    .await;
    (service, sink)
}

pub(super) type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A webhook endpoint on loopback (a recipient's, a controller's, an OpenDSR callback
/// URL) that keeps what it receives and answers 500 to its first `failures` messages.
pub(super) async fn receiver(failures: usize) -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((headers, body));
                if seen.len() <= failures {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let (address, handle) = oubli_tests::serve(router).await;
    (format!("http://{address}/hooks"), received, handle)
}

/// Whether a message carries the Standard Webhooks signature of `secret`, computed from
/// the convention, not from oubli's code.
pub(super) fn signed_by(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let expected = oubli_tests::standard_webhooks_signature(
        secret,
        &header("webhook-id"),
        &header("webhook-timestamp"),
        body,
    );
    header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

/// Waits (up to 30 s) for `n` messages.
pub(super) async fn wait_for(received: &Received, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while received.lock().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "no notice arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
