//! The one table of which role may call which RPC, and whether the call is CPU-heavy.

use crate::roles::Role;

/// Every RPC vhsmd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Method {
    // Crypto service
    Encrypt,
    Decrypt,
    GetKeyMetadata,
    WrapKey,
    UnwrapKey,
    GenerateRandom,
    Health,
    // Admin service
    Status,
    Init,
    Unseal,
    ResetUnseal,
    Seal,
    Rekey,
    RekeyStage,
    RekeyCommit,
    RekeyAbort,
    CreateKey,
    NewImportKey,
    ImportKey,
    ListKeys,
    DescribeKey,
    RotateKey,
    SetMinDecryptionVersion,
    EnableKey,
    DisableKey,
    ScheduleKeyDeletion,
    CancelKeyDeletion,
    CreateBackup,
    RestoreBackup,
    ExportAudit,
    GetAuditPublicKey,
    KeyProvenance,
    ClusterStatus,
    AddNode,
    RemoveNode,
    GetApprovalPolicy,
    SetApprovalPolicy,
    Propose,
    ListProposals,
    GetProposal,
    DecideProposal,
    // Peer service (Raft traffic between nodes)
    Peer,
}

impl Method {
    /// Every method, for exhaustive tests and docs.
    pub const ALL: [Method; 42] = [
        Method::Encrypt,
        Method::Decrypt,
        Method::GetKeyMetadata,
        Method::WrapKey,
        Method::UnwrapKey,
        Method::GenerateRandom,
        Method::Health,
        Method::Status,
        Method::Init,
        Method::Unseal,
        Method::ResetUnseal,
        Method::Seal,
        Method::Rekey,
        Method::RekeyStage,
        Method::RekeyCommit,
        Method::RekeyAbort,
        Method::CreateKey,
        Method::NewImportKey,
        Method::ImportKey,
        Method::ListKeys,
        Method::DescribeKey,
        Method::RotateKey,
        Method::SetMinDecryptionVersion,
        Method::EnableKey,
        Method::DisableKey,
        Method::ScheduleKeyDeletion,
        Method::CancelKeyDeletion,
        Method::CreateBackup,
        Method::RestoreBackup,
        Method::ExportAudit,
        Method::GetAuditPublicKey,
        Method::KeyProvenance,
        Method::ClusterStatus,
        Method::AddNode,
        Method::RemoveNode,
        Method::GetApprovalPolicy,
        Method::SetApprovalPolicy,
        Method::Propose,
        Method::ListProposals,
        Method::GetProposal,
        Method::DecideProposal,
        Method::Peer,
    ];

