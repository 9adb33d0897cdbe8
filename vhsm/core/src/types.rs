//! The public request/response types of the [`crate::Vhsm`] facade (no behaviour beyond parsing).

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::crypto::KdfParams;
use crate::error::Error;

/// Seal state of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealState {
    /// No header: `initialize` or `stage_restore` first.
    Uninitialized,
    /// Initialized; no key is in memory.
    Sealed,
    /// Root key and keyring in memory; keys can be used.
    Unsealed,
}

/// How the master key is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsealMode {
    /// One passphrase (Argon2id).
    Passphrase,
    /// M-of-N custodian shares.
    Shares,
}

impl UnsealMode {
    /// `"passphrase"` or `"shares"` (the `StatusResponse.unseal_mode` strings).
    pub fn as_str(self) -> &'static str {
        match self {
            UnsealMode::Passphrase => "passphrase",
            UnsealMode::Shares => "shares",
        }
    }
}

/// Snapshot of the store's state (mirrors `vhsm.v1.StatusResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Seal state.
    pub seal_state: SealState,
    /// `None` while uninitialized (unless a restore is staged).
    pub unseal_mode: Option<UnsealMode>,
    /// Shares needed (M); 1 in passphrase mode, 0 when uninitialized.
    pub threshold: u8,
    /// Shares issued (N); 1 in passphrase mode, 0 when uninitialized.
    pub share_count: u8,
    /// Shares accepted so far in a partial unseal.
    pub unseal_progress: u8,
    /// Number of keys (including destroyed tombstones); 0 while sealed.
    pub key_count: u64,
    /// Hex store id; empty when uninitialized.
    pub store_id: String,
    /// Sequence number of the newest audit record (0 when the log is empty).
    pub audit_head_seq: u64,
    /// Hex SHA-256 of the newest audit record; empty when the log is empty.
    pub audit_head_hash: String,
    /// True while a staged backup waits for unseal material.
    pub restore_pending: bool,
    /// Hex id of a staged (not yet committed) rekey; empty when none is staged.
    pub rekey_staging_id: String,
    /// When that staging expires (ms since the Unix epoch); 0 when none is staged.
    pub rekey_staging_expires_at_ms: u64,
}

/// How to initialize (or rekey) the store.
#[derive(Debug)]
pub enum InitRequest {
    /// Passphrase mode.
    Passphrase(SecretString),
    /// M-of-N mode: one encrypted share per custodian passphrase (N = its length, 1..=16).
    Shares {
        /// M, 1..=N.
        threshold: u8,
        /// One passphrase per custodian, in share-index order.
        custodian_passphrases: Vec<SecretString>,
    },
}

/// Unseal material: authorization for a rekey (the current passphrase or shares), or the
/// proof of possession of the staged ones at `rekey_commit`. `Debug` shows no share bytes.
pub enum RekeyAuth {
    /// The current passphrase (passphrase mode).
    Passphrase(SecretString),
    /// At least M current shares, each with its custodian passphrase (quorum mode).
    Shares(Vec<(Vec<u8>, SecretString)>),
}

impl fmt::Debug for RekeyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RekeyAuth::Passphrase(_) => f.write_str("RekeyAuth::Passphrase([REDACTED])"),
            RekeyAuth::Shares(list) => write!(f, "RekeyAuth::Shares([{} REDACTED])", list.len()),
        }
    }
}

/// Result of `initialize` / `rekey`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOutcome {
    /// Hex store id.
    pub store_id: String,
    /// Quorum mode: one encrypted share per custodian, in the order given; empty otherwise.
    pub shares: Vec<EncryptedShare>,
    /// Hex SHA-256 of the audit verification (Ed25519 public) key.
    pub audit_key_fingerprint: String,
}

/// Result of `rekey_stage`: the new configuration, staged but not in force yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyStaged {
    /// Store id, the new shares (quorum mode) and the audit key fingerprint.
    pub outcome: InitOutcome,
    /// Hex id naming this staging at commit or abort.
    pub staging_id: String,
    /// When the staging expires (ms since the Unix epoch) unless committed first.
    pub expires_at_ms: u64,
    /// The staged unseal mode.
    pub unseal_mode: UnsealMode,
    /// Shares the commit must prove (M); 1 in passphrase mode.
    pub threshold: u8,
    /// Shares issued (N); 1 in passphrase mode.
    pub share_count: u8,
}

