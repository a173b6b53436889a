//! The gocryptfs on-disk format (version 2 with gocryptfs's default feature flags), written
//! from its documentation and source: the configuration file with the wrapped master key
//! (`config`), file contents (`content`), file names (`names`) and the EME mode they use
//! (`eme`). Everything here is pure computation except reading and writing `gocryptfs.conf`.
//! The FUSE layer (`crate::fs`) puts the pieces together on a real directory.

pub mod config;
pub mod content;
pub mod eme;
pub mod names;

pub use config::{VolumeConfig, VolumeKeys};
pub use content::{ContentCipher, FileId};
pub use names::{DirIv, NameCipher, StoredName};

use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

/// What can go wrong with the format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("the password does not open this volume")]
    WrongPassword,
    #[error("unsupported volume: {0}")]
    Unsupported(String),
    #[error("corrupt volume: {0}")]
    Corrupt(String),
    /// A block or value failed its AES-GCM tag check: tampered with, or not ours.
    #[error("authentication failed: {0}")]
    Authentication(String),
    #[error("invalid file name")]
    InvalidName,
    #[error("file name too long")]
    NameTooLong,
    #[error("{0}")]
    Crypto(String),
    #[error("{0}")]
    Io(String),
}

/// A volume's 256-bit master key. Zeroised on drop, never printed.
#[derive(Default)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// The password that wraps a master key in `gocryptfs.conf`. keysafe makes it from 32 random
/// bytes in URL-safe base64 (43 printable characters, no newline, so `gocryptfs -passfile`
/// reads it as it is). Zeroised on drop, never printed.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    pub fn generate() -> Result<Self, FormatError> {
        let mut raw = Zeroizing::new([0u8; 32]);
        random(&mut raw[..])?;
        let text =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]));
        Ok(Self(Zeroizing::new(text.as_bytes().to_vec())))
    }

    /// A password as stored (a deposit's plaintext, or a file): one trailing newline is
    /// dropped, as gocryptfs drops it from a password file.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<(), FormatError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| FormatError::Crypto("no randomness".into()))
}

/// Makes a directory's entries durable (after a create or rename in it).
pub(crate) fn sync_dir(dir: &std::path::Path) -> Result<(), FormatError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FormatError::Io(format!("cannot sync {}: {e}", dir.display())))
}

/// Creates a new, empty volume in `cipherdir` (which must exist and be empty): the
/// configuration with a fresh master key wrapped under `password`, and the root directory's IV,
/// exactly as `gocryptfs -init` does.
pub fn init_volume(
    cipherdir: &std::path::Path,
    password: &Password,
    creator: &str,
    scrypt_log_n: u8,
) -> Result<VolumeConfig, FormatError> {
    let mut entries = std::fs::read_dir(cipherdir)
        .map_err(|e| FormatError::Io(format!("cannot read {}: {e}", cipherdir.display())))?;
    if entries.next().is_some() {
        return Err(FormatError::Io(format!(
            "{} is not empty",
            cipherdir.display()
        )));
    }
    let (cfg, _master) = VolumeConfig::create(password, creator, scrypt_log_n)?;
    write_diriv(cipherdir)?;
    cfg.write(cipherdir, false)?;
    Ok(cfg)
}

/// Writes a fresh `gocryptfs.diriv` into `dir` (mode 0444, never changed afterwards).
pub(crate) fn write_diriv(dir: &std::path::Path) -> Result<DirIv, FormatError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let iv = DirIv::random()?;
    let path = dir.join(names::DIRIV_NAME);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|e| FormatError::Io(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(&iv.0)
        .and_then(|_| f.sync_all())
        .map_err(|e| FormatError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(iv)
}
