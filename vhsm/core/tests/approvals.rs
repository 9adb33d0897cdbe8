//! Quorum approval in the core: guarded operations refused directly, proposals executed once on
//! the M-th approval, tampered / replayed / foreign / duplicate approvals refused, expiry,
//! staleness after a policy or key change, rejection, and every step in the signed audit chain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use vhsm_core::approval::{
    signed_message, ApprovalPolicy, Decision, Operation, OperationClass, ProposalStatement, Rule,
};
use vhsm_core::{Error, KeyState, ProposalState, Reason, Usage, Vhsm};

const DAY_MS: u64 = 86_400_000;

fn approver(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// alice, bob, carol; `classes` need 2 of the 3 (policy_change always guarded).
fn policy(classes: &[OperationClass]) -> ApprovalPolicy {
    let mut approvers = BTreeMap::new();
    for (name, seed) in [("alice", 1u8), ("bob", 2), ("carol", 3)] {
        approvers.insert(
            name.to_string(),
            hex::encode(approver(seed).verifying_key().to_bytes()),
        );
    }
    let rule = Rule {
        threshold: 2,
        approvers: approvers.keys().cloned().collect::<BTreeSet<_>>(),
    };
    let mut rules: BTreeMap<OperationClass, Rule> =
        classes.iter().map(|c| (*c, rule.clone())).collect();
    rules.insert(OperationClass::PolicyChange, rule);
    ApprovalPolicy {
        version: 0,
        approvers,
        rules,
    }
}

fn seed_of(name: &str) -> u8 {
    match name {
        "alice" => 1,
        "bob" => 2,
        "carol" => 3,
        _ => 9,
    }
}

fn sign(name: &str, decision: Decision, statement_json: &str) -> String {
    let s = ProposalStatement::from_canonical_json(statement_json).unwrap();
    hex::encode(
        approver(seed_of(name))
            .sign(&signed_message(decision, &s))
            .to_bytes(),
    )
}

fn id_of(statement_json: &str) -> String {
    ProposalStatement::from_canonical_json(statement_json)
        .unwrap()
        .proposal_id
}

fn guarded_store(classes: &[OperationClass]) -> (std::sync::Arc<TestClock>, Vhsm) {
    let (_s, clock, v) = unsealed();
    v.create_key(new_key("k1", &[Usage::Encrypt, Usage::Decrypt]), "admin")
        .unwrap();
    v.set_approval_policy(policy(classes), "admin").unwrap();
    (clock, v)
}

fn approve(v: &Vhsm, name: &str, json: &str) -> Result<vhsm_core::Decided, Error> {
    v.decide(
        &id_of(json),
        name,
        Decision::Approve,
        &sign(name, Decision::Approve, json),
        "admin",
    )
}

#[test]
fn no_policy_keeps_the_single_operator() {
    let (_s, _c, v) = unsealed();
    v.create_key(new_key("k1", &[Usage::Encrypt]), "admin")
        .unwrap();
    assert_eq!(v.approval_policy().unwrap(), ApprovalPolicy::default());
    v.disable_key("k1", "admin").unwrap();
    v.schedule_key_deletion("k1", 7, "admin").unwrap();
    let e = v
        .propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            None,
            "admin",
        )
        .unwrap_err();
    assert!(matches!(e, Error::NotGuarded("key_disable")), "{e}");
}

