//! The operations the driver cuts with a kill, and choosing the next one from the model.

use std::path::Path;

use super::model::{KeyState, Model, UnsealConfig, DISABLED, ENABLED, PENDING};
use super::rng::Rng;

/// Kinds of operation, for the per-operation tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Create,
    Import,
    Rotate,
    MinDecryptionVersion,
    Disable,
    Enable,
    ScheduleDeletion,
    CancelDeletion,
    Encrypt,
    Rekey,
    Backup,
    Restore,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Create => "key create",
            OpKind::Import => "key import",
            OpKind::Rotate => "key rotate",
            OpKind::MinDecryptionVersion => "key min-decryption-version",
            OpKind::Disable => "key disable",
            OpKind::Enable => "key enable",
            OpKind::ScheduleDeletion => "key schedule-deletion",
            OpKind::CancelDeletion => "key cancel-deletion",
            OpKind::Encrypt => "encrypt (gRPC)",
            OpKind::Rekey => "rekey (stage + commit)",
            OpKind::Backup => "backup create",
            OpKind::Restore => "backup restore",
        }
    }

    /// A first guess of how long the operation takes in a debug build (CLI start included);
    /// the driver refines it from acknowledged runs.
    pub fn initial_estimate_ms(self) -> u64 {
        match self {
            OpKind::Rekey => 1500,
            OpKind::Restore => 600,
            OpKind::Import => 60,
            OpKind::Encrypt => 80,
            _ => 35,
        }
    }
}

/// One planned change: what to send and what the key looks like before and after.
#[derive(Debug, Clone)]
pub enum Op {
    /// A key-management command on `key_id`: `before` → `after` (`None` = absent).
    Key {
        kind: OpKind,
        key_id: String,
        args: Vec<String>,
        before: Option<KeyState>,
        after: Option<KeyState>,
    },
    Encrypt {
        key_id: String,
        version: u32,
    },
    Rekey {
        new: UnsealConfig,
    },
    Backup,
    Restore,
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Key { kind, .. } => *kind,
            Op::Encrypt { .. } => OpKind::Encrypt,
            Op::Rekey { .. } => OpKind::Rekey,
            Op::Backup => OpKind::Backup,
            Op::Restore => OpKind::Restore,
        }
    }

    /// The audit event a key change writes (in the same batch as the change).
    pub fn audit_event(&self) -> Option<&'static str> {
        match self.kind() {
            OpKind::Create => Some("key.create"),
            OpKind::Import => Some("key.import"),
            OpKind::Rotate => Some("key.rotate"),
            OpKind::MinDecryptionVersion => Some("key.min_decryption_version"),
            OpKind::Disable => Some("key.disable"),
            OpKind::Enable => Some("key.enable"),
            OpKind::ScheduleDeletion => Some("key.schedule_deletion"),
            OpKind::CancelDeletion => Some("key.cancel_deletion"),
            OpKind::Rekey => Some("rekey.committed"),
            OpKind::Encrypt | OpKind::Backup | OpKind::Restore => None,
        }
    }
}

/// What the planner may do.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_keys: usize,
    pub max_versions: u32,
    /// Backup and restore (single node only: a restore needs an empty node).
    pub restore: bool,
    pub rekey: bool,
}

