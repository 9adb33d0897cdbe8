//! Secondary authorization: ordered allow/deny rules over `requestMetadata`, first match wins.
//!
//! A rule matches when every pattern list it sets matches the corresponding request field
//! (a set list never matches an absent field). Patterns are case-sensitive with `*` matching
//! any run of characters. No rules ⇒ everything is allowed (secondary authorization is
//! optional); rules present and none matching ⇒ deny. GetHealthStatus is exempt: the caller
//! does not evaluate it.

use serde::Deserialize;

/// Longest accepted pattern (ARNs may be up to 2048 characters).
const MAX_PATTERN_LEN: usize = 2048;
/// Longest accepted rule name.
const MAX_RULE_NAME_LEN: usize = 128;

/// The request attributes a rule can look at (from the URL and `requestMetadata`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthzRequest<'a> {
    /// `externalKeyId` from the URL.
    pub key_id: &'a str,
    /// `requestMetadata.kmsOperation` (any string; unknown operations are not an error).
    pub kms_operation: &'a str,
    /// `requestMetadata.awsPrincipalArn`.
    pub aws_principal_arn: Option<&'a str>,
    /// `requestMetadata.kmsKeyArn`.
    pub kms_key_arn: Option<&'a str>,
    /// `requestMetadata.kmsViaService`.
    pub kms_via_service: Option<&'a str>,
    /// `requestMetadata.awsSourceVpc`.
    pub aws_source_vpc: Option<&'a str>,
    /// `requestMetadata.awsSourceVpce`.
    pub aws_source_vpce: Option<&'a str>,
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named rule, or by the absence of rules (`None`).
    Allow {
        /// Name of the rule that allowed, `None` when no rules are configured.
        rule: Option<String>,
    },
    /// Denied by the named rule, or by default deny (`None`).
    Deny {
        /// Name of the rule that denied, `None` when no rule matched (default deny).
        rule: Option<String>,
    },
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Let the request through.
    Allow,
    /// Refuse with AccessDeniedException.
    Deny,
}

/// One `[[keystore.rule]]` table as written in keystores.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, logged on a decision.
    pub name: String,
    /// `"allow"` or `"deny"`.
    pub effect: String,
    /// Patterns over the externalKeyId.
    pub keys: Option<Vec<String>>,
    /// Patterns over `kmsOperation`.
    pub operations: Option<Vec<String>>,
    /// Patterns over `awsPrincipalArn`.
    pub principal_arns: Option<Vec<String>>,
    /// Patterns over `kmsKeyArn`.
    pub kms_key_arns: Option<Vec<String>>,
    /// Patterns over `kmsViaService`.
    pub via_services: Option<Vec<String>>,
    /// Patterns over `awsSourceVpc`.
    pub source_vpcs: Option<Vec<String>>,
    /// Patterns over `awsSourceVpce`.
    pub source_vpces: Option<Vec<String>>,
}

/// A rule field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RuleError {
    /// Field path relative to the rule, e.g. `operations[2]`.
    pub field: String,
    /// What is wrong (never echoes a value).
    pub problem: &'static str,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    name: String,
    effect: Effect,
    keys: Option<Vec<String>>,
    operations: Option<Vec<String>>,
    principal_arns: Option<Vec<String>>,
    kms_key_arns: Option<Vec<String>>,
    via_services: Option<Vec<String>>,
    source_vpcs: Option<Vec<String>>,
    source_vpces: Option<Vec<String>>,
}

