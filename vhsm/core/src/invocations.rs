//! AES-GCM invocation limits per key version: every encryption is counted against a budget
//! reserved in advance through the (replicated) store, so a key version never exceeds
//! NIST SP 800-38D's bound for random 96-bit IVs (2^32 invocations), summed over every node.
//!
//! Tree `Keys`, record `use/<id>/<version u32be>`, sealed like the key's other records:
//! `[format u8 = 1][u64be reserved]`: the invocations reserved so far by all nodes together.
//! A node reserves a block (`GcmLimits::block`) by committing `reserved + block`; only after
//! the commit may it spend those invocations, from an in-memory budget that is never
//! persisted. A crash forfeits the unspent rest of a block (counted, never reused), so the
//! stored total is always at least the number of IVs ever drawn under the version.
//!
//! Random IVs (not the deterministic construction of §8.2.1) on purpose: restoring an older
//! backup rolls the counters back, which with counter IVs would repeat IVs; with random IVs it
//! only under-counts the invocations made after that backup (see docs/reliability.md).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::audit_log::details;
use crate::codec::{Reader, Writer};
use crate::cryptoops::{current_version_key, usable};
use crate::error::Error;
use crate::keyring::Keyring;
use crate::keys::{CachedKey, VersionKey};
use crate::storage::{Storage, Tree, WriteBatch};
use crate::types::Usage;
use crate::vhsm::{Hot, Vhsm};

const RECORD_FORMAT: u8 = 1;
/// A batch reservation's audit record names its key versions up to this many.
const AUDITED_IDS: usize = 16;

/// NIST SP 800-38D §8.3: at most 2^32 invocations per key with random 96-bit IVs.
pub const GCM_RANDOM_IV_LIMIT: u64 = 1 << 32;

/// How a key version's AES-GCM use is bounded (`[keys]` in vhsmd.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcmLimits {
    /// Invocations allowed per key version over its life, all nodes together
    /// (at most [`GCM_RANDOM_IV_LIMIT`]).
    pub limit: u64,
    /// Invocations a node reserves at a time (one replicated write each).
    pub block: u64,
    /// Reservations beyond this share of `limit` carry a warning (percent).
    pub warn_percent: u8,
}

impl Default for GcmLimits {
    /// The NIST bound, blocks of 2^20 (a crash forfeits at most 0.025 % of the limit), a
    /// warning from half the limit on.
    fn default() -> Self {
        GcmLimits {
            limit: GCM_RANDOM_IV_LIMIT,
            block: 1 << 20,
            warn_percent: 50,
        }
    }
}

impl GcmLimits {
    /// Checks the limits; the error names the offending setting.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.limit == 0 || self.limit > GCM_RANDOM_IV_LIMIT {
            return Err("gcm_invocation_limit must be between 1 and 4294967296 (2^32)");
        }
        if self.block == 0 || self.block > self.limit {
            return Err("gcm_reservation_block must be between 1 and gcm_invocation_limit");
        }
        if self.warn_percent == 0 || self.warn_percent > 99 {
            return Err("gcm_warn_percent must be between 1 and 99");
        }
        Ok(())
    }

    /// Below this many unspent invocations a node reserves its next block ahead of need.
    fn low_water(&self) -> u64 {
        self.block.div_ceil(2)
    }

    fn warns_at(&self, reserved: u64) -> bool {
        u128::from(reserved) * 100 >= u128::from(self.limit) * u128::from(self.warn_percent)
    }
}

/// Storage key of a key version's reservation record.
pub(crate) fn usage_key(id: &str, version: u32) -> Vec<u8> {
    [
        b"use/".as_slice(),
        id.as_bytes(),
        b"/",
        &version.to_be_bytes(),
    ]
    .concat()
}

/// Encodes a reservation record's plaintext.
pub(crate) fn encode_reserved(total: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(RECORD_FORMAT).u64(total);
    w.finish_public()
}

