//! The `Vhsm` facade: state, opening, status and the seal state machine (init, unseal, seal,
//! restore). Rekey lives in `rekey.rs`, key management in `keyops.rs`, the crypto hot path in
//! `cryptoops.rs`.
//!
//! Locking: one `Mutex<Inner>` serializes every state change (ceremonies, key management,
//! audit appends); the crypto hot path takes only a read lock on `hot` (the key cache) and does
//! no storage I/O. Lock order is always `inner` then `hot`. Every state change is committed
//! with `Durability::Flushed` together with its audit record in one batch, and memory is
//! changed only after the commit succeeded. A commit that fails with an I/O error or
//! corruption is fail-stop: the facade seals itself and refuses everything until the process
//! restarts from what is on disk ([`Vhsm::storage_failure`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use ed25519_dalek::SigningKey;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::audit_log::{self, details, AuditHead, Sealer, Tail};
use crate::backup::{self, Backup};
use crate::ceremony;
use crate::crypto::{ct_eq, SecretKey, KEY_LEN};
use crate::env::{Clock, RandomSource};
use crate::error::Error;
use crate::header::{Header, HEADER_KEY};
use crate::keyring::Keyring;
use crate::keys::{self, CachedKey, KeyMap};
use crate::limiter::Limiter;
use crate::selftest;
use crate::shamir::{self, Share};
use crate::share::ShareFile;
use crate::storage::{Durability, MemoryStorage, Storage, StorageError, Tree, WriteBatch};
use crate::types::{
    AnchorMismatch, InitOutcome, InitRequest, Options, SealState, Status, UnsealMode,
    UnsealProgress,
};

/// One audit event to append: its name and details.
pub(crate) type AuditEvent<'a> = (&'a str, std::collections::BTreeMap<String, String>);

/// Meta-tree key of the sealed audit signing (Ed25519) seed.
pub(crate) const SIGNING_SEED_KEY: &[u8] = b"audit-signing-seed";
/// Most audit records returned by one `audit_records` call.
pub const MAX_AUDIT_PAGE: usize = 10_000;

/// Secrets held only while unsealed (all zeroized on drop).
pub(crate) struct Unsealed {
    pub(crate) root: SecretKey,
    pub(crate) keyring: Keyring,
    pub(crate) signer: SigningKey,
}

impl Unsealed {
    /// Signs audit records and moves the anchor.
    pub(crate) fn sealer<'a>(&'a self, rng: &'a dyn RandomSource) -> Sealer<'a> {
        Sealer {
            key: &self.signer,
            ring: &self.keyring,
            rng,
        }
    }
}

/// An import key waiting to be used.
pub(crate) struct PendingImport {
    pub(crate) key: SecretKey,
    pub(crate) expires_at_ms: u64,
}

/// Everything behind the state-change mutex.
pub(crate) struct Inner {
    pub(crate) header: Option<Header>,
    pub(crate) staged: Option<Backup>,
    pub(crate) audit_head: AuditHead,
    pub(crate) unsealed: Option<Unsealed>,
    pub(crate) partial: Vec<Share>,
    pub(crate) partial_last_ms: u64,
    pub(crate) limiter: Limiter,
    pub(crate) selftest_ok: bool,
    pub(crate) imports: HashMap<String, PendingImport>,
}

/// What the crypto hot path sees.
pub(crate) enum Hot {
    Uninitialized,
    Sealed,
    Unsealed(KeyMap),
}

/// The vhsm store. `Send + Sync`; share it as `Arc<Vhsm>`.
pub struct Vhsm {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) rng: Arc<dyn RandomSource>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: Options,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) hot: RwLock<Hot>,
    /// Set once by a failed commit (fail-stop): why. Every later `lock` refuses.
    pub(crate) stopped: OnceLock<String>,
}

impl fmt::Debug for Vhsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vhsm")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

fn poisoned() -> Error {
    Error::Internal("internal lock poisoned".into())
}

fn random_key(rng: &dyn RandomSource) -> Result<SecretKey, Error> {
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(raw.as_mut_slice())?;
    Ok(SecretKey::from_bytes(*raw))
}

