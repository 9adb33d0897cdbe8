//! The plaintext store header: format, store id, unseal mode, KDF, wrapped root key, audit key, MAC.
//!
//! Layout (all integers big endian), stored at `Tree::Header` / `b"header"`:
//! `"VHSMHDR" || format u8 (=1) || store_id [16] || epoch u32 || mode u8 (1 passphrase, 2 shares)
//!  || threshold u8 || count u8 || kdf m_cost_kib u32 || t_cost u32 || p_cost u32
//!  || salt bytes(u32 len) || wrapped_root bytes(u32 len) || audit_public_key [32] || mac [32]`.
//! `mac = HMAC-SHA256(subkey(root, "header-mac"), everything before it)`, checked at unseal.
//! `epoch` counts rekeys; shares carry it so shares of an earlier epoch are refused clearly.

use crate::codec::{Reader, Writer};
use crate::crypto::{ct_eq, derive_subkey, hmac_sha256, KdfParams, SecretKey};
use crate::error::Error;
use crate::types::UnsealMode;

/// Record key of the header in `Tree::Header`.
pub(crate) const HEADER_KEY: &[u8] = b"header";
const MAGIC: &[u8; 7] = b"VHSMHDR";
const FORMAT: u8 = 1;
const MAC_LABEL: &str = "header-mac";

/// The decoded store header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) store_id: [u8; 16],
    pub(crate) epoch: u32,
    pub(crate) mode: UnsealMode,
    pub(crate) threshold: u8,
    pub(crate) count: u8,
    pub(crate) kdf: KdfParams,
    /// Passphrase-mode Argon2id salt; empty in shares mode (each share has its own).
    pub(crate) salt: Vec<u8>,
    /// Root key wrapped with AES-KW under the master key.
    pub(crate) wrapped_root: Vec<u8>,
    pub(crate) audit_public_key: [u8; 32],
    pub(crate) mac: [u8; 32],
}

fn corrupt(what: &str) -> Error {
    Error::Corruption(format!("store header: {what}"))
}

impl Header {
    /// Hex store id.
    pub(crate) fn store_id_hex(&self) -> String {
        hex::encode(self.store_id)
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(FORMAT)
            .raw(&self.store_id)
            .u32(self.epoch)
            .u8(match self.mode {
                UnsealMode::Passphrase => 1,
                UnsealMode::Shares => 2,
            })
            .u8(self.threshold)
            .u8(self.count)
            .u32(self.kdf.m_cost_kib)
            .u32(self.kdf.t_cost)
            .u32(self.kdf.p_cost)
            .bytes(&self.salt)
            .bytes(&self.wrapped_root)
            .raw(&self.audit_public_key);
        w.finish_public()
    }

