//! The `host` capability: the plugin's log, its `[config]` values and its keyed hash.
//!
//! A plugin's log lines go to oubli's log, which is never erased: per call at most
//! [`MAX_LOG_LINES`] lines and [`MAX_LOG_BYTES`] bytes are written, each line cut at
//! [`MAX_LOG_LINE`] bytes and cleared of the system's secrets; what goes beyond is
//! counted and reported once when the call ends.

use crate::runtime::bindings::host;
use crate::runtime::state::CallState;

/// Most log lines one call writes.
pub const MAX_LOG_LINES: u32 = 200;
/// Most bytes of log one call writes.
pub const MAX_LOG_BYTES: usize = 64 << 10;
/// Longest log line; longer ones are cut.
pub const MAX_LOG_LINE: usize = 2 << 10;

/// What one call has logged so far.
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: u32,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogBudget {
    /// Takes a line out of the budget; `None` when it is spent.
    fn admit(&mut self, message: &str) -> Option<String> {
        let mut line = message.to_owned();
        if line.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" [cut by oubli]");
        }
        if self.lines >= MAX_LOG_LINES || self.bytes + line.len() > MAX_LOG_BYTES {
            self.dropped_lines += 1;
            self.dropped_bytes += message.len() as u64;
            return None;
        }
        self.lines += 1;
        self.bytes += line.len();
        Some(line)
    }

    /// Reports, once, what the call's limit kept out of the log.
    pub fn report(&self, plugin: &str, system: &str, request: &str) {
        if self.dropped_lines > 0 {
            tracing::warn!(
                target: "oubli::plugin",
                plugin,
                system,
                request,
                "the plugin wrote {} more log line(s) ({} bytes) than its limit of {MAX_LOG_LINES} lines and {} KiB per call; they were dropped",
                self.dropped_lines,
                self.dropped_bytes,
                MAX_LOG_BYTES >> 10
            );
        }
    }
}

impl host::Host for CallState {
    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.require("host", self.system.config.capabilities.host)?;
        let Some(line) = self.log.admit(&message) else {
            return Ok(());
        };
        let message = self.system.secret_forms.scrub_text(&line);
        let (plugin, system, request) = (
            &*self.plugin,
            self.system.config.name.as_str(),
            self.request_id.as_str(),
        );
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "oubli::plugin", plugin, system, request, "{message}")
            }
        }
        Ok(())
    }

    async fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.require("host", self.system.config.capabilities.host)?;
        Ok(self.system.config_text.get(&key).cloned())
    }

    async fn keyed_hash(&mut self, value: String) -> wasmtime::Result<String> {
        self.require("host", self.system.config.capabilities.host)?;
        Ok(hex::encode(crate::runtime::system::keyed_hash(
            &self.system.hash_key,
            &value,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_cuts_lines_and_counts_the_rest() {
        let mut budget = LogBudget::default();
        let long = "x".repeat(MAX_LOG_LINE * 3);
        let line = budget.admit(&long).unwrap();
        assert!(line.len() < MAX_LOG_LINE + 32, "{}", line.len());
        let mut admitted = 1;
        for _ in 0..10_000 {
            if budget.admit(&long).is_some() {
                admitted += 1;
            }
        }
        assert!(admitted * MAX_LOG_LINE <= MAX_LOG_BYTES + MAX_LOG_LINE);
        assert_eq!(budget.dropped_lines, 10_001 - admitted as u64);
    }
}
