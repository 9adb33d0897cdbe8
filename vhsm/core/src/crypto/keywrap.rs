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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn kw_round_trip_adds_one_semiblock() {
        let kek = SecretKey::from_bytes([1; 32]);
        let key = [0x5c; 32];
        let wrapped = aes_kw_wrap(&kek, &key).unwrap();
        assert_eq!(wrapped.len(), 40);
        assert_eq!(aes_kw_unwrap(&kek, &wrapped).unwrap().as_slice(), &key);
    }

    #[test]
    fn kwp_pads_to_semiblocks() {
        let kek = SecretKey::from_bytes([1; 32]);
        assert_eq!(aes_kwp_wrap(&kek, &[1]).unwrap().len(), 16);
        assert_eq!(aes_kwp_wrap(&kek, &[1; 9]).unwrap().len(), 24);
        let wrapped = aes_kwp_wrap(&kek, &[7; 9]).unwrap();
        assert_eq!(aes_kwp_unwrap(&kek, &wrapped).unwrap().as_slice(), &[7; 9]);
    }

    #[test]
    fn wrong_kek_is_an_authentication_failure() {
        let wrapped = aes_kw_wrap(&SecretKey::from_bytes([1; 32]), &[0; 16]).unwrap();
        assert_eq!(
            aes_kw_unwrap(&SecretKey::from_bytes([2; 32]), &wrapped).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
        let wrapped = aes_kwp_wrap(&SecretKey::from_bytes([1; 32]), &[0; 5]).unwrap();
        assert_eq!(
            aes_kwp_unwrap(&SecretKey::from_bytes([2; 32]), &wrapped).unwrap_err(),
            CryptoError::AuthenticationFailed
        );
    }

    #[test]
    fn crate_errors_map_to_opaque_or_length_errors() {
        assert_eq!(
            map_unwrap_error(aes_kw::Error::IntegrityCheckFailed),
            CryptoError::AuthenticationFailed
        );
        assert_eq!(
            map_unwrap_error(aes_kw::Error::InvalidDataSize),
            CryptoError::InvalidLength("wrapped key")
        );
        assert_eq!(
            map_unwrap_error(aes_kw::Error::InvalidOutputSize { expected_len: 8 }),
            CryptoError::InvalidLength("wrapped key")
        );
    }
}
