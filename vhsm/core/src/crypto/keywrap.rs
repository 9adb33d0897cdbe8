//! AES-256 key wrapping: RFC 3394 (KW) and RFC 5649 (KWP, with padding).

use aes_kw::{KeyInit, KwAes256, KwpAes256};
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey};

/// One semiblock (the KW integrity-check value length), in bytes.
const SEMIBLOCK: usize = 8;
/// RFC 5649 caps the plaintext at 2^32 - 1 bytes (its length field is 32 bits).
const KWP_MAX_KEY_LEN: usize = u32::MAX as usize;

/// Wraps `key` (a multiple of 8 bytes, at least 16) under `kek` per RFC 3394.
pub fn aes_kw_wrap(kek: &SecretKey, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if key.len() < 2 * SEMIBLOCK || !key.len().is_multiple_of(SEMIBLOCK) {
        return Err(CryptoError::InvalidLength("key to wrap"));
    }
    let mut out = vec![0u8; key.len() + SEMIBLOCK];
    KwAes256::new(kek.expose().into())
        .wrap_key(key, &mut out)
        .map_err(|_| CryptoError::InvalidLength("key to wrap"))?;
    Ok(out)
}

/// Unwraps an RFC 3394 blob (a multiple of 8 bytes, at least 24) under `kek`.
pub fn aes_kw_unwrap(kek: &SecretKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() < 3 * SEMIBLOCK || !wrapped.len().is_multiple_of(SEMIBLOCK) {
        return Err(CryptoError::InvalidLength("wrapped key"));
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - SEMIBLOCK]);
    KwAes256::new(kek.expose().into())
        .unwrap_key(wrapped, &mut out)
        .map_err(map_unwrap_error)?;
    Ok(out)
}

/// Wraps `key` (1 to 2^32-1 bytes) under `kek` per RFC 5649.
pub fn aes_kwp_wrap(kek: &SecretKey, key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if key.is_empty() || key.len() > KWP_MAX_KEY_LEN {
        return Err(CryptoError::InvalidLength("key to wrap"));
    }
    let mut out = vec![0u8; key.len().div_ceil(SEMIBLOCK) * SEMIBLOCK + SEMIBLOCK];
    let written = KwpAes256::new(kek.expose().into())
        .wrap_key(key, &mut out)
        .map_err(|_| CryptoError::InvalidLength("key to wrap"))?
        .len();
    out.truncate(written);
    Ok(out)
}

/// Unwraps an RFC 5649 blob (a multiple of 8 bytes, at least 16) under `kek`.
pub fn aes_kwp_unwrap(kek: &SecretKey, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() < 2 * SEMIBLOCK || !wrapped.len().is_multiple_of(SEMIBLOCK) {
        return Err(CryptoError::InvalidLength("wrapped key"));
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - SEMIBLOCK]);
    let len = KwpAes256::new(kek.expose().into())
        .unwrap_key(wrapped, &mut out)
        .map_err(map_unwrap_error)?
        .len();
    out.truncate(len);
    Ok(out)
}

fn map_unwrap_error(err: aes_kw::Error) -> CryptoError {
    match err {
        aes_kw::Error::IntegrityCheckFailed => CryptoError::AuthenticationFailed,
        aes_kw::Error::InvalidDataSize | aes_kw::Error::InvalidOutputSize { .. } => {
            CryptoError::InvalidLength("wrapped key")
        }
    }
}
