//! The `memo` capability (contract 0.2): what a plugin keeps between its calls on one
//! system, such as a database's catalogue with what tells whether it still holds.
//!
//! A system's memo lives in its [`Grant`](crate::runtime::system::Grant), in memory, and
//! goes with it when the system's configuration or plugin changes. It is bounded per
//! system ([`MAX_KEYS`] keys, [`MAX_BYTES`] in all, each entry at most [`MAX_SECONDS`]),
//! and a value in which the host finds one of the call's identity values or new values
//! is refused. That check is a tripwire for mistakes, not a guarantee (another subject's
//! data, or an encoded value, passes it): an erasure does not reach the memo, and keeping
//! personal data out of it is the plugin's duty, as for its log lines.

use crate::runtime::bindings::since_v0_2_0::oubli::connector0_2_0::memo;
use crate::runtime::state::CallState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys one system's memo holds.
pub const MAX_KEYS: usize = 32;
/// Most bytes of values one system's memo holds.
pub const MAX_BYTES: usize = 1 << 20;
/// Longest an entry is kept.
pub const MAX_SECONDS: u32 = 600;
/// Shortest identity value or new value looked for in what is put: shorter ones (a
/// customer number `42`) would be found in any catalogue by chance.
const SHORTEST_CHECKED: usize = 4;

/// One system's memo.
#[derive(Debug, Default)]
pub struct Memo {
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    until: Instant,
    value: Arc<[u8]>,
}

impl Memo {
    /// The value under `key`, unless it expired. (Expired entries are dropped at each
    /// `get` and `put`.)
    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("memo");
        entries.retain(|_, entry| entry.until > now);
        entries.get(key).map(|entry| entry.value.clone())
    }

    /// Keeps `value` under `key` for `seconds` (at most [`MAX_SECONDS`]), replacing what
    /// was there; a refused value leaves it.
    ///
    /// # Errors
    /// The reason, when a limit would be passed.
    pub fn put(&self, key: &str, value: &[u8], seconds: u32) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "a memo key is at most {MAX_KEY_BYTES} bytes; this one has {}",
                key.len()
            ));
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("memo");
        entries.retain(|_, entry| entry.until > now);
        let held: usize = entries
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(_, entry)| entry.value.len())
            .sum();
        if held + value.len() > MAX_BYTES {
            return Err(format!(
                "the system's memo holds at most {} KiB; {held} bytes are held and this value has {}",
                MAX_BYTES >> 10,
                value.len()
            ));
        }
        if !entries.contains_key(key) && entries.len() >= MAX_KEYS {
            return Err(format!("the system's memo holds at most {MAX_KEYS} keys"));
        }
        entries.insert(
            key.to_owned(),
            Entry {
                until: now + Duration::from_secs(u64::from(seconds.min(MAX_SECONDS))),
                value: value.into(),
            },
        );
        Ok(())
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        self.entries.lock().expect("memo").remove(key);
    }
}

/// Whether `value` (its text, where it is not UTF-8 with the rest replaced) holds
/// `needle`, in any case.
fn holds(value: &str, needle: &str) -> bool {
    let needle = needle.trim().to_lowercase();
    needle.chars().count() >= SHORTEST_CHECKED && value.contains(&needle)
}

impl memo::Host for CallState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.require("host", self.system.config.capabilities.host)?;
        Ok(self.system.memo.get(&key).map(|value| value.to_vec()))
    }

    async fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        seconds: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        self.require("host", self.system.config.capabilities.host)?;
        // (The size first: what is larger is refused without being read.)
        if value.len() > MAX_BYTES {
            return Ok(self.system.memo.put(&key, &value, seconds));
        }
        let text = String::from_utf8_lossy(&value).to_lowercase();
        if self.personal.iter().any(|known| holds(&text, known)) {
            return Ok(Err(
                "the value holds one of the call's identity values or new values: personal data is never kept in the memo".into(),
            ));
        }
        Ok(self.system.memo.put(&key, &value, seconds))
    }

    async fn forget(&mut self, key: String) -> wasmtime::Result<()> {
        self.require("host", self.system.config.capabilities.host)?;
        self.system.memo.forget(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_keeps_within_its_limits_and_forgets() {
        let memo = Memo::default();
        memo.put("catalogue", b"tables", 60).unwrap();
        assert_eq!(&*memo.get("catalogue").unwrap(), b"tables");
        memo.put("catalogue", b"other", 60).unwrap();
        assert_eq!(&*memo.get("catalogue").unwrap(), b"other");
        memo.forget("catalogue");
        assert!(memo.get("catalogue").is_none());
        // Expired at once.
        memo.put("gone", b"x", 0).unwrap();
        assert!(memo.get("gone").is_none());
        // A refused value leaves what was there.
        memo.put("kept", b"x", 60).unwrap();
        assert!(memo.put("kept", &vec![0; MAX_BYTES + 1], 60).is_err());
        assert_eq!(&*memo.get("kept").unwrap(), b"x");
        memo.forget("kept");
        // The limits.
        assert!(memo.put(&"k".repeat(MAX_KEY_BYTES + 1), b"x", 60).is_err());
        assert!(memo.put("big", &vec![0; MAX_BYTES + 1], 60).is_err());
        memo.put("half", &vec![0; MAX_BYTES / 2], 60).unwrap();
        assert!(memo.put("more", &vec![0; MAX_BYTES / 2 + 1], 60).is_err());
        // Replacing an entry counts its new size only.
        memo.put("half", &vec![0; MAX_BYTES / 2 + 1], 60).unwrap();
        for i in 0..MAX_KEYS - 1 {
            memo.put(&format!("key {i}"), b"x", 60).unwrap();
        }
        assert!(memo.put("one too many", b"x", 60).is_err());
    }

    #[test]
    fn personal_values_are_looked_for_in_any_case() {
        let text = |value: &str| value.to_lowercase();
        assert!(holds(
            &text("x Jane.Doe@Example.com y"),
            "jane.doe@example.com"
        ));
        assert!(holds(
            &text("jane.doe@example.com"),
            " Jane.Doe@example.com "
        ));
        assert!(holds(&text("Herr JÜRGEN"), "jürgen"));
        assert!(!holds(&text("varchar(42)"), "42"));
        assert!(!holds(&text("short"), ""));
    }
}
