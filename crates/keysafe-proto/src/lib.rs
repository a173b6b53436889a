//! Wire types shared by the keysafe server and every client: validated names, the stable error
//! codes and their HTTP statuses, request and response bodies, and the identity rules
//! (fingerprints, self-signed certificates). Nothing here performs I/O.

pub mod api;
pub mod audit;
pub mod cluster;
pub mod error;
pub mod identity;
pub mod lifecycle;
pub mod names;
pub mod principal;
mod schema;
pub mod time;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use identity::{ClientFingerprint, FingerprintError};
pub use names::{ClientName, DepositName, DepositVersion, NameError, OrgName};
pub use principal::{GroupName, Principal};
pub use time::Timestamp;

/// Header carrying the version of a deposit in responses to get and put.
pub const HEADER_DEPOSIT_VERSION: &str = "x-keysafe-version";
/// Header carrying the request id, in both directions.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Header carrying a client's sequenced token: sent by the client on every authenticated request,
/// and by the server when it issues a new one (at registration and at each rotation).
pub const HEADER_TOKEN: &str = "x-keysafe-token";
/// Header naming how a deposit payload is encoded (`age` or `raw`), on put and get.
pub const HEADER_ENCODING: &str = "x-keysafe-encoding";
/// Header carrying a deposit's ACL serial: on get (what the reader saw) and on put (the writer
/// encrypted to the recipients of this ACL; a changed ACL is a version conflict).
pub const HEADER_ACL_SERIAL: &str = "x-keysafe-acl-serial";
/// Prefix of one-time registration tokens (told apart from organisation secrets by it).
pub const REGISTRATION_TOKEN_PREFIX: &str = "ksr_";
