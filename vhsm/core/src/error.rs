//! The core's error type and its stable reason codes (mirroring `vhsm.v1.Reason`).
//!
//! Messages name fields, key ids and states; never key material, plaintext, passphrases or
//! shares.

use crate::storage::StorageError;

/// Stable reason of an [`Error`], one to one with `vhsm.v1.Reason` (same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The store has not been initialized yet.
    Uninitialized,
    /// The store is already initialized.
    AlreadyInitialized,
    /// The store is sealed.
    Sealed,
    /// The store is already unsealed.
    AlreadyUnsealed,
    /// A passphrase or share was wrong.
    UnsealRejected,
    /// A share is corrupt, malformed, duplicated or foreign.
    InvalidShare,
    /// Too many failed attempts.
    RateLimited,
    /// No rekey is staged under that id (none staged, another id, or superseded).
    RekeyNotStaged,
    /// The staged rekey expired before it was committed; the current configuration applies.
    RekeyExpired,
    /// No key with that id.
    KeyNotFound,
    /// A key with that id already exists.
    KeyExists,
    /// The key is disabled.
    KeyDisabled,
    /// The key is scheduled for deletion.
    KeyPendingDeletion,
    /// The key has been destroyed.
    KeyDestroyed,
    /// The key's usage set does not allow the operation.
    UsageNotAllowed,
    /// Decryption failed (opaque).
    InvalidCiphertext,
    /// The ciphertext's key version is below the minimum decryption version.
    KeyVersionNotAllowed,
    /// The key's current version reached its AES-GCM invocation limit: rotate the key.
    KeyVersionExhausted,
    /// A request field is invalid.
    InvalidArgument,
    /// The caller lacks the role (never produced by the core; mapped by the daemon).
    PermissionDenied,
    /// A size limit was exceeded.
    TooLarge,
    /// Stored data failed authentication.
    Corruption,
    /// Power-on self-tests failed.
    SelfTestFailed,
    /// This node may not serve (no read lease of the replicated store).
    NotServing,
    /// A concurrent write changed the store first; nothing was applied.
    Conflict,
    /// A write with this request id was already applied.
    AlreadyApplied,
    /// The write could not be committed on a majority in time; its outcome is unknown.
    NoQuorum,
    /// A backup is malformed or failed its integrity check.
    InvalidBackup,
    /// Any other internal failure.
    Internal,
    /// A storage write failed: the node sealed itself and must be restarted (fail-stop).
    StorageFailed,
    /// The audit log does not continue its sealed anchor: the unseal was refused.
    AuditMismatch,
    /// The operation is guarded by the approval policy: propose it instead.
    ApprovalRequired,
    /// No proposal with that id.
    ProposalNotFound,
    /// The proposal is closed (executed, rejected, expired or stale): nothing was changed.
    ProposalClosed,
    /// An approval was refused (bad signature, not an approver of the rule, already counted).
    ApprovalRefused,
}

