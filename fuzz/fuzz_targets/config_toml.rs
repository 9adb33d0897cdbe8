//! Fuzzes the two daemon config parsers and validators: xks-front's `config::Config::parse`
//! (which validates) and vhsmd's `config::Config::parse` followed by `validate` (listen
//! address, gRPC limits, TLS file paths, roles, the unix socket section).
//! Property: no panic; parsing and validation are deterministic.
//!
//! Input: the first byte picks the parser (even: xks-front, odd: vhsmd), the rest is the TOML.
//! File paths in the seeds point into `/tmp/vhsm-fuzz` (see `vhsm_fuzz::fixture_dir`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    vhsm_fuzz::fixture_dir();
    if which % 2 == 0 {
        let path = Path::new("/tmp/vhsm-fuzz/xks-front.toml");
        let a = xks_front::config::Config::parse(text, path).map(|_| ());
        let b = xks_front::config::Config::parse(text, path).map(|_| ());
        assert_eq!(
            a.is_ok(),
            b.is_ok(),
            "xks-front config parse is not deterministic"
        );
    } else {
        let a = vhsm::config::Config::parse(text).map(|c| c.validate().is_ok());
        let b = vhsm::config::Config::parse(text).map(|c| c.validate().is_ok());
        assert_eq!(a.ok(), b.ok(), "vhsmd config parse is not deterministic");
    }
});
