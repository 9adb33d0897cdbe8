//! What the store must hold after every crash: the keys (state, versions, origin), the
//! configuration that unseals it, and the ciphertexts it acknowledged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::rng::Rng;

/// The part of a key a crash could tear: compared field by field with `key list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// `ENABLED`, `DISABLED` or `PENDING_DELETION`.
    pub state: &'static str,
    pub current_version: u32,
    pub min_decryption_version: u32,
    pub imported: bool,
}

pub const ENABLED: &str = "ENABLED";
pub const DISABLED: &str = "DISABLED";
pub const PENDING: &str = "PENDING_DELETION";

impl KeyState {
    /// A freshly created or imported key.
    pub fn new(imported: bool) -> Self {
        KeyState {
            state: ENABLED,
            current_version: 1,
            min_decryption_version: 1,
            imported,
        }
    }

    /// Enabled or disabled: rotate, disable, enable and schedule-deletion apply.
    pub fn live(&self) -> bool {
        self.state == ENABLED || self.state == DISABLED
    }

    /// One element of `vhsm-admin key list --output json`.
    pub fn from_json(v: &Value) -> Result<(String, KeyState)> {
        let id = v["key_id"]
            .as_str()
            .ok_or_else(|| anyhow!("key without key_id: {v}"))?;
        let state = match v["state"].as_str() {
            Some(ENABLED) => ENABLED,
            Some(DISABLED) => DISABLED,
            Some(PENDING) => PENDING,
            other => return Err(anyhow!("key {id}: unexpected state {other:?}")),
        };
        let num = |field: &str| {
            v[field]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| anyhow!("key {id}: {field} missing in {v}"))
        };
        Ok((
            id.to_string(),
            KeyState {
                state,
                current_version: num("current_version")?,
                min_decryption_version: num("min_decryption_version")?,
                imported: v["origin"].as_str() == Some("imported"),
            },
        ))
    }
}

/// Raw key material the test imported (kept to check vhsmd's ciphertexts independently).
#[derive(Clone, PartialEq, Eq)]
pub struct Material(pub [u8; 32]);

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Material([REDACTED])")
    }
}

/// An acknowledged Encrypt: must decrypt for as long as its key and version allow.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    pub version: u32,
    pub plaintext: Vec<u8>,
    pub aad: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub metadata: Vec<u8>,
}

/// What unseals the store: a passphrase, or custodians' share files and passphrases.
#[derive(Clone, PartialEq, Eq)]
pub enum UnsealConfig {
    Passphrase(String),
    Shares {
        dir: PathBuf,
        passphrases: Vec<String>,
        threshold: usize,
    },
}

impl fmt::Debug for UnsealConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnsealConfig::Passphrase(_) => f.write_str("Passphrase([REDACTED])"),
            UnsealConfig::Shares {
                dir,
                passphrases,
                threshold,
            } => write!(
                f,
                "Shares({threshold} of {} in {})",
                passphrases.len(),
                dir.display()
            ),
        }
    }
}

/// Arguments and stdin lines for one vhsm-admin invocation.
#[derive(Clone, Default)]
pub struct Invocation {
    pub args: Vec<String>,
    pub stdin: String,
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vhsm-admin {:?} (stdin redacted)", self.args)
    }
}

impl Invocation {
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}

fn line(s: &str) -> String {
    format!("{s}\n")
}

