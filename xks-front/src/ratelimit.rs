//! Per-key-store token-bucket rate limiting (answers ThrottlingException when empty).
//!
//! Buckets are keyed by key-store name; a bucket is re-created (full) when the configured
//! `(rate, burst)` of its store changes after a reload. Token arithmetic is exact integer
//! math in nano-tokens, so decisions depend only on the `Instant`s passed in.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Instant;

/// Nano-tokens per token.
const NANO: u128 = 1_000_000_000;

/// One store's bucket.
#[derive(Debug)]
struct Bucket {
    rate: u32,
    burst: u32,
    /// Available tokens × 10⁹.
    nano_tokens: u128,
    /// Time of the last refill.
    last: Instant,
}

impl Bucket {
    fn full(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate,
            burst,
            nano_tokens: u128::from(burst) * NANO,
            last: now,
        }
    }

    /// Refills for the time elapsed since the last call (never backwards) and takes one token.
    fn take(&mut self, now: Instant) -> bool {
        if now > self.last {
            let elapsed = now.duration_since(self.last).as_nanos();
            let capacity = u128::from(self.burst) * NANO;
            let refill = elapsed.saturating_mul(u128::from(self.rate));
            self.nano_tokens = self.nano_tokens.saturating_add(refill).min(capacity);
            self.last = now;
        }
        if self.nano_tokens >= NANO {
            self.nano_tokens -= NANO;
            true
        } else {
            false
        }
    }
}

/// Token buckets for all key stores. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: RwLock<HashMap<String, Mutex<Bucket>>>,
}

impl RateLimiter {
    /// An empty limiter; buckets appear on first use.
    pub fn new() -> RateLimiter {
        RateLimiter::default()
    }

    /// Takes one token from `store`'s bucket (`rate` tokens/s, at most `burst` stored).
    /// Returns false when the request should be throttled. A rate or burst of 0 always throttles.
    pub fn try_acquire(&self, store: &str, rate: u32, burst: u32, now: Instant) -> bool {
        {
            let map = self.buckets.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(bucket) = map.get(store) {
                let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
                if b.rate == rate && b.burst == burst {
                    return b.take(now);
                }
            }
        }
        let mut map = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
        let bucket = map
            .entry(store.to_owned())
            .or_insert_with(|| Mutex::new(Bucket::full(rate, burst, now)));
        let b = bucket.get_mut().unwrap_or_else(PoisonError::into_inner);
        if b.rate != rate || b.burst != burst {
            *b = Bucket::full(rate, burst, now);
        }
        b.take(now)
    }

    /// Drops the buckets of stores for which `keep(name)` is false (call after a reload).
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.buckets
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| keep(name));
    }

    /// Number of buckets currently held.
    pub fn len(&self) -> usize {
        self.buckets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no bucket exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(rl: &RateLimiter, store: &str, rate: u32, burst: u32, now: Instant) -> usize {
        (0..10_000)
            .take_while(|_| rl.try_acquire(store, rate, burst, now))
            .count()
    }

    #[test]
    fn burst_then_throttle() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert_eq!(drain(&rl, "a", 10, 5, t), 5);
        assert!(!rl.try_acquire("a", 10, 5, t));
    }

    #[test]
    fn refills_at_rate() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert_eq!(drain(&rl, "a", 10, 5, t), 5);
        // 10/s ⇒ one token per 100 ms.
        assert!(!rl.try_acquire("a", 10, 5, t + Duration::from_millis(99)));
        assert!(rl.try_acquire("a", 10, 5, t + Duration::from_millis(100)));
        assert!(!rl.try_acquire("a", 10, 5, t + Duration::from_millis(100)));
        // 350 ms later: 3.5 tokens accrued ⇒ 3 whole requests.
        assert_eq!(drain(&rl, "a", 10, 5, t + Duration::from_millis(450)), 3);
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert_eq!(drain(&rl, "a", 1000, 3, t), 3);
        assert_eq!(drain(&rl, "a", 1000, 3, t + Duration::from_secs(3600)), 3);
    }

    #[test]
    fn stores_are_independent() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert_eq!(drain(&rl, "a", 1, 2, t), 2);
        assert_eq!(drain(&rl, "b", 1, 2, t), 2);
        assert_eq!(rl.len(), 2);
    }

    #[test]
    fn bucket_recreated_when_limits_change() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert_eq!(drain(&rl, "a", 1, 2, t), 2);
        // Same limits: still empty.
        assert!(!rl.try_acquire("a", 1, 2, t));
        // Reload changed the burst: fresh, full bucket with the new size.
        assert_eq!(drain(&rl, "a", 1, 4, t), 4);
        // And the rate alone.
        assert_eq!(drain(&rl, "a", 2, 4, t), 4);
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn time_going_backwards_does_not_refill_or_panic() {
        let rl = RateLimiter::new();
        let t = Instant::now() + Duration::from_secs(10);
        assert_eq!(drain(&rl, "a", 100, 1, t), 1);
        assert!(!rl.try_acquire("a", 100, 1, t - Duration::from_secs(5)));
        assert!(!rl.try_acquire("a", 100, 1, t + Duration::from_millis(9)));
        assert!(rl.try_acquire("a", 100, 1, t + Duration::from_millis(10)));
    }

    #[test]
    fn zero_rate_or_burst_throttles() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert!(!rl.try_acquire("a", 10, 0, t));
        assert_eq!(drain(&rl, "b", 0, 1, t), 1);
        assert!(!rl.try_acquire("b", 0, 1, t + Duration::from_secs(100)));
    }

    #[test]
    fn large_values_do_not_overflow() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert!(rl.try_acquire("a", u32::MAX, u32::MAX, t));
        assert!(rl.try_acquire("a", u32::MAX, u32::MAX, t + Duration::from_secs(1 << 40)));
    }

    #[test]
    fn retain_drops_removed_stores() {
        let rl = RateLimiter::new();
        let t = Instant::now();
        assert!(rl.try_acquire("a", 1, 1, t));
        assert!(rl.try_acquire("b", 1, 1, t));
        rl.retain(&|name| name == "a");
        assert_eq!(rl.len(), 1);
        // "a" keeps its (empty) state, "b" starts over.
        assert!(!rl.try_acquire("a", 1, 1, t));
        assert!(rl.try_acquire("b", 1, 1, t));
        assert!(!rl.is_empty());
        assert!(RateLimiter::new().is_empty());
    }

    #[test]
    fn concurrent_use_never_exceeds_burst() {
        let rl = std::sync::Arc::new(RateLimiter::new());
        let t = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let rl = rl.clone();
                std::thread::spawn(move || drain(&rl, "a", 1, 100, t))
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 100);
    }
}
