//! What the accept loop does after `accept(2)` fails: back off (exponentially, for resource
//! exhaustion such as EMFILE) and log at a bounded rate, so fd exhaustion neither spins a core
//! nor floods the log.

use std::time::{Duration, Instant};

/// First back-off after a resource error.
pub const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per this period (the others are counted in the next line).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Back-off and log-rate state of one accept loop.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    backoff: Option<Duration>,
    last_log: Option<Instant>,
    suppressed: u64,
}

/// Whether an accept error means the process or system ran out of something (retrying at
/// once would fail again), as opposed to one connection that went away before we took it.
pub fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

impl AcceptErrors {
    /// An accept succeeded: the back-off starts over.
    pub fn on_success(&mut self) {
        self.backoff = None;
    }

    /// An accept failed at `now`. Returns how long to wait before accepting again, and the
    /// number of earlier errors to mention when this one should be logged (`None`: stay quiet).
    pub fn on_error(&mut self, e: &std::io::Error, now: Instant) -> (Duration, Option<u64>) {
        let wait = if is_resource_error(e) {
            let next = self
                .backoff
                .map_or(MIN_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
            self.backoff = Some(next);
            next
        } else {
            Duration::ZERO
        };
        let log = match self.last_log {
            Some(t) if now.saturating_duration_since(t) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_log = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        };
        (wait, log)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(nix::libc::EMFILE)
    }

    #[test]
    fn resource_errors_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let mut a = AcceptErrors::default();
        let t = Instant::now();
        let waits: Vec<Duration> = (0..12).map(|_| a.on_error(&emfile(), t).0).collect();
        assert_eq!(waits[0], MIN_BACKOFF);
        assert_eq!(waits[1], MIN_BACKOFF * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        a.on_success();
        assert_eq!(a.on_error(&emfile(), t).0, MIN_BACKOFF);
    }

    #[test]
    fn other_errors_do_not_wait() {
        let mut a = AcceptErrors::default();
        let aborted = std::io::Error::from_raw_os_error(nix::libc::ECONNABORTED);
        assert_eq!(a.on_error(&aborted, Instant::now()).0, Duration::ZERO);
    }

    #[test]
    fn logs_once_per_period_and_counts_the_rest() {
        let mut a = AcceptErrors::default();
        let t = Instant::now();
        assert_eq!(a.on_error(&emfile(), t).1, Some(0));
        for i in 1..=500u64 {
            let at = t + Duration::from_millis(i * 10);
            assert_eq!(a.on_error(&emfile(), at).1, None);
        }
        assert_eq!(a.on_error(&emfile(), t + LOG_EVERY).1, Some(500));
    }
}
