//! `GcmKey`: a prepared AES-256-GCM cipher with detached 128-bit tags and 96-bit IVs.

use std::fmt;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{AesGcm, Nonce, Tag};
use zeroize::Zeroizing;

use super::{CryptoError, SecretKey, GCM_IV_LEN, GCM_TAG_LEN};

/// AES-256-GCM over the encryption-only AES key schedule: GCM never runs the block cipher's
/// decryption, so the inverse round keys (a third of `aes_gcm::Aes256Gcm`'s 624 bytes) would
/// only cost memory in every cached key version.
type Aes256GcmEnc = AesGcm<aes::Aes256Enc, U12>;

/// A prepared AES-256-GCM cipher: the key schedule is computed once; `Send + Sync`, so one
/// instance can be shared across threads behind an `Arc`.
pub struct GcmKey {
    cipher: Aes256GcmEnc,
}

impl GcmKey {
    /// Expands `key` into an AES-256-GCM cipher.
    pub fn new(key: &SecretKey) -> Self {
        let cipher = Aes256GcmEnc::new(key.expose().into());
        Self { cipher }
    }

    /// Encrypts `plaintext` under `iv` binding `aad`; returns the ciphertext and its tag.
    ///
    /// The caller owns IV uniqueness: never call twice with the same key and IV.
    pub fn seal(
        &self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> (Vec<u8>, [u8; GCM_TAG_LEN]) {
        let mut buf = plaintext.to_vec();
        let tag = self.seal_in_place(iv, aad, &mut buf);
        (buf, tag)
    }

    /// Encrypts `buf` in place (plaintext in, ciphertext out) and returns the tag.
    pub fn seal_in_place(
        &self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> [u8; GCM_TAG_LEN] {
        let nonce = Nonce::from(*iv);
        // INVARIANT: AES-GCM only refuses plaintexts over 2^36-32 bytes (64 GiB) or AAD over
        // 2^61-1 bytes; the vhsm caps every request at a few MiB (`TooLarge`) long before here,
        // and such a buffer could not be allocated next to its copy anyway.
        #[allow(clippy::expect_used)]
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into())
            .expect("AES-GCM input within the 64 GiB limit");
        tag.into()
    }

    /// Verifies `tag` over `ciphertext` and `aad` (constant time) and, only if it verifies,
    /// returns the plaintext in a zeroizing buffer.
    pub fn open(
        &self,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; GCM_TAG_LEN],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let nonce = Nonce::from(*iv);
        let tag = Tag::from(*tag);
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        self.cipher
            .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
            .map_err(|_| CryptoError::AuthenticationFailed)?;
        Ok(buf)
    }
}

impl fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcmKey([REDACTED])")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(byte: u8) -> GcmKey {
        GcmKey::new(&SecretKey::from_bytes([byte; 32]))
    }

    #[test]
    fn a_prepared_key_holds_no_decryption_schedule() {
        assert!(std::mem::size_of::<GcmKey>() < std::mem::size_of::<aes_gcm::Aes256Gcm>());
    }

    #[test]
    fn seal_then_open_round_trips() {
        let gcm = key(1);
        let (ct, tag) = gcm.seal(&[2; 12], b"aad", b"attack at dawn");
        assert_ne!(ct.as_slice(), b"attack at dawn");
        assert_eq!(
            gcm.open(&[2; 12], b"aad", &ct, &tag).unwrap().as_slice(),
            b"attack at dawn"
        );
    }

    #[test]
    fn seal_in_place_equals_seal() {
        let gcm = key(1);
        let (ct, tag) = gcm.seal(&[3; 12], b"x", b"payload bytes");
        let mut buf = b"payload bytes".to_vec();
        let tag2 = gcm.seal_in_place(&[3; 12], b"x", &mut buf);
        assert_eq!((buf, tag2), (ct, tag));
    }

    #[test]
    fn open_refuses_every_mismatch_with_one_opaque_error() {
        let gcm = key(1);
        let iv = [4; 12];
        let (ct, tag) = gcm.seal(&iv, b"aad", b"secret");
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        let mut bad_ct = ct.clone();
        bad_ct[0] ^= 1;
        let failures = [
            gcm.open(&iv, b"aad", &ct, &bad_tag),
            gcm.open(&iv, b"aad", &bad_ct, &tag),
            gcm.open(&iv, b"aae", &ct, &tag),
            gcm.open(&[5; 12], b"aad", &ct, &tag),
            key(2).open(&iv, b"aad", &ct, &tag),
        ];
        for result in failures {
            assert_eq!(result.unwrap_err(), CryptoError::AuthenticationFailed);
        }
    }

    #[test]
    fn different_ivs_give_different_ciphertexts() {
        let gcm = key(1);
        let (a, ta) = gcm.seal(&[0; 12], b"", b"same plaintext");
        let (b, tb) = gcm.seal(&[1; 12], b"", b"same plaintext");
        assert_ne!(a, b);
        assert_ne!(ta, tb);
    }
}