    /// The stored bytes (body || mac).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.mac);
        out
    }

    /// Parses stored bytes; any malformation is `Corruption`. The MAC is not checked here.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, Error> {
        let mut r = Reader::new(bytes);
        let bad = |_| corrupt("malformed");
        if r.raw(MAGIC.len()).map_err(bad)? != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if r.u8().map_err(bad)? != FORMAT {
            return Err(corrupt("unsupported format version"));
        }
        let store_id = r.array().map_err(bad)?;
        let epoch = r.u32().map_err(bad)?;
        let mode = match r.u8().map_err(bad)? {
            1 => UnsealMode::Passphrase,
            2 => UnsealMode::Shares,
            _ => return Err(corrupt("unknown unseal mode")),
        };
        let threshold = r.u8().map_err(bad)?;
        let count = r.u8().map_err(bad)?;
        let kdf = KdfParams {
            m_cost_kib: r.u32().map_err(bad)?,
            t_cost: r.u32().map_err(bad)?,
            p_cost: r.u32().map_err(bad)?,
        };
        let salt = r.bytes().map_err(bad)?.to_vec();
        let wrapped_root = r.bytes().map_err(bad)?.to_vec();
        let audit_public_key = r.array().map_err(bad)?;
        let mac = r.array().map_err(bad)?;
        r.finish().map_err(bad)?;
        let shape_ok = match mode {
            UnsealMode::Passphrase => threshold == 1 && count == 1 && salt.len() >= 16,
            UnsealMode::Shares => {
                threshold >= 1 && threshold <= count && count <= 16 && salt.is_empty()
            }
        };
        if !shape_ok || wrapped_root.len() != 40 || !kdf.is_within_limits() {
            return Err(corrupt("inconsistent fields"));
        }
        Ok(Header {
            store_id,
            epoch,
            mode,
            threshold,
            count,
            kdf,
            salt,
            wrapped_root,
            audit_public_key,
            mac,
        })
    }

    fn compute_mac(&self, root: &SecretKey) -> [u8; 32] {
        hmac_sha256(derive_subkey(root, MAC_LABEL).expose(), &self.body())
    }

    /// Sets `mac` from the root key.
    pub(crate) fn sign(&mut self, root: &SecretKey) {
        self.mac = self.compute_mac(root);
    }

    /// Checks `mac` (constant time); a mismatch means tampering: `Corruption`.
    pub(crate) fn verify(&self, root: &SecretKey) -> Result<(), Error> {
        if ct_eq(&self.compute_mac(root), &self.mac) {
            Ok(())
        } else {
            Err(corrupt("MAC mismatch (tampered)"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Header {
        Header {
            store_id: [1; 16],
            epoch: 0,
            mode: UnsealMode::Passphrase,
            threshold: 1,
            count: 1,
            kdf: KdfParams::INSECURE_FAST_FOR_TESTS,
            salt: vec![2; 16],
            wrapped_root: vec![3; 40],
            audit_public_key: [4; 32],
            mac: [0; 32],
        }
    }

    #[test]
    fn round_trip_and_mac() {
        let root = SecretKey::from_bytes([5; 32]);
        let mut h = sample();
        h.sign(&root);
        let parsed = Header::parse(&h.encode()).unwrap();
        assert_eq!(parsed, h);
        parsed.verify(&root).unwrap();
        assert!(matches!(
            parsed.verify(&SecretKey::from_bytes([6; 32])),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let root = SecretKey::from_bytes([5; 32]);
        let mut h = sample();
        h.sign(&root);
        let enc = h.encode();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            let r = Header::parse(&bad).and_then(|p| p.verify(&root));
            assert!(matches!(r, Err(Error::Corruption(_))), "byte {i}");
        }
        for cut in 0..enc.len() {
            assert!(matches!(
                Header::parse(&enc[..cut]),
                Err(Error::Corruption(_))
            ));
        }
    }

    #[test]
    fn inconsistent_shapes_refused() {
        let mut h = sample();
        h.threshold = 2;
        assert!(Header::parse(&h.encode()).is_err());
        let mut h = sample();
        h.mode = UnsealMode::Shares;
        h.threshold = 2;
        h.count = 3;
        assert!(
            Header::parse(&h.encode()).is_err(),
            "shares mode has no salt"
        );
        h.salt.clear();
        assert!(Header::parse(&h.encode()).is_ok());
        h.count = 17;
        assert!(Header::parse(&h.encode()).is_err());
    }

    #[test]
    fn mutated_headers_are_corruption_or_fail_the_mac() {
        use crate::codec::tests::{mutants, Rng};
        let root = SecretKey::from_bytes([5; 32]);
        for (seed, mode) in [
            (0x0e4d_0001u64, UnsealMode::Passphrase),
            (2, UnsealMode::Shares),
        ] {
            let mut h = sample();
            if mode == UnsealMode::Shares {
                h.mode = mode;
                h.threshold = 2;
                h.count = 3;
                h.salt.clear();
            }
            h.sign(&root);
            let enc = h.encode();
            let mut rng = Rng::new(seed);
            for m in mutants(&enc, &mut rng, 3000) {
                match Header::parse(&m) {
                    Err(Error::Corruption(_)) => {}
                    Err(e) => panic!("unexpected error kind: {e:?}"),
                    Ok(p) => {
                        // The format is canonical, so the MAC covers exactly what was parsed.
                        assert_eq!(p.encode(), m);
                        assert!(p.kdf.is_within_limits());
                        if m == enc {
                            p.verify(&root).unwrap();
                        } else {
                            assert!(matches!(p.verify(&root), Err(Error::Corruption(_))));
                        }
                    }
                }
            }
        }
    }
}
