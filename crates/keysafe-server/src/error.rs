//! The one place where domain errors become HTTP answers: each `CoreError` variant maps to a
//! stable error code (and so to its status), never by looking at message text. Server-side
//! failures (5xx) carry a generic message; the cause goes to the log under the request id.

use axum::response::{IntoResponse, Response};
use keysafe_core::CoreError;
use keysafe_proto::ErrorCode;

/// An error on its way to the client. The request-id middleware renders its JSON body, so
/// that every error carries the request id.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn internal(cause: &str) -> Self {
        tracing::error!(cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let code = match &e {
            CoreError::InvalidInput(_) => ErrorCode::BadRequest,
            CoreError::InvalidName(_) => ErrorCode::InvalidName,
            CoreError::ClientCertificateRequired => ErrorCode::ClientCertificateRequired,
            CoreError::UnknownClient => ErrorCode::UnknownClient,
            CoreError::InvalidAuth => ErrorCode::InvalidAuth,
            CoreError::ClientPending => ErrorCode::ClientPending,
            CoreError::ClientDisabled => ErrorCode::ClientDisabled,
            CoreError::TokenRequired => ErrorCode::TokenRequired,
            CoreError::SuspectedClone => ErrorCode::SuspectedClone,
            CoreError::Conflict(_) => ErrorCode::VersionConflict,
            CoreError::Forbidden(_) => ErrorCode::Forbidden,
            CoreError::NotFound(_) => ErrorCode::NotFound,
            CoreError::Deleted => ErrorCode::Deleted,
            CoreError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            CoreError::AlreadyRegistered => ErrorCode::AlreadyRegistered,
            CoreError::InvalidState(_) => ErrorCode::InvalidState,
            CoreError::InUse(_) => ErrorCode::InUse,
            CoreError::VersionConflict { .. } => ErrorCode::VersionConflict,
            CoreError::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            CoreError::Integrity(_) => ErrorCode::IntegrityError,
            CoreError::Sealed => ErrorCode::Sealed,
            CoreError::Unavailable(_) => ErrorCode::Unavailable,
            CoreError::ReadOnly => ErrorCode::ReadOnly,
            CoreError::Internal(_) => ErrorCode::Internal,
        };
        let message = match &e {
            CoreError::Integrity(detail) => {
                tracing::error!(detail = %detail, "stored data failed its integrity check");
                "stored data failed its integrity check; nothing was returned".to_owned()
            }
            CoreError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                "internal error".to_owned()
            }
            CoreError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "unavailable");
                "the service is temporarily unavailable; retry".to_owned()
            }
            other => other.to_string(),
        };
        Self { code, message }
    }
}

impl From<crate::backup::BackupError> for ApiError {
    fn from(e: crate::backup::BackupError) -> Self {
        use crate::backup::BackupError;
        match e {
            BackupError::Refused(m) => Self::new(ErrorCode::BadRequest, m),
            BackupError::Forbidden(m) => Self::new(ErrorCode::Forbidden, m),
            BackupError::Failed(m) => Self::internal(&m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http::StatusCode::from_u16(self.code.http_status())
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = status.into_response();
        if let Some(seconds) = crate::cluster::retry_after(self.code) {
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        r.extensions_mut().insert(self);
        r
    }
}