#[test]
fn two_of_three_blocks_one_operator_and_executes_exactly_once() {
    let (_c, v) = guarded_store(&[OperationClass::KeyDeletion]);
    let e = v.schedule_key_deletion("k1", 7, "admin").unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRequired);
    assert!(e.to_string().contains("key_deletion needs 2"), "{e}");
    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);
    // Unguarded classes still work alone.
    v.disable_key("k1", "admin").unwrap();
    v.enable_key("k1", "admin").unwrap();

    let p = v
        .propose(
            Operation::ScheduleKeyDeletion {
                key_id: "k1".into(),
                waiting_days: 7,
            },
            None,
            "operator-1",
        )
        .unwrap();
    assert_eq!(p.state, ProposalState::Pending);
    assert_eq!(p.threshold, 2);
    let first = approve(&v, "alice", &p.statement_json).unwrap();
    assert_eq!(first.proposal.state, ProposalState::Pending);
    assert!(first.key.is_none());
    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);

    let second = approve(&v, "carol", &p.statement_json).unwrap();
    assert_eq!(second.proposal.state, ProposalState::Executed);
    let key = second.key.unwrap();
    assert_eq!(key.state, KeyState::PendingDeletion);
    assert_eq!(
        v.describe_key("k1").unwrap().state,
        KeyState::PendingDeletion
    );

    // A third approval (bob's, valid) cannot run it again.
    let e = approve(&v, "bob", &p.statement_json).unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalClosed);
    assert!(e.to_string().contains("executed"), "{e}");

    // The audit chain holds each step with the approvers, signed.
    let records = v.audit_records(1, 10_000).unwrap();
    let events: Vec<&str> = records.iter().map(|r| r.event.as_str()).collect();
    let tail = &events[events.len() - 5..];
    assert_eq!(
        tail,
        [
            "approval.proposed",
            "approval.approved",
            "approval.approved",
            "approval.executed",
            "key.schedule_deletion"
        ]
    );
    let executed = &records[records.len() - 2];
    assert_eq!(executed.details["approvers"], "alice,carol");
    let deletion = records.last().unwrap();
    assert_eq!(deletion.details["proposal_id"], id_of(&p.statement_json));
    assert_eq!(deletion.actor, "admin");
    let pk = v.audit_public_key().unwrap();
    let verified = vhsm_audit::verify_chain(&records, &pk, None).unwrap();
    assert_eq!(verified.approvals, 2);
}

#[test]
fn tampered_replayed_foreign_and_duplicate_approvals_change_nothing() {
    let (_c, v) = guarded_store(&[OperationClass::KeyDeletion]);
    let op = Operation::ScheduleKeyDeletion {
        key_id: "k1".into(),
        waiting_days: 7,
    };
    let p1 = v.propose(op.clone(), None, "admin").unwrap();
    let p2 = v.propose(op, None, "admin").unwrap();
    let id1 = id_of(&p1.statement_json);
    let id2 = id_of(&p2.statement_json);

    // Tampered: one bit of alice's signature flipped.
    let mut sig = hex::decode(sign("alice", Decision::Approve, &p1.statement_json)).unwrap();
    sig[10] ^= 1;
    let e = v
        .decide(&id1, "alice", Decision::Approve, &hex::encode(sig), "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRefused);

    // A signature over different parameters (30 days instead of 7).
    let mut other = ProposalStatement::from_canonical_json(&p1.statement_json).unwrap();
    other.operation = Operation::ScheduleKeyDeletion {
        key_id: "k1".into(),
        waiting_days: 30,
    };
    let sig = sign("alice", Decision::Approve, &other.canonical_json());
    let e = v
        .decide(&id1, "alice", Decision::Approve, &sig, "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRefused);

    // Replayed: alice's valid approval of p1 presented for p2.
    let sig1 = sign("alice", Decision::Approve, &p1.statement_json);
    v.decide(&id1, "alice", Decision::Approve, &sig1, "admin")
        .unwrap();
    let e = v
        .decide(&id2, "alice", Decision::Approve, &sig1, "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRefused);
    // ... or for p1 again: counted once.
    let e = v
        .decide(&id1, "alice", Decision::Approve, &sig1, "admin")
        .unwrap_err();
    assert!(e.to_string().contains("already signed"), "{e}");
    // A signed rejection is not an approval.
    let rej = sign("bob", Decision::Reject, &p1.statement_json);
    let e = v
        .decide(&id1, "bob", Decision::Approve, &rej, "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRefused);
    // Someone who is not an approver, and alice's key under bob's name.
    let e = v
        .decide(&id1, "mallory", Decision::Approve, &sig1, "admin")
        .unwrap_err();
    assert!(e.to_string().contains("not an approver"), "{e}");
    let e = v
        .decide(&id1, "bob", Decision::Approve, &sig1, "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRefused);

    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);
    let p1_now = v.proposal(&id1).unwrap();
    assert_eq!(p1_now.state, ProposalState::Pending);
    assert_eq!(p1_now.approvals(), 1);
    assert_eq!(v.proposal(&id2).unwrap().approvals(), 0);
    let e = v.proposal(&"0".repeat(32)).unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalNotFound);
    let e = v.proposal("../../etc").unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalNotFound);
}

#[test]
fn an_expired_proposal_does_nothing() {
    let (clock, v) = guarded_store(&[OperationClass::KeyDisable]);
    let p = v
        .propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            Some(3_600_000),
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &p.statement_json).unwrap();
    clock.advance(3_600_001);
    assert_eq!(
        v.proposal(&id_of(&p.statement_json)).unwrap().state,
        ProposalState::Expired
    );
    let e = approve(&v, "bob", &p.statement_json).unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalClosed);
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);
    let last = v.audit_records(1, 10_000).unwrap().pop().unwrap();
    assert_eq!(last.event, "approval.expired");
    // TTLs outside (0, max] are refused.
    for ttl in [0, 8 * DAY_MS] {
        let e = v
            .propose(
                Operation::DisableKey {
                    key_id: "k1".into(),
                },
                Some(ttl),
                "admin",
            )
            .unwrap_err();
        assert_eq!(e, Error::InvalidArgument("ttl_seconds"));
    }
}

