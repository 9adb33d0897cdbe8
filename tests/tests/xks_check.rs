//! `vhsm-admin xks check` against the real appliance (xks-front + vhsmd): every check passes
//! with the right credential; with a wrong secret the signed rows fail and the exit code says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vhsm_e2e::procs::{bin_path, write_private, KeyStoreSpec, XksFrontProc};
use vhsm_e2e::{Appliance, ApplianceOptions, XksClient};

const AKID: &str = "AKIAE2ETESTKEYXKSCHECK";
const SECRET: &str = "c2VjcmV0LWZvci10aGUteGtzLWNoZWNrLXRlc3RzLTEyMzQ=";

fn start() -> (Appliance, XksFrontProc) {
    let app = Appliance::start(&ApplianceOptions::default()).unwrap();
    let store = KeyStoreSpec {
        name: "default".into(),
        path_prefix: "/example".into(),
        keys: vec!["demo-key".into()],
        credentials: vec![(AKID.into(), SECRET.into())],
        rate_limit_per_sec: 1000,
        burst: 1000,
        extra_toml: String::new(),
    };
    let front =
        XksFrontProc::start(app.dir.path(), &app.pki, &[&app.nodes[0]], &[store], 1).unwrap();
    wait_active(&front, &app.pki, None);
    (app, front)
}

