//! The keysafe client library: a client's home (key pair, certificate, pinned server), mutual
//! TLS with the server pinned by fingerprint, and typed calls for every API operation. Depends
//! on `keysafe-proto` only, so any program (the CLI, the KMS gateway) can embed it.

pub mod cache;
pub mod client;
pub mod cluster;
pub mod e2e;
pub mod error;
pub mod home;
pub mod register;
pub mod tls;
pub mod token;
pub mod vault;
// Seals, keyring rotation and backups.
pub mod sealing;

pub use cache::{Cache, CacheConfig, CacheMode};
pub use client::{
    CacheUse, ClientOptions, FailoverOptions, Fetched, KeysafeClient, Precondition, PutParams,
    ServerSpec, ServerStatus, Source, is_retryable,
};
pub use error::ClientError;
pub use home::{ClientHome, ClientIdentity};
pub use register::{RegisterOptions, Registered, register};
pub use tls::ServerTrust;

/// The HTTP client library underneath, for [`KeysafeClient::raw_request`].
pub use reqwest;