/// Every failure of the core. One variant per stable [`Reason`] (plus [`Error::WeakKdf`],
/// reported as `InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The store has not been initialized yet.
    #[error("the store is not initialized")]
    Uninitialized,
    /// The store is already initialized.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// The store is sealed.
    #[error("the store is sealed")]
    Sealed,
    /// The store is already unsealed.
    #[error("the store is already unsealed")]
    AlreadyUnsealed,
    /// A passphrase or share was wrong; the next attempt is accepted after `retry_after_ms`.
    #[error("unseal rejected: wrong passphrase or share (next attempt in {retry_after_ms} ms)")]
    UnsealRejected {
        /// Delay before the next attempt is considered.
        retry_after_ms: u64,
    },
    /// A share file is corrupt, malformed, duplicated or belongs to another store.
    #[error("invalid share: {0}")]
    InvalidShare(String),
    /// An attempt came before the back-off delay elapsed; nothing was tried.
    #[error("too many failed unseal attempts: retry in {retry_after_ms} ms")]
    RateLimited {
        /// Delay before the next attempt is considered.
        retry_after_ms: u64,
    },
    /// No rekey is staged under the given id; nothing was changed.
    #[error("no such rekey staging: {0}")]
    RekeyNotStaged(&'static str),
    /// The staged rekey expired before it was committed (and was discarded); the current
    /// passphrase or shares still apply.
    #[error("rekey staging expired; the current unseal configuration still applies")]
    RekeyStagingExpired,
    /// No key with that id.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// A key (or a destroyed key's tombstone) with that id already exists.
    #[error("key already exists: {0}")]
    KeyExists(String),
    /// The key is disabled.
    #[error("key is disabled: {0}")]
    KeyDisabled(String),
    /// The key is scheduled for deletion.
    #[error("key is pending deletion: {0}")]
    KeyPendingDeletion(String),
    /// The key has been destroyed.
    #[error("key is destroyed: {0}")]
    KeyDestroyed(String),
    /// The key's usage set does not allow the operation.
    #[error("key {key} does not allow usage {usage}")]
    UsageNotAllowed {
        /// Key id.
        key: String,
        /// The refused usage.
        usage: &'static str,
    },
    /// Decryption or unwrapping failed (opaque on purpose).
    #[error("invalid ciphertext")]
    InvalidCiphertext,
    /// The ciphertext names a key version below the key's minimum decryption version.
    #[error("key version not allowed for decryption")]
    KeyVersionNotAllowed,
    /// The key's current version reached its AES-GCM invocation limit (NIST SP 800-38D); it
    /// still decrypts, and encrypts again once the key is rotated.
    #[error("key {0}: its current version reached the AES-GCM invocation limit; rotate the key")]
    KeyVersionExhausted(String),
    /// The named request field is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The store's (or requested) KDF parameters are below the recommended minimum and weak
    /// parameters were not allowed (`Options::allow_weak_kdf`).
    #[error(
        "KDF parameters are below the recommended minimum (allow_weak_kdf is off; dev/test only)"
    )]
    WeakKdf,
    /// The named field exceeds its size limit.
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// Stored data failed authentication (disk corruption or tampering).
    #[error("stored data failed authentication: {0}")]
    Corruption(String),
    /// Power-on self-tests failed; the store refuses to unseal.
    #[error("power-on self-test failed: {0}")]
    SelfTestFailed(String),
    /// A backup is malformed or failed its integrity check.
    #[error("invalid backup: {0}")]
    InvalidBackup(String),
    /// Storage, randomness or another internal failure.
    #[error("internal error: {0}")]
    Internal(String),
    /// A storage write failed (I/O error, disk full, failed flush). What is on disk may differ
    /// from what this process holds, so it sealed itself and refuses every change until it is
    /// restarted and unsealed from what is on disk (fail-stop).
    #[error("storage failed a write; this node sealed itself and must be restarted: {0}")]
    StorageFailed(String),
    /// At unseal the stored audit log did not continue the sealed anchor (its newest signed
    /// record): records were cut, rewritten or forged. The message names seqs only.
    #[error("the audit log does not continue its sealed anchor: {0}")]
    AuditMismatch(String),
    /// The operation is guarded by the approval policy: it must be proposed and approved.
    #[error("{class} needs {threshold} approval(s) under the approval policy: propose it (vhsm-admin approval propose ...)")]
    ApprovalRequired {
        /// The guarding class (`key_deletion`, ...).
        class: &'static str,
        /// Approvals it needs.
        threshold: u8,
    },
    /// No proposal with that id.
    #[error("proposal not found: {0}")]
    ProposalNotFound(String),
    /// The proposal is closed; the message says why (executed, rejected, expired, stale).
    #[error("proposal {id} is {why}; nothing was changed")]
    ProposalClosed {
        /// The proposal id.
        id: String,
        /// Why it is closed.
        why: String,
    },
    /// An approval was refused; the message says why (never a key).
    #[error("approval refused: {0}")]
    ApprovalRefused(String),
    /// A proposal for an operation no rule guards: run it directly.
    #[error("no approval rule guards {0}: run the operation directly")]
    NotGuarded(&'static str),
    /// An approval policy is invalid (the message names the problem).
    #[error("invalid approval policy: {0}")]
    InvalidPolicy(String),
    /// This node holds no read lease of the replicated store and may not serve crypto.
    #[error("this node is not serving: {0}")]
    NotServing(String),
    /// A concurrent write on another node changed the store first; nothing was applied.
    #[error("a concurrent write changed the store first; nothing was applied, retry")]
    Conflict {
        /// The log index the store had reached when the write was refused.
        applied_index: u64,
    },
    /// A write with this request id was already applied; nothing was applied again.
    #[error("a request with this id was already applied")]
    AlreadyApplied,
    /// The write was not committed on a majority in time; it may still be applied.
    #[error("no quorum: {0}")]
    NoQuorum(String),
}

