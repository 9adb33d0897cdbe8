//! Quorum approval: policies, proposals, their canonical bytes and approver signatures.
//!
//! A policy names approvers (each with an Ed25519 public key) and, per class of dangerous
//! operation, a threshold M of them. An operator *proposes* an operation; the appliance fixes
//! its parameters in a [`ProposalStatement`]; each approver signs
//! [`signed_message`]`(decision, statement)` with their own key, offline in `vhsm-admin`, after
//! reviewing what will change. The appliance executes the operation once M approvals are in.
//! Everything here is public (no key material): the appliance, the CLI and the offline audit
//! verifier share these bytes.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Domain-separation prefix of every approval signature (distinct from the audit records'
/// and provenance statements' prefixes, so no signature is valid for another kind).
pub const APPROVAL_PREFIX: &[u8] = b"vhsm-approval-v1\n";
/// Most approvers a policy may name.
pub const MAX_APPROVERS: usize = 16;
/// Longest approver name.
pub const MAX_APPROVER_NAME: usize = 64;
/// Hex characters of a proposal id (128 random bits).
pub const PROPOSAL_ID_HEX_LEN: usize = 32;

/// A class of dangerous operation a policy can guard.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum OperationClass {
    /// Scheduling a key's deletion (its destruction follows after the waiting period).
    KeyDeletion,
    /// Disabling a key.
    KeyDisable,
    /// Raising a key's minimum decryption version (lowering it stays free).
    MinDecryptionVersion,
    /// Adding or removing a member of the replicated group.
    Membership,
    /// Changing the approval policy itself.
    PolicyChange,
}

impl OperationClass {
    /// Every class, in a fixed order.
    pub const ALL: [OperationClass; 5] = [
        OperationClass::KeyDeletion,
        OperationClass::KeyDisable,
        OperationClass::MinDecryptionVersion,
        OperationClass::Membership,
        OperationClass::PolicyChange,
    ];

    /// The stable name used in policies, audit records and the CLI (`key_deletion`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationClass::KeyDeletion => "key_deletion",
            OperationClass::KeyDisable => "key_disable",
            OperationClass::MinDecryptionVersion => "min_decryption_version",
            OperationClass::Membership => "membership",
            OperationClass::PolicyChange => "policy_change",
        }
    }

    /// The class named `name` ([`OperationClass::as_str`]; `-` may stand for `_`).
    pub fn from_name(name: &str) -> Option<OperationClass> {
        let name = name.replace('-', "_");
        OperationClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// Who may approve one class, and how many of them must.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Approvals needed (M), `1..=approvers.len()`.
    pub threshold: u8,
    /// Names of the approvers who may approve (N), each registered in the policy.
    pub approvers: BTreeSet<String>,
}

/// The approval policy held in the sealed store. An empty policy (no rules) is the default:
/// one operator with an admin certificate can do everything, as before.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Incremented by the appliance on every change; a proposal names the version it was made
    /// under and is refused once the policy changed. Ignored (may be left out) when set.
    #[serde(default)]
    pub version: u64,
    /// Registered approvers: name -> hex Ed25519 public key.
    #[serde(default)]
    pub approvers: BTreeMap<String, String>,
    /// Guarded classes. A class without a rule needs no approval.
    #[serde(default)]
    pub rules: BTreeMap<OperationClass, Rule>,
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// An approver name is empty, too long or not `[a-z0-9._-]`.
    #[error("approver name {0:?} is invalid: use 1-64 characters of a-z 0-9 . _ -")]
    BadName(String),
    /// An approver's public key is not 64 hex characters of a valid Ed25519 point.
    #[error("approver {0}: invalid Ed25519 public key")]
    BadKey(String),
    /// Two approvers share one public key.
    #[error("approvers {0} and {1} have the same public key")]
    SharedKey(String, String),
    /// More than [`MAX_APPROVERS`] approvers.
    #[error("at most {MAX_APPROVERS} approvers")]
    TooManyApprovers,
    /// A rule names an approver the policy does not register.
    #[error("rule {class}: unknown approver {name}")]
    UnknownApprover {
        /// The rule's class name.
        class: &'static str,
        /// The unknown name.
        name: String,
    },
    /// A rule's threshold is 0 or above its number of approvers.
    #[error("rule {class}: threshold {threshold} must be 1..={count}")]
    BadThreshold {
        /// The rule's class name.
        class: &'static str,
        /// The threshold given.
        threshold: u8,
        /// The rule's approver count.
        count: usize,
    },
    /// Some class is guarded but policy changes are not: one operator could remove the rule.
    #[error("a policy that guards any operation must also guard policy_change")]
    PolicyChangeUnguarded,
}

