//! The CLI's error type and its mapping to process exit codes and operator hints.

use std::fmt;

use vhsm_proto::v1::Reason;

/// Process exit codes (the stable contract in docs/contracts.md and docs/admin-cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// 1: bad usage or any other error.
    Usage,
    /// 2: vhsmd cannot be reached (network, TLS handshake).
    Unreachable,
    /// 3: the appliance is sealed or not initialized.
    Sealed,
    /// 4: a passphrase or share was rejected, or too many attempts (rate limited).
    Rejected,
    /// 5: the client certificate does not grant the role (or the key's usage forbids it).
    PermissionDenied,
    /// 6: no such key.
    NotFound,
    /// 7: the object is in the wrong state (exists, disabled, already initialized...).
    InvalidState,
    /// 8: integrity failure: corruption, invalid backup, audit verification failure.
    Integrity,
}

impl ExitKind {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Usage => 1,
            ExitKind::Unreachable => 2,
            ExitKind::Sealed => 3,
            ExitKind::Rejected => 4,
            ExitKind::PermissionDenied => 5,
            ExitKind::NotFound => 6,
            ExitKind::InvalidState => 7,
            ExitKind::Integrity => 8,
        }
    }
}

/// Any failure of a vhsm-admin command. Messages never contain secrets.
#[derive(Debug)]
pub struct CliError {
    kind: ExitKind,
    message: String,
    hint: Option<String>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Result alias of the CLI library.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// A usage / other error (exit 1).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitKind::Usage, message)
    }

    /// Adds an operator hint printed after the error.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A local file operation failed (exit 1). `what` names the file; the io error never holds secrets.
    pub fn io(what: &str, path: &std::path::Path, err: &std::io::Error) -> Self {
        Self::usage(format!("cannot {what} {}: {err}", path.display()))
    }

    /// vhsmd could not be reached (exit 2).
    pub fn unreachable(endpoint: &str, cause: &str) -> Self {
        let e = Self::new(
            ExitKind::Unreachable,
            format!("cannot reach vhsmd at {endpoint}: {cause}; is it running? check --endpoint"),
        );
        if cause.contains("certificate") || cause.contains("alert") {
            e.with_hint("the TLS handshake failed: check --server-name, --ca and that the client certificate is signed by vhsmd's client CA")
        } else {
            e
        }
    }

    /// Maps a gRPC status from vhsmd (its `ErrorDetail` reason, else its code) to an error.
    /// `action` says what was attempted, e.g. "unseal".
    pub fn from_status(action: &str, status: &tonic::Status) -> Self {
        let reason = vhsm_proto::reason_of(status);
        let retry_ms = vhsm_proto::retry_after_ms_of(status);
        let (kind, hint) = classify(reason, status.code(), retry_ms);
        let server_msg = status.message();
        let message = if reason == Reason::Unspecified && status.code() == tonic::Code::Unavailable
        {
            format!("{action} failed: vhsmd unavailable: {server_msg}")
        } else if server_msg.is_empty() {
            format!("{action} failed: {}", reason.as_str_name())
        } else {
            format!("{action} failed: {server_msg} ({})", reason.as_str_name())
        };
        CliError {
            kind,
            message,
            hint,
        }
    }

    /// The exit kind.
    pub fn kind(&self) -> ExitKind {
        self.kind
    }

    /// The operator hint, if any.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

