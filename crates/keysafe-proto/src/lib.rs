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

/// Lowercase hex of `bytes`, exactly as `hex::encode` writes it, without building the string
/// one `char` at a time (which `hex::encode` does); for the digests on every request's path.
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len().saturating_mul(2)];
    // Fails only when the output's length is not twice the input's, which it is.
    if hex::encode_to_slice(bytes, &mut out).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower_hex_is_hex_encode() {
        for bytes in [&[][..], &[0], &[0xab, 0x01, 0xff], &[7; 32]] {
            assert_eq!(super::lower_hex(bytes), hex::encode(bytes));
        }
        assert_eq!(super::lower_hex(&[0xde, 0xad, 0xbe, 0xef]), "deadbeef");
    }
}
