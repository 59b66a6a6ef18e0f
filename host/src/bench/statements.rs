//! Counting the statements this process sends through sqlx, for the benchmarks.
//!
//! Every statement oubli makes on its own database goes through sqlx, which reports each
//! one as an event of target `sqlx::query` (at `debug`, or `warn` when slow); a layer of
//! the process's subscriber counts them. The SQL connector's statements on an SQLite
//! system are not among them: they run through rusqlite on the plugin call's thread.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Statements sent, by sqlx's summary of each (its first four words).
static BY_SUMMARY: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

const TARGET: &str = "sqlx::query";

struct Counter;

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == TARGET {
            let mut summary = Summary(String::new());
            event.record(&mut summary);
            *BY_SUMMARY
                .lock()
                .expect("statement counts")
                .get_or_insert_default()
                .entry(summary.0)
                .or_default() += 1;
        }
    }
}

struct Summary(String);

impl tracing::field::Visit for Summary {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "summary" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// The layer to add to the process's subscriber; from then on [`by_summary`] counts.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    INSTALLED.store(true, Ordering::SeqCst);
    Counter.with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
}

/// The statements sent so far by sqlx's summary of each (its first four words), or
/// `None` when no counting layer is installed.
pub fn by_summary() -> Option<HashMap<String, u64>> {
    INSTALLED.load(Ordering::SeqCst).then(|| {
        BY_SUMMARY
            .lock()
            .expect("statement counts")
            .clone()
            .unwrap_or_default()
    })
}

/// The statements counted between `before` and `after` ([`by_summary`]), per `per`
/// (requests), the most frequent first.
pub fn per_unit(
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    per: u64,
) -> Vec<(String, f64)> {
    let mut counts: Vec<(String, f64)> = after
        .iter()
        .map(|(summary, n)| {
            let sent = n - before.get(summary).copied().unwrap_or(0);
            (summary.clone(), sent as f64 / per as f64)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    counts.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}
