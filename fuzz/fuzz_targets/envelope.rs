//! Fuzzes the encrypted record envelope of vhsm-core (`envelope::term_of` and
//! `envelope::open`, through `fuzz_api::envelope_open`), as read back from storage.
//! Properties: no panic; whatever opens under the fuzz key (`[0x42; 32]`) re-seals and opens
//! again to the same plaintext and term; any value sealed for one (tree, record key) does not
//! open under another record key (the AAD binds it).
//!
//! Input: byte 0 picks the tree (Keyring, Keys, Meta), byte 1 the record-key length, then the
//! record key, then the stored value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhsm_core::crypto::SecretKey;
use vhsm_core::fuzz_api::{self, ENVELOPE_TREES};
use vhsm_core::OsRandom;

fuzz_target!(|data: &[u8]| {
    let [tree, key_len, rest @ ..] = data else {
        return;
    };
    let tree = ENVELOPE_TREES[usize::from(*tree) % ENVELOPE_TREES.len()];
    let (record_key, value) = rest.split_at(usize::from(*key_len).min(rest.len()));
    let key = SecretKey::from_bytes([0x42; 32]);

    if let Ok((term, plain)) = fuzz_api::envelope_open(&key, tree, record_key, value) {
        let Ok(again) = fuzz_api::envelope_seal(&key, term, tree, record_key, &plain, &OsRandom)
        else {
            panic!("re-sealing an opened envelope failed");
        };
        let Ok((term2, plain2)) = fuzz_api::envelope_open(&key, tree, record_key, &again) else {
            panic!("a re-sealed envelope does not open");
        };
        assert!(
            term2 == term && plain2 == plain,
            "re-sealed envelope differs"
        );
    }

    // The value as a plaintext: sealed, it opens to itself and only at its own record key.
    let Ok(sealed) = fuzz_api::envelope_seal(&key, 9, tree, record_key, value, &OsRandom) else {
        panic!("sealing failed");
    };
    match fuzz_api::envelope_open(&key, tree, record_key, &sealed) {
        Ok((9, plain)) if plain.as_slice() == value => {}
        _ => panic!("a sealed envelope does not open to its plaintext"),
    }
    let mut other = record_key.to_vec();
    other.push(0);
    assert!(
        fuzz_api::envelope_open(&key, tree, &other, &sealed).is_err(),
        "an envelope opened under another record key"
    );
});
