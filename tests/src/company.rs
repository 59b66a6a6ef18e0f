//! A small company database with the traps of real ones, the same on SQLite, PostgreSQL
//! and MySQL/MariaDB, and the oracle of which rows are Jane Doe's.
//!
//! - foreign keys of each kind: orders and tickets `ON DELETE CASCADE`, invoices
//!   `ON DELETE SET NULL`, addresses `NO ACTION` (a customer cannot go before them);
//! - a trigger that refuses deleting any invoice (kept ten years under the accounting
//!   obligation);
//! - a household: Paul shares Jane's phone and street;
//! - a homonym: another Jane Doe, with her own invoice;
//! - a newsletter table without a foreign key, storing Jane's address in capitals with a
//!   leading space;
//! - copies: orders copy the customer's phone, invoices the customer's e-mail and name;
//! - mentions: Paul's ticket names Jane's e-mail address; the homonym's ticket names
//!   "Jane Doe", which proves nothing.

use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The statements that create and fill the database on `engine` (`sqlite`, `postgres`
/// or `mysql`), one per entry.
pub fn schema(engine: &str) -> Vec<String> {
    let mut statements: Vec<String> = [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email VARCHAR(200), phone VARCHAR(40), name VARCHAR(100))",
        "CREATE TABLE addresses (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, street VARCHAR(200), \
           FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE NO ACTION)",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, shipping_phone VARCHAR(40), \
           FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE)",
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer_id INTEGER, billing_email VARCHAR(200), \
           billing_name VARCHAR(100), amount INTEGER, \
           FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE SET NULL)",
        "CREATE TABLE newsletter (id INTEGER PRIMARY KEY, address VARCHAR(200))",
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, customer_id INTEGER, body VARCHAR(500), \
           FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE)",
        "INSERT INTO customers VALUES (1, 'jane.doe@example.com', '+33 6 12 34 56 78', 'Jane Doe')",
        "INSERT INTO customers VALUES (2, 'paul.doe@example.com', '06 12 34 56 78', 'Paul Doe')",
        "INSERT INTO customers VALUES (3, 'jane.doe2@example.com', '07 00 00 00 00', 'Jane Doe')",
        "INSERT INTO addresses VALUES (50, 1, '12 rue des Lilas, Lyon')",
        "INSERT INTO addresses VALUES (51, 2, '12 rue des Lilas, Lyon')",
        "INSERT INTO addresses VALUES (52, 3, '3 place Bellecour, Lyon')",
        "INSERT INTO orders VALUES (10, 1, '+33 6 12 34 56 78')",
        "INSERT INTO orders VALUES (11, 1, '+33 6 12 34 56 78')",
        "INSERT INTO orders VALUES (12, 2, '06 12 34 56 78')",
        "INSERT INTO orders VALUES (13, 3, '07 00 00 00 00')",
        "INSERT INTO invoices VALUES (20, 1, 'Jane.Doe@Example.com', 'Jane Doe', 100)",
        "INSERT INTO invoices VALUES (21, 3, 'jane.doe2@example.com', 'Jane Doe', 50)",
        "INSERT INTO newsletter VALUES (30, ' JANE.DOE@example.com')",
        "INSERT INTO newsletter VALUES (31, 'paul.doe@example.com')",
        "INSERT INTO tickets VALUES (40, 1, 'Where is my parcel?')",
        "INSERT INTO tickets VALUES (41, 2, 'My wife jane.doe@example.com will pick it up')",
        "INSERT INTO tickets VALUES (42, 3, 'Not the same Jane Doe')",
    ]
    .map(str::to_owned)
    .into();
    let refusal = "invoices are kept ten years";
    match engine {
        "sqlite" => statements.push(format!(
            "CREATE TRIGGER keep_invoices BEFORE DELETE ON invoices BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
        )),
        "postgres" => {
            statements.push(format!(
                "CREATE FUNCTION keep_invoices() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{refusal}'; END $$"
            ));
            statements.push(
                "CREATE TRIGGER keep_invoices BEFORE DELETE ON invoices FOR EACH ROW EXECUTE FUNCTION keep_invoices()".into(),
            );
        }
        _ => statements.push(format!(
            "CREATE TRIGGER keep_invoices BEFORE DELETE ON invoices FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{refusal}'"
        )),
    }
    statements
}

/// What the refusing trigger says.
pub const REFUSAL: &str = "invoices are kept ten years";

/// The legal basis the dataset gives for keeping invoices.
pub const LEGAL_BASIS: &str =
    "Art. 17(3)(b) GDPR: invoices are kept ten years (Code de commerce L123-22)";

/// The SQL connector's dataset for the database: e-mail addresses matched trimmed and in
/// any case, phone numbers by their digits, the street, phone and name weak (the
/// default), copies declared, invoices kept with their identifying fields masked, and
/// tickets searched for mentions.
pub fn dataset() -> Value {
    json!({ "tables": [
        { "name": "customers", "key": "id",
          "identities": { "email": { "column": "email", "match": "email" },
                          "phone": { "column": "phone", "match": "phone", "region": "FR" },
                          "name": "name" },
          "columns": { "email": "contact", "phone": "contact", "name": "identity" } },
        { "name": "addresses", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "identities": { "address": "street" },
          "columns": { "street": "contact" } },
        { "name": "orders", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "identities": { "phone": { "column": "shipping_phone", "match": "phone", "region": "FR" } },
          "columns": { "shipping_phone": "contact" }, "copies": { "shipping_phone": "customers.phone" } },
        { "name": "invoices", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "identities": { "email": { "column": "billing_email", "match": "email" } },
          "columns": { "billing_email": "contact", "billing_name": "identity", "amount": "billing" },
          "copies": { "billing_email": "customers.email", "billing_name": "customers.name" },
          "erase": { "action": "retain", "legal_basis": LEGAL_BASIS,
                     "columns": { "billing_email": "keyed-hash", "billing_name": "keyed-hash" } } },
        { "name": "newsletter", "key": "id",
          "identities": { "email": { "column": "address", "match": "email" } },
          "columns": { "address": "contact" } },
        { "name": "tickets", "key": "id", "parent": { "table": "customers", "column": "customer_id" },
          "columns": { "body": "communications" }, "mentions": ["body"] },
    ]})
}

/// Jane's identities as a DPO would file them: the e-mail in another case, the phone in
/// another notation, her name and her street.
pub const JANE: [(&str, &str); 4] = [
    ("email", "Jane.Doe@example.com"),
    ("phone", "06.12.34.56.78"),
    ("name", "Jane Doe"),
    ("address", "12 rue des Lilas, Lyon"),
];

/// Jane's own rows, as (table, key).
pub fn oracle() -> BTreeSet<(String, String)> {
    crate::places(&[
        ("customers", "1"),
        ("addresses", "50"),
        ("orders", "10"),
        ("orders", "11"),
        ("invoices", "20"),
        ("newsletter", "30"),
        ("tickets", "40"),
    ])
}

/// The row of someone else that mentions Jane: Paul's ticket.
pub fn mention() -> (String, String) {
    ("tickets".to_owned(), "41".to_owned())
}

/// The keys each table holds once Jane is erased: others' rows untouched, her invoice
/// kept.
pub fn left_after_erasure() -> [(&'static str, BTreeSet<i64>); 6] {
    [
        ("customers", BTreeSet::from([2, 3])),
        ("addresses", BTreeSet::from([51, 52])),
        ("orders", BTreeSet::from([12, 13])),
        ("invoices", BTreeSet::from([20, 21])),
        ("newsletter", BTreeSet::from([31])),
        ("tickets", BTreeSet::from([41, 42])),
    ]
}