/// True for a valid approver name: 1-64 characters of `[a-z0-9._-]`.
pub fn is_valid_approver_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_APPROVER_NAME
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// Parses a hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut raw).ok()?;
    VerifyingKey::from_bytes(&raw).ok()
}

impl ApprovalPolicy {
    /// Checks names, keys, thresholds, and that a guarded policy guards its own changes.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.approvers.len() > MAX_APPROVERS {
            return Err(PolicyError::TooManyApprovers);
        }
        let mut seen: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        for (name, key) in &self.approvers {
            if !is_valid_approver_name(name) {
                return Err(PolicyError::BadName(name.clone()));
            }
            let parsed = parse_public_key(key).ok_or_else(|| PolicyError::BadKey(name.clone()))?;
            if let Some(other) = seen.insert(parsed.to_bytes(), name) {
                return Err(PolicyError::SharedKey(other.to_string(), name.clone()));
            }
        }
        for (class, rule) in &self.rules {
            for name in &rule.approvers {
                if !self.approvers.contains_key(name) {
                    return Err(PolicyError::UnknownApprover {
                        class: class.as_str(),
                        name: name.clone(),
                    });
                }
            }
            if rule.threshold == 0 || usize::from(rule.threshold) > rule.approvers.len() {
                return Err(PolicyError::BadThreshold {
                    class: class.as_str(),
                    threshold: rule.threshold,
                    count: rule.approvers.len(),
                });
            }
        }
        if !self.rules.is_empty() && !self.rules.contains_key(&OperationClass::PolicyChange) {
            return Err(PolicyError::PolicyChangeUnguarded);
        }
        Ok(())
    }

    /// The rule guarding `class`, if any.
    pub fn rule(&self, class: OperationClass) -> Option<&Rule> {
        self.rules.get(&class)
    }

    /// Compact JSON (deterministic: maps are ordered).
    pub fn to_json(&self) -> String {
        // INVARIANT: strings, integers and ordered maps only; serializing cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("policy serializes")
    }
}

/// An operation that needs approval, with every parameter that decides what it does.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// Schedule `key_id` for deletion after `waiting_days`.
    ScheduleKeyDeletion {
        /// The key.
        key_id: String,
        /// The waiting period in days.
        waiting_days: u32,
    },
    /// Disable `key_id`.
    DisableKey {
        /// The key.
        key_id: String,
    },
    /// Raise `key_id`'s minimum decryption version from `from` to `to`.
    RaiseMinDecryptionVersion {
        /// The key.
        key_id: String,
        /// The minimum when proposed (the proposal is refused if it changed meanwhile).
        from: u32,
        /// The new minimum.
        to: u32,
    },
    /// Add the node reachable at `address` to the replicated group.
    AddNode {
        /// Its peer address (https://host:port).
        address: String,
        /// Keep it a non-voting learner.
        learner_only: bool,
    },
    /// Remove the member `raft_id` from the replicated group.
    RemoveNode {
        /// The member's raft id.
        raft_id: u64,
    },
    /// Replace the approval policy (its `version` is set by the appliance on execution).
    SetPolicy {
        /// The new policy.
        policy: ApprovalPolicy,
    },
}

