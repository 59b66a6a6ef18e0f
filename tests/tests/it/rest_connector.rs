//! The first-party REST connector against the demo helpdesk API served on loopback, with
//! `examples/rest-system.toml` as its configuration, through the real runtime.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use oubli::demo::api::{DemoApi, person_email};
use oubli::runtime::system::SecretRef;
use oubli::runtime::{Change, Outcome, RecordState, RuntimeError, SystemConfig};
use oubli_tests::{load, refusal, runtime, serve, subject};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "helpdesk-test-token";

/// The demo API with a request log and scripted answers that come before it.
struct Fake {
    api: Arc<DemoApi>,
    address: SocketAddr,
    /// "METHOD path?query" of every request that reached the server.
    log: Arc<Mutex<Vec<String>>>,
    /// Answers given instead of the API's, first in first out.
    script: Arc<Mutex<VecDeque<Response>>>,
    _secret: tempfile::NamedTempFile,
}

async fn fake(people: u64) -> Fake {
    let api = DemoApi::new(TOKEN, people);
    let log = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Mutex<VecDeque<Response>>> = Arc::new(Mutex::new(VecDeque::new()));
    let (requests, scripted) = (log.clone(), script.clone());
    let router = api
        .router()
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let (requests, scripted) = (requests.clone(), scripted.clone());
            async move {
                requests
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", request.method(), request.uri()));
                let answer = scripted.lock().unwrap().pop_front();
                match answer {
                    Some(answer) => answer,
                    None => next.run(request).await,
                }
            }
        }));
    let (address, _server) = serve(router).await;
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), TOKEN).unwrap();
    Fake {
        api,
        address,
        log,
        script,
        _secret: secret,
    }
}

impl Fake {
    /// `examples/rest-system.toml`, pointed at this server, the token in a file.
    fn system(&self) -> SystemConfig {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rest-system.toml");
        let mut config = SystemConfig::from_toml(&std::fs::read_to_string(path).unwrap())
            .expect("the example parses");
        config.config["api"]["base_url"] = json!(format!("http://{}/api", self.address));
        config.capabilities.http.as_mut().unwrap().allow = vec![self.address.to_string()];
        config.secrets = BTreeMap::from([(
            "api_token".to_owned(),
            SecretRef {
                env: None,
                file: Some(self._secret.path().display().to_string()),
                hosts: vec!["127.0.0.1".into()],
            },
        )]);
        config
    }

    fn then_answer(&self, status: StatusCode, headers: &[(&str, &str)]) {
        let mut response = (status, axum::Json(json!({ "error": "scripted" }))).into_response();
        for (name, value) in headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        self.script.lock().unwrap().push_back(response);
    }

