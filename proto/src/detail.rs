//! Encodes and decodes the `ErrorDetail` (stable reason code) carried in a gRPC status.

use prost::Message;

use crate::v1::{ErrorDetail, Reason};

/// Builds a status whose `details` carry `reason` (and an optional retry hint).
pub fn status_with_reason(
    code: tonic::Code,
    message: impl Into<String>,
    reason: Reason,
    retry_after_ms: u64,
) -> tonic::Status {
    let detail = ErrorDetail {
        reason: reason as i32,
        retry_after_ms,
    };
    tonic::Status::with_details(code, message, detail.encode_to_vec().into())
}

/// The stable reason code of a status, `Reason::Unspecified` when it carries none.
pub fn reason_of(status: &tonic::Status) -> Reason {
    ErrorDetail::decode(status.details())
        .ok()
        .and_then(|d| Reason::try_from(d.reason).ok())
        .unwrap_or(Reason::Unspecified)
}

/// The retry hint of a status (milliseconds), 0 when it carries none.
pub fn retry_after_ms_of(status: &tonic::Status) -> u64 {
    ErrorDetail::decode(status.details())
        .map(|d| d.retry_after_ms)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_round_trips_through_status_details() {
        let s = status_with_reason(
            tonic::Code::FailedPrecondition,
            "key disabled",
            Reason::KeyDisabled,
            0,
        );
        assert_eq!(reason_of(&s), Reason::KeyDisabled);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let s = status_with_reason(tonic::Code::Unavailable, "sealed", Reason::Sealed, 1500);
        assert_eq!(reason_of(&s), Reason::Sealed);
        assert_eq!(retry_after_ms_of(&s), 1500);
    }

    #[test]
    fn status_without_detail_has_unspecified_reason() {
        let s = tonic::Status::internal("boom");
        assert_eq!(reason_of(&s), Reason::Unspecified);
        assert_eq!(retry_after_ms_of(&s), 0);
    }
}
