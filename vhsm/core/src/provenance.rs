//! Signed provenance statements of key versions ([`Vhsm::key_provenance`]).
//!
//! The statement (format in `vhsm_audit::provenance`) is signed with the audit identity key,
//! so it needs the store unsealed. Issuing one changes nothing and is NOT audited (like
//! `describe_key`): it only restates facts the audit log already holds (the creating record's
//! seq is in the statement), plus a key check value that reveals nothing about the material.
//!
//! Key check value (KCV): the first 128 bits of
//! HMAC-SHA256(key = material, `vhsm-kcv-v1` || u32be(len(key id)) || key id || u32be(version)).
//! Whoever holds the material (e.g. the owner of an imported key) can recompute it; it is bound
//! to the key id and version, so equal material under two ids gives unrelated values and a KCV
//! cannot be compared with another key's; and HMAC under a 256-bit key gives no way back to it.

use vhsm_audit::provenance::{fingerprint_text, Origin, ProvenanceStatement, SignedProvenance};
use vhsm_audit::public_key_fingerprint;

use crate::crypto::{hmac_sha256, SecretKey};
use crate::error::Error;
use crate::types::{KeyInfo, KeyOrigin, KeyState};
use crate::vhsm::Vhsm;

/// Domain label of [`key_check_value`].
const KCV_LABEL: &[u8] = b"vhsm-kcv-v1";
/// Bytes of a key check value (128 bits).
pub(crate) const KCV_LEN: usize = 16;