/// Result of `rekey_commit`: the configuration now in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyCommitted {
    /// Hex store id.
    pub store_id: String,
    /// The header epoch now in force (shares carry it).
    pub epoch: u32,
    /// The unseal mode now in force.
    pub unseal_mode: UnsealMode,
    /// Shares needed (M); 1 in passphrase mode.
    pub threshold: u8,
    /// Shares issued (N); 1 in passphrase mode.
    pub share_count: u8,
}

/// One custodian's encrypted share file.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// 1-based custodian index.
    pub index: u8,
    /// The share file contents (encrypted under the custodian's passphrase).
    pub bytes: Vec<u8>,
    /// Short hex fingerprint of the file, to record on paper.
    pub fingerprint: String,
}

impl fmt::Debug for EncryptedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedShare")
            .field("index", &self.index)
            .field("len", &self.bytes.len())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Where an unseal stands after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealProgress {
    /// State after the call.
    pub state: SealState,
    /// Shares accepted so far (0 once unsealed or reset).
    pub progress: u8,
    /// Shares needed (M); 1 in passphrase mode.
    pub threshold: u8,
}

/// One usage a key may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Usage {
    /// AES-GCM encrypt.
    Encrypt,
    /// AES-GCM decrypt.
    Decrypt,
    /// AES-KWP wrap.
    Wrap,
    /// AES-KWP unwrap.
    Unwrap,
}

impl Usage {
    /// Every usage.
    pub const ALL: [Usage; 4] = [Usage::Encrypt, Usage::Decrypt, Usage::Wrap, Usage::Unwrap];

    /// `"ENCRYPT"`, `"DECRYPT"`, `"WRAP"`, `"UNWRAP"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Encrypt => "ENCRYPT",
            Usage::Decrypt => "DECRYPT",
            Usage::Wrap => "WRAP",
            Usage::Unwrap => "UNWRAP",
        }
    }

    /// Parses [`Usage::as_str`] (case-insensitive).
    pub fn parse(s: &str) -> Option<Usage> {
        Usage::ALL
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(s))
    }

    fn bit(self) -> u8 {
        match self {
            Usage::Encrypt => 1,
            Usage::Decrypt => 2,
            Usage::Wrap => 4,
            Usage::Unwrap => 8,
        }
    }
}

/// A set of [`Usage`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UsageSet(u8);

impl UsageSet {
    /// No usage (a key created with it gets [`UsageSet::ENCRYPT_DECRYPT`]).
    pub const EMPTY: UsageSet = UsageSet(0);
    /// Encrypt and decrypt: the XKS default.
    pub const ENCRYPT_DECRYPT: UsageSet = UsageSet(1 | 2);
    /// Wrap and unwrap.
    pub const WRAP_UNWRAP: UsageSet = UsageSet(4 | 8);
    /// Every usage.
    pub const ALL: UsageSet = UsageSet(1 | 2 | 4 | 8);

    /// The set of the given usages.
    pub fn of(usages: &[Usage]) -> UsageSet {
        UsageSet(usages.iter().fold(0, |acc, u| acc | u.bit()))
    }

    /// True if `usage` is in the set.
    pub fn contains(self, usage: Usage) -> bool {
        self.0 & usage.bit() != 0
    }

    /// True if the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The usages in the set, in [`Usage::ALL`] order.
    pub fn to_vec(self) -> Vec<Usage> {
        Usage::ALL
            .into_iter()
            .filter(|u| self.contains(*u))
            .collect()
    }

    /// Raw bit representation (stored in key records).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From [`UsageSet::bits`]; unknown bits are refused.
    pub fn from_bits(bits: u8) -> Option<UsageSet> {
        (bits & !Self::ALL.0 == 0).then_some(UsageSet(bits))
    }
}

impl fmt::Debug for UsageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.to_vec().iter().map(|u| u.as_str()))
            .finish()
    }
}

/// Lifecycle state of a customer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses crypto (`KeyDisabled`); can be re-enabled.
    Disabled,
    /// Refuses crypto (`KeyPendingDeletion`); destroyed after `deletion_due_at_ms`.
    PendingDeletion,
    /// Material gone; the id stays reserved (`KeyDestroyed`).
    Destroyed,
}