impl Operation {
    /// The class that guards this operation.
    pub fn class(&self) -> OperationClass {
        match self {
            Operation::ScheduleKeyDeletion { .. } => OperationClass::KeyDeletion,
            Operation::DisableKey { .. } => OperationClass::KeyDisable,
            Operation::RaiseMinDecryptionVersion { .. } => OperationClass::MinDecryptionVersion,
            Operation::AddNode { .. } | Operation::RemoveNode { .. } => OperationClass::Membership,
            Operation::SetPolicy { .. } => OperationClass::PolicyChange,
        }
    }

    /// What executing it changes and what follows, in words for the approver's review.
    pub fn consequences(&self) -> String {
        match self {
            Operation::ScheduleKeyDeletion {
                key_id,
                waiting_days,
            } => format!(
                "key {key_id} stops working at once (every encrypt and decrypt fails) and is \
                 destroyed after {waiting_days} days: from then on, every ciphertext under it is \
                 unrecoverable. Until then `key cancel-deletion` restores it (disabled)."
            ),
            Operation::DisableKey { key_id } => format!(
                "every encrypt and decrypt with key {key_id} fails (AWS KMS reports the key \
                 unavailable) until an operator enables it again."
            ),
            Operation::RaiseMinDecryptionVersion { key_id, from, to } => {
                let versions = if to.saturating_sub(*from) == 1 {
                    format!("version {from}")
                } else {
                    format!("versions {from}-{}", to.saturating_sub(1))
                };
                format!(
                    "ciphertexts under {versions} of key {key_id} become undecryptable (until the \
                     minimum is lowered again); version {to} and later still decrypt."
                )
            }
            Operation::AddNode {
                address,
                learner_only,
            } => format!(
                "the node at {address} joins the replicated group as a {} and receives a copy of \
                 the whole (sealed) store.",
                if *learner_only {
                    "non-voting learner"
                } else {
                    "voter"
                }
            ),
            Operation::RemoveNode { raft_id } => format!(
                "member {raft_id} leaves the replicated group; the remaining members must still \
                 form a majority."
            ),
            Operation::SetPolicy { policy } => {
                if policy.rules.is_empty() {
                    "every approval rule is removed: one operator can again run every operation \
                     alone."
                        .to_string()
                } else {
                    let rules: Vec<String> = policy
                        .rules
                        .iter()
                        .map(|(c, r)| {
                            let names: Vec<&str> = r.approvers.iter().map(String::as_str).collect();
                            format!(
                                "{} needs {} of [{}]",
                                c.as_str(),
                                r.threshold,
                                names.join(", ")
                            )
                        })
                        .collect();
                    format!(
                        "the approval policy becomes: {}; approvers registered: {}.",
                        rules.join("; "),
                        policy.approvers.len()
                    )
                }
            }
        }
    }
}

/// The signed description of one proposal. Approvers sign [`signed_message`] of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalStatement {
    /// Hex id of the store it applies to (its clones and cluster members share it).
    pub store_id: String,
    /// The proposal id: 32 hex characters, random.
    pub proposal_id: String,
    /// The policy version the proposal was made under.
    pub policy_version: u64,
    /// What is proposed.
    pub operation: Operation,
    /// Who proposed it (the operator certificate's name).
    pub proposer: String,
    /// When it was proposed (Unix ms).
    pub created_at_ms: u64,
    /// After this (Unix ms) it can no longer be approved or executed.
    pub expires_at_ms: u64,
}

/// Why a statement or an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Not a proposal statement (bad JSON, a missing, unknown or mistyped field) or not in
    /// canonical form.
    #[error("malformed proposal statement")]
    Malformed,
    /// The approver's public key is invalid.
    #[error("invalid approver public key")]
    BadPublicKey,
    /// The signature does not verify under the approver's key over this proposal and decision.
    #[error("bad approval signature")]
    BadSignature,
}

impl ProposalStatement {
    /// Compact JSON of every field in declaration order (deterministic).
    pub fn canonical_json(&self) -> String {
        // INVARIANT: integers, strings, booleans and ordered maps only; cannot fail.
        #[allow(clippy::expect_used)]
        serde_json::to_string(self).expect("proposal statement serializes")
    }