/// Loads the keyring, the audit signing key and every key with the recovered root key.
pub(crate) fn load_secrets(
    storage: &dyn Storage,
    root: &SecretKey,
    header: &Header,
) -> Result<(Keyring, SigningKey, KeyMap), Error> {
    let ring = Keyring::load(root, storage)?;
    let sealed_seed = storage
        .get(Tree::Meta, SIGNING_SEED_KEY)?
        .ok_or_else(|| Error::Corruption("audit signing key record is missing".into()))?;
    let seed = ring.open(Tree::Meta, SIGNING_SEED_KEY, &sealed_seed)?;
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        seed.as_slice()
            .try_into()
            .map_err(|_| Error::Corruption("audit signing key has a wrong length".into()))?,
    );
    let signer = SigningKey::from_bytes(&seed);
    if !ct_eq(signer.verifying_key().as_bytes(), &header.audit_public_key) {
        return Err(Error::Corruption(
            "audit signing key does not match the header".into(),
        ));
    }
    let keys = keys::load_all(storage, &ring)?;
    Ok((ring, signer, keys))
}

impl Vhsm {
    /// Opens the store on `storage`: comes up Uninitialized (no header) or Sealed.
    ///
    /// Fails with `WeakKdf` if the options or the stored header use KDF parameters below the
    /// recommended ones without `allow_weak_kdf`, and with `Corruption` if the header is damaged.
    pub fn open(
        storage: Arc<dyn Storage>,
        rng: Arc<dyn RandomSource>,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Result<Vhsm, Error> {
        options.validate()?;
        let header = match storage.get(Tree::Header, HEADER_KEY)? {
            Some(bytes) => Some(Header::parse(&bytes)?),
            None => None,
        };
        let hot = match &header {
            Some(h) => {
                if !options.allow_weak_kdf && !h.kdf.is_at_least_recommended() {
                    return Err(Error::WeakKdf);
                }
                Hot::Sealed
            }
            None => {
                let has_data = [Tree::Keyring, Tree::Keys, Tree::Meta, Tree::Audit]
                    .into_iter()
                    .map(|t| storage.scan_prefix(t, b"").map(|v| !v.is_empty()))
                    .collect::<Result<Vec<_>, _>>()?
                    .contains(&true);
                if has_data {
                    return Err(Error::Corruption("store has records but no header".into()));
                }
                Hot::Uninitialized
            }
        };
        let audit_head = audit_log::load_head(&*storage)?;
        Ok(Vhsm {
            storage,
            rng,
            clock,
            options,
            inner: Mutex::new(Inner {
                header,
                staged: None,
                audit_head,
                unsealed: None,
                partial: Vec::new(),
                partial_last_ms: 0,
                limiter: Limiter::default(),
                selftest_ok: false,
                imports: HashMap::new(),
            }),
            stopped: OnceLock::new(),
            hot: RwLock::new(hot),
        })
    }

    /// The state-change lock; refused for good once a commit failed (fail-stop).
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>, Error> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        if let Some(why) = self.stopped.get() {
            return Err(Error::StorageFailed(why.clone()));
        }
        Ok(inner)
    }

    /// Why the facade stopped, once a commit failed with an I/O error or corruption: the
    /// process must restart (vhsmd exits) and unseal from what is on disk. Never waits for a
    /// lock.
    pub fn storage_failure(&self) -> Option<String> {
        self.stopped.get().cloned()
    }

