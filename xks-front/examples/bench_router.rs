//! Measures the router's CPU per Encrypt request (SigV4 verify + JSON + Base64 + CDIV check)
//! with an in-process fake key manager. Run: `cargo run --release -p xks-front --example bench_router`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use axum::body::Body;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use nix::sys::resource::{getrusage, UsageWho};
use tower::ServiceExt;
use zeroize::Zeroizing;

use xks_front::cdiv;
use xks_front::health::HealthCache;
use xks_front::key_manager::{
    BoxFuture, DecryptInput, EncryptOutput, KeyManager, KeyMetadata, Served, VhsmError,
};
use xks_front::keystores::Registry;
use xks_front::metrics::Metrics;
use xks_front::router::{router, AppState, Settings};

const AKID: &str = "AKIAI2SFODNN7EXAMPLEAB";
const SECRET: &str = "FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE";
const HOST: &str = "xks.example.com";

/// Answers instantly: ciphertext = plaintext XOR 0x5a.
struct Instant0;

impl KeyManager for Instant0 {
    fn encrypt<'a>(
        &'a self,
        _k: &'a str,
        pt: &'a [u8],
        aad: &'a [u8],
        integrity_check: bool,
        _r: &'a str,
        _d: Instant,
    ) -> BoxFuture<'a, Result<Served<EncryptOutput>, VhsmError>> {
        Box::pin(async move {
            let mut value = EncryptOutput {
                ciphertext: pt.iter().map(|b| b ^ 0x5a).collect(),
                iv: vec![7; 12],
                tag: vec![9; 16],
                metadata: vec![1, 0, 0, 0, 1],
                integrity_value: Vec::new(),
            };
            if integrity_check {
                // vhsmd's share of the work (it computes the CDIV at the source); counted here
                // too, so the figure slightly overstates the router's own cost.
                let v = &value;
                value.integrity_value =
                    cdiv::digest(aad, &v.metadata, &v.iv, &v.ciphertext, &v.tag).to_vec();
            }
            Ok(Served {
                value,
                node: Arc::from("fake"),
            })
        })
    }
    fn decrypt<'a>(
        &'a self,
        _k: &'a str,
        input: DecryptInput<'a>,
        _r: &'a str,
        _d: Instant,
    ) -> BoxFuture<'a, Result<Served<Zeroizing<Vec<u8>>>, VhsmError>> {
        Box::pin(async move {
            Ok(Served {
                value: Zeroizing::new(input.ciphertext.iter().map(|b| b ^ 0x5a).collect()),
                node: Arc::from("fake"),
            })
        })
    }
    fn key_metadata<'a>(
        &'a self,
        _k: &'a str,
        _r: &'a str,
        _d: Instant,
    ) -> BoxFuture<'a, Result<Served<KeyMetadata>, VhsmError>> {
        Box::pin(async { Err(VhsmError::Unavailable) })
    }
}

fn signed(path: &str, body: &[u8]) -> http::Request<Body> {
    let identity = Credentials::new(AKID, SECRET, None, None, "bench").into();
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
    let headers = [("content-type", "application/json"), ("host", HOST)];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .header("host", HOST)
        .body(body.to_vec())
        .unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.map(Body::from)
}

fn cpu_time() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(u.user_time()) + t(u.system_time())
}

fn main() {
    // Include the cost of formatting the access log line (written to a sink).
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ks = dir.path().join("keystores.toml");
    std::fs::write(
        &ks,
        format!(
            "[[keystore]]\nname = \"default\"\npath_prefix = \"/example\"\nkeys = [\"*\"]\n\
             rate_limit_per_sec = 1000000\nburst = 1000000\n[[keystore.credential]]\n\
             access_key_id = \"{AKID}\"\nsecret_file = \"secret\"\n"
        ),
    )
    .unwrap();
    let state = AppState::new(
        Settings {
            region: "us-east-1".into(),
            fleet_size: 1,
            deadline: Duration::from_millis(150),
            max_concurrency: 1024,
            limits: xks_front::limits::RequestLimits::default(),
        },
        Arc::new(Registry::new(ks).unwrap()),
        Arc::new(Instant0),
        Arc::new(HealthCache::new(vec![Arc::from("fake")])),
        Arc::new(Metrics::new()),
    );
    let app = router(state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = "/example/kms/xks/v1/keys/demo-key/encrypt";
    for (pt_len, n) in [(256usize, 20_000usize), (4300, 10_000)] {
        let body = serde_json::to_vec(&serde_json::json!({
            "requestMetadata": {"awsPrincipalArn": "arn:aws:iam::111122223333:user/Alice",
                "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "kmsOperation": "GenerateDataKey", "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"},
            "plaintext": STANDARD.encode(vec![0xA5u8; pt_len]),
            "additionalAuthenticatedData": STANDARD.encode([0x11u8; 64]),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
        }))
        .unwrap();
        // Signing is the client's cost: prepare every request before timing.
        let reqs: Vec<_> = (0..n).map(|_| signed(path, &body)).collect();
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        rt.block_on(async {
            for req in reqs {
                let resp = app.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let _ = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
            }
        });
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        println!(
            "encrypt {pt_len:>5} B plaintext, 64 B AAD, CDIV check: {:.1} us CPU/request, {:.1} us wall/request ({n} requests)",
            cpu.as_secs_f64() * 1e6 / n as f64,
            wall.as_secs_f64() * 1e6 / n as f64
        );
    }
}
