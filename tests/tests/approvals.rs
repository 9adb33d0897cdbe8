//! Quorum approval end to end, on the real vhsmd and vhsm-admin: a 2-of-3 policy blocks a single
//! operator (key commands, membership, the policy itself); two approvals execute a deletion once;
//! tampered, replayed, misattributed and duplicate approvals are refused and change nothing; an
//! expired proposal does nothing; `audit verify` checks the approver signatures.
//!
//! Two approvers use keys made by `vhsm-admin approval approver new`; the third (carol) is made
//! here with ed25519-dalek and signs the documented message format itself, so the appliance's
//! verification is checked against an independent signer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use tonic::Code;
use vhsm_e2e::{grpc, Admin, Appliance, ApplianceOptions};
use vhsm_proto::v1::{DecideProposalRequest, GetProposalRequest, Reason};

const APPROVER_PASSPHRASE: &str = "approver passphrase 1";

/// `vhsm-admin approval approver new` for `name` in `dir`.
fn new_approver(admin: &Admin, dir: &Path, name: &str) {
    let out = admin
        .ok(
            &[
                "approval",
                "approver",
                "new",
                "--name",
                name,
                "--out-dir",
                dir.to_str().unwrap(),
            ],
            &format!("{APPROVER_PASSPHRASE}\n"),
        )
        .unwrap();
    assert!(out.contains("public key"), "{out}");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.join(format!("{name}.key"))), 0o600);
    assert_eq!(mode(dir.join(format!("{name}.pub"))), 0o644);
}

/// Carol: an approver whose key and public file are made here, per the documented format.
fn carol(dir: &Path) -> SigningKey {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let public = json!({
        "format": "vhsm-approver-pub-v1",
        "name": "carol",
        "public_key": hex::encode(key.verifying_key().as_bytes()),
    });
    std::fs::write(dir.join("carol.pub"), public.to_string()).unwrap();
    key
}

/// The documented signed message: "vhsm-approval-v1\n" || decision || "\n" || statement.
fn carol_signs(key: &SigningKey, decision: &str, statement: &str) -> String {
    let message = format!("vhsm-approval-v1\n{decision}\n{statement}");
    hex::encode(key.sign(message.as_bytes()).to_bytes())
}

fn set_policy(admin: &Admin, dir: &Path, rule: &str) -> Value {
    let pubs: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| dir.join(format!("{n}.pub")).to_str().unwrap().to_owned())
        .collect();
    admin
        .json(
            &[
                "approval",
                "policy",
                "set",
                "--approver",
                &pubs[0],
                "--approver",
                &pubs[1],
                "--approver",
                &pubs[2],
                "--rule",
                rule,
            ],
            "",
        )
        .unwrap()
}

/// `approval approve|reject ID --key NAME.key --yes`, as an approver holding only an auditor
/// certificate (the signature, not the certificate, authorizes).
fn decide(
    app: &Appliance,
    dir: &Path,
    verb: &str,
    id: &str,
    name: &str,
) -> vhsm_e2e::admin::AdminRun {
    let key = dir.join(format!("{name}.key"));
    let pki = app.pki.to_str().unwrap();
    app.admin(0)
        .run(
            &[
                "--cert",
                &format!("{pki}/auditor.crt"),
                "--key",
                &format!("{pki}/auditor.key"),
                "approval",
                verb,
                id,
                "--approver-key",
                key.to_str().unwrap(),
                "--yes",
                "--output",
                "json",
            ],
            &format!("{APPROVER_PASSPHRASE}\n"),
        )
        .unwrap()
}

