//! The retry policy shared by tasks and webhooks: exponential backoff with jitter, and
//! a system's own `retry after N` (an HTTP `Retry-After`) honoured.

use rand::Rng;
use std::time::Duration;

/// The delay before attempt `attempt + 1`: `base × 2^(attempt-1)`, capped, with jitter
/// drawn from its upper half.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exponential = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let half = exponential / 2;
    half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64))
}

/// A backoff policy: delays from `base`, doubling, up to `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// No delay at all (tests that drive the queue by hand).
    pub const NONE: Backoff = Backoff {
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };

    /// The jittered delay before attempt `attempt + 1` (see [`backoff`]).
    pub fn delay(&self, attempt: u32) -> Duration {
        backoff(attempt, self.base, self.cap)
    }
}

/// The wait a failure message asks for: `… retry after N` (seconds), as connectors
/// quote an HTTP `Retry-After` they did not wait for themselves. At most a day.
pub fn retry_after(message: &str) -> Option<Duration> {
    let (_, rest) = message.rsplit_once("retry after ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let seconds: u64 = digits.parse().ok()?;
    Some(Duration::from_secs(seconds.min(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_retry_after_is_read() {
        assert_eq!(
            retry_after("system unavailable: rate limited (HTTP 429), retry after 120"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("system unavailable: server error (HTTP 503)"),
            None
        );
        assert_eq!(
            retry_after("retry after 999999999"),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 1..=10 {
            let full = base.saturating_mul(1 << (attempt - 1)).min(cap);
            let delay = backoff(attempt, base, cap);
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempt}: {delay:?} vs {full:?}"
            );
        }
        assert!(backoff(40, base, cap) <= cap);
    }
}
