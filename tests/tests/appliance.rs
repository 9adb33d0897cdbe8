//! The whole appliance across restarts: acknowledged changes survive SIGTERM and `kill -9`, a
//! restarted node comes back sealed, and the same ciphertexts decrypt after unseal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use vhsm_e2e::procs::{KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAAPPLIANCETESTAAA";
const SECRET: &str = "YXBwbGlhbmNlLXRlc3Qtc2VjcmV0LWZvci1lMmUtMTIzNA==";

fn api(path: &str) -> String {
    format!("/kms/xks/v1{path}")
}

fn md(op: &str, id: &str) -> Value {
    json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:role/app",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k",
        "kmsOperation": op,
        "kmsRequestId": id
    })
}

async fn health_state(client: &XksClient) -> String {
    let h = client
        .post(
            &api("/health"),
            &json!({"requestMetadata": {"kmsRequestId": "h", "kmsOperation": "KmsHealthCheck"}}),
        )
        .await
        .unwrap();
    h.body["ekmFleetDetails"][0]["healthStatus"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_health(client: &XksClient, want: &str) {
    for _ in 0..60 {
        if health_state(client).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("health never became {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertexts_survive_seal_restart_and_kill_9() {
    let mut app = tokio::task::spawn_blocking(|| Appliance::start(&ApplianceOptions::default()))
        .await
        .unwrap()
        .unwrap();
    let xks_dir = app.dir.path().join("xks");
    std::fs::create_dir_all(&xks_dir).unwrap();
    let store = KeyStoreSpec {
        name: "root".into(),
        path_prefix: String::new(),
        keys: vec!["*".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 1000,
        burst: 1000,
        extra_toml: String::new(),
    };
    let front = XksFrontProc::start(&xks_dir, &app.pki, &[&app.nodes[0]], &[store], 1).unwrap();
    let client = XksClient::new(front.addr, &app.pki, None, AKID, SECRET).unwrap();
    wait_health(&client, "ACTIVE").await;

    let mut sealed_boxes = Vec::new();
    for i in 0..20u32 {
        let pt = format!("data key {i}");
        let body = json!({
            "requestMetadata": md("GenerateDataKey", &format!("e-{i}")),
            "plaintext": B64.encode(pt.as_bytes()),
            "encryptionAlgorithm": "AES_GCM"
        });
        let r = client
            .post(&api("/keys/demo-key/encrypt"), &body)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        sealed_boxes.push((pt, r.body));
    }

    let admin = app.admin(0);
    // An acknowledged key creation survives kill -9.
    admin.ok(&["key", "create", "after-crash"], "").unwrap();
    app.nodes[0].kill_hard();
    wait_health(&client, "UNAVAILABLE").await;
    app.nodes[0].restart().unwrap();
    let status = admin.json(&["status"], "").unwrap();
    assert_eq!(
        status["seal_state"], "sealed",
        "a restarted node comes back sealed"
    );
    wait_health(&client, "UNAVAILABLE").await;
    admin
        .ok(&["unseal"], "correct horse battery staple\n")
        .unwrap();
    let k = admin.json(&["key", "show", "after-crash"], "").unwrap();
    assert_eq!(k["key_id"], "after-crash");

    // Graceful restart too.
    app.nodes[0].stop();
    app.nodes[0].restart().unwrap();
    admin
        .ok(&["unseal"], "correct horse battery staple\n")
        .unwrap();
    wait_health(&client, "ACTIVE").await;

    for (i, (pt, enc)) in sealed_boxes.iter().enumerate() {
        let body = json!({
            "requestMetadata": md("Decrypt", &format!("d-{i}")),
            "encryptionAlgorithm": "AES_GCM",
            "ciphertext": enc["ciphertext"],
            "ciphertextMetadata": enc["ciphertextMetadata"],
            "initializationVector": enc["initializationVector"],
            "authenticationTag": enc["authenticationTag"]
        });
        let r = client
            .post(&api("/keys/demo-key/decrypt"), &body)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        let got = B64.decode(r.body["plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(got, pt.as_bytes());
    }
}
