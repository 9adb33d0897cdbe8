//! Key ceremonies through the real vhsm-admin binary against real vhsmd processes over mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use vhsm_e2e::procs::VhsmdProc;
use vhsm_e2e::{bin_path, Admin};

const CUSTODIANS: [&str; 5] = [
    "custodian one passphrase",
    "custodian two passphrase",
    "custodian three passphrase",
    "custodian four passphrase",
    "custodian five passphrase",
];

fn pki_init(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pki
}

fn lines(items: &[&str]) -> String {
    items.iter().map(|s| format!("{s}\n")).collect()
}

fn share_file(dir: &Path, k: usize, n: usize) -> String {
    dir.join(format!("share-{k}-of-{n}.vhsmshare"))
        .to_string_lossy()
        .into_owned()
}

fn seal_state(admin: &Admin) -> String {
    let v = admin.json(&["status"], "").unwrap();
    v["seal_state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn three_of_five_ceremony_then_rekey_to_two_of_three() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    let shares = dir.path().join("shares");

    // Init: five custodians, each with their own passphrase.
    admin
        .ok(
            &[
                "init",
                "--shares",
                "5",
                "--threshold",
                "3",
                "--share-dir",
                shares.to_str().unwrap(),
            ],
            &lines(&CUSTODIANS),
        )
        .unwrap();
    for k in 1..=5 {
        let meta = std::fs::metadata(share_file(&shares, k, 5)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "share file mode");
    }
    assert_eq!(seal_state(&admin), "sealed");

    // Init again is refused.
    let again = admin
        .run(&["init", "--passphrase"], &lines(&["another passphrase!"]))
        .unwrap();
    assert_eq!(again.code, 7, "re-init must be refused: {}", again.stderr);

    // A wrong passphrase for a good share is rejected and changes nothing.
    let wrong = admin
        .run(
            &["unseal", "--share", &share_file(&shares, 1, 5)],
            &lines(&["not the passphrase"]),
        )
        .unwrap();
    assert_eq!(wrong.code, 4, "wrong passphrase: {}", wrong.stderr);

    // Two shares do not unseal.
    admin
        .ok(
            &["unseal", "--share", &share_file(&shares, 1, 5)],
            &lines(&[CUSTODIANS[0]]),
        )
        .unwrap();
    admin
        .ok(
            &["unseal", "--share", &share_file(&shares, 3, 5)],
            &lines(&[CUSTODIANS[2]]),
        )
        .unwrap();
    let v = admin.json(&["status"], "").unwrap();
    assert_eq!(v["seal_state"], "sealed");
    assert_eq!(v["unseal_progress"], 2);

    // A share of another store is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other = VhsmdProc::start(other_dir.path(), &pki, "other").unwrap();
    let other_admin = Admin::new(&other.endpoint(), &pki);
    let other_shares = other_dir.path().join("shares");
    other_admin
        .ok(
            &[
                "init",
                "--shares",
                "2",
                "--threshold",
                "2",
                "--share-dir",
                other_shares.to_str().unwrap(),
            ],
            &lines(&CUSTODIANS[..2]),
        )
        .unwrap();
    let foreign = admin
        .run(
            &["unseal", "--share", &share_file(&other_shares, 2, 2)],
            &lines(&[CUSTODIANS[1]]),
        )
        .unwrap();
    assert_ne!(foreign.code, 0, "foreign share must be refused");
    assert_eq!(seal_state(&admin), "sealed");

    // The third distinct share unseals.
    admin
        .ok(
            &["unseal", "--share", &share_file(&shares, 5, 5)],
            &lines(&[CUSTODIANS[4]]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin), "unsealed");

    // Rekey to 2-of-3 with a quorum of the old shares.
    let new_shares = dir.path().join("new-shares");
    let mut input = vec![CUSTODIANS[1], CUSTODIANS[3], CUSTODIANS[4]];
    input.extend([
        "new custodian A pass",
        "new custodian B pass",
        "new custodian C pass",
    ]);
    admin
        .ok(
            &[
                "rekey",
                "--old-share",
                &share_file(&shares, 2, 5),
                "--old-share",
                &share_file(&shares, 4, 5),
                "--old-share",
                &share_file(&shares, 5, 5),
                "--shares",
                "3",
                "--threshold",
                "2",
                "--share-dir",
                new_shares.to_str().unwrap(),
            ],
            &lines(&input),
        )
        .unwrap();

    admin.ok(&["seal", "--yes"], "").unwrap();
    assert_eq!(seal_state(&admin), "sealed");
    // Old shares stop working.
    let old = admin
        .run(
            &["unseal", "--share", &share_file(&shares, 1, 5)],
            &lines(&[CUSTODIANS[0]]),
        )
        .unwrap();
    assert_ne!(old.code, 0, "old share must be refused after rekey");
    admin.ok(&["unseal", "--reset"], "").unwrap();
    // Two new shares unseal.
    admin
        .ok(
            &["unseal", "--share", &share_file(&new_shares, 1, 3)],
            &lines(&["new custodian A pass"]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin), "sealed");
    admin
        .ok(
            &["unseal", "--share", &share_file(&new_shares, 3, 3)],
            &lines(&["new custodian C pass"]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin), "unsealed");
}

#[test]
fn key_lifecycle_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    let pass = "lifecycle passphrase 1";
    admin
        .ok(&["init", "--passphrase"], &lines(&[pass, pass]))
        .unwrap();
    admin.ok(&["unseal"], &lines(&[pass])).unwrap();

    let k = admin
        .json(
            &[
                "key",
                "create",
                "orders-key",
                "--usage",
                "encrypt,decrypt",
                "--label",
                "team=payments",
            ],
            "",
        )
        .unwrap();
    assert_eq!(k["key_id"], "orders-key");
    assert_eq!(k["state"], "ENABLED");
    let dup = admin.run(&["key", "create", "orders-key"], "").unwrap();
    assert_eq!(dup.code, 7, "duplicate key id: {}", dup.stderr);
    let bad = admin.run(&["key", "create", "bad id!"], "").unwrap();
    assert_ne!(bad.code, 0);

    let rotated = admin.json(&["key", "rotate", "orders-key"], "").unwrap();
    assert_eq!(rotated["current_version"], 2);
    let disabled = admin.json(&["key", "disable", "orders-key"], "").unwrap();
    assert_eq!(disabled["state"], "DISABLED");
    let enabled = admin.json(&["key", "enable", "orders-key"], "").unwrap();
    assert_eq!(enabled["state"], "ENABLED");
    let pending = admin
        .json(
            &["key", "schedule-deletion", "orders-key", "--days", "7"],
            "",
        )
        .unwrap();
    assert_eq!(pending["state"], "PENDING_DELETION");
    let cancelled = admin
        .json(&["key", "cancel-deletion", "orders-key"], "")
        .unwrap();
    assert_ne!(cancelled["state"], "PENDING_DELETION");
    let list = admin.json(&["key", "list"], "").unwrap();
    assert!(list.to_string().contains("orders-key"));
    let missing = admin.run(&["key", "show", "no-such-key"], "").unwrap();
    assert_eq!(missing.code, 6, "unknown key: {}", missing.stderr);
}

