//! The crash run: plan an operation, cut it with a `kill -9` at a random moment, restart and
//! unseal, decide whether it was applied (fully, or not at all), check the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aes_kw::{KeyInit, KwpAes256};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::checks;
use super::killer::Killer;
use super::model::{KeyState, Material, Model, Sealed, UnsealConfig};
use super::ops::{self, Limits, Op, OpKind};
use super::report::Report;
use super::rng::Rng;
use crate::admin::{Admin, AdminRun};
use crate::procs::{Appliance, ApplianceOptions};

mod restore;

/// How long a run is and how it is seeded.
#[derive(Debug, Clone)]
pub struct Options {
    pub kill_points: usize,
    pub seed: u64,
    /// 1: a single node (every operation, backup and restore included). 3: a cluster whose
    /// leader is killed (key operations and encrypts).
    pub nodes: usize,
}

impl Options {
    /// `VHSM_CRASH_POINTS` (else `default_points`) and `VHSM_CRASH_SEED` (else from the clock).
    pub fn from_env(default_points: usize, nodes: usize) -> Self {
        let kill_points = std::env::var("VHSM_CRASH_POINTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_points);
        let seed = std::env::var("VHSM_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
            });
        Options {
            kill_points,
            seed,
            nodes,
        }
    }
}

/// What running one operation gave.
#[derive(Debug, Default)]
struct Performed {
    /// The CLI exited 0 (or every Encrypt was answered): on a single node the answer came
    /// before the kill; in a cluster it may come from the new leader after it.
    acked: bool,
    /// The failing invocation's exit code and first stderr line (for failure messages).
    note: String,
    /// The answer of an acknowledged key command.
    answer: Option<KeyState>,
    /// Acknowledged ciphertexts (Encrypt).
    sealed: Vec<Sealed>,
    /// The material of an import.
    material: Option<Material>,
}

/// A backup the run holds: the file, the model at that moment and the audit records it holds.
#[derive(Debug, Clone)]
struct Held {
    file: PathBuf,
    model: Model,
    audit: Vec<Value>,
}

/// Kill points between two verifications of the whole audit chain.
const FULL_AUDIT_EVERY: u32 = 25;

struct Run {
    total_points: u32,
    rt: tokio::runtime::Runtime,
    app: Appliance,
    work: PathBuf,
    model: Model,
    rng: Rng,
    /// The audit records last exported (and verified).
    audit: Vec<Value>,
    estimate_ms: BTreeMap<OpKind, u64>,
    serial: u64,
    backup: Option<Held>,
    limits: Limits,
    report: Report,
}

/// Runs `opts.kill_points` kill points; an error names the seed, the point and the operation.
pub fn run(opts: &Options) -> Result<Report> {
    eprintln!(
        "crash run: seed {} ({} kill points, {} node(s)); replay with VHSM_CRASH_SEED={}",
        opts.seed, opts.kill_points, opts.nodes, opts.seed
    );
    let started = Instant::now();
    let mut run = Run::start(opts)?;
    for point in 1..=opts.kill_points {
        run.serial += 1;
        let op = ops::plan(
            &run.model,
            &mut run.rng,
            &run.limits,
            run.serial,
            &run.work,
            run.backup.is_some(),
        );
        run.point(&op).with_context(|| {
            format!(
                "kill point {point} of {} ({}), seed {}: replay with VHSM_CRASH_SEED={}",
                opts.kill_points,
                op.kind().name(),
                opts.seed,
                opts.seed
            )
        })?;
    }
    run.report.duration = started.elapsed();
    Ok(run.report)
}

/// The exit code and the CLI's `error:` line (else its last stderr line).
fn note(r: &AdminRun) -> String {
    let lines: Vec<&str> = r.stderr.lines().collect();
    let line = lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .or(lines.last())
        .copied()
        .unwrap_or_default();
    format!("exit {}: {line}", r.code)
}

