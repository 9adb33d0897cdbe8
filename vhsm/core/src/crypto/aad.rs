//! The XKS AES-GCM additional-data framing: `u16be(len aad) || aad || u8(len md) || md`.

use super::CryptoError;

/// Builds the GCM AAD that binds the caller's AAD and the ciphertext metadata with length
/// prefixes, so no (aad, metadata) pair can be confused with another.
/// Errors if `aad` exceeds 65535 bytes or `metadata` exceeds 255 bytes.
pub fn xks_gcm_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let aad_len = u16::try_from(aad.len()).map_err(|_| CryptoError::InvalidLength("aad"))?;
    let md_len =
        u8::try_from(metadata.len()).map_err(|_| CryptoError::InvalidLength("metadata"))?;
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(md_len);
    out.extend_from_slice(metadata);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_lengths_big_endian() {
        assert_eq!(
            xks_gcm_aad(b"ab", b"c").unwrap(),
            vec![0, 2, b'a', b'b', 1, b'c']
        );
        let aad = vec![0u8; 300];
        let out = xks_gcm_aad(&aad, &[]).unwrap();
        assert_eq!(&out[..2], &[0x01, 0x2c]);
        assert_eq!(out[302], 0);
    }

    #[test]
    fn refuses_oversized_inputs() {
        assert_eq!(
            xks_gcm_aad(&vec![0; 65536], b"").unwrap_err(),
            CryptoError::InvalidLength("aad")
        );
        assert_eq!(
            xks_gcm_aad(b"", &[0; 256]).unwrap_err(),
            CryptoError::InvalidLength("metadata")
        );
    }
}