impl KeyState {
    /// `"ENABLED"`, `"DISABLED"`, `"PENDING_DELETION"`, `"DESTROYED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "ENABLED",
            KeyState::Disabled => "DISABLED",
            KeyState::PendingDeletion => "PENDING_DELETION",
            KeyState::Destroyed => "DESTROYED",
        }
    }
}

/// Where a key's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// Generated by the store's random source.
    Generated,
    /// Imported under an import key.
    Imported,
}

impl KeyOrigin {
    /// `"generated"` or `"imported"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::Generated => "generated",
            KeyOrigin::Imported => "imported",
        }
    }
}

/// Public description of a key (mirrors `vhsm.v1.KeyInfo`). Never carries material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// `[A-Za-z0-9._-]{1,128}`.
    pub key_id: String,
    /// Always `"AES_256"`.
    pub key_spec: &'static str,
    /// Allowed usages.
    pub usage: UsageSet,
    /// Lifecycle state.
    pub state: KeyState,
    /// Newest version (encrypt/wrap use it); versions start at 1.
    pub current_version: u32,
    /// Ciphertexts under older versions are refused.
    pub min_decryption_version: u32,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Unix ms.
    pub created_at_ms: u64,
    /// While pending deletion: when the key will be destroyed (Unix ms); 0 otherwise.
    pub deletion_due_at_ms: u64,
    /// Generated or imported.
    pub origin: KeyOrigin,
    /// Audit sequence number of the record that created the key.
    pub created_by_audit_seq: u64,
    /// For an imported key: the import key its material came in under. `None` for generated
    /// keys and for keys imported before the store recorded it.
    pub imported_under: Option<ImportedUnder>,
    /// When versions 2 and later (rotations) were created, by version. Versions rotated before
    /// the store recorded it are missing.
    pub rotations: BTreeMap<u32, VersionCreated>,
}

/// The import key an imported key's material was wrapped under (its id and fingerprint, never
/// the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUnder {
    /// The id `new_import_key` returned (`import-<16 hex>`).
    pub import_key_id: String,
    /// `vhsm_audit::provenance::import_key_fingerprint` of the import key.
    pub fingerprint: [u8; 16],
}

/// When one key version was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCreated {
    /// Unix ms.
    pub created_at_ms: u64,
    /// Sequence number of the audit record of its creation (`key.rotate`).
    pub audit_seq: u64,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// `[A-Za-z0-9._-]{1,128}`, unique forever.
    pub id: String,
    /// Allowed usages; empty means ENCRYPT+DECRYPT.
    pub usage: UsageSet,
    /// Free-form labels (at most 32; keys 1..=64 bytes, values ≤ 256 bytes).
    pub labels: BTreeMap<String, String>,
}

/// Secret bytes: zeroized on drop, redacted `Debug`, no `Serialize`.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// Borrows the secret (never log it).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// A single-use AES-256 import (transport) key.
#[derive(Debug, Clone)]
pub struct ImportKey {
    /// Its id, to pass to `import_key`.
    pub id: String,
    /// The raw 32-byte key.
    pub key: SecretBytes,
    /// Unix ms after which it is refused.
    pub expires_at_ms: u64,
}

/// Result of `encrypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// Ciphertext (same length as the plaintext).
    pub ciphertext: Vec<u8>,
    /// Random 96-bit IV.
    pub iv: [u8; 12],
    /// 128-bit GCM tag.
    pub tag: [u8; 16],
    /// `[0x01][u32be key version]`; pass back unchanged to `decrypt`.
    pub metadata: Vec<u8>,
}

/// Input of `decrypt`.
#[derive(Debug, Clone, Copy)]
pub struct DecryptInput<'a> {
    /// Ciphertext.
    pub ciphertext: &'a [u8],
    /// 12 bytes.
    pub iv: &'a [u8],
    /// 16 bytes.
    pub tag: &'a [u8],
    /// The caller's AAD (as given to encrypt).
    pub aad: &'a [u8],
    /// The metadata returned by encrypt.
    pub metadata: &'a [u8],
}

