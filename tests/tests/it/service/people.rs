//! People, in a real browser (Debian's Chromium over WebDriver): the controller opens the
//! approval link from the e-mail an SMTP server on loopback took, approves, and the
//! request runs; a second link is rejected with a reason; a used link says so; the DPO
//! signs in to the console, sees the request complete and opens its certificate page;
//! a French browser gets French pages. Skipped without `OUBLI_TEST_CHROMEDRIVER`.

use super::{email, with_mail};
use fantoccini::Locator;
use oubli_tests::Service;
use oubli_tests::browser::Browser;
use serde_json::json;

async fn text(browser: &Browser) -> String {
    browser
        .client
        .find(Locator::Css("main"))
        .await
        .expect("a main element")
        .text()
        .await
        .expect("its text")
}

/// Clicks the element with `id` and waits for the page it leads to (which has `then`).
async fn click_and_wait(browser: &Browser, id: &str, then: Locator<'_>) {
    let before = browser.client.current_url().await.unwrap();
    browser
        .client
        .find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let moved = browser.client.current_url().await.unwrap() != before;
        if moved && browser.client.find(then).await.is_ok() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "clicking #{id} led nowhere"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_decides_by_link_and_the_dpo_follows_in_the_console() {
    let Some(browser) = Browser::start("en-US").await else {
        eprintln!("skipped: set OUBLI_TEST_CHROMEDRIVER to run the browser tests");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (service, sink) = with_mail(dir.path()).await;

    // The e-mail to the controller carries the link and none of the subject's data.
    let approved = service.submit("erasure", email(3), None).await;
    let mail = sink
        .wait_for("controller@demo-shop.example", "Erasure request to confirm")
        .await;
    assert!(
        mail.subject().contains("Demande d'effacement à confirmer"),
        "{}",
        mail.subject()
    );
    assert!(!mail.raw.contains("customer3") && !mail.text().contains("customer3"));
    let link = mail
        .link(&format!("{}/approve/", service.url))
        .expect("the approval link in the e-mail");
    assert!(!link.contains("customer3"));

    // The controller opens it: the request, the person, the systems; then approves.
    browser.client.goto(&link).await.unwrap();
    let page = text(&browser).await;
    for expected in [
        "A request awaits your decision",
        "erasure",
        "customer3@example.org",
        "crm",
        "demo DPO",
    ] {
        assert!(page.contains(expected), "{expected:?} not in {page}");
    }
    browser.screenshot("approval").await;
    click_and_wait(&browser, "approve", Locator::Css("div.notice")).await;
    let page = text(&browser).await;
    assert!(page.contains("Your decision was recorded"), "{page}");
    let done = service.settled(&approved).await;
    assert_eq!(done["status"], "completed", "{done}");
    let events = service
        .get(
            &format!("/v1/requests/{approved}/events"),
            &service.demo.dpo,
        )
        .await
        .1;
    let link_id = link.rsplit('/').next().unwrap().split('.').next().unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "request.approved" && e["actor"] == format!("link:{link_id}")),
        "{events}"
    );
    // The link worked once: it now shows the decision taken.
    browser.client.goto(&link).await.unwrap();
    let page = text(&browser).await;
    assert!(
        page.contains("This link was already used") && page.contains("completed"),
        "{page}"
    );
    assert!(browser.client.find(Locator::Id("approve")).await.is_err());
    // The DPO is told.
    sink.wait_for("dpo@demo-shop.example", "Erasure request completed")
        .await;

    // A second request is rejected with a reason.
    let rejected = service.submit("erasure", email(4), None).await;
    let mail = loop {
        let found = sink
            .mails()
            .into_iter()
            .find(|m| m.subject().contains("to confirm") && m.text().contains(&rejected));
        match found {
            Some(mail) => break mail,
            None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let second = mail.link(&format!("{}/approve/", service.url)).unwrap();
    browser.client.goto(&second).await.unwrap();
    let reason = browser.client.find(Locator::Id("reason")).await.unwrap();
    reason
        .send_keys("Not our customer: no contract with this person")
        .await
        .unwrap();
    click_and_wait(&browser, "reject", Locator::Css("div.notice")).await;
    let (_, request) = service
        .get(&format!("/v1/requests/{rejected}"), &service.demo.dpo)
        .await;
    assert_eq!(request["status"], "rejected", "{request}");
    assert_eq!(
        request["decision_reason"],
        "Not our customer: no contract with this person"
    );
    // A forged or cut link is no link.
    browser
        .client
        .goto(&format!("{}x", &second[..second.len() - 1]))
        .await
        .unwrap();
    assert!(text(&browser).await.contains("This link is not valid"));

    // The DPO signs in, sees the request complete and opens its certificate page.
    browser
        .client
        .goto(&format!("{}/console", service.url))
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&service.demo.dpo)
        .await
        .unwrap();
    click_and_wait(&browser, "sign-in", Locator::Css("form.filters")).await;
    let page = text(&browser).await;
    assert!(
        page.contains("Requests") && page.contains(&approved),
        "{page}"
    );
    browser.screenshot("console").await;
    browser
        .client
        .goto(&format!("{}/console/requests/{approved}", service.url))
        .await
        .unwrap();
    let page = text(&browser).await;
    assert!(
        page.contains("completed")
            && page.contains("request.approved")
            && page.contains("demo DPO"),
        "{page}"
    );
    click_and_wait(&browser, "certificate-page", Locator::Css("body")).await;
    let certificate = browser.client.source().await.unwrap();
    assert!(
        certificate.contains(&approved),
        "the certificate page names its request"
    );
    browser.close().await;

    // A French browser gets French pages.
    let french = Browser::start("fr-FR").await.unwrap();
    french
        .client
        .goto(&format!("{}/console/sign-in", service.url))
        .await
        .unwrap();
    assert!(text(&french).await.contains("Connexion à oubli"));
    french.client.goto(&link).await.unwrap();
    assert!(text(&french).await.contains("Ce lien a déjà servi"));
    french.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_sends_reminders_with_a_new_link_and_tells_the_dpo_of_overdue_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (service, sink) = with_mail(dir.path()).await;
    let id = service.submit("access", email(5), None).await;
    let first = sink
        .wait_for("controller@demo-shop.example", "Access request to confirm")
        .await
        .link(&format!("{}/approve/", service.url))
        .unwrap();

    // Due in two days, then past due: what the clock finds, the sender sends.
    let store = oubli::store::Store::open(&dir.path().join("oubli.db").to_string_lossy())
        .await
        .unwrap();
    let config = oubli::config::Config::default();
    let now = chrono::Utc::now().timestamp_millis();
    // The request falls due at `due_at`, and the deadline job runs.
    let due = |due_at: i64| {
        let (store, config, id) = (&store, &config, &id);
        async move {
            sqlx::query("UPDATE requests SET due_at = $1 WHERE id = $2")
                .bind(due_at)
                .bind(id)
                .execute(&store.write)
                .await
                .unwrap();
            oubli::notify::email::queue_deadlines(store, config)
                .await
                .unwrap();
        }
    };
    due(now + 2 * 86_400_000).await;
    let reminder = sink
        .wait_for(
            "controller@demo-shop.example",
            "Reminder: access request awaiting your decision",
        )
        .await;
    let second = reminder.link(&format!("{}/approve/", service.url)).unwrap();
    assert_ne!(first, second, "a reminder brings a link of its own");
    // A link past its time says so, with no form and none of the person's data; every
    // page carries the headers that keep scripts, framing and referrers out.
    sqlx::query("UPDATE approval_links SET expires_at = 1 WHERE request_id = $1")
        .bind(&id)
        .execute(&store.write)
        .await
        .unwrap();
    let page = service.http.get(&second).send().await.unwrap();
    let headers = page.headers().clone();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("This link has expired") && !html.contains("customer5"),
        "{html}"
    );
    assert!(
        !html.contains("<form") && !html.contains("<script"),
        "{html}"
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    // A decision posted without the form's CSRF value is refused.
    let forged = service
        .http
        .post(&first)
        .form(&[("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Once is enough: the next look of the clock queues nothing new.
    oubli::notify::email::queue_deadlines(&store, &config)
        .await
        .unwrap();

    due(now - 1_000).await;
    sink.wait_for("dpo@demo-shop.example", "Access request overdue")
        .await;

    // Every message is listed with its attempts; after a decision, an e-mail still
    // queued with a link is not sent but skipped, with the reason.
    let (status, rejected) = service
        .post(
            &format!("/v1/requests/{id}/reject"),
            &service.demo.controller,
            serde_json::json!({ "reason": "no such customer" }),
        )
        .await;
    assert_eq!(status, 200, "{rejected}");
    sqlx::query("UPDATE emails SET status = 'pending', next_attempt_at = 0 WHERE request_id = $1 AND event = 'request.reminder'")
        .bind(&id)
        .execute(&store.write)
        .await
        .unwrap();
    let emails = service
        .poll(
            &format!("/v1/requests/{id}/emails"),
            &service.demo.dpo,
            |e| {
                e["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["event"] == "request.reminder" && m["status"] == "skipped")
            },
        )
        .await;
    let items = emails["items"].as_array().unwrap();
    let events: Vec<&str> = items.iter().map(|m| m["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["request.forwarded", "request.reminder", "request.overdue"],
        "{emails}"
    );
    let reminder = &items[1];
    assert!(
        reminder["last_error"]
            .as_str()
            .unwrap()
            .contains("rejected now"),
        "{reminder}"
    );
    assert_eq!(reminder["log"].as_array().unwrap().len(), 2, "{reminder}");
    assert_eq!(items[0]["status"], "sent");
    assert_eq!(items[0]["address"], "controller@demo-shop.example");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_or_an_address_an_e_mail_is_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let id = service.submit("erasure", email(6), None).await;
    let emails = service
        .poll(
            &format!("/v1/requests/{id}/emails"),
            &service.demo.dpo,
            |e| e["items"][0]["status"] == "skipped",
        )
        .await;
    assert!(
        emails["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("[smtp]"),
        "{emails}"
    );
    // A controller's token does not read the e-mails (they name the DPO's address).
    let (status, _) = service
        .get(
            &format!("/v1/requests/{id}/emails"),
            &service.demo.controller,
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_is_told_of_an_extension_and_an_erasure_in_the_controllers_words() {
    let dir = tempfile::tempdir().unwrap();
    let (service, sink) = with_mail(dir.path()).await;
    let demo = service.demo.clone();
    let path = format!("/v1/controllers/{}/subject-notices", demo.controller_id);
    let (status, state) = service.get(&path, &demo.controller).await;
    assert_eq!((status, state["told"].clone()), (200, json!(false)));
    let (status, refused) = service
        .call(
            reqwest::Method::PUT,
            &path,
            &demo.controller,
            Some(json!({ "events": ["data.sold"] })),
        )
        .await;
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("events[0]"))
    );
    let settings = json!({
        "events": ["erasure.completed", "request.extended"],
        "templates": { "request.extended": {
            "subject": "Délai prolongé : {reference}",
            "body": "{controller} répondra avant le {due} : {reason}" } }
    });
    let (status, state) = service
        .call(
            reqwest::Method::PUT,
            &path,
            &demo.controller,
            Some(settings),
        )
        .await;
    assert_eq!(
        (status, state["told"].clone()),
        (200, json!(true)),
        "{state}"
    );

    let (status, request) = service
        .post(
            "/v1/requests",
            &demo.dpo,
            json!({ "controller_id": demo.controller_id, "kind": "erasure", "external_ref": "T-9",
                    "identities": [{ "kind": "email", "value": "customer5@example.org" }] }),
        )
        .await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    let (status, _) = service
        .post(
            &format!("/v1/requests/{id}/extend"),
            &demo.dpo,
            json!({ "months": 1, "reason": "many systems" }),
        )
        .await;
    assert_eq!(status, 200);
    let extended = sink
        .wait_for("customer5@example.org", "Délai prolongé : T-9")
        .await;
    assert!(
        extended.text().contains("many systems"),
        "{}",
        extended.text()
    );

    super::approve(&service, &id).await;
    assert_eq!(service.settled(&id).await["status"], "completed");
    let erased = sink
        .wait_for("customer5@example.org", "Your data was erased")
        .await;
    assert!(erased.text().contains("T-9"), "{}", erased.text());

    // Recorded like any e-mail, without the subject's address.
    let emails = service
        .poll(&format!("/v1/requests/{id}/emails"), &demo.dpo, |e| {
            e["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["recipient"] == "subject" && m["status"] == "sent")
                .count()
                == 2
        })
        .await;
    for email in emails["items"].as_array().unwrap() {
        if email["recipient"] == "subject" {
            assert!(email["address"].is_null(), "{email}");
        }
    }

    // An erasure that found nothing tells the subject nothing: the DPO checks first.
    let id = super::erasure_of_no_one(&service).await;
    let (_, emails) = service
        .get(&format!("/v1/requests/{id}/emails"), &demo.dpo)
        .await;
    // Both are queued in the transaction that completes the request: the DPO's is there.
    let items = emails["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|m| m["recipient"] == "dpo" && m["event"] == "request.completed"),
        "{emails}"
    );
    assert!(
        items.iter().all(|m| m["recipient"] != "subject"),
        "{emails}"
    );
}
