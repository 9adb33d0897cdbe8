//! The quorum-approval calls of the Admin service: wire messages to the core and back.

use vhsm_core::approval::{ApprovalPolicy, Decision, Operation, OperationClass};
use vhsm_core::{Error, Proposal, ProposalState, Vhsm};
use vhsm_proto::v1::{
    ApprovalPolicyResponse, DecideProposalRequest, DecideProposalResponse, GetProposalRequest,
    ListProposalsRequest, ListProposalsResponse, Proposal as WireProposal, ProposalResponse,
    ProposalSignoff, ProposeRequest, SetApprovalPolicyRequest,
};

use crate::convert;
use crate::dispatch::core_status;
use crate::roles::Caller;
use tonic::Status;

/// Longest operation or policy JSON accepted (a policy of 16 approvers is ~2 KiB).
const MAX_JSON_LEN: usize = 16 * 1024;

fn err(e: Error) -> Status {
    core_status(&e)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    field: &'static str,
) -> Result<T, Status> {
    if text.len() > MAX_JSON_LEN {
        return Err(err(Error::TooLarge(field)));
    }
    serde_json::from_str(text).map_err(|_| err(Error::InvalidArgument(field)))
}

/// A stored proposal as the wire reports it (id, class and consequences from its statement).
pub fn proposal_message(p: &Proposal) -> Result<WireProposal, Status> {
    let statement = p.statement().map_err(err)?;
    Ok(WireProposal {
        proposal_id: statement.proposal_id.clone(),
        statement_json: p.statement_json.clone(),
        state: p.state.as_str().to_owned(),
        threshold: u32::from(p.threshold),
        signoffs: p
            .signoffs
            .iter()
            .map(|s| ProposalSignoff {
                approver: s.approver.clone(),
                decision: s.decision.as_str().to_owned(),
                signature: s.signature.clone(),
                at_ms: s.at_ms,
            })
            .collect(),
        closed_at_ms: p.closed_at_ms,
        class: statement.operation.class().as_str().to_owned(),
        consequences: statement.operation.consequences(),
    })
}

fn proposal_response(p: &Proposal) -> Result<ProposalResponse, Status> {
    Ok(ProposalResponse {
        proposal: Some(proposal_message(p)?),
    })
}

fn policy_response(policy: &ApprovalPolicy) -> ApprovalPolicyResponse {
    let unset = policy.version == 0 && policy.rules.is_empty() && policy.approvers.is_empty();
    ApprovalPolicyResponse {
        policy_json: if unset {
            String::new()
        } else {
            policy.to_json()
        },
    }
}

/// `GetApprovalPolicy`.
pub fn get_policy(v: &Vhsm) -> Result<ApprovalPolicyResponse, Status> {
    v.approval_policy()
        .map(|p| policy_response(&p))
        .map_err(err)
}

/// `SetApprovalPolicy`: refused once policy changes are themselves guarded.
pub fn set_policy(
    v: &Vhsm,
    c: &Caller,
    r: &SetApprovalPolicyRequest,
) -> Result<ApprovalPolicyResponse, Status> {
    let policy: ApprovalPolicy = parse_json(&r.policy_json, "policy_json")?;
    v.set_approval_policy(policy, &c.identity)
        .map(|p| policy_response(&p))
        .map_err(err)
}

/// `Propose`.
pub fn propose(v: &Vhsm, c: &Caller, r: &ProposeRequest) -> Result<ProposalResponse, Status> {
    let operation: Operation = parse_json(&r.operation_json, "operation_json")?;
    let ttl_ms = match r.ttl_seconds {
        0 => None,
        s => Some(
            s.checked_mul(1000)
                .ok_or_else(|| err(Error::InvalidArgument("ttl_seconds")))?,
        ),
    };
    let p = v.propose(operation, ttl_ms, &c.identity).map_err(err)?;
    proposal_response(&p)
}

/// `ListProposals`.
pub fn list(v: &Vhsm, r: &ListProposalsRequest) -> Result<ListProposalsResponse, Status> {
    let proposals = v
        .proposals()
        .map_err(err)?
        .iter()
        .filter(|p| !r.pending_only || p.state == ProposalState::Pending)
        .map(proposal_message)
        .collect::<Result<_, _>>()?;
    Ok(ListProposalsResponse { proposals })
}

/// `GetProposal`.
pub fn get(v: &Vhsm, r: &GetProposalRequest) -> Result<ProposalResponse, Status> {
    proposal_response(&v.proposal(&r.proposal_id).map_err(err)?)
}

/// `DecideProposal`: the answer, and the membership change the daemon must now run (the
/// proposal is already closed as executed, so it runs at most once).
pub fn decide(
    v: &Vhsm,
    c: &Caller,
    r: &DecideProposalRequest,
) -> Result<(DecideProposalResponse, Option<Operation>), Status> {
    let decision =
        Decision::from_name(&r.decision).ok_or_else(|| err(Error::InvalidArgument("decision")))?;
    let decided = v
        .decide(
            &r.proposal_id,
            &r.approver,
            decision,
            &r.signature,
            &c.identity,
        )
        .map_err(err)?;
    let executed = decided.proposal.state == ProposalState::Executed;
    let key = decided.key.map(|k| convert::key_message(v, k));
    let response = DecideProposalResponse {
        proposal: Some(proposal_message(&decided.proposal)?),
        executed,
        key,
        cluster: None,
    };
    Ok((response, decided.execute))
}

/// Membership changes (AddNode, RemoveNode) are refused while a rule guards them.
pub fn require_membership_unguarded(v: &Vhsm) -> Result<(), Status> {
    v.require_no_approval(OperationClass::Membership)
        .map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_policy_is_reported_empty() {
        assert_eq!(policy_response(&ApprovalPolicy::default()).policy_json, "");
        let set = ApprovalPolicy {
            version: 1,
            ..ApprovalPolicy::default()
        };
        assert_eq!(policy_response(&set).policy_json, set.to_json());
    }

    #[test]
    fn oversized_or_malformed_json_is_a_typed_refusal() {
        let big = "x".repeat(MAX_JSON_LEN + 1);
        let e = parse_json::<Operation>(&big, "operation_json").unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange);
        let e = parse_json::<Operation>("{\"op\":\"format_disk\"}", "operation_json").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(parse_json::<Operation>(
            "{\"op\":\"disable_key\",\"key_id\":\"k\"}",
            "operation_json"
        )
        .is_ok());
    }
}
