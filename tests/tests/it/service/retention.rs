//! What oubli keeps and for how long: subjects become hashes after retention, the access
//! log is purged with signed checkpoints, and the logs hold no personal data.

use super::{approve, email};
use oubli_tests::{Service, audit_verify};
use serde_json::{Value, json};

/// Past their retention periods (0 days here), a closed request keeps only keyed hashes
/// of its subject's identities, and the access log is purged behind a signed checkpoint
/// that `oubli audit verify` accepts.
#[tokio::test(flavor = "multi_thread")]
async fn past_retention_identities_become_hashes_and_the_access_log_is_purged() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[
            ("OUBLI_SUBJECT_RETENTION_DAYS", "0"),
            ("OUBLI_ACCESS_LOG_RETENTION_DAYS", "0"),
            ("OUBLI_PURGE_INTERVAL_SECS", "1"),
        ],
    );
    let admin = &service.demo.admin;
    let erasure = service.submit("erasure", email(5), None).await;
    // Open requests keep their identities, sealed at rest.
    let (_, open) = service
        .get(&format!("/v1/requests/{erasure}"), &service.demo.dpo)
        .await;
    assert_eq!(open["identities"][0]["value"], "customer5@example.org");
    let stored = || async {
        use sqlx::Connection;
        let db = format!("sqlite://{}?mode=ro", dir.path().join("oubli.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let text: String = sqlx::query_scalar("SELECT identities FROM requests WHERE id = $1")
            .bind(&erasure)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        text
    };
    let sealed = stored().await;
    assert!(
        sealed.starts_with("sealed:v1:") && !sealed.contains("customer5"),
        "{sealed}"
    );

    approve(&service, &erasure).await;
    assert_eq!(service.settled(&erasure).await["status"], "completed");
    let redacted = service
        .poll(&format!("/v1/requests/{erasure}"), admin, |r| {
            r["subject_redacted_at"].is_string()
        })
        .await;
    let identity = &redacted["identities"][0];
    assert_eq!(identity["kind"], "email");
    assert!(identity.get("value").is_none(), "{redacted}");
    let hashed = stored().await;
    assert!(!hashed.contains("customer5"), "{hashed}");
    // The certificate is still issued, with the same keyed hash.
    let (status, certificate) = service
        .get(
            &format!("/v1/requests/{erasure}/certificate"),
            &service.demo.dpo,
        )
        .await;
    assert_eq!(status, 200, "{certificate}");
    // The hash of the address under the service's identity-hash key, computed here.
    let keys = oubli::crypto::Keys::load_or_create(&dir.path().join("keys")).unwrap();
    let expected = keys.identity_hash("email", "customer5@example.org");
    assert_eq!(identity["hmac_sha256"], expected.as_str());
    assert_eq!(
        certificate["certificate"]["subject"]["identities"][0]["hmac_sha256"],
        expected.as_str()
    );
    // Redacted, it cannot be retried.
    let (status, body) = service
        .post(
            &format!("/v1/requests/{erasure}/retry"),
            &service.demo.dpo,
            json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("keyed hashes"),
        "{body}"
    );

    // The reads above are access-log events: purged, with a checkpoint in their place.
    let signed = service.checkpoint().await;
    assert!(signed["certificate"]["purged"]["events"].as_u64().unwrap() >= 1);
    let actions = service
        .actions(&format!("/v1/audit?request_id={erasure}"), admin)
        .await;
    assert!(
        ["request.completed", "request.subject_redacted"]
            .iter()
            .all(|a| actions.iter().any(|b| b == a)),
        "{actions:?}"
    );
    assert!(service.terminate(), "the service stops cleanly");
    // No access-log event older than what the last checkpoint purged is left.
    let reads: i64 = {
        use sqlx::Connection;
        let db = format!("sqlite://{}?mode=ro", dir.path().join("oubli.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let last: String = sqlx::query_scalar(
            "SELECT details FROM audit_events WHERE action = 'audit.purged' ORDER BY seq DESC LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let last: Value = serde_json::from_str(&last).unwrap();
        let reads: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE at < $1 AND action IN ('request.read', 'requests.listed', 'package.downloaded')",
        )
        .bind(last["certificate"]["purged"]["before"].as_i64().unwrap())
        .fetch_one(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        reads
    };
    assert_eq!(reads, 0);
    let (valid, report) = audit_verify(dir.path(), &[], &[]);
    assert!(valid, "{report}");
    // Without the right key, the checkpoints do not verify.
    let other = tempfile::tempdir().unwrap();
    let stranger = oubli::crypto::Keys::load_or_create(other.path()).unwrap();
    let stranger = stranger.public().public_key;
    let (valid, report) = audit_verify(
        dir.path(),
        &["--public-key".as_ref(), stranger.as_ref()],
        &[],
    );
    assert!(!valid);
    assert!(
        report["message"].as_str().unwrap().contains("checkpoint"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_hold_no_identity_and_no_exported_value() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(
        dir.path(),
        &[(
            "OUBLI_LOG",
            "debug,cranelift_codegen=warn,wasmtime=warn,wasmtime_cranelift=warn",
        )],
    );
    let access = service.submit("access", email(7), None).await;
    let erasure = service.submit("erasure", email(9), None).await;
    let change = json!([{ "collection": "customers", "field": "city", "value": "Saint-Malo" }]);
    let rectify = service
        .submit("rectification", email(8), Some(change))
        .await;
    for id in [&access, &erasure, &rectify] {
        approve(&service, id).await;
        assert_eq!(service.settled(id).await["status"], "completed");
    }
    let (status, _) = service
        .get(&format!("/v1/requests/{access}/package"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200);
    let (status, _) = service
        .get(&format!("/v1/requests/{access}/results"), &service.demo.dpo)
        .await;
    assert_eq!(status, 200);
    let logs = service.output();
    assert!(
        logs.lines().count() > 10,
        "debug logs were written:\n{logs}"
    );
    // Identities, exported values (customer 7's phone, city, gift message) and the new
    // value of a rectification.
    for secret in [
        "customer7@example.org",
        "customer9@example.org",
        "customer8@example.org",
        "+33 6 00 00 00 07",
        "Saint-Malo",
        "Bon anniversaire",
    ] {
        assert!(!logs.contains(secret), "the logs hold {secret:?}");
    }
}
