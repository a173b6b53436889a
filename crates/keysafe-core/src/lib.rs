//! The keysafe domain: organisations, clients, deposits and the rules between them, envelope
//! encryption, the key-encryption keyring and the seal that protects it. It talks to storage
//! only through the [`Store`] trait and never names HTTP, SQL or TLS.

pub mod audit;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod fs;
pub mod integrity;
pub mod keyring;
pub mod seal;
pub mod secrets;
pub mod service;
pub mod store;

pub use clock::{Clock, SystemClock};
pub use error::CoreError;
pub use keyring::Keyring;
pub use seal::{FileSeal, PassphraseSeal, Seal, SealError};
pub use service::{Caller, Limits, Service};
pub use store::{Store, StoreError};
