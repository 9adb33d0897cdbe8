//! Customer key records: their stored encoding, the in-memory cache entry, and loading at unseal.
//!
//! Tree `Keys` holds, each sealed in the record envelope under the keyring:
//! - `key/<id>`: metadata (format u8 = 1, id, usage bits, state, current and minimum decryption
//!   version, timestamps, origin, creating audit seq, labels); kept as a tombstone once destroyed.
//!   Format 2 (written only when there is something to add, so a record has one encoding) then
//!   carries the provenance facts: the import key (flag u8, id, 16-byte fingerprint) and, per
//!   rotated version, its creation time and audit seq (count u32, then version u32, ms u64,
//!   seq u64 in increasing version order). Format 1 records decode with neither;
//! - `mat/<id>/<version u32be>`: the 32-byte AES-256 material of one version (deleted on destroy);
//! - `use/<id>/<version u32be>`: the AES-GCM invocations reserved under it (`invocations`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use crate::codec::{Reader, Writer};
use crate::crypto::{GcmKey, SecretKey};
use crate::env::RandomSource;
use crate::error::Error;
use crate::invocations::{stored_reservations, usage_key, InvocationBudget};
use crate::keyring::Keyring;
use crate::storage::{Storage, Tree, WriteBatch};
use crate::types::{
    is_valid_key_id, ImportedUnder, KeyInfo, KeyOrigin, KeyState, NewKey, UsageSet, VersionCreated,
};

const RECORD_FORMAT: u8 = 1;
/// Format 1 followed by the provenance facts.
const RECORD_FORMAT_PROVENANCE: u8 = 2;
/// Most labels a key may carry.
pub(crate) const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY_LEN: usize = 64;
const MAX_LABEL_VALUE_LEN: usize = 256;

/// Storage key of a key's metadata record.
pub(crate) fn meta_key(id: &str) -> Vec<u8> {
    [b"key/".as_slice(), id.as_bytes()].concat()
}

/// Storage key of one version's material.
pub(crate) fn material_key(id: &str, version: u32) -> Vec<u8> {
    [
        b"mat/".as_slice(),
        id.as_bytes(),
        b"/",
        &version.to_be_bytes(),
    ]
    .concat()
}

/// One version's material, its prepared cipher and this node's AES-GCM invocation budget.
pub(crate) struct VersionKey {
    pub(crate) secret: SecretKey,
    pub(crate) gcm: GcmKey,
    pub(crate) budget: InvocationBudget,
}

impl VersionKey {
    /// A new version: nothing reserved under it yet.
    pub(crate) fn new(secret: SecretKey) -> Self {
        Self::loaded(secret, 0)
    }

    /// A stored version under which `reserved_total` invocations were reserved.
    pub(crate) fn loaded(secret: SecretKey, reserved_total: u64) -> Self {
        let gcm = GcmKey::new(&secret);
        VersionKey {
            secret,
            gcm,
            budget: InvocationBudget::loaded(reserved_total),
        }
    }
}

/// Key id → cached key: the hot-path map.
pub(crate) type KeyMap = HashMap<String, Arc<CachedKey>>;

/// Version number → material.
pub(crate) type Versions = BTreeMap<u32, Arc<VersionKey>>;

/// A key as the hot path sees it: immutable; replaced whole on every change.
pub(crate) struct CachedKey {
    pub(crate) info: KeyInfo,
    pub(crate) versions: Arc<Versions>,
}

impl fmt::Debug for CachedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedKey")
            .field("info", &self.info)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks a creation request; an empty usage set becomes ENCRYPT+DECRYPT.
pub(crate) fn validate_new(spec: &NewKey) -> Result<UsageSet, Error> {
    if !is_valid_key_id(&spec.id) {
        return Err(Error::InvalidArgument("key_id"));
    }
    if spec.labels.len() > MAX_LABELS {
        return Err(Error::InvalidArgument("labels"));
    }
    for (k, v) in &spec.labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY_LEN || v.len() > MAX_LABEL_VALUE_LEN {
            return Err(Error::InvalidArgument("labels"));
        }
    }
    Ok(if spec.usage.is_empty() {
        UsageSet::ENCRYPT_DECRYPT
    } else {
        spec.usage
    })
}