#[test]
fn backup_restore_onto_second_node_and_tamper_detection() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let a = VhsmdProc::start(dir.path(), &pki, "vhsm-a").unwrap();
    let b = VhsmdProc::start(dir.path(), &pki, "vhsm-b").unwrap();
    let c = VhsmdProc::start(dir.path(), &pki, "vhsm-c").unwrap();
    let admin_a = Admin::new(&a.endpoint(), &pki);
    let admin_b = Admin::new(&b.endpoint(), &pki);
    let admin_c = Admin::new(&c.endpoint(), &pki);
    let pass = "backup ceremony passphrase";
    admin_a
        .ok(&["init", "--passphrase"], &lines(&[pass, pass]))
        .unwrap();
    admin_a.ok(&["unseal"], &lines(&[pass])).unwrap();
    admin_a
        .ok(
            &["key", "create", "shared-key", "--usage", "encrypt,decrypt"],
            "",
        )
        .unwrap();

    let ct = rt.block_on(async {
        let mut crypto = vhsm_e2e::grpc::crypto(&a.endpoint(), &pki).await.unwrap();
        crypto
            .encrypt(vhsm_proto::v1::EncryptRequest {
                key_id: "shared-key".into(),
                plaintext: b"the same bytes on both nodes".to_vec(),
                aad: b"ctx".to_vec(),
                request_id: "e2e-1".into(),
                integrity_check: false,
            })
            .await
            .unwrap()
            .into_inner()
    });

    let backup = dir.path().join("store.vhsmbak");
    admin_a
        .ok(&["backup", "create", "--out", backup.to_str().unwrap()], "")
        .unwrap();

    // A tampered backup is refused and leaves the target untouched.
    let mut bytes = std::fs::read(&backup).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let tampered = dir.path().join("tampered.vhsmbak");
    std::fs::write(&tampered, &bytes).unwrap();
    let r = admin_c
        .run(
            &["backup", "restore", "--in", tampered.to_str().unwrap()],
            &lines(&[pass]),
        )
        .unwrap();
    assert_ne!(r.code, 0, "tampered backup must be refused");
    assert_eq!(seal_state(&admin_c), "uninitialized");

    // The genuine backup restores onto the empty node B.
    admin_b
        .ok(
            &["backup", "restore", "--in", backup.to_str().unwrap()],
            &lines(&[pass]),
        )
        .unwrap();
    assert_eq!(seal_state(&admin_b), "unsealed");

    for node in [&a, &b] {
        let pt = rt.block_on(async {
            let mut crypto = vhsm_e2e::grpc::crypto(&node.endpoint(), &pki)
                .await
                .unwrap();
            crypto
                .decrypt(vhsm_proto::v1::DecryptRequest {
                    key_id: "shared-key".into(),
                    ciphertext: ct.ciphertext.clone(),
                    iv: ct.iv.clone(),
                    tag: ct.tag.clone(),
                    aad: b"ctx".to_vec(),
                    metadata: ct.metadata.clone(),
                    request_id: "e2e-2".into(),
                })
                .await
                .unwrap()
                .into_inner()
        });
        assert_eq!(pt.plaintext, b"the same bytes on both nodes");
    }
}