/// Decodes a reservation record's plaintext; anything odd is `Corruption`.
pub(crate) fn decode_reserved(bytes: &[u8]) -> Result<u64, Error> {
    let bad = |_| Error::Corruption("invocation record: malformed".into());
    let mut r = Reader::new(bytes);
    if r.u8().map_err(bad)? != RECORD_FORMAT {
        return Err(Error::Corruption(
            "invocation record: unknown format".into(),
        ));
    }
    let total = r.u64().map_err(bad)?;
    r.finish().map_err(bad)?;
    Ok(total)
}

/// The invocations reserved under one version, as stored (0 without a record).
pub(crate) fn stored_reservations(
    storage: &dyn Storage,
    ring: &Keyring,
    id: &str,
    version: u32,
) -> Result<u64, Error> {
    let k = usage_key(id, version);
    match storage.get(Tree::Keys, &k)? {
        Some(v) => decode_reserved(&ring.open(Tree::Keys, &k, &v)?),
        None => Ok(0),
    }
}

/// One node's in-memory budget for one key version.
#[derive(Debug, Default)]
pub(crate) struct InvocationBudget {
    /// Invocations this node spent.
    used: AtomicU64,
    /// Invocations this node reserved (committed) since it loaded the version.
    allowed: AtomicU64,
    /// Reserved by all nodes together, as last seen in storage or reserved here.
    reserved_total: AtomicU64,
}

impl InvocationBudget {
    /// A budget with nothing to spend; `reserved_total` as stored.
    pub(crate) fn loaded(reserved_total: u64) -> Self {
        InvocationBudget {
            used: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            reserved_total: AtomicU64::new(reserved_total),
        }
    }

    /// Spends one invocation if one is left.
    pub(crate) fn take(&self) -> bool {
        let allowed = self.allowed.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < allowed).then_some(u + 1)
            })
            .is_ok()
    }

    /// True once this node reserved anything for the version.
    pub(crate) fn ever_granted(&self) -> bool {
        self.allowed.load(Ordering::Acquire) > 0
    }

    /// Invocations reserved here and not yet spent.
    pub(crate) fn remaining(&self) -> u64 {
        self.allowed
            .load(Ordering::Acquire)
            .saturating_sub(self.used.load(Ordering::Acquire))
    }

    /// Reserved by all nodes together, as far as this node knows.
    pub(crate) fn reserved_total(&self) -> u64 {
        self.reserved_total.load(Ordering::Acquire)
    }

    /// Raises the known total (never lowers it).
    pub(crate) fn observe_total(&self, total: u64) {
        self.reserved_total.fetch_max(total, Ordering::AcqRel);
    }

    /// Adds a committed reservation of `n` invocations, bringing the total to `total`.
    pub(crate) fn grant(&self, n: u64, total: u64) {
        self.observe_total(total);
        self.allowed.fetch_add(n, Ordering::AcqRel);
    }
}

/// What an encryption with a key needs before it can run on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not in this node's cache (or not unsealed): catch up with the cluster first.
    Unknown,
    /// Invocations are reserved.
    Ready,
    /// Invocations are reserved but running low: reserve the next block in the background.
    Low,
    /// Nothing reserved: reserve before encrypting.
    Empty,
}

/// A reservation made by [`Vhsm::reserve_invocations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The key.
    pub key_id: String,
    /// Its current version.
    pub version: u32,
    /// Invocations added to this node's budget.
    pub granted: u64,
    /// Reserved by all nodes together, now.
    pub reserved_total: u64,
    /// The limit per version.
    pub limit: u64,
    /// True once `reserved_total` is past the warning share of `limit`: rotate the key.
    pub warning: bool,
}

/// A key version's use, for `key show` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationUse {
    /// The key's current version.
    pub version: u32,
    /// Invocations reserved under it by all nodes together (an upper bound of those made).
    pub reserved_total: u64,
    /// The limit per version.
    pub limit: u64,
}

impl Vhsm {
    /// The configured limits.
    pub fn gcm_limits(&self) -> GcmLimits {
        self.options.gcm
    }