/// Exit kind and hint for a reason (or, when the status carries no reason, its gRPC code).
fn classify(reason: Reason, code: tonic::Code, retry_ms: u64) -> (ExitKind, Option<String>) {
    let retry = |what: &str| {
        if retry_ms > 0 {
            Some(format!(
                "{what}; retry after {:.1} s",
                retry_ms as f64 / 1000.0
            ))
        } else {
            Some(what.to_string())
        }
    };
    match reason {
        Reason::Uninitialized => (
            ExitKind::Sealed,
            Some("the appliance is not initialized: run `vhsm-admin init` (or `backup restore`)".into()),
        ),
        Reason::Sealed => (
            ExitKind::Sealed,
            Some("the appliance is sealed: run `vhsm-admin unseal`".into()),
        ),
        Reason::UnsealRejected => (
            ExitKind::Rejected,
            retry("wrong passphrase or share (the appliance does not say which)"),
        ),
        Reason::InvalidShare => (
            ExitKind::Rejected,
            Some("the share file is corrupt, already submitted, or belongs to another store".into()),
        ),
        Reason::RateLimited => (ExitKind::Rejected, retry("too many attempts")),
        Reason::RekeyNotStaged => (
            ExitKind::InvalidState,
            Some("no rekey is staged under that id (replaced, committed, aborted or never staged); the configuration in force is unchanged: see `vhsm-admin status`".into()),
        ),
        Reason::RekeyExpired => (
            ExitKind::InvalidState,
            Some("the staged rekey expired and was discarded; the OLD passphrase / shares still work: run `vhsm-admin rekey` again".into()),
        ),
        Reason::PermissionDenied => (
            ExitKind::PermissionDenied,
            Some("this client certificate does not grant the role the call needs (admin certificate: admin.crt)".into()),
        ),
        Reason::UsageNotAllowed => (
            ExitKind::PermissionDenied,
            Some("the key's usage set does not allow this operation".into()),
        ),
        Reason::KeyNotFound => (
            ExitKind::NotFound,
            Some("list the keys with `vhsm-admin key list`".into()),
        ),
        Reason::KeyDestroyed => (
            ExitKind::NotFound,
            Some("the key was destroyed; its material is gone".into()),
        ),
        Reason::AlreadyInitialized => (
            ExitKind::InvalidState,
            Some("the appliance is already initialized; to change the passphrase or custodians use `vhsm-admin rekey`".into()),
        ),
        Reason::AlreadyUnsealed => (
            ExitKind::InvalidState,
            Some("the appliance is already unsealed".into()),
        ),
        Reason::KeyExists => (
            ExitKind::InvalidState,
            Some("choose another key id".into()),
        ),
        Reason::KeyDisabled => (
            ExitKind::InvalidState,
            Some("enable it with `vhsm-admin key enable ID`".into()),
        ),
        Reason::KeyPendingDeletion => (
            ExitKind::InvalidState,
            Some("cancel the deletion with `vhsm-admin key cancel-deletion ID`".into()),
        ),
        Reason::KeyVersionNotAllowed => (ExitKind::InvalidState, None),
        Reason::KeyVersionExhausted => (
            ExitKind::InvalidState,
            Some("rotate the key with `vhsm-admin key rotate ID`".into()),
        ),
        Reason::Corruption => (
            ExitKind::Integrity,
            Some("stored data failed authentication: restore from a backup and investigate tampering".into()),
        ),
        Reason::SelfTestFailed => (
            ExitKind::Integrity,
            Some("the appliance failed its self-tests and refuses to unseal".into()),
        ),
        Reason::InvalidBackup => (
            ExitKind::Integrity,
            Some("the backup is malformed or failed its integrity check".into()),
        ),
        Reason::InvalidArgument
        | Reason::TooLarge
        | Reason::InvalidCiphertext
        | Reason::Internal => (ExitKind::Usage, None),
        Reason::StorageFailed => (
            ExitKind::Unreachable,
            Some("the node's storage failed a write (disk full or an I/O error): it sealed itself and exits; free space or fix the disk, let it restart, and unseal it (docs/reliability.md, \"Fail-stop\")".into()),
        ),
        Reason::AuditMismatch => (
            ExitKind::Integrity,
            Some("the audit log on disk does not continue its last signed record: records were removed or forged while sealed; see the runbook in docs/runbook-ceremonies.md (\"Audit anchor mismatch\")".into()),
        ),
        Reason::NotServing => (
            ExitKind::Unreachable,
            Some("this node cannot serve now (no read lease, or a witness): see `vhsm-admin cluster status`".into()),
        ),
        Reason::NoQuorum => (
            ExitKind::Unreachable,
            Some("the cluster has no quorum (or no leader yet); the change may still apply: check `vhsm-admin cluster status`, then retry".into()),
        ),
        Reason::Conflict => (
            ExitKind::InvalidState,
            Some("another node changed the store at the same moment; nothing was applied: retry".into()),
        ),
        Reason::AlreadyApplied => (
            ExitKind::InvalidState,
            Some("this request was already applied (a retry of an acknowledged change)".into()),
        ),
        Reason::ApprovalRequired => (
            ExitKind::InvalidState,
            Some("the approval policy guards this operation: propose it with `vhsm-admin approval propose ...` and have the approvers approve it (docs/runbook-approvals.md)".into()),
        ),
        Reason::ProposalNotFound => (
            ExitKind::NotFound,
            Some("list the proposals with `vhsm-admin approval list`".into()),
        ),
        Reason::ProposalClosed => (
            ExitKind::InvalidState,
            Some("the proposal can no longer run: see `vhsm-admin approval show ID`, and propose again if the operation is still wanted".into()),
        ),
        Reason::ApprovalRefused => (
            ExitKind::Rejected,
            Some("check the approver name and key file (`vhsm-admin approval policy show` lists the registered approvers)".into()),
        ),
        Reason::Unspecified => classify_code(code),
    }
}

