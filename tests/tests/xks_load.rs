//! `vhsm-admin xks load` end to end: the real binary drives a real xks-front (TLS) in front of a
//! real vhsmd (mTLS) for about two seconds per run, closed and open loop, and its final JSON line
//! must show every request answered 200 and verified; a wrong secret must show every request as
//! an authentication failure and exit non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vhsm_e2e::procs::{write_private, KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{bin_path, Appliance, ApplianceOptions};

const URI_PATH: &str = "/example/kms/xks/v1";

struct Setup {
    app: Appliance,
    front: XksFrontProc,
    /// The proxy configuration JSON of `xks credentials new`.
    proxy_config: PathBuf,
    access_key_id: String,
}

fn setup() -> Setup {
    let app = Appliance::start(&ApplianceOptions::default()).unwrap();
    let dir = app.dir.path().join("xks");
    std::fs::create_dir_all(&dir).unwrap();
    // A credential made the way an operator makes one.
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["xks", "credentials", "new", "--uri-path", URI_PATH])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cred = &cfg["XksProxyAuthenticationCredential"];
    let akid = cred["AccessKeyId"].as_str().unwrap().to_string();
    let secret = cred["RawSecretAccessKey"].as_str().unwrap().to_string();
    let proxy_config = dir.join("kms-proxy-configuration.json");
    write_private(&proxy_config, &out.stdout).unwrap();
    let store = KeyStoreSpec {
        name: "example".into(),
        path_prefix: "/example".into(),
        keys: vec!["demo-key".into()],
        credentials: vec![(akid.clone(), secret)],
        rate_limit_per_sec: 100_000,
        burst: 100_000,
        extra_toml: String::new(),
    };
    let front = XksFrontProc::start(&dir, &app.pki, &[&app.nodes[0]], &[store], 10).unwrap();
    Setup {
        app,
        front,
        proxy_config,
        access_key_id: akid,
    }
}