impl Run {
    fn start(opts: &Options) -> Result<Self> {
        let passphrase = "crash harness passphrase 0".to_string();
        let app = Appliance::start(&ApplianceOptions {
            nodes: opts.nodes,
            passphrase: passphrase.clone(),
            key_ids: vec!["k0".to_string()],
            ..ApplianceOptions::default()
        })?;
        let work = app.dir.path().join("crash");
        std::fs::create_dir_all(&work)?;
        let mut model = Model::new(UnsealConfig::Passphrase(passphrase));
        model.keys = checks::observed_keys(&app.admin(0))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let single = opts.nodes == 1;
        let mut run = Run {
            total_points: u32::try_from(opts.kill_points).unwrap_or(u32::MAX),
            rt,
            app,
            work,
            model,
            rng: Rng::new(opts.seed),
            audit: Vec::new(),
            estimate_ms: BTreeMap::new(),
            serial: 0,
            backup: None,
            limits: Limits {
                max_keys: 10,
                max_versions: 6,
                restore: single,
                rekey: single,
            },
            report: Report::new(opts.seed, opts.nodes),
        };
        run.audit = checks::export_and_verify(&run.app.admin(0), &run.audit_file())?;
        Ok(run)
    }

    fn audit_file(&self) -> PathBuf {
        self.work.join("audit.jsonl")
    }

    fn admin(&self, i: usize) -> Admin {
        self.app.admin(i)
    }

    /// The node to kill: the only one, or the cluster's leader.
    fn victim(&self) -> Result<usize> {
        if self.app.nodes.len() == 1 {
            return Ok(0);
        }
        // Right after a restart the members may still be electing.
        let deadline = Instant::now() + Duration::from_secs(10);
        let (s, leader) = loop {
            let s = self.admin(0).json(&["cluster", "status"], "")?;
            match s["leader_id"].as_u64() {
                Some(id) if id != 0 => break (s, id),
                _ if Instant::now() > deadline => bail!("no leader: {s}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let addr = s["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["raft_id"].as_u64() == Some(leader)))
            .and_then(|m| m["address"].as_str())
            .ok_or_else(|| anyhow!("leader {leader} not among the members: {s}"))?
            .to_string();
        (0..self.app.nodes.len())
            .find(|i| self.app.nodes[*i].endpoint() == addr)
            .ok_or_else(|| anyhow!("leader {addr} is not one of ours"))
    }

    /// A kill delay: half the time uniform in 0..1.3 x the operation's usual duration (before,
    /// during, after), half the time in 0.7..1.1 x (around the commit, near the end).
    fn delay(&mut self, kind: OpKind) -> Duration {
        let est = *self
            .estimate_ms
            .entry(kind)
            .or_insert_with(|| kind.initial_estimate_ms());
        let ms = if self.rng.chance(50) {
            self.rng.below(est * 13 / 10 + 1)
        } else {
            est * 7 / 10 + self.rng.below(est * 4 / 10 + 1)
        };
        Duration::from_millis(ms)
    }

    /// Refines the duration estimate: from the duration of a run that finished before its
    /// kill, or upwards when a late kill still cut the operation off (a cut run only bounds
    /// it from below). A run acknowledged after its kill (a cluster's new leader answered)
    /// says nothing about the duration without a kill.
    fn learn(&mut self, kind: OpKind, took: Duration, finished_first: bool, cut: bool) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let est = self
            .estimate_ms
            .entry(kind)
            .or_insert_with(|| kind.initial_estimate_ms());
        if finished_first {
            *est = (*est * 3 + ms) / 4;
        } else if cut && ms * 10 > *est * 9 {
            *est = (*est * 5 / 4).max(ms);
        }
    }