fn state_code(s: KeyState) -> u8 {
    match s {
        KeyState::Enabled => 1,
        KeyState::Disabled => 2,
        KeyState::PendingDeletion => 3,
        KeyState::Destroyed => 4,
    }
}

/// Encodes a key's metadata record plaintext (not secret, but sealed for integrity and privacy).
pub(crate) fn encode_info(info: &KeyInfo) -> Vec<u8> {
    let extended = info.imported_under.is_some() || !info.rotations.is_empty();
    let mut w = Writer::new();
    w.u8(if extended {
        RECORD_FORMAT_PROVENANCE
    } else {
        RECORD_FORMAT
    })
    .str(&info.key_id)
    .u8(info.usage.bits())
    .u8(state_code(info.state))
    .u32(info.current_version)
    .u32(info.min_decryption_version)
    .u64(info.created_at_ms)
    .u64(info.deletion_due_at_ms)
    .u8(match info.origin {
        KeyOrigin::Generated => 1,
        KeyOrigin::Imported => 2,
    })
    .u64(info.created_by_audit_seq)
    .u32(u32::try_from(info.labels.len()).unwrap_or(u32::MAX));
    for (k, v) in &info.labels {
        w.str(k).str(v);
    }
    if extended {
        match &info.imported_under {
            Some(under) => {
                w.u8(1).str(&under.import_key_id).raw(&under.fingerprint);
            }
            None => {
                w.u8(0);
            }
        }
        w.u32(u32::try_from(info.rotations.len()).unwrap_or(u32::MAX));
        for (version, created) in &info.rotations {
            w.u32(*version)
                .u64(created.created_at_ms)
                .u64(created.audit_seq);
        }
    }
    w.finish_public()
}

/// Decodes the provenance facts of a format-2 record (after the labels).
fn decode_provenance(
    r: &mut Reader<'_>,
    current_version: u32,
) -> Result<(Option<ImportedUnder>, BTreeMap<u32, VersionCreated>), Error> {
    let bad = |_| Error::Corruption("key record: malformed".into());
    let imported_under = match r.u8().map_err(bad)? {
        0 => None,
        1 => Some(ImportedUnder {
            import_key_id: r.str().map_err(bad)?.to_string(),
            fingerprint: r.array().map_err(bad)?,
        }),
        _ => return Err(Error::Corruption("key record: bad import flag".into())),
    };
    let n = r.u32().map_err(bad)?;
    if n >= current_version {
        return Err(Error::Corruption("key record: too many rotations".into()));
    }
    let mut rotations: BTreeMap<u32, VersionCreated> = BTreeMap::new();
    for _ in 0..n {
        let version = r.u32().map_err(bad)?;
        let created = VersionCreated {
            created_at_ms: r.u64().map_err(bad)?,
            audit_seq: r.u64().map_err(bad)?,
        };
        // Strictly increasing from 2; a previous version of u32::MAX leaves no room.
        let after_last = match rotations.last_key_value() {
            None => Some(2),
            Some((v, _)) => v.checked_add(1),
        };
        if after_last.is_none_or(|next| version < next) || version > current_version {
            return Err(Error::Corruption("key record: bad rotation version".into()));
        }
        rotations.insert(version, created);
    }
    if imported_under.is_none() && rotations.is_empty() {
        // Format 1 encodes this: a second encoding would give the record two meanings.
        return Err(Error::Corruption("key record: empty provenance".into()));
    }
    Ok((imported_under, rotations))
}

