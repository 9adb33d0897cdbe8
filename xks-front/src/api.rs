//! XKS wire types: request bodies parsed into typed, size-checked values, and response bodies.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::errors::{ErrorName, XksError};

/// Largest plaintext/ciphertext we accept (spec minimum 4300 B); above → UnsupportedOperation.
pub const MAX_PLAINTEXT: usize = 8192;
/// Largest AAD we accept (spec minimum 8192 B); above → UnsupportedOperation.
pub const MAX_AAD: usize = 16384;
/// Largest ciphertextMetadata KMS allows (above → ValidationException).
pub const MAX_METADATA: usize = 20;
/// Largest request body read (enough for the limits above plus 2048-char ARNs).
pub const MAX_BODY: usize = 64 * 1024;
/// Longest accepted request URI (spec: the whole URI ≤ 256 characters).
pub const MAX_URI: usize = 256;

/// The four XKS operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST …/keys/{id}/metadata
    GetKeyMetadata,
    /// POST …/keys/{id}/encrypt
    Encrypt,
    /// POST …/keys/{id}/decrypt
    Decrypt,
    /// POST …/health
    GetHealthStatus,
}

impl Operation {
    /// The XKS operation name (metrics and access log label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GetKeyMetadata => "GetKeyMetadata",
            Self::Encrypt => "Encrypt",
            Self::Decrypt => "Decrypt",
            Self::GetHealthStatus => "GetHealthStatus",
        }
    }
}

/// A parsed API path (the part after the key store's prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath<'a> {
    /// `/kms/xks/v1/health`
    Health,
    /// `/kms/xks/v1/keys/{externalKeyId}/{metadata|encrypt|decrypt}`
    Key {
        /// The externalKeyId (`[A-Za-z0-9._-]{1,128}`).
        key_id: &'a str,
        /// The operation.
        op: Operation,
    },
}

impl ApiPath<'_> {
    /// The operation of this path.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Health => Operation::GetHealthStatus,
            Self::Key { op, .. } => *op,
        }
    }
}

/// True for a valid externalKeyId: `[A-Za-z0-9._-]{1,128}`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Parses the remainder of a path after the key-store prefix; None = not an API path.
pub fn parse_path(rest: &str) -> Option<ApiPath<'_>> {
    let rest = rest.strip_prefix("/kms/xks/v1/")?;
    if rest == "health" {
        return Some(ApiPath::Health);
    }
    let rest = rest.strip_prefix("keys/")?;
    let (key_id, op) = rest.split_once('/')?;
    let op = match op {
        "metadata" => Operation::GetKeyMetadata,
        "encrypt" => Operation::Encrypt,
        "decrypt" => Operation::Decrypt,
        _ => return None,
    };
    valid_key_id(key_id).then_some(ApiPath::Key { key_id, op })
}

/// `requestMetadata` as sent (unknown fields ignored; presence checked per operation).
#[derive(Deserialize, Default, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// Caller of the KMS API.
    pub aws_principal_arn: Option<String>,
    /// Source VPC (optional).
    pub aws_source_vpc: Option<String>,
    /// Source VPC endpoint (optional).
    pub aws_source_vpce: Option<String>,
    /// The KMS key ARN (Encrypt, Decrypt).
    pub kms_key_arn: Option<String>,
    /// KMS API behind this call; any value accepted.
    pub kms_operation: Option<String>,
    /// KMS request id (logged).
    pub kms_request_id: Option<String>,
    /// Calling AWS service (optional).
    pub kms_via_service: Option<String>,
}

impl std::fmt::Debug for RequestMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetadata")
            .field("kms_request_id", &self.kms_request_id)
            .field("kms_operation", &self.kms_operation)
            .finish_non_exhaustive()
    }
}

fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

