//! Builds an approval policy from the command line (approver public files and rules) or from a
//! JSON file, and checks it before anything is sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{ArgGroup, Args};
use vhsm_audit::approval::{ApprovalPolicy, OperationClass, Rule};

use super::approver_key::ApproverPublic;
use crate::errors::{CliError, CliResult};
use crate::files;

/// Every class, in the order `--rule all=...` expands to.
const ALL_CLASSES: [OperationClass; 5] = [
    OperationClass::KeyDeletion,
    OperationClass::KeyDisable,
    OperationClass::MinDecryptionVersion,
    OperationClass::Membership,
    OperationClass::PolicyChange,
];

/// A policy: `--file POLICY.json`, or `--approver NAME.pub ... --rule CLASS=M:a,b,c ...`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["file", "approver"])))]
pub struct PolicyArgs {
    /// The whole policy as JSON (`{"approvers": {name: hex}, "rules": {class: {"threshold": M,
    /// "approvers": [names]}}}`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["approver", "rule"])]
    pub file: Option<PathBuf>,
    /// An approver's public file (from `approval approver new`); repeat for each approver.
    #[arg(long, value_name = "NAME.pub")]
    pub approver: Vec<PathBuf>,
    /// A rule `CLASS=M:NAME,NAME,...` (M of the named approvers); CLASS is key_deletion,
    /// key_disable, min_decryption_version, membership, policy_change, or `all`. Repeatable.
    /// No rule at all gives the empty policy (one operator, no approvals).
    #[arg(long, value_name = "RULE")]
    pub rule: Vec<String>,
}

/// Parses a policy JSON as vhsmd returns it (empty: no policy).
pub fn parse_policy_json(text: &str) -> CliResult<ApprovalPolicy> {
    if text.is_empty() {
        return Ok(ApprovalPolicy::default());
    }
    serde_json::from_str(text).map_err(|_| CliError::usage("malformed approval policy JSON"))
}

/// Parses one `--rule` into the classes it covers and its rule.
fn parse_rule(text: &str) -> CliResult<(Vec<OperationClass>, Rule)> {
    let bad = || {
        CliError::usage(format!(
            "invalid --rule {text:?}: use CLASS=M:NAME,NAME (e.g. key_deletion=2:alice,bob,carol)"
        ))
    };
    let (class, rest) = text.split_once('=').ok_or_else(bad)?;
    let (m, names) = rest.split_once(':').ok_or_else(bad)?;
    let classes = if class == "all" {
        ALL_CLASSES.to_vec()
    } else {
        vec![OperationClass::from_name(class).ok_or_else(|| {
            CliError::usage(format!(
                "unknown class {class:?}: use key_deletion, key_disable, min_decryption_version, membership, policy_change or all"
            ))
        })?]
    };
    let threshold: u8 = m.parse().map_err(|_| bad())?;
    let approvers: BTreeSet<String> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((
        classes,
        Rule {
            threshold,
            approvers,
        },
    ))
}

impl PolicyArgs {
    /// The policy the arguments describe, validated as the appliance will validate it.
    pub fn build(&self) -> CliResult<ApprovalPolicy> {
        let policy = match &self.file {
            Some(path) => {
                let text = String::from_utf8(files::read_file(path)?)
                    .map_err(|_| CliError::usage("the policy file is not UTF-8 JSON"))?;
                parse_policy_json(&text)?
            }
            None => self.assemble()?,
        };
        policy
            .validate()
            .map_err(|e| CliError::usage(format!("invalid approval policy: {e}")))?;
        Ok(policy)
    }

    fn assemble(&self) -> CliResult<ApprovalPolicy> {
        let mut approvers = BTreeMap::new();
        for path in &self.approver {
            let text = String::from_utf8(files::read_file(path)?)
                .map_err(|_| CliError::usage("an approver public file is not UTF-8 JSON"))?;
            let p = ApproverPublic::parse(&text)?;
            if approvers.insert(p.name.clone(), p.public_key).is_some() {
                return Err(CliError::usage(format!("approver {} given twice", p.name)));
            }
        }
        let mut rules = BTreeMap::new();
        for text in &self.rule {
            let (classes, rule) = parse_rule(text)?;
            for class in classes {
                if rules.insert(class, rule.clone()).is_some() {
                    return Err(CliError::usage(format!(
                        "more than one rule for {}",
                        class.as_str()
                    )));
                }
            }
        }
        Ok(ApprovalPolicy {
            version: 0,
            approvers,
            rules,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_with_all_and_single_classes() {
        let (classes, rule) = parse_rule("all=2:alice, bob,carol").unwrap();
        assert_eq!(classes.len(), 5);
        assert_eq!(rule.threshold, 2);
        assert_eq!(rule.approvers.len(), 3);
        let (classes, _) = parse_rule("key_deletion=1:alice").unwrap();
        assert_eq!(classes, vec![OperationClass::KeyDeletion]);
        for bad in [
            "key_deletion",
            "key_deletion=2",
            "key_deletion=x:alice",
            "format_disk=1:alice",
            "key_deletion=300:alice",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_answer_is_the_empty_policy() {
        assert_eq!(parse_policy_json("").unwrap(), ApprovalPolicy::default());
        assert!(parse_policy_json("{").is_err());
    }
}
