//! Fuzzes the backup-blob decoder of vhsm-core (`Backup::parse` and the MAC check
//! `Backup::verify`, through `fuzz_api::backup_parse_reencode`): magic, the embedded store
//! header, the record count, tree ids, record keys and values, trailing bytes.
//! Properties: no panic, and no allocation driven by an unchecked length (the record count
//! is a u32 from the input); an accepted blob re-encodes to the same body, and when its MAC
//! verifies under the fuzz root key (`[0x42; 32]`) to exactly the input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhsm_core::crypto::SecretKey;
use vhsm_core::fuzz_api;

fuzz_target!(|data: &[u8]| {
    let root = SecretKey::from_bytes([0x42; 32]);
    if let Ok((again, mac)) = fuzz_api::backup_parse_reencode(data, &root) {
        let body = data.len() - 32;
        assert!(
            again.len() == data.len() && again[..body] == data[..body],
            "accepted backup re-encodes to another body"
        );
        assert_eq!(
            mac.is_ok(),
            again == data,
            "MAC check disagrees with re-encoding"
        );
    }
});