/// The key check value of one version's material (see the module docs).
pub(crate) fn key_check_value(material: &SecretKey, key_id: &str, version: u32) -> [u8; KCV_LEN] {
    let id_len = u32::try_from(key_id.len()).unwrap_or(u32::MAX);
    let mut msg = Vec::with_capacity(KCV_LABEL.len() + 8 + key_id.len());
    msg.extend_from_slice(KCV_LABEL);
    msg.extend_from_slice(&id_len.to_be_bytes());
    msg.extend_from_slice(key_id.as_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    let mac = hmac_sha256(material.expose(), &msg);
    let mut out = [0u8; KCV_LEN];
    out.copy_from_slice(&mac[..KCV_LEN]);
    out
}

/// The version's creation time and audit seq, when recorded.
fn creation_of(info: &KeyInfo, version: u32) -> (Option<u64>, Option<u64>) {
    if version == 1 {
        return (Some(info.created_at_ms), Some(info.created_by_audit_seq));
    }
    info.rotations
        .get(&version)
        .map_or((None, None), |c| (Some(c.created_at_ms), Some(c.audit_seq)))
}

impl Vhsm {
    /// A statement of where version `version` (default: the current one) of key `id` came
    /// from, signed with the audit identity key. Needs the store unsealed; refused for a
    /// destroyed key (its material, which the check value commits to, is gone) and for a
    /// version outside `1..=current_version` (`InvalidArgument("version")`). Not audited.
    pub fn key_provenance(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<SignedProvenance, Error> {
        let inner = self.lock()?;
        let unsealed = Self::require_unsealed(&inner)?;
        let header = inner.header.as_ref().ok_or(Error::Uninitialized)?;
        let cached = self.cached(id)?;
        let info = &cached.info;
        if info.state == KeyState::Destroyed {
            return Err(Error::KeyDestroyed(info.key_id.clone()));
        }
        let version = version.unwrap_or(info.current_version);
        if version == 0 || version > info.current_version {
            return Err(Error::InvalidArgument("version"));
        }
        let material = cached.versions.get(&version).ok_or_else(|| {
            Error::Internal(format!("key {}: version {version} not loaded", info.key_id))
        })?;
        // Version 1 of an imported key is the imported material; every later version was
        // generated inside by a rotation.
        let imported = version == 1 && info.origin == KeyOrigin::Imported;
        let under = info.imported_under.as_ref().filter(|_| imported);
        let (created_at_ms, created_by_audit_seq) = creation_of(info, version);
        let statement = ProvenanceStatement {
            store_id: header.store_id_hex(),
            key_id: info.key_id.clone(),
            version,
            key_spec: info.key_spec.to_string(),
            origin: if imported {
                Origin::Imported
            } else {
                Origin::Generated
            },
            import_key_id: under.map(|u| u.import_key_id.clone()),
            import_key_fingerprint: under.map(|u| fingerprint_text(&u.fingerprint)),
            created_at_ms,
            created_by_audit_seq,
            usage: info
                .usage
                .to_vec()
                .iter()
                .map(|u| u.as_str().to_ascii_lowercase())
                .collect(),
            kcv: hex::encode(key_check_value(&material.secret, &info.key_id, version)),
            issued_at_ms: self.clock.now_ms(),
            audit_head_seq: inner.audit_head.seq,
            audit_key_fingerprint: public_key_fingerprint(&header.audit_public_key),
        };
        Ok(SignedProvenance::sign(statement, &unsealed.signer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::crypto::aes_kwp_wrap;
    use crate::{
        InitRequest, MemoryStorage, NewKey, Options, OsRandom, SecretString, SystemClock, UsageSet,
    };

    fn pw() -> SecretString {
        SecretString::from("correct horse battery staple".to_string())
    }

    fn unsealed() -> Vhsm {
        let v = Vhsm::open(
            Arc::new(MemoryStorage::new()),
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap();
        v.initialize(InitRequest::Passphrase(pw()), "admin")
            .unwrap();
        v.unseal_with_passphrase(&pw(), "admin").unwrap();
        v
    }

    fn new_key(id: &str) -> NewKey {
        NewKey {
            id: id.into(),
            usage: UsageSet::EMPTY,
            labels: BTreeMap::new(),
        }
    }

    fn event_at(v: &Vhsm, seq: u64) -> vhsm_audit::AuditRecord {
        v.audit_records(seq, 1).unwrap().remove(0)
    }

    #[test]
    fn kcv_is_bound_to_material_id_and_version() {
        let a = SecretKey::from_bytes([1; 32]);
        let b = SecretKey::from_bytes([2; 32]);
        let base = key_check_value(&a, "k", 1);
        assert_ne!(base, key_check_value(&b, "k", 1));
        assert_ne!(base, key_check_value(&a, "k2", 1));
        assert_ne!(base, key_check_value(&a, "k", 2));
        // Length prefix: id "k" + version bytes never collides with a longer id.
        assert_ne!(key_check_value(&a, "k\0", 1), base);
        // The documented construction, computed independently.
        let mut msg = b"vhsm-kcv-v1".to_vec();
        msg.extend_from_slice(&[0, 0, 0, 1, b'k', 0, 0, 0, 1]);
        assert_eq!(base.as_slice(), &hmac_sha256(&[1; 32], &msg)[..16]);
    }

    #[test]
    fn generated_key_statement_matches_key_info_and_verifies() {
        let v = unsealed();
        let info = v.create_key(new_key("gen"), "admin").unwrap();
        let signed = v.key_provenance("gen", None).unwrap();
        let public = v.audit_public_key().unwrap();
        let s = signed.verify(&public).unwrap();
        assert_eq!(s.store_id, v.status().store_id);
        assert_eq!(s.key_id, "gen");
        assert_eq!(s.version, 1);
        assert_eq!(s.key_spec, "AES_256");
        assert_eq!(s.origin, Origin::Generated);
        assert_eq!(s.import_key_id, None);
        assert_eq!(s.import_key_fingerprint, None);
        assert_eq!(s.created_at_ms, Some(info.created_at_ms));
        assert_eq!(s.created_by_audit_seq, Some(info.created_by_audit_seq));
        assert_eq!(s.usage, ["encrypt", "decrypt"]);
        assert_eq!(s.kcv.len(), 32);
        assert_eq!(s.audit_head_seq, v.status().audit_head_seq);
        assert_eq!(s.audit_key_fingerprint, public_key_fingerprint(&public));
        let created = event_at(&v, info.created_by_audit_seq);
        assert_eq!(created.event, "key.create");
        assert_eq!(created.details["key_id"], "gen");
        // Issuing a statement is not audited.
        let head = v.status().audit_head_seq;
        v.key_provenance("gen", Some(1)).unwrap();
        assert_eq!(v.status().audit_head_seq, head);
    }

    #[test]
    fn imported_key_names_its_import_key_and_commits_to_the_material() {
        let v = unsealed();
        let ik = v.new_import_key("admin").unwrap();
        let material = [0x42u8; 32];
        let kek = SecretKey::from_slice(ik.key.expose()).unwrap();
        let wrapped = aes_kwp_wrap(&kek, &material).unwrap();
        let info = v
            .import_key(new_key("imp"), &ik.id, &wrapped, "admin")
            .unwrap();
        let public = v.audit_public_key().unwrap();
        let signed = v.key_provenance("imp", Some(1)).unwrap();
        let s = signed.verify(&public).unwrap();
        assert_eq!(s.origin, Origin::Imported);
        assert_eq!(s.import_key_id.as_deref(), Some(ik.id.as_str()));
        let expected_fp = fingerprint_text(&vhsm_audit::provenance::import_key_fingerprint(
            ik.key.expose(),
        ));
        assert_eq!(
            s.import_key_fingerprint.as_deref(),
            Some(expected_fp.as_str())
        );
        // The owner of the material can recompute the check value.
        let kcv = key_check_value(&SecretKey::from_bytes(material), "imp", 1);
        assert_eq!(s.kcv, hex::encode(kcv));
        let created = event_at(&v, info.created_by_audit_seq);
        assert_eq!(created.event, "key.import");
        assert_eq!(created.details["import_key_fingerprint"], expected_fp);

        // A rotated version of an imported key was generated inside.
        v.rotate_key("imp", "admin").unwrap();
        let s2 = v.key_provenance("imp", None).unwrap();
        let s2 = s2.verify(&public).unwrap();
        assert_eq!((s2.version, s2.origin), (2, Origin::Generated));
        assert_eq!(s2.import_key_id, None);
        assert_ne!(s2.kcv, s.kcv);
    }

    #[test]
    fn versions_are_selected_and_rotations_name_their_audit_record() {
        let v = unsealed();
        v.create_key(new_key("rot"), "admin").unwrap();
        let v1_before = v.key_provenance("rot", None).unwrap();
        let rotated = v.rotate_key("rot", "admin").unwrap();
        let created = rotated.rotations[&2];
        let public = v.audit_public_key().unwrap();
        let current = v.key_provenance("rot", None).unwrap();
        let s2 = current.verify(&public).unwrap();
        assert_eq!(s2.version, 2);
        assert_eq!(s2.created_at_ms, Some(created.created_at_ms));
        assert_eq!(s2.created_by_audit_seq, Some(created.audit_seq));
        let rec = event_at(&v, created.audit_seq);
        assert_eq!(rec.event, "key.rotate");
        assert_eq!(rec.details["version"], "2");
        let v1 = v.key_provenance("rot", Some(1)).unwrap();
        let s1 = v1.verify(&public).unwrap();
        assert_eq!(s1.version, 1);
        assert_eq!(
            s1.kcv, v1_before.statement.kcv,
            "a version's KCV never changes"
        );
        assert_ne!(s1.kcv, s2.kcv);
        for bad in [0, 3] {
            assert_eq!(
                v.key_provenance("rot", Some(bad)).unwrap_err(),
                Error::InvalidArgument("version")
            );
        }
        assert!(matches!(
            v.key_provenance("nope", None),
            Err(Error::KeyNotFound(_))
        ));
        // The rotation facts survive a reload from storage (seal and unseal).
        v.seal("admin").unwrap();
        v.unseal_with_passphrase(&pw(), "admin").unwrap();
        let again = v.key_provenance("rot", Some(2)).unwrap();
        assert_eq!(
            again.statement.created_by_audit_seq,
            Some(created.audit_seq)
        );
        assert_eq!(again.statement.kcv, s2.kcv);
    }

    #[test]
    fn sealed_or_uninitialized_store_issues_nothing() {
        let v = unsealed();
        v.create_key(new_key("k"), "admin").unwrap();
        v.seal("admin").unwrap();
        assert_eq!(v.key_provenance("k", None).unwrap_err(), Error::Sealed);
        let empty = Vhsm::open(
            Arc::new(MemoryStorage::new()),
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap();
        assert_eq!(
            empty.key_provenance("k", None).unwrap_err(),
            Error::Uninitialized
        );
    }
}
