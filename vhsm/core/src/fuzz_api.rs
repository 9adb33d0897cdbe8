//! Entry points for the coverage-guided fuzz targets in `fuzz/` (cargo feature `fuzzing` only).
//!
//! The stored-format decoders are crate-private; this module hands the fuzz targets exactly
//! those decoders and their encoders, with results reduced to what a property needs (the
//! re-encoded bytes, a typed error). It is not part of the supported API: it exists only with
//! `--features fuzzing`, and nothing in the workspace enables that feature.

use crate::backup::{self, Backup};
use crate::crypto::{GcmKey, SecretKey};
use crate::env::RandomSource;
use crate::envelope;
use crate::error::Error;
use crate::header::Header;
use crate::keys;
use crate::share::ShareFile;
use crate::storage::Tree;
use crate::types::KeyInfo;

/// Parses a custodian share file; on success returns the file re-encoded from the parsed fields.
pub fn share_parse_reencode(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    ShareFile::parse(bytes).map(|f| f.encode())
}

/// A valid share file for the seed corpus (Argon2id at the fast test parameters).
pub fn share_sample(passphrase: &[u8], rng: &dyn RandomSource) -> Result<Vec<u8>, Error> {
    let share = crate::shamir::Share {
        x: 1,
        y: zeroize::Zeroizing::new(vec![7u8; 32]),
    };
    let file = ShareFile::create(
        [1; 16],
        0,
        &share,
        1,
        1,
        &crate::KdfParams::INSECURE_FAST_FOR_TESTS,
        passphrase,
        rng,
    )?;
    Ok(file.bytes)
}

/// Parses a store header and checks its MAC under `root` (a wrong MAC is `Corruption`); on a
/// successful parse returns the re-encoded header alongside the MAC check result.
pub fn header_parse_reencode(
    bytes: &[u8],
    root: &SecretKey,
) -> Result<(Vec<u8>, Result<(), Error>), Error> {
    let h = Header::parse(bytes)?;
    let mac = h.verify(root);
    Ok((h.encode(), mac))
}

/// A valid, MAC-signed store header for the seed corpus.
pub fn header_sample(root: &SecretKey, shares: bool) -> Vec<u8> {
    let mut h = Header {
        store_id: [1; 16],
        epoch: 3,
        mode: if shares {
            crate::types::UnsealMode::Shares
        } else {
            crate::types::UnsealMode::Passphrase
        },
        threshold: if shares { 2 } else { 1 },
        count: if shares { 3 } else { 1 },
        kdf: crate::KdfParams::INSECURE_FAST_FOR_TESTS,
        salt: if shares { Vec::new() } else { vec![2; 16] },
        wrapped_root: vec![3; 40],
        audit_public_key: [4; 32],
        mac: [0; 32],
    };
    h.sign(root);
    h.encode()
}

/// The trees an envelope can be stored in, indexed by a fuzzer-chosen byte.
pub const ENVELOPE_TREES: [Tree; 3] = [Tree::Keyring, Tree::Keys, Tree::Meta];

/// The envelope's term (format check) and its authenticated plaintext under `key`.
pub fn envelope_open(
    key: &SecretKey,
    tree: Tree,
    record_key: &[u8],
    value: &[u8],
) -> Result<(u32, zeroize::Zeroizing<Vec<u8>>), Error> {
    let term = envelope::term_of(tree, value)?;
    let plain = envelope::open(&GcmKey::new(key), tree, record_key, value)?;
    Ok((term, plain))
}

/// Seals `plaintext` as stored at (`tree`, `record_key`).
pub fn envelope_seal(
    key: &SecretKey,
    term: u32,
    tree: Tree,
    record_key: &[u8],
    plaintext: &[u8],
    rng: &dyn RandomSource,
) -> Result<Vec<u8>, Error> {
    envelope::seal(&GcmKey::new(key), term, tree, record_key, plaintext, rng)
}

/// Decodes a key metadata record (an envelope's plaintext in the Keys tree) and re-encodes it.
pub fn key_info_decode_reencode(bytes: &[u8]) -> Result<(KeyInfo, Vec<u8>), Error> {
    let info = keys::decode_info(bytes)?;
    let again = keys::encode_info(&info);
    Ok((info, again))
}

/// Parses a backup blob and checks its MAC under `root`; on a successful parse returns the
/// blob re-encoded from the parsed header bytes and records under `root`, and the MAC result.
pub fn backup_parse_reencode(
    blob: &[u8],
    root: &SecretKey,
) -> Result<(Vec<u8>, Result<(), Error>), Error> {
    let b = Backup::parse(blob)?;
    let mac = b.verify(root);
    Ok((backup::encode(root, &b.header_bytes, &b.records), mac))
}

/// A valid backup blob for the seed corpus: `header` and two records, MAC under `root`.
pub fn backup_sample(root: &SecretKey, header: &[u8]) -> Vec<u8> {
    let records = vec![
        (Tree::Keys, b"key/a".to_vec(), vec![9; 40]),
        (Tree::Audit, 1u64.to_be_bytes().to_vec(), b"{}".to_vec()),
    ];
    backup::encode(root, header, &records)
}

