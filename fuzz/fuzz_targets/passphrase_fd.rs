//! Fuzzes vhsm-admin's `--passphrase-fd` reader (`secrets_input::PassphraseReader`, built by
//! `from_reader` on an in-memory reader exactly as `open` builds it on the descriptor):
//! line splitting, `\n` / `\r\n` endings, the 1024-byte bound, UTF-8, early end of input,
//! the new-passphrase policy and the two-entry confirmation.
//! Properties: no panic and no hang; every passphrase returned is one line of the input
//! without its line ending, at most 1024 bytes, non-empty, and at least 12 characters when
//! it is a new one. Passphrases are never printed, even in a failed assertion.
//!
//! Input: byte 0 picks up to four reads (two bits each: existing, new, new custodian, stop),
//! the rest is what the descriptor delivers.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;
use vhsm_admin::secrets_input::{PassphraseReader, MIN_NEW_PASSPHRASE_CHARS};

fuzz_target!(|data: &[u8]| {
    let Some((&plan, input)) = data.split_first() else {
        return;
    };
    let mut reader = PassphraseReader::from_reader(Box::new(Cursor::new(input.to_vec())));
    for step in 0..4 {
        let (got, new) = match (plan >> (2 * step)) & 3 {
            0 => (reader.existing("fuzz"), false),
            1 => (reader.new_passphrase("fuzz"), true),
            2 => (reader.new_custodian_passphrase("fuzz"), true),
            _ => break,
        };
        let Ok(secret) = got else {
            continue;
        };
        let p = secret.expose_secret();
        assert!(!p.is_empty(), "returned an empty passphrase");
        assert!(p.len() <= 1024, "returned an over-long passphrase");
        assert!(!p.contains('\n'), "returned a passphrase with a newline");
        assert!(!p.ends_with('\r'), "returned a passphrase with its CR");
        if new {
            assert!(
                p.chars().count() >= MIN_NEW_PASSPHRASE_CHARS,
                "returned a new passphrase below the minimum"
            );
        }
        let found = input.windows(p.len()).any(|w| w == p.as_bytes());
        assert!(found, "returned a passphrase that is not in the input");
    }
});
