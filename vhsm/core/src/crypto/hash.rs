//! SHA-256, HMAC-SHA-256, constant-time comparison and purpose-bound subkeys.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::SecretKey;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of every [`derive_subkey`] label, so vhsm subkeys cannot collide with other HMAC uses.
const SUBKEY_LABEL_PREFIX: &[u8] = b"vhsm/";

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 of the concatenation of `parts` (no separators: callers frame their own fields).
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// HMAC-SHA-256 of `data` under `key` (any key length).
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // INVARIANT: HMAC accepts keys of any length (long keys are hashed), so `new_from_slice`
    // cannot fail for Hmac<Sha256>.
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time equality for equal-length inputs; different lengths compare unequal (the
/// lengths themselves are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Derives a purpose-bound subkey: `HMAC-SHA256(key, "vhsm/" || label)`.
pub fn derive_subkey(key: &SecretKey, label: &str) -> SecretKey {
    let mut msg = Vec::with_capacity(SUBKEY_LABEL_PREFIX.len() + label.len());
    msg.extend_from_slice(SUBKEY_LABEL_PREFIX);
    msg.extend_from_slice(label.as_bytes());
    let mut subkey = SecretKey::zeroed();
    let out = Zeroizing::new(hmac_sha256(key.expose(), &msg));
    subkey.expose_mut().copy_from_slice(out.as_slice());
    subkey
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_accepts_empty_and_long_keys() {
        assert_ne!(hmac_sha256(b"", b"data"), hmac_sha256(&[0u8; 200], b"data"));
        // A key longer than the block is hashed first (RFC 2104).
        let long = [0x61u8; 100];
        assert_eq!(hmac_sha256(&long, b"m"), hmac_sha256(&sha256(&long), b"m"));
    }

    #[test]
    fn ct_eq_handles_lengths() {
        assert!(ct_eq(&[1, 2], &[1, 2]));
        assert!(!ct_eq(&[1, 2], &[1, 3]));
        assert!(!ct_eq(&[1, 2], &[1, 2, 3]));
    }

    #[test]
    fn subkeys_are_bound_to_their_label() {
        let key = SecretKey::from_bytes([1; 32]);
        let a = derive_subkey(&key, "a");
        assert_eq!(a.expose(), &hmac_sha256(&[1; 32], b"vhsm/a"));
        assert_ne!(a.expose(), derive_subkey(&key, "b").expose());
        assert_ne!(a.expose(), key.expose());
    }

    #[test]
    fn sha256_parts_ignores_part_boundaries() {
        assert_eq!(sha256_parts(&[b"ab", b"c"]), sha256(b"abc"));
        assert_eq!(sha256_parts(&[b"a", b"", b"bc"]), sha256(b"abc"));
    }
}
