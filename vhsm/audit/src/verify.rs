//! Offline verification of an audit chain with the audit public key only.

use ed25519_dalek::VerifyingKey;

use std::collections::{BTreeMap, BTreeSet};

use crate::approval::{verify_signature, ApprovalPolicy, Decision, ProposalStatement};
use crate::{AuditRecord, VerifyError, GENESIS_PREV_HASH};

/// What the approval records seen so far establish: the approvers registered by the newest
/// `approval.policy_set`, and for each proposal proposed in the log its threshold and the
/// approvers whose signatures verified.
#[derive(Default)]
struct ApprovalTrail {
    approvers: Option<BTreeMap<String, String>>,
    proposals: BTreeMap<String, (usize, BTreeSet<String>)>,
    checked: u64,
}

impl ApprovalTrail {
    /// Checks one record's approval facts: every approver signature verifies over the
    /// proposal it names, with the key the policy in force registered for that approver; an
    /// execution names only approvers whose approvals are in the log, at least the threshold.
    fn check(&mut self, record: &AuditRecord) -> Result<(), VerifyError> {
        let bad = |why: &'static str| VerifyError::BadApproval {
            seq: record.seq,
            why,
        };
        let field = |name: &str| record.details.get(name).map(String::as_str);
        match record.event.as_str() {
            "approval.policy_set" => {
                let policy: ApprovalPolicy = serde_json::from_str(field("policy").unwrap_or(""))
                    .map_err(|_| bad("unreadable policy"))?;
                self.approvers = Some(policy.approvers);
            }
            "approval.proposed" => {
                let statement =
                    ProposalStatement::from_canonical_json(field("statement").unwrap_or(""))
                        .map_err(|_| bad("unreadable proposal statement"))?;
                let threshold: usize = field("threshold")
                    .and_then(|t| t.parse().ok())
                    .ok_or(bad("no threshold"))?;
                self.proposals
                    .insert(statement.proposal_id, (threshold, BTreeSet::new()));
            }
            "approval.approved" | "approval.rejected" => {
                let decision = if record.event == "approval.approved" {
                    Decision::Approve
                } else {
                    Decision::Reject
                };
                let statement =
                    ProposalStatement::from_canonical_json(field("statement").unwrap_or(""))
                        .map_err(|_| bad("unreadable proposal statement"))?;
                if field("proposal_id") != Some(statement.proposal_id.as_str()) {
                    return Err(bad("signed statement is for another proposal"));
                }
                let approver = field("approver").ok_or(bad("no approver"))?;
                let key = field("approver_key").ok_or(bad("no approver key"))?;
                if let Some(registered) = &self.approvers {
                    if registered.get(approver).map(String::as_str) != Some(key) {
                        return Err(bad("approver key is not the one the policy registered"));
                    }
                }
                let signature = field("signature").ok_or(bad("no signature"))?;
                verify_signature(key, decision, &statement, signature)
                    .map_err(|_| bad("approver signature does not verify"))?;
                if decision == Decision::Approve {
                    if let Some((_, seen)) = self.proposals.get_mut(&statement.proposal_id) {
                        seen.insert(approver.to_string());
                    }
                }
                self.checked += 1;
            }
            "approval.executed" => {
                let id = field("proposal_id").ok_or(bad("no proposal id"))?;
                if let Some((threshold, seen)) = self.proposals.get(id) {
                    let named: BTreeSet<&str> = field("approvers")
                        .unwrap_or("")
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .collect();
                    if named.len() < *threshold {
                        return Err(bad("executed with fewer approvals than its threshold"));
                    }
                    if named.iter().any(|n| !seen.contains(*n)) {
                        return Err(bad("executed naming an approval that is not in the log"));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The events a sealed node can record. The audit signing key is in memory only while the
/// store is unsealed, so these are the only records that may lack a signature; every other
/// event happens only while unsealed and an unsigned one is a forgery.
pub const UNSIGNED_EVENTS: [&str; 5] = [
    "unseal.rejected",
    "unseal.share_accepted",
    "unseal.reset",
    "access.denied",
    "selftest.failed",
];

/// True if `event` may be recorded without a signature (see [`UNSIGNED_EVENTS`]).
pub fn may_be_unsigned(event: &str) -> bool {
    UNSIGNED_EVENTS.contains(&event)
}

/// Summary of a log that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Number of records checked.
    pub records: u64,
    /// How many of them carry a (valid) signature.
    pub signed: u64,
    /// Sequence number of the last record.
    pub head_seq: u64,
    /// Hex hash of the last record.
    pub head_hash: String,
    /// Records after the last signed one: chained but not yet covered by a signature (they
    /// were written while sealed; anyone could have appended them).
    pub unsigned_tail: u64,
    /// Approver signatures checked (`approval.approved` / `approval.rejected` records).
    pub approvals: u64,
}

/// Verifies a whole log from seq 1: sequence numbers contiguous from 1, each `prev_hash`
/// links to the previous record (the first to [`GENESIS_PREV_HASH`]), every present
/// signature verifies under `public_key`, and only [`UNSIGNED_EVENTS`] lack one. An unsigned
/// record is covered by the next signed
/// record through the hash chain; unsigned records after the last signed one are counted in
/// [`Verified::unsigned_tail`]. With `expected_head = Some((seq, hash))` (for instance from
/// `vhsm status`), a log that stops before `seq`, or whose record `seq` has another hash, is
/// refused: this detects truncation.
pub fn verify_chain(
    records: &[AuditRecord],
    public_key: &[u8; 32],
    expected_head: Option<(u64, &str)>,
) -> Result<Verified, VerifyError> {
    verify_suffix(records, public_key, 1, GENESIS_PREV_HASH, expected_head)
}

/// As [`verify_chain`], for a suffix of the log that starts at `first_seq` whose predecessor
/// has the (trusted) hash `prev_hash`.
pub fn verify_suffix(
    records: &[AuditRecord],
    public_key: &[u8; 32],
    first_seq: u64,
    prev_hash: &str,
    expected_head: Option<(u64, &str)>,
) -> Result<Verified, VerifyError> {
    if first_seq == 0 {
        return Err(VerifyError::InvalidStart);
    }
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| VerifyError::BadPublicKey)?;
    let Some(last) = records.last() else {
        return Err(VerifyError::Empty);
    };

    let mut prev = prev_hash.to_ascii_lowercase();
    let mut approvals = ApprovalTrail::default();
    let mut signed = 0u64;
    let mut covered = 0usize; // records up to and including the last signed one
    for (position, record) in records.iter().enumerate() {
        let expected = first_seq.saturating_add(position as u64);
        if record.seq != expected {
            return Err(VerifyError::Sequence {
                position,
                expected,
                found: record.seq,
            });
        }
        if record.prev_hash != prev {
            return Err(VerifyError::BrokenLink { seq: record.seq });
        }
        if record.signature.is_some() {
            if !record.signature_valid(&key) {
                return Err(VerifyError::BadSignature { seq: record.seq });
            }
            signed += 1;
            covered = position + 1;
        } else if !may_be_unsigned(&record.event) {
            return Err(VerifyError::UnsignedEvent {
                seq: record.seq,
                event: record.event.clone(),
            });
        }
        approvals.check(record)?;
        prev = record.hash_hex();
    }

    if let Some((head_seq, head_hash)) = expected_head {
        check_head(records, first_seq, prev_hash, head_seq, head_hash)?;
    }

    Ok(Verified {
        records: records.len() as u64,
        signed,
        head_seq: last.seq,
        head_hash: prev,
        unsigned_tail: (records.len() - covered) as u64,
        approvals: approvals.checked,
    })
}

/// Checks that the (already chain-verified) log reaches `head_seq` with hash `head_hash`.
fn check_head(
    records: &[AuditRecord],
    first_seq: u64,
    prev_hash: &str,
    head_seq: u64,
    head_hash: &str,
) -> Result<(), VerifyError> {
    let last_seq = first_seq
        .saturating_add(records.len() as u64)
        .saturating_sub(1);
    if head_seq > last_seq {
        return Err(VerifyError::Truncated {
            expected: head_seq,
            found: last_seq,
        });
    }
    let actual = if head_seq + 1 == first_seq {
        prev_hash.to_ascii_lowercase()
    } else {
        let index = head_seq
            .checked_sub(first_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| records.get(i))
            .ok_or(VerifyError::HeadMismatch { seq: head_seq })?;
        index.hash_hex()
    };
    if actual.eq_ignore_ascii_case(head_hash) {
        Ok(())
    } else {
        Err(VerifyError::HeadMismatch { seq: head_seq })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use ed25519_dalek::SigningKey;

    use super::*;

    const EVENTS: [&str; 6] = [
        "init",
        "unseal.success",
        "key.create",
        "key.rotate",
        "key.disable",
        "seal",
    ];

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42u8; 32])
    }

    fn pk() -> [u8; 32] {
        key().verifying_key().to_bytes()
    }

    /// Builds a chain of `EVENTS.len()` records; `sign(seq)` decides which are signed.
    fn chain_with(sign: impl Fn(u64) -> bool) -> Vec<AuditRecord> {
        let key = key();
        let mut out: Vec<AuditRecord> = Vec::new();
        for (i, event) in EVENTS.iter().enumerate() {
            let seq = i as u64 + 1;
            let prev = out
                .last()
                .map_or(GENESIS_PREV_HASH.to_string(), |r| r.hash_hex());
            let mut details = BTreeMap::new();
            details.insert("key_id".to_string(), format!("k{seq}"));
            // Unsigned records are what a sealed node writes.
            let event = if sign(seq) { event } else { "unseal.rejected" };
            let mut rec = AuditRecord::new(seq, prev, 1_000 + seq, event, "admin", details);
            if sign(seq) {
                rec.sign(&key);
            }
            out.push(rec);
        }
        out
    }

    fn chain() -> Vec<AuditRecord> {
        chain_with(|_| true)
    }

    #[test]
    fn signed_chain_verifies() {
        let records = chain();
        let v = verify_chain(&records, &pk(), None).unwrap();
        assert_eq!(
            v,
            Verified {
                records: 6,
                signed: 6,
                head_seq: 6,
                head_hash: records[5].hash_hex(),
                unsigned_tail: 0,
                approvals: 0,
            }
        );
    }

    #[test]
    fn chain_survives_json_lines_round_trip() {
        let records = chain();
        let text: String = records.iter().map(|r| r.to_json_line() + "\n").collect();
        let parsed = crate::parse_log(&text).unwrap();
        assert!(verify_chain(&parsed, &pk(), Some((6, &records[5].hash_hex()))).is_ok());
    }

    #[test]
    fn editing_any_field_of_any_record_is_found_at_that_record() {
        type Edit = fn(&mut AuditRecord);
        let edits: [(&str, Edit); 6] = [
            ("time_ms", |r| r.time_ms += 1),
            ("event", |r| r.event = "key.enable".into()),
            ("actor", |r| r.actor = "auditor".into()),
            ("details", |r| {
                r.details.insert("key_id".into(), "other".into());
            }),
            ("details-add", |r| {
                r.details.insert("extra".into(), "1".into());
            }),
            ("signature", |r| {
                let mut sig = r.signature.clone().unwrap().into_bytes();
                sig[10] = if sig[10] == b'0' { b'1' } else { b'0' };
                r.signature = Some(String::from_utf8(sig).unwrap());
            }),
        ];
        for (name, edit) in edits {
            for target in 0..EVENTS.len() {
                let mut records = chain();
                edit(&mut records[target]);
                let seq = target as u64 + 1;
                assert_eq!(
                    verify_chain(&records, &pk(), None).unwrap_err(),
                    VerifyError::BadSignature { seq },
                    "{name} at seq {seq}"
                );
            }
        }
    }

    #[test]
    fn editing_prev_hash_breaks_the_link() {
        let mut records = chain();
        records[3].prev_hash = "ab".repeat(32);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::BrokenLink { seq: 4 }
        );
    }

