//! Custodian share files: one Shamir share encrypted under its custodian's passphrase.
//!
//! Layout (big endian):
//! `"VHSMSHR" || format u8 (=1) || store_id [16] || epoch u32 || index u8 || threshold u8
//!  || count u8 || kdf m_cost_kib u32 || t_cost u32 || p_cost u32 || salt [16] || nonce [12]
//!  || ciphertext bytes(u32 len: share y || GCM tag) || checksum [32]`
//! where `checksum = SHA-256(everything before it)` (detects accidental corruption) and the GCM
//! key is `Argon2id(custodian passphrase, salt, kdf)` with AAD = every byte before `nonce`
//! (so a share cannot be relabelled without failing its tag).

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::crypto::{argon2id, ct_eq, sha256, GcmKey, KdfParams, GCM_IV_LEN, GCM_TAG_LEN};
use crate::env::RandomSource;
use crate::error::Error;
use crate::shamir::Share;
use crate::types::EncryptedShare;

const MAGIC: &[u8; 7] = b"VHSMSHR";
const FORMAT: u8 = 1;
const SALT_LEN: usize = 16;

/// A parsed (still encrypted) share file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareFile {
    pub(crate) store_id: [u8; 16],
    pub(crate) epoch: u32,
    pub(crate) index: u8,
    pub(crate) threshold: u8,
    pub(crate) count: u8,
    pub(crate) kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; GCM_IV_LEN],
    ciphertext: Vec<u8>,
}

fn invalid(what: &str) -> Error {
    Error::InvalidShare(what.to_string())
}

/// Short hex fingerprint of a share file (first 8 bytes of its SHA-256), for paper records.
pub(crate) fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&sha256(bytes)[..8])
}

impl ShareFile {
    fn aad(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(FORMAT)
            .raw(&self.store_id)
            .u32(self.epoch)
            .u8(self.index)
            .u8(self.threshold)
            .u8(self.count)
            .u32(self.kdf.m_cost_kib)
            .u32(self.kdf.t_cost)
            .u32(self.kdf.p_cost)
            .raw(&self.salt);
        w.finish_public()
    }