/// Said whenever a call may have reached vhsmd but its answer did not come back.
const MAYBE_APPLIED: &str = "If this was a change it may already be applied: check (`vhsm-admin \
     status`, `key show ID`) before you retry";

/// Fallback for statuses without an `ErrorDetail` (transport errors, proxies, older servers).
fn classify_code(code: tonic::Code) -> (ExitKind, Option<String>) {
    use tonic::Code;
    match code {
        Code::Unavailable | Code::DeadlineExceeded => (
            ExitKind::Unreachable,
            Some(format!(
                "is vhsmd running? check --endpoint. {MAYBE_APPLIED}"
            )),
        ),
        // A connection that broke during the call (vhsmd killed or restarted mid-request).
        Code::Unknown | Code::Cancelled => (
            ExitKind::Unreachable,
            Some(format!(
                "the connection to vhsmd broke during the call. {MAYBE_APPLIED}"
            )),
        ),
        Code::PermissionDenied => (ExitKind::PermissionDenied, None),
        Code::Unauthenticated => (ExitKind::Rejected, None),
        Code::NotFound => (ExitKind::NotFound, None),
        Code::AlreadyExists | Code::FailedPrecondition => (ExitKind::InvalidState, None),
        Code::DataLoss => (ExitKind::Integrity, None),
        _ => (ExitKind::Usage, None),
    }
}

