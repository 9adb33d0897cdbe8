//! The keyring: numbered data-encryption terms, each stored encrypted under the root key.
//!
//! Tree `Keyring`: key = term (u32be), value = envelope (term field 0 = "sealed by the root
//! key's keyring subkey") of the 32-byte term key. Records of the Keys and Meta trees are
//! sealed under the newest term and name their term in the envelope.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::{derive_subkey, GcmKey, SecretKey, KEY_LEN};
use crate::env::RandomSource;
use crate::envelope;
use crate::error::Error;
use crate::storage::{Storage, Tree, WriteBatch};

/// The envelope term that marks records sealed directly by the root key.
const ROOT_TERM: u32 = 0;
/// Subkey label of the root key that encrypts keyring records.
const KEYRING_LABEL: &str = "keyring-encryption";

/// The decrypted keyring: term number → prepared cipher (dropped on seal).
pub(crate) struct Keyring {
    terms: BTreeMap<u32, GcmKey>,
    current: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current_term", &self.current)
            .finish_non_exhaustive()
    }
}

fn root_cipher(root: &SecretKey) -> GcmKey {
    GcmKey::new(&derive_subkey(root, KEYRING_LABEL))
}

impl Keyring {
    /// A new keyring with term 1; the returned batch stores it.
    pub(crate) fn generate(
        root: &SecretKey,
        rng: &dyn RandomSource,
    ) -> Result<(Keyring, WriteBatch), Error> {
        let cipher = root_cipher(root);
        let mut term_key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(term_key.as_mut_slice())?;
        let rkey = 1u32.to_be_bytes();
        let value = envelope::seal(
            &cipher,
            ROOT_TERM,
            Tree::Keyring,
            &rkey,
            term_key.as_slice(),
            rng,
        )?;
        let mut batch = WriteBatch::new();
        batch.put(Tree::Keyring, rkey.to_vec(), value);
        let mut terms = BTreeMap::new();
        terms.insert(1, GcmKey::new(&SecretKey::from_bytes(*term_key)));
        Ok((Keyring { terms, current: 1 }, batch))
    }

    /// Loads and authenticates every term from storage.
    pub(crate) fn load(root: &SecretKey, storage: &dyn Storage) -> Result<Keyring, Error> {
        let cipher = root_cipher(root);
        let mut terms = BTreeMap::new();
        for (k, v) in storage.scan_prefix(Tree::Keyring, b"")? {
            let term_bytes: [u8; 4] = k
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corruption("keyring: malformed record key".into()))?;
            let term = u32::from_be_bytes(term_bytes);
            if term == ROOT_TERM || envelope::term_of(Tree::Keyring, &v)? != ROOT_TERM {
                return Err(Error::Corruption(
                    "keyring: record under a wrong term".into(),
                ));
            }
            let plain = envelope::open(&cipher, Tree::Keyring, &k, &v)?;
            let key = SecretKey::from_slice(&plain)
                .map_err(|_| Error::Corruption("keyring: term key has a wrong length".into()))?;
            terms.insert(term, GcmKey::new(&key));
        }
        let current = *terms
            .keys()
            .next_back()
            .ok_or_else(|| Error::Corruption("keyring is empty".into()))?;
        Ok(Keyring { terms, current })
    }

    /// The newest term.
    #[cfg(test)]
    pub(crate) fn current_term(&self) -> u32 {
        self.current
    }

    /// Seals a Keys/Meta record under the newest term.
    pub(crate) fn seal(
        &self,
        tree: Tree,
        key: &[u8],
        plaintext: &[u8],
        rng: &dyn RandomSource,
    ) -> Result<Vec<u8>, Error> {
        let cipher = self
            .terms
            .get(&self.current)
            .ok_or_else(|| Error::Internal("keyring has no current term".into()))?;
        envelope::seal(cipher, self.current, tree, key, plaintext, rng)
    }

    /// Opens a Keys/Meta record under the term it names.
    pub(crate) fn open(
        &self,
        tree: Tree,
        key: &[u8],
        value: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let term = envelope::term_of(tree, value)?;
        // Term 0 (the root subkey) only ever seals keyring records, so it is never found here.
        let cipher = self.terms.get(&term).ok_or_else(|| {
            Error::Corruption(format!(
                "record in tree {}: unknown keyring term",
                tree.name()
            ))
        })?;
        envelope::open(cipher, tree, key, value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::env::OsRandom;
    use crate::storage::{Durability, MemoryStorage};

    fn setup() -> (SecretKey, MemoryStorage, Keyring) {
        let root = SecretKey::from_bytes([9u8; 32]);
        let s = MemoryStorage::new();
        let (ring, batch) = Keyring::generate(&root, &OsRandom).unwrap();
        s.commit(batch, Durability::Flushed).unwrap();
        (root, s, ring)
    }

    #[test]
    fn generate_load_and_records_round_trip() {
        let (root, s, ring) = setup();
        let v = ring.seal(Tree::Keys, b"k", b"data", &OsRandom).unwrap();
        let loaded = Keyring::load(&root, &s).unwrap();
        assert_eq!(loaded.current_term(), 1);
        assert_eq!(&*loaded.open(Tree::Keys, b"k", &v).unwrap(), b"data");
    }

    #[test]
    fn wrong_root_or_tampered_keyring_is_corruption() {
        let (_, s, _) = setup();
        let wrong = SecretKey::from_bytes([8u8; 32]);
        assert!(matches!(
            Keyring::load(&wrong, &s),
            Err(Error::Corruption(_))
        ));
        let root = SecretKey::from_bytes([9u8; 32]);
        let (k, mut v) = s.dump().into_iter().map(|(_, k, v)| (k, v)).next().unwrap();
        v[10] ^= 1;
        s.raw_put(Tree::Keyring, &k, &v);
        assert!(matches!(
            Keyring::load(&root, &s),
            Err(Error::Corruption(_))
        ));
        s.raw_delete(Tree::Keyring, &k);
        assert!(matches!(
            Keyring::load(&root, &s),
            Err(Error::Corruption(_))
        ));
    }

    #[test]
    fn unknown_or_root_term_is_corruption() {
        let (_, _, ring) = setup();
        let mut v = ring.seal(Tree::Meta, b"k", b"data", &OsRandom).unwrap();
        v[4] = 2;
        assert!(matches!(
            ring.open(Tree::Meta, b"k", &v),
            Err(Error::Corruption(_))
        ));
        v[4] = 0;
        assert!(matches!(
            ring.open(Tree::Meta, b"k", &v),
            Err(Error::Corruption(_))
        ));
    }
}
