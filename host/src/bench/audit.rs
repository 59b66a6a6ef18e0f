//! `oubli bench audit`: how fast the audit trail is verified and its access log purged,
//! beside reading the same rows and deleting them without checks or checkpoints.

use super::Scratch;
use crate::audit::{self, ACCESS_LOG};
use crate::crypto::Keys;
use crate::store::{Sql, Store, now_ms};
use serde::Serialize;
use std::time::Instant;

/// Events appended per transaction while the trail is built.
const APPEND_BATCH: u64 = 1_000;
/// Events removed per purge transaction, as the purge job does.
const PURGE_BATCH: i64 = 500;

/// The figures of `oubli bench audit`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub benchmark: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    pub events: u64,
    /// Reading every event and walking the hash chain, events per second.
    pub verify_per_second: f64,
    /// Reading the same rows without checking them, rows per second.
    pub read_per_second: f64,
    /// read_per_second / verify_per_second: what checking costs over reading.
    pub verify_ratio: f64,
    /// Access-log events removed (one in three).
    pub purged: u64,
    /// Purged per second: checked, removed, and bridged by signed checkpoints.
    pub purge_per_second: f64,
    /// The same rows deleted in the same batches without checks or checkpoints.
    pub delete_per_second: f64,
    /// delete_per_second / purge_per_second.
    pub purge_ratio: f64,
    /// Whether the trail still verified after the purge.
    pub verified_after_purge: bool,
}

impl super::Report for AuditReport {
    fn print_text(&self) {
        println!(
            "oubli bench audit: a trail of {} events on {}, one in three an access-log read",
            self.events, self.database
        );
        println!(
            "  verify:   {:>10.0} events/s   read alone: {:>10.0} rows/s   ratio (read / verify): {:.2}",
            self.verify_per_second, self.read_per_second, self.verify_ratio
        );
        println!(
            "  purge:    {:>10.0} events/s   delete alone: {:>8.0} rows/s   ratio (delete / purge): {:.2}",
            self.purge_per_second, self.delete_per_second, self.purge_ratio
        );
        println!(
            "  {} events purged; the trail {} after the purge",
            self.purged,
            if self.verified_after_purge {
                "verifies"
            } else {
                "DOES NOT verify"
            }
        );
    }
}

/// Builds a trail of `events` events, checks and purges it, and measures both beside
/// their unchecked baselines.
///
/// # Errors
/// When a database cannot be created or fails.
pub async fn audit(events: u64, database: Option<&str>) -> anyhow::Result<AuditReport> {
    anyhow::ensure!(events >= 300, "--events must be at least 300");
    let dir = tempfile::tempdir()?;
    let keys = Keys::load(&dir.path().join("keys"), |_| None)?;
    let scratches = match database {
        Some(admin) => Some((
            Scratch::create(admin, "audit", None).await?,
            Scratch::create(admin, "audit_base", None).await?,
        )),
        None => None,
    };
    let (checked, plain) = match &scratches {
        Some((a, b)) => (Store::open(&a.url).await?, Store::open(&b.url).await?),
        None => (
            Store::open_sqlite(&dir.path().join("checked.db")).await?,
            Store::open_sqlite(&dir.path().join("plain.db")).await?,
        ),
    };
    let measured = measure(&checked, &plain, &keys, events).await;
    checked.close().await;
    plain.close().await;
    if let Some((a, b)) = &scratches {
        a.drop_database().await;
        b.drop_database().await;
    }
    let mut report = measured?;
    report.database = if database.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    Ok(report)
}

async fn build(store: &Store, events: u64) -> anyhow::Result<()> {
    let mut n = 0;
    while n < events {
        let mut tx = store.begin().await?;
        for _ in 0..APPEND_BATCH.min(events - n) {
            let action = ["request.received", ACCESS_LOG[0], "request.approved"][(n % 3) as usize];
            let details = serde_json::json!({ "n": n });
            audit::append(&mut tx, "bench", action, None, details);
            n += 1;
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn measure(
    checked: &Store,
    plain: &Store,
    keys: &Keys,
    events: u64,
) -> anyhow::Result<AuditReport> {
    build(checked, events).await?;
    build(plain, events).await?;
    let publics = keys.verifying_keys();

    let started = Instant::now();
    let rows = audit::all(plain).await?;
    let read_seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(&rows);
    let started = Instant::now();
    let trail = audit::all(checked).await?;
    let broken = audit::first_broken(&trail, &publics);
    let verify_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        broken.is_none(),
        "the new trail does not verify: {broken:?}"
    );

    let before = now_ms() + 1;
    let started = Instant::now();
    let mut purged = 0;
    if let Err(broken) = audit::check_before_purge(checked, keys, before).await? {
        anyhow::bail!("the trail does not verify: {broken:?}");
    }
    loop {
        let mut tx = checked.begin().await?;
        let n = audit::purge_access_log(&mut tx, keys, before, PURGE_BATCH).await?;
        tx.commit().await?;
        purged += n;
        if (n as i64) < PURGE_BATCH {
            break;
        }
    }
    let purge_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut deleted = 0;
    loop {
        let mut tx = plain.begin().await?;
        let mut delete = Sql::new(
            "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events WHERE action IN ",
        );
        delete
            .bind_list(ACCESS_LOG.iter().copied())
            .push(" ORDER BY seq LIMIT ")
            .bind(PURGE_BATCH)
            .push(")");
        let n = delete.execute(&mut *tx).await?;
        tx.commit().await?;
        deleted += n;
        if (n as i64) < PURGE_BATCH {
            break;
        }
    }
    let delete_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(deleted == purged, "{deleted} deleted but {purged} purged");

    let verified_after_purge = audit::first_broken(&audit::all(checked).await?, &publics).is_none();
    let per_second = |n: u64, s: f64| n as f64 / s.max(1e-9);
    let (verify, read) = (
        per_second(events, verify_seconds),
        per_second(events, read_seconds),
    );
    let (purge, delete) = (
        per_second(purged, purge_seconds),
        per_second(deleted, delete_seconds),
    );
    Ok(AuditReport {
        benchmark: "audit",
        database: "",
        events,
        verify_per_second: verify,
        read_per_second: read,
        verify_ratio: read / verify,
        purged,
        purge_per_second: purge,
        delete_per_second: delete,
        purge_ratio: delete / purge,
        verified_after_purge,
    })
}
