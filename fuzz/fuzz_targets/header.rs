//! Fuzzes the store-header decoder of vhsm-core (`Header::parse` and the MAC check
//! `Header::verify`, through `fuzz_api::header_parse_reencode`): magic, format, unseal mode,
//! threshold/count shape, KDF bounds, salt and wrapped-root lengths, trailing bytes.
//! Properties: no panic; an accepted header re-encodes to exactly the input bytes; the MAC
//! check under the fuzz root key (`[0x42; 32]`) returns a typed result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhsm_core::crypto::SecretKey;
use vhsm_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let root = SecretKey::from_bytes([0x42; 32]);
    if let Ok((again, _mac)) = fuzz_api::header_parse_reencode(data, &root) {
        assert!(again == data, "accepted header re-encodes to other bytes");
    }
});
