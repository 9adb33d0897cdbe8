//! Checks every XKS response of `xks load`: the shape of each answer, the CDIV of an Encrypt
//! recomputed (SHA-256 over AAD || ciphertextMetadata || IV || ciphertext || tag), the plaintext
//! of a Decrypt, and the `errorName` of an error.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::workload::Sealed;

/// How one answered request counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 and the answer checks out.
    Ok,
    /// An error answer: its HTTP status and `errorName` ("" when the body names none).
    Error {
        /// HTTP status.
        status: u16,
        /// The body's `errorName`, `(none)` or `(not JSON)`.
        name: String,
    },
    /// 200 but the answer is wrong: what was wrong.
    VerifyFailed(&'static str),
}

/// The `errorName` of an error body.
pub fn error_outcome(status: u16, body: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        error_name: Option<String>,
    }
    let name = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error_name: Some(n),
        }) if !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()) => n,
        Ok(_) => "(none)".to_string(),
        Err(_) => "(not JSON)".to_string(),
    };
    Outcome::Error { status, name }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptAnswer {
    ciphertext: String,
    initialization_vector: String,
    authentication_tag: String,
    ciphertext_metadata: Option<String>,
    ciphertext_data_integrity_value: Option<String>,
}

fn decode(s: &str) -> Option<Vec<u8>> {
    B64.decode(s).ok()
}

/// SHA-256 over AAD || ciphertextMetadata || IV || ciphertext || tag (decoded, unframed).
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        h.update(part);
    }
    h.finalize().into()
}

/// Checks an Encrypt answer against the request's plaintext length and AAD; on success returns
/// what a Decrypt needs.
pub fn check_encrypt(
    status: u16,
    body: &[u8],
    plaintext_len: usize,
    aad: &[u8],
) -> (Outcome, Option<Sealed>) {
    if status != 200 {
        return (error_outcome(status, body), None);
    }
    let Ok(a) = serde_json::from_slice::<EncryptAnswer>(body) else {
        return (Outcome::VerifyFailed("malformed"), None);
    };
    let (Some(ct), Some(iv), Some(tag)) = (
        decode(&a.ciphertext),
        decode(&a.initialization_vector),
        decode(&a.authentication_tag),
    ) else {
        return (Outcome::VerifyFailed("malformed"), None);
    };
    let md = match a.ciphertext_metadata.as_deref().map(decode) {
        None => Vec::new(),
        Some(Some(m)) => m,
        Some(None) => return (Outcome::VerifyFailed("malformed"), None),
    };
    if ct.len() != plaintext_len || !matches!(iv.len(), 12 | 16) || tag.len() != 16 || md.len() > 20
    {
        return (Outcome::VerifyFailed("bad_lengths"), None);
    }
    let Some(got) = a.ciphertext_data_integrity_value.as_deref() else {
        return (Outcome::VerifyFailed("cdiv_missing"), None);
    };
    let want = cdiv(aad, &md, &iv, &ct, &tag);
    if decode(got).is_none_or(|g| g != want) {
        return (Outcome::VerifyFailed("cdiv_mismatch"), None);
    }
    let sealed = Sealed {
        ciphertext: a.ciphertext,
        iv: a.initialization_vector,
        tag: a.authentication_tag,
        metadata: a.ciphertext_metadata,
    };
    (Outcome::Ok, Some(sealed))
}

/// Checks a Decrypt answer: it must return exactly `plaintext`.
pub fn check_decrypt(status: u16, body: &[u8], plaintext: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    struct DecryptAnswer {
        plaintext: String,
    }
    if status != 200 {
        return error_outcome(status, body);
    }
    let Ok(a) = serde_json::from_slice::<DecryptAnswer>(body) else {
        return Outcome::VerifyFailed("malformed");
    };
    match decode(&a.plaintext) {
        None => Outcome::VerifyFailed("malformed"),
        Some(p) => {
            // Test data, but a plaintext all the same: wiped after the comparison.
            let p = Zeroizing::new(p);
            if p.as_slice() == plaintext {
                Outcome::Ok
            } else {
                Outcome::VerifyFailed("plaintext_mismatch")
            }
        }
    }
}

/// Checks a GetKeyMetadata answer: keySpec, keyUsage (at most 10) and keyStatus.
pub fn check_metadata(status: u16, body: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MetadataAnswer {
        key_spec: String,
        key_usage: Vec<String>,
        key_status: String,
    }
    if status != 200 {
        return error_outcome(status, body);
    }
    match serde_json::from_slice::<MetadataAnswer>(body) {
        Ok(m)
            if !m.key_spec.is_empty()
                && m.key_usage.len() <= 10
                && matches!(m.key_status.as_str(), "ENABLED" | "DISABLED") =>
        {
            Outcome::Ok
        }
        _ => Outcome::VerifyFailed("malformed"),
    }
}

