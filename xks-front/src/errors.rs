//! The one table mapping every failure to an XKS `errorName` + HTTP status, and its JSON response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vhsm_proto::v1::Reason;

use crate::key_manager::VhsmError;

/// The error names of the XKS Proxy API v1 (spec §9.2), plus our 405 for a non-POST API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    /// 400: invalid input.
    Validation,
    /// 400: the key is disabled or pending deletion.
    InvalidState,
    /// 400: ciphertext, IV, tag, AAD or metadata is wrong.
    InvalidCiphertext,
    /// 400: the key's usage does not allow the operation.
    InvalidKeyUsage,
    /// 401: SigV4 verification failed.
    AuthenticationFailed,
    /// 403: secondary authorization denied the request.
    AccessDenied,
    /// 404: the external key does not exist (or is not in this key store).
    KeyNotFound,
    /// 404: unknown path or path prefix.
    InvalidUriPath,
    /// 429: concurrency or per-key-store rate limit reached.
    Throttling,
    /// 501: an input is above this implementation's limits.
    UnsupportedOperation,
    /// 503: vhsm did not answer within the deadline.
    DependencyTimeout,
    /// 500: any other failure (vhsm sealed, unreachable, internal).
    Internal,
    /// 405: a method other than POST on an API path (no XKS name is defined for it).
    MethodNotAllowed,
}

impl ErrorName {
    /// The `errorName` string sent to KMS.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "ValidationException",
            Self::InvalidState => "InvalidStateException",
            Self::InvalidCiphertext => "InvalidCiphertextException",
            Self::InvalidKeyUsage => "InvalidKeyUsageException",
            Self::AuthenticationFailed => "AuthenticationFailedException",
            Self::AccessDenied => "AccessDeniedException",
            Self::KeyNotFound => "KeyNotFoundException",
            Self::InvalidUriPath => "InvalidUriPathException",
            Self::Throttling => "ThrottlingException",
            Self::UnsupportedOperation => "UnsupportedOperationException",
            Self::DependencyTimeout => "DependencyTimeoutException",
            Self::Internal => "InternalException",
            Self::MethodNotAllowed => "MethodNotAllowedException",
        }
    }

    /// The HTTP status that goes with the name.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation
            | Self::InvalidState
            | Self::InvalidCiphertext
            | Self::InvalidKeyUsage => StatusCode::BAD_REQUEST,
            Self::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::KeyNotFound | Self::InvalidUriPath => StatusCode::NOT_FOUND,
            Self::Throttling => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedOperation => StatusCode::NOT_IMPLEMENTED,
            Self::DependencyTimeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// An XKS error response. The message is a fixed string chosen by us: it never echoes input,
/// secrets or key material, and is short printable ASCII (< 512 chars, as the spec requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XksError {
    /// The XKS error name.
    pub name: ErrorName,
    /// A short, fixed, printable-ASCII explanation.
    pub message: &'static str,
}

impl XksError {
    /// An error with the given name and fixed message.
    pub const fn new(name: ErrorName, message: &'static str) -> Self {
        Self { name, message }
    }

    /// `ValidationException` with a fixed message naming the bad field.
    pub const fn validation(message: &'static str) -> Self {
        Self::new(ErrorName::Validation, message)
    }

    // The fixed answers of the request pipeline (router), named once.

    /// InvalidUriPath: the request URI is longer than the limit.
    pub const URI_TOO_LONG: XksError = XksError::new(ErrorName::InvalidUriPath, "URI too long");

    /// InvalidUriPath: no key store or XKS operation at this path.
    pub const UNKNOWN_PATH: XksError = XksError::new(ErrorName::InvalidUriPath, "unknown URI path");

    /// MethodNotAllowed: an API path called with another method.
    pub const NOT_POST: XksError = XksError::new(ErrorName::MethodNotAllowed, "use POST");

    /// UnsupportedOperation: the body is above `api::MAX_BODY` (64 KiB, fixed).
    pub const BODY_TOO_LARGE: XksError =
        XksError::new(ErrorName::UnsupportedOperation, "request body too large");

    /// Throttling: this client has too many requests not yet SigV4-verified.
    pub const UNAUTHENTICATED_FLOOD: XksError = XksError::new(
        ErrorName::Throttling,
        "too many unauthenticated requests from this client",
    );

    /// Validation: the body did not arrive within the body timeout.
    pub const BODY_TIMEOUT: XksError =
        XksError::new(ErrorName::Validation, "request body not received in time");

    /// Validation: the client stopped sending the body.
    pub const BODY_INCOMPLETE: XksError =
        XksError::new(ErrorName::Validation, "request body incomplete");

    /// AuthenticationFailed: SigV4 verification failed (the reason is logged, never answered).
    pub const BAD_SIGNATURE: XksError = XksError::new(
        ErrorName::AuthenticationFailed,
        "request signature verification failed",
    );

    /// Throttling: `limits.max_concurrency` authenticated requests are being served.
    pub const TOO_MANY_IN_FLIGHT: XksError =
        XksError::new(ErrorName::Throttling, "too many requests in flight");

    /// Throttling: the key store's `rate_limit_per_sec` / `burst`.
    pub const KEY_STORE_RATE: XksError =
        XksError::new(ErrorName::Throttling, "key store request rate exceeded");

    /// Validation: the request is not `application/json`.
    pub const NOT_JSON: XksError = XksError::new(
        ErrorName::Validation,
        "Content-Type must be application/json",
    );

    /// Internal: the answer could not be serialized.
    pub const ENCODING_FAILED: XksError =
        XksError::new(ErrorName::Internal, "response encoding failed");

    /// KeyNotFound: the key is not in this key store's allow-list, or vhsm does not have it.
    pub const KEY_NOT_FOUND: XksError =
        XksError::new(ErrorName::KeyNotFound, "external key not found");

