//! Counting kill points per operation and printing the summary.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::ops::OpKind;

/// How the kills of one operation landed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The CLI exited 0: the change must have survived the kill.
    pub acked: u32,
    /// The CLI failed (cut off by the kill) and the change is fully there.
    pub cut_applied: u32,
    /// Cut off and nothing of it is there.
    pub cut_not_applied: u32,
}

impl Tally {
    pub fn total(&self) -> u32 {
        self.acked + self.cut_applied + self.cut_not_applied
    }
}

/// The result of a crash run.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub per_op: BTreeMap<OpKind, Tally>,
    pub duration: Duration,
}

impl Report {
    pub fn new(seed: u64, nodes: usize) -> Self {
        Report {
            seed,
            nodes,
            per_op: BTreeMap::new(),
            duration: Duration::ZERO,
        }
    }

    pub fn kill_points(&self) -> u32 {
        self.per_op.values().map(Tally::total).sum()
    }

    pub fn record(&mut self, kind: OpKind, acked: bool, applied: bool) {
        let t = self.per_op.entry(kind).or_default();
        match (acked, applied) {
            (true, _) => t.acked += 1,
            (false, true) => t.cut_applied += 1,
            (false, false) => t.cut_not_applied += 1,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "crash points: {} kill points survived on {} node(s) in {:.1} s, seed {}",
            self.kill_points(),
            self.nodes,
            self.duration.as_secs_f64(),
            self.seed
        )?;
        writeln!(
            f,
            "| operation | kill points | acknowledged | failed, applied | failed, not applied |"
        )?;
        writeln!(f, "| --- | ---: | ---: | ---: | ---: |")?;
        for (kind, t) in &self.per_op {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} |",
                kind.name(),
                t.total(),
                t.acked,
                t.cut_applied,
                t.cut_not_applied
            )?;
        }
        Ok(())
    }
}
