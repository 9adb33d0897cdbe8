//! Key management on the `Vhsm` facade: create, import, rotate, state changes, destruction.
//!
//! Each change seals the new records under the keyring, commits them flushed with their audit
//! record in one batch, and only then replaces the key's (immutable) entry in the hot cache.
//! `set_min_decryption_version` may lower the minimum again: every version's material is kept
//! until the key is destroyed, so any version in `1..=current` can be re-allowed.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::audit_log::details;
use crate::crypto::{aes_kwp_unwrap, SecretKey, KEY_LEN};
use crate::error::Error;
use crate::invocations::usage_key;
use crate::keys::{self, CachedKey, VersionKey, Versions};
use crate::storage::{Tree, WriteBatch};
use crate::types::{
    ImportKey, ImportedUnder, KeyInfo, KeyOrigin, KeyState, NewKey, SecretBytes, VersionCreated,
};
use crate::vhsm::{AuditEvent, Hot, Inner, PendingImport, Vhsm};
use vhsm_audit::approval::OperationClass;
use vhsm_audit::provenance::{fingerprint_text, import_key_fingerprint};

/// Longest waiting period `schedule_key_deletion` accepts, in days.
pub const MAX_DELETION_WAITING_DAYS: u32 = 3650;
const DAY_MS: u64 = 86_400_000;

/// The error for using a key in `state` for anything but reading its metadata.
pub(crate) fn state_error(info: &KeyInfo) -> Option<Error> {
    match info.state {
        KeyState::Enabled => None,
        KeyState::Disabled => Some(Error::KeyDisabled(info.key_id.clone())),
        KeyState::PendingDeletion => Some(Error::KeyPendingDeletion(info.key_id.clone())),
        KeyState::Destroyed => Some(Error::KeyDestroyed(info.key_id.clone())),
    }
}

fn live_only(info: &KeyInfo) -> Result<(), Error> {
    match info.state {
        KeyState::PendingDeletion => Err(Error::KeyPendingDeletion(info.key_id.clone())),
        KeyState::Destroyed => Err(Error::KeyDestroyed(info.key_id.clone())),
        KeyState::Enabled | KeyState::Disabled => Ok(()),
    }
}

/// One key metadata change to commit, with what goes in the same batch.
pub(crate) struct KeyChange<'a> {
    /// The key's audit event (`key.disable`, ...).
    pub(crate) event: &'a str,
    /// Who asked.
    pub(crate) actor: &'a str,
    /// Other writes of the same batch (a proposal's new state).
    pub(crate) batch: WriteBatch,
    /// Audit records that precede the key's (the approval that completed the quorum).
    pub(crate) before: Vec<AuditEvent<'a>>,
    /// The approved proposal this change executes, if any.
    pub(crate) proposal: Option<&'a str>,
}

/// The class of the approval policy that guards changing a key from `old` to `new`, if any:
/// scheduling its deletion, disabling it, raising its minimum decryption version. The one
/// place that decides which key changes are dangerous.
pub(crate) fn guarded_class(old: &KeyInfo, new: &KeyInfo) -> Option<OperationClass> {
    if new.state == KeyState::PendingDeletion && old.state != KeyState::PendingDeletion {
        Some(OperationClass::KeyDeletion)
    } else if new.state == KeyState::Disabled && old.state == KeyState::Enabled {
        Some(OperationClass::KeyDisable)
    } else if new.min_decryption_version > old.min_decryption_version {
        Some(OperationClass::MinDecryptionVersion)
    } else {
        None
    }
}

/// The key after setting its minimum decryption version to `version` (`None`: unchanged).
pub(crate) fn plan_min_decryption_version(
    info: &KeyInfo,
    version: u32,
) -> Result<Option<KeyInfo>, Error> {
    live_only(info)?;
    if version == 0 || version > info.current_version {
        return Err(Error::InvalidArgument("min_decryption_version"));
    }
    Ok((version != info.min_decryption_version).then(|| KeyInfo {
        min_decryption_version: version,
        ..info.clone()
    }))
}

/// The key after disabling it (`None`: already disabled).
pub(crate) fn plan_disable(info: &KeyInfo) -> Result<Option<KeyInfo>, Error> {
    live_only(info)?;
    Ok((info.state != KeyState::Disabled).then(|| KeyInfo {
        state: KeyState::Disabled,
        ..info.clone()
    }))
}

