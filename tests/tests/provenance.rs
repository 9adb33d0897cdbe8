//! Signed key provenance end to end: a generated and an imported key, each rotated; the
//! statements of both versions verify offline (no connection) against the public key written
//! by `audit export`, name the right audit records and commit to the material; an edited
//! statement or another public key is refused with exit code 8.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use aes_kw::{KeyInit, KwpAes256};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use vhsm_e2e::procs::bin_path;
use vhsm_e2e::{Admin, Appliance, ApplianceOptions};

/// The imported key's material (test data only).
const MATERIAL: [u8; 32] = [0x5a; 32];
/// RFC 8032 test vector 1's public key: a valid Ed25519 key that is not the appliance's.
const OTHER_PUBLIC_KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

/// `vhsm-admin key verify-provenance` with no endpoint or PKI: offline. Returns the exit code
/// and stdout.
fn verify_offline(statement: &Path, public_key: &Path, json: bool) -> (i32, String) {
    let mut cmd = Command::new(bin_path("vhsm-admin"));
    cmd.args(["key", "verify-provenance", "--statement"])
        .arg(statement)
        .arg("--public-key")
        .arg(public_key);
    if json {
        cmd.args(["--output", "json"]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The documented key check value: HMAC-SHA256(material, "vhsm-kcv-v1" || u32be(len id) ||
/// id || u32be(version)), first 16 bytes, hex.
fn expected_kcv(material: &[u8], id: &str, version: u32) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(material).unwrap();
    mac.update(b"vhsm-kcv-v1");
    mac.update(&(id.len() as u32).to_be_bytes());
    mac.update(id.as_bytes());
    mac.update(&version.to_be_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn provenance(admin: &Admin, dir: &Path, id: &str, version: u32) -> std::path::PathBuf {
    let file = dir.join(format!("{id}-v{version}.json"));
    let text = admin
        .ok(
            &[
                "key",
                "provenance",
                id,
                "--version",
                &version.to_string(),
                "--out",
                file.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    assert!(text.contains("key check value"), "{text}");
    file
}

fn audit_record(log: &str, seq: u64) -> Value {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["seq"] == seq)
        .unwrap_or_else(|| panic!("no audit record {seq}"))
}

#[test]
fn provenance_statements_verify_offline_and_tampered_ones_do_not() {
    let app = Appliance::start(&ApplianceOptions::default()).unwrap();
    let admin = app.admin(0);
    let dir = app.dir.path();

    // Import a key under a fresh import key.
    let ik_file = dir.join("import.key");
    let ik = admin
        .json(
            &["key", "import-key", "--out", ik_file.to_str().unwrap()],
            "",
        )
        .unwrap();
    let import_key_id = ik["import_key_id"].as_str().unwrap().to_string();
    let import_fp = ik["import_key_fingerprint"].as_str().unwrap().to_string();
    let kek: [u8; 32] = std::fs::read(&ik_file).unwrap().try_into().unwrap();
    let mut wrapped = [0u8; 40];
    KwpAes256::new(&kek.into())
        .wrap_key(&MATERIAL, &mut wrapped)
        .unwrap();
    let wrapped_file = dir.join("wrapped.bin");
    std::fs::write(&wrapped_file, wrapped).unwrap();
    admin
        .ok(
            &[
                "key",
                "import",
                "imported",
                "--import-key-id",
                &import_key_id,
                "--wrapped",
                wrapped_file.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    admin.ok(&["key", "rotate", "imported"], "").unwrap();
    admin.ok(&["key", "rotate", "demo-key"], "").unwrap();

    let statements: Vec<_> = [
        ("imported", 1),
        ("imported", 2),
        ("demo-key", 1),
        ("demo-key", 2),
    ]
    .into_iter()
    .map(|(id, v)| ((id, v), provenance(&admin, dir, id, v)))
    .collect();

    let log_file = dir.join("audit.jsonl");
    admin
        .ok(
            &["audit", "export", "--out", log_file.to_str().unwrap()],
            "",
        )
        .unwrap();
    let public = dir.join("audit.jsonl.pub");
    let log = std::fs::read_to_string(&log_file).unwrap();
    let store_id = admin.json(&["status"], "").unwrap()["store_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(store_id.len(), 32);

    let mut kcvs = Vec::new();
    for ((id, version), file) in &statements {
        let (code, out) = verify_offline(file, &public, true);
        assert_eq!(code, 0, "{id} v{version}: {out}");
        let report: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["verified"], true);
        let s = &report["statement"];
        assert_eq!(s["key_id"], *id);
        assert_eq!(s["version"], *version);
        assert_eq!(s["store_id"], store_id.as_str());
        assert_eq!(s["key_spec"], "AES_256");
        assert_eq!(s["usage"], serde_json::json!(["encrypt", "decrypt"]));
        // The creating audit record is in the exported (verifiable) log.
        let rec = audit_record(&log, s["created_by_audit_seq"].as_u64().unwrap());
        assert_eq!(rec["details"]["key_id"], *id);
        let (logged, created) = (
            rec["time_ms"].as_u64().unwrap(),
            s["created_at_ms"].as_u64().unwrap(),
        );
        assert!(logged.abs_diff(created) < 1000, "{logged} vs {created}");
        match (*id, *version) {
            ("imported", 1) => {
                assert_eq!(s["origin"], "imported");
                assert_eq!(s["import_key_id"], import_key_id.as_str());
                assert_eq!(s["import_key_fingerprint"], import_fp.as_str());
                assert_eq!(rec["event"], "key.import");
                assert_eq!(rec["details"]["import_key_fingerprint"], import_fp.as_str());
                // The owner of the material recomputes the commitment.
                assert_eq!(s["kcv"], expected_kcv(&MATERIAL, "imported", 1));
            }
            (_, 1) => {
                assert_eq!(s["origin"], "generated");
                assert_eq!(s["import_key_id"], Value::Null);
                assert_eq!(rec["event"], "key.create");
            }
            (_, _) => {
                assert_eq!(s["origin"], "generated", "rotations are generated inside");
                assert_eq!(s["import_key_id"], Value::Null);
                assert_eq!(rec["event"], "key.rotate");
                assert_eq!(rec["details"]["version"], version.to_string());
            }
        }
        kcvs.push(s["kcv"].as_str().unwrap().to_string());
    }
    kcvs.sort();
    kcvs.dedup();
    assert_eq!(kcvs.len(), 4, "every version has its own check value");

    // The text form names the verdict and the signer.
    let (code, text) = verify_offline(&statements[0].1, &public, false);
    assert_eq!(code, 0);
    assert!(text.contains("provenance statement OK"), "{text}");

    // `-o json` prints the statement itself: it verifies as a file too.
    let printed = admin
        .ok(&["key", "provenance", "demo-key", "--output", "json"], "")
        .unwrap();
    let printed_file = dir.join("printed.json");
    std::fs::write(&printed_file, &printed).unwrap();
    let (code, out) = verify_offline(&printed_file, &public, true);
    assert_eq!(code, 0, "{out}");
    let current: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        current["statement"]["version"], 2,
        "default is the current version"
    );

    // Edit one field at a time: every edit is refused with exit code 8.
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(&statements[0].1).unwrap()).unwrap();
    let edits: [(&str, Value); 7] = [
        ("version", Value::from(2)),
        ("key_id", Value::from("demo-key")),
        ("origin", Value::from("generated")),
        ("kcv", Value::from(expected_kcv(&[0u8; 32], "imported", 1))),
        ("created_by_audit_seq", Value::from(1)),
        ("import_key_fingerprint", Value::Null),
        ("store_id", Value::from("00".repeat(16))),
    ];
    for (field, value) in edits {
        let mut tampered = original.clone();
        assert_ne!(tampered["statement"][field], value, "{field}");
        tampered["statement"][field] = value;
        let file = dir.join(format!("tampered-{field}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&tampered).unwrap()).unwrap();
        let (code, out) = verify_offline(&file, &public, false);
        assert_eq!(code, 8, "edited {field} was accepted: {out}");
    }
    // A replaced signature, and another appliance's public key.
    let mut resigned = original.clone();
    resigned["signature"] = Value::from("00".repeat(64));
    let file = dir.join("tampered-signature.json");
    std::fs::write(&file, resigned.to_string()).unwrap();
    assert_eq!(verify_offline(&file, &public, false).0, 8);
    let other = dir.join("other.pub");
    std::fs::write(&other, format!("{OTHER_PUBLIC_KEY}\n")).unwrap();
    assert_eq!(verify_offline(&statements[0].1, &other, false).0, 8);

    // An auditor certificate may fetch statements too (auditors certify where keys came from).
    let cert = app.pki.join("auditor.crt");
    let key = app.pki.join("auditor.key");
    let as_auditor = admin
        .json(
            &[
                "key",
                "provenance",
                "imported",
                "--version",
                "1",
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    assert_eq!(as_auditor["statement"]["kcv"], original["statement"]["kcv"]);
    // ...but not change keys.
    let r = admin
        .run(
            &[
                "key",
                "rotate",
                "imported",
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    assert_eq!(r.code, 5, "{}", r.stderr);

    // A version that does not exist, and a sealed appliance.
    let r = admin
        .run(&["key", "provenance", "imported", "--version", "3"], "")
        .unwrap();
    assert_eq!(r.code, 1, "{}", r.stderr);
    admin.ok(&["seal", "--yes"], "").unwrap();
    let r = admin.run(&["key", "provenance", "imported"], "").unwrap();
    assert_eq!(r.code, 3, "sealed: {}", r.stderr);
    // Verification needs no appliance at all.
    assert_eq!(verify_offline(&statements[1].1, &public, false).0, 0);
}