    /// The next request is answered 200 with `body`, whatever it asks.
    fn then_answer_json(&self, body: Value) {
        self.script
            .lock()
            .unwrap()
            .push_back(axum::Json(body).into_response());
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn of(&self, collection: &str, email: &str) -> Vec<Value> {
        let field = match collection {
            "orders" => "customer_email",
            "events" => "user",
            _ => "email",
        };
        self.api
            .records(collection)
            .into_iter()
            .filter(|r| r[field] == json!(email))
            .collect()
    }
}

fn counts<'a>(collections: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for c in collections {
        *counts.entry(c.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn locate_access_rectify_and_erase_through_every_pagination_style() {
    let fake = fake(6).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("the example validates");
    // Person 4 has 4 % 3 + 1 = 2 orders; every person has 5 events, 3 consents and 2
    // notes on their contact (reached through it).
    let email = person_email(4);
    let who = subject(&[("email", &email)]);

    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    let expected: BTreeMap<String, usize> = [
        ("contacts", 1),
        ("orders", 2),
        ("events", 5),
        ("consents", 3),
        ("notes", 2),
    ]
    .map(|(c, n)| (c.to_owned(), n))
    .into();
    assert_eq!(
        counts(found.iter().map(|r| r.collection.as_str())),
        expected
    );
    let note = found.iter().find(|r| r.collection == "notes").unwrap();
    let contact = found.iter().find(|r| r.collection == "contacts").unwrap();
    assert_eq!(
        note.via.as_deref(),
        Some(format!("contacts/{}", contact.key).as_str()),
        "{note:?}"
    );
    // The Link header and the cursor made the connector fetch more than one page.
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/events?") && r.contains("page=3")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/api/consents?") && r.contains("offset=2")),
        "{requests:#?}"
    );

    // The API's loose search returns the look-alike too; only the exact match counts.
    let person1 = rt
        .locate(&plugin, &sys, &subject(&[("email", &person_email(1))]))
        .await
        .unwrap();
    assert_eq!(
        person1
            .iter()
            .filter(|r| r.collection == "contacts")
            .count(),
        1,
        "{person1:?}"
    );

    // Access: every record with its fields, in several pages.
    let mut records = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = rt.access(&plugin, &sys, &who, cursor.take()).await.unwrap();
        pages += 1;
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(pages > 4, "{pages} pages");
    assert_eq!(
        counts(records.iter().map(|r| r.collection.as_str())),
        expected
    );
    let contact = records.iter().find(|r| r.collection == "contacts").unwrap();
    let field = |name: &str| {
        contact
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value.clone())
    };
    assert_eq!(
        field("email").as_deref(),
        Some(format!("\"{email}\"").as_str())
    );
    assert_eq!(field("address.city").as_deref(), Some("\"Lyon\""));

    // Rectify: only the named field of the subject's contact changes.
    let before = fake.of("contacts", &email)[0].clone();
    let changed = rt
        .rectify(
            &plugin,
            &sys,
            &who,
            &[Change {
                collection: Some("contacts".into()),
                field: "address.city".into(),
                value: "\"Nantes\"".into(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(changed.changed.len(), 1);
    assert!(changed.not_applicable.is_empty());
    let after = fake.of("contacts", &email)[0].clone();
    assert_eq!(after["address"]["city"], "Nantes");
    assert_eq!(after["address"]["street"], before["address"]["street"]);
    assert_eq!(after["name"], before["name"]);

    // Erase: contacts, events and consents deleted; orders retained with the shipping
    // name replaced by its keyed hash; nobody else touched.
    let others_before: Vec<Vec<Value>> = ["contacts", "orders", "events", "consents"]
        .iter()
        .map(|c| fake.of(c, &person_email(5)))
        .collect();
    let erased = rt.erase(&plugin, &sys, &who).await.unwrap();
    assert_eq!(
        counts(erased.iter().map(|e| e.collection.as_str())),
        expected
    );
    assert!(erased.iter().all(|e| match e.collection.as_str() {
        "orders" => matches!(&e.outcome, Outcome::Retained { legal_basis: basis, .. } if basis.contains("17(3)(b)")),
        _ => e.outcome == Outcome::Deleted,
    }));
    for collection in ["contacts", "events", "consents"] {
        assert!(fake.of(collection, &email).is_empty(), "{collection} left");
    }
    let orders = fake.of("orders", &email);
    assert_eq!(orders.len(), 2);
    let hashed = orders[0]["shipping_name"].as_str().unwrap().to_owned();
    assert_eq!(hashed.len(), 64);
    assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        orders[1]["shipping_name"],
        json!(hashed),
        "same value, same hash"
    );
    let others_after: Vec<Vec<Value>> = ["contacts", "orders", "events", "consents"]
        .iter()
        .map(|c| fake.of(c, &person_email(5)))
        .collect();
    assert_eq!(others_before, others_after);

    // A second erase changes nothing and reports the same end state of what is left.
    let again = rt.erase(&plugin, &sys, &who).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|e| e.collection == "orders"));
    assert_eq!(fake.of("orders", &email)[0]["shipping_name"], json!(hashed));
    // The verifying locate finds only what was retained.
    let left = rt.locate(&plugin, &sys, &who).await.unwrap();
    assert!(left.iter().all(|r| r.collection == "orders"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_each_record_back_by_its_url_and_sweep_looks_past_the_exact_match() {
    let fake = fake(6).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    // Typed in another case than stored: the search and the e-mail comparison fold it.
    let who = subject(&[("email", "Person4@Example.ORG")]);
    let located = rt.locate(&plugin, &sys, &who).await.unwrap();
    assert_eq!(located.len(), 13);
    let contact = located.iter().find(|r| r.collection == "contacts").unwrap();
    assert_eq!(contact.matched.len(), 1, "{contact:?}");
    assert_eq!(contact.matched[0].field, "email");
    rt.erase(&plugin, &sys, &who).await.unwrap();

    // Read back by URL: deleted records are gone; retained orders hold their unmasked
    // personal fields and not the keyed-hashed shipping name.
    let before = fake.requests().len();
    let verified = rt.verify(&plugin, &sys, &who, &located).await.unwrap();
    assert_eq!(verified.len(), located.len());
    for v in &verified {
        match v.collection.as_str() {
            "orders" => assert_eq!(
                v.state,
                RecordState::Holds(vec!["customer_email".into(), "total_cents".into()]),
                "{v:?}"
            ),
            _ => assert_eq!(v.state, RecordState::Gone, "{v:?}"),
        }
    }
    let reads = &fake.requests()[before..];
    assert_eq!(reads.len(), located.len(), "{reads:#?}");
    assert!(
        reads
            .iter()
            .all(|r| r.starts_with("GET /api/") && !r.contains('?'))
    );

    // A record still there (an erase that lied) holds the subject's data; a success
    // without the record at `read.record` is an error, never "gone".
    let event = located.iter().find(|r| r.collection == "events").unwrap();
    fake.then_answer_json(
        json!({"data": {"id": event.key, "user": "person4@example.org", "type": "login"}}),
    );
    let lied = rt
        .verify(&plugin, &sys, &who, std::slice::from_ref(event))
        .await
        .unwrap();
    assert_eq!(
        lied[0].state,
        RecordState::Holds(vec!["type".into(), "user".into()])
    );
    // Nothing, null, or another record at `read.record`: an error, never "gone" or
    // "cleared".
    for answer in [
        json!({"unexpected": true}),
        json!({"data": null}),
        json!({"data": {"id": "event-other", "type": "login"}}),
        json!({"data": [{"id": event.key}]}),
    ] {
        fake.then_answer_json(answer.clone());
        let error = rt
            .verify(&plugin, &sys, &who, std::slice::from_ref(event))
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("did not answer with that record"),
            "{answer}: {error}"
        );
    }

    // The sweep searches as typed and in lower case, and looks in every field of every
    // result: another person's contact whose note mentions the subject is named, with
    // its field; the retained orders are found (the host allows them); the look-alike
    // address of another person is not a mention.
    fake.then_answer_json(json!({"data": [
        {"id": "contact-99", "email": "someone.else@example.org", "note": "forwarded by PERSON4@example.org today"},
        {"id": "contact-98", "email": "xperson4@example.org"}
    ], "page": 1}));
    let before = fake.requests().len();
    let report = rt.sweep(&plugin, &sys, &who, 1000).await.unwrap();
    assert!(!report.cut_short);
    assert_eq!(report.covered.len(), 4, "{report:?}");
    let hits: Vec<(String, String, String)> = report
        .hits
        .iter()
        .map(|h| (h.collection.clone(), h.key.clone(), h.field.clone()))
        .collect();
    assert!(
        hits.contains(&("contacts".into(), "contact-99".into(), "note".into())),
        "{hits:?}"
    );
    assert!(!hits.iter().any(|h| h.1 == "contact-98"), "{hits:?}");
    assert_eq!(
        hits.iter().filter(|h| h.0 == "orders").count(),
        2,
        "{hits:?}"
    );
    assert!(
        hits.iter().all(|h| h.0 == "orders" || h.1 == "contact-99"),
        "{hits:?}"
    );
    let searches = &fake.requests()[before..];
    assert!(
        searches
            .iter()
            .any(|r| r.contains("email=Person4%40Example.ORG"))
            && searches
                .iter()
                .any(|r| r.contains("email=person4%40example.org")),
        "{searches:#?}"
    );
    // A budget of two requests covers the contacts search only, and says so.
    let short = rt.sweep(&plugin, &sys, &who, 2).await.unwrap();
    assert!(short.cut_short);
    assert!(short.covered.len() <= 1, "{short:?}");
}

/// A read endpoint that cannot find the records would make every one of them "gone"
/// after the erasure: `erase` reads each one by its URL first and fails with nothing
/// changed.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_whose_read_endpoint_misses_the_records_changes_nothing() {
    let fake = fake(3).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let mut config = fake.system();
    config.config["api"]["collections"][1]["read"]["path"] = json!("/order/{id}");
    let sys = rt.prepare(&config).unwrap();
    let email = person_email(2);
    let before: Vec<usize> = ["contacts", "orders", "events", "consents"]
        .iter()
        .map(|c| fake.of(c, &email).len())
        .collect();
    let error = rt
        .erase(&plugin, &sys, &subject(&[("email", &email)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.contains("orders") && m.contains("read.path")),
        "{error:?}"
    );
    let after: Vec<usize> = ["contacts", "orders", "events", "consents"]
        .iter()
        .map(|c| fake.of(c, &email).len())
        .collect();
    assert_eq!(before, after);
    assert!(before.iter().all(|n| *n > 0), "{before:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_identity_values_travel_encoded_and_find_nothing() {
    let fake = fake(3).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    for hostile in [
        "' OR 1=1 --",
        "x&email=person1@example.org",
        "%",
        "../contacts/contact-1",
    ] {
        let who = subject(&[("email", hostile)]);
        let found = rt.locate(&plugin, &sys, &who).await.unwrap();
        assert!(found.is_empty(), "{hostile:?} found {found:?}");
        assert!(rt.erase(&plugin, &sys, &who).await.unwrap().is_empty());
    }
    assert_eq!(fake.api.records("contacts").len(), 4);
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.starts_with("GET /api/") && !r.contains("email=person1")),
        "{:#?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_server_is_retried_after_its_retry_after() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    fake.then_answer(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "1")]);
    fake.then_answer(StatusCode::SERVICE_UNAVAILABLE, &[]);
    let found = rt
        .locate(&plugin, &sys, &subject(&[("email", &person_email(2))]))
        .await
        .expect("retried until the server answers");
    assert_eq!(found.len(), 1 + 3 + 5 + 3 + 2);
    let requests = fake.requests();
    assert_eq!(requests[0], requests[1], "the same request again");
    assert_eq!(requests[1], requests[2]);
}

/// A loopback proxy to `target` that hangs up, without an answer, on the first `drops`
/// connections whose request starts with `method`. Returns its address and how many
/// connections it dropped.
async fn dropping_proxy(
    target: SocketAddr,
    method: &'static str,
    drops: usize,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let Ok(n) = inbound.read(&mut head).await else {
                    return;
                };
                if head[..n].starts_with(method.as_bytes())
                    && count
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                            (d < drops).then_some(d + 1)
                        })
                        .is_ok()
                {
                    return; // the connection closes with no answer
                }
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await
                    && outbound.write_all(&head[..n]).await.is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, dropped)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_closed_before_the_answer_is_retried_for_idempotent_requests() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let through = |proxy: SocketAddr| {
        let mut config = fake.system();
        config.config["api"]["base_url"] = json!(format!("http://{proxy}/api"));
        config.capabilities.http.as_mut().unwrap().allow = vec![proxy.to_string()];
        rt.prepare(&config).unwrap()
    };
    let who = subject(&[("email", &person_email(2))]);

    let (proxy, dropped) = dropping_proxy(fake.address, "GET ", 2).await;
    let found = rt
        .locate(&plugin, &through(proxy), &who)
        .await
        .expect("the search is sent again after the dropped connections");
    assert_eq!(found.len(), 1 + 3 + 5 + 3 + 2);
    assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 2);

    let (proxy, dropped) = dropping_proxy(fake.address, "DELETE ", 1).await;
    rt.erase(&plugin, &through(proxy), &who)
        .await
        .expect("the DELETE is sent again");
    assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(fake.of("contacts", &person_email(2)).is_empty());
    assert!(fake.of("events", &person_email(2)).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_retry_after_or_a_lasting_outage_is_left_to_the_host_to_retry() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    let who = subject(&[("email", &person_email(1))]);

    fake.then_answer(StatusCode::TOO_MANY_REQUESTS, &[("retry-after", "120")]);
    let error = rt.locate(&plugin, &sys, &who).await.unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.contains("429") && m.ends_with("retry after 120")),
        "{error:?}"
    );
    assert_eq!(
        oubli::retry::retry_after(&error.to_string()),
        Some(std::time::Duration::from_secs(120))
    );
    assert_eq!(fake.requests().len(), 1, "not retried inside the call");

    for _ in 0..3 {
        fake.then_answer(StatusCode::SERVICE_UNAVAILABLE, &[]);
    }
    let error = rt.erase(&plugin, &sys, &who).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.contains("503")),
        "{error:?}"
    );
    assert_eq!(
        fake.of("contacts", &person_email(1)).len(),
        1,
        "nothing erased"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_are_fatal_with_a_clear_message() {
    let fake = fake(2).await;
    std::fs::write(fake._secret.path(), "not-the-token").unwrap();
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    let error = rt
        .locate(&plugin, &sys, &subject(&[("email", &person_email(1))]))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("credentials") && m.contains("401")),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_off_the_allow_list_is_refused() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    // Same server, another name: not on the allow-list, so never asked.
    let elsewhere = format!("http://localhost:{}/api/contacts", fake.address.port());
    fake.then_answer(StatusCode::FOUND, &[("location", &elsewhere)]);
    let error = rt
        .locate(&plugin, &sys, &subject(&[("email", &person_email(1))]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.contains("allow-list")),
        "{error:?}"
    );
    assert_eq!(fake.requests().len(), 1, "{:#?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_error_names_its_path() {
    let fake = fake(1).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let mut config = fake.system();
    config.config["api"]["collections"][2]
        .as_object_mut()
        .unwrap()
        .remove("delete");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[2].delete:")),
        "{error:?}"
    );
    // Without a read endpoint nothing could be read back after an erasure.
    let mut config = fake.system();
    config.config["api"]["collections"][3]
        .as_object_mut()
        .unwrap()
        .remove("read");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[3].read:")),
        "{error:?}"
    );
    assert!(fake.requests().is_empty(), "validation sends nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_names_the_request_and_quotes_the_answer_without_the_identity() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    let email = person_email(1);
    let answer = (
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "{{\"error\": \"no filter on {}\", \"hint\": \"see the docs\"}}",
            email.to_uppercase()
        ),
    )
        .into_response();
    fake.script.lock().unwrap().push_back(answer);
    let error = rt
        .locate(&plugin, &sys, &subject(&[("email", &email)]))
        .await
        .unwrap_err();
    let RuntimeError::Failed(message) = &error else {
        panic!("{error:?}");
    };
    assert!(
        message.contains("GET /contacts")
            && message.contains("422")
            && message.contains("no filter on [")
            && message.contains("see the docs"),
        "{message}"
    );
    assert!(
        !message.to_lowercase().contains(&email.to_lowercase()),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_whose_results_are_not_checked_must_say_it_is_exact() {
    let fake = fake(1).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let mut config = fake.system();
    config.config["api"]["collections"][3]
        .as_object_mut()
        .unwrap()
        .remove("identities");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[3].identities:") && m.contains("exact")),
        "{error:?}"
    );
    config.config["api"]["collections"][3]["search"]["exact"] = json!(true);
    let sys = rt.prepare(&config).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("declared exact, it is accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_that_never_ends_fails_instead_of_being_cut_short() {
    use axum::extract::Query;
    let router = axum::Router::new().route(
        "/api/items",
        axum::routing::get(|Query(query): Query<BTreeMap<String, String>>| async move {
            let n: u64 = query
                .get("cursor")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            axum::Json(json!({ "items": [], "next": (n + 1).to_string() }))
        }),
    );
    let (address, _server) = serve(router).await;
    let fake = fake(1).await;
    let mut config = fake.system();
    config.config["api"] = json!({
        "base_url": format!("http://{address}/api"),
        "collections": [{
            "name": "items", "id": "id",
            "search": { "path": "/items", "by": { "email": "email" }, "results": "items",
                        "pagination": { "style": "cursor", "param": "cursor", "next": "next" } },
            "identities": { "email": "email" },
            "read": { "path": "/items/{id}" }, "delete": { "path": "/items/{id}" },
        }],
    });
    let http = config.capabilities.http.as_mut().unwrap();
    http.allow = vec![address.to_string()];
    http.max_requests = Some(5_000);
    config.limits.timeout_ms = Some(120_000);
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&config).unwrap();
    let error = rt
        .erase(&plugin, &sys, &subject(&[("email", "jane@example.org")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("1000 pages") && m.contains("refused")),
        "{error:?}"
    );
}

/// Basic, bearer, header and query credentials, each filled in by the host from the
/// system's secret: the API gets them as it expects them.
#[tokio::test(flavor = "multi_thread")]
async fn each_auth_style_sends_the_secret_as_the_api_expects_it() {
    use axum::http::HeaderMap;
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let log = seen.clone();
    let router = axum::Router::new().route(
        "/api/items",
        axum::routing::get(move |headers: HeaderMap, request: Request| {
            let log = log.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                log.lock().unwrap().push((
                    header("authorization"),
                    header("x-api-key"),
                    request.uri().query().unwrap_or_default().to_owned(),
                ));
                axum::Json(json!({ "items": [{ "id": "1", "email": "jane@example.org" }] }))
            }
        }),
    );
    let (address, _server) = serve(router).await;
    let fake = fake(1).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let system = |auth: Value| {
        let mut config = fake.system();
        config.config["api"] = json!({
            "base_url": format!("http://{address}/api"),
            "auth": auth,
            "collections": [{
                "name": "items", "id": "id",
                "search": { "path": "/items", "by": { "email": "email" }, "results": "items" },
                "identities": { "email": "email" },
                "read": { "path": "/items/{id}" }, "delete": { "path": "/items/{id}" },
            }],
        });
        config.capabilities.http.as_mut().unwrap().allow = vec![address.to_string()];
        config
    };
    let jane = subject(&[("email", "jane@example.org")]);
    for auth in [
        json!({ "basic": { "username": "oubli", "password_secret": "api_token" } }),
        json!({ "bearer": { "token_secret": "api_token" } }),
        json!({ "header": { "name": "X-Api-Key", "secret": "api_token" } }),
        json!({ "query": { "name": "api_key", "secret": "api_token" } }),
    ] {
        let sys = rt.prepare(&system(auth.clone())).unwrap();
        rt.validate(&plugin, &sys).await.expect("valid");
        let found = rt.locate(&plugin, &sys, &jane).await.unwrap();
        assert_eq!(found.len(), 1, "{auth}");
    }
    let seen = seen.lock().unwrap().clone();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("oubli:{TOKEN}"));
    // Two requests per style: validate's probe and the search.
    assert_eq!(seen.len(), 8, "{seen:#?}");
    assert_eq!(seen[1].0, format!("Basic {basic}"));
    assert_eq!(seen[3].0, format!("Bearer {TOKEN}"));
    assert_eq!(seen[5].1, TOKEN);
    assert!(
        seen[7].2.ends_with(&format!("&api_key={TOKEN}")),
        "{:?}",
        seen[7]
    );

    // A credential written in place of a secret's name is refused, naming the setting.
    let sys = rt
        .prepare(&system(
            json!({ "basic": { "username": "oubli", "password_secret": "hunter2 !" } }),
        ))
        .unwrap();
    let error = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.auth.basic.password_secret:")),
        "{error:?}"
    );
}