/// Weighted candidates; every candidate is valid in the current model.
pub fn plan(
    model: &Model,
    rng: &mut Rng,
    limits: &Limits,
    serial: u64,
    work: &Path,
    have_backup: bool,
) -> Op {
    let ids_where = |f: &dyn Fn(&KeyState) -> bool| -> Vec<String> {
        model
            .keys
            .iter()
            .filter(|(_, k)| f(k))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let live = ids_where(&|k| k.live() && k.current_version < limits.max_versions);
    let enabled = ids_where(&|k| k.state == ENABLED);
    let disabled = ids_where(&|k| k.state == DISABLED);
    let pending = ids_where(&|k| k.state == PENDING);
    let live_any = ids_where(&|k| k.live());
    let rotated = ids_where(&|k| k.live() && k.current_version > 1);
    let room = model.keys.len() < limits.max_keys;

    let mut candidates: Vec<(OpKind, u64)> = vec![(OpKind::Encrypt, 2)];
    if room {
        candidates.push((OpKind::Create, 3));
        candidates.push((OpKind::Import, 2));
    }
    for (kind, ids, w) in [
        (OpKind::Rotate, &live, 3),
        (OpKind::MinDecryptionVersion, &rotated, 1),
        (OpKind::Disable, &enabled, 2),
        (OpKind::Enable, &disabled, 2),
        (OpKind::ScheduleDeletion, &live_any, 1),
        (OpKind::CancelDeletion, &pending, 2),
    ] {
        if !ids.is_empty() {
            candidates.push((kind, w));
        }
    }
    if enabled.is_empty() {
        candidates.retain(|(k, _)| *k != OpKind::Encrypt);
    }
    if limits.rekey {
        candidates.push((OpKind::Rekey, 2));
    }
    if limits.restore {
        candidates.push((OpKind::Backup, 1));
        if have_backup {
            candidates.push((OpKind::Restore, 1));
        }
    }
    let total: u64 = candidates.iter().map(|(_, w)| w).sum();
    let mut pick = rng.below(total);
    let mut kind = OpKind::Encrypt;
    for (k, w) in &candidates {
        if pick < *w {
            kind = *k;
            break;
        }
        pick -= w;
    }
    let choose = |ids: &[String], rng: &mut Rng| ids[rng.index(ids.len())].clone();
    let key_op = |kind: OpKind, id: String, args: Vec<String>, after: Option<KeyState>| Op::Key {
        kind,
        before: model.keys.get(&id).cloned(),
        key_id: id,
        args,
        after,
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match kind {
        OpKind::Create => {
            let id = format!("k{serial}");
            let args = s(&["key", "create", &id, "--usage", "encrypt,decrypt"]);
            key_op(kind, id, args, Some(KeyState::new(false)))
        }
        OpKind::Import => {
            let id = format!("imp{serial}");
            // The driver adds --import-key-id and --wrapped after `key import-key`.
            let args = s(&["key", "import", &id, "--usage", "encrypt,decrypt"]);
            key_op(kind, id, args, Some(KeyState::new(true)))
        }
        OpKind::Rotate => {
            let id = choose(&live, rng);
            let mut after = model.keys[&id].clone();
            after.current_version += 1;
            key_op(kind, id.clone(), s(&["key", "rotate", &id]), Some(after))
        }
        OpKind::MinDecryptionVersion => {
            let id = choose(&rotated, rng);
            let mut after = model.keys[&id].clone();
            let mut v = 1 + u32::try_from(rng.below(u64::from(after.current_version))).unwrap_or(0);
            if v == after.min_decryption_version {
                // A no-op writes nothing: always change it.
                v = if v == after.current_version { 1 } else { v + 1 };
            }
            after.min_decryption_version = v;
            let args = s(&["key", "min-decryption-version", &id, &v.to_string()]);
            key_op(kind, id, args, Some(after))
        }
        OpKind::Disable | OpKind::Enable => {
            let (ids, verb, state) = if kind == OpKind::Disable {
                (&enabled, "disable", DISABLED)
            } else {
                (&disabled, "enable", ENABLED)
            };
            let id = choose(ids, rng);
            let mut after = model.keys[&id].clone();
            after.state = state;
            key_op(kind, id.clone(), s(&["key", verb, &id]), Some(after))
        }
        OpKind::ScheduleDeletion => {
            let id = choose(&live_any, rng);
            let mut after = model.keys[&id].clone();
            after.state = PENDING;
            let days = (7 + rng.below(24)).to_string();
            let args = s(&["key", "schedule-deletion", &id, "--days", &days]);
            key_op(kind, id, args, Some(after))
        }
        OpKind::CancelDeletion => {
            let id = choose(&pending, rng);
            let mut after = model.keys[&id].clone();
            after.state = DISABLED;
            key_op(
                kind,
                id.clone(),
                s(&["key", "cancel-deletion", &id]),
                Some(after),
            )
        }
        OpKind::Encrypt => {
            let id = choose(&enabled, rng);
            Op::Encrypt {
                version: model.keys[&id].current_version,
                key_id: id,
            }
        }
        OpKind::Rekey => Op::Rekey {
            new: new_config(model, rng, serial, work),
        },
        OpKind::Backup => Op::Backup,
        OpKind::Restore => Op::Restore,
    }
}

/// The configuration a rekey moves to: mostly the other mode, sometimes the same one again.
fn new_config(model: &Model, rng: &mut Rng, serial: u64, work: &Path) -> UnsealConfig {
    let to_shares = match model.unseal {
        UnsealConfig::Passphrase(_) => rng.chance(70),
        UnsealConfig::Shares { .. } => rng.chance(30),
    };
    if to_shares {
        let n = 2 + rng.index(2); // 2 or 3 custodians
        let threshold = 1 + rng.index(n.min(2)) + usize::from(n == 3); // 1..=n, at most 2 Argon2 per unseal
        UnsealConfig::Shares {
            dir: work.join(format!("shares-{serial}")),
            passphrases: (1..=n)
                .map(|k| format!("custodian {k} of rekey {serial}"))
                .collect(),
            threshold: threshold.min(n),
        }
    } else {
        UnsealConfig::Passphrase(format!("appliance passphrase after rekey {serial}"))
    }
}