#[test]
fn audit_verify_detects_an_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    let pass = "audit ceremony passphrase";
    admin
        .ok(&["init", "--passphrase"], &lines(&[pass, pass]))
        .unwrap();
    admin.ok(&["unseal"], &lines(&[pass])).unwrap();
    admin.ok(&["key", "create", "k1"], "").unwrap();
    admin.ok(&["key", "disable", "k1"], "").unwrap();

    let log = dir.path().join("audit.jsonl");
    admin
        .ok(&["audit", "export", "--out", log.to_str().unwrap()], "")
        .unwrap();
    let public = format!("{}.pub", log.display());
    admin
        .ok(
            &[
                "audit",
                "verify",
                "--log",
                log.to_str().unwrap(),
                "--public-key",
                &public,
            ],
            "",
        )
        .unwrap();

    // Edit one record: the disable becomes an enable.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("key.disable"),
        "audit log lacks key.disable:\n{text}"
    );
    let edited = dir.path().join("edited.jsonl");
    std::fs::write(&edited, text.replace("key.disable", "key.enable")).unwrap();
    let r = admin
        .run(
            &[
                "audit",
                "verify",
                "--log",
                edited.to_str().unwrap(),
                "--public-key",
                &public,
            ],
            "",
        )
        .unwrap();
    assert_eq!(
        r.code, 8,
        "edited log must fail verification: {} {}",
        r.stdout, r.stderr
    );

    // Delete one record.
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    let deleted = dir.path().join("deleted.jsonl");
    std::fs::write(&deleted, kept.join("\n")).unwrap();
    let r = admin
        .run(
            &[
                "audit",
                "verify",
                "--log",
                deleted.to_str().unwrap(),
                "--public-key",
                &public,
            ],
            "",
        )
        .unwrap();
    assert_eq!(
        r.code, 8,
        "log with a deleted record must fail: {}",
        r.stdout
    );
}