/// Checks a GetHealthStatus answer: fleet size > 0, 1 to 10 key managers with a known status.
pub fn check_health(status: u16, body: &[u8]) -> Outcome {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ekm {
        #[serde(rename = "healthStatus")]
        health_status: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct HealthAnswer {
        xks_proxy_fleet_size: u64,
        ekm_fleet_details: Vec<Ekm>,
    }
    if status != 200 {
        return error_outcome(status, body);
    }
    match serde_json::from_slice::<HealthAnswer>(body) {
        Ok(h)
            if h.xks_proxy_fleet_size > 0
                && (1..=10).contains(&h.ekm_fleet_details.len())
                && h.ekm_fleet_details.iter().all(|e| {
                    matches!(
                        e.health_status.as_str(),
                        "ACTIVE" | "DEGRADED" | "UNAVAILABLE"
                    )
                }) =>
        {
            Outcome::Ok
        }
        _ => Outcome::VerifyFailed("malformed"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The spec's Appendix C example (docs: shared/xks-proxy-api.md §11.1).
    fn spec_answer(cdiv: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==",
            "ciphertext": "ghxkK1txeDNn3q8Y",
            "ciphertextDataIntegrityValue": cdiv,
            "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
            "initializationVector": "HMrlRw85cAJUd5Ax"
        }))
        .unwrap()
    }
    const SPEC_AAD: &[u8] = b"project=nile,department=marketing";
    const SPEC_CDIV: &str = "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=";

    #[test]
    fn the_spec_cdiv_vector_verifies() {
        let (o, sealed) = check_encrypt(200, &spec_answer(SPEC_CDIV), 12, SPEC_AAD);
        assert_eq!(o, Outcome::Ok);
        let s = sealed.unwrap();
        assert_eq!(s.metadata.as_deref(), Some("a2V5X3ZlcnNpb249MQ=="));
        assert_eq!(s.iv, "HMrlRw85cAJUd5Ax");
    }

    #[test]
    fn a_wrong_cdiv_is_a_verification_failure() {
        let mut bad = B64.decode(SPEC_CDIV).unwrap();
        bad[0] ^= 1;
        let (o, s) = check_encrypt(200, &spec_answer(&B64.encode(bad)), 12, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("cdiv_mismatch"));
        assert!(s.is_none());
        // The CDIV covers the request's AAD: another AAD, another CDIV.
        let (o, _) = check_encrypt(200, &spec_answer(SPEC_CDIV), 12, b"project=nile");
        assert_eq!(o, Outcome::VerifyFailed("cdiv_mismatch"));
        let (o, _) = check_encrypt(200, &spec_answer("not base64!"), 12, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("cdiv_mismatch"));
    }

    #[test]
    fn missing_fields_and_wrong_lengths_fail() {
        let (o, _) = check_encrypt(200, &spec_answer(SPEC_CDIV), 13, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("bad_lengths"));
        let mut v: serde_json::Value = serde_json::from_slice(&spec_answer(SPEC_CDIV)).unwrap();
        v.as_object_mut()
            .unwrap()
            .remove("ciphertextDataIntegrityValue");
        let (o, _) = check_encrypt(200, &serde_json::to_vec(&v).unwrap(), 12, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("cdiv_missing"));
        let (o, _) = check_encrypt(200, b"{}", 12, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("malformed"));
        let (o, _) = check_encrypt(200, b"<html>", 12, SPEC_AAD);
        assert_eq!(o, Outcome::VerifyFailed("malformed"));
    }

    #[test]
    fn a_decrypt_must_return_the_plaintext() {
        let body = serde_json::to_vec(&json!({"plaintext": B64.encode(b"Hello World!")})).unwrap();
        assert_eq!(check_decrypt(200, &body, b"Hello World!"), Outcome::Ok);
        assert_eq!(
            check_decrypt(200, &body, b"Hello World?"),
            Outcome::VerifyFailed("plaintext_mismatch")
        );
        assert_eq!(
            check_decrypt(200, &body, b"Hello"),
            Outcome::VerifyFailed("plaintext_mismatch")
        );
        assert_eq!(
            check_decrypt(200, b"{}", b"x"),
            Outcome::VerifyFailed("malformed")
        );
    }

    #[test]
    fn errors_count_by_status_and_error_name() {
        let body = br#"{"errorName":"AuthenticationFailedException","errorMessage":"no"}"#;
        assert_eq!(
            check_decrypt(401, body, b"x"),
            Outcome::Error {
                status: 401,
                name: "AuthenticationFailedException".into()
            }
        );
        assert_eq!(
            error_outcome(502, b"Bad Gateway"),
            Outcome::Error {
                status: 502,
                name: "(not JSON)".into()
            }
        );
        assert_eq!(
            error_outcome(405, b""),
            Outcome::Error {
                status: 405,
                name: "(not JSON)".into()
            }
        );
        assert_eq!(
            error_outcome(500, b"{\"errorName\":\"bad\\nname\"}"),
            Outcome::Error {
                status: 500,
                name: "(none)".into()
            }
        );
    }

    #[test]
    fn metadata_and_health_shapes() {
        let m = br#"{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}"#;
        assert_eq!(check_metadata(200, m), Outcome::Ok);
        assert_eq!(
            check_metadata(
                200,
                br#"{"keySpec":"AES_256","keyUsage":[],"keyStatus":"ON"}"#
            ),
            Outcome::VerifyFailed("malformed")
        );
        let h =
            br#"{"xksProxyFleetSize":1,"xksProxyVendor":"v","xksProxyModel":"m","ekmVendor":"e",
                    "ekmFleetDetails":[{"id":"a","model":"b","healthStatus":"ACTIVE"}]}"#;
        assert_eq!(check_health(200, h), Outcome::Ok);
        let h0 = br#"{"xksProxyFleetSize":1,"ekmFleetDetails":[]}"#;
        assert_eq!(check_health(200, h0), Outcome::VerifyFailed("malformed"));
    }
}