/// Connecting a system checks the API: a wrong port, a misspelt search path and a wrong
/// credential are each refused, naming the setting, before any request can reach it.
#[tokio::test(flavor = "multi_thread")]
async fn validate_probes_the_api_and_names_what_is_wrong() {
    let fake = fake(2).await;
    let rt = runtime();
    let plugin = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    rt.validate(&plugin, &sys)
        .await
        .expect("the example connects");
    let probes = fake.requests();
    assert_eq!(probes.len(), 4, "one search per collection: {probes:#?}");
    assert!(
        probes.iter().all(|p| p.contains("connection-check")),
        "{probes:#?}"
    );
    assert!(
        fake.of("contacts", &person_email(1)).len() == 1,
        "nothing changed"
    );

    let mut config = fake.system();
    config.config["api"]["collections"][1]["search"]["path"] = json!("/order");
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::InvalidConfig(m) if m.starts_with("config.api.collections[1].search.path:") && m.contains("404")),
        "{error:?}"
    );

    std::fs::write(fake._secret.path(), "not-the-token").unwrap();
    let sys = rt.prepare(&fake.system()).unwrap();
    let error = rt.validate(&plugin, &sys).await.unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Denied(m) if m.starts_with("config.api.auth:") && m.contains("401")),
        "{error:?}"
    );
    std::fs::write(fake._secret.path(), TOKEN).unwrap();

    // A port where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = fake.system();
    config.config["api"]["base_url"] = json!(format!("http://127.0.0.1:{port}/api"));
    config.capabilities.http.as_mut().unwrap().allow = vec![format!("127.0.0.1:{port}")];
    let error = refusal(&rt, &plugin, &config).await;
    assert!(
        matches!(&error, RuntimeError::Unavailable(m) if m.starts_with("config.api.base_url:")),
        "{error:?}"
    );
}

