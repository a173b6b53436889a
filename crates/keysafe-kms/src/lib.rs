//! keysafe's Hadoop KMS gateway: Hadoop KMS v1 (`/kms/v1/`) as Hadoop's own `KMSClientProvider`
//! speaks it, over keys kept as keysafe deposits. See docs/kms.md.
//!
//! No `unsafe` code, except the one FFI edge in `kerberos::gss` (which allows it for itself).
#![deny(unsafe_code)]

pub mod acl;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod certauth;
pub mod config;
pub mod crypto;
pub mod delegation;
pub mod deposits;
pub mod error;
pub mod gateway;
pub mod groups;
pub mod http;
pub mod kerberos;
pub mod kms;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod token;

pub use config::KmsConfig;
pub use gateway::Gateway;

/// The most EEKs one generate request may ask for (Hadoop's client asks for at most its cache
/// size, 500 by default).
pub const MAX_NUM_KEYS: usize = 10_000;
