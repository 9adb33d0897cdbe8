//! Fuzzes xks-front's keystores.toml parser and validator (`keystores::KeyStores::parse`):
//! TOML, the schema (unknown fields refused), names, path prefixes, key allow-lists,
//! credentials with their secret files, secondary-authorization rules.
//! Properties: no panic; in an accepted file every store is found by name, every store's
//! API path routes to that store (longest prefix wins, so no other store may capture it), and
//! every access key id has a secret.
//!
//! Relative `secret_file`s resolve against `/tmp/vhsm-fuzz` (see `vhsm_fuzz::fixture_dir`),
//! where `secret` is valid and `bad-secret` is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xks_front::keystores::KeyStores;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(stores) = KeyStores::parse(text, vhsm_fuzz::fixture_dir()) else {
        return;
    };
    assert!(!stores.is_empty(), "accepted a file without key stores");
    assert_eq!(
        stores.iter().count(),
        stores.len(),
        "len disagrees with iter"
    );
    for store in stores.iter() {
        let found = stores.get(&store.name).map(|s| s.name.as_str());
        assert_eq!(found, Some(store.name.as_str()), "store not found by name");
        let health = format!("{}/kms/xks/v1/health", store.path_prefix);
        let routed = stores
            .route(&health)
            .map(|(s, rest)| (s.name.as_str(), rest));
        assert_eq!(
            routed,
            Some((store.name.as_str(), "/kms/xks/v1/health")),
            "a store's own API path routes elsewhere"
        );
        assert_eq!(
            store.uri_path(),
            format!("{}/kms/xks/v1", store.path_prefix)
        );
        for id in store.access_key_ids() {
            assert!(
                store.secret_for(id).is_some(),
                "access key id without secret"
            );
        }
    }
});
