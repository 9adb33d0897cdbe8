//! The router end to end without a socket: every XKS error name and status, the happy paths, failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::body::Body;
use axum::http::{Request, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use vhsm_proto::v1::Reason;
use zeroize::Zeroizing;

use xks_front::conn::{ConnInfo, ConnState};
use xks_front::health::{HealthCache, NodeReport};
use xks_front::key_manager::{
    BoxFuture, DecryptInput, EncryptOutput, KeyManager, KeyMetadata, KeyState, Served, VhsmError,
};
use xks_front::keystores::Registry;
use xks_front::limits::RequestLimits;
use xks_front::metrics::Metrics;
use xks_front::router::{router, AppState, Settings};
use xks_front::vhsm_client::{HaGroup, NodeClient, NodeStatus};

const AKID: &str = "AKIAI2SFODNN7EXAMPLEAB";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
const TINY_AKID: &str = "TINYSTOREACCESSKEYID2345";
const HOST: &str = "xks.example.com";
const ALLOWED_ARN: &str = "arn:aws:iam::111122223333:user/Alice";
const DENIED_ARN: &str = "arn:aws:iam::999999999999:user/Mallory";

// ---------- the fake key manager ----------

/// Keys by id: "demo-key" works; the others fail in one specific way each. Counts its calls,
/// so tests can check how many key-manager round trips a request costs.
#[derive(Default)]
struct FakeKm {
    encrypts: AtomicUsize,
    decrypts: AtomicUsize,
}

/// The CDIV digest over the plain concatenation, as vhsm computes it at the source.
fn cdiv_of(aad: &[u8], md: &[u8], iv: &[u8], ct: &[u8], tag: &[u8]) -> Vec<u8> {
    Sha256::digest([aad, md, iv, ct, tag].concat()).to_vec()
}

fn tag_of(pt: &[u8], aad: &[u8], md: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(pt);
    h.update((aad.len() as u16).to_be_bytes());
    h.update(aad);
    h.update(md);
    h.finalize()[..16].to_vec()
}

fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ 0x5a).collect()
}

