//! The rekey staging record: a staged (not yet active) store header with its id and expiry.
//!
//! Layout (all integers big endian), stored at `Tree::Header` / `b"rekey-staging"` (beside the
//! header, so it is replicated like every record but never part of a backup):
//! `"VHSMRKS" || format u8 (=1) || staging_id [16] || created_at_ms u64 || expires_at_ms u64
//!  || staged_header bytes(u32 len) || mac [32]`.
//! `mac = HMAC-SHA256(subkey(root, "rekey-staging-mac"), everything before it)`, checked at
//! commit; the staged header carries its own header MAC too. Nothing here is secret: the staged
//! header holds the root key wrapped under the NEW master key, like the live header does.

use crate::codec::{Reader, Writer};
use crate::crypto::{ct_eq, derive_subkey, hmac_sha256, SecretKey};
use crate::error::Error;
use crate::header::Header;

/// Record key of the staging record in `Tree::Header`.
pub(crate) const STAGING_KEY: &[u8] = b"rekey-staging";
const MAGIC: &[u8; 7] = b"VHSMRKS";
const FORMAT: u8 = 1;
const MAC_LABEL: &str = "rekey-staging-mac";
/// Length of a staging id in bytes (shown as 32 hex digits).
pub(crate) const STAGING_ID_LEN: usize = 16;

/// A decoded staging record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Staging {
    pub(crate) id: [u8; STAGING_ID_LEN],
    pub(crate) created_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    /// The staged header, signed with the (unchanged) root key.
    pub(crate) header: Header,
    pub(crate) mac: [u8; 32],
}

fn corrupt(what: &str) -> Error {
    Error::Corruption(format!("rekey staging record: {what}"))
}

impl Staging {
    /// Hex staging id (what the caller names at commit).
    pub(crate) fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    /// True once `now_ms` reached the expiry.
    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// True if `id` (hex, any case) names this staging (constant time on the decoded bytes).
    pub(crate) fn matches(&self, id: &str) -> bool {
        match hex::decode(id.trim()) {
            Ok(raw) => raw.len() == STAGING_ID_LEN && ct_eq(&raw, &self.id),
            Err(_) => false,
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(FORMAT)
            .raw(&self.id)
            .u64(self.created_at_ms)
            .u64(self.expires_at_ms)
            .bytes(&self.header.encode());
        w.finish_public()
    }

    fn compute_mac(&self, root: &SecretKey) -> [u8; 32] {
        hmac_sha256(derive_subkey(root, MAC_LABEL).expose(), &self.body())
    }

    /// Sets `mac` from the root key.
    pub(crate) fn sign(&mut self, root: &SecretKey) {
        self.mac = self.compute_mac(root);
    }

    /// Checks both MACs (the record's and the staged header's), constant time.
    pub(crate) fn verify(&self, root: &SecretKey) -> Result<(), Error> {
        if !ct_eq(&self.compute_mac(root), &self.mac) {
            return Err(corrupt("MAC mismatch (tampered)"));
        }
        self.header
            .verify(root)
            .map_err(|_| corrupt("the staged header failed its MAC"))
    }

    /// The stored bytes (body || mac).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.mac);
        out
    }

    /// Parses stored bytes; any malformation is `Corruption`. The MACs are not checked here.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Staging, Error> {
        let mut r = Reader::new(bytes);
        let bad = |_| corrupt("malformed");
        if r.raw(MAGIC.len()).map_err(bad)? != MAGIC {
            return Err(corrupt("bad magic"));
        }
        if r.u8().map_err(bad)? != FORMAT {
            return Err(corrupt("unsupported format version"));
        }
        let id = r.array().map_err(bad)?;
        let created_at_ms = r.u64().map_err(bad)?;
        let expires_at_ms = r.u64().map_err(bad)?;
        let header = Header::parse(r.bytes().map_err(bad)?)
            .map_err(|_| corrupt("the staged header is malformed"))?;
        let mac = r.array().map_err(bad)?;
        r.finish().map_err(bad)?;
        if expires_at_ms < created_at_ms {
            return Err(corrupt("expires before it was created"));
        }
        Ok(Staging {
            id,
            created_at_ms,
            expires_at_ms,
            header,
            mac,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample(root: &SecretKey) -> Staging {
        let mut header = crate::header::tests::sample();
        header.epoch = 7;
        header.sign(root);
        let mut s = Staging {
            id: [0xab; STAGING_ID_LEN],
            created_at_ms: 1_000,
            expires_at_ms: 901_000,
            header,
            mac: [0; 32],
        };
        s.sign(root);
        s
    }

    #[test]
    fn round_trip_and_mac() {
        let root = SecretKey::from_bytes([5; 32]);
        let s = sample(&root);
        let parsed = Staging::parse(&s.encode()).unwrap();
        assert_eq!(parsed, s);
        parsed.verify(&root).unwrap();
        assert!(matches!(
            parsed.verify(&SecretKey::from_bytes([6; 32])),
            Err(Error::Corruption(_))
        ));
        assert_eq!(parsed.id_hex(), "ab".repeat(16));
        assert!(parsed.matches(&"AB".repeat(16)));
        assert!(!parsed.matches(&"ab".repeat(15)));
        assert!(!parsed.matches("not hex"));
        assert!(!parsed.is_expired(900_999));
        assert!(parsed.is_expired(901_000));
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_detected() {
        let root = SecretKey::from_bytes([5; 32]);
        let enc = sample(&root).encode();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            let r = Staging::parse(&bad).and_then(|p| p.verify(&root));
            assert!(matches!(r, Err(Error::Corruption(_))), "byte {i}");
        }
        for cut in 0..enc.len() {
            assert!(
                matches!(Staging::parse(&enc[..cut]), Err(Error::Corruption(_))),
                "cut {cut}"
            );
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(matches!(Staging::parse(&long), Err(Error::Corruption(_))));
    }

    #[test]
    fn unknown_format_and_backwards_expiry_are_refused() {
        let root = SecretKey::from_bytes([5; 32]);
        let mut enc = sample(&root).encode();
        enc[MAGIC.len()] = 2;
        let e = Staging::parse(&enc).unwrap_err();
        assert!(e.to_string().contains("format version"), "{e}");
        let mut s = sample(&root);
        s.expires_at_ms = s.created_at_ms - 1;
        s.sign(&root);
        assert!(matches!(
            Staging::parse(&s.encode()),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn mutants_are_corruption_or_fail_the_mac() {
        use crate::codec::tests::{mutants, Rng};
        let root = SecretKey::from_bytes([5; 32]);
        let enc = sample(&root).encode();
        let mut rng = Rng::new(0x5_7a61);
        for m in mutants(&enc, &mut rng, 2000) {
            match Staging::parse(&m) {
                Err(Error::Corruption(_)) => {}
                Err(e) => panic!("unexpected error kind: {e:?}"),
                Ok(p) => {
                    assert_eq!(p.encode(), m);
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
