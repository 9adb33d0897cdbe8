//! The crypto hot path of the `Vhsm` facade: encrypt, decrypt, wrap, unwrap, random.
//!
//! Only a read lock on the key cache is taken (and released before any crypto); no storage
//! I/O, no allocation beyond the output and the AAD framing.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::crypto::{aes_kwp_unwrap, aes_kwp_wrap, xks_gcm_aad, GCM_IV_LEN, GCM_TAG_LEN};
use crate::error::Error;
use crate::keyops::state_error;
use crate::keys::{CachedKey, VersionKey};
use crate::types::{DecryptInput, EncryptOutput, Usage};
use crate::vhsm::{Hot, Vhsm};
use crate::{MAX_AAD_LEN, MAX_PLAINTEXT_LEN, MAX_RANDOM_LEN, MAX_WRAP_MATERIAL_LEN};

/// Ciphertext metadata format version.
pub const METADATA_FORMAT: u8 = 0x01;
/// Ciphertext metadata length: format byte + u32be key version.
pub const METADATA_LEN: usize = 5;

fn usable(key: &CachedKey, usage: Usage) -> Result<(), Error> {
    if let Some(e) = state_error(&key.info) {
        return Err(e);
    }
    if !key.info.usage.contains(usage) {
        return Err(Error::UsageNotAllowed {
            key: key.info.key_id.clone(),
            usage: usage.as_str(),
        });
    }
    Ok(())
}

/// The material of `version` if decryption with it is allowed.
fn version_for_decrypt(key: &CachedKey, version: u32) -> Result<&Arc<VersionKey>, Error> {
    let material = key.versions.get(&version).ok_or(Error::InvalidCiphertext)?;
    if version < key.info.min_decryption_version {
        return Err(Error::KeyVersionNotAllowed);
    }
    Ok(material)
}

fn current(key: &CachedKey) -> Result<&Arc<VersionKey>, Error> {
    key.versions
        .get(&key.info.current_version)
        .ok_or_else(|| Error::Internal("current key version missing from cache".into()))
}

/// Parses `[0x01][u32be version]`; anything else is `InvalidCiphertext`.
pub(crate) fn parse_metadata(md: &[u8]) -> Result<u32, Error> {
    if md.len() != METADATA_LEN || md[0] != METADATA_FORMAT {
        return Err(Error::InvalidCiphertext);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&md[1..]);
    Ok(u32::from_be_bytes(v))
}

impl Vhsm {
    fn ensure_unsealed_hot(&self) -> Result<(), Error> {
        let guard = self
            .hot
            .read()
            .map_err(|_| Error::Internal("key cache lock poisoned".into()))?;
        match &*guard {
            Hot::Uninitialized => Err(Error::Uninitialized),
            Hot::Sealed => Err(Error::Sealed),
            Hot::Unsealed(_) => Ok(()),
        }
    }

    /// AES-256-GCM encrypt under the key's current version with a random 96-bit IV. The GCM
    /// AAD is `u16be(len aad) || aad || u8(len md) || md` with `md = [0x01][u32be version]`.
    pub fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<EncryptOutput, Error> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge("plaintext"));
        }
        if aad.len() > MAX_AAD_LEN {
            return Err(Error::TooLarge("aad"));
        }
        let key = self.cached(id)?;
        usable(&key, Usage::Encrypt)?;
        let version = key.info.current_version;
        let material = current(&key)?;
        let mut metadata = Vec::with_capacity(METADATA_LEN);
        metadata.push(METADATA_FORMAT);
        metadata.extend_from_slice(&version.to_be_bytes());
        let gcm_aad = xks_gcm_aad(aad, &metadata).map_err(|_| Error::TooLarge("aad"))?;
        let mut iv = [0u8; GCM_IV_LEN];
        self.rng.fill(&mut iv)?;
        let mut ciphertext = plaintext.to_vec();
        let tag = material.gcm.seal_in_place(&iv, &gcm_aad, &mut ciphertext);
        Ok(EncryptOutput {
            ciphertext,
            iv,
            tag,
            metadata,
        })
    }

    /// AES-256-GCM decrypt; the key version comes from the metadata. Any authentication
    /// failure (ciphertext, IV, tag, AAD or metadata) is the single opaque `InvalidCiphertext`.
    pub fn decrypt(&self, id: &str, input: &DecryptInput<'_>) -> Result<Zeroizing<Vec<u8>>, Error> {
        if input.ciphertext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge("ciphertext"));
        }
        if input.aad.len() > MAX_AAD_LEN {
            return Err(Error::TooLarge("aad"));
        }
        let iv: [u8; GCM_IV_LEN] = input
            .iv
            .try_into()
            .map_err(|_| Error::InvalidArgument("iv"))?;
        let tag: [u8; GCM_TAG_LEN] = input
            .tag
            .try_into()
            .map_err(|_| Error::InvalidArgument("tag"))?;
        let key = self.cached(id)?;
        usable(&key, Usage::Decrypt)?;
        let version = parse_metadata(input.metadata)?;
        let material = version_for_decrypt(&key, version)?;
        let gcm_aad =
            xks_gcm_aad(input.aad, input.metadata).map_err(|_| Error::InvalidCiphertext)?;
        material
            .gcm
            .open(&iv, &gcm_aad, input.ciphertext, &tag)
            .map_err(|_| Error::InvalidCiphertext)
    }

    /// AES-KWP (RFC 5649) wrap of `material` (1..=64 KiB) under the key's current version;
    /// returns (wrapped, version).
    pub fn wrap_key(&self, id: &str, material: &[u8]) -> Result<(Vec<u8>, u32), Error> {
        if material.is_empty() {
            return Err(Error::InvalidArgument("material"));
        }
        if material.len() > MAX_WRAP_MATERIAL_LEN {
            return Err(Error::TooLarge("material"));
        }
        let key = self.cached(id)?;
        usable(&key, Usage::Wrap)?;
        let version = key.info.current_version;
        let wrapped = aes_kwp_wrap(&current(&key)?.secret, material)
            .map_err(|_| Error::InvalidArgument("material"))?;
        Ok((wrapped, version))
    }

    /// AES-KWP unwrap under key version `version`; integrity failure → `InvalidCiphertext`.
    pub fn unwrap_key(
        &self,
        id: &str,
        wrapped: &[u8],
        version: u32,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        if wrapped.len() > MAX_WRAP_MATERIAL_LEN + 16 {
            return Err(Error::TooLarge("wrapped"));
        }
        let key = self.cached(id)?;
        usable(&key, Usage::Unwrap)?;
        let material = version_for_decrypt(&key, version)?;
        aes_kwp_unwrap(&material.secret, wrapped).map_err(|_| Error::InvalidCiphertext)
    }

    /// `len` (≤ 1024) bytes from the random source. Needs Unsealed.
    pub fn random(&self, len: usize) -> Result<Vec<u8>, Error> {
        if len > MAX_RANDOM_LEN {
            return Err(Error::TooLarge("len"));
        }
        self.ensure_unsealed_hot()?;
        let mut out = vec![0u8; len];
        self.rng.fill(&mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parsing() {
        assert_eq!(parse_metadata(&[1, 0, 0, 0, 7]).unwrap(), 7);
        for bad in [
            &[][..],
            &[1, 0, 0, 7],
            &[2, 0, 0, 0, 7],
            &[1, 0, 0, 0, 7, 0],
        ] {
            assert_eq!(parse_metadata(bad), Err(Error::InvalidCiphertext));
        }
    }
}
