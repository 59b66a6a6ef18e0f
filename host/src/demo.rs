//! The demo CRM: a SQLite database with customers, orders, order items, support tickets
//! and invoices, and the connected-system configuration that lets the first-party SQL
//! connector find, export, rectify and erase a customer in it.
//!
//! `oubli demo crm` writes one; `oubli serve` creates one on first start so that a new
//! installation serves a working system; the tests and benchmarks generate theirs.
//! Customer `n` has the e-mail `customer{n}@example.org`; first and last names repeat, so
//! several customers share a name.

pub mod api;

use crate::runtime::SystemConfig;
use crate::runtime::system::{Capabilities, SqlGrant};
use anyhow::Context;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;

const FIRST_NAMES: &[&str] = &[
    "Camille", "Louis", "Inès", "Hugo", "Léa", "Jules", "Chloé", "Adam", "Manon", "Noah",
];
const LAST_NAMES: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
];
const CITIES: &[&str] = &[
    "Lyon", "Nantes", "Lille", "Rennes", "Bordeaux", "Toulouse", "Grenoble",
];

/// The demo CRM's schema. Invoices reference customers with `ON DELETE SET NULL`: the law
/// keeps invoices after their customer is erased.
pub const SCHEMA: &str = r"
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    phone TEXT,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    city TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    placed_at TEXT NOT NULL,
    shipping_address TEXT NOT NULL,
    total_cents INTEGER NOT NULL
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE TABLE order_items (
    id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders(id),
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    gift_message TEXT
);
CREATE INDEX order_items_order ON order_items(order_id);
CREATE TABLE support_tickets (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    subject TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX support_tickets_customer ON support_tickets(customer_id);
CREATE TABLE invoices (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(id) ON DELETE SET NULL,
    number TEXT NOT NULL UNIQUE,
    billing_email TEXT,
    billing_name TEXT NOT NULL,
    billing_address TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE INDEX invoices_customer ON invoices(customer_id);
CREATE INDEX invoices_billing_email ON invoices(billing_email);
";

/// What [`create_crm`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CrmSize {
    pub customers: u64,
    pub orders: u64,
    pub order_items: u64,
    pub support_tickets: u64,
    pub invoices: u64,
}

/// The e-mail address of demo customer `n` (1-based).
pub fn customer_email(n: u64) -> String {
    format!("customer{n}@example.org")
}

/// Creates a demo CRM with `customers` customers at `path`, which must not exist yet.
/// Customer `n` has `n % 3 + 1` orders of two items each, an invoice per order, and every
/// other customer a support ticket.
///
/// # Errors
/// When the file exists or cannot be written.
pub async fn create_crm(path: &Path, customers: u64) -> anyhow::Result<CrmSize> {
    anyhow::ensure!(
        !path.exists(),
        "{} already exists; the demo CRM is only written to a new file",
        path.display()
    );
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .connect()
        .await
        .with_context(|| format!("creating {}", path.display()))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&mut conn)
        .await
        .context("creating the demo CRM schema")?;
    let mut size = CrmSize {
        customers,
        orders: 0,
        order_items: 0,
        support_tickets: 0,
        invoices: 0,
    };
    let mut tx = conn.begin().await?;
    for n in 1..=customers {
        let first = FIRST_NAMES[(n as usize) % FIRST_NAMES.len()];
        let last = LAST_NAMES[(n as usize / FIRST_NAMES.len()) % LAST_NAMES.len()];
        let city = CITIES[(n as usize) % CITIES.len()];
        let address = format!("{} rue de la République, {city}", n % 200 + 1);
        sqlx::query("INSERT INTO customers (id, email, phone, first_name, last_name, city, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(n as i64)
            .bind(customer_email(n))
            .bind(format!("+33 6 {:02} {:02} {:02} {:02}", n / 1_000_000 % 100, n / 10_000 % 100, n / 100 % 100, n % 100))
            .bind(first)
            .bind(last)
            .bind(city)
            .bind(format!("2024-{:02}-{:02}T10:00:00Z", n % 12 + 1, n % 28 + 1))
            .execute(&mut *tx)
            .await?;
        for o in 0..(n % 3 + 1) {
            size.orders += 1;
            let order = size.orders as i64;
            let total = ((n * 37 + o * 11) % 20_000 + 500) as i64;
            sqlx::query("INSERT INTO orders (id, customer_id, placed_at, shipping_address, total_cents) VALUES (?, ?, ?, ?, ?)")
                .bind(order)
                .bind(n as i64)
                .bind(format!("2025-{:02}-{:02}T15:30:00Z", (n + o) % 12 + 1, (n + o) % 28 + 1))
                .bind(&address)
                .bind(total)
                .execute(&mut *tx)
                .await?;
            for item in 0..2u64 {
                size.order_items += 1;
                sqlx::query("INSERT INTO order_items (id, order_id, sku, quantity, gift_message) VALUES (?, ?, ?, ?, ?)")
                    .bind(size.order_items as i64)
                    .bind(order)
                    .bind(format!("SKU-{:05}", (n * 7 + item) % 10_000))
                    .bind((item + 1) as i64)
                    .bind((item == 1).then(|| format!("Bon anniversaire, de la part de {first}")))
                    .execute(&mut *tx)
                    .await?;
            }
            size.invoices += 1;
            sqlx::query(
                "INSERT INTO invoices (id, customer_id, number, billing_email, billing_name, billing_address, amount_cents, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(size.invoices as i64)
            .bind(n as i64)
            .bind(format!("F-2025-{:07}", size.invoices))
            .bind(customer_email(n))
            .bind(format!("{first} {last}"))
            .bind(&address)
            .bind(total)
            .bind(format!("2025-{:02}-{:02}", (n + o) % 12 + 1, (n + o) % 28 + 1))
            .execute(&mut *tx)
            .await?;
        }
        if n % 2 == 0 {
            size.support_tickets += 1;
            sqlx::query(
                "INSERT INTO support_tickets (id, customer_id, subject, body) VALUES (?, ?, ?, ?)",
            )
            .bind(size.support_tickets as i64)
            .bind(n as i64)
            .bind("Livraison en retard")
            .bind(format!(
                "Bonjour, je suis {first} {last} et ma commande n'est pas arrivée à {city}."
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(size)
}

/// The dataset configuration of the demo CRM for the first-party SQL connector:
/// customers, orders, order items and tickets are deleted; invoices are kept under the
/// accounting obligation with the billing e-mail removed.
pub fn crm_dataset() -> serde_json::Value {
    json!({
        "tables": [
            {
                "name": "customers",
                "key": "id",
                "identities": { "email": "email", "phone": "phone", "customer-id": "id" },
                "columns": {
                    "email": "contact", "phone": "contact", "first_name": "identity",
                    "last_name": "identity", "city": "location", "created_at": "account"
                }
            },
            {
                "name": "orders",
                "key": "id",
                "parent": { "table": "customers", "column": "customer_id" },
                "columns": { "placed_at": "purchases", "shipping_address": "location", "total_cents": "purchases" }
            },
            {
                "name": "order_items",
                "key": "id",
                "parent": { "table": "orders", "column": "order_id" },
                "columns": { "sku": "purchases", "quantity": "purchases", "gift_message": "communications" }
            },
            {
                "name": "support_tickets",
                "key": "id",
                "parent": { "table": "customers", "column": "customer_id" },
                "columns": { "subject": "communications", "body": "communications" }
            },
            {
                "name": "invoices",
                "key": "id",
                "identities": { "email": "billing_email" },
                "parent": { "table": "customers", "column": "customer_id" },
                "columns": {
                    "number": "billing", "billing_email": "contact", "billing_name": "identity",
                    "billing_address": "location", "amount_cents": "billing"
                },
                "erase": {
                    "action": "retain",
                    "legal_basis": "Art. 17(3)(b) GDPR: invoices are kept ten years under the accounting obligation (French Commercial Code, L123-22)"
                }
            }
        ]
    })
}

/// A connected system named `name` whose plugin is the first-party SQL connector, on the
/// demo CRM at `path`.
pub fn crm_system(name: &str, path: &Path) -> SystemConfig {
    let mut config = serde_json::Map::new();
    config.insert("dataset".into(), crm_dataset());
    SystemConfig {
        name: name.to_owned(),
        capabilities: Capabilities {
            host: true,
            sql: Some(SqlGrant {
                url: format!("sqlite://{}", path.display()),
            }),
            http: None,
        },
        config,
        ..SystemConfig::default()
    }
}
