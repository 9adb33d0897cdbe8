//! The one mapping from core errors (and permission denials) to gRPC statuses with a reason.

use tonic::{Code, Status};
use vhsm_core::error::{Error, Reason};
use vhsm_proto::status_with_reason;
use vhsm_proto::v1::Reason as WireReason;

/// gRPC code and wire reason of a core reason (the table of docs/contracts.md).
pub fn code_and_reason(reason: Reason) -> (Code, WireReason) {
    match reason {
        Reason::Sealed => (Code::Unavailable, WireReason::Sealed),
        Reason::Uninitialized => (Code::Unavailable, WireReason::Uninitialized),
        Reason::KeyNotFound => (Code::NotFound, WireReason::KeyNotFound),
        Reason::KeyDestroyed => (Code::NotFound, WireReason::KeyDestroyed),
        Reason::KeyExists => (Code::AlreadyExists, WireReason::KeyExists),
        Reason::AlreadyInitialized => (Code::AlreadyExists, WireReason::AlreadyInitialized),
        Reason::KeyDisabled => (Code::FailedPrecondition, WireReason::KeyDisabled),
        Reason::KeyPendingDeletion => (Code::FailedPrecondition, WireReason::KeyPendingDeletion),
        Reason::AlreadyUnsealed => (Code::FailedPrecondition, WireReason::AlreadyUnsealed),
        Reason::RekeyNotStaged => (Code::FailedPrecondition, WireReason::RekeyNotStaged),
        Reason::RekeyExpired => (Code::FailedPrecondition, WireReason::RekeyExpired),
        Reason::UsageNotAllowed => (Code::PermissionDenied, WireReason::UsageNotAllowed),
        Reason::PermissionDenied => (Code::PermissionDenied, WireReason::PermissionDenied),
        Reason::InvalidCiphertext => (Code::InvalidArgument, WireReason::InvalidCiphertext),
        Reason::InvalidArgument => (Code::InvalidArgument, WireReason::InvalidArgument),
        Reason::InvalidShare => (Code::InvalidArgument, WireReason::InvalidShare),
        Reason::InvalidBackup => (Code::InvalidArgument, WireReason::InvalidBackup),
        Reason::KeyVersionNotAllowed => (Code::InvalidArgument, WireReason::KeyVersionNotAllowed),
        Reason::KeyVersionExhausted => (Code::FailedPrecondition, WireReason::KeyVersionExhausted),
        Reason::UnsealRejected => (Code::Unauthenticated, WireReason::UnsealRejected),
        Reason::RateLimited => (Code::ResourceExhausted, WireReason::RateLimited),
        Reason::TooLarge => (Code::OutOfRange, WireReason::TooLarge),
        Reason::Corruption => (Code::Internal, WireReason::Corruption),
        Reason::SelfTestFailed => (Code::Internal, WireReason::SelfTestFailed),
        Reason::Internal => (Code::Internal, WireReason::Internal),
        Reason::StorageFailed => (Code::Unavailable, WireReason::StorageFailed),
        Reason::AuditMismatch => (Code::DataLoss, WireReason::AuditMismatch),
        Reason::NotServing => (Code::Unavailable, WireReason::NotServing),
        Reason::Conflict => (Code::Aborted, WireReason::Conflict),
        Reason::AlreadyApplied => (Code::AlreadyExists, WireReason::AlreadyApplied),
        Reason::NoQuorum => (Code::Unavailable, WireReason::NoQuorum),
        Reason::ApprovalRequired => (Code::FailedPrecondition, WireReason::ApprovalRequired),
        Reason::ProposalNotFound => (Code::NotFound, WireReason::ProposalNotFound),
        Reason::ProposalClosed => (Code::FailedPrecondition, WireReason::ProposalClosed),
        Reason::ApprovalRefused => (Code::PermissionDenied, WireReason::ApprovalRefused),
    }
}

/// The status a client sees for a core error. Internal failures get a generic message (the
/// detail is logged server-side by the caller); the others carry the core's message, which
/// names fields, key ids and states but never secrets.
pub fn to_status(err: &Error) -> Status {
    let reason = err.reason();
    let (code, wire) = code_and_reason(reason);
    let message = match reason {
        Reason::Internal => "internal error".to_owned(),
        Reason::Corruption => "stored data failed authentication".to_owned(),
        Reason::SelfTestFailed => "power-on self-test failed".to_owned(),
        _ => err.to_string(),
    };
    status_with_reason(code, message, wire, err.retry_after_ms().unwrap_or(0))
}

/// The status for a caller whose certificate does not grant the role the call needs.
pub fn permission_denied(method: &str) -> Status {
    status_with_reason(
        Code::PermissionDenied,
        format!("the caller's certificate does not grant {method}"),
        WireReason::PermissionDenied,
        0,
    )
}

