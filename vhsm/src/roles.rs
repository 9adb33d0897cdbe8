//! Maps a verified client certificate (subject CN, DNS SANs) or a Unix-socket peer uid to a
//! caller identity and role.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{RolesConfig, UnixConfig};

/// What a client certificate is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// xks-front: the Crypto service only.
    Crypto,
    /// Operators: the whole Admin service plus Crypto Health and GetKeyMetadata.
    Admin,
    /// Auditors: Admin Status, ClusterStatus, ExportAudit, GetAuditPublicKey, KeyProvenance,
    /// the approval reads (GetApprovalPolicy, ListProposals, GetProposal) and DecideProposal
    /// (an approver's signed decision).
    Auditor,
    /// The other nodes of the cluster: the Peer (Raft) service only.
    Peer,
}

impl Role {
    /// Lower-case name as used in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Crypto => "crypto",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Peer => "peer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling: the certificate name that matched (or the best name for logs) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Certificate identity, printable ASCII, for logs and the audit `actor`.
    pub identity: String,
    /// The granted role; `None` when no name (or conflicting names) matched `[roles]`.
    pub role: Option<Role>,
}

impl Caller {
    /// The role name for logs, `none` without a role.
    pub fn role_name(&self) -> &'static str {
        self.role.map_or("none", Role::as_str)
    }
}

/// Longest identity kept for logs and audit records.
const MAX_IDENTITY_LEN: usize = 128;

/// Client certificates whose identification [`RoleMap::identify`] remembers.
pub const IDENTITY_CACHE_CAPACITY: usize = 32;

/// Remembered identifications: certificate DER → who it is.
type IdentityCache = Arc<Mutex<Vec<(Box<[u8]>, Caller)>>>;

/// The `[roles]` table (and the `[unix]` uid lists) as lookup maps.
///
/// Identifying a certificate parses it; the result for the last
/// [`IDENTITY_CACHE_CAPACITY`] distinct certificates (compared byte for byte, so the same
/// certificate means the same names) is remembered, as every call on a connection presents
/// the same one. The maps never change after construction, so a remembered answer stays right.
/// Clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct RoleMap {
    by_name: HashMap<String, Role>,
    by_uid: HashMap<u32, Role>,
    identified: IdentityCache,
}

impl RoleMap {
    /// Builds the map from validated config (names are unique across roles).
    pub fn from_config(roles: &RolesConfig) -> RoleMap {
        let mut by_name = HashMap::new();
        for (role, names) in [
            (Role::Crypto, &roles.crypto),
            (Role::Admin, &roles.admin),
            (Role::Auditor, &roles.auditor),
            (Role::Peer, &roles.peer),
        ] {
            for n in names {
                by_name.insert(n.clone(), role);
            }
        }
        RoleMap {
            by_name,
            by_uid: HashMap::new(),
            identified: Arc::default(),
        }
    }

    /// Adds the `[unix]` peer-uid lists (validated: each uid in one list only).
    #[must_use]
    pub fn with_unix(mut self, unix: &UnixConfig) -> RoleMap {
        for (role, uids) in [
            (Role::Crypto, &unix.crypto_uids),
            (Role::Admin, &unix.admin_uids),
            (Role::Auditor, &unix.auditor_uids),
        ] {
            for uid in uids {
                self.by_uid.insert(*uid, role);
            }
        }
        self
    }

    /// Identifies a Unix-socket peer by its kernel-reported uid (`None` if the credentials
    /// could not be read): identity `uid:<n>`, role from the `[unix]` lists.
    pub fn identify_uid(&self, uid: Option<u32>) -> Caller {
        match uid {
            Some(uid) => Caller {
                identity: format!("uid:{uid}"),
                role: self.by_uid.get(&uid).copied(),
            },
            None => Caller {
                identity: "unknown".to_owned(),
                role: None,
            },
        }
    }

    /// The role of one certificate name, if listed.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.by_name.get(name).copied()
    }

    /// Identifies the caller from its leaf certificate (DER). The TLS layer has already verified
    /// the chain and validity period; this only reads names. A certificate whose names map to
    /// two different roles gets no role (fail closed).
    pub fn identify(&self, leaf_der: Option<&[u8]>) -> Caller {
        let Some(der) = leaf_der else {
            return Caller {
                identity: "unknown".to_owned(),
                role: None,
            };
        };
        // Entries are pushed and removed whole; a poisoned lock still holds valid ones.
        let mut seen = self
            .identified
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, caller)) = seen.iter().find(|(d, _)| **d == *der) {
            return caller.clone();
        }
        drop(seen);
        let caller = self.identify_der(der);
        seen = self
            .identified
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !seen.iter().any(|(d, _)| **d == *der) {
            if seen.len() >= IDENTITY_CACHE_CAPACITY {
                seen.remove(0);
            }
            seen.push((der.into(), caller.clone()));
        }
        caller
    }

    /// Certificates remembered by [`identify`](RoleMap::identify).
    pub fn identified_len(&self) -> usize {
        self.identified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// [`identify`](RoleMap::identify) without the cache: parses `der`.
    fn identify_der(&self, der: &[u8]) -> Caller {
        let names = match cert_names(der) {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Caller {
                    identity: "unknown".to_owned(),
                    role: None,
                };
            }
        };
        let mut matched: Option<(&str, Role)> = None;
        for name in &names {
            if let Some(role) = self.role_of(name) {
                match matched {
                    None => matched = Some((name, role)),
                    Some((_, r)) if r == role => {}
                    Some(_) => {
                        return Caller {
                            identity: sanitize(&names[0]),
                            role: None,
                        };
                    }
                }
            }
        }
        match matched {
            Some((name, role)) => Caller {
                identity: sanitize(name),
                role: Some(role),
            },
            None => Caller {
                identity: sanitize(&names[0]),
                role: None,
            },
        }
    }
}