#[test]
fn a_rejection_closes_the_proposal() {
    let (_c, v) = guarded_store(&[OperationClass::KeyDisable]);
    let p = v
        .propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            None,
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &p.statement_json).unwrap();
    let id = id_of(&p.statement_json);
    let d = v
        .decide(
            &id,
            "bob",
            Decision::Reject,
            &sign("bob", Decision::Reject, &p.statement_json),
            "admin",
        )
        .unwrap();
    assert_eq!(d.proposal.state, ProposalState::Rejected);
    let e = approve(&v, "carol", &p.statement_json).unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalClosed);
    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);
}

#[test]
fn raising_the_minimum_is_guarded_lowering_is_not_and_staleness_is_caught() {
    let (_c, v) = guarded_store(&[OperationClass::MinDecryptionVersion]);
    v.rotate_key("k1", "admin").unwrap();
    v.rotate_key("k1", "admin").unwrap();
    let e = v.set_min_decryption_version("k1", 3, "admin").unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRequired);
    let p = v
        .propose(
            Operation::RaiseMinDecryptionVersion {
                key_id: "k1".into(),
                from: 99, // fixed by the appliance from the key's state
                to: 3,
            },
            None,
            "admin",
        )
        .unwrap();
    let s = ProposalStatement::from_canonical_json(&p.statement_json).unwrap();
    assert_eq!(
        s.operation,
        Operation::RaiseMinDecryptionVersion {
            key_id: "k1".into(),
            from: 1,
            to: 3
        }
    );
    assert!(s
        .operation
        .consequences()
        .contains("versions 1-2 of key k1"));
    approve(&v, "alice", &p.statement_json).unwrap();
    let done = approve(&v, "bob", &p.statement_json).unwrap();
    assert_eq!(done.key.unwrap().min_decryption_version, 3);
    // Lowering needs no approval; a proposal to lower is refused.
    v.set_min_decryption_version("k1", 2, "admin").unwrap();
    let e = v
        .propose(
            Operation::RaiseMinDecryptionVersion {
                key_id: "k1".into(),
                from: 0,
                to: 1,
            },
            None,
            "admin",
        )
        .unwrap_err();
    assert_eq!(e, Error::InvalidArgument("min_decryption_version"));
    // A proposal made at min 2, then the minimum moves: stale, nothing runs.
    let p = v
        .propose(
            Operation::RaiseMinDecryptionVersion {
                key_id: "k1".into(),
                from: 0,
                to: 3,
            },
            None,
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &p.statement_json).unwrap();
    v.set_min_decryption_version("k1", 1, "admin").unwrap();
    let e = approve(&v, "bob", &p.statement_json).unwrap_err();
    assert_eq!(e.reason(), Reason::ProposalClosed);
    assert!(e.to_string().contains("stale"), "{e}");
    assert_eq!(v.describe_key("k1").unwrap().min_decryption_version, 1);
}

