//! Fuzzes the key metadata record decoder of vhsm-core (`keys::decode_info`, the plaintext of
//! a Keys-tree envelope, through `fuzz_api::key_info_decode_reencode`): format, key id,
//! usage bits, state, versions, origin, labels.
//! Properties: no panic; an accepted record re-encodes to exactly the input bytes (so a
//! stored record has one meaning), and its versions are consistent
//! (1 <= min_decryption_version <= current_version).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhsm_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok((info, again)) = fuzz_api::key_info_decode_reencode(data) {
        assert!(
            info.min_decryption_version >= 1 && info.min_decryption_version <= info.current_version,
            "accepted inconsistent versions"
        );
        assert!(
            again == data,
            "accepted key record re-encodes to other bytes"
        );
    }
});