/// Subject CNs first, then DNS SANs. `None` if the certificate does not parse.
fn cert_names(der: &[u8]) -> Option<Vec<String>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            if let GeneralName::DNSName(d) = gn {
                names.push((*d).to_owned());
            }
        }
    }
    Some(names)
}

/// Keeps printable ASCII only and bounds the length, so an identity is safe in a log line.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_IDENTITY_LEN)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::DnsName((*s).try_into().unwrap()))
            .collect();
        let k = KeyPair::generate().unwrap();
        p.self_signed(&k).unwrap().der().to_vec()
    }

    fn map() -> RoleMap {
        RoleMap::from_config(&RolesConfig {
            crypto: vec!["xks-front".into()],
            admin: vec!["admin".into(), "ops.example".into()],
            auditor: vec!["auditor".into()],
            peer: vec!["vhsm-peer".into()],
        })
    }

    #[test]
    fn cn_maps_to_role() {
        let m = map();
        let c = m.identify(Some(&cert(Some("xks-front"), &[])));
        assert_eq!(c.role, Some(Role::Crypto));
        assert_eq!(c.identity, "xks-front");
        assert_eq!(
            m.identify(Some(&cert(Some("auditor"), &[]))).role,
            Some(Role::Auditor)
        );
    }

    #[test]
    fn dns_san_maps_to_role() {
        let c = map().identify(Some(&cert(Some("someone"), &["ops.example"])));
        assert_eq!(c.role, Some(Role::Admin));
        assert_eq!(c.identity, "ops.example");
        assert_eq!(c.role_name(), "admin");
    }

    #[test]
    fn unknown_name_has_no_role() {
        let c = map().identify(Some(&cert(Some("mallory"), &["evil.example"])));
        assert_eq!(c.role, None);
        assert_eq!(c.identity, "mallory");
        assert_eq!(c.role_name(), "none");
    }

    #[test]
    fn conflicting_names_fail_closed() {
        let c = map().identify(Some(&cert(Some("xks-front"), &["admin"])));
        assert_eq!(c.role, None);
    }

    #[test]
    fn same_role_twice_is_fine() {
        let c = map().identify(Some(&cert(Some("admin"), &["ops.example"])));
        assert_eq!(c.role, Some(Role::Admin));
    }

    #[test]
    fn missing_or_garbage_certificate_has_no_role() {
        let m = map();
        assert_eq!(m.identify(None).role, None);
        assert_eq!(m.identify(Some(b"not a certificate")).role, None);
        assert_eq!(m.identify(Some(&cert(None, &[]))).identity, "unknown");
    }

    #[test]
    fn peer_uid_maps_to_role() {
        let m = map().with_unix(&UnixConfig {
            path: "/run/vhsm/vhsmd.sock".into(),
            crypto_uids: vec![998],
            admin_uids: vec![0],
            auditor_uids: vec![1001],
        });
        let c = m.identify_uid(Some(998));
        assert_eq!(c.role, Some(Role::Crypto));
        assert_eq!(c.identity, "uid:998");
        assert_eq!(m.identify_uid(Some(0)).role, Some(Role::Admin));
        assert_eq!(m.identify_uid(Some(1001)).role, Some(Role::Auditor));
        let unmapped = m.identify_uid(Some(4242));
        assert_eq!(unmapped.role, None);
        assert_eq!(unmapped.identity, "uid:4242");
        assert_eq!(m.identify_uid(None).role, None);
        // Certificate names never leak into uid lookups and vice versa.
        assert_eq!(map().identify_uid(Some(0)).role, None);
        assert_eq!(m.identify(Some(&cert(Some("998"), &[]))).role, None);
    }

    #[test]
    fn identification_is_remembered_per_certificate_and_bounded() {
        let m = map();
        let front = cert(Some("xks-front"), &[]);
        let admin = cert(Some("admin"), &[]);
        let first = m.identify(Some(&front));
        assert_eq!(m.identified_len(), 1);
        // The remembered answer is the parsed one; another certificate is parsed on its own.
        assert_eq!(m.identify(Some(&front)), first);
        assert_eq!(m.identified_len(), 1);
        assert_eq!(m.identify(Some(&admin)).role, Some(Role::Admin));
        assert_eq!(m.identify(Some(&front)).role, Some(Role::Crypto));
        assert_eq!(m.identified_len(), 2);
        // A clone shares the cache; the uid map added later does not change certificate answers.
        let with_unix = m.clone().with_unix(&UnixConfig {
            path: "/run/vhsm.sock".into(),
            crypto_uids: vec![1000],
            admin_uids: Vec::new(),
            auditor_uids: Vec::new(),
        });
        assert_eq!(with_unix.identify(Some(&admin)).role, Some(Role::Admin));
        assert_eq!(with_unix.identified_len(), 2);
        // Bounded: old certificates are forgotten, answers stay right.
        for i in 0..IDENTITY_CACHE_CAPACITY {
            let c = cert(Some(&format!("other-{i}")), &[]);
            assert_eq!(m.identify(Some(&c)).role, None);
        }
        assert_eq!(m.identified_len(), IDENTITY_CACHE_CAPACITY);
        assert_eq!(m.identify(Some(&front)), first);
    }

    #[test]
    fn identity_is_sanitized_and_bounded() {
        assert_eq!(sanitize("a\nb\u{7f}c"), "a?b?c");
        assert_eq!(sanitize(&"x".repeat(500)).len(), MAX_IDENTITY_LEN);
    }
}
