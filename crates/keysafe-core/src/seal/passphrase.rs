//! The passphrase seal: a 256-bit key derived with Argon2id from an operator's passphrase. The
//! salt and the cost parameters are public and travel in the seal descriptor stored with every
//! keyring row, so the same passphrase derives the same key on any host that has the database.

use super::file::{local_decrypt, local_encrypt};
use super::{Seal, SealError};
use crate::crypto::{self, SecretKey};
use argon2::{Algorithm, Argon2, Params, Version};
use std::fmt;
use zeroize::Zeroizing;

const PREFIX: &str = "passphrase;argon2id;";
const SALT_LEN: usize = 16;

/// Argon2id cost parameters and salt. Public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
    pub salt: Vec<u8>,
}

impl KdfParams {
    /// Fresh parameters: a random salt, 64 MiB, 3 passes, 1 lane.
    pub fn generate() -> Result<Self, SealError> {
        let mut salt = vec![0u8; SALT_LEN];
        crypto::random_bytes(&mut salt).map_err(|_| SealError::Random)?;
        Ok(Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
            salt,
        })
    }

    /// The descriptor stored with the keyring rows.
    pub fn descriptor(&self) -> String {
        format!(
            "{PREFIX}m={};t={};p={};salt={}",
            self.m_kib,
            self.t,
            self.p,
            hex::encode(&self.salt)
        )
    }

    /// Whether a stored descriptor belongs to a passphrase seal.
    pub fn is_descriptor(d: &str) -> bool {
        d.starts_with(PREFIX)
    }

    /// Parses [`KdfParams::descriptor`] output.
    pub fn parse(d: &str) -> Result<Self, SealError> {
        let bad = || SealError::InvalidParams(format!("bad passphrase seal descriptor {d:?}"));
        let rest = d.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (mut m, mut t, mut p, mut salt) = (None, None, None, None);
        for part in rest.split(';') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            match k {
                "m" => m = v.parse().ok(),
                "t" => t = v.parse().ok(),
                "p" => p = v.parse().ok(),
                "salt" => salt = hex::decode(v).ok(),
                _ => return Err(bad()),
            }
        }
        Ok(Self {
            m_kib: m.ok_or_else(bad)?,
            t: t.ok_or_else(bad)?,
            p: p.ok_or_else(bad)?,
            salt: salt.filter(|s| s.len() >= 8).ok_or_else(bad)?,
        })
    }
}

pub struct PassphraseSeal {
    key: SecretKey,
    params: KdfParams,
}

impl fmt::Debug for PassphraseSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassphraseSeal")
            .field("params", &self.params)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl PassphraseSeal {
    /// Derives the seal key (deliberately slow: run it off the async runtime). An empty
    /// passphrase is refused.
    pub fn derive(passphrase: &[u8], params: KdfParams) -> Result<Self, SealError> {
        if passphrase.is_empty() {
            return Err(SealError::InvalidParams("the passphrase is empty".into()));
        }
        let p = Params::new(params.m_kib, params.t, params.p, Some(crypto::KEY_LEN))
            .map_err(|e| SealError::InvalidParams(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; crypto::KEY_LEN]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
            .hash_password_into(passphrase, &params.salt, &mut out[..])
            .map_err(|e| SealError::InvalidParams(e.to_string()))?;
        let key = SecretKey::from_slice(&out[..]).ok_or(SealError::Random)?;
        Ok(Self { key, params })
    }

    pub fn params(&self) -> &KdfParams {
        &self.params
    }
}

impl Seal for PassphraseSeal {
    fn kind(&self) -> &'static str {
        "passphrase"
    }

    fn descriptor(&self) -> String {
        self.params.descriptor()
    }

    fn encrypt(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        local_encrypt(&self.key, aad, plaintext)
    }

    fn decrypt(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        local_decrypt(&self.key, aad, sealed).map_err(|_| SealError::WrongPassphrase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
            salt: vec![7; 16],
        }
    }

    #[test]
    fn descriptor_round_trip() {
        let p = KdfParams::generate().unwrap();
        assert!(KdfParams::is_descriptor(&p.descriptor()));
        assert_eq!(KdfParams::parse(&p.descriptor()).unwrap(), p);
        assert!(KdfParams::parse("passphrase;argon2id;m=1;t=1").is_err());
        assert!(KdfParams::parse("file").is_err());
    }

    #[test]
    fn same_passphrase_same_key_wrong_passphrase_refused() {
        let a = PassphraseSeal::derive(b"correct horse", cheap()).unwrap();
        let b = PassphraseSeal::derive(b"correct horse", cheap()).unwrap();
        let c = PassphraseSeal::derive(b"wrong horse", cheap()).unwrap();
        let k = SecretKey::generate().unwrap();
        let w = a.wrap(b"x", &k).unwrap();
        assert_eq!(b.unwrap(b"x", &w).unwrap().expose(), k.expose());
        assert!(matches!(
            c.unwrap(b"x", &w),
            Err(SealError::WrongPassphrase)
        ));
        assert!(PassphraseSeal::derive(b"", cheap()).is_err());
        assert!(!format!("{a:?}").contains("key: ["));
    }
}
