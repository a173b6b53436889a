//! The default seal: a 256-bit root key in a file only its owner can read.

use super::{Seal, SealError};
use crate::crypto::{self, CryptoError, KEY_LEN, SecretKey};
use std::fmt;
use std::path::Path;

/// The default seal: a 256-bit root key in a file only its owner can read.
pub struct FileSeal {
    root: SecretKey,
}

impl fmt::Debug for FileSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileSeal { root: [redacted] }")
    }
}

impl FileSeal {
    /// Creates a new random root key at `path` (mode 0600); refuses to overwrite.
    pub fn create(path: &Path) -> Result<Self, SealError> {
        let root = SecretKey::generate().map_err(|_| SealError::Random)?;
        let err = |e: std::io::Error| SealError::Create {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // Synced, and its directory synced: a root key that a crash could lose after the
        // keyring was wrapped with it would lose everything.
        crate::fs::write_new(path, root.expose(), 0o600).map_err(err)?;
        Ok(Self { root })
    }

    /// Loads the root key from `path`, refusing a file that group or others can read.
    pub fn open(path: &Path) -> Result<Self, SealError> {
        check_private_file(path).map_err(|e| match e {
            PrivateFileError::Insecure(mode) => SealError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            },
            PrivateFileError::Io(reason) => SealError::Unreadable {
                path: path.to_owned(),
                reason,
            },
        })?;
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| SealError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?);
        let root = SecretKey::from_slice(&bytes).ok_or_else(|| SealError::Unreadable {
            path: path.to_owned(),
            reason: format!("expected exactly {KEY_LEN} bytes, found {}", bytes.len()),
        })?;
        Ok(Self { root })
    }
}

impl Seal for FileSeal {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn descriptor(&self) -> String {
        "file".into()
    }

    fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        local_encrypt(&self.root, aad, plaintext)
    }

    fn decrypt(&self, aad: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
        local_decrypt(&self.root, aad, sealed)
    }
}

pub(super) fn local_encrypt(
    key: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    crypto::seal(key, aad, plaintext).map_err(|e| match e {
        CryptoError::Random => SealError::Random,
        CryptoError::Integrity => SealError::WrongKey,
    })
}

pub(super) fn local_decrypt(
    key: &SecretKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
    crypto::open(key, aad, sealed)
        .map(zeroize::Zeroizing::new)
        .map_err(|_| SealError::WrongKey)
}

/// `OpenOptions` that create a new file readable by its owner only, and never overwrite.
pub fn open_options_private() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

#[derive(Debug)]
pub enum PrivateFileError {
    /// Group or other permission bits are set; carries the mode.
    Insecure(u32),
    Io(String),
}

/// Checks that a secret file exists and that neither group nor others have any access to it.
pub fn check_private_file(path: &Path) -> Result<(), PrivateFileError> {
    let meta = std::fs::metadata(path).map_err(|e| PrivateFileError::Io(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PrivateFileError::Insecure(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_seal_round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("keysafe-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("root.key");
        let seal = FileSeal::create(&path).unwrap();
        assert!(FileSeal::create(&path).is_err(), "must not overwrite");
        let k = SecretKey::generate().unwrap();
        let w = seal.wrap(b"v1", &k).unwrap();
        let again = FileSeal::open(&path).unwrap();
        assert_eq!(again.unwrap(b"v1", &w).unwrap().expose(), k.expose());
        assert!(matches!(again.unwrap(b"v2", &w), Err(SealError::WrongKey)));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = FileSeal::open(&path).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