/// Tunables of a [`crate::Vhsm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Argon2id parameters for new passphrase-derived keys (init, rekey, shares).
    pub kdf: KdfParams,
    /// Allow KDF parameters below [`KdfParams::RECOMMENDED`] (tests and dev mode only), both
    /// for new keys and for opening a store whose header records weak parameters.
    pub allow_weak_kdf: bool,
    /// A partial (share) unseal is discarded after this long without a new share.
    pub partial_unseal_timeout_ms: u64,
    /// Lower bound of `schedule_key_deletion`'s waiting period, in days.
    pub min_deletion_waiting_days: u32,
    /// Lifetime of an import key.
    pub import_key_ttl_ms: u64,
    /// Lifetime of a staged rekey: it must be committed within this long or it is discarded.
    pub rekey_staging_ttl_ms: u64,
    /// TEST-ONLY fault injection: when true the power-on self-tests run with a corrupted
    /// primitive, so they fail and the store refuses to unseal. Never set in production.
    pub inject_selftest_failure: bool,
    /// AES-GCM invocation limit per key version and reservation block size.
    pub gcm: crate::invocations::GcmLimits,
    /// An encrypt that finds nothing reserved reserves a block itself, on the caller's thread
    /// (a storage write). True for library use; vhsmd turns it off and reserves ahead from its
    /// dispatcher, because its encrypts run on async workers that must not wait for a write.
    pub gcm_reserve_inline: bool,
    /// What an unseal does when the audit log does not continue its sealed anchor.
    pub audit_anchor_mismatch: AnchorMismatch,
    /// Lifetime of a proposal when the proposer gives none.
    pub approval_ttl_ms: u64,
    /// Longest lifetime a proposal may ask for.
    pub approval_max_ttl_ms: u64,
    /// Most proposals pending at once (a new one is refused with `TooLarge`).
    pub approval_max_pending: usize,
}

/// What an unseal does when the stored audit log does not continue the sealed anchor (the
/// newest signed record): records were cut, rewritten or forged while the store was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnchorMismatch {
    /// Refuse to unseal (`Error::AuditMismatch`); nothing is written. The default.
    #[default]
    Refuse,
    /// Unseal anyway and record a signed `audit.anchor_mismatch` event saying what was found,
    /// so the break stays visible in the log (recovery after an investigation).
    Alarm,
}

impl AnchorMismatch {
    /// The config spelling: `refuse` or `alarm`.
    pub fn parse(s: &str) -> Option<AnchorMismatch> {
        match s {
            "refuse" => Some(AnchorMismatch::Refuse),
            "alarm" => Some(AnchorMismatch::Alarm),
            _ => None,
        }
    }
}

impl Default for Options {
    /// Production defaults: recommended KDF, 10 min partial unseal, 7 days, 1 h import keys,
    /// 15 min rekey staging,
    /// proposals valid 24 h (at most 7 days), 32 pending at once.
    fn default() -> Self {
        Options {
            kdf: KdfParams::RECOMMENDED,
            allow_weak_kdf: false,
            partial_unseal_timeout_ms: 600_000,
            min_deletion_waiting_days: 7,
            import_key_ttl_ms: 3_600_000,
            rekey_staging_ttl_ms: 900_000,
            inject_selftest_failure: false,
            gcm: crate::invocations::GcmLimits::default(),
            gcm_reserve_inline: true,
            audit_anchor_mismatch: AnchorMismatch::Refuse,
            approval_ttl_ms: 24 * 3_600_000,
            approval_max_ttl_ms: 7 * 24 * 3_600_000,
            approval_max_pending: 32,
        }
    }
}

impl Options {
    /// Options for tests: [`KdfParams::INSECURE_FAST_FOR_TESTS`] with weak KDF allowed.
    pub fn insecure_for_tests() -> Self {
        Options {
            kdf: KdfParams::INSECURE_FAST_FOR_TESTS,
            allow_weak_kdf: true,
            ..Options::default()
        }
    }

    /// Checks the options; errors name the bad field.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.allow_weak_kdf && !self.kdf.is_at_least_recommended() {
            return Err(Error::WeakKdf);
        }
        if !self.kdf.is_within_limits() {
            return Err(Error::InvalidArgument("options.kdf"));
        }
        if self.partial_unseal_timeout_ms == 0 {
            return Err(Error::InvalidArgument("options.partial_unseal_timeout_ms"));
        }
        if self.import_key_ttl_ms == 0 {
            return Err(Error::InvalidArgument("options.import_key_ttl_ms"));
        }
        if self.rekey_staging_ttl_ms == 0 {
            return Err(Error::InvalidArgument("options.rekey_staging_ttl_ms"));
        }
        if self.approval_ttl_ms == 0 || self.approval_ttl_ms > self.approval_max_ttl_ms {
            return Err(Error::InvalidArgument("options.approval_ttl_ms"));
        }
        if self.approval_max_pending == 0 {
            return Err(Error::InvalidArgument("options.approval_max_pending"));
        }
        Ok(())
    }
}

