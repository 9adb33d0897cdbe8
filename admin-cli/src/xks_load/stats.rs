//! What `xks load` counts: outcomes by HTTP status, `errorName`, verification failure and
//! transport error, and an HDR histogram of latencies (percentiles to 3 significant digits).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::schedule::LATE;
use super::verify::Outcome;

/// KMS gives a proxy 250 ms per call.
pub const KMS_BUDGET: Duration = Duration::from_millis(250);

/// Counts and latencies of one connection (merged at the end).
#[derive(Debug, Clone)]
pub struct Stats {
    hist: Histogram<u64>,
    /// Open loop: how long after its scheduled time each send left.
    lag: Histogram<u64>,
    /// Open loop: from the actual send to the complete answer (latency minus lag).
    from_send: Histogram<u64>,
    /// Answered requests by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Error answers by `errorName`.
    pub by_error_name: BTreeMap<String, u64>,
    /// 200 answers that failed verification, by what was wrong.
    pub verify_failed: BTreeMap<&'static str, u64>,
    /// Requests without an answer, by kind (connect, tls, http, closed, timeout).
    pub transport: BTreeMap<&'static str, u64>,
    /// Answered 200 and verified.
    pub ok: u64,
    /// Requests over KMS's 250 ms budget (answered or not).
    pub over_budget: u64,
    /// Open loop: sends that left more than [`LATE`] after their scheduled time.
    pub late: u64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty counts; the histogram grows with the largest latency recorded.
    pub fn new() -> Self {
        Stats {
            hist: histogram(),
            lag: histogram(),
            from_send: histogram(),
            by_status: BTreeMap::new(),
            by_error_name: BTreeMap::new(),
            verify_failed: BTreeMap::new(),
            transport: BTreeMap::new(),
            ok: 0,
            over_budget: 0,
            late: 0,
        }
    }

    /// Counts one answered request.
    /// `lag` is how long after its scheduled time the request left (zero in a closed loop).
    pub fn answered(&mut self, status: u16, outcome: &Outcome, latency: Duration, lag: Duration) {
        *self.by_status.entry(status).or_default() += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Error { name, .. } => {
                *self.by_error_name.entry(name.clone()).or_default() += 1
            }
            Outcome::VerifyFailed(what) => *self.verify_failed.entry(what).or_default() += 1,
        }
        self.timing(latency, lag);
    }

    /// Counts one request without an answer (its time still counts).
    pub fn unanswered(&mut self, kind: &'static str, latency: Duration, lag: Duration) {
        *self.transport.entry(kind).or_default() += 1;
        self.timing(latency, lag);
    }

    fn timing(&mut self, latency: Duration, lag: Duration) {
        record(&mut self.hist, latency);
        record(&mut self.lag, lag);
        record(&mut self.from_send, latency.saturating_sub(lag));
        if latency > KMS_BUDGET {
            self.over_budget += 1;
        }
        if lag > LATE {
            self.late += 1;
        }
    }

    /// Adds another connection's counts.
    pub fn merge(&mut self, other: &Stats) {
        // Both auto-resize, so adding cannot run out of range.
        let _ = self.hist.add(&other.hist);
        let _ = self.lag.add(&other.lag);
        let _ = self.from_send.add(&other.from_send);
        for (k, v) in &other.by_status {
            *self.by_status.entry(*k).or_default() += v;
        }
        for (k, v) in &other.by_error_name {
            *self.by_error_name.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.verify_failed {
            *self.verify_failed.entry(k).or_default() += v;
        }
        for (k, v) in &other.transport {
            *self.transport.entry(k).or_default() += v;
        }
        self.ok += other.ok;
        self.over_budget += other.over_budget;
        self.late += other.late;
    }

    /// Every request counted (answered or not).
    pub fn requests(&self) -> u64 {
        self.hist.len()
    }

    /// Requests that did not end in a verified 200.
    pub fn failed(&self) -> u64 {
        self.requests().saturating_sub(self.ok)
    }

    /// 200 answers that failed verification.
    pub fn verify_failures(&self) -> u64 {
        self.verify_failed.values().sum()
    }

    /// Latency percentiles (all zero when nothing was counted).
    pub fn percentiles(&self) -> Percentiles {
        percentiles(&self.hist)
    }

    /// Percentiles of the send lag: how far behind its schedule each send left.
    pub fn send_lag(&self) -> Percentiles {
        percentiles(&self.lag)
    }

    /// Percentiles of the time from the actual send to the complete answer: what the caller's
    /// own clock sees, without the wait before the send.
    pub fn from_send(&self) -> Percentiles {
        percentiles(&self.from_send)
    }
}

