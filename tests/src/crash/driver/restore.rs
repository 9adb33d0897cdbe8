//! The restore kill point: restore the held backup onto a fresh node and kill that node.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::{note, wait_serving, wait_status, Op, Run};
use crate::admin::Admin;
use crate::crash::checks;
use crate::crash::killer::Killer;
use crate::crash::ops::OpKind;
use crate::procs::VhsmdProc;

impl Run {
    /// Restores the held backup onto a fresh node, killing that node at a random moment. If
    /// the restore took effect the fresh node becomes the appliance (and the model goes back
    /// to the backup's); otherwise it must still be empty.
    pub(super) fn restore_point(&mut self) -> Result<()> {
        let held = self
            .backup
            .clone()
            .ok_or_else(|| anyhow!("no backup held"))?;
        let name = format!("vhsm-r{}", self.serial);
        let mut fresh = VhsmdProc::start(self.app.dir.path(), &self.app.pki, &name)?;
        let admin = Admin::new(&fresh.endpoint(), &self.app.pki);
        let inv = held.model.unseal.restore(&held.file, &mut self.rng);
        let pid = fresh
            .pid()
            .ok_or_else(|| anyhow!("fresh vhsmd is not running"))?;
        let delay = self.delay(OpKind::Restore);
        let killer = Killer::arm(pid, delay);
        let t0 = Instant::now();
        let r = admin.run(&inv.args(), &inv.stdin);
        let took = t0.elapsed();
        let killed = killer.wait();
        fresh.kill_hard();
        let r = r?;
        if killed.is_none() {
            bail!("the SIGKILL to the restore target could not be sent");
        }
        let acked = r.code == 0;
        self.learn(OpKind::Restore, took, acked && took < delay, !acked);
        let what = format!(
            "backup restore killed {delay:?} after the start ({}; it took {took:?})",
            if acked {
                "acknowledged".to_string()
            } else {
                format!("cut off: {}", note(&r))
            }
        );
        fresh.restart().with_context(|| what.clone())?;
        let st = wait_status(&admin).with_context(|| what.clone())?;
        let applied = match st["seal_state"].as_str() {
            Some("uninitialized") if !acked => false,
            Some("uninitialized") => bail!("ACKNOWLEDGED restore lost: {what}; status {st}"),
            Some("sealed") => true,
            _ => bail!("restore target in an unexpected state after {what}: {st}"),
        };
        if applied {
            let old = std::mem::replace(&mut self.app.nodes[0], fresh);
            let old_dir = old.data_dir.clone();
            drop(old);
            let _ = std::fs::remove_dir_all(old_dir);
            self.model = held.model.clone();
            self.unseal(0, std::slice::from_ref(&held.model.unseal), &st)
                .with_context(|| what.clone())?;
            wait_serving(&self.admin(0)).with_context(|| what.clone())?;
            let log = checks::export_and_verify(&self.admin(0), &self.audit_file())
                .with_context(|| what.clone())?;
            checks::check_prefix(&held.audit, &log)
                .context("the restored log must hold the backed-up records")
                .with_context(|| what.clone())?;
            let n = checks::count_events(&log[held.audit.len()..], "restore", None);
            if n != 1 {
                bail!("{what}: {n} `restore` records in the restored log");
            }
            self.audit = log;
        } else {
            let dir = fresh.data_dir.clone();
            drop(fresh);
            let _ = std::fs::remove_dir_all(dir);
        }
        self.check(&Op::Restore, applied, 0)
            .with_context(|| what.clone())?;
        self.report.record(OpKind::Restore, acked, applied);
        eprintln!(
            "kill point {}: {what}; applied: {applied}",
            self.report.kill_points()
        );
        Ok(())
    }
}
