//! Fuzzes the custodian share-file decoder of vhsm-core (`ShareFile::parse`, through
//! `fuzz_api::share_parse_reencode`): magic, SHA-256 checksum, format version, index /
//! threshold / count, KDF bounds, ciphertext length.
//! Properties: no panic; an accepted file re-encodes to exactly the input bytes (the decoder
//! is the inverse of the encoder, so no two files mean the same share).
//!
//! The trailing SHA-256 checksum would stop almost every mutant at the first check, so each
//! input is parsed twice: as it is, and with its last 32 bytes replaced by the checksum of
//! the rest, which lets the fuzzer reach the field checks behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use vhsm_core::fuzz_api;

fn check(file: &[u8]) {
    if let Ok(again) = fuzz_api::share_parse_reencode(file) {
        assert!(
            again == file,
            "accepted share file re-encodes to other bytes"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 32 {
        let body = &data[..data.len() - 32];
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&Sha256::digest(body));
        check(&fixed);
    }
});
