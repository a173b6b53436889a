//! The seal: what protects the keyring at rest. A seal wraps and unwraps the key-encryption keys;
//! in the PKCS#11 `per-deposit` mode it also wraps every data key a second time. It never sees a
//! deposit. Three seals: a root key file ([`FileSeal`]), an operator passphrase
//! ([`PassphraseSeal`], Argon2id) and an HSM key (PKCS#11, in the `keysafe-hsm` crate, which
//! implements the same trait).
//!
//! Every stored keyring row carries the *descriptor* of the seal that wrapped it (public data:
//! kind, KDF parameters and salt, HSM token and key label). The keyring is opened from the rows
//! whose descriptor matches the configured seal, so a seal migration can write the new rows next
//! to the old ones and switch atomically.

mod file;
mod passphrase;

pub use file::{FileSeal, PrivateFileError, check_private_file, open_options_private};
pub use passphrase::{KdfParams, PassphraseSeal};

use crate::crypto::SecretKey;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The seal's key does not open the keyring: wrong root key, or the keyring was altered.
    #[error("the seal does not open the keyring (wrong root key, or the keyring was altered)")]
    WrongKey,
    /// The passphrase does not open the keyring.
    #[error("the passphrase does not open the keyring")]
    WrongPassphrase,
    /// The seal's key material could not be read.
    #[error("cannot read the seal key {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// The key file is readable by group or others.
    #[error(
        "the root key file {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("cannot create the seal key {path}: {reason}")]
    Create { path: PathBuf, reason: String },
    #[error("the keyring is empty: the data directory is not initialised")]
    EmptyKeyring,
    /// Keyring rows exist, but none were wrapped by the configured seal.
    #[error(
        "no keyring version is wrapped by the configured seal ({configured}); the keyring is wrapped by: {found}. Use `keysafe admin seal migrate` to change seals"
    )]
    NoKeyringForSeal { configured: String, found: String },
    /// The HSM refused the PIN.
    #[error("the HSM token {token:?} refused the PIN")]
    WrongPin { token: String },
    /// The HSM key object does not exist (destroyed, or never created).
    #[error("the HSM key {label:?} is not in token {token:?} (destroyed or revoked)")]
    HsmKeyMissing { token: String, label: String },
    /// Any other HSM failure (module not loadable, token not found, device error).
    #[error("HSM: {0}")]
    Hsm(String),
    #[error("invalid seal parameters: {0}")]
    InvalidParams(String),
    #[error("random number generator failed")]
    Random,
}

/// Protects key-encryption keys at rest. Implementations may block (an HSM round trip): async
/// callers run them on a blocking thread.
pub trait Seal: Send + Sync + 'static {
    /// A short name for logs and health: `file`, `passphrase`, `pkcs11`.
    fn kind(&self) -> &'static str;
    /// The public description stored with each keyring row it wraps (no secret in it).
    fn descriptor(&self) -> String;
    /// AES-256-GCM (or the HSM's equivalent) of `plaintext` bound to `aad`.
    fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError>;
    /// Reverses [`Seal::encrypt`]; a wrong key or altered input is [`SealError::WrongKey`].
    fn decrypt(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
    /// Wraps a key; `aad` binds the result to its purpose (for example, keyring version).
    fn wrap(&self, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>, SealError> {
        self.encrypt(aad, key.expose())
    }
    /// Reverses [`Seal::wrap`].
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, SealError> {
        let raw = self.decrypt(aad, wrapped)?;
        SecretKey::from_slice(&raw).ok_or(SealError::WrongKey)
    }
    /// Checks that the seal's key still exists and works (the HSM key may be destroyed while
    /// the server runs). Local seals always pass.
    fn check(&self) -> Result<(), SealError> {
        Ok(())
    }
    /// True when every data key must also be wrapped by this seal (PKCS#11 `per-deposit`).
    fn per_deposit(&self) -> bool {
        false
    }
}