/// Decodes a metadata record plaintext; anything odd is `Corruption`.
pub(crate) fn decode_info(bytes: &[u8]) -> Result<KeyInfo, Error> {
    let bad = |_| Error::Corruption("key record: malformed".into());
    let mut r = Reader::new(bytes);
    let format = r.u8().map_err(bad)?;
    if format != RECORD_FORMAT && format != RECORD_FORMAT_PROVENANCE {
        return Err(Error::Corruption("key record: unknown format".into()));
    }
    let key_id = r.str().map_err(bad)?.to_string();
    let usage = UsageSet::from_bits(r.u8().map_err(bad)?)
        .ok_or_else(|| Error::Corruption("key record: bad usage".into()))?;
    let state = match r.u8().map_err(bad)? {
        1 => KeyState::Enabled,
        2 => KeyState::Disabled,
        3 => KeyState::PendingDeletion,
        4 => KeyState::Destroyed,
        _ => return Err(Error::Corruption("key record: bad state".into())),
    };
    let current_version = r.u32().map_err(bad)?;
    let min_decryption_version = r.u32().map_err(bad)?;
    let created_at_ms = r.u64().map_err(bad)?;
    let deletion_due_at_ms = r.u64().map_err(bad)?;
    let origin = match r.u8().map_err(bad)? {
        1 => KeyOrigin::Generated,
        2 => KeyOrigin::Imported,
        _ => return Err(Error::Corruption("key record: bad origin".into())),
    };
    let created_by_audit_seq = r.u64().map_err(bad)?;
    let n = r.u32().map_err(bad)?;
    if n as usize > MAX_LABELS {
        return Err(Error::Corruption("key record: too many labels".into()));
    }
    let mut labels = BTreeMap::new();
    for _ in 0..n {
        let k = r.str().map_err(bad)?.to_string();
        let v = r.str().map_err(bad)?.to_string();
        // `encode_info` writes labels in map order, so keys are strictly increasing; anything
        // else (a duplicate key would silently drop a label) is not a record we wrote.
        if labels.last_key_value().is_some_and(|(last, _)| *last >= k) {
            return Err(Error::Corruption(
                "key record: labels out of order or duplicated".into(),
            ));
        }
        labels.insert(k, v);
    }
    if current_version == 0
        || min_decryption_version == 0
        || min_decryption_version > current_version
    {
        return Err(Error::Corruption("key record: bad versions".into()));
    }
    let (imported_under, rotations) = if format == RECORD_FORMAT_PROVENANCE {
        decode_provenance(&mut r, current_version)?
    } else {
        (None, BTreeMap::new())
    };
    if imported_under.is_some() && origin != KeyOrigin::Imported {
        return Err(Error::Corruption(
            "key record: import key on a generated key".into(),
        ));
    }
    r.finish().map_err(bad)?;
    Ok(KeyInfo {
        key_id,
        key_spec: "AES_256",
        usage,
        state,
        current_version,
        min_decryption_version,
        labels,
        created_at_ms,
        deletion_due_at_ms,
        origin,
        created_by_audit_seq,
        imported_under,
        rotations,
    })
}

/// Queues the sealed metadata record of `info`.
pub(crate) fn put_info(
    batch: &mut WriteBatch,
    ring: &Keyring,
    info: &KeyInfo,
    rng: &dyn RandomSource,
) -> Result<(), Error> {
    let k = meta_key(&info.key_id);
    let v = ring.seal(Tree::Keys, &k, &encode_info(info), rng)?;
    batch.put(Tree::Keys, k, v);
    Ok(())
}

/// Queues the sealed material record of one version.
pub(crate) fn put_material(
    batch: &mut WriteBatch,
    ring: &Keyring,
    id: &str,
    version: u32,
    secret: &SecretKey,
    rng: &dyn RandomSource,
) -> Result<(), Error> {
    let k = material_key(id, version);
    let v = ring.seal(Tree::Keys, &k, secret.expose(), rng)?;
    batch.put(Tree::Keys, k, v);
    Ok(())
}

