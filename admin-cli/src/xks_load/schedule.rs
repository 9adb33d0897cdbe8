//! When each connection of `xks load` sends: closed loop (the next request as soon as the
//! previous answer arrived) or open loop (a fixed schedule; latency counts from the scheduled
//! send, so a slow answer that delays the next send shows up as queueing, not as a gap).
//!
//! The open loop is paced by a thread of its own ([`pace`]): tokio's timer rounds every
//! deadline up to the next millisecond, which would add up to 1 ms of the generator's own
//! lateness to every latency measured from the schedule.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// The phases of a run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests scheduled before this are warm-up: sent, not counted.
    pub measure_from: Instant,
    /// No request is scheduled at or after this.
    pub end: Instant,
}

/// The open-loop send times of one connection.
#[derive(Debug)]
pub enum Schedule {
    /// Every `interval` from `next` on, waited for on tokio's (millisecond) timer; the tests
    /// use it under tokio's paused clock.
    Ticks {
        /// The next send time.
        next: Instant,
        /// Time between two sends.
        interval: Duration,
    },
    /// Each send time as the pacer thread reaches it (see [`pace`]).
    Paced(mpsc::UnboundedReceiver<Instant>),
}

impl Schedule {
    /// Connection `index` of `connections` sharing `rate` requests/s from `start`: each sends
    /// every `connections / rate` s, the connections evenly staggered over one interval.
    pub fn open(start: Instant, rate: f64, connections: u32, index: u32) -> Self {
        let interval = Duration::from_secs_f64(f64::from(connections) / rate);
        let offset = interval.mul_f64(f64::from(index) / f64::from(connections));
        Schedule::Ticks {
            next: start + offset,
            interval,
        }
    }

    /// Waits for the next send time and returns it; `None` once the schedule reaches `end`.
    pub async fn next(&mut self, end: Instant) -> Option<Instant> {
        match self {
            Schedule::Ticks { next, interval } => {
                let t = *next;
                *next += *interval;
                if t >= end {
                    return None;
                }
                tokio::time::sleep_until(t).await;
                Some(t)
            }
            Schedule::Paced(rx) => rx.recv().await,
        }
    }
}

/// The send time of request `k` of a run at `rate` requests/s in total from `start` (computed
/// from the start each time, so rounding never accumulates).
fn nth_send(start: Instant, rate: f64, k: u64) -> Instant {
    // A run's request count is far below 2^52, so `k as f64` is exact.
    #[allow(clippy::cast_precision_loss)]
    let at = Duration::from_secs_f64(k as f64 / rate);
    start + at
}

/// Starts the pacer thread for an open loop of `rate` requests/s shared by `connections` from
/// `start` to `end`, and returns each connection's [`Schedule`]. Request `k` goes to connection
/// `k % connections` at `start + k / rate` (the same staggering as [`Schedule::open`]); the
/// thread sleeps with the kernel's high-resolution timer. A connection still busy with its
/// previous request finds the send time queued, and the wait counts in its latency.
pub fn pace(
    start: Instant,
    rate: f64,
    connections: u32,
    end: Instant,
) -> std::io::Result<Vec<Schedule>> {
    let (senders, schedules): (Vec<_>, Vec<_>) = (0..connections)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, Schedule::Paced(rx))
        })
        .unzip();
    std::thread::Builder::new()
        .name("xks-load-pacer".into())
        .spawn(move || {
            let mut k = 0u64;
            loop {
                let t = nth_send(start, rate, k);
                if t >= end {
                    break;
                }
                let wait = t.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                let to = usize::try_from(k % u64::from(connections)).unwrap_or(0);
                // A connection that has stopped no longer listens; the others go on.
                let _ = senders[to].send(t);
                k += 1;
            }
        })?;
    Ok(schedules)
}

/// The times of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When it should have been sent (closed loop: when it was sent).
    pub scheduled: Instant,
    /// When it was sent.
    pub sent: Instant,
    /// When its answer was complete (or it failed).
    pub done: Instant,
}

/// A send later than this after its scheduled time counts as late.
pub const LATE: Duration = Duration::from_millis(1);

impl Timing {
    /// The latency reported: from the scheduled send to the complete answer.
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.scheduled)
    }

    /// How long after its schedule the send left (the previous answer on the connection was
    /// still outstanding, or this process was late).
    pub fn lag(&self) -> Duration {
        self.sent.saturating_duration_since(self.scheduled)
    }

    /// Whether the send left later than [`LATE`] after its schedule.
    pub fn late(&self) -> bool {
        self.lag() > LATE
    }
}

/// Performs the requests of one connection.
pub trait Requester {
    /// What one request results in.
    type Out;
    /// Performs request number `seq` of the connection.
    fn send(&mut self, seq: u64) -> impl std::future::Future<Output = Self::Out> + Send;
}

