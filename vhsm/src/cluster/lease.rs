//! The read lease: until when this node may serve crypto from its local key cache, and why
//! not when it may not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A lease that only ever moves forward; cheap to check on the hot path (one atomic load).
#[derive(Debug)]
pub struct Lease {
    origin: Instant,
    /// Expiry in µs after `origin` (0: never held).
    expires_us: AtomicU64,
    reason: Mutex<String>,
}

impl Lease {
    /// A lease not yet held.
    pub fn new() -> Lease {
        Lease {
            origin: Instant::now(),
            expires_us: AtomicU64::new(0),
            reason: Mutex::new("no read lease yet".to_owned()),
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX)
    }

    /// Holds the lease until `until` (never shortens it).
    pub fn extend(&self, until: Instant) {
        self.expires_us
            .fetch_max(self.micros(until), Ordering::AcqRel);
    }

    /// Records why the last renewal failed (shown while the lease is not held).
    pub fn set_reason(&self, why: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock() {
            *r = why.into();
        }
    }

    /// Drops the lease now (sealing, leaving the cluster).
    pub fn revoke(&self, why: impl Into<String>) {
        self.expires_us.store(0, Ordering::Release);
        self.set_reason(why);
    }

    /// Time left at `now` (zero when not held).
    pub fn remaining(&self, now: Instant) -> Duration {
        let left = self
            .expires_us
            .load(Ordering::Acquire)
            .saturating_sub(self.micros(now));
        Duration::from_micros(left)
    }

    /// True while held at `now`.
    pub fn held(&self, now: Instant) -> bool {
        self.micros(now) < self.expires_us.load(Ordering::Acquire)
    }

    /// Why the lease is not held (the last renewal failure).
    pub fn reason(&self) -> String {
        self.reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "lease state unavailable".to_owned())
    }
}

impl Default for Lease {
    fn default() -> Self {
        Lease::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_until_its_bound_and_never_shrinks() {
        let l = Lease::new();
        let now = Instant::now();
        assert!(!l.held(now));
        l.extend(now + Duration::from_secs(2));
        assert!(l.held(now + Duration::from_millis(1999)));
        assert!(!l.held(now + Duration::from_secs(2)));
        l.extend(now + Duration::from_secs(1));
        assert!(
            l.held(now + Duration::from_millis(1500)),
            "an older renewal shortened it"
        );
        assert!(l.remaining(now) > Duration::from_millis(1900));
        l.revoke("sealed");
        assert!(!l.held(now));
        assert_eq!(l.reason(), "sealed");
    }
}
