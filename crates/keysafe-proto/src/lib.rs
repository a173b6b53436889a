//! Wire types shared by the keysafe server and every client: validated names, the stable error
//! codes and their HTTP statuses, request and response bodies, and the identity rules
//! (fingerprints, self-signed certificates). Nothing here performs I/O.

pub mod api;
pub mod error;
pub mod identity;
pub mod names;
pub mod time;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use identity::{ClientFingerprint, FingerprintError};
pub use names::{ClientName, DepositName, DepositVersion, NameError, OrgName};
pub use time::Timestamp;

/// Header carrying the version of a deposit in responses to get and put.
pub const HEADER_DEPOSIT_VERSION: &str = "x-keysafe-version";
/// Header carrying the request id, in both directions.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
