//! The live progress line of `xks load`: shared counters the connections bump, printed on stderr
//! (only when it is a terminal) four times a second.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How often the line is redrawn.
pub const EVERY: Duration = Duration::from_millis(250);

/// Counters shared by every connection (relaxed: a display, not a measurement).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    failed: AtomicU64,
    latency_us: AtomicU64,
}

impl Progress {
    /// Counts one finished request.
    pub fn add(&self, ok: bool, latency: Duration) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.fetch_add(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.latency_us.load(Ordering::Relaxed),
        )
    }
}

/// One progress line from the totals now and at the previous redraw `dt` ago.
pub fn line(
    elapsed: Duration,
    warmup: bool,
    now: (u64, u64, u64),
    before: (u64, u64, u64),
    dt: Duration,
) -> String {
    let n = now.0.saturating_sub(before.0);
    let rate = if dt.is_zero() {
        0.0
    } else {
        n as f64 / dt.as_secs_f64()
    };
    let mean_ms = if n == 0 {
        0.0
    } else {
        now.2.saturating_sub(before.2) as f64 / n as f64 / 1000.0
    };
    format!(
        "{:>6.1} s{} {:>10} requests {:>8} failed {:>9.0} req/s  mean {:.2} ms",
        elapsed.as_secs_f64(),
        if warmup { " warm-up" } else { "" },
        now.0,
        now.1,
        rate,
        mean_ms
    )
}

/// Redraws the line until `stop` is dropped or fires; a no-op when stderr is not a terminal.
pub fn spawn(
    progress: Arc<Progress>,
    start: Instant,
    measure_from: Instant,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut stop = stop;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut before = progress.snapshot();
        let mut at = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let now_t = Instant::now();
            let now = progress.snapshot();
            let text = line(
                now_t.saturating_duration_since(start),
                now_t < measure_from,
                now,
                before,
                now_t - at,
            );
            let mut err = std::io::stderr().lock();
            // Carriage return and erase-line: redraw in place.
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            before = now;
            at = now_t;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_interval_rate_and_mean() {
        let p = Progress::default();
        p.add(true, Duration::from_micros(500));
        p.add(false, Duration::from_micros(1500));
        let l = line(
            Duration::from_millis(2500),
            false,
            p.snapshot(),
            (0, 0, 0),
            Duration::from_millis(500),
        );
        assert!(l.contains("2.5 s"), "{l}");
        assert!(l.contains("2 requests"), "{l}");
        assert!(l.contains("1 failed"), "{l}");
        assert!(l.contains("4 req/s"), "{l}");
        assert!(l.contains("mean 1.00 ms"), "{l}");
        assert!(
            line(Duration::ZERO, true, (0, 0, 0), (0, 0, 0), Duration::ZERO).contains("warm-up")
        );
    }
}