fn served<T>(value: T) -> Served<T> {
    Served {
        value,
        node: Arc::from("fake-1"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn failure(key_id: &str) -> Option<VhsmError> {
    match key_id {
        "disabled-key" => Some(VhsmError::Rejected(Reason::KeyDisabled)),
        "gone-key" => Some(VhsmError::Rejected(Reason::KeyNotFound)),
        "sealed-key" => Some(VhsmError::Rejected(Reason::Sealed)),
        "down-key" => Some(VhsmError::Unavailable),
        "decrypt-only" => Some(VhsmError::Rejected(Reason::UsageNotAllowed)),
        _ => None,
    }
}

impl KeyManager for FakeKm {
    fn encrypt<'a>(
        &'a self,
        key_id: &'a str,
        plaintext: &'a [u8],
        aad: &'a [u8],
        integrity_check: bool,
        _rid: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<EncryptOutput>, VhsmError>> {
        Box::pin(async move {
            self.encrypts.fetch_add(1, Ordering::SeqCst);
            if key_id == "slow-key" {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            if let Some(e) = failure(key_id) {
                return Err(e);
            }
            // As vhsmd: the integrity value promises a later decrypt, so it needs DECRYPT too.
            if integrity_check && key_id == "encrypt-only" {
                return Err(VhsmError::Rejected(Reason::UsageNotAllowed));
            }
            let mut out = if key_id == "spec-vector" {
                EncryptOutput {
                    ciphertext: unhex("821c642b5b71783367deaf18"),
                    iv: unhex("1ccae5470f39700254779031"),
                    tag: unhex("bc1c4dda7707d6812447c5955e99b261"),
                    metadata: b"key_version=1".to_vec(),
                    integrity_value: Vec::new(),
                }
            } else {
                let md = vec![1, 0, 0, 0, 1];
                EncryptOutput {
                    ciphertext: xor(plaintext),
                    iv: vec![7; 12],
                    tag: tag_of(plaintext, aad, &md),
                    metadata: md,
                    integrity_value: Vec::new(),
                }
            };
            if integrity_check {
                let o = &out;
                out.integrity_value = cdiv_of(aad, &o.metadata, &o.iv, &o.ciphertext, &o.tag);
                match key_id {
                    // A bit flipped between vhsm's CDIV and the router (or by vhsm itself).
                    "liar-key" => out.integrity_value[31] ^= 1,
                    "short-cdiv-key" => out.integrity_value.truncate(16),
                    "no-cdiv-key" => out.integrity_value.clear(),
                    _ => {}
                }
            }
            Ok(served(out))
        })
    }

    fn decrypt<'a>(
        &'a self,
        key_id: &'a str,
        input: DecryptInput<'a>,
        _rid: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<Zeroizing<Vec<u8>>>, VhsmError>> {
        Box::pin(async move {
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            if key_id == "decrypt-only" {
                // Decrypting is what this key is for.
            } else if let Some(e) = failure(key_id) {
                return Err(e);
            }
            match key_id {
                "encrypt-only" => return Err(VhsmError::Rejected(Reason::UsageNotAllowed)),
                "spec-vector" => return Ok(served(Zeroizing::new(b"Hello World!".to_vec()))),
                _ => {}
            }
            let pt = xor(input.ciphertext);
            if tag_of(&pt, input.aad, input.metadata) != input.tag || input.iv != [7; 12] {
                return Err(VhsmError::Rejected(Reason::InvalidCiphertext));
            }
            Ok(served(Zeroizing::new(pt)))
        })
    }

    fn key_metadata<'a>(
        &'a self,
        key_id: &'a str,
        _rid: &'a str,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<Served<KeyMetadata>, VhsmError>> {
        Box::pin(async move {
            if key_id == "gone-key" || key_id == "sealed-key" {
                return Err(failure(key_id).unwrap());
            }
            Ok(served(KeyMetadata {
                key_spec: "AES_256".into(),
                encrypt: key_id != "decrypt-only",
                decrypt: key_id != "encrypt-only",
                state: if key_id == "disabled-key" {
                    KeyState::Disabled
                } else {
                    KeyState::Enabled
                },
            }))
        })
    }
}

// ---------- setup ----------

struct Env {
    _dir: tempfile::TempDir,
    state: AppState,
    metrics: Arc<Metrics>,
}

fn keystores_toml() -> String {
    format!(
        r#"
[[keystore]]
name = "default"
path_prefix = "/example"
keys = ["demo-key", "disabled-key", "gone-key", "sealed-key", "down-key", "slow-key",
        "encrypt-only", "decrypt-only", "spec-vector", "liar-key", "short-cdiv-key",
        "no-cdiv-key"]
rate_limit_per_sec = 10000
burst = 10000

[[keystore.credential]]
access_key_id = "{AKID}"
secret_file = "secret-1"

[[keystore.rule]]
name = "allow-prod-account"
effect = "allow"
keys = ["*"]
operations = ["*"]
principal_arns = ["arn:aws:iam::111122223333:*"]

[[keystore]]
name = "tiny"
path_prefix = "/tiny"
keys = ["*"]
rate_limit_per_sec = 1
burst = 2

[[keystore.credential]]
access_key_id = "{TINY_AKID}"
secret_file = "secret-1"
"#
    )
}

fn env_with(km: Arc<dyn KeyManager>, max_concurrency: usize) -> Env {
    env_limits(km, max_concurrency, RequestLimits::default())
}

fn env_limits(km: Arc<dyn KeyManager>, max_concurrency: usize, limits: RequestLimits) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret-1");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ks = dir.path().join("keystores.toml");
    std::fs::write(&ks, keystores_toml()).unwrap();
    let registry = Arc::new(Registry::new(ks).unwrap());
    let health = Arc::new(HealthCache::new(vec![
        Arc::from("vhsm-1"),
        Arc::from("vhsm-2"),
    ]));
    health.store(
        Instant::now(),
        vec![
            NodeReport {
                id: Arc::from("vhsm-1"),
                model: "vhsmd 0.1.0".into(),
                status: NodeStatus::Active,
            },
            NodeReport {
                id: Arc::from("vhsm-2"),
                model: "vhsmd 0.1.0".into(),
                status: NodeStatus::Degraded,
            },
        ],
    );
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(
        Settings {
            region: "us-east-1".into(),
            fleet_size: 2,
            deadline: Duration::from_millis(150),
            max_concurrency,
            limits,
        },
        registry,
        km,
        health,
        Arc::clone(&metrics),
    );
    Env {
        _dir: dir,
        state,
        metrics,
    }
}

fn env() -> Env {
    env_counting().0
}

/// `env()` plus a handle on the fake to read its call counters.
fn env_counting() -> (Env, Arc<FakeKm>) {
    let km = Arc::new(FakeKm::default());
    (env_with(km.clone(), 64), km)
}

/// A request signed by the independent aws-sigv4 crate.
fn signed_as(akid: &str, secret: &str, path: &str, body: &[u8]) -> Request<Body> {
    signed_with_type(akid, secret, path, body, Some("application/json"))
}

/// As `signed_as`; `content_type` is sent but left out of the signature.
fn signed_with_type(
    akid: &str,
    secret: &str,
    path: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Request<Body> {
    let identity = Credentials::new(akid, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("kms-xks-proxy")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("https://{HOST}{path}");
    let headers = [("host", HOST)];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", HOST);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let mut req = builder.body(body.to_vec()).unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.map(Body::from)
}

fn signed(path: &str, body: &Value) -> Request<Body> {
    signed_as(AKID, SECRET, path, &serde_json::to_vec(body).unwrap())
}

async fn call(env: &Env, req: Request<Body>) -> (u16, Value, Response<Body>) {
    let resp = router(env.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, Response::from_parts(parts, Body::empty()))
}

async fn expect_error(env: &Env, req: Request<Body>, status: u16, name: &str) -> Value {
    let (s, v, _) = call(env, req).await;
    assert_eq!(
        (s, v["errorName"].as_str().unwrap_or("")),
        (status, name),
        "{v}"
    );
    let msg = v["errorMessage"].as_str().unwrap();
    assert!(msg.len() < 512 && msg.bytes().all(|b| (0x20..0x7f).contains(&b)));
    v
}

fn meta(arn: &str, op: &str) -> Value {
    json!({"awsPrincipalArn": arn, "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/k1",
           "kmsOperation": op, "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"})
}

fn key_path(key: &str, op: &str) -> String {
    format!("/example/kms/xks/v1/keys/{key}/{op}")
}

fn encrypt_body(pt: &[u8], aad: Option<&[u8]>) -> Value {
    let mut b = json!({"requestMetadata": meta(ALLOWED_ARN, "Encrypt"),
        "plaintext": STANDARD.encode(pt), "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"});
    if let Some(a) = aad {
        b["additionalAuthenticatedData"] = json!(STANDARD.encode(a));
    }
    b
}

fn health_body() -> Value {
    json!({"requestMetadata": {"kmsRequestId": "r-1", "kmsOperation": "KmsHealthCheck"}})
}

async fn encrypt_ok(env: &Env, key: &str, pt: &[u8], aad: &[u8]) -> Value {
    let (s, v, _) = call(
        env,
        signed(&key_path(key, "encrypt"), &encrypt_body(pt, Some(aad))),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

fn decrypt_body_from(enc: &Value, aad: &[u8]) -> Value {
    json!({"requestMetadata": meta(ALLOWED_ARN, "Decrypt"), "encryptionAlgorithm": "AES_GCM",
        "ciphertext": enc["ciphertext"], "ciphertextMetadata": enc["ciphertextMetadata"],
        "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"],
        "additionalAuthenticatedData": STANDARD.encode(aad)})
}

// ---------- happy paths ----------

#[tokio::test]
async fn ping_is_unauthenticated() {
    let env = env();
    let req = Request::get("/ping").body(Body::empty()).unwrap();
    let resp = router(env.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        &axum::body::to_bytes(resp.into_body(), 16).await.unwrap()[..],
        b"ok"
    );
}

#[tokio::test]
async fn encrypt_then_decrypt_round_trips_with_cdiv() {
    let (env, km) = env_counting();
    let pt = vec![0xA5u8; 4300];
    let aad = vec![0x11u8; 8192];
    let enc = encrypt_ok(&env, "demo-key", &pt, &aad).await;
    // One key-manager call per Encrypt: the CDIV and the self-check are vhsm's.
    let calls = |km: &FakeKm| {
        (
            km.encrypts.load(Ordering::SeqCst),
            km.decrypts.load(Ordering::SeqCst),
        )
    };
    assert_eq!(calls(&km), (1, 0));
    let dec = |k: &str| STANDARD.decode(enc[k].as_str().unwrap()).unwrap();
    // The CDIV covers exactly what we returned, recomputed independently here.
    let mut h = Sha256::new();
    for part in [
        aad.clone(),
        dec("ciphertextMetadata"),
        dec("initializationVector"),
        dec("ciphertext"),
        dec("authenticationTag"),
    ] {
        h.update(part);
    }
    assert_eq!(
        enc["ciphertextDataIntegrityValue"],
        STANDARD.encode(h.finalize())
    );
    assert_eq!(dec("ciphertext").len(), pt.len());
    let (s, v, resp) = call(
        &env,
        signed(
            &key_path("demo-key", "decrypt"),
            &decrypt_body_from(&enc, &aad),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(calls(&km), (1, 1));
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        STANDARD.decode(v["plaintext"].as_str().unwrap()).unwrap(),
        pt
    );
}

#[tokio::test]
async fn spec_example_reproduces_the_spec_cdiv() {
    let env = env();
    let body = json!({"requestMetadata": meta(ALLOWED_ARN, "Encrypt"),
        "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
        "plaintext": "SGVsbG8gV29ybGQh", "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256"});
    let (s, v, _) = call(&env, signed(&key_path("spec-vector", "encrypt"), &body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==", "ciphertext": "ghxkK1txeDNn3q8Y",
            "ciphertextDataIntegrityValue": "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=",
            "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==", "initializationVector": "HMrlRw85cAJUd5Ax"})
    );
}

#[tokio::test]
async fn encrypt_without_cdiv_omits_it_and_unknown_fields_and_operations_pass() {
    let env = env();
    let mut body = encrypt_body(b"hi", None);
    body.as_object_mut()
        .unwrap()
        .remove("ciphertextDataIntegrityValueAlgorithm");
    body["someFutureField"] = json!({"x": 1});
    body["requestMetadata"]["kmsOperation"] = json!("SomeBrandNewKmsApi");
    body["requestMetadata"]["kmsRecipientAttestationImageSha384"] = json!("abc");
    let (s, v, _) = call(&env, signed(&key_path("demo-key", "encrypt"), &body)).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("ciphertextDataIntegrityValue").is_none());
}

#[tokio::test]
async fn metadata_reports_spec_usage_and_status() {
    let env = env();
    let body = json!({"requestMetadata": {"awsPrincipalArn": ALLOWED_ARN, "kmsOperation": "CreateKey", "kmsRequestId": "r"}});
    let (s, v, _) = call(&env, signed(&key_path("demo-key", "metadata"), &body)).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "ENABLED"})
    );
    let (_, v, _) = call(&env, signed(&key_path("disabled-key", "metadata"), &body)).await;
    assert_eq!(v["keyStatus"], "DISABLED");
    let (_, v, _) = call(&env, signed(&key_path("encrypt-only", "metadata"), &body)).await;
    assert_eq!(v["keyUsage"], json!(["ENCRYPT"]));
}

#[tokio::test]
async fn health_answers_from_the_cache() {
    let env = env();
    let (s, v, _) = call(&env, signed("/example/kms/xks/v1/health", &health_body())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["xksProxyFleetSize"], 2);
    assert_eq!(v["xksProxyVendor"], "vhsm-xks");
    assert_eq!(
        v["ekmFleetDetails"][0],
        json!({"id": "vhsm-1", "model": "vhsmd 0.1.0", "healthStatus": "ACTIVE"})
    );
    assert_eq!(v["ekmFleetDetails"][1]["healthStatus"], "DEGRADED");
}

// ---------- every error name ----------

#[tokio::test]
async fn validation_exceptions() {
    let env = env();
    let p = key_path("demo-key", "encrypt");
    let mut no_meta = encrypt_body(b"x", None);
    no_meta.as_object_mut().unwrap().remove("requestMetadata");
    expect_error(&env, signed(&p, &no_meta), 400, "ValidationException").await;
    let mut bad_b64 = encrypt_body(b"x", None);
    bad_b64["plaintext"] = json!("SGVsbG8-V29ybGQ_");
    expect_error(&env, signed(&p, &bad_b64), 400, "ValidationException").await;
    let mut no_pt = encrypt_body(b"x", None);
    no_pt.as_object_mut().unwrap().remove("plaintext");
    expect_error(&env, signed(&p, &no_pt), 400, "ValidationException").await;
    let mut bad_alg = encrypt_body(b"x", None);
    bad_alg["encryptionAlgorithm"] = json!("AES_CBC");
    expect_error(&env, signed(&p, &bad_alg), 400, "ValidationException").await;
    // ciphertextMetadata above 20 bytes.
    let enc = encrypt_ok(&env, "demo-key", b"abc", b"").await;
    let mut big_md = decrypt_body_from(&enc, b"");
    big_md["ciphertextMetadata"] = json!(STANDARD.encode([0u8; 21]));
    expect_error(
        &env,
        signed(&key_path("demo-key", "decrypt"), &big_md),
        400,
        "ValidationException",
    )
    .await;
    // Health with {} or an empty requestMetadata (as the AWS test client expects).
    let h = "/example/kms/xks/v1/health";
    expect_error(&env, signed(h, &json!({})), 400, "ValidationException").await;
    expect_error(
        &env,
        signed(h, &json!({"requestMetadata": {}})),
        400,
        "ValidationException",
    )
    .await;
    // Not JSON at all.
    expect_error(
        &env,
        signed_as(AKID, SECRET, &p, b"plaintext=abc"),
        400,
        "ValidationException",
    )
    .await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_a_validation_exception() {
    let env = env();
    let body = serde_json::to_vec(&encrypt_body(b"x", None)).unwrap();
    let p = key_path("demo-key", "encrypt");
    for ct in [Some("text/plain"), None] {
        let req = signed_with_type(AKID, SECRET, &p, &body, ct);
        expect_error(&env, req, 400, "ValidationException").await;
    }
    let req = signed_with_type(
        AKID,
        SECRET,
        &p,
        &body,
        Some("application/json; charset=utf-8"),
    );
    assert_eq!(call(&env, req).await.0, 200);
}

#[tokio::test]
async fn invalid_state_for_a_disabled_key() {
    let env = env();
    let req = signed(
        &key_path("disabled-key", "encrypt"),
        &encrypt_body(b"x", None),
    );
    expect_error(&env, req, 400, "InvalidStateException").await;
}

#[tokio::test]
async fn invalid_ciphertext_for_wrong_aad_tag_or_16_byte_iv() {
    let env = env();
    let enc = encrypt_ok(&env, "demo-key", b"secret data", b"aad-1").await;
    let p = key_path("demo-key", "decrypt");
    expect_error(
        &env,
        signed(&p, &decrypt_body_from(&enc, b"aad-2")),
        400,
        "InvalidCiphertextException",
    )
    .await;
    let mut bad_tag = decrypt_body_from(&enc, b"aad-1");
    bad_tag["authenticationTag"] = json!(STANDARD.encode([0u8; 16]));
    expect_error(
        &env,
        signed(&p, &bad_tag),
        400,
        "InvalidCiphertextException",
    )
    .await;
    let mut iv16 = decrypt_body_from(&enc, b"aad-1");
    iv16["initializationVector"] = json!(STANDARD.encode([7u8; 16]));
    expect_error(&env, signed(&p, &iv16), 400, "InvalidCiphertextException").await;
}

#[tokio::test]
async fn invalid_key_usage() {
    let env = env();
    // A key without ENCRYPT refuses Encrypt, with or without CDIV.
    for body in [encrypt_body(b"x", None), {
        let mut b = encrypt_body(b"x", None);
        b.as_object_mut()
            .unwrap()
            .remove("ciphertextDataIntegrityValueAlgorithm");
        b
    }] {
        let req = signed(&key_path("decrypt-only", "encrypt"), &body);
        expect_error(&env, req, 400, "InvalidKeyUsageException").await;
    }
    // An encrypt-only key refuses Encrypt with CDIV (the integrity value promises a decrypt
    // that this key can never do; the AWS conformance client expects InvalidKeyUsageException),
    // encrypts without CDIV, and does not decrypt.
    let req = signed(
        &key_path("encrypt-only", "encrypt"),
        &encrypt_body(b"x", None),
    );
    expect_error(&env, req, 400, "InvalidKeyUsageException").await;
    let mut body = encrypt_body(b"x", None);
    body.as_object_mut()
        .unwrap()
        .remove("ciphertextDataIntegrityValueAlgorithm");
    let (status, enc, _) = call(&env, signed(&key_path("encrypt-only", "encrypt"), &body)).await;
    assert_eq!(status, 200, "{enc}");
    assert!(enc.get("ciphertextDataIntegrityValue").is_none());
    let req = signed(
        &key_path("encrypt-only", "decrypt"),
        &decrypt_body_from(&enc, b""),
    );
    expect_error(&env, req, 400, "InvalidKeyUsageException").await;
}

#[tokio::test]
async fn authentication_failures() {
    let env = env();
    let p = key_path("demo-key", "encrypt");
    let body = serde_json::to_vec(&encrypt_body(b"x", None)).unwrap();
    let unsigned = Request::post(p.as_str())
        .header("content-type", "application/json")
        .header("host", HOST)
        .body(Body::from(body.clone()))
        .unwrap();
    expect_error(&env, unsigned, 401, "AuthenticationFailedException").await;
    let wrong_secret = signed_as(
        AKID,
        "AAAAE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE",
        &p,
        &body,
    );
    expect_error(&env, wrong_secret, 401, "AuthenticationFailedException").await;
    let unknown_akid = signed_as("ZZZZI2SFODNN7EXAMPLEAB", SECRET, &p, &body);
    expect_error(&env, unknown_akid, 401, "AuthenticationFailedException").await;
    // Another key store's credential does not open this one.
    let other_store = signed_as(TINY_AKID, SECRET, &p, &body);
    expect_error(&env, other_store, 401, "AuthenticationFailedException").await;
    // Tampered body.
    let req = signed_as(AKID, SECRET, &p, &body);
    let (parts, _) = req.into_parts();
    let tampered = serde_json::to_vec(&encrypt_body(b"y", None)).unwrap();
    let req = Request::from_parts(parts, Body::from(tampered));
    expect_error(&env, req, 401, "AuthenticationFailedException").await;
}

#[tokio::test]
async fn access_denied_by_policy_but_never_for_health() {
    let env = env();
    let mut body = encrypt_body(b"x", None);
    body["requestMetadata"] = meta(DENIED_ARN, "Encrypt");
    let v = expect_error(
        &env,
        signed(&key_path("demo-key", "encrypt"), &body),
        403,
        "AccessDeniedException",
    )
    .await;
    assert!(!v["errorMessage"]
        .as_str()
        .unwrap()
        .contains("allow-prod-account"));
    let (s, _, _) = call(&env, signed("/example/kms/xks/v1/health", &health_body())).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn key_not_found_when_not_allowed_or_unknown() {
    let env = env();
    let req = signed(
        &key_path("not-in-store", "encrypt"),
        &encrypt_body(b"x", None),
    );
    expect_error(&env, req, 404, "KeyNotFoundException").await;
    let req = signed(&key_path("gone-key", "encrypt"), &encrypt_body(b"x", None));
    expect_error(&env, req, 404, "KeyNotFoundException").await;
}

#[tokio::test]
async fn invalid_uri_paths() {
    let env = env();
    let body = encrypt_body(b"x", None);
    let bad_prefix = signed("/nope/kms/xks/v1/keys/demo-key/encrypt", &body);
    expect_error(&env, bad_prefix, 404, "InvalidUriPathException").await;
    let bad_path = signed("/example/kms/xks/v1/keys/demo-key/sign", &body);
    expect_error(&env, bad_path, 404, "InvalidUriPathException").await;
    let long = format!("/example/kms/xks/v1/keys/{}/encrypt", "k".repeat(240));
    expect_error(&env, signed(&long, &body), 404, "InvalidUriPathException").await;
}

#[tokio::test]
async fn get_on_an_api_path_is_405_with_allow() {
    let env = env();
    for path in [
        "/example/kms/xks/v1/health".to_string(),
        key_path("demo-key", "encrypt"),
    ] {
        let req = Request::get(path.as_str())
            .header("host", HOST)
            .body(Body::empty())
            .unwrap();
        let (s, _, resp) = call(&env, req).await;
        assert_eq!(s, 405);
        assert_eq!(resp.headers()["allow"], "POST");
    }
}

#[tokio::test]
async fn throttled_by_key_store_rate() {
    let env = env();
    let path = "/tiny/kms/xks/v1/health";
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = signed_as(
            TINY_AKID,
            SECRET,
            path,
            &serde_json::to_vec(&health_body()).unwrap(),
        );
        let (s, v, _) = call(&env, req).await;
        statuses.push(s);
        if s == 429 {
            assert_eq!(v["errorName"], "ThrottlingException");
        }
    }
    assert_eq!(&statuses[..2], [200, 200], "burst of 2 passes");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // Each refusal is counted under its limit.
    let refused = statuses.iter().filter(|s| **s == 429).count();
    let needle = format!("xks_limit_hits_total{{limit=\"key_store_rate\"}} {refused}\n");
    let text = env.metrics.encode();
    assert!(text.contains(&needle), "{needle} not in\n{text}");
}

#[tokio::test]
async fn throttled_by_concurrency_without_queueing() {
    let env = env_with(Arc::new(FakeKm::default()), 1);
    let app = router(env.state.clone());
    let slow = signed(&key_path("slow-key", "encrypt"), &encrypt_body(b"x", None));
    let first = tokio::spawn(app.oneshot(slow));
    tokio::time::sleep(Duration::from_millis(30)).await;
    let req = signed("/example/kms/xks/v1/health", &health_body());
    expect_error(&env, req, 429, "ThrottlingException").await;
    assert_eq!(first.await.unwrap().unwrap().status(), 503);
}

/// A request body of `chunks` 1 KiB chunks (`None`: endless) that records how far it was read.
struct ProbeBody {
    chunks: Option<usize>,
    polled: Arc<AtomicUsize>,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl axum::body::HttpBody for ProbeBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.chunks {
            Some(0) => {
                self.ended.store(true, Ordering::SeqCst);
                return std::task::Poll::Ready(None);
            }
            Some(n) => self.chunks = Some(n - 1),
            None => {}
        }
        self.polled.fetch_add(1, Ordering::SeqCst);
        let chunk = axum::body::Bytes::from_static(&[b' '; 1024]);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }
}

/// A body whose sender never sends anything (a slow-loris client).
struct StalledBody;

impl axum::body::HttpBody for StalledBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// An unsigned POST to the health path with `body`, as if it came on connection `conn`.
fn unsigned_on(conn: Option<&ConnInfo>, body: Body) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri("/example/kms/xks/v1/health")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    if let Some(c) = conn {
        req.extensions_mut().insert(c.clone());
    }
    req
}