impl RequestMetadata {
    /// Checks the fields the spec marks REQUIRED for `op`.
    pub fn check(&self, op: Operation) -> Result<(), XksError> {
        if !present(&self.kms_request_id) {
            return Err(XksError::validation(
                "requestMetadata.kmsRequestId is required",
            ));
        }
        if !present(&self.kms_operation) {
            return Err(XksError::validation(
                "requestMetadata.kmsOperation is required",
            ));
        }
        if op == Operation::GetHealthStatus {
            return Ok(());
        }
        if !present(&self.aws_principal_arn) {
            return Err(XksError::validation(
                "requestMetadata.awsPrincipalArn is required",
            ));
        }
        if matches!(op, Operation::Encrypt | Operation::Decrypt) && !present(&self.kms_key_arn) {
            return Err(XksError::validation(
                "requestMetadata.kmsKeyArn is required",
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataOnlyBody {
    request_metadata: Option<RequestMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptBody {
    request_metadata: Option<RequestMetadata>,
    plaintext: Option<String>,
    encryption_algorithm: Option<String>,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptBody {
    request_metadata: Option<RequestMetadata>,
    ciphertext: Option<String>,
    ciphertext_metadata: Option<String>,
    encryption_algorithm: Option<String>,
    additional_authenticated_data: Option<String>,
    initialization_vector: Option<String>,
    authentication_tag: Option<String>,
}

/// A parsed GetKeyMetadata or GetHealthStatus request.
#[derive(Debug)]
pub struct MetadataRequest {
    /// The checked requestMetadata.
    pub meta: RequestMetadata,
}

/// A parsed Encrypt request.
pub struct EncryptRequest {
    /// The checked requestMetadata.
    pub meta: RequestMetadata,
    /// Decoded plaintext (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Decoded AAD (empty when absent).
    pub aad: Vec<u8>,
    /// `ciphertextDataIntegrityValueAlgorithm` = SHA_256 was asked for.
    pub want_cdiv: bool,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("meta", &self.meta)
            .field("plaintext_len", &self.plaintext.len())
            .field("aad_len", &self.aad.len())
            .field("want_cdiv", &self.want_cdiv)
            .finish()
    }
}

/// A parsed Decrypt request.
pub struct DecryptRequest {
    /// The checked requestMetadata.
    pub meta: RequestMetadata,
    /// Ciphertext (tag not appended).
    pub ciphertext: Vec<u8>,
    /// ciphertextMetadata (empty when absent).
    pub metadata: Vec<u8>,
    /// AAD (empty when absent).
    pub aad: Vec<u8>,
    /// 12-byte IV.
    pub iv: Vec<u8>,
    /// 16-byte tag.
    pub tag: Vec<u8>,
}

impl std::fmt::Debug for DecryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptRequest")
            .field("meta", &self.meta)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("aad_len", &self.aad.len())
            .field("metadata_len", &self.metadata.len())
            .finish_non_exhaustive()
    }
}

const BAD_JSON: XksError =
    XksError::validation("request body is not valid JSON for this operation");

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|_| BAD_JSON)
}

fn need_meta(m: Option<RequestMetadata>, op: Operation) -> Result<RequestMetadata, XksError> {
    let m = m.ok_or(XksError::validation("requestMetadata is required"))?;
    m.check(op)?;
    Ok(m)
}

fn b64(field: Option<&str>, bad: &'static str) -> Result<Vec<u8>, XksError> {
    match field {
        None => Ok(Vec::new()),
        Some(s) => STANDARD.decode(s).map_err(|_| XksError::validation(bad)),
    }
}

fn check_algorithm(a: Option<&str>) -> Result<(), XksError> {
    match a {
        None => Err(XksError::validation("encryptionAlgorithm is required")),
        Some("AES_GCM") => Ok(()),
        Some(_) => Err(XksError::validation("encryptionAlgorithm must be AES_GCM")),
    }
}

const TOO_LARGE_DATA: XksError = XksError::new(
    ErrorName::UnsupportedOperation,
    "plaintext or ciphertext above 8192 bytes",
);
const TOO_LARGE_AAD: XksError = XksError::new(
    ErrorName::UnsupportedOperation,
    "additionalAuthenticatedData above 16384 bytes",
);

/// Parses a GetKeyMetadata or GetHealthStatus body.
pub fn parse_metadata_only(body: &[u8], op: Operation) -> Result<MetadataRequest, XksError> {
    let b: MetadataOnlyBody = json(body)?;
    Ok(MetadataRequest {
        meta: need_meta(b.request_metadata, op)?,
    })
}

/// Parses and checks an Encrypt body.
pub fn parse_encrypt(body: &[u8]) -> Result<EncryptRequest, XksError> {
    let mut b: EncryptBody = json(body)?;
    let meta = need_meta(b.request_metadata.take(), Operation::Encrypt)?;
    let plaintext_b64 = Zeroizing::new(
        b.plaintext
            .take()
            .ok_or(XksError::validation("plaintext is required"))?,
    );
    check_algorithm(b.encryption_algorithm.as_deref())?;
    let want_cdiv = match b.ciphertext_data_integrity_value_algorithm.as_deref() {
        None => false,
        Some("SHA_256") => true,
        Some(_) => {
            return Err(XksError::validation(
                "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
            ))
        }
    };
    let plaintext = Zeroizing::new(
        STANDARD
            .decode(plaintext_b64.as_bytes())
            .map_err(|_| XksError::validation("plaintext is not valid Base64"))?,
    );
    let aad = b64(
        b.additional_authenticated_data.as_deref(),
        "additionalAuthenticatedData is not valid Base64",
    )?;
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(TOO_LARGE_DATA);
    }
    if aad.len() > MAX_AAD {
        return Err(TOO_LARGE_AAD);
    }
    Ok(EncryptRequest {
        meta,
        plaintext,
        aad,
        want_cdiv,
    })
}

/// Parses and checks a Decrypt body.
pub fn parse_decrypt(body: &[u8]) -> Result<DecryptRequest, XksError> {
    let b: DecryptBody = json(body)?;
    let meta = need_meta(b.request_metadata, Operation::Decrypt)?;
    check_algorithm(b.encryption_algorithm.as_deref())?;
    let ciphertext = b64(
        Some(
            b.ciphertext
                .as_deref()
                .ok_or(XksError::validation("ciphertext is required"))?,
        ),
        "ciphertext is not valid Base64",
    )?;
    let iv = b64(
        Some(
            b.initialization_vector
                .as_deref()
                .ok_or(XksError::validation("initializationVector is required"))?,
        ),
        "initializationVector is not valid Base64",
    )?;
    let tag = b64(
        Some(
            b.authentication_tag
                .as_deref()
                .ok_or(XksError::validation("authenticationTag is required"))?,
        ),
        "authenticationTag is not valid Base64",
    )?;
    let metadata = b64(
        b.ciphertext_metadata.as_deref(),
        "ciphertextMetadata is not valid Base64",
    )?;
    let aad = b64(
        b.additional_authenticated_data.as_deref(),
        "additionalAuthenticatedData is not valid Base64",
    )?;
    if metadata.len() > MAX_METADATA {
        return Err(XksError::validation("ciphertextMetadata above 20 bytes"));
    }
    match iv.len() {
        12 => {}
        // Valid per the spec, but we only ever produce 12-byte IVs: it cannot be ours.
        16 => {
            return Err(XksError::new(
                ErrorName::InvalidCiphertext,
                "initializationVector was not produced by this key manager",
            ))
        }
        _ => {
            return Err(XksError::validation(
                "initializationVector must be 12 or 16 bytes",
            ))
        }
    }
    if tag.len() != 16 {
        return Err(XksError::validation("authenticationTag must be 16 bytes"));
    }
    if ciphertext.len() > MAX_PLAINTEXT {
        return Err(TOO_LARGE_DATA);
    }
    if aad.len() > MAX_AAD {
        return Err(TOO_LARGE_AAD);
    }
    Ok(DecryptRequest {
        meta,
        ciphertext,
        metadata,
        aad,
        iv,
        tag,
    })
}

/// GetKeyMetadata response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadataResponse {
    /// "AES_256".
    pub key_spec: String,
    /// ENCRYPT and/or DECRYPT.
    pub key_usage: Vec<&'static str>,
    /// ENABLED or DISABLED.
    pub key_status: &'static str,
}