/// Runs `vhsm-admin xks load` against the setup's xks-front: (exit code, final JSON, stderr).
fn load(s: &Setup, credential: &[&str], args: &[&str]) -> (i32, Value, String) {
    let port = s.front.addr.port();
    let mut cmd = Command::new(bin_path("vhsm-admin"));
    for v in [
        "XKS_URL",
        "XKS_URI_PREFIX",
        "XKS_ACCESS_KEY_ID",
        "XKS_SECRET_ACCESS_KEY_FILE",
        "XKS_CA_FILE",
        "XKS_KEY_ID",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd
        .args(["xks", "load", "--url"])
        .arg(format!("https://xks.localhost:{port}"))
        .arg("--connect-to")
        .arg(s.front.addr.to_string())
        .arg("--tls-ca")
        .arg(s.app.pki.join("ca.crt"))
        .args(credential)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no JSON line; stderr: {stderr}"));
    let json: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}; stderr: {stderr}"));
    eprintln!("{stderr}{last}");
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn proxy_config_flag(s: &Setup) -> Vec<String> {
    vec![
        "--proxy-config".into(),
        s.proxy_config.to_string_lossy().into_owned(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every request counted was answered 200 and verified.
fn assert_all_ok(json: &Value, stderr: &str) {
    let requests = json["requests"].as_u64().unwrap();
    assert!(requests > 0, "{json}\n{stderr}");
    assert_eq!(json["ok"], requests, "{json}\n{stderr}");
    assert_eq!(json["failed"], 0, "{json}\n{stderr}");
    assert_eq!(json["by_status"]["200"], requests, "{json}");
    assert!(
        json["by_error_name"].as_object().unwrap().is_empty(),
        "{json}"
    );
    assert!(
        json["verify_failed"].as_object().unwrap().is_empty(),
        "{json}"
    );
    assert!(
        json["transport_errors"].as_object().unwrap().is_empty(),
        "{json}"
    );
    let l = &json["latency_us"];
    let (p50, p99, max) = (
        l["p50"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{json}");
}

#[test]
fn closed_and_open_loop_runs_verify_every_answer() {
    let s = setup();
    let cfg = proxy_config_flag(&s);

    // Closed loop, KMS's Encrypt of a data key: 4 connections for 2 s.
    let (code, json, stderr) = load(
        &s,
        &strs(&cfg),
        &[
            "--key-id",
            "demo-key",
            "--op",
            "encrypt",
            "-c",
            "4",
            "--duration",
            "2",
        ],
    );
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_all_ok(&json, &stderr);
    assert_eq!(json["mode"], "closed");
    assert_eq!(json["uri_prefix"], "/example");
    assert!(stderr.contains("latency ms: p50"), "{stderr}");

    // Open loop at 40 req/s, Encrypt and Decrypt in turn, 4 KiB + 1 KiB AAD, with the secret
    // file instead of the proxy config and the prefix in the URL's place given by flag.
    let secret_file = s.app.dir.path().join("xks").join("secret");
    let cfg_json: Value = serde_json::from_slice(&std::fs::read(&s.proxy_config).unwrap()).unwrap();
    let secret = cfg_json["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        .as_str()
        .unwrap();
    write_private(&secret_file, format!("{secret}\n").as_bytes()).unwrap();
    let secret_flags = [
        "--access-key-id".to_string(),
        s.access_key_id.clone(),
        "--secret-file".to_string(),
        secret_file.to_string_lossy().into_owned(),
        "--uri-prefix".to_string(),
        "/example".to_string(),
    ];
    let (code, json, stderr) = load(
        &s,
        &strs(&secret_flags),
        &[
            "--key-id",
            "demo-key",
            "--op",
            "mixed",
            "-c",
            "4",
            "--rate",
            "40",
            "--duration",
            "2",
            "--payload-bytes",
            "4096",
            "--aad-bytes",
            "1024",
        ],
    );
    assert_eq!(code, 0, "{json}\n{stderr}");
    assert_all_ok(&json, &stderr);
    assert_eq!(json["mode"], "open");
    assert_eq!(json["target_rate"], 40.0);
    // A fixed schedule: 2 s at 40 req/s is 80 sends, whatever the server's speed.
    let n = json["requests"].as_u64().unwrap();
    assert!((79..=81).contains(&n), "{json}");

    // The other operations, briefly each.
    for op in ["decrypt", "metadata", "health"] {
        let (code, json, stderr) = load(
            &s,
            &strs(&cfg),
            &[
                "--key-id",
                "demo-key",
                "--op",
                op,
                "-c",
                "2",
                "--duration",
                "0.5",
            ],
        );
        assert_eq!(code, 0, "{op}: {json}\n{stderr}");
        assert_all_ok(&json, &stderr);
        assert_eq!(json["op"], op);
    }
}

#[test]
fn a_wrong_secret_is_an_authentication_failure_for_every_request() {
    let s = setup();
    let wrong = s.app.dir.path().join("wrong-secret");
    write_private(
        &wrong,
        b"d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZy1zZWNyZXQ=\n",
    )
    .unwrap();
    let flags = [
        "--access-key-id".to_string(),
        s.access_key_id.clone(),
        "--secret-file".to_string(),
        wrong.to_string_lossy().into_owned(),
        "--uri-prefix".to_string(),
        "/example".to_string(),
    ];
    let (code, json, stderr) = load(
        &s,
        &strs(&flags),
        &["--key-id", "demo-key", "-c", "2", "--duration", "1"],
    );
    assert_ne!(code, 0, "{json}\n{stderr}");
    let n = json["requests"].as_u64().unwrap();
    assert!(n > 0, "{json}");
    assert_eq!(json["ok"], 0, "{json}");
    assert_eq!(json["failed"], n, "{json}");
    assert_eq!(json["by_status"]["401"], n, "{json}");
    assert_eq!(
        json["by_error_name"]["AuthenticationFailedException"], n,
        "{json}"
    );
    assert!(stderr.contains("AuthenticationFailedException"), "{stderr}");
    // The secret never appears in the output.
    assert!(!stderr.contains("d3Jvbmctc2VjcmV0"), "{stderr}");
}

#[test]
fn an_untrusted_certificate_is_unreachable_with_a_hint() {
    let s = setup();
    // A CA that did not sign xks-front's certificate.
    let other = s.app.dir.path().join("other-pki");
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["xks", "load", "--url"])
        .arg(format!("https://xks.localhost:{}", s.front.addr.port()))
        .arg("--connect-to")
        .arg(s.front.addr.to_string())
        .arg("--tls-ca")
        .arg(Path::new(&other).join("ca.crt"))
        .arg("--proxy-config")
        .arg(&s.proxy_config)
        .args(["--key-id", "demo-key", "--duration", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(stderr.contains("--tls-ca"), "{stderr}");
}