    /// AccessDenied: a `[[keystore.rule]]` denied the request.
    pub const DENIED_BY_POLICY: XksError = XksError::new(
        ErrorName::AccessDenied,
        "request denied by secondary authorization",
    );

    /// Internal: vhsm answered with wrong IV, tag, metadata or ciphertext sizes.
    pub const BAD_KEY_MANAGER_OUTPUT: XksError = XksError::new(
        ErrorName::Internal,
        "key manager returned a malformed result",
    );

    /// Internal: the CDIV recomputed here differs from vhsm's.
    pub const INTEGRITY_MISMATCH: XksError =
        XksError::new(ErrorName::Internal, "integrity value mismatch");

    /// Maps a vhsm failure to the XKS error KMS sees (the vhsm edge of the one table).
    pub fn from_vhsm(err: &VhsmError) -> Self {
        match err {
            VhsmError::Timeout => Self::new(
                ErrorName::DependencyTimeout,
                "key manager did not answer in time",
            ),
            VhsmError::Unavailable => {
                Self::new(ErrorName::Internal, "no key manager node is reachable")
            }
            VhsmError::Rejected(reason) => Self::from_reason(*reason),
        }
    }

    /// Maps a vhsm stable reason code to the XKS error.
    pub fn from_reason(reason: Reason) -> Self {
        use ErrorName as N;
        match reason {
            Reason::KeyNotFound | Reason::KeyDestroyed => {
                Self::new(N::KeyNotFound, "external key not found")
            }
            Reason::KeyDisabled | Reason::KeyPendingDeletion => {
                Self::new(N::InvalidState, "external key is not enabled")
            }
            Reason::KeyVersionExhausted => Self::new(
                N::InvalidState,
                "external key reached its encryption limit and must be rotated",
            ),
            Reason::UsageNotAllowed => {
                Self::new(N::InvalidKeyUsage, "key does not allow this operation")
            }
            Reason::InvalidCiphertext | Reason::KeyVersionNotAllowed => Self::new(
                N::InvalidCiphertext,
                "ciphertext, tag, IV, AAD or metadata is invalid",
            ),
            Reason::InvalidArgument => Self::new(N::Validation, "key manager rejected an input"),
            Reason::TooLarge => Self::new(N::UnsupportedOperation, "input above supported size"),
            Reason::Sealed | Reason::Uninitialized => {
                Self::new(N::Internal, "key manager is sealed")
            }
            _ => Self::new(N::Internal, "key manager failure"),
        }
    }

    /// The JSON body `{"errorName": ..., "errorMessage": ...}`.
    pub fn body(&self) -> Vec<u8> {
        // Both strings are fixed ASCII without quotes or backslashes; serde_json escapes anyway.
        serde_json::json!({ "errorName": self.name.as_str(), "errorMessage": self.message })
            .to_string()
            .into_bytes()
    }
}

impl std::fmt::Display for XksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name.as_str(), self.message)
    }
}

impl IntoResponse for XksError {
    fn into_response(self) -> Response {
        let mut resp = (self.name.status(), self.body()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.name == ErrorName::MethodNotAllowed {
            headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        resp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_maps_per_the_table() {
        let cases = [
            (Reason::KeyNotFound, ErrorName::KeyNotFound),
            (Reason::KeyDestroyed, ErrorName::KeyNotFound),
            (Reason::KeyDisabled, ErrorName::InvalidState),
            (Reason::KeyPendingDeletion, ErrorName::InvalidState),
            (Reason::KeyVersionExhausted, ErrorName::InvalidState),
            (Reason::UsageNotAllowed, ErrorName::InvalidKeyUsage),
            (Reason::InvalidCiphertext, ErrorName::InvalidCiphertext),
            (Reason::KeyVersionNotAllowed, ErrorName::InvalidCiphertext),
            (Reason::InvalidArgument, ErrorName::Validation),
            (Reason::TooLarge, ErrorName::UnsupportedOperation),
            (Reason::Sealed, ErrorName::Internal),
            (Reason::Uninitialized, ErrorName::Internal),
            (Reason::Internal, ErrorName::Internal),
            (Reason::Corruption, ErrorName::Internal),
            (Reason::Unspecified, ErrorName::Internal),
            (Reason::PermissionDenied, ErrorName::Internal),
        ];
        for (reason, name) in cases {
            assert_eq!(XksError::from_reason(reason).name, name, "{reason:?}");
        }
        assert_eq!(
            XksError::from_vhsm(&VhsmError::Timeout).name,
            ErrorName::DependencyTimeout
        );
        assert_eq!(
            XksError::from_vhsm(&VhsmError::Unavailable).name,
            ErrorName::Internal
        );
    }

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ErrorName::Validation.status(), 400);
        assert_eq!(ErrorName::AuthenticationFailed.status(), 401);
        assert_eq!(ErrorName::AccessDenied.status(), 403);
        assert_eq!(ErrorName::InvalidUriPath.status(), 404);
        assert_eq!(ErrorName::MethodNotAllowed.status(), 405);
        assert_eq!(ErrorName::Throttling.status(), 429);
        assert_eq!(ErrorName::Internal.status(), 500);
        assert_eq!(ErrorName::UnsupportedOperation.status(), 501);
        assert_eq!(ErrorName::DependencyTimeout.status(), 503);
    }

    #[test]
    fn response_is_json_with_allow_header_on_405() {
        let resp = XksError::new(ErrorName::MethodNotAllowed, "use POST").into_response();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "POST");
        let body: serde_json::Value =
            serde_json::from_slice(&XksError::validation("bad").body()).unwrap();
        assert_eq!(body["errorName"], "ValidationException");
        assert_eq!(body["errorMessage"], "bad");
    }
}