/// The key after scheduling its deletion `waiting_days` after `now_ms`.
pub(crate) fn plan_schedule_deletion(
    info: &KeyInfo,
    waiting_days: u32,
    now_ms: u64,
) -> Result<Option<KeyInfo>, Error> {
    live_only(info)?;
    Ok(Some(KeyInfo {
        state: KeyState::PendingDeletion,
        deletion_due_at_ms: now_ms.saturating_add(u64::from(waiting_days) * DAY_MS),
        ..info.clone()
    }))
}

/// Longest caller-supplied key id echoed back in a `KeyNotFound` message.
const MAX_SHOWN_ID_CHARS: usize = 128;

/// A caller-supplied key id as it may appear in an error message: a valid id as is; anything
/// else bounded to [`MAX_SHOWN_ID_CHARS`] printable ASCII characters (the id can be up to the
/// request size and contain control characters; the message travels in a gRPC header).
fn shown_id(id: &str) -> String {
    if crate::types::is_valid_key_id(id) {
        return id.to_string();
    }
    let mut out: String = id
        .chars()
        .take(MAX_SHOWN_ID_CHARS)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if id.chars().nth(MAX_SHOWN_ID_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

impl Vhsm {
    /// The cached key `id` (Sealed/Uninitialized/KeyNotFound otherwise).
    pub(crate) fn cached(&self, id: &str) -> Result<Arc<CachedKey>, Error> {
        let guard = self
            .hot
            .read()
            .map_err(|_| Error::Internal("key cache lock poisoned".into()))?;
        match &*guard {
            Hot::Uninitialized => Err(Error::Uninitialized),
            Hot::Sealed => Err(Error::Sealed),
            Hot::Unsealed(map) => map
                .get(id)
                .cloned()
                .ok_or_else(|| Error::KeyNotFound(shown_id(id))),
        }
    }

    /// Adds version 1 of a new key: imported (under `imported_under`) or generated (`None`).
    fn add_key(
        &self,
        inner: &mut Inner,
        spec: NewKey,
        material: SecretKey,
        imported_under: Option<ImportedUnder>,
        actor: &str,
        extra: BTreeMap<String, String>,
    ) -> Result<KeyInfo, Error> {
        let origin = if imported_under.is_some() {
            KeyOrigin::Imported
        } else {
            KeyOrigin::Generated
        };
        let usage = keys::validate_new(&spec)?;
        match self.cached(&spec.id) {
            Ok(_) => return Err(Error::KeyExists(spec.id)),
            Err(Error::KeyNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let unsealed = Self::require_unsealed(inner)?;
        let info = KeyInfo {
            key_id: spec.id,
            key_spec: "AES_256",
            usage,
            state: KeyState::Enabled,
            current_version: 1,
            min_decryption_version: 1,
            labels: spec.labels,
            created_at_ms: self.clock.now_ms(),
            deletion_due_at_ms: 0,
            origin,
            created_by_audit_seq: inner.audit_head.seq + 1,
            imported_under,
            rotations: BTreeMap::new(),
        };
        let mut batch = WriteBatch::new();
        keys::put_info(&mut batch, &unsealed.keyring, &info, &*self.rng)?;
        keys::put_material(
            &mut batch,
            &unsealed.keyring,
            &info.key_id,
            1,
            &material,
            &*self.rng,
        )?;
        let first = self.put_first_reservation(&mut batch, &unsealed.keyring, &info.key_id, 1)?;
        let mut d = details([
            ("key_id", info.key_id.clone()),
            ("origin", origin.as_str().to_string()),
            (
                "usage",
                info.usage
                    .to_vec()
                    .iter()
                    .map(|u| u.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]);
        d.extend(extra);
        let event = match origin {
            KeyOrigin::Generated => "key.create",
            KeyOrigin::Imported => "key.import",
        };
        let seq = self.commit_audited(inner, batch, event, actor, d)?;
        debug_assert_eq!(seq, info.created_by_audit_seq);
        let fresh = VersionKey::new(material);
        fresh.budget.grant(first, first);
        let versions: Versions = BTreeMap::from([(1, Arc::new(fresh))]);
        self.put_hot(Arc::new(CachedKey {
            info: info.clone(),
            versions: Arc::new(versions),
        }));
        Ok(info)
    }

    /// Creates a generated AES-256 key (material from the random source).
    pub fn create_key(&self, spec: NewKey, actor: &str) -> Result<KeyInfo, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        let mut raw = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        self.rng.fill(raw.as_mut_slice())?;
        self.add_key(
            &mut inner,
            spec,
            SecretKey::from_bytes(*raw),
            None,
            actor,
            BTreeMap::new(),
        )
    }

    /// A fresh single-use AES-256 import (transport) key, valid for `Options::import_key_ttl_ms`.
    /// It lives in memory only (never stored) and is dropped by `seal` or a restart.
    pub fn new_import_key(&self, actor: &str) -> Result<ImportKey, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        let now = self.clock.now_ms();
        inner.imports.retain(|_, p| p.expires_at_ms > now);
        if inner.imports.len() >= 64 {
            return Err(Error::TooLarge("import keys outstanding"));
        }
        let mut raw = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        self.rng.fill(raw.as_mut_slice())?;
        let mut idb = [0u8; 8];
        self.rng.fill(&mut idb)?;
        let id = format!("import-{}", hex::encode(idb));
        let expires_at_ms = now.saturating_add(self.options.import_key_ttl_ms);
        self.commit_audited(
            &mut inner,
            WriteBatch::new(),
            "import_key.create",
            actor,
            details([
                ("import_key_id", id.clone()),
                ("expires_at_ms", expires_at_ms.to_string()),
            ]),
        )?;
        let out = ImportKey {
            id: id.clone(),
            key: SecretBytes::new(zeroize::Zeroizing::new(raw.to_vec())),
            expires_at_ms,
        };
        inner.imports.insert(
            id,
            PendingImport {
                key: SecretKey::from_bytes(*raw),
                expires_at_ms,
            },
        );
        Ok(out)
    }

    /// Imports 32 bytes of AES-256 material wrapped with AES-KWP (RFC 5649) under an import key.
    /// The import key is consumed by the attempt, whether it succeeds or not.
    pub fn import_key(
        &self,
        spec: NewKey,
        import_key_id: &str,
        wrapped: &[u8],
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        keys::validate_new(&spec)?;
        let now = self.clock.now_ms();
        let pending = inner
            .imports
            .remove(import_key_id)
            .ok_or(Error::InvalidArgument("import_key_id"))?;
        if pending.expires_at_ms <= now {
            return Err(Error::InvalidArgument("import_key_id"));
        }
        let raw = aes_kwp_unwrap(&pending.key, wrapped).map_err(|_| Error::InvalidCiphertext)?;
        let material =
            SecretKey::from_slice(&raw).map_err(|_| Error::InvalidArgument("wrapped_key"))?;
        let under = ImportedUnder {
            import_key_id: import_key_id.to_string(),
            fingerprint: import_key_fingerprint(pending.key.expose()),
        };
        let shown_fp = fingerprint_text(&under.fingerprint);
        self.add_key(
            &mut inner,
            spec,
            material,
            Some(under),
            actor,
            details([
                ("import_key_id", import_key_id.to_string()),
                ("import_key_fingerprint", shown_fp),
            ]),
        )
    }

    /// Every key, destroyed tombstones included, sorted by id.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>, Error> {
        let guard = self
            .hot
            .read()
            .map_err(|_| Error::Internal("key cache lock poisoned".into()))?;
        match &*guard {
            Hot::Uninitialized => Err(Error::Uninitialized),
            Hot::Sealed => Err(Error::Sealed),
            Hot::Unsealed(map) => {
                let mut out: Vec<KeyInfo> = map.values().map(|c| c.info.clone()).collect();
                out.sort_by(|a, b| a.key_id.cmp(&b.key_id));
                Ok(out)
            }
        }
    }

    /// One key's public description (any state).
    pub fn describe_key(&self, id: &str) -> Result<KeyInfo, Error> {
        Ok(self.cached(id)?.info.clone())
    }

    /// Public metadata of a key for the crypto role (= `describe_key`; works for disabled keys).
    pub fn key_metadata(&self, id: &str) -> Result<KeyInfo, Error> {
        self.describe_key(id)
    }

    /// Applies a metadata-only change (`f` returns `None` for a no-op). A change that the
    /// approval policy guards ([`guarded_class`]) is refused here: it runs only through an
    /// approved proposal ([`Vhsm::commit_key_change`]).
    fn change_key(
        &self,
        id: &str,
        actor: &str,
        event: &str,
        f: impl FnOnce(&KeyInfo) -> Result<Option<KeyInfo>, Error>,
    ) -> Result<KeyInfo, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        let cached = self.cached(id)?;
        let Some(info) = f(&cached.info)? else {
            return Ok(cached.info.clone());
        };
        if let Some(class) = guarded_class(&cached.info, &info) {
            self.require_unguarded(&inner, class)?;
        }
        self.commit_key_change(
            &mut inner,
            &cached,
            info,
            KeyChange {
                event,
                actor,
                batch: WriteBatch::new(),
                before: Vec::new(),
                proposal: None,
            },
        )
    }

    /// Commits `info` as the key's new metadata with its audit record (after `change.before`'s
    /// records, in the same flushed batch as `change.batch`), then updates the hot cache.
    pub(crate) fn commit_key_change(
        &self,
        inner: &mut Inner,
        cached: &CachedKey,
        info: KeyInfo,
        change: KeyChange<'_>,
    ) -> Result<KeyInfo, Error> {
        let KeyChange {
            event,
            actor,
            mut batch,
            mut before,
            proposal,
        } = change;
        let unsealed = Self::require_unsealed(inner)?;
        keys::put_info(&mut batch, &unsealed.keyring, &info, &*self.rng)?;
        let mut d = details([
            ("key_id", info.key_id.clone()),
            ("state", info.state.as_str().to_string()),
            (
                "min_decryption_version",
                info.min_decryption_version.to_string(),
            ),
            ("deletion_due_at_ms", info.deletion_due_at_ms.to_string()),
        ]);
        if let Some(id) = proposal {
            d.insert("proposal_id".to_string(), id.to_string());
        }
        before.push((event, d));
        self.commit_audited_events(inner, batch, before, actor)?;
        self.put_hot(Arc::new(CachedKey {
            info: info.clone(),
            versions: cached.versions.clone(),
        }));
        Ok(info)
    }

    /// Adds a new version; encrypt/wrap use it, older versions still decrypt.
    /// Refused for keys pending deletion or destroyed.
    pub fn rotate_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        let mut inner = self.lock()?;
        let unsealed = Self::require_unsealed(&inner)?;
        let cached = self.cached(id)?;
        live_only(&cached.info)?;
        let version = cached
            .info
            .current_version
            .checked_add(1)
            .ok_or(Error::InvalidArgument("key_id"))?;
        let mut raw = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        self.rng.fill(raw.as_mut_slice())?;
        let material = SecretKey::from_bytes(*raw);
        let mut rotations = cached.info.rotations.clone();
        rotations.insert(
            version,
            VersionCreated {
                created_at_ms: self.clock.now_ms(),
                audit_seq: inner.audit_head.seq + 1,
            },
        );
        let info = KeyInfo {
            current_version: version,
            rotations,
            ..cached.info.clone()
        };
        let mut batch = WriteBatch::new();
        keys::put_info(&mut batch, &unsealed.keyring, &info, &*self.rng)?;
        keys::put_material(
            &mut batch,
            &unsealed.keyring,
            id,
            version,
            &material,
            &*self.rng,
        )?;
        let first = self.put_first_reservation(&mut batch, &unsealed.keyring, id, version)?;
        let seq = self.commit_audited(
            &mut inner,
            batch,
            "key.rotate",
            actor,
            details([("key_id", id.to_string()), ("version", version.to_string())]),
        )?;
        debug_assert_eq!(Some(seq), info.rotations.get(&version).map(|c| c.audit_seq));
        let mut versions: Versions = (*cached.versions).clone();
        let fresh = VersionKey::new(material);
        fresh.budget.grant(first, first);
        versions.insert(version, Arc::new(fresh));
        self.put_hot(Arc::new(CachedKey {
            info: info.clone(),
            versions: Arc::new(versions),
        }));
        Ok(info)
    }

    /// Sets the lowest version decrypt/unwrap accept, in `1..=current_version` (may go down).
    pub fn set_min_decryption_version(
        &self,
        id: &str,
        version: u32,
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        self.change_key(id, actor, "key.min_decryption_version", |info| {
            plan_min_decryption_version(info, version)
        })
    }

    /// Disabled → Enabled (a no-op when already enabled).
    pub fn enable_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        self.change_key(id, actor, "key.enable", |info| {
            live_only(info)?;
            Ok((info.state != KeyState::Enabled).then(|| KeyInfo {
                state: KeyState::Enabled,
                ..info.clone()
            }))
        })
    }

    /// Enabled → Disabled (a no-op when already disabled).
    pub fn disable_key(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        self.change_key(id, actor, "key.disable", plan_disable)
    }

    /// Enabled/Disabled → PendingDeletion, destroyed by `destroy_due_keys` once `waiting_days`
    /// (at least `Options::min_deletion_waiting_days`, at most 3650) have passed.
    pub fn schedule_key_deletion(
        &self,
        id: &str,
        waiting_days: u32,
        actor: &str,
    ) -> Result<KeyInfo, Error> {
        self.check_waiting_days(waiting_days)?;
        let now = self.clock.now_ms();
        self.change_key(id, actor, "key.schedule_deletion", |info| {
            plan_schedule_deletion(info, waiting_days, now)
        })
    }

    /// Refuses a waiting period outside `min_deletion_waiting_days..=3650`.
    pub(crate) fn check_waiting_days(&self, waiting_days: u32) -> Result<(), Error> {
        if waiting_days < self.options.min_deletion_waiting_days
            || waiting_days > MAX_DELETION_WAITING_DAYS
        {
            return Err(Error::InvalidArgument("waiting_days"));
        }
        Ok(())
    }

    /// PendingDeletion → Disabled (as AWS KMS does).
    pub fn cancel_key_deletion(&self, id: &str, actor: &str) -> Result<KeyInfo, Error> {
        self.change_key(id, actor, "key.cancel_deletion", |info| match info.state {
            KeyState::PendingDeletion => Ok(Some(KeyInfo {
                state: KeyState::Disabled,
                deletion_due_at_ms: 0,
                ..info.clone()
            })),
            KeyState::Destroyed => Err(Error::KeyDestroyed(info.key_id.clone())),
            KeyState::Enabled | KeyState::Disabled => Err(Error::InvalidArgument("key_state")),
        })
    }

    /// Destroys every key whose deletion is due: its material records are deleted and its
    /// metadata becomes a tombstone (the id is never reused). Returns the destroyed ids.
    /// Sealed/uninitialized stores destroy nothing and return an empty list.
    pub fn destroy_due_keys(&self) -> Result<Vec<String>, Error> {
        let mut inner = self.lock()?;
        if Self::require_unsealed(&inner).is_err() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let due: Vec<Arc<CachedKey>> = self
            .list_keys()?
            .into_iter()
            .filter(|k| k.state == KeyState::PendingDeletion && k.deletion_due_at_ms <= now)
            .map(|k| self.cached(&k.key_id))
            .collect::<Result<_, _>>()?;
        let mut destroyed = Vec::new();
        for cached in due {
            let unsealed = Self::require_unsealed(&inner)?;
            let info = KeyInfo {
                state: KeyState::Destroyed,
                ..cached.info.clone()
            };
            let mut batch = WriteBatch::new();
            keys::put_info(&mut batch, &unsealed.keyring, &info, &*self.rng)?;
            for version in cached.versions.keys() {
                batch.delete(Tree::Keys, keys::material_key(&info.key_id, *version));
                batch.delete(Tree::Keys, usage_key(&info.key_id, *version));
            }
            self.commit_audited(
                &mut inner,
                batch,
                "key.destroy",
                "system",
                details([("key_id", info.key_id.clone())]),
            )?;
            self.put_hot(Arc::new(CachedKey {
                info: info.clone(),
                versions: Arc::new(Versions::new()),
            }));
            destroyed.push(info.key_id);
        }
        Ok(destroyed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{InitRequest, MemoryStorage, Options, OsRandom, SecretString, SystemClock};

    #[test]
    fn key_not_found_echoes_a_bounded_printable_id() {
        let v = Vhsm::open(
            Arc::new(MemoryStorage::new()),
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap();
        let pw = || SecretString::from("correct horse battery staple".to_string());
        v.initialize(InitRequest::Passphrase(pw()), "admin")
            .unwrap();
        v.unseal_with_passphrase(&pw(), "admin").unwrap();
        // A valid id is echoed unchanged.
        assert_eq!(
            v.describe_key("no-such.key_1"),
            Err(Error::KeyNotFound("no-such.key_1".into()))
        );
        // A huge id with control characters is cut and made printable.
        let huge = format!("a\r\nb{}", "x".repeat(1 << 20));
        let Err(Error::KeyNotFound(shown)) = v.describe_key(&huge) else {
            panic!("expected KeyNotFound");
        };
        assert!(shown.len() <= MAX_SHOWN_ID_CHARS + 3, "{}", shown.len());
        assert!(
            shown.starts_with("a??b") && shown.ends_with("..."),
            "{shown}"
        );
        assert!(Error::KeyNotFound(shown).to_string().len() < 200);
        let Err(Error::KeyNotFound(shown)) = v.describe_key("caf\u{e9}") else {
            panic!("expected KeyNotFound");
        };
        assert_eq!(shown, "caf?");
    }
}