impl Rule {
    /// Validates one rule as configured.
    pub fn from_config(raw: RuleConfig) -> Result<Rule, RuleError> {
        let name = raw.name.trim();
        if name.is_empty() || name.len() > MAX_RULE_NAME_LEN || name.chars().any(char::is_control) {
            return Err(RuleError {
                field: "name".into(),
                problem: "must be 1-128 printable characters",
            });
        }
        let effect = match raw.effect.as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            _ => {
                return Err(RuleError {
                    field: "effect".into(),
                    problem: "must be \"allow\" or \"deny\"",
                })
            }
        };
        Ok(Rule {
            name: name.to_owned(),
            effect,
            keys: patterns("keys", raw.keys)?,
            operations: patterns("operations", raw.operations)?,
            principal_arns: patterns("principal_arns", raw.principal_arns)?,
            kms_key_arns: patterns("kms_key_arns", raw.kms_key_arns)?,
            via_services: patterns("via_services", raw.via_services)?,
            source_vpcs: patterns("source_vpcs", raw.source_vpcs)?,
            source_vpces: patterns("source_vpces", raw.source_vpces)?,
        })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's effect.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// True when every list this rule sets matches the request.
    pub fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        field_matches(&self.keys, Some(req.key_id))
            && field_matches(&self.operations, Some(req.kms_operation))
            && field_matches(&self.principal_arns, req.aws_principal_arn)
            && field_matches(&self.kms_key_arns, req.kms_key_arn)
            && field_matches(&self.via_services, req.kms_via_service)
            && field_matches(&self.source_vpcs, req.aws_source_vpc)
            && field_matches(&self.source_vpces, req.aws_source_vpce)
    }
}

/// Validates an optional pattern list: if set, non-empty, each pattern 1..=2048 chars without controls.
fn patterns(
    field: &'static str,
    list: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, RuleError> {
    let Some(list) = list else {
        return Ok(None);
    };
    if list.is_empty() {
        return Err(RuleError {
            field: field.into(),
            problem: "must list at least one pattern (omit the field to match anything)",
        });
    }
    for (i, p) in list.iter().enumerate() {
        if p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_control) {
            return Err(RuleError {
                field: format!("{field}[{i}]"),
                problem: "pattern must be 1-2048 printable characters",
            });
        }
    }
    Ok(Some(list))
}

/// An unset list matches anything; a set list needs a present value matching one pattern.
fn field_matches(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match (list, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(pats), Some(v)) => pats.iter().any(|p| wildcard_match(p, v)),
    }
}