    /// Whether an encryption with `id` can run now (one read of the key cache, no I/O).
    pub fn encrypt_readiness(&self, id: &str) -> Readiness {
        let guard = match self.hot.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Hot::Unsealed(map) = &*guard else {
            return Readiness::Ready;
        };
        let Some(key) = map.get(id) else {
            return Readiness::Unknown;
        };
        let Ok(vk) = current_version_key(key) else {
            return Readiness::Ready;
        };
        match vk.budget.remaining() {
            0 => Readiness::Empty,
            n if n < self.options.gcm.low_water() => Readiness::Low,
            _ => Readiness::Ready,
        }
    }

    /// Reserves the next block of invocations of `id`'s current version for this node, unless
    /// it still has at least half a block (`Ok(None)`: nothing written). The new total is
    /// committed, and audited, before the block can be spent. Beyond the limit:
    /// `KeyVersionExhausted` (rotate the key).
    pub fn reserve_invocations(&self, id: &str, actor: &str) -> Result<Option<Reservation>, Error> {
        self.reserve_for(id, None, actor)
    }

    /// [`Vhsm::reserve_invocations`] for `version` (the current one if `None`): an encrypt
    /// that raced a rotation still reserves for the version it seals under.
    fn reserve_for(
        &self,
        id: &str,
        version: Option<u32>,
        actor: &str,
    ) -> Result<Option<Reservation>, Error> {
        let mut inner = self.lock()?;
        let unsealed = Self::require_unsealed(&inner)?;
        let key = self.cached(id)?;
        usable(&key, Usage::Encrypt)?;
        let version = version.unwrap_or(key.info.current_version);
        let vk = key
            .versions
            .get(&version)
            .ok_or_else(|| Error::Internal("key version missing from cache".into()))?;
        if vk.budget.remaining() >= self.options.gcm.low_water() {
            return Ok(None);
        }
        let mut batch = WriteBatch::new();
        let r = self
            .queue_block(&mut batch, &unsealed.keyring, id, version, vk)?
            .ok_or_else(|| Error::KeyVersionExhausted(id.to_string()))?;
        self.commit_audited(
            &mut inner,
            batch,
            "key.reserve_invocations",
            actor,
            details([
                ("key_id", id.to_string()),
                ("version", version.to_string()),
                ("reserved_total", r.reserved_total.to_string()),
                ("limit", r.limit.to_string()),
            ]),
        )?;
        vk.budget.grant(r.granted, r.reserved_total);
        Ok(Some(r))
    }

    /// Queues the next block of `id`'s `version` (budget `vk`) into `batch`, from the stored
    /// total; `None` if the version is at its limit. Granted only once the batch commits.
    fn queue_block(
        &self,
        batch: &mut WriteBatch,
        ring: &Keyring,
        id: &str,
        version: u32,
        vk: &VersionKey,
    ) -> Result<Option<Reservation>, Error> {
        let limits = self.options.gcm;
        vk.budget
            .observe_total(stored_reservations(&*self.storage, ring, id, version)?);
        let total = vk.budget.reserved_total();
        let granted = limits.block.min(limits.limit.saturating_sub(total));
        if granted == 0 {
            return Ok(None);
        }
        let reserved_total = total + granted;
        let k = usage_key(id, version);
        let sealed = ring.seal(Tree::Keys, &k, &encode_reserved(reserved_total), &*self.rng)?;
        batch.put(Tree::Keys, k, sealed);
        Ok(Some(Reservation {
            key_id: id.to_string(),
            version,
            granted,
            reserved_total,
            limit: limits.limit,
            warning: limits.warns_at(reserved_total),
        }))
    }

