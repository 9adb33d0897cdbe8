//! The encrypted record envelope of the Keyring, Keys and Meta trees.
//!
//! `value = version (1 byte, = 1) || term (u32be) || nonce (12) || AES-256-GCM ciphertext || tag (16)`,
//! with AAD = `version || term || tree name || 0x00 || record key` (the brief's
//! `tree name || 0x00 || record key`, prefixed by the 5 envelope header bytes so they are
//! authenticated too), so a record copied to another key or tree, truncated, or with any byte
//! flipped fails authentication. Every failure is
//! [`Error::Corruption`]: stored data is never the caller's fault.

use zeroize::Zeroizing;

use crate::crypto::{GcmKey, GCM_IV_LEN, GCM_TAG_LEN};
use crate::env::RandomSource;
use crate::error::Error;
use crate::storage::Tree;

/// Envelope format version.
pub(crate) const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the ciphertext.
const HEADER_LEN: usize = 1 + 4 + GCM_IV_LEN;
/// Smallest valid envelope (empty plaintext).
pub(crate) const MIN_ENVELOPE_LEN: usize = HEADER_LEN + GCM_TAG_LEN;

fn aad(term: u32, tree: Tree, key: &[u8]) -> Vec<u8> {
    let name = tree.name().as_bytes();
    let mut out = Vec::with_capacity(5 + name.len() + 1 + key.len());
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(key);
    out
}

fn corrupt(tree: Tree, what: &str) -> Error {
    Error::Corruption(format!("record in tree {}: {what}", tree.name()))
}

/// Encrypts `plaintext` for (`tree`, `key`) under `cipher`, tagging it with `term`.
pub(crate) fn seal(
    cipher: &GcmKey,
    term: u32,
    tree: Tree,
    key: &[u8],
    plaintext: &[u8],
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, Error> {
    let mut iv = [0u8; GCM_IV_LEN];
    rng.fill(&mut iv)?;
    let mut buf = Zeroizing::new(plaintext.to_vec());
    let tag = cipher.seal_in_place(&iv, &aad(term, tree, key), &mut buf);
    let mut out = Vec::with_capacity(HEADER_LEN + buf.len() + GCM_TAG_LEN);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(&term.to_be_bytes());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The keyring term an envelope was sealed under (format checks only; not authenticated).
pub(crate) fn term_of(tree: Tree, value: &[u8]) -> Result<u32, Error> {
    if value.len() < MIN_ENVELOPE_LEN {
        return Err(corrupt(tree, "truncated"));
    }
    if value[0] != ENVELOPE_VERSION {
        return Err(corrupt(tree, "unknown envelope version"));
    }
    let mut term = [0u8; 4];
    term.copy_from_slice(&value[1..5]);
    Ok(u32::from_be_bytes(term))
}

/// Authenticates and decrypts an envelope stored at (`tree`, `key`).
pub(crate) fn open(
    cipher: &GcmKey,
    tree: Tree,
    key: &[u8],
    value: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let term = term_of(tree, value)?;
    let mut iv = [0u8; GCM_IV_LEN];
    iv.copy_from_slice(&value[5..HEADER_LEN]);
    let body = &value[HEADER_LEN..];
    let (ct, tag_bytes) = body.split_at(body.len() - GCM_TAG_LEN);
    let mut tag = [0u8; GCM_TAG_LEN];
    tag.copy_from_slice(tag_bytes);
    cipher
        .open(&iv, &aad(term, tree, key), ct, &tag)
        .map_err(|_| corrupt(tree, "authentication failed"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::env::OsRandom;

    fn key() -> GcmKey {
        GcmKey::new(&SecretKey::from_bytes([3u8; 32]))
    }

    #[test]
    fn round_trip_and_layout() {
        let v = seal(&key(), 7, Tree::Keys, b"key/a", b"payload", &OsRandom).unwrap();
        assert_eq!(v.len(), MIN_ENVELOPE_LEN + 7);
        assert_eq!(v[0], 1);
        assert_eq!(term_of(Tree::Keys, &v).unwrap(), 7);
        assert_eq!(
            &*open(&key(), Tree::Keys, b"key/a", &v).unwrap(),
            b"payload"
        );
    }

    #[test]
    fn every_flipped_bit_is_corruption() {
        let v = seal(&key(), 1, Tree::Meta, b"m", b"secret-ish", &OsRandom).unwrap();
        for i in 0..v.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = v.clone();
                bad[i] ^= bit;
                let e = open(&key(), Tree::Meta, b"m", &bad).unwrap_err();
                assert!(matches!(e, Error::Corruption(_)), "byte {i}");
            }
        }
    }

    #[test]
    fn moved_or_truncated_is_corruption() {
        let v = seal(&key(), 1, Tree::Keys, b"key/a", b"x", &OsRandom).unwrap();
        assert!(matches!(
            open(&key(), Tree::Keys, b"key/b", &v),
            Err(Error::Corruption(_))
        ));
        assert!(matches!(
            open(&key(), Tree::Meta, b"key/a", &v),
            Err(Error::Corruption(_))
        ));
        for cut in 0..v.len() {
            assert!(matches!(
                open(&key(), Tree::Keys, b"key/a", &v[..cut]),
                Err(Error::Corruption(_))
            ));
        }
        let other = GcmKey::new(&SecretKey::from_bytes([4u8; 32]));
        assert!(matches!(
            open(&other, Tree::Keys, b"key/a", &v),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn corruption_message_has_no_data() {
        let v = seal(&key(), 1, Tree::Keys, b"key/a", b"PLAINTEXT", &OsRandom).unwrap();
        let mut bad = v.clone();
        bad[20] ^= 1;
        let msg = open(&key(), Tree::Keys, b"key/a", &bad)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("PLAINTEXT"));
        assert!(msg.contains("keys"));
    }

    #[test]
    fn mutated_envelopes_are_always_corruption() {
        use crate::codec::tests::{mutants, Rng};
        let k = key();
        let mut rng = Rng::new(0x0e17_0001);
        for plaintext in [&b""[..], b"a record payload"] {
            let v = seal(&k, 9, Tree::Keyring, b"ring/1", plaintext, &OsRandom).unwrap();
            for m in mutants(&v, &mut rng, 3000) {
                if m == v {
                    continue;
                }
                // term_of only checks the format; it must not panic on anything.
                let _ = term_of(Tree::Keyring, &m);
                assert!(matches!(
                    open(&k, Tree::Keyring, b"ring/1", &m),
                    Err(Error::Corruption(_))
                ));
            }
        }
    }

    #[test]
    fn term_of_accepts_exactly_version_one_of_minimum_length() {
        use crate::codec::tests::Rng;
        let mut rng = Rng::new(0x0e17_0002);
        for _ in 0..3000 {
            let n = rng.below(2 * MIN_ENVELOPE_LEN);
            let mut m = rng.bytes(n);
            if rng.below(2) == 0 {
                if let Some(b) = m.first_mut() {
                    *b = ENVELOPE_VERSION;
                }
            }
            let ok = m.len() >= MIN_ENVELOPE_LEN && m[0] == ENVELOPE_VERSION;
            match term_of(Tree::Meta, &m) {
                Ok(t) => {
                    assert!(ok);
                    assert_eq!(t.to_be_bytes(), m[1..5]);
                }
                Err(e) => {
                    assert!(!ok);
                    assert!(matches!(e, Error::Corruption(_)));
                }
            }
        }
    }
}