/// Authenticates one stored metadata record (stored under `k`) and loads its material. The
/// versions of `previous` (this key as cached before, same keyring) are kept as they are,
/// with this node's invocation budgets: a version's material never changes once written.
fn load_entry(
    storage: &dyn Storage,
    ring: &Keyring,
    k: &[u8],
    v: &[u8],
    previous: Option<&CachedKey>,
) -> Result<Arc<CachedKey>, Error> {
    let plain = ring.open(Tree::Keys, k, v)?;
    let info = decode_info(&plain)?;
    if meta_key(&info.key_id) != k {
        return Err(Error::Corruption(
            "key record: stored under another id".into(),
        ));
    }
    let mut versions = Versions::new();
    if info.state != KeyState::Destroyed {
        for version in 1..=info.current_version {
            let reserved = stored_reservations(storage, ring, &info.key_id, version)?;
            if let Some(kept) = previous.and_then(|p| p.versions.get(&version)) {
                kept.budget.observe_total(reserved);
                versions.insert(version, Arc::clone(kept));
                continue;
            }
            let mk = material_key(&info.key_id, version);
            let value = storage.get(Tree::Keys, &mk)?.ok_or_else(|| {
                Error::Corruption(format!(
                    "key {}: material of version {version} is missing",
                    info.key_id
                ))
            })?;
            let raw = ring.open(Tree::Keys, &mk, &value)?;
            let secret = SecretKey::from_slice(&raw).map_err(|_| {
                Error::Corruption(format!("key {}: material has a wrong length", info.key_id))
            })?;
            versions.insert(version, Arc::new(VersionKey::loaded(secret, reserved)));
        }
    }
    Ok(Arc::new(CachedKey {
        info,
        versions: Arc::new(versions),
    }))
}

/// Loads and authenticates one key by id; `None` if no record exists. `previous` as in
/// [`load_entry`].
pub(crate) fn load_one(
    storage: &dyn Storage,
    ring: &Keyring,
    id: &str,
    previous: Option<&CachedKey>,
) -> Result<Option<Arc<CachedKey>>, Error> {
    let k = meta_key(id);
    match storage.get(Tree::Keys, &k)? {
        Some(v) => load_entry(storage, ring, &k, &v, previous).map(Some),
        None => Ok(None),
    }
}

/// The key id a `Keys`-tree storage key belongs to (`key/<id>`, `mat/<id>/<version>` or
/// `use/<id>/<version>`).
pub(crate) fn id_of_storage_key(k: &[u8]) -> Option<String> {
    let id = if let Some(rest) = k.strip_prefix(b"key/".as_slice()) {
        rest
    } else {
        let rest = k
            .strip_prefix(b"mat/".as_slice())
            .or_else(|| k.strip_prefix(b"use/".as_slice()))?;
        rest.get(..rest.len().checked_sub(5)?)?
    };
    std::str::from_utf8(id).ok().map(str::to_owned)
}

