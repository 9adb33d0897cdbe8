//! Quorum approval on the `Vhsm` facade: the policy, proposals, signed decisions, execution.
//!
//! The policy and every proposal are Meta records sealed under the keyring (so they replicate,
//! back up and fail closed like everything else). A guarded operation called directly is
//! refused with `ApprovalRequired`; it runs only when the M-th approval of its proposal
//! arrives, in the same flushed batch that closes the proposal, so it is executed exactly
//! once. Membership changes are the daemon's: the core closes their proposal and hands the
//! operation back ([`Decided::execute`]). Formats and signatures: `vhsm_audit::approval`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::audit_log::details;
use crate::error::Error;
use crate::keyops::{
    guarded_class, plan_disable, plan_min_decryption_version, plan_schedule_deletion, KeyChange,
};
use crate::storage::{Tree, WriteBatch};
use crate::types::KeyInfo;
use crate::vhsm::{AuditEvent, Inner, Vhsm};
use vhsm_audit::approval::{
    verify_signature, ApprovalPolicy, Decision, Operation, OperationClass, ProposalStatement,
    MAX_APPROVER_NAME,
};

/// Meta-tree prefix of every approval record (never a reason to reload secrets).
pub(crate) const APPROVAL_META_PREFIX: &[u8] = b"approval/";
/// Meta-tree key of the sealed approval policy.
const POLICY_KEY: &[u8] = b"approval/policy";
/// Meta-tree key prefix of a sealed proposal (followed by its id).
const PROPOSAL_PREFIX: &str = "approval/proposal/";
/// Longest peer address an `add_node` proposal carries.
const MAX_ADDRESS_LEN: usize = 256;

/// Where a proposal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Collecting approvals.
    Pending,
    /// The operation ran (or, for a membership change, was handed to the daemon) once.
    Executed,
    /// An approver rejected it.
    Rejected,
    /// It expired before enough approvals came in.
    Expired,
    /// The policy (or the key) changed after it was made; it can never run.
    Stale,
}

impl ProposalState {
    /// `pending`, `executed`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Executed => "executed",
            ProposalState::Rejected => "rejected",
            ProposalState::Expired => "expired",
            ProposalState::Stale => "stale",
        }
    }
}

/// One approver's signed decision on a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signoff {
    /// The approver's registered name.
    pub approver: String,
    /// Approve or reject.
    pub decision: Decision,
    /// Hex Ed25519 signature over `vhsm_audit::approval::signed_message`.
    pub signature: String,
    /// When it was accepted (Unix ms).
    pub at_ms: u64,
}

/// A proposal as stored and reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The canonical statement JSON (exactly the bytes approvers sign, after the prefix).
    pub statement_json: String,
    /// Where it stands (`Pending` past its expiry is reported `Expired`).
    pub state: ProposalState,
    /// Approvals needed (the rule's M when proposed).
    pub threshold: u8,
    /// The decisions accepted so far, in order.
    pub signoffs: Vec<Signoff>,
    /// When it was closed (Unix ms; 0 while pending).
    pub closed_at_ms: u64,
}

impl Proposal {
    /// The parsed statement.
    pub fn statement(&self) -> Result<ProposalStatement, Error> {
        ProposalStatement::from_canonical_json(&self.statement_json)
            .map_err(|_| Error::Corruption("stored proposal statement".into()))
    }

    /// Approvals accepted so far.
    pub fn approvals(&self) -> usize {
        self.signoffs
            .iter()
            .filter(|s| s.decision == Decision::Approve)
            .count()
    }
}

/// What a decision did.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The proposal after the decision.
    pub proposal: Proposal,
    /// The key after an executed key operation.
    pub key: Option<KeyInfo>,
    /// A membership change the daemon must now run (the proposal is already closed, so it
    /// runs at most once).
    pub execute: Option<Operation>,
}

fn proposal_key(id: &str) -> Vec<u8> {
    format!("{PROPOSAL_PREFIX}{id}").into_bytes()
}

