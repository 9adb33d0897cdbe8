//! `SecretKey`: a 256-bit key that zeroizes on drop and never prints itself.

use std::fmt;

use zeroize::Zeroizing;

use super::{CryptoError, KEY_LEN};

/// A 256-bit secret key: zeroized on drop, redacted `Debug`, no `Serialize`, no `Clone`.
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// Takes ownership of 32 key bytes. The caller should zeroize its own copy, if any.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies a key from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidLength("key"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    /// Borrows the raw key bytes (for feeding a primitive; never log them).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An all-zero key to be filled in place by a derivation (no stray stack copies).
    pub(in crate::crypto) fn zeroed() -> Self {
        Self(Zeroizing::new([0u8; KEY_LEN]))
    }

    /// Mutable access for in-place derivation inside the crypto module.
    pub(in crate::crypto) fn expose_mut(&mut self) -> &mut [u8; KEY_LEN] {
        &mut self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn from_slice_accepts_exactly_32_bytes() {
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(key.expose(), &[7u8; 32]);
    }

    #[test]
    fn from_slice_rejects_other_lengths() {
        for len in [0usize, 1, 16, 31, 33, 64] {
            assert_eq!(
                SecretKey::from_slice(&vec![1u8; len]).unwrap_err(),
                CryptoError::InvalidLength("key")
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
