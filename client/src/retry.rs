//! The one retry policy of the client's idempotent calls: which errors are
//! retried (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`), how many attempts
//! ([`ATTEMPTS`]), and how long to wait between them: exponential from
//! [`BASE`], at least the server's `retry-after-ms` hint, never more than
//! [`MAX_WAIT`] (a hint is the server's word, not a licence to stall the
//! caller), with jitter so that callers refused together do not come back
//! together.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tonic::{Code, Status};

/// Attempts of one call, the first included.
pub(crate) const ATTEMPTS: u32 = 4;
/// Wait before the second attempt (doubled for each later one).
pub(crate) const BASE: Duration = Duration::from_millis(20);
/// The longest wait, whatever the server hints.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(2);

/// Whether a status is worth another attempt.
pub(crate) fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
}

/// The retry state of one call.
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { attempt: 1 }
    }

    /// How long to wait before the next attempt after `status`, or `None`
    /// when the call should fail with it (not retryable, or out of
    /// attempts).
    pub(crate) fn after(&mut self, status: &Status) -> Option<Duration> {
        if !retryable(status) || self.attempt >= ATTEMPTS {
            return None;
        }
        let hint = status
            .metadata()
            .get("retry-after-ms")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .map(Duration::from_millis);
        let wait = wait(self.attempt, hint, random_unit());
        self.attempt += 1;
        Some(wait)
    }
}

/// The wait after failed attempt `attempt` (from 1): `BASE · 2^(attempt-1)`
/// or the hint, whichever is longer, capped at [`MAX_WAIT`], then scaled
/// into its upper half by `jitter` in `[0, 1)` ("equal jitter").
fn wait(attempt: u32, hint: Option<Duration>, jitter: f64) -> Duration {
    let exponential = BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let wait = hint
        .map_or(exponential, |hint| hint.max(exponential))
        .min(MAX_WAIT);
    wait.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// A number in `[0, 1)` from the standard library's per-instance random
/// hasher keys (no RNG dependency for a jitter).
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
    let unit = (bits >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_honour_hints_and_are_capped() {
        // Without jitter (0.0 → half, 1.0 → all of the wait).
        assert_eq!(wait(1, None, 1.0), BASE);
        assert_eq!(wait(3, None, 1.0), BASE * 4);
        assert_eq!(
            wait(1, Some(Duration::from_millis(300)), 1.0),
            Duration::from_millis(300)
        );
        assert_eq!(wait(3, Some(Duration::from_millis(1)), 1.0), BASE * 4);
        assert_eq!(wait(2, Some(Duration::from_hours(1)), 1.0), MAX_WAIT);
        assert_eq!(wait(40, None, 1.0), MAX_WAIT);
        assert_eq!(wait(1, None, 0.0), BASE / 2);
        let jittered = wait(2, None, random_unit());
        assert!(jittered >= BASE && jittered <= BASE * 2, "{jittered:?}");
    }

    #[test]
    fn only_unavailable_and_exhausted_are_retried_and_attempts_are_bounded() {
        let mut backoff = Backoff::new();
        assert!(backoff.after(&Status::invalid_argument("no")).is_none());
        let busy = Status::resource_exhausted("busy");
        let waits: Vec<_> = std::iter::from_fn(|| backoff.after(&busy)).collect();
        assert_eq!(waits.len(), ATTEMPTS as usize - 1);
    }
}