fn conn_from(ip: [u8; 4]) -> ConnInfo {
    ConnInfo(ConnState::new(std::net::IpAddr::from(ip), Instant::now()))
}

/// Regression (issue 10): the in-flight slot used to be taken before SigV4 and held while the
/// body was awaited, so stalled unsigned requests made every signed request fail with 429.
/// Now they hold no slot: with max_concurrency = 1, a signed request passes while stalled ones
/// wait, and the stalled ones are answered when the body timeout passes. (Virtual time.)
#[tokio::test(start_paused = true)]
async fn stalled_unauthenticated_requests_take_no_in_flight_slot() {
    let env = env_with(Arc::new(FakeKm::default()), 1);
    let started = tokio::time::Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let app = router(env.state.clone());
        stalled.push(tokio::spawn(
            app.oneshot(unsigned_on(None, Body::new(StalledBody))),
        ));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let req = signed("/example/kms/xks/v1/health", &health_body());
    let (s, v, _) = call(&env, req).await;
    assert_eq!(s, 200, "{v}");
    for t in stalled {
        let resp = t.await.unwrap().unwrap();
        assert_eq!(resp.status(), 400);
    }
    let body_timeout = RequestLimits::default().body_timeout;
    assert!(started.elapsed() >= body_timeout, "{:?}", started.elapsed());
    assert!(
        started.elapsed() <= body_timeout + Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unauthenticated_budget_is_per_connection_and_per_peer() {
    let limits = RequestLimits {
        unauthenticated_per_connection: 1,
        unauthenticated_per_peer: 2,
        ..RequestLimits::default()
    };
    let env = env_limits(Arc::new(FakeKm::default()), 64, limits);
    let (c1, c2, c3) = (
        conn_from([10, 0, 0, 1]),
        conn_from([10, 0, 0, 1]),
        conn_from([10, 0, 0, 1]),
    );
    let hold = |c: &ConnInfo| {
        let app = router(env.state.clone());
        tokio::spawn(app.oneshot(unsigned_on(Some(c), Body::new(StalledBody))))
    };
    let held = [hold(&c1), hold(&c2)];
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Same connection: refused at once, and its body is still read to its end.
    let (req, polled, ended) = probe_request("POST", "/example/kms/xks/v1/health", Some(2));
    let mut req = req;
    req.extensions_mut().insert(c1.clone());
    expect_error(&env, req, 429, "ThrottlingException").await;
    assert_eq!(polled.load(Ordering::SeqCst), 2);
    assert!(ended.load(Ordering::SeqCst));
    // Another connection of the same peer: the peer budget (2) is used up.
    let req = unsigned_on(Some(&c3), Body::from("{}"));
    expect_error(&env, req, 429, "ThrottlingException").await;
    // Another peer is not affected, and its signed request authenticates its connection.
    let other = conn_from([10, 0, 0, 2]);
    let mut req = signed("/example/kms/xks/v1/health", &health_body());
    req.extensions_mut().insert(other.clone());
    assert!(!other.0.is_authenticated());
    let (s, v, _) = call(&env, req).await;
    assert_eq!(s, 200, "{v}");
    assert!(other.0.is_authenticated());
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 400);
    }
    // The slots came back.
    let req = unsigned_on(Some(&c1), Body::from("{}"));
    expect_error(&env, req, 401, "AuthenticationFailedException").await;
    assert!(!c1.0.is_authenticated());
}

