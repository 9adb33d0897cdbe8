//! The one error type of the crypto wrappers; it never carries secret data.

/// Why a crypto operation failed. Variants carry no key material, plaintext or ciphertext.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum CryptoError {
    /// A GCM tag or key-wrap integrity check did not verify (deliberately opaque).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// An input had a length the primitive does not accept; names the input.
    #[error("invalid length: {0}")]
    InvalidLength(&'static str),
    /// Argon2id refused its parameters or could not run.
    #[error("key derivation failed")]
    Kdf,
    /// The random source could not supply bytes.
    #[error("randomness unavailable")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_short_and_fixed() {
        assert_eq!(
            CryptoError::AuthenticationFailed.to_string(),
            "authentication failed"
        );
        assert_eq!(
            CryptoError::InvalidLength("salt").to_string(),
            "invalid length: salt"
        );
        assert_eq!(CryptoError::Kdf.to_string(), "key derivation failed");
        assert_eq!(CryptoError::Random.to_string(), "randomness unavailable");
    }
}