impl UnsealConfig {
    /// `passphrase` or `shares`, as `status` reports `unseal_mode`.
    pub fn mode(&self) -> &'static str {
        match self {
            UnsealConfig::Passphrase(_) => "passphrase",
            UnsealConfig::Shares { .. } => "shares",
        }
    }

    pub fn share_file(dir: &Path, k: usize, n: usize) -> PathBuf {
        dir.join(format!("share-{k}-of-{n}.vhsmshare"))
    }

    /// Whether every file this configuration needs exists (a rekey cut off before it wrote
    /// its share files cannot be in force).
    pub fn files_exist(&self) -> bool {
        match self {
            UnsealConfig::Passphrase(_) => true,
            UnsealConfig::Shares {
                dir, passphrases, ..
            } => (1..=passphrases.len())
                .all(|k| Self::share_file(dir, k, passphrases.len()).exists()),
        }
    }

    /// `flag FILE` pairs for a random quorum of shares, and their passphrases in the same order.
    fn quorum(&self, flag: &str, rng: &mut Rng) -> Invocation {
        match self {
            UnsealConfig::Passphrase(p) => Invocation {
                args: Vec::new(),
                stdin: line(p),
            },
            UnsealConfig::Shares {
                dir,
                passphrases,
                threshold,
            } => {
                let n = passphrases.len();
                let mut inv = Invocation::default();
                for i in rng.distinct(n, *threshold) {
                    inv.args.push(flag.to_string());
                    inv.args.push(
                        Self::share_file(dir, i + 1, n)
                            .to_string_lossy()
                            .into_owned(),
                    );
                    inv.stdin.push_str(&line(&passphrases[i]));
                }
                inv
            }
        }
    }

    /// `unseal` with this configuration (a random quorum of shares).
    pub fn unseal(&self, rng: &mut Rng) -> Invocation {
        let q = self.quorum("--share", rng);
        let mut args = vec!["unseal".to_string()];
        args.extend(q.args);
        Invocation {
            args,
            stdin: q.stdin,
        }
    }

    /// `backup restore --in FILE` unsealing with this (the source store's) configuration.
    pub fn restore(&self, backup: &Path, rng: &mut Rng) -> Invocation {
        let q = self.quorum("--share", rng);
        let mut args = vec![
            "backup".to_string(),
            "restore".to_string(),
            "--in".to_string(),
            backup.to_string_lossy().into_owned(),
        ];
        args.extend(q.args);
        Invocation {
            args,
            stdin: q.stdin,
        }
    }

    /// One-shot `rekey` from this configuration to `new`.
    pub fn rekey_to(&self, new: &UnsealConfig, rng: &mut Rng) -> Invocation {
        let mut args = vec!["rekey".to_string()];
        let old = match self {
            UnsealConfig::Passphrase(_) => {
                args.push("--old-passphrase".to_string());
                self.quorum("", rng)
            }
            UnsealConfig::Shares { .. } => {
                let q = self.quorum("--old-share", rng);
                args.extend(q.args.iter().cloned());
                q
            }
        };
        let mut stdin = old.stdin;
        match new {
            UnsealConfig::Passphrase(p) => {
                args.push("--new-passphrase".to_string());
                stdin.push_str(&line(p));
                stdin.push_str(&line(p));
            }
            UnsealConfig::Shares {
                dir,
                passphrases,
                threshold,
            } => {
                args.extend([
                    "--shares".to_string(),
                    passphrases.len().to_string(),
                    "--threshold".to_string(),
                    threshold.to_string(),
                    "--share-dir".to_string(),
                    dir.to_string_lossy().into_owned(),
                ]);
                for p in passphrases {
                    stdin.push_str(&line(p));
                }
            }
        }
        Invocation { args, stdin }
    }
}

/// Everything the store must show, plus what the test needs to check it.
#[derive(Debug, Clone)]
pub struct Model {
    pub keys: BTreeMap<String, KeyState>,
    pub imported: BTreeMap<String, Material>,
    pub sealed: Vec<Sealed>,
    pub unseal: UnsealConfig,
}

impl Model {
    pub fn new(unseal: UnsealConfig) -> Self {
        Model {
            keys: BTreeMap::new(),
            imported: BTreeMap::new(),
            sealed: Vec::new(),
            unseal,
        }
    }

    /// Keeps at most `per_key` acknowledged ciphertexts per key (the oldest go first, but
    /// one of each version is kept while it can decrypt).
    pub fn trim_sealed(&mut self, per_key: usize) {
        let mut kept: Vec<Sealed> = Vec::new();
        for s in self.sealed.iter().rev() {
            let same_key = kept.iter().filter(|k| k.key_id == s.key_id).count();
            let same_version = kept
                .iter()
                .any(|k| k.key_id == s.key_id && k.version == s.version);
            if same_key < per_key || !same_version {
                kept.push(s.clone());
            }
        }
        kept.reverse();
        self.sealed = kept;
    }
}