    fn point(&mut self, op: &Op) -> Result<()> {
        if matches!(op, Op::Restore) {
            return self.restore_point();
        }
        let kind = op.kind();
        let victim = self.victim()?;
        let via = if self.app.nodes.len() == 1 {
            0
        } else {
            self.rng.index(self.app.nodes.len())
        };
        let pid = self.app.nodes[victim]
            .pid()
            .ok_or_else(|| anyhow!("vhsmd {victim} is not running"))?;
        let delay = self.delay(kind);
        let killer = Killer::arm(pid, delay);
        let t0 = Instant::now();
        let done = self.perform(op, via);
        let took = t0.elapsed();
        let killed = killer.wait();
        self.app.nodes[victim].kill_hard();
        let done = done?;
        if killed.is_none() {
            bail!("the SIGKILL to vhsmd {victim} could not be sent");
        }
        self.learn(kind, took, done.acked && took < delay, !done.acked);
        let what = format!(
            "{} killed {delay:?} after the start ({}; the op took {took:?})",
            kind.name(),
            if done.acked {
                "acknowledged".to_string()
            } else {
                format!("cut off: {}", done.note)
            }
        );
        // A rekey that was cut off may be in force or not: try the old configuration first.
        let candidates = match op {
            Op::Rekey { new } if done.acked => vec![new.clone()],
            Op::Rekey { new } => vec![self.model.unseal.clone(), new.clone()],
            _ => vec![self.model.unseal.clone()],
        };
        let chosen = self
            .restart(victim, &candidates)
            .with_context(|| what.clone())?;
        let acked = done.acked;
        let applied = self
            .resolve(op, done, chosen, via)
            .with_context(|| what.clone())?;
        self.check(op, applied, via).with_context(|| what.clone())?;
        self.report.record(kind, acked, applied);
        eprintln!(
            "kill point {}: {what}; applied: {applied}",
            self.report.kill_points()
        );
        Ok(())
    }

    /// Runs `op` through vhsm-admin (or gRPC for Encrypt) against node `via`.
    fn perform(&mut self, op: &Op, via: usize) -> Result<Performed> {
        let admin = self.admin(via);
        match op {
            Op::Key { kind, args, .. } => {
                let mut args: Vec<String> = args.clone();
                let mut material = None;
                if *kind == OpKind::Import {
                    let (extra, m) = match self.prepare_import(&admin)? {
                        Ok(v) => v,
                        Err(failed) => return Ok(failed),
                    };
                    args.extend(extra);
                    material = Some(m);
                }
                args.extend(["--output".to_string(), "json".to_string()]);
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let r = admin.run(&argv, "")?;
                let answer = if r.code == 0 {
                    let v: Value = serde_json::from_str(r.stdout.trim())
                        .with_context(|| format!("answer of {argv:?}: {}", r.stdout))?;
                    Some(KeyState::from_json(&v)?.1)
                } else {
                    None
                };
                Ok(Performed {
                    acked: r.code == 0,
                    note: note(&r),
                    answer,
                    material,
                    ..Performed::default()
                })
            }
            Op::Encrypt { key_id, version } => {
                let endpoint = self.app.nodes[via].endpoint();
                let pki = self.app.pki.clone();
                let rng = &mut self.rng;
                self.rt.block_on(async {
                    let mut done = Performed::default();
                    let mut c = match crate::grpc::crypto(&endpoint, &pki).await {
                        Ok(c) => c,
                        Err(e) => {
                            done.note = format!("connect: {e}");
                            return Ok(done);
                        }
                    };
                    for _ in 0..40 {
                        match checks::encrypt_one(&mut c, key_id, *version, rng).await {
                            Ok(s) => done.sealed.push(s),
                            Err(e) => {
                                done.note = format!("encrypt: {}", e.message());
                                return Ok(done);
                            }
                        }
                    }
                    done.acked = true;
                    Ok(done)
                })
            }
            Op::Rekey { new } => {
                let inv = self.model.unseal.rekey_to(new, &mut self.rng);
                let r = admin.run(&inv.args(), &inv.stdin)?;
                Ok(Performed {
                    acked: r.code == 0,
                    note: note(&r),
                    ..Performed::default()
                })
            }
            Op::Backup => {
                let file = self.work.join(format!("backup-{}.vhsmbak", self.serial));
                let f = file.to_string_lossy().into_owned();
                let r = admin.run(&["backup", "create", "--out", &f], "")?;
                if r.code == 0 {
                    self.backup = Some(Held {
                        file,
                        model: self.model.clone(),
                        audit: self.audit.clone(),
                    });
                }
                Ok(Performed {
                    acked: r.code == 0,
                    note: note(&r),
                    ..Performed::default()
                })
            }
            Op::Restore => bail!("restore is run by restore_point"),
        }
    }

