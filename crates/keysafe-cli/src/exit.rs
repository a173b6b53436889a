//! Exit codes (documented in docs/cli.md) and the one-line rendering of errors.

use keysafe_client::ClientError;
use keysafe_proto::ErrorCode;

pub const GENERAL: u8 = 1;
/// Bad arguments or input (also clap's own usage errors).
pub const USAGE: u8 = 2;
pub const NOT_FOUND: u8 = 3;
/// Authentication or authorisation refused (unknown, pending or disabled client; wrong secret).
pub const DENIED: u8 = 4;
/// A conflict: exists already, stale version, deleted, wrong state.
pub const CONFLICT: u8 = 5;
/// The server cannot be reached or is unavailable (sealed, database down).
pub const UNAVAILABLE: u8 = 6;
/// A security check failed: server fingerprint mismatch, or stored data failed integrity.
pub const SECURITY: u8 = 7;
/// A local file problem: insecure key file permissions, missing or broken client home.
pub const LOCAL: u8 = 8;

pub fn code_for(e: &anyhow::Error) -> u8 {
    if e.chain()
        .any(|c| c.downcast_ref::<SecurityError>().is_some())
    {
        return SECURITY;
    }
    if let Some(ve) = e
        .chain()
        .find_map(|c| c.downcast_ref::<keysafe_volume::VolumeError>())
    {
        use keysafe_volume::VolumeError as V;
        match ve {
            V::Invalid(_) => return USAGE,
            V::NotFound(_) => return NOT_FOUND,
            V::Conflict(_) => return CONFLICT,
            V::Tampered(_) => return SECURITY,
            _ => {}
        }
    }
    if let Some(r) = e.chain().find_map(|c| c.downcast_ref::<Refused>()) {
        return code_of(r.code);
    }
    let Some(ce) = e.chain().find_map(|c| c.downcast_ref::<ClientError>()) else {
        return if e.chain().any(|c| c.downcast_ref::<UsageError>().is_some()) {
            USAGE
        } else {
            GENERAL
        };
    };
    match ce.last() {
        ClientError::Api { code, .. } => code_of(*code),
        ClientError::Connect { .. } | ClientError::Unexpected { .. } => UNAVAILABLE,
        ClientError::FingerprintMismatch { .. } => SECURITY,
        ClientError::InsecureKeyFile { .. } | ClientError::Home(_) => LOCAL,
        ClientError::Invalid(_) => USAGE,
        // This client holds no key that opens the payload (not a recipient, not admitted).
        ClientError::Decrypt(_) => DENIED,
        // `last()` never returns these variants.
        ClientError::AllServersFailed { .. } | ClientError::CacheTooOld { .. } => UNAVAILABLE,
    }
}

/// The exit code of an API error code (and of the same refusal made offline).
fn code_of(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadRequest
        | ErrorCode::InvalidName
        | ErrorCode::PayloadTooLarge
        | ErrorCode::MethodNotAllowed => USAGE,
        ErrorCode::NotFound | ErrorCode::NoRoute => NOT_FOUND,
        ErrorCode::ClientCertificateRequired
        | ErrorCode::UnknownClient
        | ErrorCode::InvalidAuth
        | ErrorCode::ClientPending
        | ErrorCode::ClientDisabled
        | ErrorCode::Forbidden
        | ErrorCode::TokenRequired
        | ErrorCode::RateLimited => DENIED,
        ErrorCode::SuspectedClone => SECURITY,
        ErrorCode::AlreadyExists
        | ErrorCode::AlreadyRegistered
        | ErrorCode::InvalidState
        | ErrorCode::InUse
        | ErrorCode::VersionConflict
        | ErrorCode::Deleted => CONFLICT,
        ErrorCode::Sealed
        | ErrorCode::Unavailable
        | ErrorCode::ReadOnly
        | ErrorCode::RequestTimeout => UNAVAILABLE,
        ErrorCode::IntegrityError => SECURITY,
        ErrorCode::Internal => GENERAL,
    }
}

/// A refusal an offline command makes itself, as the server would answer it: the same exit
/// code as that API error.
#[derive(Debug)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// A security check made by the CLI itself failed (a broken audit trail).
#[derive(Debug)]
pub struct SecurityError(pub String);

impl std::fmt::Display for SecurityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecurityError {}

/// A mistake in how the command was called, detected after parsing.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The whole cause chain on one line, without repeating a message its cause already says.
pub fn render(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if parts.last().is_none_or(|last| !last.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