/// Case-sensitive glob with `*` (any run, possibly empty); linear-time greedy with backtracking
/// to the last star.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let (p, v) = (pattern.as_bytes(), value.as_bytes());
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// An ordered list of rules.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy from validated rules, evaluated in the given order.
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when no rules are configured (everything is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// First matching rule decides; no rules ⇒ allow; rules but no match ⇒ deny.
    pub fn evaluate(&self, req: &AuthzRequest<'_>) -> Decision {
        if self.rules.is_empty() {
            return Decision::Allow { rule: None };
        }
        match self.rules.iter().find(|r| r.matches(req)) {
            Some(rule) => {
                let name = Some(rule.name.clone());
                match rule.effect {
                    Effect::Allow => Decision::Allow { rule: name },
                    Effect::Deny => Decision::Deny { rule: name },
                }
            }
            None => Decision::Deny { rule: None },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn raw(name: &str, effect: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            effect: effect.into(),
            keys: None,
            operations: None,
            principal_arns: None,
            kms_key_arns: None,
            via_services: None,
            source_vpcs: None,
            source_vpces: None,
        }
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    fn req() -> AuthzRequest<'static> {
        AuthzRequest {
            key_id: "prod-key-1",
            kms_operation: "Encrypt",
            aws_principal_arn: Some("arn:aws:iam::111122223333:role/App"),
            kms_key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/abcd"),
            kms_via_service: Some("ebs.us-east-1.amazonaws.com"),
            aws_source_vpc: Some("vpc-1234"),
            aws_source_vpce: Some("vpce-5678"),
        }
    }

    fn policy(rules: Vec<RuleConfig>) -> Policy {
        Policy::new(
            rules
                .into_iter()
                .map(|r| Rule::from_config(r).unwrap())
                .collect(),
        )
    }

    #[test]
    fn wildcard_semantics() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("abc", "abc"));
        assert!(!wildcard_match("abc", "abcd"));
        assert!(!wildcard_match("abc", "ab"));
        assert!(!wildcard_match("abc", "ABC"));
        assert!(wildcard_match("GenerateDataKey*", "GenerateDataKey"));
        assert!(wildcard_match(
            "GenerateDataKey*",
            "GenerateDataKeyWithoutPlaintext"
        ));
        assert!(!wildcard_match("GenerateDataKey*", "generatedatakey"));
        assert!(wildcard_match(
            "arn:aws:iam::111122223333:*",
            "arn:aws:iam::111122223333:role/x"
        ));
        assert!(!wildcard_match(
            "arn:aws:iam::111122223333:*",
            "arn:aws:iam::444455556666:role/x"
        ));
        assert!(wildcard_match("*:role/*", "arn:aws:iam::1:role/x"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a*b*c", "abc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("a**c", "ac"));
        assert!(wildcard_match("*aab", "aaaab"));
        assert!(!wildcard_match("", "x"));
    }

    #[test]
    fn no_rules_allows_everything() {
        let p = Policy::default();
        assert!(p.is_empty());
        assert_eq!(p.evaluate(&req()), Decision::Allow { rule: None });
        let unknown = AuthzRequest {
            kms_operation: "SomeFutureOperation",
            ..req()
        };
        assert!(p.evaluate(&unknown).is_allow());
    }

    #[test]
    fn default_deny_when_rules_exist_but_none_match() {
        let mut r = raw("only-decrypt", "allow");
        r.operations = list(&["Decrypt"]);
        let p = policy(vec![r]);
        assert_eq!(p.evaluate(&req()), Decision::Deny { rule: None });
        // Unknown operations are just non-matching strings.
        let unknown = AuthzRequest {
            kms_operation: "SomeFutureOperation",
            ..req()
        };
        assert_eq!(p.evaluate(&unknown), Decision::Deny { rule: None });
    }

    #[test]
    fn rule_without_conditions_matches_everything() {
        let p = policy(vec![raw("allow-all", "allow")]);
        assert_eq!(
            p.evaluate(&AuthzRequest::default()),
            Decision::Allow {
                rule: Some("allow-all".into())
            }
        );
    }

    #[test]
    fn first_match_wins() {
        let mut deny = raw("deny-other-account", "deny");
        deny.principal_arns = list(&["arn:aws:iam::444455556666:*"]);
        let mut allow = raw("allow-all", "allow");
        allow.keys = list(&["*"]);
        let p = policy(vec![deny.clone(), allow.clone()]);
        assert_eq!(
            p.evaluate(&req()),
            Decision::Allow {
                rule: Some("allow-all".into())
            }
        );
        let other = AuthzRequest {
            aws_principal_arn: Some("arn:aws:iam::444455556666:user/Eve"),
            ..req()
        };
        assert_eq!(
            p.evaluate(&other),
            Decision::Deny {
                rule: Some("deny-other-account".into())
            }
        );
        // Reversed order: the allow rule shadows the deny.
        let reversed = policy(vec![allow, deny]);
        assert!(reversed.evaluate(&other).is_allow());
    }

    /// Each field: a rule setting only that field matches the request's value, not another
    /// value, and not an absent value.
    #[test]
    fn each_field_is_matched() {
        type Setter = fn(&mut RuleConfig, Option<Vec<String>>);
        type Changer = fn(AuthzRequest<'static>, Option<&'static str>) -> AuthzRequest<'static>;
        let cases: Vec<(&str, Setter, Changer, &str)> = vec![
            (
                "prod-*",
                |r, l| r.keys = l,
                |q, v| AuthzRequest {
                    key_id: v.unwrap_or(""),
                    ..q
                },
                "test-key",
            ),
            (
                "Encrypt",
                |r, l| r.operations = l,
                |q, v| AuthzRequest {
                    kms_operation: v.unwrap_or(""),
                    ..q
                },
                "Decrypt",
            ),
            (
                "arn:aws:iam::111122223333:*",
                |r, l| r.principal_arns = l,
                |q, v| AuthzRequest {
                    aws_principal_arn: v,
                    ..q
                },
                "arn:aws:iam::999999999999:root",
            ),
            (
                "arn:aws:kms:us-east-1:111122223333:key/*",
                |r, l| r.kms_key_arns = l,
                |q, v| AuthzRequest {
                    kms_key_arn: v,
                    ..q
                },
                "arn:aws:kms:eu-west-1:111122223333:key/abcd",
            ),
            (
                "ebs.*.amazonaws.com",
                |r, l| r.via_services = l,
                |q, v| AuthzRequest {
                    kms_via_service: v,
                    ..q
                },
                "rds.us-east-1.amazonaws.com",
            ),
            (
                "vpc-1234",
                |r, l| r.source_vpcs = l,
                |q, v| AuthzRequest {
                    aws_source_vpc: v,
                    ..q
                },
                "vpc-9999",
            ),
            (
                "vpce-5678",
                |r, l| r.source_vpces = l,
                |q, v| AuthzRequest {
                    aws_source_vpce: v,
                    ..q
                },
                "vpce-0000",
            ),
        ];
        for (pattern, set, change, other) in cases {
            let mut r = raw("r", "allow");
            set(&mut r, list(&[pattern]));
            let p = policy(vec![r]);
            assert!(p.evaluate(&req()).is_allow(), "{pattern}");
            assert_eq!(
                p.evaluate(&change(req(), Some(other))),
                Decision::Deny { rule: None },
                "{pattern} vs {other}"
            );
            let absent = change(req(), None);
            // key_id / kms_operation are never absent; they become "" which does not match.
            assert_eq!(
                p.evaluate(&absent),
                Decision::Deny { rule: None },
                "{pattern} absent"
            );
        }
    }

    #[test]
    fn all_set_fields_must_match() {
        let mut r = raw("both", "allow");
        r.operations = list(&["Encrypt", "Decrypt"]);
        r.principal_arns = list(&["arn:aws:iam::111122223333:*"]);
        let p = policy(vec![r]);
        assert!(p.evaluate(&req()).is_allow());
        let decrypt = AuthzRequest {
            kms_operation: "Decrypt",
            ..req()
        };
        assert!(p.evaluate(&decrypt).is_allow());
        let wrong_principal = AuthzRequest {
            aws_principal_arn: Some("arn:aws:iam::222233334444:root"),
            ..req()
        };
        assert!(!p.evaluate(&wrong_principal).is_allow());
    }

    #[test]
    fn validation_errors_name_the_field() {
        let mut bad_effect = raw("r", "permit");
        bad_effect.keys = list(&["*"]);
        assert_eq!(Rule::from_config(bad_effect).unwrap_err().field, "effect");

        assert_eq!(
            Rule::from_config(raw("  ", "allow")).unwrap_err().field,
            "name"
        );
        assert_eq!(
            Rule::from_config(raw(&"n".repeat(129), "allow"))
                .unwrap_err()
                .field,
            "name"
        );

        let mut empty_list = raw("r", "allow");
        empty_list.operations = Some(vec![]);
        assert_eq!(
            Rule::from_config(empty_list).unwrap_err().field,
            "operations"
        );

        let mut empty_pattern = raw("r", "deny");
        empty_pattern.source_vpces = list(&["vpce-1", ""]);
        assert_eq!(
            Rule::from_config(empty_pattern).unwrap_err().field,
            "source_vpces[1]"
        );

        let mut long_pattern = raw("r", "deny");
        long_pattern.principal_arns = Some(vec!["a".repeat(MAX_PATTERN_LEN + 1)]);
        assert_eq!(
            Rule::from_config(long_pattern).unwrap_err().field,
            "principal_arns[0]"
        );

        let mut control = raw("r", "deny");
        control.kms_key_arns = list(&["arn\n"]);
        assert_eq!(
            Rule::from_config(control).unwrap_err().field,
            "kms_key_arns[0]"
        );
    }

    #[test]
    fn rule_accessors() {
        let r = Rule::from_config(raw("deny-x", "deny")).unwrap();
        assert_eq!(r.name(), "deny-x");
        assert_eq!(r.effect(), Effect::Deny);
        assert_eq!(policy(vec![raw("a", "allow"), raw("b", "deny")]).len(), 2);
    }
}