    #[test]
    fn editing_seq_is_a_sequence_error() {
        let mut records = chain();
        records[2].seq = 9;
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::Sequence {
                position: 2,
                expected: 3,
                found: 9
            }
        );
    }

    #[test]
    fn deleting_a_middle_record_is_found() {
        let mut records = chain();
        records.remove(2);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::Sequence {
                position: 2,
                expected: 3,
                found: 4
            }
        );
    }

    #[test]
    fn deleting_a_middle_record_and_renumbering_breaks_link_or_signature() {
        // An attacker without the key renumbers the rest: the next record's link is broken.
        let mut records = chain_with(|_| false);
        records.remove(2);
        for (i, r) in records.iter_mut().enumerate() {
            r.seq = i as u64 + 1;
        }
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::BrokenLink { seq: 3 }
        );
    }

    #[test]
    fn deleting_the_first_record_is_found() {
        let mut records = chain();
        records.remove(0);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::Sequence {
                position: 0,
                expected: 1,
                found: 2
            }
        );
    }

    #[test]
    fn swapping_two_records_is_found() {
        let mut records = chain();
        records.swap(1, 4);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::Sequence {
                position: 1,
                expected: 2,
                found: 5
            }
        );
    }

    #[test]
    fn inserting_a_record_is_found() {
        let mut records = chain();
        let forged = records[2].clone();
        records.insert(3, forged);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::Sequence {
                position: 3,
                expected: 4,
                found: 3
            }
        );
    }

    #[test]
    fn truncation_is_found_with_the_expected_head() {
        let full = chain();
        let head_hash = full[5].hash_hex();
        let truncated = &full[..4];
        // Without the expected head a clean prefix verifies: truncation needs the head.
        assert!(verify_chain(truncated, &pk(), None).is_ok());
        assert_eq!(
            verify_chain(truncated, &pk(), Some((6, &head_hash))).unwrap_err(),
            VerifyError::Truncated {
                expected: 6,
                found: 4
            }
        );
    }

    #[test]
    fn expected_head_must_match_the_hash() {
        let records = chain();
        assert_eq!(
            verify_chain(&records, &pk(), Some((6, &"00".repeat(32)))).unwrap_err(),
            VerifyError::HeadMismatch { seq: 6 }
        );
        // A head checkpoint earlier than the end of the log is checked at its own seq.
        let h3 = records[2].hash_hex();
        assert!(verify_chain(&records, &pk(), Some((3, &h3))).is_ok());
        assert!(verify_chain(&records, &pk(), Some((3, &h3.to_uppercase()))).is_ok());
        assert_eq!(
            verify_chain(&records, &pk(), Some((4, &h3))).unwrap_err(),
            VerifyError::HeadMismatch { seq: 4 }
        );
    }

    #[test]
    fn signature_from_another_key_is_refused() {
        let mut records = chain();
        let forger = SigningKey::from_bytes(&[7u8; 32]);
        records[4].sign(&forger);
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::BadSignature { seq: 5 }
        );
    }

    #[test]
    fn a_whole_chain_forged_with_another_key_is_refused() {
        let records = chain();
        let other = SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes();
        assert_eq!(
            verify_chain(&records, &other, None).unwrap_err(),
            VerifyError::BadSignature { seq: 1 }
        );
    }

    #[test]
    fn unsigned_records_covered_by_a_later_signature_are_accepted() {
        // Sealed period: records 2-4 unsigned, then 5 signed, then 6 unsigned.
        let records = chain_with(|seq| seq == 1 || seq == 5);
        let v = verify_chain(&records, &pk(), None).unwrap();
        assert_eq!((v.records, v.signed, v.unsigned_tail), (6, 2, 1));
        let none_signed = chain_with(|_| false);
        let v = verify_chain(&none_signed, &pk(), None).unwrap();
        assert_eq!((v.signed, v.unsigned_tail), (0, 6));
    }

    #[test]
    fn editing_an_unsigned_record_breaks_the_next_link() {
        let mut records = chain_with(|seq| seq != 3);
        records[2].actor = "mallory".into();
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::BrokenLink { seq: 4 }
        );
    }

    #[test]
    fn stripping_a_signature_off_an_unsealed_event_is_refused() {
        for target in 0..EVENTS.len() {
            let mut records = chain();
            records[target].signature = None;
            let seq = target as u64 + 1;
            assert_eq!(
                verify_chain(&records, &pk(), None).unwrap_err(),
                VerifyError::UnsignedEvent {
                    seq,
                    event: EVENTS[target].to_string()
                },
            );
        }
    }

    #[test]
    fn an_unsigned_sealed_event_in_the_tail_is_reported_as_unsigned_tail() {
        let mut records = chain_with(|seq| seq != 6);
        let v = verify_chain(&records, &pk(), None).unwrap();
        assert_eq!((v.signed, v.unsigned_tail), (5, 1));
        // A forged unsigned record of an event that needs the key is refused.
        records[5].event = "key.destroy".into();
        assert_eq!(
            verify_chain(&records, &pk(), None).unwrap_err(),
            VerifyError::UnsignedEvent {
                seq: 6,
                event: "key.destroy".into()
            }
        );
        for event in UNSIGNED_EVENTS {
            assert!(may_be_unsigned(event));
        }
        assert!(!may_be_unsigned("seal") && !may_be_unsigned("unseal"));
    }

    #[test]
    fn empty_log_is_refused() {
        assert_eq!(
            verify_chain(&[], &pk(), None).unwrap_err(),
            VerifyError::Empty
        );
    }

    #[test]
    fn invalid_public_key_is_refused() {
        let bad = (0u8..=255)
            .map(|b| {
                let mut k = [0u8; 32];
                k[0] = b;
                k[31] = 0x7f;
                k
            })
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .expect("some encoding does not decompress");
        assert_eq!(
            verify_chain(&chain(), &bad, None).unwrap_err(),
            VerifyError::BadPublicKey
        );
    }

    #[test]
    fn suffix_verifies_from_a_trusted_prev_hash() {
        let records = chain();
        let prev = records[2].hash_hex();
        let v = verify_suffix(
            &records[3..],
            &pk(),
            4,
            &prev,
            Some((6, &records[5].hash_hex())),
        )
        .unwrap();
        assert_eq!((v.records, v.head_seq), (3, 6));
        assert!(verify_suffix(&records[3..], &pk(), 4, &prev, Some((3, &prev))).is_ok());
        assert_eq!(
            verify_suffix(&records[3..], &pk(), 4, &"00".repeat(32), None).unwrap_err(),
            VerifyError::BrokenLink { seq: 4 }
        );
        assert_eq!(
            verify_suffix(&records[3..], &pk(), 3, &prev, None).unwrap_err(),
            VerifyError::Sequence {
                position: 0,
                expected: 3,
                found: 4
            }
        );
        assert_eq!(
            verify_suffix(&records, &pk(), 0, GENESIS_PREV_HASH, None).unwrap_err(),
            VerifyError::InvalidStart
        );
    }

    /// A signed log of one 1-of-2 approval: policy, proposal, alice's approval, execution.
    /// `edit(index, details)` may change a record's details before it is signed.
    fn approval_log(edit: impl Fn(usize, &mut BTreeMap<String, String>)) -> Vec<AuditRecord> {
        use crate::approval::{
            signed_message, ApprovalPolicy, Operation, OperationClass, ProposalStatement, Rule,
        };
        use ed25519_dalek::Signer;
        let alice = SigningKey::from_bytes(&[1u8; 32]);
        let bob = SigningKey::from_bytes(&[2u8; 32]);
        let hexkey = |k: &SigningKey| hex::encode(k.verifying_key().to_bytes());
        let approvers: BTreeMap<String, String> = [
            ("alice".to_string(), hexkey(&alice)),
            ("bob".to_string(), hexkey(&bob)),
        ]
        .into_iter()
        .collect();
        let rule = Rule {
            threshold: 1,
            approvers: approvers.keys().cloned().collect(),
        };
        let policy = ApprovalPolicy {
            version: 1,
            approvers,
            rules: [
                (OperationClass::PolicyChange, rule.clone()),
                (OperationClass::KeyDisable, rule),
            ]
            .into_iter()
            .collect(),
        };
        let statement = ProposalStatement {
            store_id: "00".repeat(16),
            proposal_id: "ab".repeat(16),
            policy_version: 1,
            operation: Operation::DisableKey {
                key_id: "k1".into(),
            },
            proposer: "admin".into(),
            created_at_ms: 1,
            expires_at_ms: 2,
        };
        let sig = hex::encode(
            alice
                .sign(&signed_message(Decision::Approve, &statement))
                .to_bytes(),
        );
        let d = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let id = statement.proposal_id.clone();
        let bodies = [
            (
                "approval.policy_set",
                d(&[("version", "1".into()), ("policy", policy.to_json())]),
            ),
            (
                "approval.proposed",
                d(&[
                    ("proposal_id", id.clone()),
                    ("threshold", "1".into()),
                    ("statement", statement.canonical_json()),
                ]),
            ),
            (
                "approval.approved",
                d(&[
                    ("proposal_id", id.clone()),
                    ("approver", "alice".into()),
                    ("approver_key", hexkey(&alice)),
                    ("signature", sig),
                    ("statement", statement.canonical_json()),
                ]),
            ),
            (
                "approval.executed",
                d(&[("proposal_id", id), ("approvers", "alice".into())]),
            ),
        ];
        let key = key();
        let mut out: Vec<AuditRecord> = Vec::new();
        for (i, (event, mut details)) in bodies.into_iter().enumerate() {
            edit(i, &mut details);
            let prev = out
                .last()
                .map_or(GENESIS_PREV_HASH.to_string(), |r| r.hash_hex());
            let mut rec = AuditRecord::new(i as u64 + 1, prev, 10, event, "admin", details);
            rec.sign(&key);
            out.push(rec);
        }
        out
    }

    #[test]
    fn approver_signatures_are_checked_offline() {
        let v = verify_chain(&approval_log(|_, _| {}), &pk(), None).unwrap();
        assert_eq!(v.approvals, 1);
        let cases: [(usize, &str, Option<String>, &str); 5] = [
            (2, "signature", Some("00".repeat(64)), "does not verify"),
            (
                2,
                "approver_key",
                Some(hex::encode(
                    SigningKey::from_bytes(&[9u8; 32])
                        .verifying_key()
                        .to_bytes(),
                )),
                "not the one the policy registered",
            ),
            (
                2,
                "approver",
                Some("bob".into()),
                "not the one the policy registered",
            ),
            (3, "approvers", Some("alice,carol".into()), "not in the log"),
            (3, "approvers", Some(String::new()), "fewer approvals"),
        ];
        for (index, field, value, want) in cases {
            let log = approval_log(|i, d| {
                if i == index {
                    match &value {
                        Some(v) => d.insert(field.to_string(), v.clone()),
                        None => d.remove(field),
                    };
                }
            });
            let e = verify_chain(&log, &pk(), None).unwrap_err();
            assert!(
                matches!(&e, VerifyError::BadApproval { seq, why } if *seq == index as u64 + 1 && why.contains(want)),
                "{field}: {e}"
            );
        }
    }
}
