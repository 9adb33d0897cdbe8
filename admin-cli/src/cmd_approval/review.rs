//! What a reviewer sees: a proposal rendered from its signed statement (the consequences are
//! computed here, from the statement, never taken from the appliance's text), the policy, and
//! the outcome of a decision.

use serde::Serialize;
use sha2::{Digest, Sha256};
use vhsm_audit::approval::{ApprovalPolicy, ProposalStatement};
use vhsm_proto::v1::Proposal;

use crate::errors::{CliError, CliResult, ExitKind};
use crate::output;

/// One signed decision as printed.
#[derive(Debug, Serialize)]
pub struct SignoffView {
    approver: String,
    decision: String,
    at: String,
}

/// A proposal as printed (JSON field names are part of the scripting surface).
#[derive(Debug, Serialize)]
pub struct ProposalView {
    /// The proposal id.
    pub proposal_id: String,
    state: String,
    class: String,
    threshold: u32,
    approvals: usize,
    operation: serde_json::Value,
    consequences: String,
    proposer: String,
    created_at: String,
    expires_at: String,
    closed_at: String,
    policy_version: u64,
    store_id: String,
    /// SHA-256 of the canonical statement (what approvers sign, after the prefix).
    statement_sha256: String,
    signoffs: Vec<SignoffView>,
    /// The canonical statement itself.
    pub statement_json: String,
}

impl ProposalView {
    /// Builds the view from vhsmd's answer, trusting only the signed statement.
    pub fn from_wire(p: &Proposal) -> CliResult<ProposalView> {
        let s = ProposalStatement::from_canonical_json(&p.statement_json)
            .map_err(|_| CliError::new(ExitKind::Integrity, "malformed proposal statement"))?;
        if s.proposal_id != p.proposal_id {
            return Err(CliError::new(
                ExitKind::Integrity,
                "the proposal id does not match its statement",
            ));
        }
        let operation = serde_json::to_value(&s.operation)
            .map_err(|_| CliError::usage("cannot format the operation"))?;
        let signoffs: Vec<SignoffView> = p
            .signoffs
            .iter()
            .map(|x| SignoffView {
                approver: x.approver.clone(),
                decision: x.decision.clone(),
                at: output::time_ms(x.at_ms),
            })
            .collect();
        Ok(ProposalView {
            proposal_id: s.proposal_id.clone(),
            state: p.state.clone(),
            class: s.operation.class().as_str().to_owned(),
            threshold: p.threshold,
            approvals: signoffs.iter().filter(|x| x.decision == "approve").count(),
            operation,
            consequences: s.operation.consequences(),
            proposer: s.proposer.clone(),
            created_at: output::time_ms(s.created_at_ms),
            expires_at: output::time_ms(s.expires_at_ms),
            closed_at: output::time_ms(p.closed_at_ms),
            policy_version: s.policy_version,
            store_id: s.store_id.clone(),
            statement_sha256: hex::encode(Sha256::digest(p.statement_json.as_bytes())),
            signoffs,
            statement_json: p.statement_json.clone(),
        })
    }
}

/// The result of an approve or reject.
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// The proposal after the decision.
    pub proposal: ProposalView,
    /// Whether this decision executed it.
    pub executed: bool,
}

/// The operation's parameters as `k=v` (the tag `op` first).
fn parameters(op: &serde_json::Value) -> String {
    let Some(map) = op.as_object() else {
        return op.to_string();
    };
    map.iter()
        .filter(|(k, _)| k.as_str() != "op")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The review text of one proposal.
pub fn render_proposal(v: &ProposalView) -> String {
    let op = v.operation.get("op").and_then(|o| o.as_str()).unwrap_or("");
    let mut out = output::render_kv(&[
        ("proposal", v.proposal_id.clone()),
        (
            "state",
            format!("{} ({} of {} approvals)", v.state, v.approvals, v.threshold),
        ),
        ("operation", format!("{op} ({})", v.class)),
        ("parameters", parameters(&v.operation)),
        ("consequences", v.consequences.clone()),
        ("proposer", v.proposer.clone()),
        ("created", v.created_at.clone()),
        ("expires", v.expires_at.clone()),
        ("closed", v.closed_at.clone()),
        ("policy version", v.policy_version.to_string()),
        ("store", v.store_id.clone()),
        ("statement sha256", v.statement_sha256.clone()),
    ]);
    if !v.signoffs.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = v
            .signoffs
            .iter()
            .map(|s| vec![s.approver.clone(), s.decision.clone(), s.at.clone()])
            .collect();
        out.push_str(&output::render_table(
            &["APPROVER", "DECISION", "AT"],
            &rows,
        ));
    }
    out
}

