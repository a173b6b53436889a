//! File names in gocryptfs's format: each name is padded to 16 bytes (PKCS#7), EME-encrypted
//! with its directory's IV (`gocryptfs.diriv`, 16 random bytes written when the directory is
//! made) as the tweak, and encoded in URL-safe base64 (unpadded with the `Raw64` flag). A
//! ciphertext name longer than 255 characters is stored as `gocryptfs.longname.<hash>`, the
//! base64 SHA-256 of the full ciphertext name, with the full name in `<that>.name` beside it.
//! Extended attribute names are encrypted the same way under a fixed IV.
//!
//! No I/O here; the FUSE layer reads and writes the IV and `.name` files.

use super::FormatError;
use super::eme::Eme;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

/// The per-directory IV file.
pub const DIRIV_NAME: &str = "gocryptfs.diriv";
pub const DIRIV_LEN: usize = 16;
pub const LONGNAME_PREFIX: &str = "gocryptfs.longname.";
pub const LONGNAME_SUFFIX: &str = ".name";
/// The longest plaintext name (as ext4).
pub const NAME_MAX: usize = 255;
/// The longest stored `.name` file: 256 bytes of padded ciphertext in padded base64.
pub const LONGNAME_FILE_MAX: usize = 344;
/// The tweak gocryptfs uses for extended attribute names.
const XATTR_NAME_IV: &[u8; 16] = b"xattr_name_iv_xx";

/// A directory's IV.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DirIv(pub [u8; DIRIV_LEN]);

impl DirIv {
    pub fn random() -> Result<Self, FormatError> {
        let mut iv = [0u8; DIRIV_LEN];
        super::random(&mut iv)?;
        Ok(Self(iv))
    }

    /// The content of a `gocryptfs.diriv` file; exactly 16 bytes, not all zero.
    pub fn parse(buf: &[u8]) -> Result<Self, FormatError> {
        if buf.len() != DIRIV_LEN {
            return Err(FormatError::Corrupt(format!(
                "{DIRIV_NAME} has {} bytes, expected {DIRIV_LEN}",
                buf.len()
            )));
        }
        if buf.iter().all(|&b| b == 0) {
            return Err(FormatError::Corrupt(format!("{DIRIV_NAME} is all zero")));
        }
        let mut iv = [0u8; DIRIV_LEN];
        iv.copy_from_slice(buf);
        Ok(Self(iv))
    }
}

/// What a name in a ciphertext directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKind {
    /// An encrypted name (or anything else that is not one of the names below).
    Regular,
    /// `gocryptfs.longname.<hash>`: the entry of a long name.
    LongContent,
    /// `gocryptfs.longname.<hash>.name`: the full ciphertext name of that entry.
    LongName,
    /// `gocryptfs.diriv` or `gocryptfs.conf`: not shown in the clear view.
    Internal,
}

pub fn stored_kind(stored: &[u8]) -> StoredKind {
    if stored == DIRIV_NAME.as_bytes() || stored == super::config::CONF_NAME.as_bytes() {
        return StoredKind::Internal;
    }
    if !stored.starts_with(LONGNAME_PREFIX.as_bytes()) {
        return StoredKind::Regular;
    }
    if stored.ends_with(LONGNAME_SUFFIX.as_bytes()) {
        StoredKind::LongName
    } else {
        StoredKind::LongContent
    }
}

/// The name under which an entry is stored in its ciphertext directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredName {
    /// The encrypted name itself.
    Short(String),
    /// A hashed long name; `full` goes into `<hashed>.name`.
    Long { hashed: String, full: String },
}

impl StoredName {
    /// The directory entry's name.
    pub fn entry(&self) -> &str {
        match self {
            StoredName::Short(s) => s,
            StoredName::Long { hashed, .. } => hashed,
        }
    }
}

/// Checks a plaintext name as gocryptfs does: 1-255 bytes, no NUL or '/', not "." or "..".
pub fn check_plain_name(name: &[u8]) -> Result<(), FormatError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&0) || name.contains(&b'/')
    {
        return Err(FormatError::InvalidName);
    }
    if name.len() > NAME_MAX {
        return Err(FormatError::NameTooLong);
    }
    Ok(())
}

