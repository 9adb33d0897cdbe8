//! What each request of `xks load` carries: the URI paths and the KMS-shaped JSON bodies.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Serialize;
use zeroize::Zeroizing;

use super::args::Op;
use crate::errors::{CliError, CliResult};

/// The principal and key ARNs put in `requestMetadata` (opaque to a proxy).
const PRINCIPAL_ARN: &str = "arn:aws:iam::111122223333:role/vhsm-admin-xks-load";

/// One kind of call on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt of the run's plaintext.
    Encrypt,
    /// Decrypt of a ciphertext made earlier on the connection.
    Decrypt,
}

/// What an Encrypt returned, as needed to decrypt it again (Base64 as received, already checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `ciphertext`.
    pub ciphertext: String,
    /// `initializationVector`.
    pub iv: String,
    /// `authenticationTag`.
    pub tag: String,
    /// `ciphertextMetadata`, if the proxy returned one.
    pub metadata: Option<String>,
}

/// The fixed parts of every request of a run.
pub struct Workload {
    /// The operation chosen.
    pub op: Op,
    region: String,
    health_path: String,
    key_base: String,
    /// The plaintext sent by every Encrypt (random, test data only; zeroized on drop anyway).
    pub plaintext: Zeroizing<Vec<u8>>,
    plaintext_b64: String,
    /// The AAD sent by every Encrypt and Decrypt (empty = the field is left out).
    pub aad: Vec<u8>,
    aad_b64: Option<String>,
    key_arn: String,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("op", &self.op)
            .field("health_path", &self.health_path)
            .field("key_base", &self.key_base)
            .field("plaintext_len", &self.plaintext.len())
            .field("aad_len", &self.aad.len())
            .finish_non_exhaustive()
    }
}

/// Checks an external key id: 1-128 URI-unreserved characters (it goes into the path as is).
pub fn check_key_id(id: &str) -> CliResult<()> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid --key-id {id:?}: 1 to 128 of A-Z a-z 0-9 - . _ ~"
        )))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Metadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_principal_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_arn: Option<&'a str>,
    kms_operation: &'a str,
    kms_request_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataOnly<'a> {
    request_metadata: Metadata<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EncryptBody<'a> {
    request_metadata: Metadata<'a>,
    plaintext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_authenticated_data: Option<&'a str>,
    encryption_algorithm: &'a str,
    ciphertext_data_integrity_value_algorithm: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecryptBody<'a> {
    request_metadata: Metadata<'a>,
    ciphertext: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ciphertext_metadata: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_authenticated_data: Option<&'a str>,
    encryption_algorithm: &'a str,
    initialization_vector: &'a str,
    authentication_tag: &'a str,
}

impl Workload {
    /// The run's requests: `prefix` in front of /kms/xks/v1, random payload and AAD.
    pub fn new(
        op: Op,
        prefix: &str,
        key_id: Option<&str>,
        region: &str,
        payload_bytes: usize,
        aad_bytes: usize,
    ) -> CliResult<Self> {
        let key = key_id.unwrap_or("");
        if op.needs_key() {
            check_key_id(key)?;
        }
        let mut plaintext = Zeroizing::new(vec![0u8; payload_bytes]);
        let mut aad = vec![0u8; aad_bytes];
        getrandom::fill(plaintext.as_mut_slice())
            .and_then(|()| getrandom::fill(&mut aad))
            .map_err(|e| CliError::usage(format!("operating system randomness failed: {e}")))?;
        let plaintext_b64 = B64.encode(plaintext.as_slice());
        let aad_b64 = (!aad.is_empty()).then(|| B64.encode(&aad));
        Ok(Workload {
            op,
            region: region.to_string(),
            health_path: format!("{prefix}/kms/xks/v1/health"),
            key_base: format!("{prefix}/kms/xks/v1/keys/{key}"),
            plaintext,
            plaintext_b64,
            aad,
            aad_b64,
            key_arn: format!("arn:aws:kms:{region}:111122223333:key/vhsm-admin-xks-load"),
        })
    }

    /// The call number `seq` of a connection sends (mixed: Encrypt, Decrypt, Encrypt, ...).
    pub fn call(&self, seq: u64) -> Call {
        match self.op {
            Op::Health => Call::Health,
            Op::Metadata => Call::Metadata,
            Op::Encrypt => Call::Encrypt,
            Op::Decrypt => Call::Decrypt,
            Op::Mixed if seq.is_multiple_of(2) => Call::Encrypt,
            Op::Mixed => Call::Decrypt,
        }
    }

    /// The URI path of `call`.
    pub fn path(&self, call: Call) -> String {
        match call {
            Call::Health => self.health_path.clone(),
            Call::Metadata => format!("{}/metadata", self.key_base),
            Call::Encrypt => format!("{}/encrypt", self.key_base),
            Call::Decrypt => format!("{}/decrypt", self.key_base),
        }
    }

