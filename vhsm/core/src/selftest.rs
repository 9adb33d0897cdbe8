//! Power-on known-answer self-tests that must pass before the store will unseal.
//!
//! [`run`] checks every primitive the vhsm relies on against a published vector:
//! AES-256-GCM (NIST CAVP `gcmEncryptExtIV256`: encrypt, decrypt, and a tampered tag must be
//! refused), AES-KW (RFC 3394 §4.6), AES-KWP (NIST CAVP KWP-AE, 256-bit KEK), SHA-256
//! (FIPS 180-4 "abc"), HMAC-SHA-256 (RFC 4231 case 2) and Argon2id (RFC 9106 §5.3).
//! [`run_with_corruption`] runs the same checks with one bit of one primitive's expected value
//! flipped, so callers can prove in their own tests that a failing self-test is acted upon.

use std::fmt;

use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};

use crate::crypto::{
    aes_kw_unwrap, aes_kw_wrap, aes_kwp_unwrap, aes_kwp_wrap, ct_eq, hmac_sha256, sha256, GcmKey,
    SecretKey,
};

/// A primitive covered by the self-tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// AES-256-GCM encrypt, decrypt and tag verification.
    AesGcm,
    /// AES-256 key wrap (RFC 3394).
    AesKw,
    /// AES-256 key wrap with padding (RFC 5649).
    AesKwp,
    /// SHA-256.
    Sha256,
    /// HMAC-SHA-256.
    HmacSha256,
    /// Argon2id v1.3.
    Argon2id,
}

impl Primitive {
    /// Every primitive, in the order [`run`] checks them.
    pub const ALL: [Primitive; 6] = [
        Primitive::Sha256,
        Primitive::HmacSha256,
        Primitive::AesGcm,
        Primitive::AesKw,
        Primitive::AesKwp,
        Primitive::Argon2id,
    ];

    /// Stable name used in errors, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::AesGcm => "AES-256-GCM",
            Primitive::AesKw => "AES-KW",
            Primitive::AesKwp => "AES-KWP",
            Primitive::Sha256 => "SHA-256",
            Primitive::HmacSha256 => "HMAC-SHA-256",
            Primitive::Argon2id => "Argon2id",
        }
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A self-test failure; names the primitive only (the vectors are public, no secret is shown).
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SelfTestError {
    /// The named primitive did not reproduce its known answer.
    #[error("self-test failed: {0}")]
    Failed(Primitive),
}

impl SelfTestError {
    /// The primitive that failed.
    pub fn primitive(&self) -> Primitive {
        match self {
            SelfTestError::Failed(p) => *p,
        }
    }
}

/// Runs every known-answer test; the first failure is returned.
pub fn run() -> Result<(), SelfTestError> {
    run_checks(None)
}

/// Runs every known-answer test with one bit of `primitive`'s expected value flipped, so it
/// must fail with `SelfTestError::Failed(primitive)`. For tests of the code that reacts to a
/// failed self-test (e.g. a store that must refuse to unseal); never use it in production.
pub fn run_with_corruption(primitive: Primitive) -> Result<(), SelfTestError> {
    run_checks(Some(primitive))
}

fn run_checks(corrupt: Option<Primitive>) -> Result<(), SelfTestError> {
    for primitive in Primitive::ALL {
        if !check(primitive, corrupt == Some(primitive)) {
            return Err(SelfTestError::Failed(primitive));
        }
    }
    Ok(())
}

/// Runs one primitive's known-answer test; `flip` corrupts its expected value.
fn check(primitive: Primitive, flip: bool) -> bool {
    match primitive {
        Primitive::Sha256 => check_sha256(flip),
        Primitive::HmacSha256 => check_hmac(flip),
        Primitive::AesGcm => check_gcm(flip),
        Primitive::AesKw => check_kw(flip),
        Primitive::AesKwp => check_kwp(flip),
        Primitive::Argon2id => check_argon2id(flip),
    }
}

/// Decodes a hex constant and, when `flip` is set, flips the lowest bit of its last byte.
/// `None` only if the constant is not valid hex (a defect that then fails the check).
fn expected(hex_str: &str, flip: bool) -> Option<Vec<u8>> {
    let mut bytes = hex::decode(hex_str).ok()?;
    if flip {
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
    }
    Some(bytes)
}

fn check_sha256(flip: bool) -> bool {
    // FIPS 180-4 / NIST example: SHA-256("abc").
    let Some(want) = expected(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        flip,
    ) else {
        return false;
    };
    ct_eq(&sha256(b"abc"), &want)
}

fn check_hmac(flip: bool) -> bool {
    // RFC 4231 test case 2.
    let Some(want) = expected(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        flip,
    ) else {
        return false;
    };
    ct_eq(
        &hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        &want,
    )
}

