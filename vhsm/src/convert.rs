//! Conversions between wire (`vhsm.v1`) messages and core types: parse at the edge.

use std::collections::{BTreeMap, HashMap};

use secrecy::SecretString;
use vhsm_core::{Error, KeyInfo, KeyState, SealState, Usage, UsageSet};
use vhsm_proto::v1;
use zeroize::Zeroize;

/// Moves a passphrase out of a request string into a `SecretString` and zeroizes the string
/// (its whole buffer).
pub fn take_secret(s: &mut String) -> SecretString {
    let secret = SecretString::from(s.as_str());
    s.zeroize();
    secret
}

/// The wire seal state.
pub fn seal_state(s: SealState) -> v1::SealState {
    match s {
        SealState::Uninitialized => v1::SealState::Uninitialized,
        SealState::Sealed => v1::SealState::Sealed,
        SealState::Unsealed => v1::SealState::Unsealed,
    }
}

fn key_state(s: KeyState) -> v1::KeyState {
    match s {
        KeyState::Enabled => v1::KeyState::Enabled,
        KeyState::Disabled => v1::KeyState::Disabled,
        KeyState::PendingDeletion => v1::KeyState::PendingDeletion,
        KeyState::Destroyed => v1::KeyState::Destroyed,
    }
}

fn usage_to_wire(u: Usage) -> v1::KeyUsage {
    match u {
        Usage::Encrypt => v1::KeyUsage::Encrypt,
        Usage::Decrypt => v1::KeyUsage::Decrypt,
        Usage::Wrap => v1::KeyUsage::Wrap,
        Usage::Unwrap => v1::KeyUsage::Unwrap,
    }
}

/// Parses the wire usage list; an unknown or UNSPECIFIED value is `InvalidArgument("usage")`.
/// An empty list is the empty set (the core then applies ENCRYPT+DECRYPT).
pub fn usage_set(wire: &[i32]) -> Result<UsageSet, Error> {
    let mut usages = Vec::with_capacity(wire.len());
    for &u in wire {
        let usage = match v1::KeyUsage::try_from(u) {
            Ok(v1::KeyUsage::Encrypt) => Usage::Encrypt,
            Ok(v1::KeyUsage::Decrypt) => Usage::Decrypt,
            Ok(v1::KeyUsage::Wrap) => Usage::Wrap,
            Ok(v1::KeyUsage::Unwrap) => Usage::Unwrap,
            Ok(v1::KeyUsage::Unspecified) | Err(_) => return Err(Error::InvalidArgument("usage")),
        };
        usages.push(usage);
    }
    Ok(UsageSet::of(&usages))
}

/// Wire labels (a map) as the core's ordered map.
pub fn labels(wire: HashMap<String, String>) -> BTreeMap<String, String> {
    wire.into_iter().collect()
}

/// The wire description of a key.
pub fn key_info(k: KeyInfo) -> v1::KeyInfo {
    v1::KeyInfo {
        key_id: k.key_id,
        key_spec: k.key_spec.to_owned(),
        usage: k
            .usage
            .to_vec()
            .into_iter()
            .map(|u| usage_to_wire(u) as i32)
            .collect(),
        state: key_state(k.state) as i32,
        current_version: k.current_version,
        min_decryption_version: k.min_decryption_version,
        labels: k.labels.into_iter().collect(),
        created_at_ms: k.created_at_ms,
        deletion_due_at_ms: k.deletion_due_at_ms,
        origin: k.origin.as_str().to_owned(),
        created_by_audit_seq: k.created_by_audit_seq,
        encryptions_reserved: 0,
        encryption_limit: 0,
    }
}

/// A key as answered: `key_info` with the AES-GCM use of its current version, read from
/// `v`'s key cache (absent while the cache does not have it, e.g. sealed).
pub fn key_message(v: &vhsm_core::Vhsm, k: KeyInfo) -> v1::KeyInfo {
    let usage = v.invocation_use(&k.key_id).ok();
    let mut w = key_info(k);
    if let Some(u) = usage {
        w.encryptions_reserved = u.reserved_total;
        w.encryption_limit = u.limit;
    }
    w
}

/// A wire `u32` that must fit a `u8` (thresholds).
pub fn to_u8(v: u32, field: &'static str) -> Result<u8, Error> {
    u8::try_from(v).map_err(|_| Error::InvalidArgument(field))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use vhsm_core::KeyOrigin;

    #[test]
    fn take_secret_moves_and_wipes() {
        let mut s = String::from("correct horse");
        let secret = take_secret(&mut s);
        assert_eq!(secret.expose_secret(), "correct horse");
        assert!(s.is_empty());
    }

    #[test]
    fn usage_parsing() {
        let set = usage_set(&[v1::KeyUsage::Encrypt as i32, v1::KeyUsage::Unwrap as i32]).unwrap();
        assert!(set.contains(Usage::Encrypt) && set.contains(Usage::Unwrap));
        assert!(!set.contains(Usage::Decrypt));
        assert!(usage_set(&[]).unwrap().is_empty());
        assert_eq!(usage_set(&[0]), Err(Error::InvalidArgument("usage")));
        assert_eq!(usage_set(&[99]), Err(Error::InvalidArgument("usage")));
    }

    #[test]
    fn key_info_round_trip_fields() {
        let mut labels = BTreeMap::new();
        labels.insert("team".to_owned(), "kms".to_owned());
        let k = KeyInfo {
            key_id: "demo".into(),
            key_spec: "AES_256",
            usage: UsageSet::ENCRYPT_DECRYPT,
            state: KeyState::PendingDeletion,
            current_version: 3,
            min_decryption_version: 2,
            labels,
            created_at_ms: 5,
            deletion_due_at_ms: 9,
            origin: KeyOrigin::Imported,
            created_by_audit_seq: 42,
            imported_under: None,
            rotations: BTreeMap::new(),
        };
        let w = key_info(k);
        assert_eq!(w.key_id, "demo");
        assert_eq!(w.key_spec, "AES_256");
        assert_eq!(
            w.usage,
            vec![v1::KeyUsage::Encrypt as i32, v1::KeyUsage::Decrypt as i32]
        );
        assert_eq!(w.state, v1::KeyState::PendingDeletion as i32);
        assert_eq!((w.current_version, w.min_decryption_version), (3, 2));
        assert_eq!(w.labels.get("team").map(String::as_str), Some("kms"));
        assert_eq!((w.created_at_ms, w.deletion_due_at_ms), (5, 9));
        assert_eq!(w.origin, "imported");
        assert_eq!(w.created_by_audit_seq, 42);
    }

    #[test]
    fn seal_states_and_u8() {
        assert_eq!(seal_state(SealState::Sealed), v1::SealState::Sealed);
        assert_eq!(seal_state(SealState::Unsealed), v1::SealState::Unsealed);
        assert_eq!(
            seal_state(SealState::Uninitialized),
            v1::SealState::Uninitialized
        );
        assert_eq!(to_u8(16, "threshold"), Ok(16));
        assert_eq!(
            to_u8(256, "threshold"),
            Err(Error::InvalidArgument("threshold"))
        );
    }
}
