//! The result table of `xks check`: one row per check (PASS, WARN, FAIL, INFO), its latency
//! against KMS's budget, and the summary that decides the exit code.

use std::time::Duration;

use serde::Serialize;

use crate::output::render_table;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// As KMS needs it.
    Pass,
    /// Works, but worth a look (near the budget, legacy TLS offered, certificate expiring).
    Warn,
    /// KMS would fail or misbehave.
    Fail,
    /// A fact, no judgement.
    Info,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
        }
    }
}

/// One row.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `tls`, `api`, `errors`, `latency`.
    pub group: &'static str,
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// The call's latency in milliseconds, when the check is one call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// What was seen.
    pub detail: String,
}

/// The rows so far and the latency budget they are held to.
#[derive(Debug)]
pub struct Report {
    /// KMS's per-call timeout.
    pub budget: Duration,
    /// Rows in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report with `budget`.
    pub fn new(budget: Duration) -> Self {
        Report {
            budget,
            checks: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn add(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        verdict: Verdict,
        detail: impl Into<String>,
    ) {
        self.checks.push(Check {
            group,
            name: name.into(),
            verdict,
            latency_ms: None,
            detail: detail.into(),
        });
    }

    /// Adds a row for one call that took `elapsed`; a passing call slower than the budget
    /// fails (KMS has timed it out), one past 80 % of it warns.
    pub fn add_timed(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        verdict: Verdict,
        elapsed: Duration,
        detail: impl Into<String>,
    ) {
        let mut detail = detail.into();
        let verdict = match verdict {
            Verdict::Pass if elapsed > self.budget => {
                detail = format!("{detail}; slower than KMS's {} ms", self.budget.as_millis());
                Verdict::Fail
            }
            Verdict::Pass if elapsed > self.budget * 4 / 5 => {
                detail = format!(
                    "{detail}; over 80 % of KMS's {} ms",
                    self.budget.as_millis()
                );
                Verdict::Warn
            }
            v => v,
        };
        self.checks.push(Check {
            group,
            name: name.into(),
            verdict,
            latency_ms: Some(elapsed.as_secs_f64() * 1000.0),
            detail,
        });
    }

    /// Rows with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }

    /// The aligned table and a summary line.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.group.to_string(),
                    c.name.clone(),
                    c.verdict.as_str().to_string(),
                    c.latency_ms
                        .map_or_else(String::new, |ms| format!("{ms:.1}")),
                    c.detail.clone(),
                ]
            })
            .collect();
        let mut out = render_table(&["GROUP", "CHECK", "RESULT", "MS", "DETAIL"], &rows);
        out.push_str(&format!(
            "\n{} passed, {} warnings, {} failed, {} info (latency budget {} ms)\n",
            self.count(Verdict::Pass),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail),
            self.count(Verdict::Info),
            self.budget.as_millis()
        ));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_call_over_the_budget_fails_and_near_it_warns() {
        let mut r = Report::new(Duration::from_millis(250));
        r.add_timed("api", "fast", Verdict::Pass, Duration::from_millis(3), "ok");
        r.add_timed(
            "api",
            "near",
            Verdict::Pass,
            Duration::from_millis(210),
            "ok",
        );
        r.add_timed(
            "api",
            "slow",
            Verdict::Pass,
            Duration::from_millis(251),
            "ok",
        );
        r.add_timed(
            "api",
            "wrong",
            Verdict::Fail,
            Duration::from_millis(1),
            "bad",
        );
        let v: Vec<Verdict> = r.checks.iter().map(|c| c.verdict).collect();
        assert_eq!(
            v,
            [Verdict::Pass, Verdict::Warn, Verdict::Fail, Verdict::Fail]
        );
        assert!(r.checks[2].detail.contains("slower than KMS's 250 ms"));
        let text = r.render();
        assert!(text.contains("1 passed, 1 warnings, 2 failed"), "{text}");
    }
}