    /// The file's bytes (fields, nonce, ciphertext, checksum).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.aad();
        out.extend_from_slice(&self.nonce);
        let mut w = Writer::new();
        w.bytes(&self.ciphertext);
        out.extend_from_slice(w.as_slice());
        let sum = sha256(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Encrypts `share` under `passphrase` and returns the file.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create(
        store_id: [u8; 16],
        epoch: u32,
        share: &Share,
        threshold: u8,
        count: u8,
        kdf: &KdfParams,
        passphrase: &[u8],
        rng: &dyn RandomSource,
    ) -> Result<EncryptedShare, Error> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt)?;
        let mut nonce = [0u8; GCM_IV_LEN];
        rng.fill(&mut nonce)?;
        let mut file = ShareFile {
            store_id,
            epoch,
            index: share.x,
            threshold,
            count,
            kdf: *kdf,
            salt,
            nonce,
            ciphertext: Vec::new(),
        };
        let key = argon2id(passphrase, &salt, kdf)
            .map_err(|_| Error::Internal("share key derivation failed".into()))?;
        let (mut ct, tag) = GcmKey::new(&key).seal(&nonce, &file.aad(), &share.y);
        ct.extend_from_slice(&tag);
        file.ciphertext = ct;
        let bytes = file.encode();
        Ok(EncryptedShare {
            index: share.x,
            fingerprint: fingerprint(&bytes),
            bytes,
        })
    }

    /// Parses a share file: malformed, corrupt (checksum) or impossible fields → `InvalidShare`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<ShareFile, Error> {
        if bytes.len() < MAGIC.len() + 32 || !bytes.starts_with(MAGIC) {
            return Err(invalid("not a vhsm share file"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if !ct_eq(&sha256(body), sum) {
            return Err(invalid(
                "checksum mismatch: the share file is corrupt or truncated",
            ));
        }
        let mut r = Reader::new(body);
        let bad = |_| invalid("malformed share file");
        r.raw(MAGIC.len()).map_err(bad)?;
        if r.u8().map_err(bad)? != FORMAT {
            return Err(invalid("unsupported share file format version"));
        }
        let store_id = r.array().map_err(bad)?;
        let epoch = r.u32().map_err(bad)?;
        let index = r.u8().map_err(bad)?;
        let threshold = r.u8().map_err(bad)?;
        let count = r.u8().map_err(bad)?;
        let kdf = KdfParams {
            m_cost_kib: r.u32().map_err(bad)?,
            t_cost: r.u32().map_err(bad)?,
            p_cost: r.u32().map_err(bad)?,
        };
        let salt = r.array().map_err(bad)?;
        let nonce = r.array().map_err(bad)?;
        let ciphertext = r.bytes().map_err(bad)?.to_vec();
        r.finish().map_err(bad)?;
        if index == 0 || index > count || threshold == 0 || threshold > count || count > 16 {
            return Err(invalid("share file has impossible index/threshold/count"));
        }
        if !kdf.is_within_limits() {
            return Err(invalid("share file has out-of-range KDF parameters"));
        }
        if ciphertext.len() != 32 + GCM_TAG_LEN {
            return Err(invalid("share file has a wrong ciphertext length"));
        }
        Ok(ShareFile {
            store_id,
            epoch,
            index,
            threshold,
            count,
            kdf,
            salt,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts the share; `None` means the passphrase (or an authenticated field) is wrong.
    /// The KDF is only run when `allow_kdf` accepts the file's parameters.
    pub(crate) fn decrypt(&self, passphrase: &[u8]) -> Result<Option<Share>, Error> {
        let key = argon2id(passphrase, &self.salt, &self.kdf)
            .map_err(|_| invalid("share file has unusable KDF parameters"))?;
        let (ct, tag_bytes) = self
            .ciphertext
            .split_at(self.ciphertext.len() - GCM_TAG_LEN);
        let mut tag = [0u8; GCM_TAG_LEN];
        tag.copy_from_slice(tag_bytes);
        match GcmKey::new(&key).open(&self.nonce, &self.aad(), ct, &tag) {
            Ok(y) => Ok(Some(Share {
                x: self.index,
                y: Zeroizing::new(y.to_vec()),
            })),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::OsRandom;

    fn make() -> (Share, EncryptedShare) {
        let share = Share {
            x: 2,
            y: Zeroizing::new(vec![0x5a; 32]),
        };
        let f = ShareFile::create(
            [7; 16],
            3,
            &share,
            2,
            3,
            &KdfParams::INSECURE_FAST_FOR_TESTS,
            b"custodian pw",
            &OsRandom,
        )
        .unwrap();
        (share, f)
    }

    #[test]
    fn round_trip() {
        let (share, f) = make();
        assert_eq!(f.index, 2);
        assert_eq!(f.fingerprint.len(), 16);
        let parsed = ShareFile::parse(&f.bytes).unwrap();
        assert_eq!(
            (
                parsed.store_id,
                parsed.epoch,
                parsed.index,
                parsed.threshold,
                parsed.count
            ),
            ([7; 16], 3, 2, 2, 3)
        );
        let got = parsed.decrypt(b"custodian pw").unwrap().unwrap();
        assert_eq!(got.x, share.x);
        assert_eq!(*got.y, *share.y);
        assert!(
            !f.bytes.windows(32).any(|w| w == [0x5a; 32]),
            "share y must not appear in clear"
        );
    }

    #[test]
    fn wrong_passphrase_is_none() {
        let (_, f) = make();
        assert!(ShareFile::parse(&f.bytes)
            .unwrap()
            .decrypt(b"wrong")
            .unwrap()
            .is_none());
    }

    #[test]
    fn corrupt_truncated_or_foreign_format_refused() {
        let (_, f) = make();
        for i in 0..f.bytes.len() {
            let mut bad = f.bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(ShareFile::parse(&bad), Err(Error::InvalidShare(_))),
                "byte {i}"
            );
        }
        for cut in 0..f.bytes.len() {
            assert!(matches!(
                ShareFile::parse(&f.bytes[..cut]),
                Err(Error::InvalidShare(_))
            ));
        }
        assert!(matches!(
            ShareFile::parse(b"hello world"),
            Err(Error::InvalidShare(_))
        ));
    }

    #[test]
    fn relabelled_share_with_fixed_checksum_fails_its_tag() {
        let (_, f) = make();
        let mut parsed = ShareFile::parse(&f.bytes).unwrap();
        parsed.index = 3;
        let relabelled = ShareFile::parse(&parsed.encode()).unwrap();
        assert!(relabelled.decrypt(b"custodian pw").unwrap().is_none());
    }

    #[test]
    fn mutated_share_files_are_invalid_share_never_a_panic() {
        use crate::codec::tests::{mutants, Rng};
        let (_, f) = make();
        let mut rng = Rng::new(0x05ba_e001);
        for m in mutants(&f.bytes, &mut rng, 2000) {
            match ShareFile::parse(&m) {
                Err(Error::InvalidShare(_)) => {}
                Ok(_) => assert_eq!(m, f.bytes, "a mutated share file parsed"),
                Err(e) => panic!("unexpected error kind: {e:?}"),
            }
        }
    }

    /// Mutations of the body with a recomputed checksum reach the field checks and the AEAD:
    /// the outcome is `InvalidShare`, or a parsed file whose decryption yields no share.
    #[test]
    fn mutated_share_bodies_with_fresh_checksum_never_yield_a_share() {
        use crate::codec::tests::{mutants, Rng};
        let (share, f) = make();
        let body = &f.bytes[..f.bytes.len() - 32];
        let mut rng = Rng::new(0x05ba_e002);
        let mut decrypted = 0;
        for mut m in mutants(body, &mut rng, 2000) {
            let sum = sha256(&m);
            m.extend_from_slice(&sum);
            match ShareFile::parse(&m) {
                Err(Error::InvalidShare(_)) => {}
                Err(e) => panic!("unexpected error kind: {e:?}"),
                Ok(p) if m == f.bytes => {
                    assert_eq!(*p.decrypt(b"custodian pw").unwrap().unwrap().y, *share.y);
                }
                // Only run the KDF with the original (cheap) cost parameters.
                Ok(p) if p.kdf == KdfParams::INSECURE_FAST_FOR_TESTS && decrypted < 300 => {
                    decrypted += 1;
                    assert!(
                        p.decrypt(b"custodian pw").unwrap().is_none(),
                        "a relabelled or altered share decrypted"
                    );
                }
                Ok(p) => assert!(p.kdf.is_within_limits()),
            }
        }
        assert!(decrypted > 50, "mutations should reach the AEAD check");
    }

    #[test]
    fn random_bytes_after_magic_are_invalid_share() {
        use crate::codec::tests::Rng;
        let mut rng = Rng::new(0x05ba_e003);
        for _ in 0..2000 {
            let n = rng.below(200);
            let mut m = MAGIC.to_vec();
            m.extend(rng.bytes(n));
            let sum = sha256(&m);
            m.extend_from_slice(&sum);
            assert!(matches!(ShareFile::parse(&m), Err(Error::InvalidShare(_))));
        }
    }
}
