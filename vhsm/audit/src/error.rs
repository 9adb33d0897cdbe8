//! Errors of record parsing and chain verification (no secret data: the log is public).

/// A log or record could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum AuditError {
    /// The 1-based `line` is not a well-formed audit record (bad JSON, missing or unknown
    /// field). A single record parsed with `from_json_line` reports line 1.
    #[error("line {line}: malformed audit record")]
    Malformed {
        /// 1-based line number in the log.
        line: usize,
    },
}

/// Why a chain did not verify; each variant names the record where the break was found.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum VerifyError {
    /// A record is out of sequence: deletion, insertion or reordering.
    #[error("record at position {position}: expected seq {expected}, found {found}")]
    Sequence {
        /// 0-based position of the record in the log.
        position: usize,
        /// The sequence number that should be there.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// The record's `prev_hash` is not the hash of its predecessor (the predecessor, or this
    /// link, was edited).
    #[error("record seq {seq}: previous-hash link broken")]
    BrokenLink {
        /// Sequence number of the record whose link is broken.
        seq: u64,
    },
    /// The record's signature does not verify under the public key (edited or forged).
    #[error("record seq {seq}: bad signature")]
    BadSignature {
        /// Sequence number of the record.
        seq: u64,
    },
    /// An unsigned record of an event that only happens while the store is unsealed (when the
    /// signing key is in memory): forged, or its signature was stripped.
    #[error("record seq {seq}: event {event} must be signed")]
    UnsignedEvent {
        /// Sequence number of the record.
        seq: u64,
        /// Its event name.
        event: String,
    },
    /// An approval record does not hold up: a bad approver signature, a key the policy did not
    /// register, or an execution without the approvals it names.
    #[error("record seq {seq}: {why}")]
    BadApproval {
        /// Sequence number of the record.
        seq: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The log ends before the expected head.
    #[error("log ends at seq {found} but the expected head is seq {expected}")]
    Truncated {
        /// The expected head sequence number.
        expected: u64,
        /// The last sequence number in the log.
        found: u64,
    },
    /// The record at the expected head's seq does not have the expected hash.
    #[error("head hash mismatch at seq {seq}")]
    HeadMismatch {
        /// The expected head sequence number.
        seq: u64,
    },
    /// There is nothing to verify.
    #[error("log is empty")]
    Empty,
    /// The public key is not a valid Ed25519 point.
    #[error("invalid audit public key")]
    BadPublicKey,
    /// The starting sequence number of a suffix was 0 (sequence numbers start at 1).
    #[error("invalid first seq 0")]
    InvalidStart,
}