    /// Reserves the next block for up to `max` encryptable keys whose current version has less
    /// than half a block left on this node (never used here since unseal, creation, rotation,
    /// or running low), in one committed and audited write. Returns what was reserved (empty:
    /// nothing to do). Versions at their limit are skipped (their encrypts say so).
    ///
    /// `include_unused`: also versions this node never reserved for (after an unseal); without
    /// it only versions this node has been using and that run low, so a sweep does not race
    /// every key created elsewhere (each reservation is a write that serializes with admin
    /// writes).
    pub fn reserve_pending(
        &self,
        max: usize,
        include_unused: bool,
        actor: &str,
    ) -> Result<Vec<Reservation>, Error> {
        let mut inner = self.lock()?;
        let unsealed = Self::require_unsealed(&inner)?;
        let limits = self.options.gcm;
        let wanted: Vec<std::sync::Arc<CachedKey>> = {
            let guard = self
                .hot
                .read()
                .map_err(|_| Error::Internal("key cache lock poisoned".into()))?;
            let Hot::Unsealed(map) = &*guard else {
                return Ok(Vec::new());
            };
            map.values()
                .filter(|k| usable(k, Usage::Encrypt).is_ok())
                .filter(|k| {
                    current_version_key(k).is_ok_and(|vk| {
                        vk.budget.remaining() < limits.low_water()
                            && vk.budget.reserved_total() < limits.limit
                            && (include_unused || vk.budget.ever_granted())
                    })
                })
                .take(max)
                .cloned()
                .collect()
        };
        let mut batch = WriteBatch::new();
        let mut planned = Vec::with_capacity(wanted.len());
        for key in &wanted {
            let vk = current_version_key(key)?;
            let version = key.info.current_version;
            if let Some(r) =
                self.queue_block(&mut batch, &unsealed.keyring, &key.info.key_id, version, vk)?
            {
                planned.push((std::sync::Arc::clone(vk), r));
            }
        }
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let mut d = details([
            ("versions", planned.len().to_string()),
            ("block", limits.block.to_string()),
            ("limit", limits.limit.to_string()),
        ]);
        if planned.len() <= AUDITED_IDS {
            let ids: Vec<String> = planned
                .iter()
                .map(|(_, r)| format!("{}/{}={}", r.key_id, r.version, r.reserved_total))
                .collect();
            d.insert("reserved".into(), ids.join(","));
        }
        self.commit_audited(&mut inner, batch, "key.reserve_invocations", actor, d)?;
        Ok(planned
            .into_iter()
            .map(|(vk, r)| {
                vk.budget.grant(r.granted, r.reserved_total);
                r
            })
            .collect())
    }

    /// Queues the first reservation of a version this node is creating (key creation, import,
    /// rotation), committed with it so that its first encryptions here do not wait for a
    /// write; returns the block to [`InvocationBudget::grant`] once committed.
    pub(crate) fn put_first_reservation(
        &self,
        batch: &mut WriteBatch,
        ring: &crate::keyring::Keyring,
        id: &str,
        version: u32,
    ) -> Result<u64, Error> {
        let limits = self.options.gcm;
        let granted = limits.block.min(limits.limit);
        let k = usage_key(id, version);
        let sealed = ring.seal(Tree::Keys, &k, &encode_reserved(granted), &*self.rng)?;
        batch.put(Tree::Keys, k, sealed);
        Ok(granted)
    }

    /// The use of `id`'s current version (Sealed/KeyNotFound as `describe_key`).
    pub fn invocation_use(&self, id: &str) -> Result<InvocationUse, Error> {
        let key = self.cached(id)?;
        let reserved_total = match current_version_key(&key) {
            Ok(vk) => vk.budget.reserved_total(),
            Err(_) => 0,
        };
        Ok(InvocationUse {
            version: key.info.current_version,
            reserved_total,
            limit: self.options.gcm.limit,
        })
    }
}