    /// Commits `batch` flushed. An I/O error or corruption may have left the batch applied (a
    /// failed fsync) or half-known: the facade stops here (fail-stop) rather than go on with
    /// state that may differ from the disk. Other errors (conflict, no quorum) change nothing.
    pub(crate) fn commit_flushed(&self, inner: &mut Inner, batch: WriteBatch) -> Result<(), Error> {
        match self.storage.commit(batch, Durability::Flushed) {
            Ok(()) => Ok(()),
            Err(e @ (StorageError::Io(_) | StorageError::Corrupt(_))) => {
                let why = e.to_string();
                let _ = self.stopped.set(why.clone());
                inner.unsealed = None;
                inner.imports.clear();
                inner.partial.clear();
                inner.staged = None;
                if inner.header.is_some() {
                    self.set_hot(Hot::Sealed);
                }
                Err(Error::StorageFailed(why))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn set_hot(&self, hot: Hot) {
        match self.hot.write() {
            Ok(mut g) => *g = hot,
            Err(p) => *p.into_inner() = hot,
        }
    }

    /// Replaces one key in the hot cache (no-op unless unsealed).
    pub(crate) fn put_hot(&self, key: Arc<CachedKey>) {
        let mut guard = match self.hot.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Hot::Unsealed(map) = &mut *guard {
            map.insert(key.info.key_id.clone(), key);
        }
    }

    /// Appends an audit record to `batch`, commits it flushed and only then moves the head.
    /// Returns the record's seq.
    pub(crate) fn commit_audited(
        &self,
        inner: &mut Inner,
        batch: WriteBatch,
        event: &str,
        actor: &str,
        details: std::collections::BTreeMap<String, String>,
    ) -> Result<u64, Error> {
        self.commit_audited_events(inner, batch, vec![(event, details)], actor)
    }

    /// [`Vhsm::commit_audited`] with several audit records (in order) in the same batch.
    pub(crate) fn commit_audited_events(
        &self,
        inner: &mut Inner,
        mut batch: WriteBatch,
        events: Vec<(&str, std::collections::BTreeMap<String, String>)>,
        actor: &str,
    ) -> Result<u64, Error> {
        let sealer = inner.unsealed.as_ref().map(|u| u.sealer(&*self.rng));
        let now = self.clock.now_ms();
        let mut head = inner.audit_head.clone();
        for (event, details) in events {
            head = audit_log::append(
                &mut batch,
                &head,
                now,
                event,
                actor,
                details,
                sealer.as_ref(),
            )?;
        }
        self.commit_flushed(inner, batch)?;
        let seq = head.seq;
        inner.audit_head = head;
        Ok(seq)
    }

    /// The unsealed secrets, or Uninitialized/Sealed.
    pub(crate) fn require_unsealed(inner: &Inner) -> Result<&Unsealed, Error> {
        match (&inner.header, &inner.unsealed) {
            (None, _) => Err(Error::Uninitialized),
            (Some(_), None) => Err(Error::Sealed),
            (Some(_), Some(u)) => Ok(u),
        }
    }

    fn partial_progress(&self, inner: &Inner) -> u8 {
        let expired = self.clock.now_ms().saturating_sub(inner.partial_last_ms)
            > self.options.partial_unseal_timeout_ms;
        if expired {
            0
        } else {
            u8::try_from(inner.partial.len()).unwrap_or(u8::MAX)
        }
    }

    /// The seal state and the number of keys, from the key cache only: unlike [`Vhsm::status`]
    /// this never waits for the state-change lock (held for a whole Argon2id ceremony, a rekey
    /// or a backup), so health probes and periodic tasks on an async runtime cannot stall.
    pub fn health(&self) -> (SealState, u64) {
        let guard = match self.hot.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*guard {
            Hot::Uninitialized => (SealState::Uninitialized, 0),
            Hot::Sealed => (SealState::Sealed, 0),
            Hot::Unsealed(m) => (SealState::Unsealed, m.len() as u64),
        }
    }

    /// A snapshot of the seal state, unseal progress, key count and audit head. Waits for the
    /// state-change lock: call it off the async workers (see [`Vhsm::health`]).
    pub fn status(&self) -> Status {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key_count = match self.hot.read() {
            Ok(g) => match &*g {
                Hot::Unsealed(m) => m.len() as u64,
                _ => 0,
            },
            Err(_) => 0,
        };
        let shown = inner
            .header
            .as_ref()
            .or(inner.staged.as_ref().map(|b| &b.header));
        let seal_state = match (&inner.header, &inner.unsealed) {
            (None, _) => SealState::Uninitialized,
            (Some(_), None) => SealState::Sealed,
            (Some(_), Some(_)) => SealState::Unsealed,
        };
        // Best effort: a status answer never fails; an unreadable record shows as none.
        let staging = if inner.header.is_some() {
            self.staging_summary().ok().flatten()
        } else {
            None
        };
        Status {
            seal_state,
            unseal_mode: shown.map(|h| h.mode),
            threshold: shown.map_or(0, |h| h.threshold),
            share_count: shown.map_or(0, |h| h.count),
            unseal_progress: if seal_state == SealState::Unsealed {
                0
            } else {
                self.partial_progress(&inner)
            },
            key_count,
            store_id: shown.map(Header::store_id_hex).unwrap_or_default(),
            audit_head_seq: inner.audit_head.seq,
            audit_head_hash: if inner.audit_head.seq == 0 {
                String::new()
            } else {
                inner.audit_head.hash.clone()
            },
            restore_pending: inner.staged.is_some(),
            rekey_staging_id: staging.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
            rekey_staging_expires_at_ms: staging.map_or(0, |s| s.1),
        }
    }

    /// Initializes an empty store; leaves it Sealed. Quorum mode returns the encrypted shares.
    /// Runs the power-on self-tests first (`SelfTestFailed` leaves the store uninitialized).
    pub fn initialize(&self, req: InitRequest, actor: &str) -> Result<InitOutcome, Error> {
        let mut inner = self.lock()?;
        if inner.header.is_some() || inner.staged.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        ceremony::validate(&req)?;
        // The primitives that are about to make the root key must pass their self-tests too.
        self.ensure_selftest(&mut inner, actor)?;
        let rng = &*self.rng;
        let mut store_id = [0u8; 16];
        rng.fill(&mut store_id)?;
        let root = random_key(rng)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill(seed.as_mut_slice())?;
        let signer = SigningKey::from_bytes(&seed);
        let public = signer.verifying_key().to_bytes();
        let (ring, mut batch) = Keyring::generate(&root, rng)?;
        let cfg = ceremony::new_config(&req, &root, store_id, 0, &self.options.kdf, rng)?;
        let mut d = cfg.audit_details();
        let mut header = Header {
            store_id,
            epoch: 0,
            mode: cfg.mode,
            threshold: cfg.threshold,
            count: cfg.count,
            kdf: self.options.kdf,
            salt: cfg.salt,
            wrapped_root: cfg.wrapped_root,
            audit_public_key: public,
            mac: [0; 32],
        };
        header.sign(&root);
        batch.put(Tree::Header, HEADER_KEY.to_vec(), header.encode());
        batch.put(
            Tree::Meta,
            SIGNING_SEED_KEY.to_vec(),
            ring.seal(Tree::Meta, SIGNING_SEED_KEY, seed.as_slice(), rng)?,
        );
        let fingerprint = vhsm_audit::public_key_fingerprint(&public);
        d.insert("store_id".to_string(), header.store_id_hex());
        d.insert("audit_key_fingerprint".to_string(), fingerprint.clone());
        d.insert(audit_log::ANCHORED_DETAIL.to_string(), "1".to_string());
        let sealer = Sealer {
            key: &signer,
            ring: &ring,
            rng,
        };
        let head = audit_log::append(
            &mut batch,
            &inner.audit_head,
            self.clock.now_ms(),
            "init",
            actor,
            d,
            Some(&sealer),
        )?;
        self.commit_flushed(&mut inner, batch)?;
        inner.audit_head = head;
        let outcome = InitOutcome {
            store_id: header.store_id_hex(),
            shares: cfg.shares,
            audit_key_fingerprint: fingerprint,
        };
        inner.header = Some(header);
        self.set_hot(Hot::Sealed);
        Ok(outcome)
    }

    /// The header unseal material is checked against: the store's, or a staged backup's.
    fn unseal_header(inner: &Inner) -> Result<Header, Error> {
        if inner.unsealed.is_some() {
            return Err(Error::AlreadyUnsealed);
        }
        inner
            .header
            .as_ref()
            .or(inner.staged.as_ref().map(|b| &b.header))
            .cloned()
            .ok_or(Error::Uninitialized)
    }

    pub(crate) fn ensure_selftest(&self, inner: &mut Inner, actor: &str) -> Result<(), Error> {
        if inner.selftest_ok {
            return Ok(());
        }
        let result = if self.options.inject_selftest_failure {
            selftest::run_with_corruption(selftest::Primitive::AesGcm)
        } else {
            selftest::run()
        };
        match result {
            Ok(()) => {
                inner.selftest_ok = true;
                Ok(())
            }
            Err(e) => {
                if inner.header.is_some() {
                    let d = details([("primitive", e.primitive().name().to_string())]);
                    self.commit_audited(inner, WriteBatch::new(), "selftest.failed", actor, d)?;
                }
                Err(Error::SelfTestFailed(e.to_string()))
            }
        }
    }

    /// Refuses an attempt made before the back-off delay elapsed, and expires a stale partial
    /// unseal.
    pub(crate) fn pre_attempt(&self, inner: &mut Inner) -> Result<(), Error> {
        let now = self.clock.now_ms();
        if !inner.partial.is_empty()
            && now.saturating_sub(inner.partial_last_ms) > self.options.partial_unseal_timeout_ms
        {
            inner.partial.clear();
        }
        if let Some(wait) = inner.limiter.wait_ms(now) {
            return Err(Error::RateLimited {
                retry_after_ms: wait,
            });
        }
        Ok(())
    }

    /// Counts a failed attempt, audits it (while initialized) and returns `UnsealRejected`.
    pub(crate) fn reject(&self, inner: &mut Inner, event: &str, actor: &str) -> Error {
        let delay = inner.limiter.fail(self.clock.now_ms());
        if inner.header.is_some() {
            let d = details([("retry_after_ms", delay.to_string())]);
            if let Err(e) = self.commit_audited(inner, WriteBatch::new(), event, actor, d) {
                return e;
            }
        }
        Error::UnsealRejected {
            retry_after_ms: delay,
        }
    }

    /// Passphrase mode: unseals with the passphrase.
    pub fn unseal_with_passphrase(
        &self,
        passphrase: &SecretString,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        let mut inner = self.lock()?;
        let header = Self::unseal_header(&inner)?;
        if header.mode != UnsealMode::Passphrase {
            return Err(Error::InvalidArgument("share"));
        }
        self.pre_attempt(&mut inner)?;
        self.ensure_selftest(&mut inner, actor)?;
        let mk = ceremony::master_from_passphrase(passphrase, &header)?;
        match ceremony::unwrap_root(&mk, &header) {
            Some(root) => self.finish_unseal(&mut inner, root, Vec::new(), actor),
            None => Err(self.reject(&mut inner, "unseal.rejected", actor)),
        }
    }

    /// Parses a share and checks it belongs to `header`'s current share set.
    pub(crate) fn check_share(header: &Header, bytes: &[u8]) -> Result<ShareFile, Error> {
        let file = ShareFile::parse(bytes)?;
        if file.store_id != header.store_id {
            return Err(Error::InvalidShare(
                "the share belongs to another store".into(),
            ));
        }
        if file.epoch < header.epoch {
            return Err(Error::InvalidShare(
                "the share belongs to a replaced share set (the store was rekeyed)".into(),
            ));
        }
        if file.epoch > header.epoch {
            return Err(Error::InvalidShare(
                "the share belongs to a staged rekey that was not committed; the current shares \
                 still apply"
                    .into(),
            ));
        }
        if file.threshold != header.threshold
            || file.count != header.count
            || file.kdf != header.kdf
        {
            return Err(Error::InvalidShare(
                "the share's threshold, count or KDF parameters do not match the store".into(),
            ));
        }
        Ok(file)
    }

    /// Quorum mode: submits one encrypted share and its custodian passphrase.
    pub fn submit_share(
        &self,
        share: &[u8],
        passphrase: &SecretString,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        use secrecy::ExposeSecret;
        let mut inner = self.lock()?;
        let header = Self::unseal_header(&inner)?;
        if header.mode != UnsealMode::Shares {
            return Err(Error::InvalidArgument("share"));
        }
        self.pre_attempt(&mut inner)?;
        let file = Self::check_share(&header, share)?;
        if inner.partial.iter().any(|s| s.x == file.index) {
            return Err(Error::InvalidShare(format!(
                "share {} was already submitted",
                file.index
            )));
        }
        self.ensure_selftest(&mut inner, actor)?;
        let Some(part) = file.decrypt(passphrase.expose_secret().as_bytes())? else {
            return Err(self.reject(&mut inner, "unseal.rejected", actor));
        };
        inner.partial.push(part);
        inner.partial_last_ms = self.clock.now_ms();
        let progress = u8::try_from(inner.partial.len()).unwrap_or(u8::MAX);
        if progress < header.threshold {
            if inner.header.is_some() {
                let d = details([
                    ("index", file.index.to_string()),
                    ("progress", progress.to_string()),
                    ("threshold", header.threshold.to_string()),
                ]);
                if let Err(e) = self.commit_audited(
                    &mut inner,
                    WriteBatch::new(),
                    "unseal.share_accepted",
                    actor,
                    d,
                ) {
                    inner.partial.pop();
                    return Err(e);
                }
            }
            return Ok(UnsealProgress {
                state: SealState::Sealed,
                progress,
                threshold: header.threshold,
            });
        }
        let parts = std::mem::take(&mut inner.partial);
        let secret = shamir::combine(&parts)
            .map_err(|_| Error::Internal("share combination failed".into()))?;
        let mk = ceremony::master_from_secret(&secret)?;
        match ceremony::unwrap_root(&mk, &header) {
            Some(root) => {
                // If the unseal cannot be committed, the earlier shares stay submitted (as when
                // a non-final share's record fails), so this share can simply be resubmitted.
                let mut keep = parts;
                keep.pop();
                self.finish_unseal(&mut inner, root, keep, actor)
            }
            None => Err(self.reject(&mut inner, "unseal.rejected", actor)),
        }
    }

    /// The root key is recovered: verify, load, audit, then (only then) go Unsealed.
    /// `keep`: the partial unseal to put back if the audit record cannot be committed (a
    /// storage fault changes nothing, so the same call can be retried).
    fn finish_unseal(
        &self,
        inner: &mut Inner,
        root: SecretKey,
        keep: Vec<Share>,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        inner.partial.clear();
        if let Some(staged) = inner.staged.take() {
            return self.finish_restore(inner, staged, root, keep, actor);
        }
        let header = inner.header.clone().ok_or(Error::Uninitialized)?;
        header.verify(&root)?;
        let (keyring, signer, keys) = load_secrets(&*self.storage, &root, &header)?;
        let anchor = audit_log::read_anchor(&*self.storage, &keyring)?;
        let tail =
            audit_log::check_tail(&*self.storage, anchor.as_ref(), &header.audit_public_key)?;
        let (head, mut events) = self.tail_events(tail, anchor.as_ref())?;
        events.push((
            "unseal",
            details([
                ("mode", header.mode.as_str().to_string()),
                ("key_count", keys.len().to_string()),
            ]),
        ));
        let sealer = Sealer {
            key: &signer,
            ring: &keyring,
            rng: &*self.rng,
        };
        let mut batch = WriteBatch::new();
        let head = self.append_all(&mut batch, head, events, actor, &sealer)?;
        if let Err(e) = self.commit_flushed(inner, batch) {
            if self.stopped.get().is_none() {
                inner.partial = keep;
            }
            return Err(e);
        }
        inner.audit_head = head;
        inner.limiter.reset();
        inner.unsealed = Some(Unsealed {
            root,
            keyring,
            signer,
        });
        self.set_hot(Hot::Unsealed(keys));
        Ok(UnsealProgress {
            state: SealState::Unsealed,
            progress: 0,
            threshold: header.threshold,
        })
    }

    /// What the unseal records about the log it found (and the head to continue from):
    /// nothing for a tail that verifies, the anchor's creation for a store from before
    /// anchoring, and per [`Options::audit_anchor_mismatch`] a refusal or a signed alarm for
    /// one that does not verify.
    fn tail_events(
        &self,
        tail: Tail,
        anchor: Option<&AuditHead>,
    ) -> Result<(AuditHead, Vec<AuditEvent<'static>>), Error> {
        match tail {
            Tail::Verified {
                head,
                checked,
                legacy,
            } => {
                let events = if legacy {
                    let d = details([("verified_records", checked.to_string())]);
                    vec![(audit_log::ANCHOR_CREATED_EVENT, d)]
                } else {
                    Vec::new()
                };
                Ok((head, events))
            }
            Tail::Mismatch { head, problem } => match self.options.audit_anchor_mismatch {
                AnchorMismatch::Refuse => Err(Error::AuditMismatch(problem)),
                AnchorMismatch::Alarm => {
                    let d = details([
                        ("problem", problem),
                        ("anchor_seq", anchor.map_or(0, |a| a.seq).to_string()),
                        ("stored_head_seq", head.seq.to_string()),
                    ]);
                    Ok((head, vec![(audit_log::ANCHOR_MISMATCH_EVENT, d)]))
                }
            },
        }
    }

    /// Appends signed `events` after `head` to `batch`; returns the new head.
    fn append_all(
        &self,
        batch: &mut WriteBatch,
        mut head: AuditHead,
        events: Vec<(&str, std::collections::BTreeMap<String, String>)>,
        actor: &str,
        sealer: &Sealer<'_>,
    ) -> Result<AuditHead, Error> {
        let now = self.clock.now_ms();
        for (event, d) in events {
            head = audit_log::append(batch, &head, now, event, actor, d, Some(sealer))?;
        }
        Ok(head)
    }

    fn finish_restore(
        &self,
        inner: &mut Inner,
        staged: Backup,
        root: SecretKey,
        keep: Vec<Share>,
        actor: &str,
    ) -> Result<UnsealProgress, Error> {
        staged.verify(&root)?;
        staged.header.verify(&root).map_err(|_| {
            Error::InvalidBackup("the store header failed its integrity check".into())
        })?;
        // Load everything from a scratch copy first: nothing reaches the real storage unless
        // the whole backup authenticates.
        let scratch = MemoryStorage::new();
        let mut batch = WriteBatch::new();
        batch.put(
            Tree::Header,
            HEADER_KEY.to_vec(),
            staged.header_bytes.clone(),
        );
        for (t, k, v) in &staged.records {
            batch.put(*t, k.clone(), v.clone());
        }
        scratch.commit(batch.clone(), Durability::Buffered)?;
        let (keyring, signer, keys) = load_secrets(&scratch, &root, &staged.header)
            .map_err(|e| Error::InvalidBackup(format!("backup content is inconsistent: {e}")))?;
        // The backup's own log must continue its anchor: a backup edited after it was taken
        // is refused whatever the mismatch policy.
        let anchor = audit_log::read_anchor(&scratch, &keyring)?;
        let (restored_head, mut events) = match audit_log::check_tail(
            &scratch,
            anchor.as_ref(),
            &staged.header.audit_public_key,
        )? {
            Tail::Mismatch { problem, .. } => {
                return Err(Error::InvalidBackup(format!(
                    "the backup's audit log does not continue its anchor: {problem}"
                )))
            }
            verified => self.tail_events(verified, anchor.as_ref())?,
        };
        events.push((
            "restore",
            details([
                ("store_id", staged.header.store_id_hex()),
                ("key_count", keys.len().to_string()),
                ("restored_audit_head_seq", restored_head.seq.to_string()),
            ]),
        ));
        let sealer = Sealer {
            key: &signer,
            ring: &keyring,
            rng: &*self.rng,
        };
        let head = self.append_all(&mut batch, restored_head, events, actor, &sealer)?;
        if let Err(e) = self.commit_flushed(inner, batch) {
            if self.stopped.get().is_none() {
                // Nothing was written: the backup stays staged so the unseal can be retried.
                inner.staged = Some(staged);
                inner.partial = keep;
            }
            return Err(e);
        }
        inner.audit_head = head;
        inner.limiter.reset();
        inner.header = Some(staged.header.clone());
        inner.unsealed = Some(Unsealed {
            root,
            keyring,
            signer,
        });
        self.set_hot(Hot::Unsealed(keys));
        Ok(UnsealProgress {
            state: SealState::Unsealed,
            progress: 0,
            threshold: staged.header.threshold,
        })
    }

    /// Discards the shares of a partial unseal (audited when there were any; if the record
    /// cannot be written the node fails stop, which discards them too).
    pub fn reset_unseal(&self, actor: &str) -> Result<UnsealProgress, Error> {
        let mut inner = self.lock()?;
        let had = inner.partial.len();
        let shown = inner
            .header
            .as_ref()
            .or(inner.staged.as_ref().map(|b| &b.header));
        let threshold = shown.map_or(0, |h| h.threshold);
        let state = match (&inner.header, &inner.unsealed) {
            (None, _) => SealState::Uninitialized,
            (Some(_), None) => SealState::Sealed,
            (Some(_), Some(_)) => SealState::Unsealed,
        };
        if had > 0 && inner.header.is_some() {
            self.commit_audited(
                &mut inner,
                WriteBatch::new(),
                "unseal.reset",
                actor,
                details([("discarded", had.to_string())]),
            )?;
        }
        inner.partial.clear();
        Ok(UnsealProgress {
            state,
            progress: 0,
            threshold,
        })
    }

    /// Seals: the root key, keyring, key cache, import keys and signing key are dropped
    /// (zeroized). Sealing always happens; if its audit record cannot be written the error is
    /// returned after sealing. Sealing a sealed store is a no-op.
    pub fn seal(&self, actor: &str) -> Result<(), Error> {
        let mut inner = self.lock()?;
        if inner.header.is_none() {
            return Err(Error::Uninitialized);
        }
        inner.partial.clear();
        if inner.unsealed.is_none() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let sealer = inner.unsealed.as_ref().map(|u| u.sealer(&*self.rng));
        let appended = audit_log::append(
            &mut batch,
            &inner.audit_head,
            self.clock.now_ms(),
            "seal",
            actor,
            details([]),
            sealer.as_ref(),
        );
        let committed = match appended {
            Ok(head) => self.commit_flushed(&mut inner, batch).map(|()| head),
            Err(e) => Err(e),
        };
        inner.unsealed = None;
        inner.imports.clear();
        self.set_hot(Hot::Sealed);
        inner.audit_head = committed?;
        Ok(())
    }

    /// An integrity-protected backup of the whole (encrypted) store. Needs Unsealed.
    pub fn backup(&self, actor: &str) -> Result<Vec<u8>, Error> {
        let mut inner = self.lock()?;
        let root = &Self::require_unsealed(&inner)?.root;
        let header_bytes = self
            .storage
            .get(Tree::Header, HEADER_KEY)?
            .ok_or_else(|| Error::Corruption("store header is missing".into()))?;
        let mut records = Vec::new();
        for t in backup::TREES {
            for (k, v) in self.storage.scan_prefix(t, b"")? {
                records.push((t, k, v));
            }
        }
        let blob = backup::encode(root, &header_bytes, &records);
        let d = details([
            ("sha256", hex::encode(crate::crypto::sha256(&blob))),
            ("records", records.len().to_string()),
            ("audit_head_seq", inner.audit_head.seq.to_string()),
        ]);
        self.commit_audited(&mut inner, WriteBatch::new(), "backup", actor, d)?;
        Ok(blob)
    }

    /// Stages a backup on an Uninitialized store, in memory only; the next unseal (with the
    /// source store's passphrase or shares) verifies and restores it. Replaces an earlier stage.
    /// Nothing is persisted (an uninitialized store has no audit log), so `actor` is unused
    /// until the restore completes (the "restore" audit record names the unsealing actor).
    pub fn stage_restore(&self, backup: &[u8], actor: &str) -> Result<crate::types::Status, Error> {
        let _ = actor;
        {
            let mut inner = self.lock()?;
            if inner.header.is_some() {
                return Err(Error::AlreadyInitialized);
            }
            let parsed = Backup::parse(backup)?;
            if !self.options.allow_weak_kdf && !parsed.header.kdf.is_at_least_recommended() {
                return Err(Error::WeakKdf);
            }
            inner.staged = Some(parsed);
            inner.partial.clear();
        }
        Ok(self.status())
    }

    /// Audit records with `seq >= from_seq`, at most `limit` (capped at 10 000), in order.
    /// Works while sealed.
    pub fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<vhsm_audit::AuditRecord>, Error> {
        audit_log::read(&*self.storage, from_seq, limit.min(MAX_AUDIT_PAGE))
    }

    /// The appliance's Ed25519 audit verification key (from the header). Works while sealed,
    /// and after a storage failure.
    pub fn audit_public_key(&self) -> Result<[u8; 32], Error> {
        let inner = self.inner.lock().map_err(|_| poisoned())?;
        inner
            .header
            .as_ref()
            .map(|h| h.audit_public_key)
            .ok_or(Error::Uninitialized)
    }

    /// Appends an `access.denied` audit record (the daemon calls it on PERMISSION_DENIED).
    /// On an uninitialized store there is no log yet and nothing is recorded.
    pub fn record_denied(&self, who: &str, operation: &str) -> Result<(), Error> {
        self.record_denied_with_suppressed(who, operation, 0)
    }

    /// `record_denied`, noting how many identical denials (same identity and operation) the
    /// caller did not record since the last record, so a denial flood stays bounded in the
    /// log yet fully counted.
    pub fn record_denied_with_suppressed(
        &self,
        who: &str,
        operation: &str,
        suppressed: u64,
    ) -> Result<(), Error> {
        let mut inner = self.lock()?;
        if inner.header.is_none() {
            return Ok(());
        }
        let mut d = details([("operation", operation.to_string())]);
        if suppressed > 0 {
            d.insert("suppressed_since_last".to_string(), suppressed.to_string());
        }
        self.commit_audited(&mut inner, WriteBatch::new(), "access.denied", who, d)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::{OsRandom, SystemClock};
    use crate::types::NewKey;
    use secrecy::SecretString;
    use std::sync::mpsc;
    use std::time::Duration;

    fn store() -> Arc<Vhsm> {
        Arc::new(
            Vhsm::open(
                Arc::new(MemoryStorage::new()),
                Arc::new(OsRandom),
                Arc::new(SystemClock),
                Options::insecure_for_tests(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn health_follows_the_seal_state() {
        let v = store();
        assert_eq!(v.health(), (SealState::Uninitialized, 0));
        let pw = || SecretString::from("correct horse battery staple".to_string());
        v.initialize(InitRequest::Passphrase(pw()), "admin")
            .unwrap();
        assert_eq!(v.health(), (SealState::Sealed, 0));
        v.unseal_with_passphrase(&pw(), "admin").unwrap();
        let spec = NewKey {
            id: "k".into(),
            usage: crate::types::UsageSet::ENCRYPT_DECRYPT,
            labels: std::collections::BTreeMap::new(),
        };
        v.create_key(spec, "admin").unwrap();
        assert_eq!(v.health(), (SealState::Unsealed, 1));
        assert_eq!(v.health().0, v.status().seal_state);
        v.seal("admin").unwrap();
        assert_eq!(v.health(), (SealState::Sealed, 0));
    }

    #[test]
    fn health_does_not_wait_for_the_state_lock() {
        let v = store();
        // A ceremony in progress holds the state-change lock (here: held by this thread).
        let held = v.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        let probe = Arc::clone(&v);
        std::thread::spawn(move || {
            let _ = tx.send(probe.health());
        });
        // Deadlock detector, not a timing assertion: health() must answer while the lock is held.
        let answer = rx.recv_timeout(Duration::from_secs(10));
        drop(held);
        assert_eq!(answer, Ok((SealState::Uninitialized, 0)));
    }
}
