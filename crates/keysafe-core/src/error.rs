//! The domain's error type. Variants name the kind of failure; the server maps each variant (never
//! its message) to a stable error code in exactly one place.

use crate::crypto::CryptoError;
use crate::seal::SealError;
use crate::store::StoreError;
use keysafe_proto::{DepositVersion, NameError};

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    InvalidName(#[from] NameError),
    #[error("this request needs a client certificate (mutual TLS)")]
    ClientCertificateRequired,
    #[error("the client certificate is not registered with this server")]
    UnknownClient,
    #[error("unknown organisation or wrong auth secret")]
    InvalidAuth,
    #[error("the client is waiting for an administrator's approval")]
    ClientPending,
    #[error("the client is disabled")]
    ClientDisabled,
    #[error("this request needs the client's sequenced token (header x-keysafe-token)")]
    TokenRequired,
    #[error(
        "this client identity is locked: its sequenced token diverged, so a copy of it is in use \
         elsewhere; an administrator must investigate and reset its token"
    )]
    SuspectedClone,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the deposit is deleted: undelete or purge it first")]
    Deleted,
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("this client is registered already")]
    AlreadyRegistered,
    #[error("{0}")]
    InvalidState(String),
    /// Something still depends on the object (a deletion refused); the message names it.
    #[error("{0}")]
    InUse(String),
    #[error("{}", match .current {
        Some(v) => format!("version conflict: the current version is {v}"),
        None => "version conflict: the deposit does not exist".to_owned(),
    })]
    VersionConflict { current: Option<DepositVersion> },
    /// A compare-and-set other than a deposit version lost a race (ACL serial, group epoch).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the payload is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Stored data failed authentication. The detail is for the log, never for the client.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("the server is sealed")]
    Sealed,
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database answers but accepts no writes (only a standby is reachable): reads go on,
    /// this write did not happen and may be retried later.
    #[error(
        "the database accepts no writes at the moment (no primary is reachable, only a \
         standby): nothing was changed; retry later"
    )]
    ReadOnly,
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// Maps a store error in the context of a named kind of object.
    pub fn from_store(e: StoreError, what: &'static str) -> Self {
        match e {
            StoreError::NotFound => CoreError::NotFound(what),
            StoreError::AlreadyExists => CoreError::AlreadyExists(what),
            StoreError::VersionConflict { current } => CoreError::VersionConflict { current },
            StoreError::Conflict => CoreError::Conflict(format!(
                "the {what} changed while this request was prepared; read it again and retry"
            )),
            StoreError::Deleted => CoreError::Deleted,
            StoreError::Unavailable(m) => CoreError::Unavailable(m),
            StoreError::ReadOnly => CoreError::ReadOnly,
            StoreError::Sealed => CoreError::Sealed,
            StoreError::Corrupt(m) => CoreError::Integrity(m),
            StoreError::Backend(m) => CoreError::Internal(m),
            StoreError::InUse(m) => CoreError::InvalidState(format!("{what} is still in use: {m}")),
            StoreError::Unsupported(m) => CoreError::InvalidState(m),
            e @ StoreError::SchemaTooNew { .. } => CoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        CoreError::from_store(e, "object")
    }
}

impl From<CryptoError> for CoreError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Integrity => CoreError::Integrity("authentication tag mismatch".into()),
            CryptoError::Random => CoreError::Internal("random number generator failed".into()),
        }
    }
}

impl From<SealError> for CoreError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::WrongKey | SealError::HsmKeyMissing { .. } => CoreError::Sealed,
            // An HSM that does not answer (restarting, unplugged, network) is an outage, not a
            // destroyed key: the request fails with 503 and may be retried.
            SealError::Hsm(m) => CoreError::Unavailable(format!("the HSM does not answer: {m}")),
            other => CoreError::Internal(other.to_string()),
        }
    }
}

impl From<crate::keyring::DekError> for CoreError {
    fn from(e: crate::keyring::DekError) -> Self {
        match e {
            crate::keyring::DekError::Crypto(c) => c.into(),
            crate::keyring::DekError::Seal(s) => s.into(),
        }
    }
}
