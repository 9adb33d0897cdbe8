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

/// A log written with a known audit key (as a compromised appliance could): its approval
/// records are checked by both verifiers against the approvers' own keys.
mod forged_approvals {
    use std::collections::{BTreeMap, BTreeSet};

    use ed25519_dalek::{Signer, SigningKey};
    use vhsm_audit::approval::{
        signed_message, ApprovalPolicy, Decision, Operation, OperationClass, ProposalStatement,
        Rule,
    };
    use vhsm_audit::{AuditRecord, GENESIS_PREV_HASH};

    use std::path::PathBuf;

    use super::*;

    const AUDIT_KEY: [u8; 32] = [7; 32];

    fn approver(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn details(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    /// (event, details) of a genuine 2-of-3 deletion: policy, proposal, two approvals, run.
    fn genuine() -> Vec<(String, BTreeMap<String, String>)> {
        let names = ["alice", "bob", "carol"];
        let approvers: BTreeMap<String, String> = names
            .iter()
            .zip(1u8..)
            .map(|(n, s)| {
                (
                    n.to_string(),
                    hex::encode(approver(s).verifying_key().as_bytes()),
                )
            })
            .collect();
        let rule = Rule {
            threshold: 2,
            approvers: names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(),
        };
        let policy = ApprovalPolicy {
            version: 1,
            approvers: approvers.clone(),
            rules: [
                (OperationClass::KeyDeletion, rule.clone()),
                (OperationClass::PolicyChange, rule),
            ]
            .into_iter()
            .collect(),
        };
        let statement = ProposalStatement {
            store_id: "ab".repeat(16),
            proposal_id: "0123456789abcdef0123456789abcdef".into(),
            policy_version: 1,
            operation: Operation::ScheduleKeyDeletion {
                key_id: "payments".into(),
                waiting_days: 7,
            },
            proposer: "admin".into(),
            created_at_ms: 1_000,
            expires_at_ms: 2_000,
        };
        let id = statement.proposal_id.clone();
        let json = statement.canonical_json();
        let approval = |name: &str, seed: u8| {
            let sig = approver(seed).sign(&signed_message(Decision::Approve, &statement));
            details(&[
                ("proposal_id", id.clone()),
                ("approver", name.into()),
                ("approver_key", approvers[name].clone()),
                ("signature", hex::encode(sig.to_bytes())),
                ("statement", json.clone()),
            ])
        };
        vec![
            (
                "approval.policy_set".into(),
                details(&[("version", "1".into()), ("policy", policy.to_json())]),
            ),
            (
                "approval.proposed".into(),
                details(&[
                    ("proposal_id", id.clone()),
                    ("class", "key_deletion".into()),
                    ("threshold", "2".into()),
                    ("statement", json.clone()),
                ]),
            ),
            ("approval.approved".into(), approval("alice", 1)),
            ("approval.approved".into(), approval("carol", 3)),
            (
                "approval.executed".into(),
                details(&[
                    ("proposal_id", id.clone()),
                    ("class", "key_deletion".into()),
                    ("approvers", "alice,carol".into()),
                ]),
            ),
        ]
    }

    /// Chains and signs the records with the audit key, and writes log and public key.
    fn write(dir: &Path, events: &[(String, BTreeMap<String, String>)]) -> (PathBuf, PathBuf) {
        let key = SigningKey::from_bytes(&AUDIT_KEY);
        let mut prev = GENESIS_PREV_HASH.to_string();
        let mut body = String::new();
        for (i, (event, d)) in events.iter().enumerate() {
            let seq = i as u64 + 1;
            let mut rec =
                AuditRecord::new(seq, prev, 1_000 + seq, event.as_str(), "admin", d.clone());
            rec.sign(&key);
            prev = rec.hash_hex();
            body.push_str(&serde_json::to_string(&rec).unwrap());
            body.push('\n');
        }
        let log = dir.join("forged.jsonl");
        let public = dir.join("forged.jsonl.pub");
        std::fs::write(&log, body).unwrap();
        std::fs::write(&public, hex::encode(key.verifying_key().as_bytes())).unwrap();
        (log, public)
    }

    #[test]
    fn both_verifiers_check_approver_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let offline = Admin::new("https://127.0.0.1:1", dir.path());
        let (log, public) = write(dir.path(), &genuine());
        let (ok_rs, out_rs) = rust(&offline, &log, &public);
        let (ok_py, out_py) = python(&log, &public);
        assert!(ok_rs && ok_py, "rust: {out_rs}\npython: {out_py}");
        assert!(
            out_rs.contains("2 approver signature(s) checked"),
            "{out_rs}"
        );
        assert_eq!(out_py.split_whitespace().nth(3), Some("2"), "{out_py}");

        type Forgery = fn(&mut Vec<(String, BTreeMap<String, String>)>);
        let forgeries: [(&str, Forgery); 4] = [
            ("carol's approval signed by alice", |e| {
                let alice = e[2].1["signature"].clone();
                e[3].1.insert("signature".into(), alice);
            }),
            ("an approval by an unregistered key", |e| {
                let stranger = approver(9);
                let statement =
                    ProposalStatement::from_canonical_json(&e[3].1["statement"]).unwrap();
                let sig = stranger.sign(&signed_message(Decision::Approve, &statement));
                let d = &mut e[3].1;
                d.insert(
                    "approver_key".into(),
                    hex::encode(stranger.verifying_key().as_bytes()),
                );
                d.insert("signature".into(), hex::encode(sig.to_bytes()));
            }),
            ("a rejection recorded as an approval", |e| {
                let statement =
                    ProposalStatement::from_canonical_json(&e[3].1["statement"]).unwrap();
                let sig = approver(3).sign(&signed_message(Decision::Reject, &statement));
                e[3].1
                    .insert("signature".into(), hex::encode(sig.to_bytes()));
            }),
            ("an execution naming an approval not in the log", |e| {
                e[4].1.insert("approvers".into(), "alice,bob".into());
            }),
        ];
        for (name, forge) in forgeries {
            let mut events = genuine();
            forge(&mut events);
            let (log, public) = write(dir.path(), &events);
            let (ok_rs, out_rs) = rust(&offline, &log, &public);
            let (ok_py, out_py) = python(&log, &public);
            assert!(
                !ok_rs && !ok_py,
                "{name}: accepted (rust {ok_rs}: {out_rs}; python {ok_py}: {out_py})"
            );
        }
    }
}