#[test]
fn the_policy_guards_itself_and_a_change_makes_older_proposals_stale() {
    let (_c, v) = guarded_store(&[OperationClass::KeyDeletion]);
    assert_eq!(v.approval_policy().unwrap().version, 1);
    let e = v
        .set_approval_policy(ApprovalPolicy::default(), "admin")
        .unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRequired);

    let deletion = v
        .propose(
            Operation::ScheduleKeyDeletion {
                key_id: "k1".into(),
                waiting_days: 7,
            },
            None,
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &deletion.statement_json).unwrap();

    let p = v
        .propose(
            Operation::SetPolicy {
                policy: ApprovalPolicy::default(),
            },
            None,
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &p.statement_json).unwrap();
    approve(&v, "bob", &p.statement_json).unwrap();
    let now = v.approval_policy().unwrap();
    assert!(now.rules.is_empty());
    assert_eq!(now.version, 2);
    // The deletion proposal was made under version 1: stale.
    let e = approve(&v, "bob", &deletion.statement_json).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    assert_eq!(v.describe_key("k1").unwrap().state, KeyState::Enabled);
    // And the single operator is back.
    v.schedule_key_deletion("k1", 7, "admin").unwrap();
}

#[test]
fn invalid_policies_are_refused_and_change_nothing() {
    let (_s, _c, v) = unsealed();
    let mut p = policy(&[OperationClass::KeyDeletion]);
    p.rules.remove(&OperationClass::PolicyChange);
    let e = v.set_approval_policy(p, "admin").unwrap_err();
    assert_eq!(e.reason(), Reason::InvalidArgument);
    assert!(e.to_string().contains("policy_change"), "{e}");
    assert_eq!(v.approval_policy().unwrap(), ApprovalPolicy::default());
}

#[test]
fn the_policy_and_proposals_survive_a_reopen_and_are_sealed() {
    let (storage, clock, v) = unsealed();
    v.create_key(new_key("k1", &[Usage::Encrypt]), "admin")
        .unwrap();
    v.set_approval_policy(policy(&[OperationClass::KeyDisable]), "admin")
        .unwrap();
    let p = v
        .propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            None,
            "admin",
        )
        .unwrap();
    approve(&v, "alice", &p.statement_json).unwrap();
    drop(v);
    let v = open(&storage, &clock);
    assert_eq!(
        v.approval_needed(OperationClass::KeyDisable).unwrap_err(),
        Error::Sealed
    );
    v.unseal_with_passphrase(&pw(PASS), "admin").unwrap();
    assert!(v.approval_needed(OperationClass::KeyDisable).unwrap());
    assert!(!v.approval_needed(OperationClass::KeyDeletion).unwrap());
    let e = v.disable_key("k1", "admin").unwrap_err();
    assert_eq!(e.reason(), Reason::ApprovalRequired);
    let done = approve(&v, "bob", &p.statement_json).unwrap();
    assert_eq!(done.key.unwrap().state, KeyState::Disabled);
    assert_eq!(v.proposals().unwrap().len(), 1);
}

#[test]
fn membership_changes_are_handed_back_once_approved() {
    let (_c, v) = guarded_store(&[OperationClass::Membership]);
    let p = v
        .propose(Operation::RemoveNode { raft_id: 3 }, None, "admin")
        .unwrap();
    assert!(approve(&v, "alice", &p.statement_json)
        .unwrap()
        .execute
        .is_none());
    let done = approve(&v, "bob", &p.statement_json).unwrap();
    assert_eq!(done.execute, Some(Operation::RemoveNode { raft_id: 3 }));
    assert_eq!(done.proposal.state, ProposalState::Executed);
    assert!(approve(&v, "carol", &p.statement_json).is_err());
}

#[test]
fn pending_proposals_are_bounded() {
    let (_c, v) = guarded_store(&[OperationClass::KeyDisable]);
    for _ in 0..32 {
        v.propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            None,
            "admin",
        )
        .unwrap();
    }
    let e = v
        .propose(
            Operation::DisableKey {
                key_id: "k1".into(),
            },
            None,
            "admin",
        )
        .unwrap_err();
    assert_eq!(e, Error::TooLarge("pending proposals"));
}
