//! Back-off for failed unseal attempts: 0, 1 s, 2 s, 4 s, … capped at 60 s.
//!
//! Kept in memory only: a restart resets it (the Argon2id cost still bounds guessing).

/// Longest delay between attempts.
pub(crate) const MAX_DELAY_MS: u64 = 60_000;

/// Consecutive-failure counter and the time the next attempt is accepted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Limiter {
    failures: u32,
    next_allowed_ms: u64,
}

impl Limiter {
    /// `Some(ms to wait)` if an attempt now must be refused without trying.
    pub(crate) fn wait_ms(&self, now_ms: u64) -> Option<u64> {
        (now_ms < self.next_allowed_ms).then(|| self.next_allowed_ms - now_ms)
    }

    /// Records a failure; returns the delay before the next attempt.
    pub(crate) fn fail(&mut self, now_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        // 1 s << 6 already exceeds the cap; bounding the shift keeps `<<` from discarding the
        // high bits (1000 << 61 is 0 in a u64, which would have lifted the back-off).
        let delay = match self.failures {
            0 | 1 => 0,
            n => (1000u64 << (n - 2).min(6)).min(MAX_DELAY_MS),
        };
        self.next_allowed_ms = now_ms.saturating_add(delay);
        delay
    }

    /// Forgets past failures (after a success).
    pub(crate) fn reset(&mut self) {
        *self = Limiter::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let mut l = Limiter::default();
        let delays: Vec<u64> = (0..10).map(|_| l.fail(1000)).collect();
        assert_eq!(
            delays,
            vec![0, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        for _ in 0..100 {
            l.fail(1000);
        }
        assert_eq!(l.fail(1000), MAX_DELAY_MS);
    }

    #[test]
    fn delay_never_drops_after_many_failures() {
        // Regression: the shift once overflowed at 63..=65 failures and the delay fell to 0.
        let mut l = Limiter::default();
        let mut last = 0;
        for n in 1..=300u32 {
            let d = l.fail(1000);
            assert!(d >= last, "delay fell from {last} to {d} at failure {n}");
            if n >= 8 {
                assert_eq!(d, MAX_DELAY_MS, "failure {n}");
            }
            last = d;
        }
    }

    #[test]
    fn wait_and_reset() {
        let mut l = Limiter::default();
        assert_eq!(l.wait_ms(5), None);
        l.fail(100);
        assert_eq!(l.wait_ms(100), None);
        l.fail(100);
        assert_eq!(l.wait_ms(100), Some(1000));
        assert_eq!(l.wait_ms(1099), Some(1));
        assert_eq!(l.wait_ms(1100), None);
        l.reset();
        assert_eq!(l.wait_ms(100), None);
        assert_eq!(l.fail(100), 0);
    }
}
