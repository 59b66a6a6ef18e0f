//! `oubli bench connectors`: locate + erase of one subject at a time on a large demo CRM
//! through the first-party SQL connector, beside the same statements issued by native
//! Rust code in the same run.

use super::{Percentiles, Report};
use crate::runtime::{Identity, Runtime, RuntimeSettings, Subject};
use serde::Serialize;
use std::time::Instant;

/// The figures of `oubli bench connectors`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorsReport {
    pub benchmark: &'static str,
    pub customers: u64,
    pub subjects: u64,
    /// locate + erase through the plugin, per subject.
    pub plugin: Percentiles,
    /// The same locate and erase statements by native code, per subject.
    pub native: Percentiles,
    /// plugin mean / native mean.
    pub ratio: f64,
}

impl Report for ConnectorsReport {
    fn print_text(&self) {
        println!(
            "oubli bench connectors: locate + erase of {} subjects on a {}-customer SQLite CRM",
            self.subjects, self.customers
        );
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p99 µs", "mean µs"
        );
        for (name, p) in [
            ("through the plugin", &self.plugin),
            ("native statements", &self.native),
        ] {
            println!(
                "{name:<28} {:>10.0} {:>10.0} {:>10.0}",
                p.p50_us, p.p99_us, p.mean_us
            );
        }
        println!("ratio (mean plugin / native): {:.2}", self.ratio);
    }
}

/// The statements the SQL connector issues for the demo dataset, written directly:
/// one locate query, then the erase in one transaction (as `bench e2e`'s baseline).
async fn native(conn: &mut sqlx::SqliteConnection, email: &str) -> anyhow::Result<()> {
    let customer = "SELECT id FROM customers WHERE email = $1";
    let locate = format!(
        "SELECT 0, CAST(id AS TEXT) FROM customers WHERE email = $1 \
         UNION ALL SELECT 1, CAST(id AS TEXT) FROM orders WHERE customer_id IN ({customer}) \
         UNION ALL SELECT 2, CAST(id AS TEXT) FROM order_items WHERE order_id IN (SELECT id FROM orders WHERE customer_id IN ({customer})) \
         UNION ALL SELECT 3, CAST(id AS TEXT) FROM support_tickets WHERE customer_id IN ({customer}) \
         UNION ALL SELECT 4, CAST(id AS TEXT) FROM invoices WHERE billing_email = $1 OR customer_id IN ({customer}) ORDER BY 1, 2"
    );
    sqlx::query(&locate)
        .bind(email)
        .fetch_all(&mut *conn)
        .await?;
    super::service::native_erase(conn, email).await
}

/// Erases `subjects` customers of a `customers`-customer demo CRM through the plugin,
/// and as many others natively on a copy.
///
/// # Errors
/// When the CRM cannot be written or a call fails.
pub async fn connectors(customers: u64, subjects: u64) -> anyhow::Result<ConnectorsReport> {
    anyhow::ensure!(
        subjects >= 10 && subjects * 2 <= customers,
        "--subjects must be at least 10 and at most half of --customers"
    );
    let dir = tempfile::tempdir()?;
    let (served, copy) = (dir.path().join("served.db"), dir.path().join("native.db"));
    crate::demo::create_crm(&served, customers).await?;
    std::fs::copy(&served, &copy)?;
    let runtime = std::sync::Arc::new(Runtime::new(RuntimeSettings::default())?);
    let builtin = crate::plugins::builtin("sql")
        .ok_or_else(|| anyhow::anyhow!("the SQL connector is built in"))?;
    let plugin = runtime.load("builtin:sql", builtin.bytes, None)?;
    let system = runtime.prepare(&crate::demo::crm_system("crm", &served))?;

    // Spread the subjects over the table.
    let step = customers / subjects;
    let mut through_plugin = Vec::new();
    for i in 0..subjects {
        let subject = Subject {
            request_id: format!("bench-{i}"),
            identities: vec![Identity {
                kind: "email".into(),
                value: crate::demo::customer_email(1 + i * step),
            }],
        };
        let start = Instant::now();
        runtime.locate(&plugin, &system, &subject).await?;
        runtime.erase(&plugin, &system, &subject).await?;
        through_plugin.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let mut conn =
        sqlx::ConnectOptions::connect(&sqlx::sqlite::SqliteConnectOptions::new().filename(&copy))
            .await?;
    let mut direct = Vec::new();
    for i in 0..subjects {
        let email = crate::demo::customer_email(1 + i * step);
        let start = Instant::now();
        native(&mut conn, &email).await?;
        direct.push(start.elapsed().as_secs_f64() * 1e6);
    }
    sqlx::Connection::close(conn).await?;
    let (plugin, native) = (Percentiles::of(through_plugin), Percentiles::of(direct));
    Ok(ConnectorsReport {
        benchmark: "connectors",
        customers,
        subjects,
        ratio: plugin.mean_us / native.mean_us,
        plugin,
        native,
    })
}