/// A request field the daemon itself rejects before calling the core.
pub fn invalid_argument(field: &'static str) -> Status {
    to_status(&Error::InvalidArgument(field))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use vhsm_proto::{reason_of, retry_after_ms_of};

    fn every_error() -> Vec<Error> {
        vec![
            Error::Uninitialized,
            Error::AlreadyInitialized,
            Error::Sealed,
            Error::AlreadyUnsealed,
            Error::UnsealRejected { retry_after_ms: 9 },
            Error::InvalidShare("dup".into()),
            Error::RateLimited { retry_after_ms: 77 },
            Error::KeyNotFound("k".into()),
            Error::KeyExists("k".into()),
            Error::KeyDisabled("k".into()),
            Error::KeyPendingDeletion("k".into()),
            Error::KeyDestroyed("k".into()),
            Error::UsageNotAllowed {
                key: "k".into(),
                usage: "ENCRYPT",
            },
            Error::InvalidCiphertext,
            Error::KeyVersionNotAllowed,
            Error::InvalidArgument("key_id"),
            Error::WeakKdf,
            Error::TooLarge("plaintext"),
            Error::Corruption("record keys/x".into()),
            Error::SelfTestFailed("aes-gcm kat".into()),
            Error::InvalidBackup("mac".into()),
            Error::Internal("sled: Other".into()),
            Error::RekeyNotStaged("no rekey is staged"),
            Error::RekeyStagingExpired,
            Error::ApprovalRequired {
                class: "key_deletion",
                threshold: 2,
            },
            Error::ProposalNotFound("p".into()),
            Error::ProposalClosed {
                id: "p".into(),
                why: "expired".into(),
            },
            Error::ApprovalRefused("bad signature".into()),
            Error::InvalidPolicy("threshold".into()),
            Error::NotGuarded("key_disable"),
        ]
    }

    #[test]
    fn table_matches_contract() {
        let want = [
            (Code::Unavailable, WireReason::Uninitialized),
            (Code::AlreadyExists, WireReason::AlreadyInitialized),
            (Code::Unavailable, WireReason::Sealed),
            (Code::FailedPrecondition, WireReason::AlreadyUnsealed),
            (Code::Unauthenticated, WireReason::UnsealRejected),
            (Code::InvalidArgument, WireReason::InvalidShare),
            (Code::ResourceExhausted, WireReason::RateLimited),
            (Code::NotFound, WireReason::KeyNotFound),
            (Code::AlreadyExists, WireReason::KeyExists),
            (Code::FailedPrecondition, WireReason::KeyDisabled),
            (Code::FailedPrecondition, WireReason::KeyPendingDeletion),
            (Code::NotFound, WireReason::KeyDestroyed),
            (Code::PermissionDenied, WireReason::UsageNotAllowed),
            (Code::InvalidArgument, WireReason::InvalidCiphertext),
            (Code::InvalidArgument, WireReason::KeyVersionNotAllowed),
            (Code::InvalidArgument, WireReason::InvalidArgument),
            (Code::InvalidArgument, WireReason::InvalidArgument),
            (Code::OutOfRange, WireReason::TooLarge),
            (Code::Internal, WireReason::Corruption),
            (Code::Internal, WireReason::SelfTestFailed),
            (Code::InvalidArgument, WireReason::InvalidBackup),
            (Code::Internal, WireReason::Internal),
            (Code::FailedPrecondition, WireReason::RekeyNotStaged),
            (Code::FailedPrecondition, WireReason::RekeyExpired),
            (Code::FailedPrecondition, WireReason::ApprovalRequired),
            (Code::NotFound, WireReason::ProposalNotFound),
            (Code::FailedPrecondition, WireReason::ProposalClosed),
            (Code::PermissionDenied, WireReason::ApprovalRefused),
            (Code::InvalidArgument, WireReason::InvalidArgument),
            (Code::InvalidArgument, WireReason::InvalidArgument),
        ];
        for (err, (code, reason)) in every_error().iter().zip(want) {
            let s = to_status(err);
            assert_eq!(s.code(), code, "{err:?}");
            assert_eq!(reason_of(&s), reason, "{err:?}");
        }
    }

    #[test]
    fn retry_hints_are_carried() {
        let s = to_status(&Error::RateLimited { retry_after_ms: 77 });
        assert_eq!(retry_after_ms_of(&s), 77);
        let s = to_status(&Error::UnsealRejected { retry_after_ms: 9 });
        assert_eq!(retry_after_ms_of(&s), 9);
        assert_eq!(retry_after_ms_of(&to_status(&Error::Sealed)), 0);
    }

    #[test]
    fn internal_details_stay_on_the_server() {
        let s = to_status(&Error::Internal("sled: Other at /var/lib".into()));
        assert_eq!(s.message(), "internal error");
        let s = to_status(&Error::Corruption("record keys/secret-id".into()));
        assert!(!s.message().contains("secret-id"));
        let s = to_status(&Error::KeyNotFound("demo".into()));
        assert!(s.message().contains("demo"));
        let s = to_status(&Error::RekeyStagingExpired);
        assert_eq!(
            s.message(),
            "rekey staging expired; the current unseal configuration still applies"
        );
    }

    #[test]
    fn permission_denied_has_reason() {
        let s = permission_denied("Admin/CreateKey");
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(reason_of(&s), WireReason::PermissionDenied);
        assert!(s.message().contains("Admin/CreateKey"));
        let s = invalid_argument("length");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&s), WireReason::InvalidArgument);
    }
}
