//! Fuzzes the XKS request parsing of xks-front: the API path after the key-store prefix
//! (`api::parse_path`) and the JSON bodies of GetHealthStatus, GetKeyMetadata, Encrypt and
//! Decrypt (`api::parse_metadata_only`, `parse_encrypt`, `parse_decrypt`).
//! Properties: no panic; an accepted path re-formats to the same text and names a valid key
//! id; an accepted body satisfies every limit the handlers rely on (sizes, IV and tag
//! lengths, required requestMetadata); an accepted Encrypt plaintext survives the Decrypt
//! response encoder (`decrypt_response_body`) unchanged.
//!
//! Input: the first line is the path (e.g. `/kms/xks/v1/keys/k1/encrypt`), the rest the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xks_front::api::{self, ApiPath, Operation};

fn check_path(path: &str) -> Option<Operation> {
    let parsed = api::parse_path(path)?;
    let again = match &parsed {
        ApiPath::Health => "/kms/xks/v1/health".to_string(),
        ApiPath::Key { key_id, op } => {
            assert!(api::valid_key_id(key_id), "accepted an invalid key id");
            let verb = match op {
                Operation::GetKeyMetadata => "metadata",
                Operation::Encrypt => "encrypt",
                Operation::Decrypt => "decrypt",
                Operation::GetHealthStatus => panic!("a key path parsed as health"),
            };
            format!("/kms/xks/v1/keys/{key_id}/{verb}")
        }
    };
    assert_eq!(again, path, "accepted path does not re-format to itself");
    Some(parsed.operation())
}

fn check_body(op: Operation, body: &[u8]) {
    match op {
        Operation::GetHealthStatus | Operation::GetKeyMetadata => {
            if let Ok(req) = api::parse_metadata_only(body, op) {
                assert!(
                    req.meta.check(op).is_ok(),
                    "accepted metadata fails its check"
                );
            }
        }
        Operation::Encrypt => {
            if let Ok(req) = api::parse_encrypt(body) {
                assert!(
                    req.meta.check(op).is_ok(),
                    "accepted metadata fails its check"
                );
                assert!(
                    req.plaintext.len() <= api::MAX_PLAINTEXT,
                    "plaintext over limit"
                );
                assert!(req.aad.len() <= api::MAX_AAD, "aad over limit");
                let resp = api::decrypt_response_body(&req.plaintext);
                let v: serde_json::Value = match serde_json::from_slice(&resp) {
                    Ok(v) => v,
                    Err(_) => panic!("decrypt_response_body is not JSON"),
                };
                let b64 = v["plaintext"].as_str().unwrap_or_default();
                assert_eq!(
                    b64,
                    api::encode(&req.plaintext),
                    "response plaintext differs"
                );
            }
        }
        Operation::Decrypt => {
            if let Ok(req) = api::parse_decrypt(body) {
                assert!(
                    req.meta.check(op).is_ok(),
                    "accepted metadata fails its check"
                );
                assert_eq!(req.iv.len(), 12, "accepted IV length");
                assert_eq!(req.tag.len(), 16, "accepted tag length");
                assert!(
                    req.metadata.len() <= api::MAX_METADATA,
                    "metadata over limit"
                );
                assert!(
                    req.ciphertext.len() <= api::MAX_PLAINTEXT,
                    "ciphertext over limit"
                );
                assert!(req.aad.len() <= api::MAX_AAD, "aad over limit");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (path, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let path_op = std::str::from_utf8(path).ok().and_then(check_path);
    // An unparsable path still fuzzes a body: the path's length picks the operation.
    let op = path_op.unwrap_or(match path.len() % 4 {
        0 => Operation::GetHealthStatus,
        1 => Operation::GetKeyMetadata,
        2 => Operation::Encrypt,
        _ => Operation::Decrypt,
    });
    check_body(op, body);
});
