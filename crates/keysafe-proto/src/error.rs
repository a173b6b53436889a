//! The stable error codes of the HTTP API and the one table that maps each to an HTTP status.
//! Codes are part of the public contract (docs/api.md lists them); never rename one.

use serde::{Deserialize, Serialize};

/// Every error the API can answer with. The string form is the stable `code` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad query parameter, bad header).
    BadRequest,
    /// A deposit, organisation or client name breaks the naming rule.
    InvalidName,
    /// The route needs a client certificate and none was presented.
    ClientCertificateRequired,
    /// The presented certificate belongs to no registered client.
    UnknownClient,
    /// Registration failed: wrong organisation or wrong auth secret (deliberately not told apart).
    InvalidAuth,
    /// The client is registered but waits for an administrator's approval.
    ClientPending,
    /// The client has been disabled by an administrator.
    ClientDisabled,
    /// The caller is known but not allowed to do this (for example, not an administrator).
    Forbidden,
    /// An authenticated request came without the client's sequenced token (`x-keysafe-token`).
    TokenRequired,
    /// The client's sequenced token diverged: a copy of its identity is in use elsewhere. The
    /// client is locked out until an administrator resets its token.
    SuspectedClone,
    /// Nothing by that name is visible to the caller.
    NotFound,
    /// No such route.
    NoRoute,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The deposit is soft-deleted: undelete or purge it first.
    Deleted,
    /// The thing being created exists already.
    AlreadyExists,
    /// The client is registered already.
    AlreadyRegistered,
    /// The object is not in a state that allows this (for example, approving an active client).
    InvalidState,
    /// Something still depends on the object, so it cannot be deleted; the message names what.
    InUse,
    /// If-Match / If-None-Match did not hold: somebody else wrote first.
    VersionConflict,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// Too many attempts; slow down.
    RateLimited,
    /// The request (its body included) did not arrive, or could not be answered, in the time
    /// the server allows.
    RequestTimeout,
    /// Stored data failed its integrity check; nothing was returned.
    IntegrityError,
    /// The server cannot open its keyring (sealed); deposits cannot be served.
    Sealed,
    /// A dependency (the database) is unavailable; retry later.
    Unavailable,
    /// The database answers but accepts no writes: no primary is reachable, only a standby (a
    /// failover is under way). Reads still work; writes may be retried after `Retry-After`.
    ReadOnly,
    /// An unexpected server error; the log has the cause under the request id.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::InvalidName,
        ErrorCode::ClientCertificateRequired,
        ErrorCode::UnknownClient,
        ErrorCode::InvalidAuth,
        ErrorCode::ClientPending,
        ErrorCode::ClientDisabled,
        ErrorCode::Forbidden,
        ErrorCode::TokenRequired,
        ErrorCode::SuspectedClone,
        ErrorCode::NotFound,
        ErrorCode::NoRoute,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Deleted,
        ErrorCode::AlreadyExists,
        ErrorCode::AlreadyRegistered,
        ErrorCode::InvalidState,
        ErrorCode::InUse,
        ErrorCode::VersionConflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::IntegrityError,
        ErrorCode::Sealed,
        ErrorCode::Unavailable,
        ErrorCode::ReadOnly,
        ErrorCode::Internal,
    ];

    /// The HTTP status this code is always sent with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidName => 400,
            ErrorCode::ClientCertificateRequired
            | ErrorCode::UnknownClient
            | ErrorCode::InvalidAuth
            | ErrorCode::TokenRequired => 401,
            ErrorCode::ClientPending
            | ErrorCode::ClientDisabled
            | ErrorCode::Forbidden
            | ErrorCode::SuspectedClone => 403,
            ErrorCode::NotFound | ErrorCode::NoRoute => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::AlreadyExists
            | ErrorCode::AlreadyRegistered
            | ErrorCode::InvalidState
            | ErrorCode::InUse
            | ErrorCode::VersionConflict
            | ErrorCode::Deleted => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::IntegrityError | ErrorCode::Internal => 500,
            ErrorCode::Sealed | ErrorCode::Unavailable | ErrorCode::ReadOnly => 503,
        }
    }

    /// The stable string form, as it appears in `{"error":{"code":...}}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::ClientCertificateRequired => "client_certificate_required",
            ErrorCode::UnknownClient => "unknown_client",
            ErrorCode::InvalidAuth => "invalid_auth",
            ErrorCode::ClientPending => "client_pending",
            ErrorCode::ClientDisabled => "client_disabled",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenRequired => "token_required",
            ErrorCode::SuspectedClone => "suspected_clone",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Deleted => "deleted",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::InUse => "in_use",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::IntegrityError => "integrity_error",
            ErrorCode::Sealed => "sealed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a client may retry the same request against another server.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Sealed | ErrorCode::ReadOnly
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response: `{"error":{"code":"...","message":"...","request_id":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_form_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *code);
        }
    }

    #[test]
    fn statuses_are_errors() {
        for code in ErrorCode::ALL {
            let s = code.http_status();
            assert!((400..600).contains(&s), "{code} -> {s}");
        }
    }
}