/// An empty histogram of microseconds that grows with the largest value recorded.
fn histogram() -> Histogram<u64> {
    // INVARIANT: 3 significant digits is within hdrhistogram's 0..=5.
    #[allow(clippy::expect_used)]
    Histogram::new(3).expect("3 significant digits is valid")
}

/// Records `d` in µs (at least 1, hdrhistogram's lowest value).
fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    // The histogram grows to fit; should growing ever fail, count the value at its top.
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles {
            p50: 0,
            p90: 0,
            p99: 0,
            p99_9: 0,
            max: 0,
            mean: 0.0,
        };
    }
    Percentiles {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p99_9: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Within hdrhistogram's 3 significant digits.
    fn close(got: u64, want: u64) -> bool {
        got.abs_diff(want) * 1000 <= want
    }

    #[test]
    fn percentiles_of_known_data() {
        let mut s = Stats::new();
        // 1..=10,000 µs, once each.
        for i in 1..=10_000 {
            s.answered(200, &Outcome::Ok, us(i), Duration::ZERO);
        }
        let p = s.percentiles();
        assert!(close(p.p50, 5_000), "{p:?}");
        assert!(close(p.p90, 9_000), "{p:?}");
        assert!(close(p.p99, 9_900), "{p:?}");
        assert!(close(p.p99_9, 9_990), "{p:?}");
        assert!(close(p.max, 10_000), "{p:?}");
        assert!((p.mean - 5_000.5).abs() < 10.0, "{p:?}");
        assert_eq!((s.requests(), s.ok, s.failed()), (10_000, 10_000, 0));
    }

    #[test]
    fn a_tail_shows_in_the_high_percentiles_only() {
        let mut s = Stats::new();
        for _ in 0..990 {
            s.answered(200, &Outcome::Ok, us(100), Duration::ZERO);
        }
        for _ in 0..10 {
            s.answered(
                200,
                &Outcome::Ok,
                Duration::from_millis(300),
                Duration::ZERO,
            );
        }
        let p = s.percentiles();
        assert!(
            close(p.p50, 100) && close(p.p90, 100) && close(p.p99, 100),
            "{p:?}"
        );
        assert!(close(p.p99_9, 300_000) && close(p.max, 300_000), "{p:?}");
        assert_eq!(s.over_budget, 10);
    }

    #[test]
    fn outcomes_are_counted_by_status_name_and_kind_and_merge() {
        let mut a = Stats::new();
        let auth = Outcome::Error {
            status: 401,
            name: "AuthenticationFailedException".into(),
        };
        a.answered(401, &auth, us(50), Duration::ZERO);
        a.answered(
            200,
            &Outcome::VerifyFailed("cdiv_mismatch"),
            us(60),
            Duration::from_millis(2),
        );
        let mut b = Stats::new();
        b.answered(401, &auth, us(70), Duration::ZERO);
        b.answered(200, &Outcome::Ok, us(80), Duration::ZERO);
        b.unanswered("timeout", Duration::from_secs(10), Duration::ZERO);
        a.merge(&b);
        assert_eq!(a.requests(), 5);
        assert_eq!(a.ok, 1);
        assert_eq!(a.failed(), 4);
        assert_eq!(a.by_status[&401], 2);
        assert_eq!(a.by_status[&200], 2);
        assert_eq!(a.by_error_name["AuthenticationFailedException"], 2);
        assert_eq!(a.verify_failed["cdiv_mismatch"], 1);
        assert_eq!(a.verify_failures(), 1);
        assert_eq!(a.transport["timeout"], 1);
        assert_eq!((a.late, a.over_budget), (1, 1));
        assert!(close(a.percentiles().max, 10_000_000));
    }

    #[test]
    fn nothing_counted_is_all_zero() {
        let p = Stats::new().percentiles();
        assert_eq!((p.p50, p.p99_9, p.max), (0, 0, 0));
    }
}
