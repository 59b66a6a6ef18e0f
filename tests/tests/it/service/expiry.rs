//! Retention rules: erasure without a request. A rule of the SQL connector erases
//! exactly the customers past their period (none early, none left), each through an
//! erasure request the rule approved, with its certificate; a dry run files nothing;
//! a second run files no one twice. Each run's destruction report is issued once its
//! requests settle, and reaches the controller by webhook and e-mail, verifiable.

use super::{receiver, signed_by};
use mail_parser::MimeHeaders;
use oubli_tests::count;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_retention_rule_erases_exactly_the_customers_past_their_period() {
    let dir = tempfile::tempdir().unwrap();
    let (service, sink) = super::with_mail(dir.path()).await;
    let admin = service.demo.admin.clone();
    let (hook_url, hooks, _receiver) = receiver(0).await;
    let (status, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Retail Org", "webhook_url": hook_url, "contact_email": "dpo@retail.example" }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();
    let secret = created["webhook_secret"].as_str().unwrap().to_owned();
    let crm = dir.path().join("retail-crm.db");
    oubli::demo::create_crm(&crm, 40).await.unwrap();
    // Customers in Lyon are kept one year after their account was opened (2024, in the
    // demo); one opened today is not due yet.
    let today = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", crm.display()))
        .await
        .unwrap();
    sqlx::query("INSERT INTO customers (id, email, phone, first_name, last_name, city, created_at) VALUES (1000, 'fresh@example.org', NULL, 'Fresh', 'Start', 'Lyon', ?)")
        .bind(&today)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let lyon = count(&crm, "customers", "city = 'Lyon' AND id < 1000").await;
    assert!(lyon > 0);
    let others = count(&crm, "customers", "city <> 'Lyon'").await;

    let mut system = oubli::demo::crm_system("shop", &crm);
    system.config["dataset"]["retention"] = json!({
        "lyon-customers": { "table": "customers", "column": "created_at", "after_days": 365,
                            "when": { "column": "city", "equals": "Lyon" } }
    });
    let digest = service.builtin_digest(&admin, "sql").await;
    let mut bad = system.config.clone();
    bad["dataset"]["retention"]["lyon-customers"]["column"] = json!("closed_at");
    let (status, refused) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &admin,
            json!({ "name": "shop", "plugin": digest, "capabilities": system.capabilities, "config": bad }),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["field"], "config.dataset.retention.lyon-customers.column",
        "{refused}"
    );
    let (status, connected) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &admin,
            json!({ "name": "shop", "plugin": digest, "capabilities": system.capabilities, "config": system.config }),
        )
        .await;
    assert_eq!(status, 201, "{connected}");
    let system_id = connected["id"].as_str().unwrap().to_owned();
    // A second system of the same controller holds the same people: the rule is the
    // first system's, and erases nothing here.
    let elsewhere = dir.path().join("newsletter-crm.db");
    oubli::demo::create_crm(&elsewhere, 40).await.unwrap();
    let second = oubli::demo::crm_system("newsletter", &elsewhere);
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &admin,
            json!({ "name": "newsletter", "plugin": digest, "capabilities": second.capabilities, "config": second.config }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Set disabled, tried, then enabled.
    let rules = format!("/v1/controllers/{controller}/retention-rules");
    let (status, refused) = service
        .post(
            &rules,
            &admin,
            json!({ "system_id": system_id, "rule": "lyon-customer", "every_minutes": 60 }),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("rule")),
        "{refused}"
    );
    let (status, rule) = service
        .post(
            &rules,
            &admin,
            json!({ "system_id": system_id, "rule": "lyon-customers", "every_minutes": 60 }),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["enabled"], false);
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let (status, dry) = service
        .post(&format!("{rules}/{rule_id}/dry-run"), &admin, json!({}))
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["subjects"], lyon, "{dry}");
    // Named by the row itself (its key is the customer-id identity), not by an e-mail
    // another account may share.
    assert_eq!(
        dry["identity_kinds"],
        json!({ "customer-id": lyon }),
        "{dry}"
    );
    assert_eq!(
        count(&crm, "customers", "city = 'Lyon'").await,
        lyon + 1,
        "a dry run erases nothing"
    );

    let (status, rule) = service
        .post(
            &rules,
            &admin,
            json!({ "system_id": system_id, "rule": "lyon-customers", "every_minutes": 60, "enabled": true }),
        )
        .await;
    assert_eq!(
        (status, rule["id"].as_str()),
        (201, Some(rule_id.as_str())),
        "{rule}"
    );
    let rule = service
        .poll(&format!("{rules}/{rule_id}"), &admin, |r| {
            r["last_run_at"].is_string()
        })
        .await;
    assert_eq!(rule["last_subjects"], lyon, "{rule}");
    assert_eq!(rule["last_filed"], lyon, "{rule}");

    // Each subject became an erasure request approved by the rule, which completes.
    let page = service
        .poll(
            &format!("/v1/requests?controller_id={controller}&limit=500"),
            &admin,
            |p| {
                let items = p["items"].as_array().unwrap();
                items.len() as i64 == lyon && items.iter().all(|r| r["status"] == "completed")
            },
        )
        .await;
    let first = &page["items"][0];
    assert_eq!(first["kind"], "erasure");
    assert!(
        first["external_ref"]
            .as_str()
            .unwrap()
            .starts_with("retention:")
    );
    let id = first["id"].as_str().unwrap();
    let (status, certificate) = service
        .get(&format!("/v1/requests/{id}/certificate"), &admin)
        .await;
    assert_eq!(status, 200, "{certificate}");
    let (_, events) = service
        .get(&format!("/v1/requests/{id}/events"), &admin)
        .await;
    let approved = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "request.approved")
        .unwrap();
    assert_eq!(
        approved["actor"],
        format!("retention:{rule_id}"),
        "approved by the rule"
    );
    let (_, tasks) = service
        .get(&format!("/v1/requests/{id}/tasks"), &admin)
        .await;
    assert_eq!(
        tasks["items"].as_array().unwrap().len(),
        1,
        "the rule's system only"
    );

    // None left, none early, no one else.
    assert_eq!(
        count(&crm, "customers", "city = 'Lyon' AND id < 1000").await,
        0
    );
    assert_eq!(count(&crm, "customers", "id = 1000").await, 1);
    assert_eq!(count(&crm, "customers", "city <> 'Lyon'").await, others);
    assert_eq!(
        count(&elsewhere, "customers", "1 = 1").await,
        40,
        "nothing elsewhere"
    );

    // The destruction report counts what the completed erasures did, signed.
    let (status, report) = service
        .get(
            &format!("/v1/controllers/{controller}/destruction-report"),
            &admin,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let (_, keys) = service.get("/v1/keys", &admin).await;
    let public = keys["keys"][0]["public_key"].as_str().unwrap().to_owned();
    assert_eq!(
        oubli::crypto::verify(&report, std::slice::from_ref(&public)),
        Ok(())
    );
    let document = &report["certificate"];
    assert_eq!(document["type"], "oubli.destruction-report");
    assert_eq!(document["requests"]["filed"], lyon);
    assert_eq!(document["requests"]["by_status"]["completed"], lyon);
    assert!(document["note"].is_null(), "all completed: {document}");
    let collections = document["systems"][0]["collections"].as_array().unwrap();
    let customers = collections
        .iter()
        .find(|c| c["name"] == "customers")
        .unwrap();
    assert_eq!(customers["deleted"], lyon, "{document}");
    let invoices = collections
        .iter()
        .find(|c| c["name"] == "invoices")
        .unwrap();
    assert!(invoices["retained"].as_u64().unwrap() > 0);
    assert!(
        invoices["legal_bases"][0]
            .as_str()
            .unwrap()
            .contains("17(3)(b)")
    );
    let subjects = document["subjects"].as_array().unwrap();
    assert_eq!(subjects.len() as i64, lyon);
    assert!(
        !report.to_string().contains("@example.org"),
        "no identity in clear"
    );
    let (status, page) = service
        .get(
            &format!("/v1/controllers/{controller}/destruction-report.html"),
            &admin,
        )
        .await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("Destruction report"));

    // The run's own report, issued once its requests settled: kept as issued, sent to
    // the controller's webhook and contact address, each verifiable.
    let runs_path = format!("/v1/controllers/{controller}/retention-runs");
    let runs = service
        .poll(&runs_path, &admin, |r| {
            r["items"][0]["report_status"] == "issued"
        })
        .await;
    let run = &runs["items"][0];
    assert_eq!(
        (run["rule_id"].as_str(), &run["filed"], &run["expired"]),
        (Some(rule_id.as_str()), &json!(lyon), &json!(lyon)),
        "{run}"
    );
    let run_id = run["id"].as_str().unwrap().to_owned();
    let (status, issued) = service
        .get(&format!("{runs_path}/{run_id}/report"), &admin)
        .await;
    assert_eq!(status, 200, "{issued}");
    assert_eq!(
        oubli::crypto::verify(&issued, std::slice::from_ref(&public)),
        Ok(())
    );
    let document = &issued["certificate"];
    assert_eq!(document["run"]["id"], run_id.as_str());
    assert_eq!(document["run"]["rule"], "lyon-customers");
    assert_eq!(document["requests"]["filed"], lyon);
    assert_eq!(
        document["requests"]["by_status"],
        json!({ "completed": lyon })
    );
    let customers = document["systems"][0]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "customers")
        .unwrap();
    assert_eq!(customers["deleted"], lyon, "{document}");
    let view = service
        .poll(&format!("{runs_path}/{run_id}"), &admin, |v| {
            v["webhooks"][0]["status"] == "delivered" && v["emails"][0]["status"] == "sent"
        })
        .await;
    assert_eq!(view["open_requests"], 0, "{view}");
    let (headers, body) = hooks
        .lock()
        .unwrap()
        .iter()
        .find(|(_, body)| body.contains("\"retention.report\""))
        .cloned()
        .expect("the report's webhook");
    assert!(signed_by(&secret, &headers, &body));
    let sent: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        sent["data"]["report"], issued,
        "the report sent is the report kept"
    );
    assert!(
        sent["data"]["report_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{runs_path}/{run_id}/report"))
    );
    let mail = sink
        .wait_for("dpo@retail.example", "Destruction report")
        .await;
    let parsed = mail_parser::MessageParser::default()
        .parse(mail.raw.as_bytes())
        .unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(text.contains("lyon-customers"), "{text}");
    assert!(text.contains(&format!("{lyon} deleted")), "{text}");
    let attachment = parsed.attachment(0).expect("the signed report attached");
    assert_eq!(
        attachment.attachment_name(),
        Some(format!("destruction-report-{run_id}.json").as_str())
    );
    let attached: Value = serde_json::from_slice(attachment.contents()).unwrap();
    assert_eq!(attached, issued);
    assert!(!mail.raw.contains("@example.org"), "no one named");
    let (status, page) = service
        .get(&format!("{runs_path}/{run_id}/report.html"), &admin)
        .await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains(&run_id));

    // Run again: no one is left, so nothing is filed and no report is made.
    let (status, _) = service
        .post(
            &rules,
            &admin,
            json!({ "system_id": system_id, "rule": "lyon-customers", "every_minutes": 60, "enabled": true }),
        )
        .await;
    assert_eq!(status, 201);
    let runs = service
        .poll(&runs_path, &admin, |r| {
            r["items"].as_array().unwrap().len() == 2 && r["items"][0]["report_status"] == "none"
        })
        .await;
    assert_eq!(runs["items"][0]["expired"], 0, "{runs}");
    let second = runs["items"][0]["id"].as_str().unwrap();
    let (status, none) = service
        .get(&format!("{runs_path}/{second}/report"), &admin)
        .await;
    assert_eq!(status, 404, "{none}");
    assert!(
        none["message"]
            .as_str()
            .unwrap()
            .contains("filed no erasure"),
        "{none}"
    );

    // The run is in the audit trail; removing the rule stops it.
    let (_, runs) = service.get("/v1/audit?action=retention.ran", &admin).await;
    let details: Value =
        serde_json::from_str(runs["items"][0]["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["filed"], lyon, "{details}");
    let (status, _) = service
        .call(
            reqwest::Method::DELETE,
            &format!("{rules}/{rule_id}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = service.get(&format!("{rules}/{rule_id}"), &admin).await;
    assert_eq!(status, 404);
}
