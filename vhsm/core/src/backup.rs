//! The backup blob: every stored record (already encrypted) plus an HMAC under a root-key subkey.
//!
//! Layout (big endian): `"VHSMBAK1" || header bytes(u32 len) || record count u32
//!  || (tree u8 || key bytes(u32 len) || value bytes(u32 len))* || mac [32]` with tree ids
//! Keyring 1, Keys 2, Audit 3, Meta 4 and `mac = HMAC-SHA256(subkey(root, "backup-mac"),
//! everything before it)`. The MAC can only be checked once the root key is recovered, so a
//! staged restore is verified at unseal, before anything is written.

use crate::codec::{Reader, Writer};
use crate::crypto::{ct_eq, derive_subkey, hmac_sha256, SecretKey};
use crate::error::Error;
use crate::header::Header;
use crate::storage::Tree;

const MAGIC: &[u8; 8] = b"VHSMBAK1";
const MAC_LABEL: &str = "backup-mac";
/// Trees carried by a backup (the header travels separately).
pub(crate) const TREES: [Tree; 4] = [Tree::Keyring, Tree::Keys, Tree::Audit, Tree::Meta];

fn tree_id(t: Tree) -> u8 {
    match t {
        Tree::Header => 0,
        Tree::Keyring => 1,
        Tree::Keys => 2,
        Tree::Audit => 3,
        Tree::Meta => 4,
    }
}

/// One stored record.
pub(crate) type Record = (Tree, Vec<u8>, Vec<u8>);

/// A parsed backup, MAC not yet verified.
#[derive(Debug, Clone)]
pub(crate) struct Backup {
    pub(crate) header_bytes: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) records: Vec<Record>,
    body_len: usize,
    blob: Vec<u8>,
}

fn mac(root: &SecretKey, body: &[u8]) -> [u8; 32] {
    hmac_sha256(derive_subkey(root, MAC_LABEL).expose(), body)
}

/// Builds the blob.
pub(crate) fn encode(root: &SecretKey, header_bytes: &[u8], records: &[Record]) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(MAGIC)
        .bytes(header_bytes)
        .u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
    for (t, k, v) in records {
        w.u8(tree_id(*t)).bytes(k).bytes(v);
    }
    let mut out = w.finish_public();
    let m = mac(root, &out);
    out.extend_from_slice(&m);
    out
}

fn invalid(what: &str) -> Error {
    Error::InvalidBackup(what.to_string())
}

impl Backup {
    /// Parses the structure; a truncated or garbled blob is `InvalidBackup`.
    pub(crate) fn parse(blob: &[u8]) -> Result<Backup, Error> {
        if blob.len() < MAGIC.len() + 32 || !blob.starts_with(MAGIC) {
            return Err(invalid("not a vhsm backup"));
        }
        let body_len = blob.len() - 32;
        let mut r = Reader::new(&blob[..body_len]);
        let bad = |_| invalid("truncated or malformed");
        r.raw(MAGIC.len()).map_err(bad)?;
        let header_bytes = r.bytes().map_err(bad)?.to_vec();
        let header = Header::parse(&header_bytes).map_err(|_| invalid("malformed store header"))?;
        let n = r.u32().map_err(bad)?;
        let mut records = Vec::new();
        for _ in 0..n {
            let t = match r.u8().map_err(bad)? {
                1 => Tree::Keyring,
                2 => Tree::Keys,
                3 => Tree::Audit,
                4 => Tree::Meta,
                _ => return Err(invalid("unknown tree")),
            };
            let k = r.bytes().map_err(bad)?.to_vec();
            let v = r.bytes().map_err(bad)?.to_vec();
            records.push((t, k, v));
        }
        r.finish().map_err(bad)?;
        Ok(Backup {
            header_bytes,
            header,
            records,
            body_len,
            blob: blob.to_vec(),
        })
    }

    /// Checks the MAC with the recovered root key (constant time).
    pub(crate) fn verify(&self, root: &SecretKey) -> Result<(), Error> {
        let (body, tag) = self.blob.split_at(self.body_len);
        if ct_eq(&mac(root, body), tag) {
            Ok(())
        } else {
            Err(invalid(
                "integrity check failed (tampered, or not made with this root key)",
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> (SecretKey, Vec<u8>) {
        let root = SecretKey::from_bytes([1; 32]);
        let header = crate::header::tests::sample().encode();
        let recs = vec![
            (Tree::Keys, b"key/a".to_vec(), vec![9; 40]),
            (Tree::Audit, 1u64.to_be_bytes().to_vec(), b"{}".to_vec()),
        ];
        let blob = encode(&root, &header, &recs);
        (root, blob)
    }

    #[test]
    fn round_trip_and_verify() {
        let (root, blob) = sample();
        let b = Backup::parse(&blob).unwrap();
        assert_eq!(b.records.len(), 2);
        assert_eq!(b.records[0].0, Tree::Keys);
        b.verify(&root).unwrap();
        assert!(matches!(
            b.verify(&SecretKey::from_bytes([2; 32])),
            Err(Error::InvalidBackup(_))
        ));
    }

    #[test]
    fn tampering_and_truncation_detected() {
        let (root, blob) = sample();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x04;
            let r = Backup::parse(&bad).and_then(|b| b.verify(&root));
            assert!(matches!(r, Err(Error::InvalidBackup(_))), "byte {i}");
        }
        for cut in 0..blob.len() {
            assert!(matches!(
                Backup::parse(&blob[..cut]).and_then(|b| b.verify(&root)),
                Err(Error::InvalidBackup(_))
            ));
        }
    }

    #[test]
    fn mutated_backups_are_invalid_backup_never_a_panic() {
        use crate::codec::tests::{mutants, Rng};
        let (root, blob) = sample();
        let mut rng = Rng::new(0x0bac_0001);
        let mut parsed_but_rejected = 0;
        for m in mutants(&blob, &mut rng, 3000) {
            match Backup::parse(&m) {
                Err(Error::InvalidBackup(_)) => {}
                Err(e) => panic!("unexpected error kind: {e:?}"),
                Ok(b) if m == blob => b.verify(&root).unwrap(),
                Ok(b) => {
                    parsed_but_rejected += 1;
                    assert!(matches!(b.verify(&root), Err(Error::InvalidBackup(_))));
                }
            }
        }
        assert!(parsed_but_rejected > 0, "some mutations must reach the MAC");
    }

    /// With the MAC recomputed, corrupt structure must still be refused by the parser.
    #[test]
    fn mutated_backup_bodies_with_valid_mac_parse_canonically_or_fail() {
        use crate::codec::tests::{mutants, Rng};
        let (root, blob) = sample();
        let body = &blob[..blob.len() - 32];
        let mut rng = Rng::new(0x0bac_0002);
        for mut m in mutants(body, &mut rng, 3000) {
            let tag = mac(&root, &m);
            m.extend_from_slice(&tag);
            match Backup::parse(&m) {
                Err(Error::InvalidBackup(_)) => {}
                Err(e) => panic!("unexpected error kind: {e:?}"),
                Ok(b) => {
                    b.verify(&root).unwrap();
                    assert_eq!(encode(&root, &b.header_bytes, &b.records), m);
                }
            }
        }
    }
}
