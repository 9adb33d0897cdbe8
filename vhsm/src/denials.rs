//! Bounds the audit records of permission denials: one per identity and method per window.
//!
//! Any certificate from the client CA, even one without a role, can provoke denials; each is a
//! flushed audit record. So within a window only the first denial of an (identity, method)
//! pair is recorded, and the next record carries how many were suppressed in between. Every
//! denial is still logged at WARN.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One audit record per identity and method per this window.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(60);
/// Pairs tracked at most; expired ones are evicted first, then new pairs are not recorded.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    suppressed: u64,
}

/// The per-(identity, method) windows.
#[derive(Debug, Default)]
pub struct DenialLimiter {
    windows: Mutex<HashMap<(String, &'static str), Window>>,
}

impl DenialLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Some(n)`: record this denial, noting `n` suppressed since the last record; `None`:
    /// suppress it (counted for the next record).
    pub fn admit(&self, identity: &str, method: &'static str, now: Instant) -> Option<u64> {
        let Ok(mut windows) = self.windows.lock() else {
            // A poisoned lock only loses the rate limit: record everything.
            return Some(0);
        };
        let key = (identity.to_string(), method);
        if let Some(w) = windows.get_mut(&key) {
            if now.saturating_duration_since(w.started) < DENIAL_WINDOW {
                w.suppressed = w.suppressed.saturating_add(1);
                return None;
            }
            let suppressed = w.suppressed;
            *w = Window {
                started: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now.saturating_duration_since(w.started) < DENIAL_WINDOW);
            if windows.len() >= MAX_TRACKED {
                return None;
            }
        }
        windows.insert(
            key,
            Window {
                started: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_pair_per_window_with_the_suppressed_count() {
        let l = DenialLimiter::new();
        let t0 = Instant::now();
        assert_eq!(l.admit("mallory", "Admin/Init", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                l.admit("mallory", "Admin/Init", t0 + Duration::from_secs(i)),
                None
            );
        }
        // Other pairs are independent.
        assert_eq!(l.admit("mallory", "Admin/Seal", t0), Some(0));
        assert_eq!(l.admit("eve", "Admin/Init", t0), Some(0));
        // After the window: recorded again, carrying the 5 suppressed.
        assert_eq!(
            l.admit("mallory", "Admin/Init", t0 + DENIAL_WINDOW),
            Some(5)
        );
        assert_eq!(l.admit("mallory", "Admin/Init", t0 + DENIAL_WINDOW), None);
    }

    #[test]
    fn tracked_pairs_are_bounded_and_expired_ones_evicted() {
        let l = DenialLimiter::new();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            assert_eq!(l.admit(&format!("id-{i}"), "Admin/Init", t0), Some(0));
        }
        // Full of live windows: a new pair is not recorded.
        assert_eq!(l.admit("new", "Admin/Init", t0), None);
        // Once they expire, new pairs are recorded again and the map is bounded.
        assert_eq!(l.admit("new", "Admin/Init", t0 + DENIAL_WINDOW), Some(0));
        assert!(l.windows.lock().unwrap().len() <= MAX_TRACKED);
    }
}