/// A POST (or `method`) to `path` whose body is a `ProbeBody`; returns the request, the
/// number of chunks read and whether the body was read to its end.
fn probe_request(
    method: &str,
    path: &str,
    chunks: Option<usize>,
) -> (
    Request<Body>,
    Arc<AtomicUsize>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let polled = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = Body::new(ProbeBody {
        chunks,
        polled: polled.clone(),
        ended: ended.clone(),
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    (req, polled, ended)
}

/// Regression (AWS conformance client, "GetHealthStatus with an invalid URI prefix"): an error
/// answered before the body is needed must still read the body to its end, or hyper resets the
/// HTTP/2 stream after the answer and curl 7.88 drops the answer ("Stream error in the HTTP/2
/// framing layer") instead of showing InvalidUriPathException.
#[tokio::test]
async fn early_errors_read_the_request_body_to_its_end() {
    let env = env();
    let long = format!("/example/kms/xks/v1/keys/{}/encrypt", "k".repeat(240));
    let bad_uri = "InvalidUriPathException";
    let cases = [
        ("POST", "/example/invalid/kms/xks/v1/health", 404, bad_uri),
        (
            "POST",
            "/nope/kms/xks/v1/keys/demo-key/metadata",
            404,
            bad_uri,
        ),
        (
            "POST",
            "/example/kms/xks/v1/keys/demo-key/sign",
            404,
            bad_uri,
        ),
        ("POST", long.as_str(), 404, bad_uri),
        (
            "PUT",
            "/example/kms/xks/v1/health",
            405,
            "MethodNotAllowedException",
        ),
    ];
    for (method, path, status, name) in cases {
        let (req, polled, ended) = probe_request(method, path, Some(3));
        expect_error(&env, req, status, name).await;
        assert_eq!(polled.load(Ordering::SeqCst), 3, "{method} {path}");
        assert!(
            ended.load(Ordering::SeqCst),
            "{method} {path}: body not read to its end"
        );
    }
}

#[tokio::test]
async fn early_error_drain_is_bounded_by_the_body_limit() {
    let env = env();
    let (req, polled, ended) = probe_request("POST", "/nope/kms/xks/v1/health", None);
    expect_error(&env, req, 404, "InvalidUriPathException").await;
    // 64 KiB limit: 64 chunks fit, the 65th crosses it and the rest is never read.
    assert_eq!(polled.load(Ordering::SeqCst), 65);
    assert!(!ended.load(Ordering::SeqCst));
}

/// Issue 10: an oversized body (no Content-Length, as HTTP/2 clients often send) is read to
/// its end up to `max_drain_bytes` and then answered, so the client gets the XKS error instead
/// of a stream reset; an endless one is read no further than that.
#[tokio::test]
async fn oversized_bodies_are_drained_then_answered() {
    let env = env();
    let path = key_path("demo-key", "encrypt");
    let (req, polled, ended) = probe_request("POST", &path, Some(530));
    expect_error(&env, req, 501, "UnsupportedOperationException").await;
    assert_eq!(polled.load(Ordering::SeqCst), 530);
    assert!(ended.load(Ordering::SeqCst));
    let (req, polled, ended) = probe_request("POST", &path, None);
    expect_error(&env, req, 501, "UnsupportedOperationException").await;
    // 1 MiB: 1024 chunks fit, the 1025th crosses it and the rest is never read.
    assert_eq!(polled.load(Ordering::SeqCst), 1025);
    assert!(!ended.load(Ordering::SeqCst));
    // A declared length above the drain limit is answered without reading.
    let (mut req, polled, _) = probe_request("POST", &path, Some(3));
    req.headers_mut()
        .insert("content-length", "2000000".parse().unwrap());
    expect_error(&env, req, 501, "UnsupportedOperationException").await;
    assert_eq!(polled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unsupported_above_our_sizes() {
    let env = env();
    let req = signed(
        &key_path("demo-key", "encrypt"),
        &encrypt_body(&vec![0; 8193], None),
    );
    expect_error(&env, req, 501, "UnsupportedOperationException").await;
    let huge = vec![b' '; 70 * 1024];
    let req = signed_as(AKID, SECRET, &key_path("demo-key", "encrypt"), &huge);
    expect_error(&env, req, 501, "UnsupportedOperationException").await;
}

#[tokio::test]
async fn dependency_timeout_when_vhsm_is_slow() {
    let env = env();
    let started = Instant::now();
    let req = signed(&key_path("slow-key", "encrypt"), &encrypt_body(b"x", None));
    expect_error(&env, req, 503, "DependencyTimeoutException").await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn internal_when_sealed_unreachable_or_self_check_fails() {
    let env = env();
    for key in ["sealed-key", "down-key", "liar-key"] {
        let req = signed(&key_path(key, "encrypt"), &encrypt_body(b"x", None));
        expect_error(&env, req, 500, "InternalException").await;
    }
}

#[tokio::test]
async fn wrong_short_or_missing_integrity_value_is_internal() {
    let env = env();
    for key in ["liar-key", "short-cdiv-key", "no-cdiv-key"] {
        let req = signed(
            &key_path(key, "encrypt"),
            &encrypt_body(b"secret plaintext", Some(b"ctx")),
        );
        let v = expect_error(&env, req, 500, "InternalException").await;
        // Nothing of the encrypt output leaks into the error.
        assert_eq!(v["errorMessage"], "integrity value mismatch", "{key}");
        assert!(v.get("ciphertext").is_none() && v.get("ciphertextDataIntegrityValue").is_none());
    }
    // Without a CDIV request the value is neither asked for nor consulted.
    let mut body = encrypt_body(b"x", None);
    body.as_object_mut()
        .unwrap()
        .remove("ciphertextDataIntegrityValueAlgorithm");
    let (s, v, _) = call(&env, signed(&key_path("liar-key", "encrypt"), &body)).await;
    assert_eq!(s, 200, "{v}");
}

// ---------- failover through the real HA group ----------

struct Node {
    up: bool,
}

impl NodeClient for Node {
    fn encrypt(
        &self,
        req: vhsm_proto::v1::EncryptRequest,
        _t: Duration,
    ) -> BoxFuture<'_, Result<vhsm_proto::v1::EncryptResponse, tonic::Status>> {
        let up = self.up;
        Box::pin(async move {
            if !up {
                return Err(tonic::Status::unavailable("connection refused"));
            }
            let md = vec![1, 0, 0, 0, 1];
            let (ct, iv) = (xor(&req.plaintext), vec![7; 12]);
            let tag = tag_of(&req.plaintext, &req.aad, &md);
            let integrity_value = if req.integrity_check {
                cdiv_of(&req.aad, &md, &iv, &ct, &tag)
            } else {
                Vec::new()
            };
            Ok(vhsm_proto::v1::EncryptResponse {
                ciphertext: ct,
                iv,
                tag,
                metadata: md,
                integrity_value,
            })
        })
    }
    fn decrypt(
        &self,
        req: vhsm_proto::v1::DecryptRequest,
        _t: Duration,
    ) -> BoxFuture<'_, Result<vhsm_proto::v1::DecryptResponse, tonic::Status>> {
        let up = self.up;
        Box::pin(async move {
            if !up {
                return Err(tonic::Status::unavailable("connection refused"));
            }
            Ok(vhsm_proto::v1::DecryptResponse {
                plaintext: xor(&req.ciphertext),
            })
        })
    }
    fn key_metadata(
        &self,
        _r: vhsm_proto::v1::GetKeyMetadataRequest,
        _t: Duration,
    ) -> BoxFuture<'_, Result<vhsm_proto::v1::GetKeyMetadataResponse, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unavailable("x")) })
    }
    fn health(
        &self,
        _t: Duration,
    ) -> BoxFuture<'_, Result<vhsm_proto::v1::HealthResponse, tonic::Status>> {
        Box::pin(async { Err(tonic::Status::unavailable("x")) })
    }
}

#[tokio::test]
async fn failover_node_one_down_node_two_serves() {
    let group = HaGroup::new(
        vec![
            ("vhsm-1".into(), Node { up: false }),
            ("vhsm-2".into(), Node { up: true }),
        ],
        Duration::from_secs(2),
    );
    let env = env_with(Arc::new(group), 64);
    for _ in 0..3 {
        encrypt_ok(&env, "demo-key", b"through the HA group", b"ctx").await;
    }
}
