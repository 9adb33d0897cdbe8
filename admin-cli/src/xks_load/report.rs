//! The result of an `xks load` run: a readable summary (stderr) and one JSON line (stdout).

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::{Percentiles, Stats};

/// What was run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The endpoint URL as given (no credential in it).
    pub endpoint: String,
    /// URI path prefix in front of /kms/xks/v1.
    pub uri_prefix: String,
    /// health | metadata | encrypt | decrypt | mixed.
    pub op: &'static str,
    /// "closed" or "open".
    pub mode: &'static str,
    /// Connections.
    pub connections: u32,
    /// Open loop: requests/s scheduled in total.
    pub target_rate: Option<f64>,
    /// Measured seconds asked for.
    pub duration_s: f64,
    /// Warm-up seconds.
    pub warmup_s: f64,
    /// Plaintext bytes per Encrypt.
    pub payload_bytes: usize,
    /// AAD bytes per request.
    pub aad_bytes: usize,
}

/// The final JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always "vhsm-admin xks load".
    pub tool: &'static str,
    /// What was run.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Seconds from the first measured send to the last answer.
    pub elapsed_s: f64,
    /// Requests counted (answered or not).
    pub requests: u64,
    /// Answered 200 and verified.
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Verified 200s per second.
    pub ok_rps: f64,
    /// Latency from the (scheduled) send to the complete answer, µs.
    pub latency_us: Percentiles,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<String, u64>,
    /// Error answers by `errorName`.
    pub by_error_name: BTreeMap<String, u64>,
    /// 200 answers that failed verification, by reason.
    pub verify_failed: BTreeMap<String, u64>,
    /// Requests without an answer, by kind.
    pub transport_errors: BTreeMap<String, u64>,
    /// Requests that took longer than KMS's 250 ms.
    pub over_250ms: u64,
    /// Open loop: sends more than 1 ms behind schedule.
    pub late_sends: u64,
    /// Open loop: how far behind its schedule each send left, µs (the generator's own
    /// lateness plus any wait for the connection's previous answer); absent in a closed loop.
    pub send_lag_us: Option<Percentiles>,
    /// Open loop: latency from the actual send, µs (without the send lag: the figure a caller
    /// that timed its own requests would see); absent in a closed loop, where it is the latency.
    pub from_send_us: Option<Percentiles>,
    /// CPU µs per counted request: "self" (this tool) and each --cpu-pid.
    pub cpu_us_per_request: BTreeMap<String, f64>,
}

impl Report {
    /// Builds the report from the merged counts.
    pub fn new(run: RunInfo, stats: &Stats, elapsed_s: f64, cpu_us: BTreeMap<String, u64>) -> Self {
        let per_s = |n: u64| {
            if elapsed_s > 0.0 {
                n as f64 / elapsed_s
            } else {
                0.0
            }
        };
        let requests = stats.requests();
        let cpu_us_per_request = cpu_us
            .into_iter()
            .filter(|_| requests > 0)
            .map(|(k, v)| (k, round1(v as f64 / requests as f64)))
            .collect();
        let send_lag_us = run.target_rate.map(|_| stats.send_lag());
        let from_send_us = run.target_rate.map(|_| stats.from_send());
        Report {
            tool: "vhsm-admin xks load",
            run,
            elapsed_s: round3(elapsed_s),
            requests,
            ok: stats.ok,
            failed: stats.failed(),
            throughput_rps: round1(per_s(requests)),
            ok_rps: round1(per_s(stats.ok)),
            latency_us: Percentiles {
                mean: round1(stats.percentiles().mean),
                ..stats.percentiles()
            },
            by_status: stats
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            by_error_name: stats.by_error_name.clone(),
            verify_failed: stats
                .verify_failed
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            transport_errors: stats
                .transport
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            over_250ms: stats.over_budget,
            late_sends: stats.late,
            send_lag_us,
            from_send_us,
            cpu_us_per_request,
        }
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &self.latency_us;
        let mut out = format!(
            "{} {} against {}{}: {} connections, {}, {:.1} s\n",
            self.tool,
            self.run.op,
            self.run.endpoint,
            self.run.uri_prefix,
            self.run.connections,
            match self.run.target_rate {
                Some(r) => format!("open loop at {r} req/s"),
                None => "closed loop".to_string(),
            },
            self.elapsed_s
        );
        out.push_str(&format!(
            "requests {}  ok {}  failed {}  throughput {:.0} req/s\n",
            self.requests, self.ok, self.failed, self.throughput_rps
        ));
        out.push_str(&format!(
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (over 250 ms: {})\n",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p99_9),
            ms(l.max),
            self.over_250ms
        ));
        if let Some(g) = &self.send_lag_us {
            out.push_str(&format!(
                "send lag ms (scheduled → sent): p50 {:.3}  p99 {:.3}  max {:.3}\n",
                ms(g.p50),
                ms(g.p99),
                ms(g.max)
            ));
        }
        if let Some(f) = &self.from_send_us {
            out.push_str(&format!(
                "from the actual send ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n",
                ms(f.p50),
                ms(f.p90),
                ms(f.p99),
                ms(f.max)
            ));
        }
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!("by status: {}\n", list(&self.by_status)));
        for (title, m) in [
            ("by errorName", &self.by_error_name),
            ("verification failed", &self.verify_failed),
            ("no answer", &self.transport_errors),
        ] {
            if !m.is_empty() {
                out.push_str(&format!("{title}: {}\n", list(m)));
            }
        }
        if self.run.target_rate.is_some() && self.late_sends > 0 {
            out.push_str(&format!(
                "{} sends left more than 1 ms behind schedule (their wait is in the latency)\n",
                self.late_sends
            ));
        }
        if !self.cpu_us_per_request.is_empty() {
            let cpu: Vec<String> = self
                .cpu_us_per_request
                .iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect();
            out.push_str(&format!("CPU µs per request: {}\n", cpu.join(", ")));
        }
        out
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::xks_load::verify::Outcome;
    use std::time::Duration;