fn check_gcm(flip: bool) -> bool {
    // NIST CAVP gcmEncryptExtIV256.rsp, [Keylen = 256] [IVlen = 96] [PTlen = 256] [AADlen = 160].
    let (Some(key), Some(iv), Some(pt), Some(aad), Some(ct), Some(tag)) = (
        expected(
            "5853c020946b35f2c58ec427152b840420c40029636adcbb027471378cfdde0f",
            false,
        ),
        expected("eec313dd07cc1b3e6b068a47", false),
        expected(
            "ce7458e56aef9061cb0c42ec2315565e6168f5a6249ffd31610b6d17ab64935e",
            false,
        ),
        expected("1389b522c24a774181700553f0246bbabdd38d6f", false),
        expected(
            "eadc3b8766a77ded1a58cb727eca2a9790496c298654cda78febf0da16b6903b",
            false,
        ),
        expected("3d49a5b32fde7eafcce90079217ffb57", flip),
    ) else {
        return false;
    };
    let (Ok(key), Ok(iv), Ok(tag)) = (
        SecretKey::from_slice(&key),
        <[u8; 12]>::try_from(iv.as_slice()),
        <[u8; 16]>::try_from(tag.as_slice()),
    ) else {
        return false;
    };
    let gcm = GcmKey::new(&key);
    let (got_ct, got_tag) = gcm.seal(&iv, &aad, &pt);
    if !(ct_eq(&got_ct, &ct) && ct_eq(&got_tag, &tag)) {
        return false;
    }
    match gcm.open(&iv, &aad, &ct, &tag) {
        Ok(opened) if ct_eq(&opened, &pt) => {}
        _ => return false,
    }
    let mut bad_tag = tag;
    bad_tag[0] ^= 0x80;
    gcm.open(&iv, &aad, &ct, &bad_tag).is_err()
}

fn check_kw(flip: bool) -> bool {
    // RFC 3394 §4.6: 256 bits of key data with a 256-bit KEK.
    let (Some(kek), Some(key), Some(wrapped)) = (
        expected(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            false,
        ),
        expected(
            "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f",
            false,
        ),
        expected(
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21",
            flip,
        ),
    ) else {
        return false;
    };
    let Ok(kek) = SecretKey::from_slice(&kek) else {
        return false;
    };
    let wrap_ok = matches!(aes_kw_wrap(&kek, &key), Ok(w) if ct_eq(&w, &wrapped));
    let unwrap_ok = matches!(aes_kw_unwrap(&kek, &wrapped), Ok(k) if ct_eq(&k, &key));
    wrap_ok && unwrap_ok
}

fn check_kwp(flip: bool) -> bool {
    // NIST CAVP KWP-AE, 256-bit KEK, 144-bit plaintext (exercises the padding).
    let (Some(kek), Some(key), Some(wrapped)) = (
        expected(
            "f2882a99e67fd1f0e024d2e973ee55bf2ae94d6798bc3b3a7ef94bfc9197a7f6",
            false,
        ),
        expected("13cdd6837c4c40fde0b9ec150093713771ac", false),
        expected(
            "d096d3702ea4252da0d36666d01f1f450bcd26c87814a8041f8eefd229ec4828",
            flip,
        ),
    ) else {
        return false;
    };
    let Ok(kek) = SecretKey::from_slice(&kek) else {
        return false;
    };
    let wrap_ok = matches!(aes_kwp_wrap(&kek, &key), Ok(w) if ct_eq(&w, &wrapped));
    let unwrap_ok = matches!(aes_kwp_unwrap(&kek, &wrapped), Ok(k) if ct_eq(&k, &key));
    wrap_ok && unwrap_ok
}

fn check_argon2id(flip: bool) -> bool {
    // RFC 9106 §5.3: Argon2id v1.3, m = 32 KiB, t = 3, p = 4, with secret and associated data.
    let Some(want) = expected(
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659",
        flip,
    ) else {
        return false;
    };
    let Ok(ad) = AssociatedData::new(&[0x04; 12]) else {
        return false;
    };
    let Ok(params) = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(ad)
        .build()
    else {
        return false;
    };
    let secret = [0x03u8; 8];
    let Ok(ctx) = Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params)
    else {
        return false;
    };
    let mut out = [0u8; 32];
    if ctx
        .hash_password_into(&[0x01; 32], &[0x02; 16], &mut out)
        .is_err()
    {
        return false;
    }
    ct_eq(&out, &want)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn all_known_answers_pass() {
        run().unwrap();
    }

    #[test]
    fn each_corrupted_primitive_is_detected_and_named() {
        for primitive in Primitive::ALL {
            assert_eq!(
                run_with_corruption(primitive),
                Err(SelfTestError::Failed(primitive)),
                "{primitive}"
            );
        }
    }

    #[test]
    fn each_check_passes_uncorrupted_and_fails_corrupted() {
        for primitive in Primitive::ALL {
            assert!(check(primitive, false), "{primitive} clean");
            assert!(!check(primitive, true), "{primitive} corrupted");
        }
    }

    #[test]
    fn error_message_names_the_primitive() {
        let err = SelfTestError::Failed(Primitive::AesKwp);
        assert_eq!(err.to_string(), "self-test failed: AES-KWP");
        assert_eq!(err.primitive(), Primitive::AesKwp);
    }

    #[test]
    fn expected_rejects_bad_hex_and_flips_one_bit() {
        assert!(expected("zz", false).is_none());
        assert_eq!(expected("0102", false).unwrap(), vec![1, 2]);
        assert_eq!(expected("0102", true).unwrap(), vec![1, 3]);
    }
}
