//! Recipients (Art. 19): told of a completed erasure or rectification by a notice signed
//! with their own secret (checked here from the Standard Webhooks rules, not oubli's
//! code), retried when they fail, whose link gives who the subject is and nothing else;
//! the certificate lists them.

use super::{approve, email, receiver, signed_by, wait_for};
use oubli_tests::Service;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn recipients_are_told_of_erasures_and_rectifications_and_the_certificate_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[("OUBLI_BACKOFF_BASE_MS", "50")]).await;
    let demo = service.demo.clone();
    let path = format!("/v1/controllers/{}/recipients", demo.controller_id);
    let (steady_url, steady, _a) = receiver(0).await;
    let (flaky_url, flaky, _b) = receiver(1).await;

    // Only an admin adds them (oubli sends requests to their URLs), as with the
    // controller's own webhook.
    for token in [&demo.dpo, &demo.controller] {
        let (status, _) = service
            .post(&path, token, json!({ "name": "Mailer", "url": steady_url }))
            .await;
        assert_eq!(status, 403);
    }
    let (status, refused) = service
        .post(
            &path,
            &demo.admin,
            json!({ "name": "Mailer", "url": "ftp://x" }),
        )
        .await;
    assert_eq!((status, refused["field"].clone()), (422, json!("url")));
    let mut secrets = Vec::new();
    for (name, url) in [("Mailer Inc.", &steady_url), ("Carrier SA", &flaky_url)] {
        let (status, added) = service
            .post(&path, &demo.admin, json!({ "name": name, "url": url }))
            .await;
        assert_eq!(status, 201, "{added}");
        secrets.push(added["secret"].as_str().unwrap().to_owned());
    }

    let id = service.submit("erasure", email(4), None).await;
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");

    // Each gets a notice signed with its own secret; the one that failed gets it again.
    wait_for(&steady, 1).await;
    wait_for(&flaky, 2).await;
    let (headers, body) = steady.lock().unwrap()[0].clone();
    assert!(signed_by(&secrets[0], &headers, &body));
    assert!(
        !signed_by(&secrets[1], &headers, &body),
        "each recipient has its own secret"
    );
    let (retry_headers, retry_body) = flaky.lock().unwrap()[1].clone();
    assert!(signed_by(&secrets[1], &retry_headers, &retry_body));
    let notice: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(notice["type"], "subject.erased");
    assert_eq!(notice["data"]["request_id"], id.as_str());
    assert!(
        !body.contains("customer4@example.org"),
        "the notice names no one"
    );
    assert!(notice["data"]["url"].is_null(), "no address of oubli's API");

    // Its link tells the recipient who, and only for this notice.
    let url = notice["data"]["identities_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let opened: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(
        opened["identities"][0]["value"], "customer4@example.org",
        "{opened}"
    );
    assert_eq!(opened["recipient"], "Mailer Inc.");
    let forged = format!("{}x", &url[..url.len() - 1]);
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 404);

    // Deliveries are listed with the request's webhooks; the certificate names both.
    let deliveries = service
        .poll(&format!("/v1/requests/{id}/webhooks"), &demo.dpo, |d| {
            d["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["recipient"].is_string() && d["status"] == "delivered")
                .count()
                == 2
        })
        .await;
    let carrier = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["recipient"] == "Carrier SA")
        .unwrap()
        .clone();
    assert_eq!(carrier["attempts"], 2, "{carrier}");
    let (status, certificate) = service
        .get(&format!("/v1/requests/{id}/certificate"), &demo.dpo)
        .await;
    assert_eq!(status, 200, "{certificate}");
    let told = certificate["certificate"]["recipient_notices"]["notices"]
        .as_array()
        .unwrap();
    assert!(
        certificate["certificate"]["recipient_notices"]["as_of"].is_null(),
        "all delivered: the section no longer changes"
    );
    let names: Vec<&str> = told
        .iter()
        .map(|t| t["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Mailer Inc.", "Carrier SA"]);
    assert!(told.iter().all(|t| t["status"] == "delivered"), "{told:?}");
    let (status, page) = service
        .get(&format!("/v1/requests/{id}/certificate.html"), &demo.dpo)
        .await;
    assert_eq!(status, 200);
    assert!(
        page.as_str().unwrap().contains("Carrier SA"),
        "the printable certificate names them"
    );
    let shown = serde_json::to_string(&service.get(&path, &demo.controller).await.1).unwrap()
        + &serde_json::to_string(&deliveries).unwrap();
    assert!(!shown.contains(&secrets[0]), "a secret is shown once");

    // A removed recipient is told nothing more; a rectification's notice carries the
    // new values behind its link.
    let carrier_id = service.get(&path, &demo.controller).await.1["items"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = service
        .call(
            reqwest::Method::DELETE,
            &format!("{path}/{carrier_id}"),
            &demo.controller,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let id = service
        .submit(
            "rectification",
            email(6),
            Some(json!([{ "collection": "customers", "field": "city", "value": "Lyon" }])),
        )
        .await;
    approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
    wait_for(&steady, 2).await;
    let (headers, body) = steady.lock().unwrap()[1].clone();
    assert!(signed_by(&secrets[0], &headers, &body));
    let notice: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(notice["type"], "subject.rectified");
    let opened: Value = reqwest::get(notice["data"]["identities_url"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(opened["changes"][0]["value"], "Lyon", "{opened}");
    let (_, deliveries) = service
        .get(&format!("/v1/requests/{id}/webhooks"), &demo.dpo)
        .await;
    let notices: Vec<&Value> = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["recipient"].is_string())
        .collect();
    assert_eq!(
        notices.len(),
        1,
        "the removed recipient is told nothing: {deliveries}"
    );
    // Nor do its earlier notices' links work any more.
    let (_, body) = flaky.lock().unwrap()[1].clone();
    let notice: Value = serde_json::from_str(&body).unwrap();
    let url = notice["data"]["identities_url"].as_str().unwrap();
    assert_eq!(reqwest::get(url).await.unwrap().status(), 410);

    // An erasure that found nothing tells no one who the subject is.
    let id = super::erasure_of_no_one(&service).await;
    let actions = service
        .actions(&format!("/v1/requests/{id}/events"), &demo.dpo)
        .await;
    assert!(
        actions.iter().any(|a| a == "recipients.not_notified"),
        "{actions:?}"
    );
    let (_, deliveries) = service
        .get(&format!("/v1/requests/{id}/webhooks"), &demo.dpo)
        .await;
    assert!(
        deliveries["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["recipient"].is_null())
    );

    let opened = service
        .actions("/v1/audit?action=notice.opened", &demo.admin)
        .await;
    assert_eq!(opened.len(), 2);
}