    #[test]
    fn the_json_line_carries_counts_rates_and_percentiles() {
        let mut s = Stats::new();
        for _ in 0..30 {
            s.answered(
                200,
                &Outcome::Ok,
                Duration::from_micros(400),
                Duration::ZERO,
            );
        }
        let auth = Outcome::Error {
            status: 401,
            name: "AuthenticationFailedException".into(),
        };
        s.answered(401, &auth, Duration::from_micros(400), Duration::ZERO);
        let run = RunInfo {
            endpoint: "https://h:1".into(),
            uri_prefix: "/example".into(),
            op: "encrypt",
            mode: "closed",
            connections: 2,
            target_rate: None,
            duration_s: 2.0,
            warmup_s: 0.0,
            payload_bytes: 32,
            aad_bytes: 0,
        };
        let cpu = BTreeMap::from([("self".to_string(), 3_100u64)]);
        let r = Report::new(run, &s, 2.0, cpu);
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["requests"], 31);
        assert_eq!(v["ok"], 30);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["throughput_rps"], 15.5);
        assert_eq!(v["op"], "encrypt");
        assert_eq!(v["by_status"]["401"], 1);
        assert_eq!(v["by_error_name"]["AuthenticationFailedException"], 1);
        assert_eq!(v["cpu_us_per_request"]["self"], 100.0);
        assert!(v["latency_us"]["p99_9"].as_u64().unwrap() >= 399);
        assert!(v["send_lag_us"].is_null(), "a closed loop has no schedule");
        assert!(v["from_send_us"].is_null());
        assert!(v["target_rate"].is_null());
        let text = r.summary();
        assert!(
            text.contains("by errorName: AuthenticationFailedException 1"),
            "{text}"
        );
    }

    #[test]
    fn an_open_loop_reports_how_far_its_sends_lagged() {
        let mut s = Stats::new();
        for i in 0..100u64 {
            s.answered(
                200,
                &Outcome::Ok,
                Duration::from_micros(500),
                Duration::from_micros(10 + i),
            );
        }
        s.answered(
            200,
            &Outcome::Ok,
            Duration::from_millis(4),
            Duration::from_millis(3),
        );
        let run = RunInfo {
            endpoint: "https://h:1".into(),
            uri_prefix: String::new(),
            op: "encrypt",
            mode: "open",
            connections: 1,
            target_rate: Some(100.0),
            duration_s: 1.0,
            warmup_s: 0.0,
            payload_bytes: 32,
            aad_bytes: 0,
        };
        let r = Report::new(run, &s, 1.0, BTreeMap::new());
        let lag = r.send_lag_us.unwrap();
        assert_eq!(lag.p50, 60);
        // Within hdrhistogram's 3 significant digits.
        assert!((3000..=3003).contains(&lag.max), "{lag:?}");
        assert_eq!(r.late_sends, 1);
        // 500 µs from the schedule, less 10..110 µs of lag; the slow one 4 ms - 3 ms.
        let from_send = r.from_send_us.unwrap();
        assert!((440..=442).contains(&from_send.p50), "{from_send:?}");
        assert!((1000..=1001).contains(&from_send.max), "{from_send:?}");
        let text = r.summary();
        assert!(
            text.contains("send lag ms (scheduled → sent): p50 0.060"),
            "{text}"
        );
        assert!(
            text.contains("1 sends left more than 1 ms behind"),
            "{text}"
        );
    }
}
