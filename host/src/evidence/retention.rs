//! The purge job: what oubli holds is kept no longer than needed. Every
//! `purge_interval_secs`, in every process that runs workers:
//!
//! - access packages past `package_ttl_days` lose their exported records;
//! - closed requests (and failed ones left so) past `subject_retention_days` have their
//!   identities and new values replaced by keyed hashes (the erasure certificate's hashes
//!   stay the same);
//! - access-log events past `access_log_retention_days` are deleted, and a signed
//!   checkpoint bridges the holes they leave in the audit chain.
//!
//! Each step records what it did in the audit trail, and works in batches, so that a
//! large backlog never holds the trail's lock for long.

use super::Context;
use crate::request::rows as requests;
use crate::store::now_ms;

/// Requests redacted, or access-log events purged, per transaction.
const BATCH: i64 = 500;

const DAY_MS: i64 = 86_400_000;

fn days_ago(days: u64) -> i64 {
    now_ms().saturating_sub(i64::try_from(days).unwrap_or(i64::MAX / DAY_MS) * DAY_MS)
}

/// Replaces the subject's data of closed (or failed) requests past their retention
/// period by keyed hashes. A request whose data cannot be opened (its data key is
/// missing) is reported and passed over. Returns how many requests were redacted.
///
/// # Errors
/// When the database fails.
pub async fn redact_closed(ctx: Context<'_>) -> anyhow::Result<u64> {
    let before = days_ago(ctx.config.subject_retention_days);
    let mut redacted = 0;
    let mut after = None;
    loop {
        let due = requests::due_for_redaction(ctx.store, before, after.as_ref(), BATCH).await?;
        for (_, id) in &due {
            let mut tx = ctx.store.begin().await?;
            let hash = |label: &str, value: &str| ctx.keys.identity_hash(label, value);
            match requests::redact_subject(&mut tx, &ctx.keys.sealer, id, hash).await {
                Ok(true) => {
                    tx.commit().await?;
                    redacted += 1;
                }
                // Another process redacted it since the read.
                Ok(false) => {}
                Err(error) => tracing::warn!("cannot redact: {error:#}"),
            }
        }
        if (due.len() as i64) < BATCH {
            return Ok(redacted);
        }
        after = due.last().cloned();
    }
}

/// Purges access-log events past their retention period. Returns how many.
///
/// # Errors
/// When the database fails.
pub async fn purge_access_log(ctx: Context<'_>) -> anyhow::Result<u64> {
    let before = days_ago(ctx.config.access_log_retention_days);
    // The whole trail from the oldest event to remove on, once per run, outside the lock.
    if let Err(broken) = crate::audit::check_before_purge(ctx.store, ctx.keys, before).await? {
        anyhow::bail!(
            "the audit trail does not verify at event {} ({}); the access log is not purged until it does",
            broken.seq,
            broken.reason
        );
    }
    let mut purged = 0;
    loop {
        let mut tx = ctx.store.begin().await?;
        let n = crate::audit::purge_access_log(&mut tx, ctx.keys, before, BATCH).await?;
        tx.commit().await?;
        purged += n;
        if (n as i64) < BATCH {
            return Ok(purged);
        }
    }
}

/// Runs every purge once; a failing one does not stop the others.
pub async fn run_once(ctx: Context<'_>) {
    match crate::evidence::package::purge_expired(ctx).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(packages = n, "purged expired access packages"),
        Err(e) => tracing::warn!("purging expired access packages: {e:#}"),
    }
    match redact_closed(ctx).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(requests = n, "redacted closed requests past retention"),
        Err(e) => tracing::warn!("redacting closed requests: {e:#}"),
    }
    match purge_access_log(ctx).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "purged access-log events past retention"),
        Err(e) => tracing::warn!("purging the access log: {e:#}"),
    }
}