    /// `key import-key`, then wraps fresh material under the import key (RFC 5649). Returns
    /// the extra `key import` arguments, or the failed step as a cut-off operation.
    #[allow(clippy::type_complexity)]
    fn prepare_import(
        &mut self,
        admin: &Admin,
    ) -> Result<std::result::Result<(Vec<String>, Material), Performed>> {
        let key_file = self.work.join(format!("import-{}.key", self.serial));
        let kf = key_file.to_string_lossy().into_owned();
        let r = admin.run(&["key", "import-key", "--out", &kf, "--output", "json"], "")?;
        if r.code != 0 {
            return Ok(Err(Performed {
                note: format!("key import-key {}", note(&r)),
                ..Performed::default()
            }));
        }
        let v: Value = serde_json::from_str(r.stdout.trim())?;
        let import_id = v["import_key_id"]
            .as_str()
            .ok_or_else(|| anyhow!("import-key answer without an id: {v}"))?
            .to_string();
        let kek: [u8; 32] = std::fs::read(&key_file)?
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("import key is not 32 bytes"))?;
        std::fs::remove_file(&key_file)?;
        let mut raw = [0u8; 32];
        self.rng.fill(&mut raw);
        let mut wrapped = [0u8; 40];
        KwpAes256::new((&kek).into())
            .wrap_key(&raw, &mut wrapped)
            .map_err(|e| anyhow!("KWP wrap: {e:?}"))?;
        let wrapped_file = self.work.join(format!("wrapped-{}.bin", self.serial));
        std::fs::write(&wrapped_file, wrapped)?;
        Ok(Ok((
            vec![
                "--import-key-id".to_string(),
                import_id,
                "--wrapped".to_string(),
                wrapped_file.to_string_lossy().into_owned(),
            ],
            Material(raw),
        )))
    }

    /// Restarts node `i` (it must come back sealed) and unseals it with the first of
    /// `candidates` that the store accepts; returns that candidate's index.
    fn restart(&mut self, i: usize, candidates: &[UnsealConfig]) -> Result<usize> {
        self.app.nodes[i].restart()?;
        let admin = self.admin(i);
        let st = wait_status(&admin)?;
        if st["seal_state"] != "sealed" {
            bail!("a restarted node must come back sealed: {st}");
        }
        let chosen = self.unseal(i, candidates, &st)?;
        wait_serving(&admin)?;
        Ok(chosen)
    }

    fn unseal(&mut self, i: usize, candidates: &[UnsealConfig], st: &Value) -> Result<usize> {
        let admin = self.admin(i);
        let mode = st["unseal_mode"].as_str().unwrap_or_default().to_string();
        let mut tried = Vec::new();
        for (ci, cfg) in candidates.iter().enumerate() {
            if cfg.mode() != mode || !cfg.files_exist() {
                continue;
            }
            let inv = cfg.unseal(&mut self.rng);
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let r = admin.run(&inv.args(), &inv.stdin)?;
                if r.code == 0 {
                    let st = admin.json(&["status"], "")?;
                    if st["seal_state"] == "unsealed" {
                        return Ok(ci);
                    }
                    bail!("unseal exited 0 but the node is {}", st["seal_state"]);
                }
                if r.code == 4 || Instant::now() > deadline {
                    tried.push(format!("{cfg:?}: {}", note(&r)));
                    let _ = admin.run(&["unseal", "--reset"], "");
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bail!("no configuration unseals the store (status {st}); tried {tried:?} of {candidates:?}")
    }

    /// Decides from what the store shows whether a cut-off `op` was applied (an acknowledged
    /// one must be), and moves the model accordingly.
    fn resolve(&mut self, op: &Op, done: Performed, chosen: usize, via: usize) -> Result<bool> {
        match op {
            Op::Key {
                key_id,
                before,
                after,
                ..
            } => {
                if done.acked && done.answer != *after {
                    bail!(
                        "acknowledged answer for {key_id}: {:?}, expected {after:?}",
                        done.answer
                    );
                }
                let seen = self.settled_keys(via)?;
                let now = seen.get(key_id).cloned();
                let applied = if now == *after {
                    true
                } else if now == *before && !done.acked {
                    false
                } else if done.acked {
                    bail!(
                        "ACKNOWLEDGED change lost on {key_id}: expected {after:?}, found {now:?}"
                    );
                } else {
                    bail!(
                        "HALF-WRITTEN {key_id}: before {before:?}, after {after:?}, found {now:?}"
                    );
                };
                match now {
                    Some(k) => self.model.keys.insert(key_id.clone(), k),
                    None => self.model.keys.remove(key_id),
                };
                if applied {
                    if let Some(m) = done.material {
                        self.model.imported.insert(key_id.clone(), m);
                    }
                }
                Ok(applied)
            }
            Op::Encrypt { .. } => {
                self.model.sealed.extend(done.sealed);
                Ok(done.acked)
            }
            Op::Rekey { new } => {
                let applied = if done.acked { true } else { chosen == 1 };
                if applied {
                    self.model.unseal = new.clone();
                }
                Ok(applied)
            }
            Op::Backup => Ok(done.acked),
            Op::Restore => bail!("restore is resolved by restore_point"),
        }
    }

    /// Keys on every node as modelled, audit chain verified and complete, crypto round trips.
    fn check(&mut self, op: &Op, applied: bool, via: usize) -> Result<()> {
        for i in 0..self.app.nodes.len() {
            self.check_keys(i)?;
        }
        // The whole chain every FULL_AUDIT_EVERY points (and the first and last), else the
        // records from the last verified one on: verifying every signature of a long log at
        // every point costs seconds in a debug build.
        let points = self.report.kill_points() + 1;
        let full = points % FULL_AUDIT_EVERY == 1 || points == self.total_points;
        let log = if full {
            let log = checks::export_and_verify(&self.admin(via), &self.audit_file())?;
            checks::check_prefix(&self.audit, &log)?;
            log
        } else {
            let from = self.audit.last().and_then(|r| r["seq"].as_u64());
            let suffix =
                checks::export_and_verify_from(&self.admin(via), &self.audit_file(), from)?;
            checks::extend_log(&self.audit, suffix)?
        };
        if let Some(event) = op.audit_event() {
            let key_id = match op {
                Op::Key { key_id, .. } => Some(key_id.as_str()),
                _ => None,
            };
            let n = checks::count_events(&log[self.audit.len()..], event, key_id);
            if n != usize::from(applied) {
                bail!(
                    "{n} new `{event}` audit records for {key_id:?}, but the change is {}",
                    if applied { "applied" } else { "not applied" }
                );
            }
        }
        self.audit = log;
        self.check_crypto_everywhere()
    }

    /// The keys as node `via` shows them; in a cluster, once every member shows the same
    /// (a member may not have applied the last committed entry yet).
    fn settled_keys(&self, via: usize) -> Result<BTreeMap<String, KeyState>> {
        if self.app.nodes.len() == 1 {
            return checks::observed_keys(&self.admin(via));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all: Vec<BTreeMap<String, KeyState>> = (0..self.app.nodes.len())
                .map(|i| checks::observed_keys(&self.admin(i)))
                .collect::<Result<_>>()?;
            if all.windows(2).all(|w| w[0] == w[1]) {
                return Ok(all[via].clone());
            }
            if Instant::now() > deadline {
                bail!("the members never agreed on the keys: {all:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_keys(&self, i: usize) -> Result<()> {
        // A restarted or following member of a cluster may apply a moment later.
        let wait = if self.app.nodes.len() == 1 { 0 } else { 10 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        loop {
            let seen = checks::observed_keys(&self.admin(i))?;
            let diff = checks::key_diff(&self.model.keys, &seen);
            if diff.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {i}: keys differ from the model: {diff:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_crypto_everywhere(&mut self) -> Result<()> {
        for i in 0..self.app.nodes.len() {
            let endpoint = self.app.nodes[i].endpoint();
            let pki = self.app.pki.clone();
            let (model, rng) = (&mut self.model, &mut self.rng);
            self.rt
                .block_on(checks::check_crypto(&endpoint, &pki, model, rng))
                .with_context(|| format!("crypto on node {i}"))?;
        }
        self.model.trim_sealed(3);
        Ok(())
    }
}

/// `status` once the restarted node answers.
fn wait_status(admin: &Admin) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match admin.json(&["status"], "") {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits until key management answers after an unseal.
fn wait_serving(admin: &Admin) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match admin.run(&["key", "list", "--output", "json"], "")? {
            r if r.code == 0 => return Ok(()),
            r if Instant::now() > deadline => bail!("key list after unseal: {}", note(&r)),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
