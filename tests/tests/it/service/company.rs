//! The company database of [`oubli_tests::company`] through the service, as a DPO files
//! requests for Jane Doe: the access package holds exactly her rows and the mention apart,
//! and the erasure certificate counts exactly what happened to each table and how it was
//! checked.

use oubli_tests::{Service, company};
use serde_json::{Value, json};
use std::collections::BTreeSet;

struct Setup {
    dpo: String,
    controller: String,
    db: std::path::PathBuf,
}

async fn setup(service: &Service, dir: &std::path::Path) -> Setup {
    let db = dir.join("company.db");
    {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true);
        let mut connection = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        for statement in company::schema("sqlite") {
            sqlx::raw_sql(&statement)
                .execute(&mut connection)
                .await
                .unwrap();
        }
        connection.close().await.unwrap();
    }
    let admin = service.demo.admin.clone();
    let (_, created) = service
        .post(
            "/v1/controllers",
            &admin,
            json!({ "name": "Doe & Co", "auto_approve": true }),
        )
        .await;
    let controller = created["controller"]["id"].as_str().unwrap().to_owned();
    let digest = service.builtin_digest(&admin, "sql").await;
    let (status, body) = service
        .post(
            &format!("/v1/controllers/{controller}/systems"),
            &admin,
            json!({ "name": "company", "plugin": digest,
                    "capabilities": { "host": true,
                                      "sql": { "url": format!("sqlite://{}", db.display()) } },
                    "config": { "dataset": company::dataset() } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dpo = service.token(&admin, "dpo", &controller).await;
    Setup {
        dpo,
        controller,
        db,
    }
}

/// Files a request for Jane and waits until it settles; returns the request.
async fn file(service: &Service, setup: &Setup, kind: &str) -> Value {
    let identities: Vec<Value> = company::JANE
        .iter()
        .map(|(kind, value)| json!({ "kind": kind, "value": value }))
        .collect();
    let body = json!({ "controller_id": setup.controller, "kind": kind, "identities": identities });
    let (status, request) = service.post("/v1/requests", &setup.dpo, body).await;
    assert_eq!(status, 201, "{request}");
    let id = request["id"].as_str().unwrap().to_owned();
    service.settled_as(&id, &setup.dpo).await
}

fn places(records: &Value) -> BTreeSet<(String, String)> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["collection"].as_str().unwrap().to_owned(),
                r["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_company_database_gives_exactly_her_rows_and_the_certificate_says_what_became_of_each()
{
    let dir = tempfile::tempdir().unwrap();
    let service = Service::spawn_app(dir.path(), &[]).await;
    let setup = setup(&service, dir.path()).await;

    let access = file(&service, &setup, "access").await;
    assert_eq!(access["status"], "completed", "{access}");
    let id = access["id"].as_str().unwrap();
    let (_, results) = service
        .get(&format!("/v1/requests/{id}/results"), &setup.dpo)
        .await;
    let records = &results["systems"][0]["result"]["records"];
    let (mentions, own): (Vec<Value>, Vec<Value>) = records
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|r| r["collection"] == "tickets (mentions of the subject)");
    assert_eq!(places(&Value::from(own)), company::oracle(), "{results}");
    assert_eq!(mentions.len(), 1, "{results}");
    assert_eq!(mentions[0]["key"], "41");
    // The text around the mention, and nothing else of the other customer's record.
    let fields = mentions[0]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{}", mentions[0]);
    assert_eq!(fields[0]["name"], "body", "{}", mentions[0]);
    assert!(
        fields[0]["value"]
            .as_str()
            .unwrap()
            .contains("jane.doe@example.com will pick it up"),
        "{}",
        mentions[0]
    );

    let erasure = file(&service, &setup, "erasure").await;
    assert_eq!(erasure["status"], "completed", "{erasure}");
    let id = erasure["id"].as_str().unwrap();
    let (status, signed) = service
        .get(&format!("/v1/requests/{id}/certificate"), &setup.dpo)
        .await;
    assert_eq!(status, 200, "{signed}");
    let certificate = &signed["certificate"];
    assert!(
        !certificate.to_string().contains("jane.doe"),
        "no identity in clear"
    );
    let system = &certificate["systems"][0];
    let collection = |name: &str| {
        system["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {system}"))
            .clone()
    };
    let counts = |name: &str| {
        let c = collection(name);
        (
            c["deleted"].as_u64().unwrap(),
            c["anonymised"].as_u64().unwrap(),
            c["retained"].as_u64().unwrap(),
        )
    };
    assert_eq!(counts("customers"), (1, 0, 0));
    assert_eq!(counts("addresses"), (1, 0, 0));
    assert_eq!(counts("orders"), (2, 0, 0));
    assert_eq!(counts("newsletter"), (1, 0, 0));
    assert_eq!(
        counts("tickets"),
        (1, 1, 0),
        "her ticket deleted; Paul's cleared of the mention"
    );
    assert_eq!(collection("tickets")["masked_fields"], json!(["body"]));
    assert_eq!(counts("invoices"), (0, 0, 1));
    let invoices = collection("invoices");
    assert_eq!(
        invoices["masked_fields"],
        json!(["billing_email", "billing_name"])
    );
    assert_eq!(invoices["legal_bases"], json!([company::LEGAL_BASIS]));
    assert_eq!(system["collections"].as_array().unwrap().len(), 6);

    let verification = &system["verification"];
    assert_eq!(verification["records_located_before_erasure"], 8);
    assert_eq!(verification["all_located_reported_by_erase"], true);
    let read_back = &verification["read_back"];
    assert_eq!(
        (
            &read_back["records"],
            &read_back["gone"],
            &read_back["cleared"],
            &read_back["retained"]
        ),
        (&json!(8), &json!(6), &json!(1), &json!(1)),
        "{verification}"
    );
    assert_eq!(system["sweep"]["found_outside_retained_records"], 0);
    assert_eq!(certificate["records_found"], 8, "{certificate}");

    // The database holds what the certificate says.
    for (table, keys) in company::left_after_erasure() {
        let left = oubli_tests::count(&setup.db, table, "1 = 1").await;
        assert_eq!(left as usize, keys.len(), "{table}");
    }
    assert_eq!(
        oubli_tests::count(
            &setup.db,
            "tickets",
            "id = 41 AND body = 'My wife [erased] will pick it up'"
        )
        .await,
        1
    );
}