/// True if `id` matches `[A-Za-z0-9._-]{1,128}`.
pub fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn key_id_rules() {
        assert!(is_valid_key_id("a"));
        assert!(is_valid_key_id("Key_1.v-2"));
        assert!(is_valid_key_id(&"x".repeat(128)));
        assert!(!is_valid_key_id(""));
        assert!(!is_valid_key_id(&"x".repeat(129)));
        for bad in ["a b", "a/b", "é", "a\0", "a:b"] {
            assert!(!is_valid_key_id(bad), "{bad}");
        }
    }

    #[test]
    fn usage_set_bits() {
        let s = UsageSet::of(&[Usage::Encrypt, Usage::Unwrap]);
        assert!(s.contains(Usage::Encrypt) && s.contains(Usage::Unwrap));
        assert!(!s.contains(Usage::Decrypt) && !s.contains(Usage::Wrap));
        assert_eq!(UsageSet::from_bits(s.bits()), Some(s));
        assert_eq!(UsageSet::from_bits(0x10), None);
        assert_eq!(Usage::parse("wrap"), Some(Usage::Wrap));
        assert_eq!(Usage::parse("sign"), None);
        assert_eq!(format!("{s:?}"), r#"{"ENCRYPT", "UNWRAP"}"#);
    }

    #[test]
    fn options_validation_names_fields() {
        assert_eq!(Options::default().validate(), Ok(()));
        assert_eq!(Options::insecure_for_tests().validate(), Ok(()));
        let weak = Options {
            allow_weak_kdf: false,
            ..Options::insecure_for_tests()
        };
        assert_eq!(weak.validate(), Err(Error::WeakKdf));
        let o = Options {
            partial_unseal_timeout_ms: 0,
            ..Options::insecure_for_tests()
        };
        assert_eq!(
            o.validate(),
            Err(Error::InvalidArgument("options.partial_unseal_timeout_ms"))
        );
        let o = Options {
            import_key_ttl_ms: 0,
            ..Options::insecure_for_tests()
        };
        assert_eq!(
            o.validate(),
            Err(Error::InvalidArgument("options.import_key_ttl_ms"))
        );
        let o = Options {
            rekey_staging_ttl_ms: 0,
            ..Options::insecure_for_tests()
        };
        assert_eq!(
            o.validate(),
            Err(Error::InvalidArgument("options.rekey_staging_ttl_ms"))
        );
        let mut o = Options::insecure_for_tests();
        o.kdf.t_cost = 0;
        assert_eq!(o.validate(), Err(Error::InvalidArgument("options.kdf")));
        let mut o = Options::default();
        o.kdf.m_cost_kib = (1 << 20) + 1;
        assert_eq!(o.validate(), Err(Error::InvalidArgument("options.kdf")));
        let mut o = Options::default();
        o.kdf.p_cost = 17;
        assert_eq!(o.validate(), Err(Error::InvalidArgument("options.kdf")));
    }

    #[test]
    fn secret_debug_redacted() {
        let s = SecretBytes::new(Zeroizing::new(vec![0xAB; 4]));
        assert!(!format!("{s:?}").contains("171"));
        let auth = RekeyAuth::Shares(vec![(
            vec![0xEF; 4],
            SecretString::from("pw-secret".to_string()),
        )]);
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("239") && !shown.contains("pw-secret"),
            "{shown}"
        );
        let shown = format!(
            "{:?}",
            RekeyAuth::Passphrase(SecretString::from("pw-secret".to_string()))
        );
        assert!(!shown.contains("pw-secret"), "{shown}");
        let share = EncryptedShare {
            index: 1,
            bytes: vec![0xCD; 4],
            fingerprint: "ff".into(),
        };
        assert!(!format!("{share:?}").contains("205"));
    }
}