fn pad16(name: &[u8]) -> Vec<u8> {
    let pad = 16 - name.len() % 16;
    let mut out = Vec::with_capacity(name.len() + pad);
    out.extend_from_slice(name);
    out.resize(name.len() + pad, pad as u8);
    out
}

fn unpad16(padded: &[u8]) -> Result<&[u8], FormatError> {
    let bad = || FormatError::Corrupt("invalid name padding".into());
    let len = padded.len();
    if len == 0 || !len.is_multiple_of(16) {
        return Err(bad());
    }
    let pad = padded[len - 1] as usize;
    if pad == 0 || pad > 16 || pad >= len {
        return Err(bad());
    }
    if padded[len - pad..].iter().any(|&b| b as usize != pad) {
        return Err(bad());
    }
    Ok(&padded[..len - pad])
}

/// Name encryption for one volume.
pub struct NameCipher {
    eme: Eme,
    raw64: bool,
    /// Encrypted names longer than this are hashed (`usize::MAX` without `LongNames`).
    long_name_max: usize,
}

impl std::fmt::Debug for NameCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameCipher")
            .field("raw64", &self.raw64)
            .field("long_name_max", &self.long_name_max)
            .finish_non_exhaustive()
    }
}

impl NameCipher {
    pub fn new(eme_key: &[u8; 32], raw64: bool, long_name_max: Option<usize>) -> Self {
        Self {
            eme: Eme::new(eme_key),
            raw64,
            long_name_max: long_name_max.unwrap_or(usize::MAX),
        }
    }

    pub fn b64_encode(&self, bytes: &[u8]) -> String {
        if self.raw64 {
            URL_SAFE_NO_PAD.encode(bytes)
        } else {
            URL_SAFE.encode(bytes)
        }
    }

    pub fn b64_decode(&self, s: &[u8]) -> Result<Vec<u8>, FormatError> {
        // Go's strict decoder rejects CR and LF too (they would make a name malleable).
        if s.contains(&b'\n') || s.contains(&b'\r') {
            return Err(FormatError::Corrupt("line break in a base64 name".into()));
        }
        let r = if self.raw64 {
            URL_SAFE_NO_PAD.decode(s)
        } else {
            URL_SAFE.decode(s)
        };
        r.map_err(|_| FormatError::Corrupt("a stored name is not base64".into()))
    }

    fn encrypt_raw(&self, plain: &[u8], iv: &[u8; 16]) -> Result<String, FormatError> {
        let ct = self
            .eme
            .encrypt(iv, &pad16(plain))
            .ok_or(FormatError::NameTooLong)?;
        Ok(self.b64_encode(&ct))
    }

    fn decrypt_raw(&self, stored: &[u8], iv: &[u8; 16]) -> Result<Vec<u8>, FormatError> {
        let bin = self.b64_decode(stored)?;
        let plain = self
            .eme
            .decrypt(iv, &bin)
            .ok_or_else(|| FormatError::Corrupt("encrypted name of a bad length".into()))?;
        Ok(unpad16(&plain)?.to_vec())
    }

    /// The stored name of plaintext name `plain` in a directory with IV `iv`.
    pub fn encrypt(&self, plain: &[u8], iv: &DirIv) -> Result<StoredName, FormatError> {
        check_plain_name(plain)?;
        let full = self.encrypt_raw(plain, &iv.0)?;
        if full.len() > self.long_name_max {
            Ok(StoredName::Long {
                hashed: self.hash_long_name(&full),
                full,
            })
        } else {
            Ok(StoredName::Short(full))
        }
    }

    /// The plaintext name of an encrypted name (for a long name: the content of its `.name`).
    pub fn decrypt(&self, stored: &[u8], iv: &DirIv) -> Result<Vec<u8>, FormatError> {
        let plain = self.decrypt_raw(stored, &iv.0)?;
        check_plain_name(&plain)
            .map_err(|_| FormatError::Corrupt("decrypted name is not a valid name".into()))?;
        Ok(plain)
    }

