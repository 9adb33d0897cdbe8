//! Runs the real vhsm-admin binary for the commands that need no vhsmd: pki init, xks
//! credentials new, audit verify, --help of every subcommand, exit codes of usage errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use ed25519_dalek::SigningKey;
use vhsm_audit::{AuditRecord, GENESIS_PREV_HASH};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vhsm-admin"));
    c.env_remove("VHSM_ENDPOINT").env_remove("VHSM_PKI_DIR");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn pki_init_writes_the_layout_and_refuses_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pki");
    let o = run(&[
        "pki",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--vhsmd-san",
        "vhsm-2",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(mode(&dir), 0o700);
    for stem in [
        "ca",
        "vhsmd",
        "xks-front",
        "crypto",
        "admin",
        "auditor",
        "kms-client",
    ] {
        assert_eq!(mode(&dir.join(format!("{stem}.key"))), 0o600, "{stem}");
        let pem = std::fs::read_to_string(dir.join(format!("{stem}.crt"))).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{stem}");
    }
    let again = run(&["pki", "init", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code(&again), 7, "{}", stderr(&again));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    let forced = run(&["pki", "init", "--dir", dir.to_str().unwrap(), "--force"]);
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
}

#[test]
fn pki_init_json_lists_files() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("p");
    let o = run(&[
        "pki",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["files"].as_array().unwrap().len(), 16);
}

#[test]
fn xks_credentials_new_prints_console_json_and_writes_secret() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("default-1");
    let o = run(&[
        "xks",
        "credentials",
        "new",
        "--uri-path",
        "/example/kms/xks/v1",
        "--secret-out",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["XksProxyUriPath"], "/example/kms/xks/v1");
    let akid = v["XksProxyAuthenticationCredential"]["AccessKeyId"]
        .as_str()
        .unwrap();
    let sk = v["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        .as_str()
        .unwrap();
    assert_eq!(akid.len(), 24);
    assert!(akid
        .bytes()
        .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    assert_eq!(sk.len(), 44);
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(std::fs::read_to_string(&secret).unwrap().trim_end(), sk);
    // the secret is not in stderr (only the intended stdout JSON)
    assert!(!stderr(&o).contains(sk));
    assert!(stderr(&o).contains(akid), "stderr names the access key id");

    // the secret file is not overwritten without --force
    let again = run(&[
        "xks",
        "credentials",
        "new",
        "--uri-path",
        "/example/kms/xks/v1",
        "--secret-out",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(code(&again), 7);
    assert_eq!(std::fs::read_to_string(&secret).unwrap().trim_end(), sk);
}

#[test]
fn xks_credentials_new_rejects_bad_uri_path() {
    let o = run(&[
        "xks",
        "credentials",
        "new",
        "--uri-path",
        "/example/kms/xks/v2",
    ]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("/kms/xks/v1"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
}

fn write_chain(dir: &Path, n: u64) -> (std::path::PathBuf, std::path::PathBuf, Vec<AuditRecord>) {
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let mut prev = GENESIS_PREV_HASH.to_string();
    let mut recs = Vec::new();
    for seq in 1..=n {
        let mut d = BTreeMap::new();
        d.insert("key_id".to_string(), "k1".to_string());
        let event = if seq == 2 {
            "key.disable"
        } else {
            "key.create"
        };
        let mut r = AuditRecord::new(
            seq,
            prev.clone(),
            1_700_000_000_000 + seq,
            event,
            "admin",
            d,
        );
        r.sign(&key);
        prev = r.hash_hex();
        recs.push(r);
    }
    let log = dir.join("audit.jsonl");
    let text: String = recs.iter().map(|r| r.to_json_line() + "\n").collect();
    std::fs::write(&log, text).unwrap();
    let public = dir.join("audit.jsonl.pub");
    std::fs::write(&public, hex::encode(key.verifying_key().to_bytes()) + "\n").unwrap();
    (log, public, recs)
}

#[test]
fn audit_verify_good_edited_and_truncated_logs() {
    let d = tempfile::tempdir().unwrap();
    let (log, public, recs) = write_chain(d.path(), 3);
    let ok = run(&[
        "audit",
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let head = recs[2].hash_hex();
    assert!(
        stdout(&ok).starts_with(&format!("OK: 3 records, 3 signed, head 3 {head}")),
        "{}",
        stdout(&ok)
    );

    let expect = format!("3:{head}");
    let ok = run(&[
        "audit",
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
        "--expect-head",
        &expect,
        "--output",
        "json",
    ]);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    let v: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["records"], 3);

    let edited = d.path().join("edited.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&edited, text.replace("key.disable", "key.enable")).unwrap();
    let bad = run(&[
        "audit",
        "verify",
        "--log",
        edited.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(code(&bad), 8, "{}", stdout(&bad));
    assert!(stderr(&bad).contains("seq 2"), "{}", stderr(&bad));

    let truncated = d.path().join("truncated.jsonl");
    let first_two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&truncated, first_two).unwrap();
    let bad = run(&[
        "audit",
        "verify",
        "--log",
        truncated.to_str().unwrap(),
        "--public-key",
        public.to_str().unwrap(),
        "--expect-head",
        &expect,
    ]);
    assert_eq!(code(&bad), 8);
}

#[test]
fn audit_verify_with_a_bad_key_file_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let (log, _, _) = write_chain(d.path(), 1);
    let k = d.path().join("k");
    std::fs::write(&k, "not hex").unwrap();
    let o = run(&[
        "audit",
        "verify",
        "--log",
        log.to_str().unwrap(),
        "--public-key",
        k.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
}

#[test]
fn help_of_every_subcommand_succeeds() {
    let cmds: &[&[&str]] = &[
        &[],
        &["pki"],
        &["pki", "init"],
        &["status"],
        &["init"],
        &["unseal"],
        &["seal"],
        &["rekey"],
        &["key"],
        &["key", "create"],
        &["key", "import-key"],
        &["key", "import"],
        &["key", "list"],
        &["key", "show"],
        &["key", "rotate"],
        &["key", "enable"],
        &["key", "disable"],
        &["key", "schedule-deletion"],
        &["key", "cancel-deletion"],
        &["key", "min-decryption-version"],
        &["backup"],
        &["backup", "create"],
        &["backup", "restore"],
        &["clone"],
        &["audit"],
        &["audit", "export"],
        &["audit", "verify"],
        &["audit", "tail"],
        &["xks"],
        &["xks", "credentials"],
        &["xks", "credentials", "new"],
    ];
    for c in cmds {
        let mut args: Vec<&str> = c.to_vec();
        args.push("--help");
        let o = run(&args);
        assert_eq!(code(&o), 0, "{c:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage:"), "{c:?}");
    }
    // long help teaches the ceremony
    let o = run(&["init", "--help"]);
    assert!(stdout(&o).contains("custodian"), "{}", stdout(&o));
    let o = run(&["xks", "credentials", "new", "--help"]);
    assert!(stdout(&o).contains("CONTAINS THE SECRET"));
}

#[test]
fn usage_errors_exit_1() {
    assert_eq!(code(&run(&[])), 1);
    assert_eq!(code(&run(&["no-such-command"])), 1);
    assert_eq!(code(&run(&["init"])), 1);
    // secrets are never accepted as arguments
    assert_eq!(code(&run(&["unseal", "--passphrase", "hunter2hunter2"])), 1);
}

#[test]
fn online_command_without_tls_material_exits_1_and_says_why() {
    let o = run(&["status"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--pki-dir"), "{}", stderr(&o));
}

#[test]
fn unreachable_vhsmd_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("pki");
    assert_eq!(
        code(&run(&["pki", "init", "--dir", dir.to_str().unwrap()])),
        0
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let endpoint = format!("https://127.0.0.1:{port}");
    let o = bin()
        .args(["status", "--endpoint", &endpoint])
        .env("VHSM_PKI_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("cannot reach vhsmd at {endpoint}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn openssl_wrapping_command_in_the_docs_produces_rfc5649_kwp() {
    use aes_kw::KeyInit;
    // The exact command of docs/admin-cli.md; skipped only where openssl is not installed.
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed: skipping");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let import_key = [0x11u8; 32];
    let material: Vec<u8> = (0u8..32).collect();
    std::fs::write(d.path().join("import.key"), import_key).unwrap();
    std::fs::write(d.path().join("key.bin"), &material).unwrap();
    let o = Command::new("sh")
        .current_dir(d.path())
        .arg("-c")
        .arg("openssl enc -id-aes256-wrap-pad -K $(xxd -p -c64 import.key) -iv A65959A6 -in key.bin -out key.wrapped")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let wrapped = std::fs::read(d.path().join("key.wrapped")).unwrap();
    assert_eq!(wrapped.len(), 40);
    let kwp = aes_kw::KwpAes256::new(&import_key.into());
    let mut buf = [0u8; 40];
    let unwrapped = kwp.unwrap_key(&wrapped, &mut buf).unwrap();
    assert_eq!(unwrapped, material.as_slice());
}