/// Loads and authenticates every key (with its material, unless destroyed).
pub(crate) fn load_all(storage: &dyn Storage, ring: &Keyring) -> Result<KeyMap, Error> {
    let mut out = HashMap::new();
    for (k, v) in storage.scan_prefix(Tree::Keys, b"key/")? {
        let cached = load_entry(storage, ring, &k, &v, None)?;
        out.insert(cached.info.key_id.clone(), cached);
    }
    // Every material and invocation record must belong to a live key version (nothing
    // orphaned or injected).
    let live = |record: fn(&str, u32) -> Vec<u8>| -> std::collections::HashSet<Vec<u8>> {
        out.values()
            .flat_map(|c| c.versions.keys().map(move |v| record(&c.info.key_id, *v)))
            .collect()
    };
    for (prefix, record) in [
        (b"mat/", material_key as fn(&str, u32) -> Vec<u8>),
        (b"use/", usage_key),
    ] {
        let expected = live(record);
        for (k, _) in storage.scan_prefix(Tree::Keys, prefix)? {
            if !expected.contains(&k) {
                return Err(Error::Corruption(
                    "key material or invocation record without a live key".into(),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::types::Usage;

    #[test]
    fn storage_keys_name_their_key_id() {
        assert_eq!(id_of_storage_key(&meta_key("k-1")).as_deref(), Some("k-1"));
        assert_eq!(
            id_of_storage_key(&material_key("a.b_c", 7)).as_deref(),
            Some("a.b_c")
        );
        assert_eq!(id_of_storage_key(b"mat/x"), None);
        assert_eq!(id_of_storage_key(b"other/x"), None);
    }

    /// Found by the `key_record` fuzz target (fuzz/regressions/key_record/): labels
    /// `owner`, `nerpose` decoded, then re-encoded in sorted order, so the stored bytes had a
    /// second meaning; a duplicated label key was silently dropped. Both are `Corruption` now.
    #[test]
    fn unsorted_or_duplicate_labels_are_corruption() {
        let crash: &[u8] = &[
            0x01, 0x00, 0x00, 0x00, 0x05, b'k', b'e', b'y', b'-', b'1', 0x03, 0x01, 0x00, 0x00,
            0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0x1b, 0x98, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x05, b'o', b'w', b'n',
            b'e', b'r', 0x00, 0x00, 0x00, 0x06, b't', b'e', b'a', b'm', b'-', b'a', 0x00, 0x00,
            0x00, 0x07, b'n', b'e', b'r', b'p', b'o', b's', b'e', 0x00, 0x00, 0x00, 0x03, b'x',
            b'k', b's',
        ];
        assert!(matches!(decode_info(crash), Err(Error::Corruption(_))));

        let mut dup = Writer::new();
        dup.u8(RECORD_FORMAT)
            .str("k")
            .u8(UsageSet::ENCRYPT_DECRYPT.bits())
            .u8(1)
            .u32(1)
            .u32(1)
            .u64(0)
            .u64(0)
            .u8(1)
            .u64(0)
            .u32(2)
            .str("a")
            .str("x")
            .str("a")
            .str("y");
        assert!(matches!(
            decode_info(&dup.finish_public()),
            Err(Error::Corruption(_))
        ));

        // Sorted labels still decode, and re-encode to the same bytes.
        let good = encode_info(&info());
        assert_eq!(encode_info(&decode_info(&good).unwrap()), good);
    }

    pub(crate) fn info() -> KeyInfo {
        KeyInfo {
            key_id: "k-1".into(),
            key_spec: "AES_256",
            usage: UsageSet::of(&[Usage::Encrypt, Usage::Wrap]),
            state: KeyState::PendingDeletion,
            current_version: 3,
            min_decryption_version: 2,
            labels: BTreeMap::from([("team".to_string(), "db".to_string())]),
            created_at_ms: 11,
            deletion_due_at_ms: 22,
            origin: KeyOrigin::Imported,
            created_by_audit_seq: 33,
            imported_under: None,
            rotations: BTreeMap::new(),
        }
    }

    fn info_with_provenance() -> KeyInfo {
        KeyInfo {
            imported_under: Some(ImportedUnder {
                import_key_id: "import-0011223344556677".into(),
                fingerprint: [9; 16],
            }),
            rotations: BTreeMap::from([
                (
                    2,
                    VersionCreated {
                        created_at_ms: 44,
                        audit_seq: 55,
                    },
                ),
                (
                    3,
                    VersionCreated {
                        created_at_ms: 66,
                        audit_seq: 77,
                    },
                ),
            ]),
            ..info()
        }
    }

    #[test]
    fn provenance_facts_round_trip_in_format_2_only_when_present() {
        let plain = encode_info(&info());
        assert_eq!(plain[0], RECORD_FORMAT);
        let full = info_with_provenance();
        let enc = encode_info(&full);
        assert_eq!(enc[0], RECORD_FORMAT_PROVENANCE);
        assert_eq!(decode_info(&enc).unwrap(), full);
        // Only rotations, only the import key: both still format 2 and round-trip.
        for partial in [
            KeyInfo {
                imported_under: None,
                ..full.clone()
            },
            KeyInfo {
                rotations: BTreeMap::new(),
                ..full.clone()
            },
        ] {
            let enc = encode_info(&partial);
            assert_eq!(enc[0], RECORD_FORMAT_PROVENANCE);
            assert_eq!(decode_info(&enc).unwrap(), partial);
        }
        for cut in 0..enc.len() {
            assert!(matches!(
                decode_info(&enc[..cut]),
                Err(Error::Corruption(_))
            ));
        }
    }

    #[test]
    fn non_canonical_or_impossible_provenance_is_corruption() {
        // Format 2 with nothing in it: format 1 is the one encoding of that.
        let mut empty = encode_info(&info());
        empty[0] = RECORD_FORMAT_PROVENANCE;
        empty.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert!(matches!(decode_info(&empty), Err(Error::Corruption(_))));
        // info() has current version 3. A rotation beyond it, version 1 as a rotation, out of
        // order, duplicated: written by hand (the map would sort and merge them).
        for versions in [[2u32, 4], [1, 2], [3, 2], [2, 2]] {
            let mut enc = encode_info(&info());
            enc[0] = RECORD_FORMAT_PROVENANCE;
            enc.push(0);
            enc.extend_from_slice(&2u32.to_be_bytes());
            for v in versions {
                enc.extend_from_slice(&v.to_be_bytes());
                enc.extend_from_slice(&[0; 16]);
            }
            assert!(
                matches!(decode_info(&enc), Err(Error::Corruption(_))),
                "{versions:?}"
            );
        }
        // The same by hand with good versions decodes (the test above is not vacuous).
        let mut enc = encode_info(&info());
        enc[0] = RECORD_FORMAT_PROVENANCE;
        enc.push(0);
        enc.extend_from_slice(&2u32.to_be_bytes());
        for v in [2u32, 3] {
            enc.extend_from_slice(&v.to_be_bytes());
            enc.extend_from_slice(&[0; 16]);
        }
        assert_eq!(decode_info(&enc).unwrap().rotations.len(), 2);
        // A rotation at u32::MAX followed by another: refused, not an overflow (found by
        // fuzzing, fuzz/regressions/key_record/rotation-version-overflow).
        let top = KeyInfo {
            current_version: u32::MAX,
            ..info()
        };
        let mut enc = encode_info(&top);
        enc[0] = RECORD_FORMAT_PROVENANCE;
        enc.push(0);
        enc.extend_from_slice(&2u32.to_be_bytes());
        for v in [u32::MAX, u32::MAX] {
            enc.extend_from_slice(&v.to_be_bytes());
            enc.extend_from_slice(&[0; 16]);
        }
        assert!(matches!(decode_info(&enc), Err(Error::Corruption(_))));
        // An import key on a generated key.
        let i = KeyInfo {
            origin: KeyOrigin::Generated,
            ..info_with_provenance()
        };
        assert!(matches!(
            decode_info(&encode_info(&i)),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn info_round_trip() {
        assert_eq!(decode_info(&encode_info(&info())).unwrap(), info());
    }

    #[test]
    fn bad_records_are_corruption() {
        let enc = encode_info(&info());
        for cut in 0..enc.len() {
            assert!(matches!(
                decode_info(&enc[..cut]),
                Err(Error::Corruption(_))
            ));
        }
        let mut i = info();
        i.min_decryption_version = 4;
        assert!(matches!(
            decode_info(&encode_info(&i)),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn storage_keys_do_not_collide() {
        assert_ne!(meta_key("a"), material_key("a", 1));
        assert_ne!(material_key("a", 1), material_key("a", 2));
        assert!(material_key("ab", 1) != material_key("a", 1));
    }

    #[test]
    fn new_key_validation() {
        let mut spec = NewKey {
            id: "ok".into(),
            usage: UsageSet::EMPTY,
            labels: BTreeMap::new(),
        };
        assert_eq!(validate_new(&spec).unwrap(), UsageSet::ENCRYPT_DECRYPT);
        spec.id = "bad id".into();
        assert_eq!(validate_new(&spec), Err(Error::InvalidArgument("key_id")));
        spec.id = "ok".into();
        spec.labels.insert(String::new(), "v".into());
        assert_eq!(validate_new(&spec), Err(Error::InvalidArgument("labels")));
        spec.labels = (0..33)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(validate_new(&spec), Err(Error::InvalidArgument("labels")));
    }
}