    /// `gocryptfs.longname.` + base64(SHA-256(full ciphertext name)).
    pub fn hash_long_name(&self, full: &str) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, full.as_bytes());
        format!("{LONGNAME_PREFIX}{}", self.b64_encode(digest.as_ref()))
    }

    /// The stored form of an xattr name, without the `user.gocryptfs.` prefix.
    pub fn encrypt_xattr_name(&self, plain: &[u8]) -> Result<String, FormatError> {
        if plain.is_empty() || plain.contains(&0) {
            return Err(FormatError::InvalidName);
        }
        self.encrypt_raw(plain, XATTR_NAME_IV)
    }

    pub fn decrypt_xattr_name(&self, stored: &[u8]) -> Result<Vec<u8>, FormatError> {
        let plain = self.decrypt_raw(stored, XATTR_NAME_IV)?;
        if plain.is_empty() || plain.contains(&0) {
            return Err(FormatError::Corrupt(
                "decrypted xattr name is invalid".into(),
            ));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_and_rejects_garbage() {
        for n in [1usize, 15, 16, 17, 255] {
            let name = vec![b'a'; n];
            let p = pad16(&name);
            assert_eq!(p.len() % 16, 0);
            assert!(p.len() > n);
            assert_eq!(unpad16(&p).unwrap(), &name[..]);
        }
        for bad in [
            vec![],
            vec![0u8; 16],
            vec![0u8; 1],
            vec![0u8; 17],
            vec![16u8; 16],
            vec![17u8; 16],
        ] {
            assert!(unpad16(&bad).is_err());
        }
    }

    #[test]
    fn names_round_trip_and_long_names_are_hashed() {
        let nc = NameCipher::new(&[1u8; 32], true, Some(255));
        let iv = DirIv([5u8; 16]);
        let short = nc.encrypt(b"hello.txt", &iv).unwrap();
        let StoredName::Short(s) = &short else {
            panic!("expected a short name")
        };
        assert!(!s.contains("hello"));
        assert_eq!(nc.decrypt(s.as_bytes(), &iv).unwrap(), b"hello.txt");
        // Deterministic per directory IV, different across IVs.
        assert_eq!(nc.encrypt(b"hello.txt", &iv).unwrap(), short);
        assert_ne!(nc.encrypt(b"hello.txt", &DirIv([6u8; 16])).unwrap(), short);

        let long = vec![b'x'; 200];
        match nc.encrypt(&long, &iv).unwrap() {
            StoredName::Long { hashed, full } => {
                assert!(hashed.starts_with(LONGNAME_PREFIX));
                assert_eq!(stored_kind(hashed.as_bytes()), StoredKind::LongContent);
                assert_eq!(
                    stored_kind(format!("{hashed}.name").as_bytes()),
                    StoredKind::LongName
                );
                assert!(full.len() > 255);
                assert_eq!(nc.decrypt(full.as_bytes(), &iv).unwrap(), long);
            }
            StoredName::Short(_) => panic!("expected a long name"),
        }
        assert!(matches!(
            nc.encrypt(&[b'y'; 256], &iv),
            Err(FormatError::NameTooLong)
        ));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(nc.encrypt(bad, &iv).is_err());
        }
    }

    #[test]
    fn xattr_names_round_trip() {
        let nc = NameCipher::new(&[2u8; 32], true, Some(255));
        let s = nc.encrypt_xattr_name(b"user.comment").unwrap();
        assert_eq!(
            nc.decrypt_xattr_name(s.as_bytes()).unwrap(),
            b"user.comment"
        );
    }

    #[test]
    fn padded_base64_without_raw64() {
        let nc = NameCipher::new(&[1u8; 32], false, None);
        let iv = DirIv([5u8; 16]);
        let StoredName::Short(s) = nc.encrypt(&[b'z'; 200], &iv).unwrap() else {
            panic!("long names are disabled")
        };
        assert!(s.ends_with('='));
        assert_eq!(nc.decrypt(s.as_bytes(), &iv).unwrap(), vec![b'z'; 200]);
    }
}