/// Runs one connection's loop until `plan.end`: `sender.send(seq)` performs request `seq`;
/// `record` gets each measured request's timing and result.
pub async fn drive<S: Requester>(
    plan: Plan,
    mut schedule: Option<Schedule>,
    sender: &mut S,
    mut record: impl FnMut(Timing, S::Out),
) {
    let mut seq = 0u64;
    loop {
        let scheduled = match schedule.as_mut() {
            Some(s) => match s.next(plan.end).await {
                Some(t) => t,
                None => break,
            },
            None => {
                let now = Instant::now();
                if now >= plan.end {
                    break;
                }
                now
            }
        };
        let sent = Instant::now();
        let r = sender.send(seq).await;
        let done = Instant::now();
        seq += 1;
        if scheduled >= plan.measure_from {
            record(
                Timing {
                    scheduled,
                    sent,
                    done,
                },
                r,
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A server that takes `0` to answer.
    struct Fixed(Duration);

    impl Requester for Fixed {
        type Out = u64;
        fn send(&mut self, seq: u64) -> impl std::future::Future<Output = u64> + Send {
            let d = self.0;
            async move {
                tokio::time::sleep(d).await;
                seq
            }
        }
    }

    async fn run(schedule: Option<Schedule>, plan: Plan, service: Duration) -> Vec<(Timing, u64)> {
        let mut out = Vec::new();
        drive(plan, schedule, &mut Fixed(service), |t, r| out.push((t, r))).await;
        out
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_counts_from_the_scheduled_send() {
        let start = Instant::now();
        let plan = Plan {
            measure_from: start,
            end: start + 10 * MS,
        };
        // 1,000 req/s on one connection (every 1 ms) against a server that takes 3 ms: each
        // request waits for the one before it, and the wait is in its latency.
        let got = run(Some(Schedule::open(start, 1000.0, 1, 0)), plan, 3 * MS).await;
        assert_eq!(got.len(), 10);
        for (i, (t, seq)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64);
            assert_eq!(t.scheduled, start + MS * i as u32);
            assert_eq!(t.sent, start + 3 * MS * i as u32);
            assert_eq!(t.latency(), MS * (3 + 2 * i as u32), "request {i}");
            assert_eq!(t.late(), i > 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_rate_when_the_server_keeps_up() {
        let start = Instant::now();
        let plan = Plan {
            measure_from: start + 4 * MS,
            end: start + 20 * MS,
        };
        let got = run(Some(Schedule::open(start, 500.0, 1, 0)), plan, MS).await;
        // Every 2 ms from 0 to 18 ms; those before 4 ms are warm-up.
        assert_eq!(got.len(), 8);
        assert_eq!(got[0].1, 2);
        assert!(got.iter().all(|(t, _)| t.latency() == MS && !t.late()));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_sends_when_the_answer_arrived() {
        let start = Instant::now();
        let plan = Plan {
            measure_from: start,
            end: start + 10 * MS,
        };
        let got = run(None, plan, 3 * MS).await;
        // Sent at 0, 3, 6, 9 ms; each takes 3 ms.
        assert_eq!(got.len(), 4);
        assert!(got
            .iter()
            .all(|(t, _)| t.latency() == 3 * MS && t.sent == t.scheduled));
    }

    /// The first `n` send times of a tick schedule, relative to `start`.
    fn ticks(s: Schedule, start: Instant, n: usize) -> Vec<Duration> {
        let Schedule::Ticks { next, interval } = s else {
            panic!("not a tick schedule");
        };
        (0..n).map(|j| next + interval * j as u32 - start).collect()
    }

    #[test]
    fn connections_are_staggered_over_one_interval() {
        let start = Instant::now();
        let times: Vec<Duration> = (0..4)
            .map(|i| ticks(Schedule::open(start, 1000.0, 4, i), start, 1)[0])
            .collect();
        assert_eq!(times, [Duration::ZERO, MS, 2 * MS, 3 * MS]);
        let s = Schedule::open(start, 1000.0, 4, 1);
        assert_eq!(ticks(s, start, 3), [MS, 5 * MS, 9 * MS]);
    }

    #[tokio::test]
    async fn the_pacer_deals_the_sends_round_the_connections_and_never_early() {
        let start = Instant::now() + 2 * MS;
        let end = start + 10 * MS;
        // 2,000 req/s over 3 connections: a send every 0.5 ms, 20 in all before `end`.
        let schedules = pace(start, 2000.0, 3, end).unwrap();
        let mut all = Vec::new();
        for (i, mut s) in schedules.into_iter().enumerate() {
            let mut j = 0u32;
            while let Some(t) = s.next(end).await {
                assert!(
                    Instant::now() >= t,
                    "connection {i} woken before its send time"
                );
                let want = start + Duration::from_micros(500) * (i as u32 + 3 * j);
                assert_eq!(t, want, "connection {i}, send {j}");
                all.push(t);
                j += 1;
            }
        }
        all.sort();
        assert_eq!(all.len(), 20);
        assert!(all.iter().all(|t| *t < end));
        // The same staggering as the tick schedule.
        let tick: Vec<Duration> = (0..3)
            .map(|i| ticks(Schedule::open(start, 2000.0, 3, i), start, 1)[0])
            .collect();
        assert_eq!(tick, [Duration::ZERO, Duration::from_micros(500), MS]);
    }
}