    /// The gRPC method name, as in logs and audit records (`Service/Method`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Encrypt => "Crypto/Encrypt",
            Method::Decrypt => "Crypto/Decrypt",
            Method::GetKeyMetadata => "Crypto/GetKeyMetadata",
            Method::WrapKey => "Crypto/WrapKey",
            Method::UnwrapKey => "Crypto/UnwrapKey",
            Method::GenerateRandom => "Crypto/GenerateRandom",
            Method::Health => "Crypto/Health",
            Method::Status => "Admin/Status",
            Method::Init => "Admin/Init",
            Method::Unseal => "Admin/Unseal",
            Method::ResetUnseal => "Admin/ResetUnseal",
            Method::Seal => "Admin/Seal",
            Method::Rekey => "Admin/Rekey",
            Method::RekeyStage => "Admin/RekeyStage",
            Method::RekeyCommit => "Admin/RekeyCommit",
            Method::RekeyAbort => "Admin/RekeyAbort",
            Method::CreateKey => "Admin/CreateKey",
            Method::NewImportKey => "Admin/NewImportKey",
            Method::ImportKey => "Admin/ImportKey",
            Method::ListKeys => "Admin/ListKeys",
            Method::DescribeKey => "Admin/DescribeKey",
            Method::RotateKey => "Admin/RotateKey",
            Method::SetMinDecryptionVersion => "Admin/SetMinDecryptionVersion",
            Method::EnableKey => "Admin/EnableKey",
            Method::DisableKey => "Admin/DisableKey",
            Method::ScheduleKeyDeletion => "Admin/ScheduleKeyDeletion",
            Method::CancelKeyDeletion => "Admin/CancelKeyDeletion",
            Method::CreateBackup => "Admin/CreateBackup",
            Method::RestoreBackup => "Admin/RestoreBackup",
            Method::ExportAudit => "Admin/ExportAudit",
            Method::GetAuditPublicKey => "Admin/GetAuditPublicKey",
            Method::KeyProvenance => "Admin/KeyProvenance",
            Method::ClusterStatus => "Admin/ClusterStatus",
            Method::AddNode => "Admin/AddNode",
            Method::RemoveNode => "Admin/RemoveNode",
            Method::GetApprovalPolicy => "Admin/GetApprovalPolicy",
            Method::SetApprovalPolicy => "Admin/SetApprovalPolicy",
            Method::Propose => "Admin/Propose",
            Method::ListProposals => "Admin/ListProposals",
            Method::GetProposal => "Admin/GetProposal",
            Method::DecideProposal => "Admin/DecideProposal",
            Method::Peer => "Peer/Raft",
        }
    }

    fn is_crypto_service(self) -> bool {
        matches!(
            self,
            Method::Encrypt
                | Method::Decrypt
                | Method::GetKeyMetadata
                | Method::WrapKey
                | Method::UnwrapKey
                | Method::GenerateRandom
                | Method::Health
        )
    }

    fn is_admin_service(self) -> bool {
        !self.is_crypto_service() && self != Method::Peer
    }

    /// Admin calls that change the store (they wait for the node to catch up with the cluster
    /// first, and their commits carry the caller's request id).
    pub fn is_write(self) -> bool {
        self.is_admin_service()
            && !matches!(
                self,
                Method::Status
                    | Method::ClusterStatus
                    | Method::ListKeys
                    | Method::DescribeKey
                    | Method::ExportAudit
                    | Method::GetAuditPublicKey
                    | Method::KeyProvenance
                    | Method::AddNode
                    | Method::RemoveNode
                    | Method::GetApprovalPolicy
                    | Method::ListProposals
                    | Method::GetProposal
            )
    }

    /// Admin calls that read or change the replicated store and so first wait until this node
    /// reflects everything committed before the call (a linearizable barrier). Not Status,
    /// ClusterStatus or Seal: they must answer (and Seal must act) during a quorum loss.
    pub fn needs_barrier(self) -> bool {
        self.is_admin_service()
            && !matches!(
                self,
                Method::Status
                    | Method::ClusterStatus
                    | Method::Seal
                    | Method::ResetUnseal
                    | Method::AddNode
                    | Method::RemoveNode
                    | Method::ExportAudit
                    | Method::GetAuditPublicKey
            )
    }

    /// Crypto calls that use a key, and so need this node's read lease.
    pub fn needs_lease(self) -> bool {
        self.is_crypto_service() && self != Method::Health
    }

    /// Calls that may leave the core unsealed with keys loaded (a witness refuses them; after
    /// one, the reservation sweep runs at once).
    pub fn unseals(self) -> bool {
        matches!(
            self,
            Method::Init
                | Method::Unseal
                | Method::Rekey
                | Method::RekeyStage
                | Method::RekeyCommit
                | Method::RestoreBackup
        )
    }

    /// Calls that remove permission to use a key: they return once every member applied them
    /// (or name the members that had not). A decision may execute an approved disable,
    /// deletion or minimum-version raise.
    pub fn is_kill_switch(self) -> bool {
        matches!(
            self,
            Method::DisableKey
                | Method::ScheduleKeyDeletion
                | Method::SetMinDecryptionVersion
                | Method::DecideProposal
        )
    }

    /// Whether `role` may call this method.
    pub fn allows(self, role: Role) -> bool {
        match role {
            Role::Crypto => self.is_crypto_service(),
            Role::Admin => {
                self.is_admin_service() || matches!(self, Method::Health | Method::GetKeyMetadata)
            }
            Role::Auditor => matches!(
                self,
                Method::Status
                    | Method::ClusterStatus
                    | Method::ExportAudit
                    | Method::GetAuditPublicKey
                    | Method::KeyProvenance
                    | Method::GetApprovalPolicy
                    | Method::ListProposals
                    | Method::GetProposal
                    // An approver may hold an auditor certificate: the signature authorizes.
                    | Method::DecideProposal
            ),
            Role::Peer => self == Method::Peer,
        }
    }

    /// Calls that may wait for the core's state-change lock (held for a whole Argon2id
    /// ceremony, rekey or backup) or read the store: every Admin call. They run on the blocking
    /// pool so that they never stall an async worker (and with it the Crypto hot path).
    /// Crypto calls read only the key cache and run inline.
    pub fn may_block(self) -> bool {
        self.is_admin_service()
    }

    /// Calls that run Argon2id (or other long CPU work) and so go to the blocking pool.
    pub fn is_cpu_heavy(self) -> bool {
        self.unseals() || self == Method::CreateBackup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_role_gets_exactly_the_crypto_service() {
        for m in Method::ALL {
            assert_eq!(
                m.allows(Role::Crypto),
                m.name().starts_with("Crypto/"),
                "{}",
                m.name()
            );
        }
    }

    #[test]
    fn two_phase_rekey_calls_have_the_roles_of_rekey() {
        for m in [Method::RekeyStage, Method::RekeyCommit, Method::RekeyAbort] {
            for role in [Role::Crypto, Role::Admin, Role::Auditor, Role::Peer] {
                assert_eq!(
                    m.allows(role),
                    Method::Rekey.allows(role),
                    "{} {role:?}",
                    m.name()
                );
            }
            assert!(
                m.is_write() && m.needs_barrier() && m.may_block(),
                "{}",
                m.name()
            );
        }
        assert!(Method::RekeyStage.is_cpu_heavy() && Method::RekeyCommit.is_cpu_heavy());
        assert!(!Method::RekeyAbort.is_cpu_heavy());
    }

    #[test]
    fn admin_role_gets_admin_plus_health_and_metadata() {
        let crypto_allowed: Vec<_> = Method::ALL
            .iter()
            .filter(|m| m.name().starts_with("Crypto/") && m.allows(Role::Admin))
            .map(|m| m.name())
            .collect();
        assert_eq!(crypto_allowed, ["Crypto/GetKeyMetadata", "Crypto/Health"]);
        for m in Method::ALL
            .iter()
            .filter(|m| m.name().starts_with("Admin/"))
        {
            assert!(m.allows(Role::Admin), "{}", m.name());
        }
        assert!(!Method::Peer.allows(Role::Admin));
        assert!(!Method::Encrypt.allows(Role::Admin));
        assert!(!Method::Decrypt.allows(Role::Admin));
    }

    #[test]
    fn auditor_role_gets_status_audit_provenance_and_approval_review_only() {
        let allowed: Vec<_> = Method::ALL
            .iter()
            .filter(|m| m.allows(Role::Auditor))
            .map(|m| m.name())
            .collect();
        assert_eq!(
            allowed,
            [
                "Admin/Status",
                "Admin/ExportAudit",
                "Admin/GetAuditPublicKey",
                "Admin/KeyProvenance",
                "Admin/ClusterStatus",
                "Admin/GetApprovalPolicy",
                "Admin/ListProposals",
                "Admin/GetProposal",
                "Admin/DecideProposal"
            ]
        );
    }

    #[test]
    fn peer_role_gets_raft_traffic_only_and_nobody_else_does() {
        for m in Method::ALL {
            assert_eq!(m.allows(Role::Peer), m == Method::Peer, "{}", m.name());
            if m == Method::Peer {
                for r in [Role::Crypto, Role::Admin, Role::Auditor] {
                    assert!(!m.allows(r), "{r}");
                }
            }
        }
    }

    #[test]
    fn writes_wait_for_the_cluster_and_status_never_does() {
        assert!(Method::CreateKey.is_write() && Method::CreateKey.needs_barrier());
        assert!(Method::DisableKey.is_kill_switch());
        assert!(Method::Unseal.unseals() && !Method::Seal.unseals());
        for m in [Method::Status, Method::ClusterStatus, Method::Seal] {
            assert!(!m.needs_barrier(), "{}", m.name());
        }
        assert!(Method::Encrypt.needs_lease() && !Method::Health.needs_lease());
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Method::ALL.len());
    }

    #[test]
    fn admin_calls_leave_the_async_workers_and_crypto_calls_stay() {
        for m in Method::ALL {
            assert_eq!(
                m.may_block(),
                m.name().starts_with("Admin/"),
                "{}",
                m.name()
            );
            // Every heavy call is also off the async workers.
            assert!(!m.is_cpu_heavy() || m.may_block(), "{}", m.name());
        }
    }

    #[test]
    fn heavy_calls_are_the_ceremonies() {
        assert!(Method::Unseal.is_cpu_heavy());
        assert!(Method::Init.is_cpu_heavy());
        assert!(!Method::Encrypt.is_cpu_heavy());
        assert!(!Method::Health.is_cpu_heavy());
    }
}