impl Error {
    /// The stable reason code.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Uninitialized => Reason::Uninitialized,
            Error::AlreadyInitialized => Reason::AlreadyInitialized,
            Error::Sealed => Reason::Sealed,
            Error::AlreadyUnsealed => Reason::AlreadyUnsealed,
            Error::UnsealRejected { .. } => Reason::UnsealRejected,
            Error::InvalidShare(_) => Reason::InvalidShare,
            Error::RateLimited { .. } => Reason::RateLimited,
            Error::RekeyNotStaged(_) => Reason::RekeyNotStaged,
            Error::RekeyStagingExpired => Reason::RekeyExpired,
            Error::KeyNotFound(_) => Reason::KeyNotFound,
            Error::KeyExists(_) => Reason::KeyExists,
            Error::KeyDisabled(_) => Reason::KeyDisabled,
            Error::KeyPendingDeletion(_) => Reason::KeyPendingDeletion,
            Error::KeyDestroyed(_) => Reason::KeyDestroyed,
            Error::UsageNotAllowed { .. } => Reason::UsageNotAllowed,
            Error::InvalidCiphertext => Reason::InvalidCiphertext,
            Error::KeyVersionNotAllowed => Reason::KeyVersionNotAllowed,
            Error::KeyVersionExhausted(_) => Reason::KeyVersionExhausted,
            Error::InvalidArgument(_)
            | Error::WeakKdf
            | Error::InvalidPolicy(_)
            | Error::NotGuarded(_) => Reason::InvalidArgument,
            Error::TooLarge(_) => Reason::TooLarge,
            Error::Corruption(_) => Reason::Corruption,
            Error::SelfTestFailed(_) => Reason::SelfTestFailed,
            Error::InvalidBackup(_) => Reason::InvalidBackup,
            Error::Internal(_) => Reason::Internal,
            Error::StorageFailed(_) => Reason::StorageFailed,
            Error::AuditMismatch(_) => Reason::AuditMismatch,
            Error::ApprovalRequired { .. } => Reason::ApprovalRequired,
            Error::ProposalNotFound(_) => Reason::ProposalNotFound,
            Error::ProposalClosed { .. } => Reason::ProposalClosed,
            Error::ApprovalRefused(_) => Reason::ApprovalRefused,
            Error::NotServing(_) => Reason::NotServing,
            Error::Conflict { .. } => Reason::Conflict,
            Error::AlreadyApplied => Reason::AlreadyApplied,
            Error::NoQuorum(_) => Reason::NoQuorum,
        }
    }

    /// For `UnsealRejected` and `RateLimited`: when the next attempt is accepted.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::UnsealRejected { retry_after_ms } | Error::RateLimited { retry_after_ms } => {
                Some(*retry_after_ms)
            }
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Corrupt(m) => Error::Corruption(format!("storage backend: {m}")),
            StorageError::Conflict { applied_index } => Error::Conflict { applied_index },
            StorageError::AlreadyApplied => Error::AlreadyApplied,
            StorageError::NoQuorum(m) => Error::NoQuorum(m),
            other @ (StorageError::Io(_) | StorageError::Locked(_)) => {
                Error::Internal(other.to_string())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_retry_hints() {
        assert_eq!(
            Error::UnsealRejected { retry_after_ms: 5 }.reason(),
            Reason::UnsealRejected
        );
        assert_eq!(
            Error::UnsealRejected { retry_after_ms: 5 }.retry_after_ms(),
            Some(5)
        );
        assert_eq!(
            Error::RateLimited { retry_after_ms: 7 }.retry_after_ms(),
            Some(7)
        );
        assert_eq!(Error::Sealed.retry_after_ms(), None);
        assert_eq!(Error::WeakKdf.reason(), Reason::InvalidArgument);
    }

    #[test]
    fn storage_errors_map() {
        assert_eq!(
            Error::from(StorageError::Corrupt("x".into())).reason(),
            Reason::Corruption
        );
        assert_eq!(
            Error::from(StorageError::Io("x".into())).reason(),
            Reason::Internal
        );
        assert_eq!(
            Error::from(StorageError::Locked("x".into())).reason(),
            Reason::Internal
        );
    }
}
