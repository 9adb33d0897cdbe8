//! SHA-256, HMAC-SHA-256, constant-time comparison and purpose-bound subkeys.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{SecretKey, KEY_LEN};

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
    let out: Zeroizing<[u8; KEY_LEN]> = Zeroizing::new(hmac_sha256(key.expose(), &msg));
    SecretKey::from_bytes(*out)
}