    /// Parses a statement and requires it in canonical form (so what is shown is what is
    /// signed).
    pub fn from_canonical_json(text: &str) -> Result<Self, ApprovalError> {
        let statement: ProposalStatement =
            serde_json::from_str(text).map_err(|_| ApprovalError::Malformed)?;
        if statement.canonical_json() != text {
            return Err(ApprovalError::Malformed);
        }
        Ok(statement)
    }

    /// Hex SHA-256 of the canonical JSON: a short handle for comparing what two people saw.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json().as_bytes()))
    }
}

/// An approver's verdict on a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Approve the proposal.
    Approve,
    /// Reject it: the proposal is closed and never executed.
    Reject,
}

impl Decision {
    /// `"approve"` or `"reject"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    /// The decision named `"approve"` or `"reject"`.
    pub fn from_name(name: &str) -> Option<Decision> {
        match name {
            "approve" => Some(Decision::Approve),
            "reject" => Some(Decision::Reject),
            _ => None,
        }
    }
}

/// The bytes an approver signs: [`APPROVAL_PREFIX`] || decision || `\n` || canonical JSON.
pub fn signed_message(decision: Decision, statement: &ProposalStatement) -> Vec<u8> {
    let mut out = APPROVAL_PREFIX.to_vec();
    out.extend_from_slice(decision.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(statement.canonical_json().as_bytes());
    out
}

/// Verifies (strictly) an approver's hex signature of `decision` on `statement`.
pub fn verify_signature(
    public_key_hex: &str,
    decision: Decision,
    statement: &ProposalStatement,
    signature_hex: &str,
) -> Result<(), ApprovalError> {
    let key = parse_public_key(public_key_hex).ok_or(ApprovalError::BadPublicKey)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signature_hex, &mut sig).map_err(|_| ApprovalError::BadSignature)?;
    key.verify_strict(
        &signed_message(decision, statement),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| ApprovalError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn policy_2_of_3() -> ApprovalPolicy {
        let mut approvers = BTreeMap::new();
        for (name, seed) in [("alice", 1u8), ("bob", 2), ("carol", 3)] {
            approvers.insert(
                name.to_string(),
                hex::encode(key(seed).verifying_key().to_bytes()),
            );
        }
        let names: BTreeSet<String> = approvers.keys().cloned().collect();
        let rule = Rule {
            threshold: 2,
            approvers: names,
        };
        ApprovalPolicy {
            version: 1,
            approvers,
            rules: [
                (OperationClass::KeyDeletion, rule.clone()),
                (OperationClass::PolicyChange, rule),
            ]
            .into_iter()
            .collect(),
        }
    }

    fn statement() -> ProposalStatement {
        ProposalStatement {
            store_id: "00".repeat(16),
            proposal_id: "ab".repeat(16),
            policy_version: 1,
            operation: Operation::ScheduleKeyDeletion {
                key_id: "k1".into(),
                waiting_days: 7,
            },
            proposer: "admin".into(),
            created_at_ms: 1,
            expires_at_ms: 2,
        }
    }

    #[test]
    fn a_valid_policy_validates_and_round_trips() {
        let p = policy_2_of_3();
        p.validate().unwrap();
        let back: ApprovalPolicy = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(back, p);
        ApprovalPolicy::default().validate().unwrap();
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let mut p = policy_2_of_3();
        p.rules.remove(&OperationClass::PolicyChange);
        assert_eq!(p.validate(), Err(PolicyError::PolicyChangeUnguarded));

        let mut p = policy_2_of_3();
        p.rules
            .get_mut(&OperationClass::KeyDeletion)
            .unwrap()
            .threshold = 4;
        assert!(matches!(
            p.validate(),
            Err(PolicyError::BadThreshold { threshold: 4, .. })
        ));
        p.rules
            .get_mut(&OperationClass::KeyDeletion)
            .unwrap()
            .threshold = 0;
        assert!(matches!(
            p.validate(),
            Err(PolicyError::BadThreshold { .. })
        ));

        let mut p = policy_2_of_3();
        p.rules
            .get_mut(&OperationClass::KeyDeletion)
            .unwrap()
            .approvers
            .insert("mallory".into());
        assert!(matches!(
            p.validate(),
            Err(PolicyError::UnknownApprover { .. })
        ));

        let mut p = policy_2_of_3();
        p.approvers.insert("Bad Name".into(), "00".repeat(32));
        assert!(matches!(p.validate(), Err(PolicyError::BadName(_))));

        let mut p = policy_2_of_3();
        p.approvers.insert("dave".into(), "zz".into());
        assert_eq!(p.validate(), Err(PolicyError::BadKey("dave".into())));

        let mut p = policy_2_of_3();
        let alice = p.approvers["alice"].clone();
        p.approvers.insert("dave".into(), alice);
        assert!(matches!(p.validate(), Err(PolicyError::SharedKey(_, _))));
    }

    #[test]
    fn a_signature_binds_the_decision_and_every_field() {
        let s = statement();
        let k = key(1);
        let pk = hex::encode(k.verifying_key().to_bytes());
        let sig = hex::encode(k.sign(&signed_message(Decision::Approve, &s)).to_bytes());
        verify_signature(&pk, Decision::Approve, &s, &sig).unwrap();
        assert_eq!(
            verify_signature(&pk, Decision::Reject, &s, &sig),
            Err(ApprovalError::BadSignature)
        );
        let mut other = s.clone();
        other.proposal_id = "cd".repeat(16);
        assert_eq!(
            verify_signature(&pk, Decision::Approve, &other, &sig),
            Err(ApprovalError::BadSignature)
        );
        let mut other = s.clone();
        other.operation = Operation::ScheduleKeyDeletion {
            key_id: "k1".into(),
            waiting_days: 8,
        };
        assert_eq!(
            verify_signature(&pk, Decision::Approve, &other, &sig),
            Err(ApprovalError::BadSignature)
        );
        let bob = hex::encode(key(2).verifying_key().to_bytes());
        assert_eq!(
            verify_signature(&bob, Decision::Approve, &s, &sig),
            Err(ApprovalError::BadSignature)
        );
        assert_eq!(
            verify_signature("nothex", Decision::Approve, &s, &sig),
            Err(ApprovalError::BadPublicKey)
        );
    }

    #[test]
    fn only_canonical_statements_parse() {
        let s = statement();
        let text = s.canonical_json();
        assert_eq!(ProposalStatement::from_canonical_json(&text).unwrap(), s);
        let spaced = text.replace(",", ", ");
        assert_eq!(
            ProposalStatement::from_canonical_json(&spaced),
            Err(ApprovalError::Malformed)
        );
        let extra = text.replacen('{', "{\"x\":1,", 1);
        assert_eq!(
            ProposalStatement::from_canonical_json(&extra),
            Err(ApprovalError::Malformed)
        );
    }

    #[test]
    fn consequences_name_the_versions_that_become_undecryptable() {
        let op = Operation::RaiseMinDecryptionVersion {
            key_id: "k".into(),
            from: 1,
            to: 3,
        };
        assert!(op.consequences().contains("versions 1-2 of key k"));
        let op = Operation::RaiseMinDecryptionVersion {
            key_id: "k".into(),
            from: 2,
            to: 3,
        };
        assert!(op.consequences().contains("version 2 of key k"));
        assert_eq!(op.class(), OperationClass::MinDecryptionVersion);
    }

    #[test]
    fn class_names_round_trip() {
        for c in OperationClass::ALL {
            assert_eq!(OperationClass::from_name(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        assert_eq!(
            OperationClass::from_name("key-deletion"),
            Some(OperationClass::KeyDeletion)
        );
        assert_eq!(OperationClass::from_name("nope"), None);
    }
}
