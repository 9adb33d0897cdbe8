//! The Ciphertext Data Integrity Value: Base64(SHA-256(aad || metadata || iv || ciphertext || tag)).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The CDIV digest (spec §6.3) over the decoded request AAD and the encrypt output parts:
/// SHA-256 of their plain concatenation (absent parts are empty).
pub fn digest(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(aad);
    h.update(metadata);
    h.update(iv);
    h.update(ciphertext);
    h.update(tag);
    h.finalize().into()
}

/// The CDIV as it goes on the wire: Base64 of [`digest`].
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> String {
    STANDARD.encode(digest(aad, metadata, iv, ciphertext, tag))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The spec's Appendix C test vector (xks-proxy-api.md §11.1).
    #[test]
    fn spec_appendix_c_vector() {
        let v = cdiv(
            b"project=nile,department=marketing",
            b"key_version=1",
            &unhex("1ccae5470f39700254779031"),
            &unhex("821c642b5b71783367deaf18"),
            &unhex("bc1c4dda7707d6812447c5955e99b261"),
        );
        assert_eq!(v, "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
    }

    #[test]
    fn a_flipped_bit_changes_the_value() {
        let tag = unhex("bc1c4dda7707d6812447c5955e99b261");
        let mut bad = tag.clone();
        bad[0] ^= 1;
        let iv = unhex("1ccae5470f39700254779031");
        assert_ne!(
            cdiv(b"a", b"m", &iv, b"c", &tag),
            cdiv(b"a", b"m", &iv, b"c", &bad)
        );
    }

    #[test]
    fn digest_is_the_decoded_cdiv() {
        let d = digest(b"a", b"m", b"iv", b"c", b"t");
        assert_eq!(STANDARD.encode(d), cdiv(b"a", b"m", b"iv", b"c", b"t"));
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(b"amivct")));
    }

    #[test]
    fn absent_parts_contribute_nothing() {
        // SHA-256 of "ivcttag" regardless of how the parts are split.
        assert_eq!(
            cdiv(b"", b"", b"iv", b"ct", b"tag"),
            cdiv(b"ivct", b"", b"", b"", b"tag")
        );
    }
}