/// Waits until GetHealthStatus reports the vhsm node ACTIVE (xks-front's first deep health
/// check runs after it starts listening).
fn wait_active(front: &XksFrontProc, pki: &Path, client: Option<(&Path, &Path)>) {
    let client = XksClient::new(front.addr, pki, client, AKID, SECRET).unwrap();
    let body = serde_json::json!({"requestMetadata": {"kmsRequestId": "w", "kmsOperation": "KmsHealthCheck"}});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rt.block_on(client.post("/example/kms/xks/v1/health", &body));
        if let Ok(r) = &r {
            if r.body["ekmFleetDetails"][0]["healthStatus"] == "ACTIVE" {
                return;
            }
        }
        assert!(Instant::now() < deadline, "never ACTIVE: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `xks check -o json` with the secret in `secret_file` (and `extra` arguments).
fn check(addr: SocketAddr, pki: &Path, secret_file: &Path, extra: &[&str]) -> (Output, Value) {
    let port = addr.port();
    let mut cmd = Command::new(bin_path("vhsm-admin"));
    for (k, _) in std::env::vars() {
        if k.starts_with("XKS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["xks", "check", "--output", "json"])
        .args([
            "--url",
            &format!("https://xks.localhost:{port}/example/kms/xks/v1"),
        ])
        .args(["--connect-to", &addr.to_string()])
        .args(["--access-key-id", AKID])
        .arg("--secret-file")
        .arg(secret_file)
        .arg("--ca-file")
        .arg(pki.join("ca.crt"))
        .args(["--key-id", "demo-key"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn rows(report: &Value) -> Vec<(String, String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn verdict_of(rows: &[(String, String, String)], name: &str) -> String {
    rows.iter()
        .find(|(n, _, _)| n.contains(name))
        .map(|(_, v, _)| v.clone())
        .unwrap_or_else(|| panic!("no check named {name:?} in {rows:#?}"))
}

#[test]
fn xks_check_passes_against_the_appliance() {
    let (app, front) = start();
    let secret = app.dir.path().join("xks-secret");
    write_private(&secret, format!("{SECRET}\n").as_bytes()).unwrap();
    let (out, report) = check(front.addr, &app.pki, &secret, &[]);
    let rows = rows(&report);
    let failed: Vec<_> = rows.iter().filter(|(_, v, _)| v == "FAIL").collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(out.status.success(), "{:?}: {report:#}", out.status);
    assert_eq!(report["failed"], 0);
    for name in [
        "handshake (certificate trusted, name matches)",
        "certificate expiry",
        "cipher suites of the XKS spec",
        "TLS 1.0",
        "TLS 1.1",
        "weak TLS 1.2 suites",
        "GetHealthStatus",
        "GetKeyMetadata",
        "Encrypt + Decrypt, 32 B: Encrypt",
        "Encrypt + Decrypt, 32 B: Decrypt",
        "KMS's largest (4300 B, 8 KiB AAD): Decrypt",
        "Decrypt with the wrong AAD",
        "bad signature (wrong secret)",
        "unknown access key id",
        "no Authorization header",
        "signed 10 minutes in the past",
        "signed 10 minutes in the future",
        "unknown key",
        "wrong URI path prefix",
        "unknown operation path",
        "Encrypt without plaintext",
        "oversized body",
        "GET on an API path",
        "new connection + GetHealthStatus",
        "Encrypts on one connection",
    ] {
        assert_eq!(verdict_of(&rows, name), "PASS", "{name}: {rows:#?}");
    }
    // Every call was timed against the budget.
    let timed = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["latency_ms"].as_f64().is_some())
        .count();
    assert!(timed >= 20, "{timed} timed checks");

    // As documented for the quick start: everything from .dev/appliance.env's variables, the
    // table on stdout, xks.localhost resolved to loopback.
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["xks", "check"])
        .env(
            "XKS_URL",
            format!("https://xks.localhost:{}", front.addr.port()),
        )
        .env("XKS_URI_PREFIX", "/example")
        .env("XKS_ACCESS_KEY_ID", AKID)
        .env("XKS_SECRET_ACCESS_KEY_FILE", &secret)
        .env("XKS_CA_FILE", app.pki.join("ca.crt"))
        .env("XKS_KEY_ID", "demo-key")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("GROUP") && table.contains(" 0 failed"),
        "{table}"
    );
    assert!(!table.contains(SECRET), "the secret is never printed");
    drop(front);
}

#[test]
fn a_wrong_secret_fails_the_signed_checks_and_the_exit_code() {
    let (app, front) = start();
    let secret = app.dir.path().join("wrong-secret");
    write_private(
        &secret,
        b"d3Jvbmctc2VjcmV0LWZvci10aGUteGtzLWNoZWNrLTEyMzQ1\n",
    )
    .unwrap();
    let (out, report) = check(front.addr, &app.pki, &secret, &[]);
    assert_eq!(out.status.code(), Some(4), "{report:#}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checks failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&report);
    for name in ["GetHealthStatus", "GetKeyMetadata", "32 B: Encrypt"] {
        assert_eq!(verdict_of(&rows, name), "FAIL", "{name}: {rows:#?}");
        let detail = &rows.iter().find(|(n, _, _)| n.contains(name)).unwrap().2;
        assert!(
            detail.contains("AuthenticationFailedException"),
            "{name}: {detail}"
        );
    }
    // TLS does not depend on the credential.
    assert_eq!(verdict_of(&rows, "cipher suites of the XKS spec"), "PASS");
}

/// xks-front restarted with its config plus `[tls] client_ca` and KMS's client subject
/// (mutual TLS as KMS uses it); killed on drop.
struct MtlsFront(Child);

impl Drop for MtlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn restart_with_mtls(front: &mut XksFrontProc, pki: &Path) -> MtlsFront {
    front.stop();
    let config = std::fs::read_to_string(&front.config).unwrap();
    let key_line = format!("key = \"{}\"\n", pki.join("xks-front.key").display());
    assert!(config.contains(&key_line), "{config}");
    let mtls = format!(
        "{key_line}client_ca = \"{}\"\nclient_subjects = [\"cks.kms.us-east-1.amazonaws.com\"]\n",
        pki.join("ca.crt").display()
    );
    std::fs::write(&front.config, config.replacen(&key_line, &mtls, 1)).unwrap();
    let log = std::fs::File::create(&front.log).unwrap();
    let child = Command::new(bin_path("xks-front"))
        .arg("--config")
        .arg(&front.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut guard = MtlsFront(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&front.addr, Duration::from_millis(200)).is_err() {
        let exited = guard.0.try_wait().unwrap().is_some();
        assert!(
            !exited && Instant::now() < deadline,
            "xks-front did not restart:\n{}",
            vhsm_e2e::procs::read_log(&front.log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

#[test]
fn with_mutual_tls_strangers_are_refused_and_the_client_certificate_passes() {
    let (app, mut front) = start();
    let _mtls = restart_with_mtls(&mut front, &app.pki);
    let client = (
        app.pki.join("kms-client.crt"),
        app.pki.join("kms-client.key"),
    );
    wait_active(&front, &app.pki, Some((&client.0, &client.1)));
    let secret = app.dir.path().join("xks-secret");
    write_private(&secret, SECRET.as_bytes()).unwrap();
    // `pki init` writes a KMS-like client certificate (CN cks.kms.us-east-1.amazonaws.com).
    let cert = app.pki.join("kms-client.crt");
    let key = app.pki.join("kms-client.key");
    let (out, report) = check(
        front.addr,
        &app.pki,
        &secret,
        &[
            "--client-cert",
            cert.to_str().unwrap(),
            "--client-key",
            key.to_str().unwrap(),
        ],
    );
    let rows = rows(&report);
    assert!(out.status.success(), "{rows:#?}");
    for name in [
        "mutual TLS",
        "mTLS refuses a client without a certificate",
        "mTLS refuses a self-signed certificate",
        "GetHealthStatus",
        "32 B: Decrypt",
    ] {
        assert_eq!(verdict_of(&rows, name), "PASS", "{name}: {rows:#?}");
    }
    // Without the client certificate the tool says why nothing works, and fails.
    let (out, report) = check(front.addr, &app.pki, &secret, &[]);
    let rows = self::rows(&report);
    assert_eq!(out.status.code(), Some(4), "{rows:#?}");
    let mtls = rows.iter().find(|(n, _, _)| n == "mutual TLS").unwrap();
    assert!(mtls.2.contains("asks for a client certificate"), "{mtls:?}");
    assert_eq!(verdict_of(&rows, "GetHealthStatus"), "FAIL");
}

#[test]
fn the_secret_is_never_a_flag_and_a_missing_one_is_a_usage_error() {
    let base = [
        "xks",
        "check",
        "--url",
        "https://xks.localhost:1/example/kms/xks/v1",
        "--access-key-id",
        AKID,
        "--key-id",
        "demo-key",
    ];
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(bin_path("vhsm-admin"));
        for (k, _) in std::env::vars() {
            if k.starts_with("XKS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(base).args(extra).output().unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("XKS_SECRET_ACCESS_KEY"), "{err}");
    for flag in ["--secret", "--secret-access-key"] {
        let out = run(&[flag, SECRET]);
        assert_eq!(out.status.code(), Some(1), "{flag} accepted");
    }
}