fn key_state(admin: &Admin, id: &str) -> String {
    admin.json(&["key", "show", id], "").unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn propose(admin: &Admin, args: &[&str]) -> String {
    let mut all = vec!["approval", "propose"];
    all.extend_from_slice(args);
    let p = admin.json(&all, "").unwrap();
    assert_eq!(p["state"], "pending", "{p}");
    p["proposal_id"].as_str().unwrap().to_owned()
}

fn refused_reason(status: &tonic::Status) -> Reason {
    vhsm_proto::reason_of(status)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An appliance holding `keys`, with approvers alice and bob (made by vhsm-admin) and carol
/// (made here) in `DIR/approvers`, under a 2-of-3 policy for every class.
fn guarded_appliance(keys: &[&str]) -> (Appliance, PathBuf, SigningKey) {
    let app = Appliance::start(&ApplianceOptions {
        key_ids: keys.iter().map(|k| k.to_string()).collect(),
        ..ApplianceOptions::default()
    })
    .unwrap();
    let admin = app.admin(0);
    let dir = app.dir.path().join("approvers");
    new_approver(&admin, &dir, "alice");
    new_approver(&admin, &dir, "bob");
    let carol_key = carol(&dir);
    let policy = set_policy(&admin, &dir, "all=2:alice,bob,carol");
    assert_eq!(
        policy["approvers"].as_object().unwrap().len(),
        3,
        "{policy}"
    );
    assert_eq!(policy["rules"]["key_deletion"]["threshold"], 2, "{policy}");
    (app, dir, carol_key)
}

#[test]
fn two_of_three_blocks_one_operator_and_two_approvals_execute_once() {
    let (app, dir, carol_key) = guarded_appliance(&["payments", "ledger"]);
    let admin = app.admin(0);

    // One operator with an admin certificate can no longer do any guarded operation.
    for args in [
        vec!["key", "schedule-deletion", "payments", "--days", "7"],
        vec!["key", "disable", "payments"],
        vec!["cluster", "remove-node", "--raft-id", "1"],
    ] {
        let r = admin.run(&args, "").unwrap();
        assert_eq!(r.code, 7, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("approval"), "{args:?}: {}", r.stderr);
    }
    let pubs = dir.join("alice.pub");
    let r = admin
        .run(
            &[
                "approval",
                "policy",
                "set",
                "--approver",
                pubs.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
    assert_eq!(
        r.code, 7,
        "a guarded policy was replaced directly: {}",
        r.stderr
    );
    assert_eq!(key_state(&admin, "payments"), "ENABLED");

    // The operator proposes; the review shows the consequence.
    let id = propose(&admin, &["delete-key", "payments", "--days", "7"]);
    let shown = admin.ok(&["approval", "show", &id], "").unwrap();
    assert!(shown.contains("0 of 2 approvals"), "{shown}");
    assert!(shown.contains("payments"), "{shown}");

    let rt = runtime();
    let endpoint = app.nodes[0].endpoint();
    let mut grpc_admin = rt.block_on(grpc::admin(&endpoint, &app.pki)).unwrap();
    let statement = rt
        .block_on(grpc_admin.get_proposal(GetProposalRequest {
            proposal_id: id.clone(),
        }))
        .unwrap()
        .into_inner()
        .proposal
        .unwrap()
        .statement_json;
    let mut decider = grpc_admin.clone();
    let mut send = |proposal: &str, approver: &str, decision: &str, signature: String| {
        rt.block_on(decider.decide_proposal(DecideProposalRequest {
            proposal_id: proposal.to_owned(),
            approver: approver.to_owned(),
            decision: decision.to_owned(),
            signature,
        }))
    };

    // Tampered: carol signs a statement with a longer waiting period; misattributed: carol's
    // valid signature sent as bob's; wrong decision: her signature of "reject" sent as approve.
    let tampered = statement.replace("\"waiting_days\":7", "\"waiting_days\":30");
    assert_ne!(tampered, statement);
    for (approver, decision, sig) in [
        (
            "carol",
            "approve",
            carol_signs(&carol_key, "approve", &tampered),
        ),
        (
            "bob",
            "approve",
            carol_signs(&carol_key, "approve", &statement),
        ),
        (
            "carol",
            "approve",
            carol_signs(&carol_key, "reject", &statement),
        ),
        (
            "mallory",
            "approve",
            carol_signs(&carol_key, "approve", &statement),
        ),
    ] {
        let e = send(&id, approver, decision, sig).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{approver}: {e:?}");
        assert_eq!(refused_reason(&e), Reason::ApprovalRefused);
    }

    // Alice approves through the CLI with an auditor certificate: 1 of 2, nothing runs yet.
    let r = decide(&app, &dir, "approve", &id, "alice");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["executed"], false, "{out}");
    assert_eq!(out["proposal"]["approvals"], 1, "{out}");
    assert!(
        r.stderr.contains("payments"),
        "the review was not shown: {}",
        r.stderr
    );
    assert_eq!(key_state(&admin, "payments"), "ENABLED");

    // Alice again: refused, still one approval.
    let r = decide(&app, &dir, "approve", &id, "alice");
    assert_eq!(r.code, 4, "a second approval by alice: {}", r.stderr);

    // Alice's signature replayed on another proposal is refused.
    let other = propose(&admin, &["disable-key", "ledger"]);
    let listed = rt
        .block_on(grpc_admin.get_proposal(GetProposalRequest {
            proposal_id: id.clone(),
        }))
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(listed.signoffs[0].approver, "alice");
    let replayed = listed.signoffs[0].signature.clone();
    let e = send(&other, "alice", "approve", replayed).unwrap_err();
    assert_eq!(refused_reason(&e), Reason::ApprovalRefused, "{e:?}");
    assert_eq!(key_state(&admin, "ledger"), "ENABLED");

    // Carol's genuine approval is the second: the deletion is scheduled, once.
    let done = send(
        &id,
        "carol",
        "approve",
        carol_signs(&carol_key, "approve", &statement),
    )
    .unwrap()
    .into_inner();
    assert!(done.executed);
    assert_eq!(done.proposal.unwrap().state, "executed");
    assert_eq!(key_state(&admin, "payments"), "PENDING_DELETION");
    let due = admin.json(&["key", "show", "payments"], "").unwrap()["deletion_due_at_ms"].clone();

    // Bob comes late: the proposal is closed and nothing runs a second time.
    let r = decide(&app, &dir, "approve", &id, "bob");
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(
        admin.json(&["key", "show", "payments"], "").unwrap()["deletion_due_at_ms"],
        due
    );

    // An approved membership change runs in the daemon (and its refusal by the cluster is
    // reported): raft id 99 is not a member.
    let membership = propose(&admin, &["remove-node", "--raft-id", "99"]);
    assert_eq!(decide(&app, &dir, "approve", &membership, "alice").code, 0);
    let r = decide(&app, &dir, "approve", &membership, "bob");
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("approved membership change executed but refused"),
        "{}",
        r.stderr
    );

    // The audit chain holds every step, and the offline verifier checks the signatures.
    let log = app.dir.path().join("audit.jsonl");
    admin
        .ok(&["audit", "export", "--out", log.to_str().unwrap()], "")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!(count("approval.policy_set"), 1);
    assert_eq!(count("approval.proposed"), 3);
    assert_eq!(count("approval.executed"), 2);
    let deletions: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "key.schedule_deletion" && r["details"]["key_id"] == "payments")
        .collect();
    assert_eq!(deletions.len(), 1, "the deletion ran more than once");
    let pub_file = format!("{}.pub", log.to_str().unwrap());
    let verified = Admin::new("https://127.0.0.1:1", &app.pki)
        .json(
            &[
                "audit",
                "verify",
                "--log",
                log.to_str().unwrap(),
                "--public-key",
                &pub_file,
            ],
            "",
        )
        .unwrap();
    assert_eq!(verified["approvals"], 4, "{verified}");
}

#[test]
fn an_expired_proposal_does_nothing() {
    let (app, dir, _) = guarded_appliance(&["ledger"]);
    let admin = app.admin(0);

    let id = propose(&admin, &["--ttl-secs", "1", "disable-key", "ledger"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for name in ["alice", "bob"] {
        let r = decide(&app, &dir, "approve", &id, name);
        assert_eq!(r.code, 7, "{name}: {}", r.stderr);
    }
    assert_eq!(key_state(&admin, "ledger"), "ENABLED");
    let listed = admin.json(&["approval", "list"], "").unwrap();
    assert_eq!(listed[0]["state"], "expired", "{listed}");
    assert_eq!(listed[0]["approvals"], 0, "{listed}");
}

#[test]
fn a_rejection_closes_and_a_policy_change_is_itself_approved() {
    let (app, dir, _) = guarded_appliance(&["ledger"]);
    let admin = app.admin(0);
    admin.ok(&["key", "rotate", "ledger"], "").unwrap();

    // Raising the minimum decryption version is guarded; lowering it is not.
    let r = admin
        .run(&["key", "min-decryption-version", "ledger", "2"], "")
        .unwrap();
    assert_eq!(r.code, 7, "{}", r.stderr);
    let id = propose(&admin, &["min-decryption-version", "ledger", "--to", "2"]);
    let shown = admin.ok(&["approval", "show", &id], "").unwrap();
    assert!(shown.contains("version 1 of key ledger"), "{shown}");

    // One rejection closes it for good: a later approval changes nothing.
    let r = decide(&app, &dir, "reject", &id, "bob");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["proposal"]["state"], "rejected", "{out}");
    assert_eq!(decide(&app, &dir, "approve", &id, "alice").code, 7);
    let key = admin.json(&["key", "show", "ledger"], "").unwrap();
    assert_eq!(key["min_decryption_version"], 1, "{key}");

    // A new policy (alice and bob only, 2 of 2) needs two approvals under the old one.
    let alice = dir.join("alice.pub");
    let bob = dir.join("bob.pub");
    let change = propose(
        &admin,
        &[
            "set-policy",
            "--approver",
            alice.to_str().unwrap(),
            "--approver",
            bob.to_str().unwrap(),
            "--rule",
            "all=2:alice,bob",
        ],
    );
    let pending = propose(&admin, &["disable-key", "ledger"]);
    assert_eq!(decide(&app, &dir, "approve", &change, "alice").code, 0);
    let r = decide(&app, &dir, "approve", &change, "bob");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(out["executed"], true, "{out}");
    let policy = admin.json(&["approval", "policy", "show"], "").unwrap();
    assert_eq!(
        policy["approvers"].as_object().unwrap().len(),
        2,
        "{policy}"
    );
    assert_eq!(policy["version"], 2, "{policy}");
    // The proposal made under the old policy went stale and can never run.
    assert_eq!(decide(&app, &dir, "approve", &pending, "alice").code, 7);
    let listed = admin.json(&["approval", "list", "--pending"], "").unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    assert_eq!(key_state(&admin, "ledger"), "ENABLED");
}