    /// The AWS region the run signs for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The JSON body of `call` with `request_id`; a Decrypt opens `sealed`.
    pub fn body(
        &self,
        call: Call,
        request_id: &str,
        sealed: Option<&Sealed>,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let meta = |op: &'static str, with_key: bool| Metadata {
            aws_principal_arn: with_key.then_some(PRINCIPAL_ARN),
            kms_key_arn: with_key.then_some(self.key_arn.as_str()),
            kms_operation: op,
            kms_request_id: request_id,
        };
        match (call, sealed) {
            (Call::Health, _) => serde_json::to_vec(&MetadataOnly {
                request_metadata: meta("KmsHealthCheck", false),
            }),
            (Call::Metadata, _) => serde_json::to_vec(&MetadataOnly {
                request_metadata: Metadata {
                    kms_key_arn: None,
                    ..meta("CreateKey", true)
                },
            }),
            (Call::Decrypt, None) => Err(serde::ser::Error::custom(
                "a Decrypt needs the ciphertext of an earlier Encrypt",
            )),
            (Call::Encrypt, _) => serde_json::to_vec(&EncryptBody {
                request_metadata: meta("Encrypt", true),
                plaintext: &self.plaintext_b64,
                additional_authenticated_data: self.aad_b64.as_deref(),
                encryption_algorithm: "AES_GCM",
                ciphertext_data_integrity_value_algorithm: "SHA_256",
            }),
            (Call::Decrypt, Some(s)) => serde_json::to_vec(&DecryptBody {
                request_metadata: meta("Decrypt", true),
                ciphertext: &s.ciphertext,
                ciphertext_metadata: s.metadata.as_deref(),
                additional_authenticated_data: self.aad_b64.as_deref(),
                encryption_algorithm: "AES_GCM",
                initialization_vector: &s.iv,
                authentication_tag: &s.tag,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn bodies_have_the_kms_shapes() {
        let w = Workload::new(Op::Mixed, "/example", Some("demo-key"), "us-east-1", 32, 8).unwrap();
        assert_eq!(w.call(0), Call::Encrypt);
        assert_eq!(w.call(1), Call::Decrypt);
        assert_eq!(
            w.path(Call::Encrypt),
            "/example/kms/xks/v1/keys/demo-key/encrypt"
        );
        assert_eq!(w.path(Call::Health), "/example/kms/xks/v1/health");
        let e: Value =
            serde_json::from_slice(&w.body(Call::Encrypt, "r-1", None).unwrap()).unwrap();
        assert_eq!(e["requestMetadata"]["kmsRequestId"], "r-1");
        assert_eq!(e["requestMetadata"]["kmsOperation"], "Encrypt");
        assert_eq!(
            B64.decode(e["plaintext"].as_str().unwrap()).unwrap(),
            *w.plaintext
        );
        assert_eq!(
            B64.decode(e["additionalAuthenticatedData"].as_str().unwrap())
                .unwrap(),
            w.aad
        );
        assert_eq!(e["ciphertextDataIntegrityValueAlgorithm"], "SHA_256");
        let s = Sealed {
            ciphertext: "Y3Q=".into(),
            iv: "aXY=".into(),
            tag: "dGFn".into(),
            metadata: None,
        };
        let d: Value =
            serde_json::from_slice(&w.body(Call::Decrypt, "r-2", Some(&s)).unwrap()).unwrap();
        assert_eq!(d["ciphertext"], "Y3Q=");
        assert_eq!(d["initializationVector"], "aXY=");
        assert!(d.get("ciphertextMetadata").is_none());
        assert!(w.body(Call::Decrypt, "r-2", None).is_err());
        let h: Value = serde_json::from_slice(&w.body(Call::Health, "r-3", None).unwrap()).unwrap();
        assert_eq!(h["requestMetadata"].as_object().unwrap().len(), 2);
        let m: Value =
            serde_json::from_slice(&w.body(Call::Metadata, "r-4", None).unwrap()).unwrap();
        assert!(m["requestMetadata"].get("kmsKeyArn").is_none());
        assert!(m["requestMetadata"]["awsPrincipalArn"].is_string());
    }

    #[test]
    fn no_aad_means_no_field() {
        let w = Workload::new(Op::Encrypt, "", Some("k"), "us-east-1", 4, 0).unwrap();
        let e: Value = serde_json::from_slice(&w.body(Call::Encrypt, "r", None).unwrap()).unwrap();
        assert!(e.get("additionalAuthenticatedData").is_none());
        assert_eq!(w.path(Call::Encrypt), "/kms/xks/v1/keys/k/encrypt");
    }

    #[test]
    fn key_ids_are_path_safe() {
        assert!(check_key_id("demo-key.v1_~").is_ok());
        for bad in ["", "a/b", "a b", "a?b", &"k".repeat(129)] {
            assert!(check_key_id(bad).is_err(), "{bad}");
        }
        assert!(Workload::new(Op::Encrypt, "", None, "r", 1, 0).is_err());
        assert!(Workload::new(Op::Health, "", None, "r", 1, 0).is_ok());
    }
}
