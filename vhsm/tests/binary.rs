//! The real `vhsmd` binary: --check-config, startup line, mTLS service, graceful SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::Pki;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vhsm_proto::v1::crypto_client::CryptoClient;
use vhsm_proto::v1::{HealthRequest, SealState};

const VHSMD: &str = env!("CARGO_BIN_EXE_vhsmd");

fn write_config(pki: &Pki, extra: &str) -> std::path::PathBuf {
    let d = pki.path().display();
    let text = format!(
        r#"node_id = "bin-node"
data_dir = "{d}/bin-data"
[listen]
addr = "127.0.0.1:0"
[tls]
cert = "{d}/vhsmd.crt"
key = "{d}/vhsmd.key"
client_ca = "{d}/ca.crt"
[roles]
crypto = ["xks-front"]
admin = ["admin"]
[log]
format = "json"
{extra}
"#
    );
    let p = pki.path().join("vhsmd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_accepts_good_and_names_bad_fields() {
    let pki = Pki::new();
    let cfg = write_config(&pki, "");
    let out = Command::new(VHSMD)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");

    std::fs::remove_file(pki.path().join("vhsmd.key")).unwrap();
    let out = Command::new(VHSMD)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.key: file not found"), "{err}");

    let bad = pki.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("bin-node", "bad node"),
    )
    .unwrap();
    let out = Command::new(VHSMD)
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id: must match"));
}

#[test]
fn starts_serves_refuses_a_second_process_and_stops_on_sigterm() {
    let pki = Pki::new();
    let cfg = write_config(&pki, "[dev]\ninsecure_fast_kdf = true\n");
    let mut child = Command::new(VHSMD)
        .args(["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("vhsmd exited before listening")
            .unwrap();
        log.push(line.clone());
        if let Some(rest) = line.split("vhsmd listening on ").nth(1) {
            let addr: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            break addr.parse::<std::net::SocketAddr>().unwrap();
        }
    };
    assert!(
        log.iter()
            .any(|l| l.contains("insecure_fast_kdf") && l.contains("WARN")),
        "{log:?}"
    );
    let store = pki.path().join("bin-data");
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("store/db")), 0o600);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = common::channel(addr, &pki.ca_pem, Some(&pki.crypto))
            .await
            .unwrap();
        let h = CryptoClient::new(ch)
            .health(HealthRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.node_id, "bin-node");
        assert_eq!(h.seal_state, SealState::Uninitialized as i32);
    });

    kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let mut rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    log.append(&mut rest);
    let text = log.join("\n");
    assert!(text.contains("\"method\":\"Crypto/Health\""), "{text}");
    assert!(text.contains("\"identity\":\"xks-front\""), "{text}");
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("vhsmd stopped"), "{text}");
    // The lock is released once the process is gone.
    vhsm::storage::SledStorage::open(&store.join("store")).unwrap();
}