impl Vhsm {
    /// The cached key `id` (allowing each of `usages`) and the version it encrypts under, with
    /// one invocation of it spent. When the inline reservation was made on a newer cache entry
    /// than the one looked up (a seal and unseal raced the call), looks the key up once more.
    pub(crate) fn key_with_invocation(
        &self,
        id: &str,
        usages: &[Usage],
    ) -> Result<(std::sync::Arc<CachedKey>, std::sync::Arc<VersionKey>), Error> {
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            let key = self.cached(id)?;
            for usage in usages {
                usable(&key, *usage)?;
            }
            let vk = std::sync::Arc::clone(current_version_key(&key)?);
            match self.spend_invocation(&key, &vk) {
                Err(Error::NotServing(_))
                    if attempts_left > 0 && self.options.gcm_reserve_inline => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok((key, vk)),
            }
        }
    }

    /// Spends one invocation of `vk`, the version `key` encrypts under. With nothing reserved
    /// and [`crate::types::Options::gcm_reserve_inline`], reserves a block first (a storage
    /// write on the caller's thread); otherwise `NotServing` (the daemon reserves ahead).
    pub(crate) fn spend_invocation(&self, key: &CachedKey, vk: &VersionKey) -> Result<(), Error> {
        let limit = self.options.gcm.limit;
        match spend(key, vk, limit) {
            Err(Error::NotServing(_)) if self.options.gcm_reserve_inline => {
                let version = key.info.current_version;
                self.reserve_for(&key.info.key_id, Some(version), "system")?;
                spend(key, vk, limit)
            }
            r => r,
        }
    }
}

/// Spends one invocation of `vk`, or says why not.
fn spend(key: &CachedKey, vk: &VersionKey, limit: u64) -> Result<(), Error> {
    if vk.budget.take() {
        return Ok(());
    }
    if vk.budget.reserved_total() >= limit {
        Err(Error::KeyVersionExhausted(key.info.key_id.clone()))
    } else {
        Err(Error::NotServing(
            "no AES-GCM invocations of this key version are reserved on this node yet".into(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_bad_records() {
        for total in [0, 1, 1 << 20, GCM_RANDOM_IV_LIMIT] {
            assert_eq!(decode_reserved(&encode_reserved(total)).unwrap(), total);
        }
        let enc = encode_reserved(7);
        for cut in 0..enc.len() {
            assert!(matches!(
                decode_reserved(&enc[..cut]),
                Err(Error::Corruption(_))
            ));
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(matches!(decode_reserved(&long), Err(Error::Corruption(_))));
        let mut other = enc;
        other[0] = 2;
        assert!(matches!(decode_reserved(&other), Err(Error::Corruption(_))));
    }

    #[test]
    fn usage_keys_are_distinct_from_other_records() {
        assert_ne!(usage_key("a", 1), crate::keys::material_key("a", 1));
        assert_ne!(usage_key("a", 1), usage_key("a", 2));
        assert_eq!(
            crate::keys::id_of_storage_key(&usage_key("k.1", 3)).as_deref(),
            Some("k.1")
        );
    }

    #[test]
    fn budget_spends_exactly_what_was_granted() {
        let b = InvocationBudget::loaded(10);
        assert!(!b.take());
        b.grant(3, 13);
        assert_eq!((b.remaining(), b.reserved_total()), (3, 13));
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take());
        assert_eq!(b.remaining(), 0);
        b.observe_total(5);
        assert_eq!(b.reserved_total(), 13, "the known total never goes down");
    }

    #[test]
    fn concurrent_spending_never_exceeds_the_grant() {
        let b = std::sync::Arc::new(InvocationBudget::loaded(0));
        b.grant(10_000, 10_000);
        let spent: u64 = (0..4)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || (0..5_000).filter(|_| b.take()).count() as u64)
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(spent, 10_000);
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(GcmLimits::default().validate(), Ok(()));
        let bad = [
            GcmLimits {
                limit: 0,
                ..GcmLimits::default()
            },
            GcmLimits {
                limit: GCM_RANDOM_IV_LIMIT + 1,
                ..GcmLimits::default()
            },
            GcmLimits {
                block: 0,
                ..GcmLimits::default()
            },
            GcmLimits {
                limit: 10,
                block: 11,
                warn_percent: 50,
            },
            GcmLimits {
                warn_percent: 100,
                ..GcmLimits::default()
            },
        ];
        for l in bad {
            assert!(l.validate().is_err(), "{l:?}");
        }
        let l = GcmLimits::default();
        assert!(!l.warns_at((1 << 31) - 1));
        assert!(l.warns_at(1 << 31));
    }
}
