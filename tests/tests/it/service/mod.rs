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

use oubli_tests::Service;
use oubli_tests::browser::SmtpSink;
use serde_json::{Value, json};

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