/// A valid key metadata record plaintext for the seed corpus (two labels).
pub fn key_info_sample() -> Vec<u8> {
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("owner".to_string(), "team-a".to_string());
    labels.insert("purpose".to_string(), "xks".to_string());
    keys::encode_info(&KeyInfo {
        key_id: "key-1".to_string(),
        key_spec: "AES_256",
        usage: crate::types::UsageSet::ENCRYPT_DECRYPT,
        state: crate::types::KeyState::Enabled,
        current_version: 2,
        min_decryption_version: 1,
        labels,
        created_at_ms: 1_700_000_000_000,
        deletion_due_at_ms: 0,
        origin: crate::types::KeyOrigin::Generated,
        created_by_audit_seq: 5,
        imported_under: None,
        rotations: std::collections::BTreeMap::new(),
    })
}

/// A valid format-2 key metadata record for the seed corpus: an imported key (with its import
/// key's id and fingerprint) rotated once.
pub fn key_info_provenance_sample() -> Vec<u8> {
    keys::encode_info(&KeyInfo {
        key_id: "key-2".to_string(),
        key_spec: "AES_256",
        usage: crate::types::UsageSet::ENCRYPT_DECRYPT,
        state: crate::types::KeyState::Enabled,
        current_version: 2,
        min_decryption_version: 1,
        labels: std::collections::BTreeMap::new(),
        created_at_ms: 1_700_000_000_000,
        deletion_due_at_ms: 0,
        origin: crate::types::KeyOrigin::Imported,
        created_by_audit_seq: 5,
        imported_under: Some(crate::types::ImportedUnder {
            import_key_id: "import-0011223344556677".to_string(),
            fingerprint: [3; 16],
        }),
        rotations: std::collections::BTreeMap::from([(
            2,
            crate::types::VersionCreated {
                created_at_ms: 1_700_000_100_000,
                audit_seq: 9,
            },
        )]),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    //! The samples above parse and re-encode to themselves; with `FUZZ_SEEDS_OUT=DIR` the test
    //! also writes them as the binary seed corpus of `fuzz/` (see docs/fuzzing.md):
    //! `FUZZ_SEEDS_OUT=$PWD/fuzz/corpus cargo test -p vhsm-core --features fuzzing fuzz_api`.

    use super::*;

    /// The key the fuzz targets use for envelopes, header and backup MACs (`[0x42; 32]`).
    fn fuzz_key() -> SecretKey {
        SecretKey::from_bytes([0x42; 32])
    }

    /// Deterministic "randomness" so regenerated seeds are byte-identical.
    #[derive(Debug)]
    struct Counter;
    impl RandomSource for Counter {
        fn fill(&self, buf: &mut [u8]) -> Result<(), Error> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = i as u8;
            }
            Ok(())
        }
    }

    /// The envelope target's input: tree index, record-key length, record key, value.
    fn envelope_input(tree: u8, record_key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = vec![tree, record_key.len() as u8];
        out.extend_from_slice(record_key);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn samples_round_trip_and_seeds_are_written_on_request() {
        let root = fuzz_key();
        let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();

        let share = share_sample(b"correct horse battery", &Counter).unwrap();
        assert_eq!(share_parse_reencode(&share).unwrap(), share);
        seeds.push(("share", "valid-1of1", share));

        for (name, shares) in [("valid-passphrase", false), ("valid-shares-2of3", true)] {
            let h = header_sample(&root, shares);
            let (again, mac) = header_parse_reencode(&h, &root).unwrap();
            assert_eq!(again, h);
            mac.unwrap();
            seeds.push(("header", name, h));
        }

        let info = key_info_sample();
        assert_eq!(key_info_decode_reencode(&info).unwrap().1, info);
        seeds.push(("key_record", "valid-2-labels", info.clone()));
        let provenance = key_info_provenance_sample();
        assert_eq!(key_info_decode_reencode(&provenance).unwrap().1, provenance);
        seeds.push(("key_record", "valid-provenance", provenance));

        let sealed = envelope_seal(&root, 7, Tree::Keys, b"key/key-1", &info, &Counter).unwrap();
        let (term, plain) = envelope_open(&root, Tree::Keys, b"key/key-1", &sealed).unwrap();
        assert_eq!((term, plain.as_slice()), (7, info.as_slice()));
        seeds.push((
            "envelope",
            "valid-keys-record",
            envelope_input(1, b"key/key-1", &sealed),
        ));
        let empty = envelope_seal(&root, 1, Tree::Meta, b"m", b"", &Counter).unwrap();
        seeds.push((
            "envelope",
            "valid-empty-meta",
            envelope_input(2, b"m", &empty),
        ));

        let blob = backup_sample(&root, &header_sample(&root, false));
        let (again, mac) = backup_parse_reencode(&blob, &root).unwrap();
        assert_eq!(again, blob);
        mac.unwrap();
        seeds.push(("backup", "valid-2-records", blob));

        if let Some(dir) = std::env::var_os("FUZZ_SEEDS_OUT") {
            let dir = std::path::PathBuf::from(dir);
            for (target, name, bytes) in seeds {
                let d = dir.join(target);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(name), bytes).unwrap();
            }
        }
    }
}
