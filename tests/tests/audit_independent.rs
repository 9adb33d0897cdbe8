//! The audit verifier against an independent implementation (tests/tools/verify_audit.py,
//! Python + the `cryptography` package): on a real appliance's exported log, both accept it and
//! agree on the head; on every kind of tampering both refuse it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use vhsm_e2e::admin::Admin;
use vhsm_e2e::procs::{bin_path, VhsmdProc};

const PASS: &str = "independent audit passphrase";

fn lines(v: &[&str]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

/// (accepted, stdout) of the Python verifier.
fn python(log: &Path, public: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/verify_audit.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(log)
        .arg(public)
        .output()
        .expect("python3 is needed (.ci/run installs the cryptography package)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.starts_with("OK") || stdout.starts_with("FAIL"),
        "the Python verifier did not run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

/// (accepted, stdout) of `vhsm-admin audit verify`.
fn rust(admin: &Admin, log: &Path, public: &Path) -> (bool, String) {
    let r = admin
        .run(
            &[
                "audit",
                "verify",
                "--log",
                log.to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    (r.code == 0, format!("{}{}", r.stdout, r.stderr))
}

#[test]
fn the_rust_and_the_python_verifier_agree_on_good_and_tampered_logs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = Command::new(bin_path("vhsm-admin"))
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(out.status.success());
    let node = VhsmdProc::start(dir.path(), &pki, "vhsm-1").unwrap();
    let admin = Admin::new(&node.endpoint(), &pki);
    admin
        .ok(&["init", "--passphrase"], &lines(&[PASS, PASS]))
        .unwrap();
    // A sealed-time record (unsigned), then a signed session.
    assert_ne!(admin.run(&["unseal"], &lines(&["wrong"])).unwrap().code, 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();
    admin
        .ok(&["key", "create", "k1", "--label", "team=payments"], "")
        .unwrap();
    admin.ok(&["key", "rotate", "k1"], "").unwrap();
    admin.ok(&["key", "disable", "k1"], "").unwrap();
    admin.ok(&["key", "create", "k2"], "").unwrap();
    admin.ok(&["seal", "--yes"], "").unwrap();
    admin.ok(&["unseal"], &lines(&[PASS])).unwrap();

    let log = dir.path().join("audit.jsonl");
    admin
        .ok(&["audit", "export", "--out", log.to_str().unwrap()], "")
        .unwrap();
    let public = dir.path().join("audit.jsonl.pub");
    let (ok_rs, out_rs) = rust(&admin, &log, &public);
    let (ok_py, out_py) = python(&log, &public);
    assert!(ok_rs && ok_py, "rust: {out_rs}\npython: {out_py}");
    let head_hash = out_py.split_whitespace().last().unwrap().to_string();
    assert!(
        out_rs.contains(&head_hash),
        "the verifiers disagree on the head: rust {out_rs} python {out_py}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |event: &str| {
        records
            .iter()
            .position(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} record"))
    };
    type Tamper = Box<dyn Fn(&mut Vec<serde_json::Value>)>;
    let disable = find("key.disable");
    let create = find("key.create");
    let rejected = find("unseal.rejected");
    let cases: Vec<(&str, Tamper)> = vec![
        (
            "edit an event",
            Box::new(move |r| r[disable]["event"] = "key.enable".into()),
        ),
        (
            "edit a detail",
            Box::new(move |r| r[create]["details"]["key_id"] = "other".into()),
        ),
        (
            "edit an unsigned record",
            Box::new(move |r| r[rejected]["actor"] = "nobody".into()),
        ),
        ("delete a record", Box::new(move |r| drop(r.remove(create)))),
        (
            "swap two records",
            Box::new(move |r| r.swap(create, create + 1)),
        ),
        (
            "strip a signature",
            Box::new(move |r| {
                r[create].as_object_mut().unwrap().remove("signature");
            }),
        ),
        (
            "append an unsigned forgery",
            Box::new(|r| {
                let last = r.last().unwrap().clone();
                let mut forged = last.clone();
                forged["seq"] = (last["seq"].as_u64().unwrap() + 1).into();
                forged["event"] = "key.destroy".into();
                forged.as_object_mut().unwrap().remove("signature");
                // The link is right: hash the last record as the Rust code would.
                let rec: vhsm_audit::AuditRecord =
                    serde_json::from_value(last).expect("record parses");
                forged["prev_hash"] = rec.hash_hex().into();
                r.push(forged);
            }),
        ),
        (
            "re-sign with another key",
            Box::new(move |r| {
                let mut rec: vhsm_audit::AuditRecord =
                    serde_json::from_value(r[disable].clone()).unwrap();
                rec.sign(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
                r[disable] = serde_json::to_value(rec).unwrap();
            }),
        ),
    ];
    for (name, tamper) in cases {
        let mut edited = records.clone();
        tamper(&mut edited);
        let path = dir.path().join("tampered.jsonl");
        let body: String = edited.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&path, body).unwrap();
        let (ok_rs, out_rs) = rust(&admin, &path, &public);
        let (ok_py, out_py) = python(&path, &public);
        assert!(
            !ok_rs && !ok_py,
            "{name}: accepted (rust {ok_rs}: {out_rs}; python {ok_py}: {out_py})"
        );
    }
}
