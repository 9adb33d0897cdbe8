//! When each connection of `xks load` sends: closed loop (the next request as soon as the
//! previous answer arrived) or open loop (a fixed schedule; latency counts from the scheduled
//! send, so a slow answer that delays the next send shows up as queueing, not as a gap).

use std::time::Duration;

use tokio::time::Instant;

/// The phases of a run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Requests scheduled before this are warm-up: sent, not counted.
    pub measure_from: Instant,
    /// No request is scheduled at or after this.
    pub end: Instant,
}

/// The open-loop send times of one connection: every `interval`, from its offset on.
#[derive(Debug, Clone)]
pub struct Schedule {
    next: Instant,
    interval: Duration,
}

impl Schedule {
    /// Connection `index` of `connections` sharing `rate` requests/s from `start`: each sends
    /// every `connections / rate` s, the connections evenly staggered over one interval.
    pub fn open(start: Instant, rate: f64, connections: u32, index: u32) -> Self {
        let interval = Duration::from_secs_f64(f64::from(connections) / rate);
        let offset = interval.mul_f64(f64::from(index) / f64::from(connections));
        Schedule {
            next: start + offset,
            interval,
        }
    }

    /// The next scheduled send time (and advance).
    pub fn take(&mut self) -> Instant {
        let t = self.next;
        self.next += self.interval;
        t
    }
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

    /// Whether the send left later than [`LATE`] after its schedule (the previous answer on the
    /// connection was still outstanding, or this process was too busy).
    pub fn late(&self) -> bool {
        self.sent.saturating_duration_since(self.scheduled) > LATE
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
            Some(s) => {
                let t = s.take();
                if t >= plan.end {
                    break;
                }
                tokio::time::sleep_until(t).await;
                t
            }
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

    #[test]
    fn connections_are_staggered_over_one_interval() {
        let start = Instant::now();
        let mut times: Vec<Duration> = (0..4)
            .map(|i| Schedule::open(start, 1000.0, 4, i).take() - start)
            .collect();
        assert_eq!(times, [Duration::ZERO, MS, 2 * MS, 3 * MS]);
        let mut s = Schedule::open(start, 1000.0, 4, 1);
        times = (0..3).map(|_| s.take() - start).collect();
        assert_eq!(times, [MS, 5 * MS, 9 * MS]);
    }
}
