//! The crypto hot path of the `Vhsm` facade: encrypt (optionally self-checked, with its CDIV),
//! decrypt, wrap, unwrap, random.
//!
//! Only a read lock on the key cache is taken (and released before any crypto); no storage
//! I/O, no allocation beyond the output, the AAD framing and (self-check) the reopened plaintext.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::crypto::{
    aes_kwp_unwrap, aes_kwp_wrap, ct_eq, sha256_parts, xks_gcm_aad, GCM_IV_LEN, GCM_TAG_LEN,
};
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

pub(crate) fn usable(key: &CachedKey, usage: Usage) -> Result<(), Error> {
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

/// The material of the version `key` encrypts under.
pub(crate) fn current_version_key(key: &CachedKey) -> Result<&Arc<VersionKey>, Error> {
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

/// Opens `out` exactly as `decrypt` would (GCM AAD rebuilt from `aad` and the returned
/// metadata) and compares the result with `plaintext` in constant time.
fn self_check(
    material: &VersionKey,
    aad: &[u8],
    out: &EncryptOutput,
    plaintext: &[u8],
) -> Result<(), Error> {
    let failed = || Error::Internal("encrypt self-check failed".into());
    let gcm_aad = xks_gcm_aad(aad, &out.metadata).map_err(|_| failed())?;
    let back = material
        .gcm
        .open(&out.iv, &gcm_aad, &out.ciphertext, &out.tag)
        .map_err(|_| failed())?;
    if ct_eq(&back, plaintext) {
        Ok(())
    } else {
        Err(failed())
    }
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

    /// AES-256-GCM encrypt under the key's current version with a random 96-bit IV, counted
    /// against the version's invocation budget (`invocations`). The GCM AAD is `u16be(len aad) || aad || u8(len md) || md` with `md = [0x01][u32be version]`.
    pub fn encrypt(&self, id: &str, plaintext: &[u8], aad: &[u8]) -> Result<EncryptOutput, Error> {
        self.seal_then(id, plaintext, aad, &[Usage::Encrypt], |_, _| Ok(()))
            .map(|(out, ())| out)
    }

    /// `encrypt`, then the XKS ciphertext data integrity value computed at the source and a
    /// self-check: returns the output and `SHA-256(aad || metadata || iv || ciphertext || tag)`
    /// (plain concatenation), computed immediately after sealing; then the output is opened
    /// with the same prepared key version and compared with `plaintext` in constant time.
    ///
    /// The integrity value promises KMS that a later Decrypt of this output succeeds, so the key
    /// must allow DECRYPT as well as ENCRYPT (an encrypt-only key is `UsageNotAllowed`, as the
    /// AWS conformance client expects); both are checked before anything is encrypted. Any
    /// self-check failure is `Internal("encrypt self-check failed")` and nothing is returned.
    pub fn encrypt_verified(
        &self,
        id: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(EncryptOutput, [u8; 32]), Error> {
        self.seal_then(
            id,
            plaintext,
            aad,
            &[Usage::Encrypt, Usage::Decrypt],
            |material, out| {
                let cdiv = sha256_parts(&[aad, &out.metadata, &out.iv, &out.ciphertext, &out.tag]);
                self_check(material, aad, out, plaintext)?;
                Ok(cdiv)
            },
        )
    }

    /// The encrypt checks (sizes, state, each of `usages`) and the sealing, then `after` with
    /// the version key that sealed and the output, while the key is still held.
    fn seal_then<T>(
        &self,
        id: &str,
        plaintext: &[u8],
        aad: &[u8],
        usages: &[Usage],
        after: impl FnOnce(&VersionKey, &EncryptOutput) -> Result<T, Error>,
    ) -> Result<(EncryptOutput, T), Error> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(Error::TooLarge("plaintext"));
        }
        if aad.len() > MAX_AAD_LEN {
            return Err(Error::TooLarge("aad"));
        }
        let (key, material) = self.key_with_invocation(id, usages)?;
        let version = key.info.current_version;
        let material = &material;
        let mut metadata = Vec::with_capacity(METADATA_LEN);
        metadata.push(METADATA_FORMAT);
        metadata.extend_from_slice(&version.to_be_bytes());
        let gcm_aad = xks_gcm_aad(aad, &metadata).map_err(|_| Error::TooLarge("aad"))?;
        let mut iv = [0u8; GCM_IV_LEN];
        self.rng.fill(&mut iv)?;
        let mut ciphertext = plaintext.to_vec();
        let tag = material.gcm.seal_in_place(&iv, &gcm_aad, &mut ciphertext);
        let out = EncryptOutput {
            ciphertext,
            iv,
            tag,
            metadata,
        };
        let extra = after(material, &out)?;
        Ok((out, extra))
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
        let wrapped = aes_kwp_wrap(&current_version_key(&key)?.secret, material)
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
    use crate::crypto::SecretKey;
    use crate::{
        InitRequest, MemoryStorage, NewKey, Options, OsRandom, SecretString, SystemClock, UsageSet,
    };
    use sha2::Digest as _;
    use std::collections::BTreeMap;

    /// An initialized, unsealed in-memory store with keys `k` (ENCRYPT+DECRYPT), `enc-only`
    /// (ENCRYPT) and `wrap-only` (WRAP).
    fn store() -> Vhsm {
        let v = Vhsm::open(
            Arc::new(MemoryStorage::new()),
            Arc::new(OsRandom),
            Arc::new(SystemClock),
            Options::insecure_for_tests(),
        )
        .unwrap();
        let pw = || SecretString::from("correct horse battery staple".to_string());
        v.initialize(InitRequest::Passphrase(pw()), "admin")
            .unwrap();
        v.unseal_with_passphrase(&pw(), "admin").unwrap();
        for (id, usage) in [
            ("k", UsageSet::ENCRYPT_DECRYPT),
            ("enc-only", UsageSet::of(&[Usage::Encrypt])),
            ("wrap-only", UsageSet::of(&[Usage::Wrap])),
        ] {
            let spec = NewKey {
                id: id.into(),
                usage,
                labels: BTreeMap::new(),
            };
            v.create_key(spec, "admin").unwrap();
        }
        v
    }

    fn decrypt_output(v: &Vhsm, out: &EncryptOutput, aad: &[u8]) -> Result<Vec<u8>, Error> {
        let input = DecryptInput {
            ciphertext: &out.ciphertext,
            iv: &out.iv,
            tag: &out.tag,
            aad,
            metadata: &out.metadata,
        };
        v.decrypt("k", &input).map(|p| p.to_vec())
    }

    #[test]
    fn encrypt_verified_returns_the_cdiv_of_what_it_returns() {
        let v = store();
        let (out, cdiv) = v.encrypt_verified("k", b"attack at dawn", b"ctx").unwrap();
        // Recomputed independently of `sha256_parts`, from the concatenated bytes.
        let mut all = b"ctx".to_vec();
        for part in [&out.metadata[..], &out.iv, &out.ciphertext, &out.tag] {
            all.extend_from_slice(part);
        }
        let expected: [u8; 32] = sha2::Sha256::digest(&all).into();
        assert_eq!(cdiv, expected);
        assert_eq!(out.ciphertext.len(), 14);
        assert_eq!(parse_metadata(&out.metadata).unwrap(), 1);
        // The output is an ordinary ciphertext: decrypt opens it, with the AAD only.
        assert_eq!(decrypt_output(&v, &out, b"ctx").unwrap(), b"attack at dawn");
        assert_eq!(
            decrypt_output(&v, &out, b"other"),
            Err(Error::InvalidCiphertext)
        );
        // Fresh IV per call, so a fresh CDIV.
        let (out2, cdiv2) = v.encrypt_verified("k", b"attack at dawn", b"ctx").unwrap();
        assert_ne!((out2.iv, cdiv2), (out.iv, cdiv));
    }

    #[test]
    fn encrypt_verified_needs_encrypt_and_decrypt_usage() {
        let v = store();
        // Plain encrypt works with an encrypt-only key; the verified one promises a decrypt.
        assert_eq!(
            v.encrypt("enc-only", b"x", b"").unwrap().ciphertext.len(),
            1
        );
        assert_eq!(
            v.encrypt_verified("enc-only", b"x", b""),
            Err(Error::UsageNotAllowed {
                key: "enc-only".into(),
                usage: "DECRYPT"
            })
        );
        assert_eq!(
            v.encrypt_verified("wrap-only", b"x", b""),
            Err(Error::UsageNotAllowed {
                key: "wrap-only".into(),
                usage: "ENCRYPT"
            })
        );
    }

    #[test]
    fn encrypt_verified_makes_the_encrypt_checks() {
        let v = store();
        assert_eq!(
            v.encrypt_verified("k", &vec![0; MAX_PLAINTEXT_LEN + 1], b""),
            Err(Error::TooLarge("plaintext"))
        );
        assert_eq!(
            v.encrypt_verified("k", b"", &vec![0; MAX_AAD_LEN + 1]),
            Err(Error::TooLarge("aad"))
        );
        assert_eq!(
            v.encrypt_verified("nope", b"", b""),
            Err(Error::KeyNotFound("nope".into()))
        );
        v.disable_key("k", "admin").unwrap();
        assert_eq!(
            v.encrypt_verified("k", b"x", b""),
            Err(Error::KeyDisabled("k".into()))
        );
        v.seal("admin").unwrap();
        assert_eq!(v.encrypt_verified("k", b"x", b""), Err(Error::Sealed));
    }

    #[test]
    fn self_check_refuses_any_corruption_without_detail() {
        let material = VersionKey::new(SecretKey::from_bytes([9; 32]));
        let md = vec![METADATA_FORMAT, 0, 0, 0, 1];
        let iv = [3; GCM_IV_LEN];
        let mut ct = b"plaintext".to_vec();
        let tag = material
            .gcm
            .seal_in_place(&iv, &xks_gcm_aad(b"a", &md).unwrap(), &mut ct);
        let good = EncryptOutput {
            ciphertext: ct,
            iv,
            tag,
            metadata: md,
        };
        assert_eq!(self_check(&material, b"a", &good, b"plaintext"), Ok(()));
        let failed = Err(Error::Internal("encrypt self-check failed".into()));
        // A different plaintext than was sealed (the comparison).
        assert_eq!(self_check(&material, b"a", &good, b"plaintexT"), failed);
        // A bit flipped in any returned part, or the AAD (authentication).
        let mut flips = vec![good.clone(); 4];
        flips[0].ciphertext[0] ^= 1;
        flips[1].iv[0] ^= 1;
        flips[2].tag[0] ^= 1;
        flips[3].metadata[4] ^= 1;
        for bad in &flips {
            assert_eq!(self_check(&material, b"a", bad, b"plaintext"), failed);
        }
        assert_eq!(self_check(&material, b"b", &good, b"plaintext"), failed);
    }

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

    #[test]
    fn parse_metadata_on_random_bytes_is_typed() {
        use crate::codec::tests::Rng;
        let mut rng = Rng::new(0x3e7a_0001);
        for _ in 0..5000 {
            let n = rng.below(2 * METADATA_LEN + 1);
            let mut md = rng.bytes(n);
            if rng.below(2) == 0 {
                if let Some(b) = md.first_mut() {
                    *b = METADATA_FORMAT;
                }
            }
            match parse_metadata(&md) {
                Ok(version) => {
                    let mut enc = vec![METADATA_FORMAT];
                    enc.extend_from_slice(&version.to_be_bytes());
                    assert_eq!(enc, md);
                }
                Err(e) => {
                    assert!(matches!(e, Error::InvalidCiphertext));
                    assert!(md.len() != METADATA_LEN || md[0] != METADATA_FORMAT);
                }
            }
        }
    }
}