/// Joins an error and its `source()` chain into one line (transport errors hide the cause there).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tonic::Code;
    use vhsm_proto::status_with_reason;

    fn exit_of(code: Code, reason: Reason) -> u8 {
        CliError::from_status("op", &status_with_reason(code, "msg", reason, 0))
            .kind()
            .code()
    }

    #[test]
    fn every_reason_maps_to_its_exit_code() {
        let table = [
            (Code::Unavailable, Reason::Uninitialized, 3),
            (Code::Unavailable, Reason::Sealed, 3),
            (Code::AlreadyExists, Reason::AlreadyInitialized, 7),
            (Code::FailedPrecondition, Reason::AlreadyUnsealed, 7),
            (Code::Unauthenticated, Reason::UnsealRejected, 4),
            (Code::InvalidArgument, Reason::InvalidShare, 4),
            (Code::ResourceExhausted, Reason::RateLimited, 4),
            (Code::NotFound, Reason::KeyNotFound, 6),
            (Code::AlreadyExists, Reason::KeyExists, 7),
            (Code::FailedPrecondition, Reason::KeyDisabled, 7),
            (Code::FailedPrecondition, Reason::KeyPendingDeletion, 7),
            (Code::NotFound, Reason::KeyDestroyed, 6),
            (Code::PermissionDenied, Reason::UsageNotAllowed, 5),
            (Code::InvalidArgument, Reason::InvalidCiphertext, 1),
            (Code::InvalidArgument, Reason::KeyVersionNotAllowed, 7),
            (Code::InvalidArgument, Reason::InvalidArgument, 1),
            (Code::PermissionDenied, Reason::PermissionDenied, 5),
            (Code::OutOfRange, Reason::TooLarge, 1),
            (Code::Internal, Reason::Corruption, 8),
            (Code::Internal, Reason::SelfTestFailed, 8),
            (Code::InvalidArgument, Reason::InvalidBackup, 8),
            (Code::Internal, Reason::Internal, 1),
            (Code::FailedPrecondition, Reason::RekeyNotStaged, 7),
            (Code::FailedPrecondition, Reason::RekeyExpired, 7),
            (Code::Unavailable, Reason::StorageFailed, 2),
            (Code::DataLoss, Reason::AuditMismatch, 8),
            (Code::Unknown, Reason::Unspecified, 2),
            (Code::Cancelled, Reason::Unspecified, 2),
            (Code::Unavailable, Reason::Unspecified, 2),
        ];
        for (code, reason, want) in table {
            assert_eq!(exit_of(code, reason), want, "{reason:?}");
        }
    }

    #[test]
    fn statuses_without_detail_fall_back_on_the_grpc_code() {
        let exit = |s: tonic::Status| CliError::from_status("op", &s).kind().code();
        assert_eq!(exit(tonic::Status::unavailable("connection refused")), 2);
        assert_eq!(exit(tonic::Status::permission_denied("no role")), 5);
        assert_eq!(exit(tonic::Status::not_found("x")), 6);
        assert_eq!(exit(tonic::Status::unauthenticated("x")), 4);
        assert_eq!(exit(tonic::Status::failed_precondition("x")), 7);
        assert_eq!(exit(tonic::Status::internal("x")), 1);
    }

    #[test]
    fn rate_limit_hint_shows_retry_after() {
        let s = status_with_reason(
            Code::ResourceExhausted,
            "slow down",
            Reason::RateLimited,
            2500,
        );
        let e = CliError::from_status("unseal", &s);
        assert_eq!(e.kind(), ExitKind::Rejected);
        assert!(
            e.hint().unwrap().contains("retry after 2.5 s"),
            "{:?}",
            e.hint()
        );
        assert!(e.to_string().starts_with("unseal failed: slow down"));
        let s = status_with_reason(Code::Unauthenticated, "", Reason::UnsealRejected, 0);
        let e = CliError::from_status("unseal", &s);
        assert!(!e.hint().unwrap().contains("retry after"));
        assert!(e.to_string().contains("REASON_UNSEAL_REJECTED"));
    }

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let all = [
            (ExitKind::Usage, 1),
            (ExitKind::Unreachable, 2),
            (ExitKind::Sealed, 3),
            (ExitKind::Rejected, 4),
            (ExitKind::PermissionDenied, 5),
            (ExitKind::NotFound, 6),
            (ExitKind::InvalidState, 7),
            (ExitKind::Integrity, 8),
        ];
        for (k, c) in all {
            assert_eq!(k.code(), c);
        }
    }

    #[test]
    fn unreachable_message_tells_what_to_check() {
        let e = CliError::unreachable("https://127.0.0.1:7443", "connection refused");
        assert_eq!(e.kind().code(), 2);
        assert_eq!(
            e.to_string(),
            "cannot reach vhsmd at https://127.0.0.1:7443: connection refused; is it running? check --endpoint"
        );
        assert!(e.hint().is_none());
        let e = CliError::unreachable("https://h:1", "invalid peer certificate: UnknownIssuer");
        assert!(e.hint().unwrap().contains("--server-name"));
    }

    #[test]
    fn error_chain_joins_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(error_chain(&e), "transport error: connection refused");
    }
}
