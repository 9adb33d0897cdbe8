//! Human-comparable fingerprint of the audit public key.

use sha2::{Digest, Sha256};

/// Number of hex characters of the SHA-256 digest shown (128 bits).
const FINGERPRINT_HEX_CHARS: usize = 32;
/// Hex characters per group, so the fingerprint can be read aloud in chunks.
const GROUP: usize = 4;

/// The first 128 bits of SHA-256(public key) in lowercase hex, in groups of four separated by
/// `:` (e.g. `3f2a:09bc:...`, 39 characters), for out-of-band comparison at a ceremony.
pub fn public_key_fingerprint(public_key: &[u8; 32]) -> String {
    let digest = hex::encode(Sha256::digest(public_key));
    let short = &digest[..FINGERPRINT_HEX_CHARS];
    let groups: Vec<&str> = (0..FINGERPRINT_HEX_CHARS / GROUP)
        .map(|i| &short[i * GROUP..(i + 1) * GROUP])
        .collect();
    groups.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_grouped_prefix_of_sha256() {
        let pk = [7u8; 32];
        let fp = public_key_fingerprint(&pk);
        assert_eq!(fp.len(), 39);
        let full = hex::encode(Sha256::digest(pk));
        assert_eq!(fp.replace(':', ""), full[..32]);
        assert_eq!(fp.matches(':').count(), 7);
    }

    #[test]
    fn different_keys_have_different_fingerprints() {
        assert_ne!(
            public_key_fingerprint(&[1u8; 32]),
            public_key_fingerprint(&[2u8; 32])
        );
    }
}