/// Encrypt response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// Base64 ciphertext.
    pub ciphertext: String,
    /// Base64 metadata (omitted when empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    /// Base64 IV.
    pub initialization_vector: String,
    /// Base64 tag.
    pub authentication_tag: String,
    /// Base64 CDIV when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

/// Standard padded Base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The Decrypt response body `{"plaintext":"…"}`; the intermediate Base64 text is zeroized.
pub fn decrypt_response_body(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let b64 = Zeroizing::new(STANDARD.encode(plaintext));
    let mut out = Zeroizing::new(Vec::with_capacity(b64.len() + 16));
    out.extend_from_slice(b"{\"plaintext\":\"");
    out.extend_from_slice(b64.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta() -> serde_json::Value {
        json!({"awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
               "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1",
               "kmsOperation": "Encrypt", "kmsRequestId": "r-1"})
    }

    fn bytes(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/kms/xks/v1/health"), Some(ApiPath::Health));
        assert_eq!(
            parse_path("/kms/xks/v1/keys/demo-key/encrypt"),
            Some(ApiPath::Key {
                key_id: "demo-key",
                op: Operation::Encrypt
            })
        );
        for bad in [
            "/kms/xks/v1/keys/demo-key/sign",
            "/kms/xks/v1/keys//encrypt",
            "/kms/xks/v1/keys/a b/encrypt",
            "/kms/xks/v2/health",
            "/kms/xks/v1/keys/a/encrypt/x",
            "/kms/xks/v1/healthz",
            "",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
        assert!(parse_path(&format!("/kms/xks/v1/keys/{}/decrypt", "k".repeat(129))).is_none());
    }

    #[test]
    fn spec_encrypt_example_parses() {
        let body = bytes(json!({"requestMetadata": meta(),
            "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
            "plaintext": "SGVsbG8gV29ybGQh", "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256", "futureField": 1}));
        let r = parse_encrypt(&body).unwrap();
        assert_eq!(&r.plaintext[..], b"Hello World!");
        assert_eq!(r.aad, b"project=nile,department=marketing");
        assert!(r.want_cdiv);
        assert!(!format!("{r:?}").contains("Hello"));
    }

    #[test]
    fn encrypt_validation_errors() {
        let ok = json!({"requestMetadata": meta(), "plaintext": "AAAA", "encryptionAlgorithm": "AES_GCM"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = ok.clone();
            b[k] = v;
            parse_encrypt(&bytes(b)).unwrap_err()
        };
        let without = |k: &str| {
            let mut b = ok.clone();
            b.as_object_mut().unwrap().remove(k);
            parse_encrypt(&bytes(b)).unwrap_err()
        };
        assert_eq!(without("requestMetadata").name, ErrorName::Validation);
        assert_eq!(without("plaintext").name, ErrorName::Validation);
        assert_eq!(without("encryptionAlgorithm").name, ErrorName::Validation);
        assert_eq!(
            with("plaintext", json!("not base64!")).name,
            ErrorName::Validation
        );
        assert_eq!(with("plaintext", json!("AAA")).name, ErrorName::Validation);
        assert_eq!(with("plaintext", json!(5)).name, ErrorName::Validation);
        assert_eq!(
            with("encryptionAlgorithm", json!("AES_CBC")).name,
            ErrorName::Validation
        );
        assert_eq!(
            with("ciphertextDataIntegrityValueAlgorithm", json!("MD5")).name,
            ErrorName::Validation
        );
        let mut m = meta();
        m.as_object_mut().unwrap().remove("kmsKeyArn");
        assert_eq!(with("requestMetadata", m).name, ErrorName::Validation);
        assert_eq!(
            parse_encrypt(b"not json").unwrap_err().name,
            ErrorName::Validation
        );
    }

    #[test]
    fn encrypt_size_limits() {
        let at = |pt: usize, aad: usize| {
            parse_encrypt(&bytes(json!({"requestMetadata": meta(),
                "plaintext": encode(&vec![0; pt]), "encryptionAlgorithm": "AES_GCM",
                "additionalAuthenticatedData": encode(&vec![0; aad])})))
        };
        assert!(at(4300, 8192).is_ok());
        assert!(at(MAX_PLAINTEXT, MAX_AAD).is_ok());
        assert_eq!(
            at(MAX_PLAINTEXT + 1, 0).unwrap_err().name,
            ErrorName::UnsupportedOperation
        );
        assert_eq!(
            at(1, MAX_AAD + 1).unwrap_err().name,
            ErrorName::UnsupportedOperation
        );
    }

    #[test]
    fn decrypt_checks() {
        let ok = json!({"requestMetadata": meta(), "ciphertext": "ghxkK1txeDNn3q8Y",
            "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==", "encryptionAlgorithm": "AES_GCM",
            "initializationVector": "HMrlRw85cAJUd5Ax", "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ=="});
        let r = parse_decrypt(&bytes(ok.clone())).unwrap();
        assert_eq!(r.metadata, b"key_version=1");
        assert_eq!(r.iv.len(), 12);
        let with = |k: &str, v: serde_json::Value| {
            let mut b = ok.clone();
            b[k] = v;
            parse_decrypt(&bytes(b)).unwrap_err().name
        };
        assert_eq!(
            with("ciphertextMetadata", json!(encode(&[0; 21]))),
            ErrorName::Validation
        );
        assert_eq!(
            with("initializationVector", json!(encode(&[0; 16]))),
            ErrorName::InvalidCiphertext
        );
        assert_eq!(
            with("initializationVector", json!(encode(&[0; 8]))),
            ErrorName::Validation
        );
        assert_eq!(
            with("authenticationTag", json!(encode(&[0; 12]))),
            ErrorName::Validation
        );
        assert_eq!(with("ciphertext", json!("%%%")), ErrorName::Validation);
        assert_eq!(
            with("ciphertext", json!(encode(&vec![0; MAX_PLAINTEXT + 1]))),
            ErrorName::UnsupportedOperation
        );
        assert_eq!(
            with("encryptionAlgorithm", json!("RSA")),
            ErrorName::Validation
        );
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove("authenticationTag");
        assert_eq!(
            parse_decrypt(&bytes(b)).unwrap_err().name,
            ErrorName::Validation
        );
    }

    #[test]
    fn health_and_metadata_requirements() {
        let h = |v: serde_json::Value| parse_metadata_only(&bytes(v), Operation::GetHealthStatus);
        assert!(h(
            json!({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "KmsHealthCheck"}})
        )
        .is_ok());
        assert_eq!(h(json!({})).unwrap_err().name, ErrorName::Validation);
        assert_eq!(
            h(json!({"requestMetadata": {}})).unwrap_err().name,
            ErrorName::Validation
        );
        let m = |v: serde_json::Value| parse_metadata_only(&bytes(v), Operation::GetKeyMetadata);
        assert!(m(
            json!({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "SomethingNew",
            "awsPrincipalArn": "AWS Internal"}})
        )
        .is_ok());
        assert_eq!(
            m(json!({"requestMetadata": {"kmsRequestId": "r", "kmsOperation": "CreateKey"}}))
                .unwrap_err()
                .name,
            ErrorName::Validation
        );
    }

    #[test]
    fn decrypt_body_is_json() {
        let v: serde_json::Value =
            serde_json::from_slice(&decrypt_response_body(b"Hello World!")).unwrap();
        assert_eq!(v["plaintext"], "SGVsbG8gV29ybGQh");
    }

    use crate::fuzz::Rng;

    /// JSON- and Base64-significant bytes plus hostile ones.
    const ALPHABET: &[u8] = b"{}[]:,\"\\0123456789-+.eE \t\ntruefalsnulAQ=/+\x00\x7f\xc3\xa9\xff";

    fn mutate(valid: &[u8], rng: &mut Rng) -> Vec<u8> {
        crate::fuzz::mutate(valid, ALPHABET, rng, usize::MAX)
    }

    /// Mutated valid bodies and random bytes: `count` cases, the first `valid` unchanged.
    fn cases(valid: &[u8], seed: u64, count: usize) -> Vec<Vec<u8>> {
        let mut rng = Rng(seed);
        let mut out = vec![valid.to_vec()];
        for i in 0..count {
            if i % 5 == 0 {
                let n = rng.below(2 * valid.len());
                out.push(
                    (0..n)
                        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                        .collect(),
                );
            } else {
                out.push(mutate(valid, &mut rng));
            }
        }
        out
    }

    /// The Base64 string field `name` of `body`, decoded independently of the parser.
    /// serde_json skips the strings of ignored (unknown) fields without validating them, so a
    /// body the parser accepts may hold invalid UTF-8 or lone surrogates there: such bytes are
    /// replaced first, and a body `Value` still refuses yields `Err` (nothing to compare).
    fn field(body: &[u8], name: &str) -> Result<Option<Vec<u8>>, ()> {
        let v: serde_json::Value =
            serde_json::from_str(&String::from_utf8_lossy(body)).map_err(|_| ())?;
        Ok(v.get(name)
            .and_then(|f| f.as_str())
            .map(|s| STANDARD.decode(s).unwrap()))
    }

    #[test]
    fn mutated_encrypt_bodies_give_typed_errors_or_valid_requests() {
        let valid = bytes(json!({"requestMetadata": meta(),
            "additionalAuthenticatedData": "cHJvamVjdD1uaWxl",
            "plaintext": "SGVsbG8gV29ybGQh", "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}));
        let (mut ok, mut err) = (0, 0);
        for body in cases(&valid, 0xa91_0001, 3000) {
            match parse_encrypt(&body) {
                Ok(r) => {
                    ok += 1;
                    r.meta.check(Operation::Encrypt).unwrap();
                    assert!(r.plaintext.len() <= MAX_PLAINTEXT && r.aad.len() <= MAX_AAD);
                    if let Ok(pt) = field(&body, "plaintext") {
                        assert_eq!(Some(r.plaintext.to_vec()), pt);
                        let aad = field(&body, "additionalAuthenticatedData").unwrap();
                        assert_eq!(r.aad, aad.unwrap_or_default());
                    }
                }
                Err(e) => {
                    err += 1;
                    assert!(
                        matches!(
                            e.name,
                            ErrorName::Validation | ErrorName::UnsupportedOperation
                        ),
                        "{e:?}"
                    );
                }
            }
        }
        assert!(ok > 1 && err > 1000, "ok {ok} err {err}");
    }

    #[test]
    fn mutated_decrypt_bodies_give_typed_errors_or_valid_requests() {
        let valid = bytes(json!({"requestMetadata": meta(),
            "ciphertext": "AAECAwQ=", "ciphertextMetadata": "AQAAAAE=",
            "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": "YWFk",
            "initializationVector": "AAAAAAAAAAAAAAAA", "authenticationTag": "AAAAAAAAAAAAAAAAAAAAAA=="}));
        let (mut ok, mut err) = (0, 0);
        for body in cases(&valid, 0xa91_0002, 3000) {
            match parse_decrypt(&body) {
                Ok(r) => {
                    ok += 1;
                    r.meta.check(Operation::Decrypt).unwrap();
                    assert_eq!((r.iv.len(), r.tag.len()), (12, 16));
                    assert!(r.metadata.len() <= MAX_METADATA);
                    assert!(r.ciphertext.len() <= MAX_PLAINTEXT && r.aad.len() <= MAX_AAD);
                    if let Ok(ct) = field(&body, "ciphertext") {
                        assert_eq!(Some(r.ciphertext), ct);
                        let iv = field(&body, "initializationVector").unwrap();
                        assert_eq!(Some(r.iv), iv);
                        let tag = field(&body, "authenticationTag").unwrap();
                        assert_eq!(Some(r.tag), tag);
                        let md = field(&body, "ciphertextMetadata").unwrap();
                        assert_eq!(r.metadata, md.unwrap_or_default());
                    }
                }
                Err(e) => {
                    err += 1;
                    assert!(
                        matches!(
                            e.name,
                            ErrorName::Validation
                                | ErrorName::UnsupportedOperation
                                | ErrorName::InvalidCiphertext
                        ),
                        "{e:?}"
                    );
                }
            }
        }
        assert!(ok > 1 && err > 1000, "ok {ok} err {err}");
    }

    #[test]
    fn mutated_metadata_only_bodies_give_typed_errors_or_valid_requests() {
        for (op, seed) in [
            (Operation::GetKeyMetadata, 3),
            (Operation::GetHealthStatus, 4),
        ] {
            let valid = bytes(json!({"requestMetadata": meta()}));
            for body in cases(&valid, 0xa91_0000 + seed, 2000) {
                match parse_metadata_only(&body, op) {
                    Ok(r) => r.meta.check(op).unwrap(),
                    Err(e) => assert_eq!(e.name, ErrorName::Validation, "{e:?}"),
                }
            }
        }
    }
}