fn is_valid_proposal_id(id: &str) -> bool {
    id.len() == vhsm_audit::approval::PROPOSAL_ID_HEX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|_| Error::Internal("approval record encoding".into()))
}

impl Vhsm {
    /// The approval policy in force (the default, empty policy if none was ever set).
    pub fn approval_policy(&self) -> Result<ApprovalPolicy, Error> {
        let inner = self.lock()?;
        self.load_policy(&inner)
    }

    /// True if `class` needs approval under the policy in force. While sealed, a store that
    /// holds a policy answers `Sealed` (its rules cannot be read), one without answers false.
    pub fn approval_needed(&self, class: OperationClass) -> Result<bool, Error> {
        match self.require_no_approval(class) {
            Ok(()) => Ok(false),
            Err(Error::ApprovalRequired { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `Ok` when no rule guards `class`; [`Error::ApprovalRequired`] when one does (the
    /// daemon's gate for operations it runs itself, such as membership changes). Sealed with a
    /// policy stored, the rules cannot be read: [`Error::Sealed`] (fail closed).
    pub fn require_no_approval(&self, class: OperationClass) -> Result<(), Error> {
        let inner = self.lock()?;
        if Self::require_unsealed(&inner).is_err() {
            return match self.storage.get(Tree::Meta, POLICY_KEY)? {
                Some(_) => Err(Error::Sealed),
                None => Ok(()),
            };
        }
        self.require_unguarded(&inner, class)
    }

    /// Sets the policy directly: allowed only while no rule guards policy changes (then it is
    /// an approved operation, see [`Vhsm::propose`]).
    pub fn set_approval_policy(
        &self,
        policy: ApprovalPolicy,
        actor: &str,
    ) -> Result<ApprovalPolicy, Error> {
        let mut inner = self.lock()?;
        self.require_unguarded(&inner, OperationClass::PolicyChange)?;
        let current = self.load_policy(&inner)?;
        self.commit_policy(&mut inner, &current, policy, Vec::new(), None, actor)
    }

    /// Proposes a guarded operation; it runs once its rule's M approvers approved it before
    /// `ttl_ms` (default and cap from `Options`) has passed.
    pub fn propose(
        &self,
        operation: Operation,
        ttl_ms: Option<u64>,
        actor: &str,
    ) -> Result<Proposal, Error> {
        let mut inner = self.lock()?;
        let header = inner.header.clone().ok_or(Error::Uninitialized)?;
        Self::require_unsealed(&inner)?;
        let policy = self.load_policy(&inner)?;
        let class = operation.class();
        let rule = policy
            .rule(class)
            .ok_or(Error::NotGuarded(class.as_str()))?;
        let operation = self.check_proposable(operation)?;
        let ttl = ttl_ms.unwrap_or(self.options.approval_ttl_ms);
        if ttl == 0 || ttl > self.options.approval_max_ttl_ms {
            return Err(Error::InvalidArgument("ttl_seconds"));
        }
        let now = self.clock.now_ms();
        let pending = self
            .load_proposals(&inner)?
            .iter()
            .filter(|p| p.state == ProposalState::Pending)
            .count();
        if pending >= self.options.approval_max_pending {
            return Err(Error::TooLarge("pending proposals"));
        }
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw)?;
        let statement = ProposalStatement {
            store_id: header.store_id_hex(),
            proposal_id: hex::encode(raw),
            policy_version: policy.version,
            operation,
            proposer: actor.chars().take(MAX_APPROVER_NAME * 4).collect(),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl),
        };
        let proposal = Proposal {
            statement_json: statement.canonical_json(),
            state: ProposalState::Pending,
            threshold: rule.threshold,
            signoffs: Vec::new(),
            closed_at_ms: 0,
        };
        let mut batch = WriteBatch::new();
        self.put_proposal(&inner, &mut batch, &statement.proposal_id, &proposal)?;
        let d = details([
            ("proposal_id", statement.proposal_id.clone()),
            ("class", class.as_str().to_string()),
            ("threshold", rule.threshold.to_string()),
            ("statement", proposal.statement_json.clone()),
        ]);
        self.commit_audited(&mut inner, batch, "approval.proposed", actor, d)?;
        Ok(proposal)
    }

    /// For monitoring: proposals pending now (`None` while sealed, or while a ceremony or
    /// write holds the state lock: a scrape never waits) and the `approval_max_pending` limit.
    pub fn pending_proposals_now(&self) -> (Option<usize>, usize) {
        let limit = self.options.approval_max_pending;
        let Ok(inner) = self.inner.try_lock() else {
            return (None, limit);
        };
        let pending = self.load_proposals(&inner).ok().map(|all| {
            all.iter()
                .filter(|p| p.state == ProposalState::Pending)
                .count()
        });
        (pending, limit)
    }

    /// Every stored proposal, oldest first (expired ones reported `Expired`).
    pub fn proposals(&self) -> Result<Vec<Proposal>, Error> {
        let inner = self.lock()?;
        self.load_proposals(&inner)
    }

    /// One proposal.
    pub fn proposal(&self, id: &str) -> Result<Proposal, Error> {
        let inner = self.lock()?;
        self.load_proposal(&inner, id)
    }

    /// Records `approver`'s signed `decision` on proposal `id`. A rejection closes it; the M-th
    /// approval executes it in the same commit. Refused (nothing changes) for a bad signature,
    /// an approver the rule does not name, or one who already signed.
    pub fn decide(
        &self,
        id: &str,
        approver: &str,
        decision: Decision,
        signature: &str,
        actor: &str,
    ) -> Result<Decided, Error> {
        let mut inner = self.lock()?;
        Self::require_unsealed(&inner)?;
        let mut proposal = self.load_stored_proposal(&inner, id)?;
        let statement = proposal.statement()?;
        if proposal.state != ProposalState::Pending {
            return Err(closed(id, proposal.state.as_str()));
        }
        let policy = self.load_policy(&inner)?;
        if policy.version != statement.policy_version {
            let why = "stale: the approval policy changed after it was proposed";
            return Err(self.close(&mut inner, proposal, id, ProposalState::Stale, why, actor));
        }
        let now = self.clock.now_ms();
        if now > statement.expires_at_ms {
            return Err(self.close(
                &mut inner,
                proposal,
                id,
                ProposalState::Expired,
                "expired",
                actor,
            ));
        }
        let class = statement.operation.class();
        let rule = policy
            .rule(class)
            .ok_or_else(|| Error::Internal("policy version kept but rule gone".into()))?;
        if !rule.approvers.contains(approver) {
            return Err(Error::ApprovalRefused(format!(
                "{} is not an approver of {}",
                shown_name(approver),
                class.as_str()
            )));
        }
        let key = policy
            .approvers
            .get(approver)
            .ok_or_else(|| Error::Internal("rule names an unregistered approver".into()))?;
        if proposal.signoffs.iter().any(|s| s.approver == approver) {
            return Err(Error::ApprovalRefused(format!(
                "{approver} has already signed this proposal"
            )));
        }
        verify_signature(key, decision, &statement, signature).map_err(|_| {
            Error::ApprovalRefused(format!(
                "the signature is not {approver}'s {} of this proposal",
                decision.as_str()
            ))
        })?;
        proposal.signoffs.push(Signoff {
            approver: approver.to_string(),
            decision,
            signature: signature.to_ascii_lowercase(),
            at_ms: now,
        });
        let signed = details([
            ("proposal_id", id.to_string()),
            ("approver", approver.to_string()),
            ("approver_key", key.clone()),
            ("signature", signature.to_ascii_lowercase()),
            ("statement", proposal.statement_json.clone()),
        ]);
        let event = match decision {
            Decision::Approve => "approval.approved",
            Decision::Reject => "approval.rejected",
        };
        let mut events: Vec<AuditEvent<'_>> = vec![(event, signed)];
        if decision == Decision::Reject {
            proposal.state = ProposalState::Rejected;
            proposal.closed_at_ms = now;
        }
        let quorum = usize::from(proposal.threshold);
        if decision == Decision::Reject || proposal.approvals() < quorum {
            let mut batch = WriteBatch::new();
            self.put_proposal(&inner, &mut batch, id, &proposal)?;
            self.commit_audited_events(&mut inner, batch, events, actor)?;
            return Ok(Decided {
                proposal,
                key: None,
                execute: None,
            });
        }
        proposal.state = ProposalState::Executed;
        proposal.closed_at_ms = now;
        let approvers: Vec<&str> = proposal
            .signoffs
            .iter()
            .filter(|s| s.decision == Decision::Approve)
            .map(|s| s.approver.as_str())
            .collect();
        events.push((
            "approval.executed",
            details([
                ("proposal_id", id.to_string()),
                ("class", class.as_str().to_string()),
                ("approvers", approvers.join(",")),
            ]),
        ));
        let mut batch = WriteBatch::new();
        self.put_proposal(&inner, &mut batch, id, &proposal)?;
        let mut out = Decided {
            proposal: proposal.clone(),
            key: None,
            execute: None,
        };
        match &statement.operation {
            Operation::ScheduleKeyDeletion {
                key_id,
                waiting_days,
            } => {
                self.check_waiting_days(*waiting_days)?;
                let planned = |info: &KeyInfo| plan_schedule_deletion(info, *waiting_days, now);
                out.key = Some(self.execute_key_change(
                    &mut inner,
                    key_id,
                    "key.schedule_deletion",
                    planned,
                    (batch, events, id, actor),
                )?);
            }
            Operation::DisableKey { key_id } => {
                out.key = Some(self.execute_key_change(
                    &mut inner,
                    key_id,
                    "key.disable",
                    plan_disable,
                    (batch, events, id, actor),
                )?);
            }
            Operation::RaiseMinDecryptionVersion { key_id, from, to } => {
                let current = self.cached(key_id)?.info.min_decryption_version;
                if current != *from {
                    let why = "stale: the key's minimum decryption version changed after it was \
                               proposed";
                    return Err(self.close(
                        &mut inner,
                        proposal,
                        id,
                        ProposalState::Stale,
                        why,
                        actor,
                    ));
                }
                let planned = |info: &KeyInfo| plan_min_decryption_version(info, *to);
                out.key = Some(self.execute_key_change(
                    &mut inner,
                    key_id,
                    "key.min_decryption_version",
                    planned,
                    (batch, events, id, actor),
                )?);
            }
            Operation::SetPolicy { policy: next } => {
                self.commit_policy(
                    &mut inner,
                    &policy,
                    next.clone(),
                    events,
                    Some((batch, id)),
                    actor,
                )?;
            }
            Operation::AddNode { .. } | Operation::RemoveNode { .. } => {
                self.commit_audited_events(&mut inner, batch, events, actor)?;
                out.execute = Some(statement.operation.clone());
            }
        }
        Ok(out)
    }

    /// Refuses `class` with `ApprovalRequired` if the policy in force guards it.
    pub(crate) fn require_unguarded(
        &self,
        inner: &Inner,
        class: OperationClass,
    ) -> Result<(), Error> {
        match self.load_policy(inner)?.rule(class) {
            Some(rule) => Err(Error::ApprovalRequired {
                class: class.as_str(),
                threshold: rule.threshold,
            }),
            None => Ok(()),
        }
    }

    /// Runs an approved key operation: `plan` gives the new metadata; it commits with the
    /// proposal's batch and audit records.
    fn execute_key_change(
        &self,
        inner: &mut Inner,
        key_id: &str,
        event: &str,
        plan: impl FnOnce(&KeyInfo) -> Result<Option<KeyInfo>, Error>,
        (batch, before, proposal, actor): (WriteBatch, Vec<AuditEvent<'_>>, &str, &str),
    ) -> Result<KeyInfo, Error> {
        let cached = self.cached(key_id)?;
        let info = plan(&cached.info)?.unwrap_or_else(|| cached.info.clone());
        let change = KeyChange {
            event,
            actor,
            batch,
            before,
            proposal: Some(proposal),
        };
        self.commit_key_change(inner, &cached, info, change)
    }

    /// Validates `next`, gives it the next version and commits it (with a proposal's batch
    /// and audit records when it executes one).
    fn commit_policy(
        &self,
        inner: &mut Inner,
        current: &ApprovalPolicy,
        mut next: ApprovalPolicy,
        mut events: Vec<AuditEvent<'_>>,
        proposal: Option<(WriteBatch, &str)>,
        actor: &str,
    ) -> Result<ApprovalPolicy, Error> {
        next.validate()
            .map_err(|e| Error::InvalidPolicy(e.to_string()))?;
        next.version = current.version.saturating_add(1);
        let unsealed = Self::require_unsealed(inner)?;
        let json = next.to_json();
        let sealed = unsealed
            .keyring
            .seal(Tree::Meta, POLICY_KEY, json.as_bytes(), &*self.rng)?;
        let (mut batch, proposal_id) = match proposal {
            Some((b, id)) => (b, Some(id)),
            None => (WriteBatch::new(), None),
        };
        batch.put(Tree::Meta, POLICY_KEY, sealed);
        let mut d = details([("version", next.version.to_string()), ("policy", json)]);
        if let Some(id) = proposal_id {
            d.insert("proposal_id".into(), id.to_string());
        }
        events.push(("approval.policy_set", d));
        self.commit_audited_events(inner, batch, events, actor)?;
        Ok(next)
    }

    /// Checks what a proposal would do before anyone is asked to approve it, and fixes the
    /// facts it depends on (a minimum decryption version's current value).
    fn check_proposable(&self, operation: Operation) -> Result<Operation, Error> {
        match operation {
            Operation::ScheduleKeyDeletion {
                ref key_id,
                waiting_days,
            } => {
                self.check_waiting_days(waiting_days)?;
                let info = &self.cached(key_id)?.info;
                plan_schedule_deletion(info, waiting_days, 0)?;
                Ok(operation)
            }
            Operation::DisableKey { ref key_id } => {
                let info = &self.cached(key_id)?.info;
                match plan_disable(info)? {
                    Some(_) => Ok(operation),
                    None => Err(Error::KeyDisabled(key_id.clone())),
                }
            }
            Operation::RaiseMinDecryptionVersion { key_id, to, .. } => {
                let info = &self.cached(&key_id)?.info;
                let planned = plan_min_decryption_version(info, to)?;
                match planned {
                    Some(next) if guarded_class(info, &next).is_some() => {
                        Ok(Operation::RaiseMinDecryptionVersion {
                            from: info.min_decryption_version,
                            key_id,
                            to,
                        })
                    }
                    // Lowering (or keeping) the minimum needs no approval.
                    _ => Err(Error::InvalidArgument("min_decryption_version")),
                }
            }
            Operation::AddNode { ref address, .. } => {
                // Peers are reached over mutual TLS only (as `AddNode` requires).
                if !address.starts_with("https://") || address.len() > MAX_ADDRESS_LEN {
                    return Err(Error::InvalidArgument("address"));
                }
                Ok(operation)
            }
            Operation::RemoveNode { raft_id } => {
                if raft_id == 0 {
                    return Err(Error::InvalidArgument("raft_id"));
                }
                Ok(operation)
            }
            Operation::SetPolicy { ref policy } => {
                policy
                    .validate()
                    .map_err(|e| Error::InvalidPolicy(e.to_string()))?;
                Ok(operation)
            }
        }
    }

    /// Closes a pending proposal as `state` (expired or stale) with its audit record and
    /// returns the error the caller reports.
    fn close(
        &self,
        inner: &mut Inner,
        mut proposal: Proposal,
        id: &str,
        state: ProposalState,
        why: &str,
        actor: &str,
    ) -> Error {
        proposal.state = state;
        proposal.closed_at_ms = self.clock.now_ms();
        let mut batch = WriteBatch::new();
        if let Err(e) = self.put_proposal(inner, &mut batch, id, &proposal) {
            return e;
        }
        let event = match state {
            ProposalState::Expired => "approval.expired",
            _ => "approval.stale",
        };
        let d = details([("proposal_id", id.to_string()), ("why", why.to_string())]);
        match self.commit_audited(inner, batch, event, actor, d) {
            Ok(_) => closed(id, why),
            Err(e) => e,
        }
    }

    fn load_policy(&self, inner: &Inner) -> Result<ApprovalPolicy, Error> {
        let Some(sealed) = self.storage.get(Tree::Meta, POLICY_KEY)? else {
            return Ok(ApprovalPolicy::default());
        };
        let unsealed = Self::require_unsealed(inner)?;
        let plain = unsealed.keyring.open(Tree::Meta, POLICY_KEY, &sealed)?;
        serde_json::from_slice(&plain)
            .map_err(|_| Error::Corruption("stored approval policy".into()))
    }

    /// A proposal as reported: one still pending past its expiry shows as `Expired`.
    fn load_proposal(&self, inner: &Inner, id: &str) -> Result<Proposal, Error> {
        let mut proposal = self.load_stored_proposal(inner, id)?;
        if proposal.state == ProposalState::Pending
            && self.clock.now_ms() > proposal.statement()?.expires_at_ms
        {
            proposal.state = ProposalState::Expired;
        }
        Ok(proposal)
    }

    /// A proposal as stored.
    fn load_stored_proposal(&self, inner: &Inner, id: &str) -> Result<Proposal, Error> {
        if !is_valid_proposal_id(id) {
            return Err(Error::ProposalNotFound(shown_name(id)));
        }
        let unsealed = Self::require_unsealed(inner)?;
        let key = proposal_key(id);
        let sealed = self
            .storage
            .get(Tree::Meta, &key)?
            .ok_or_else(|| Error::ProposalNotFound(id.to_string()))?;
        let plain = unsealed.keyring.open(Tree::Meta, &key, &sealed)?;
        let proposal: Proposal = serde_json::from_slice(&plain)
            .map_err(|_| Error::Corruption("stored proposal".into()))?;
        if proposal.statement()?.proposal_id != id {
            return Err(Error::Corruption("stored proposal under another id".into()));
        }
        Ok(proposal)
    }

    fn load_proposals(&self, inner: &Inner) -> Result<Vec<Proposal>, Error> {
        Self::require_unsealed(inner)?;
        let mut out = Vec::new();
        for (key, _) in self
            .storage
            .scan_prefix(Tree::Meta, PROPOSAL_PREFIX.as_bytes())?
        {
            let id = std::str::from_utf8(&key[PROPOSAL_PREFIX.len()..])
                .map_err(|_| Error::Corruption("proposal record key".into()))?;
            out.push(self.load_proposal(inner, id)?);
        }
        let mut keyed: BTreeMap<(u64, String), Proposal> = BTreeMap::new();
        for p in out {
            let s = p.statement()?;
            keyed.insert((s.created_at_ms, s.proposal_id), p);
        }
        Ok(keyed.into_values().collect())
    }

    fn put_proposal(
        &self,
        inner: &Inner,
        batch: &mut WriteBatch,
        id: &str,
        proposal: &Proposal,
    ) -> Result<(), Error> {
        let unsealed = Self::require_unsealed(inner)?;
        let key = proposal_key(id);
        let sealed = unsealed
            .keyring
            .seal(Tree::Meta, &key, &to_json(proposal)?, &*self.rng)?;
        batch.put(Tree::Meta, key, sealed);
        Ok(())
    }
}

fn closed(id: &str, why: &str) -> Error {
    Error::ProposalClosed {
        id: id.to_string(),
        why: why.to_string(),
    }
}

/// A caller-supplied name or id as it may appear in a message: bounded, printable.
fn shown_name(name: &str) -> String {
    name.chars()
        .take(MAX_APPROVER_NAME)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