/// The hand-written example connector (`examples/email-change-plugin`) changes a
/// contact's e-mail address in the demo API's three steps, which a PATCH cannot do (the
/// API refuses it, as the declarative connector finds out).
#[tokio::test(flavor = "multi_thread")]
async fn the_example_plugin_changes_an_email_address_in_three_steps() {
    let fake = fake(3).await;
    let rt = runtime();
    let who = subject(&[("email", &person_email(2))]);
    let change = |field: &str, value: Value| Change {
        collection: Some("contacts".into()),
        field: field.into(),
        value: value.to_string(),
    };

    // The declarative connector's PATCH is refused, and says so.
    let rest = load(&rt, "oubli_rest");
    let sys = rt.prepare(&fake.system()).unwrap();
    let error = rt
        .rectify(
            &rest,
            &sys,
            &who,
            &[change("email", json!("new2@example.org"))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RuntimeError::Failed(m) if m.contains("PATCH /contacts/{id}") && m.contains("422") && m.contains("/emails")),
        "{error:?}"
    );

    let plugin = load(&rt, "oubli_example_email_change");
    let mut config = fake.system();
    config.config = serde_json::Map::new();
    config.config.insert(
        "api_url".into(),
        json!(format!("http://{}/api", fake.address)),
    );
    let sys = rt.prepare(&config).unwrap();
    rt.validate(&plugin, &sys).await.unwrap();
    let found = rt.locate(&plugin, &sys, &who).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let rectified = rt
        .rectify(
            &plugin,
            &sys,
            &who,
            &[
                change("email", json!("new2@example.org")),
                change("name", json!("Person Two")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(rectified.changed.len(), 1, "{rectified:?}");
    assert!(fake.of("contacts", &person_email(2)).is_empty());
    let moved = fake.of("contacts", "new2@example.org");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["name"], "Person Two");
    let steps: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(steps.len(), 3, "add, verify, make primary: {steps:#?}");

    // Found and erased under the new address.
    let moved_subject = subject(&[("email", "new2@example.org")]);
    let erased = rt.erase(&plugin, &sys, &moved_subject).await.unwrap();
    assert_eq!(erased.len(), 1);
    assert!(fake.of("contacts", "new2@example.org").is_empty());
}