/// One line per proposal.
pub fn render_list(views: &[ProposalView]) -> String {
    if views.is_empty() {
        return "no proposals\n".into();
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.proposal_id.clone(),
                v.state.clone(),
                format!("{}/{}", v.approvals, v.threshold),
                v.operation
                    .get("op")
                    .and_then(|o| o.as_str())
                    .unwrap_or("")
                    .to_owned(),
                parameters(&v.operation),
                v.expires_at.clone(),
            ]
        })
        .collect();
    output::render_table(
        &[
            "ID",
            "STATE",
            "APPROVALS",
            "OPERATION",
            "PARAMETERS",
            "EXPIRES",
        ],
        &rows,
    )
}

/// The policy: approvers, then one line per guarded class.
pub fn render_policy(p: &ApprovalPolicy) -> String {
    if p.rules.is_empty() && p.approvers.is_empty() {
        return "no approval policy: one operator with an admin certificate runs every operation\n"
            .into();
    }
    let mut out = format!("policy version {}\n\n", p.version);
    let approvers: Vec<Vec<String>> = p
        .approvers
        .iter()
        .map(|(name, key)| vec![name.clone(), key.clone()])
        .collect();
    out.push_str(&output::render_table(
        &["APPROVER", "PUBLIC KEY"],
        &approvers,
    ));
    out.push('\n');
    let rules: Vec<Vec<String>> = p
        .rules
        .iter()
        .map(|(class, rule)| {
            vec![
                class.as_str().to_owned(),
                format!("{} of {}", rule.threshold, rule.approvers.len()),
                rule.approvers.iter().cloned().collect::<Vec<_>>().join(","),
            ]
        })
        .collect();
    if rules.is_empty() {
        out.push_str("no class is guarded\n");
    } else {
        out.push_str(&output::render_table(
            &["CLASS", "NEEDS", "APPROVERS"],
            &rules,
        ));
    }
    out
}

/// What an approve or reject did.
pub fn render_outcome(o: &Outcome) -> String {
    let p = &o.proposal;
    let line = if o.executed {
        format!(
            "EXECUTED: {} of {} approvals; {}\n",
            p.approvals, p.threshold, p.consequences
        )
    } else if p.state == "pending" {
        format!(
            "recorded: {} of {} approvals; it runs once {} have approved\n",
            p.approvals, p.threshold, p.threshold
        )
    } else {
        format!("proposal {}: {}\n", p.proposal_id, p.state)
    };
    line
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vhsm_audit::approval::Operation;
    use vhsm_proto::v1::ProposalSignoff;

    fn wire(op: Operation) -> Proposal {
        let s = ProposalStatement {
            store_id: "ab".repeat(16),
            proposal_id: "0123456789abcdef0123456789abcdef".into(),
            policy_version: 2,
            operation: op,
            proposer: "operator".into(),
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: 1_700_086_400_000,
        };
        Proposal {
            proposal_id: s.proposal_id.clone(),
            statement_json: s.canonical_json(),
            state: "pending".into(),
            threshold: 2,
            signoffs: vec![ProposalSignoff {
                approver: "alice".into(),
                decision: "approve".into(),
                signature: "00".into(),
                at_ms: 1_700_000_100_000,
            }],
            closed_at_ms: 0,
            class: "ignored".into(),
            consequences: "the appliance's words are not shown".into(),
        }
    }

    #[test]
    fn the_review_shows_the_statement_and_its_own_consequences() {
        let p = wire(Operation::ScheduleKeyDeletion {
            key_id: "payments".into(),
            waiting_days: 7,
        });
        let v = ProposalView::from_wire(&p).unwrap();
        let text = render_proposal(&v);
        assert!(
            text.contains("schedule_key_deletion (key_deletion)"),
            "{text}"
        );
        assert!(text.contains("key_id=payments waiting_days=7"), "{text}");
        assert!(text.contains("1 of 2 approvals"), "{text}");
        assert!(text.contains("payments"), "{text}");
        assert!(!text.contains("the appliance's words"), "{text}");
        assert_eq!(
            v.statement_sha256,
            hex::encode(Sha256::digest(p.statement_json.as_bytes()))
        );
    }

    #[test]
    fn a_statement_of_another_proposal_or_not_canonical_is_refused() {
        let mut p = wire(Operation::DisableKey { key_id: "k".into() });
        p.proposal_id = "f".repeat(32);
        assert_eq!(
            ProposalView::from_wire(&p).unwrap_err().kind(),
            ExitKind::Integrity
        );
        let mut p = wire(Operation::DisableKey { key_id: "k".into() });
        p.statement_json = p.statement_json.replace(",", ", ");
        assert_eq!(
            ProposalView::from_wire(&p).unwrap_err().kind(),
            ExitKind::Integrity
        );
    }
}
