//! The key-encryption keyring: numbered KEK versions that wrap every data key. The keyring is
//! held in memory unwrapped (opened once by the seal at start) and stored wrapped by the seal.
//! New data keys always use the current (highest) version.

use crate::crypto::{self, AadBuilder, CryptoError, SecretKey};
use crate::seal::{Seal, SealError};
use crate::store::KekRecord;
use keysafe_proto::Timestamp;
use std::collections::BTreeMap;
use std::fmt;

pub struct Keyring {
    keks: BTreeMap<u32, SecretKey>,
    current: u32,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.keks.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

fn kek_aad(version: u32) -> Vec<u8> {
    AadBuilder::new("keysafe/kek/v1")
        .number(u64::from(version))
        .finish()
}

impl Keyring {
    /// A fresh keyring with version 1, and the record to store for it.
    pub fn generate(seal: &dyn Seal, now: Timestamp) -> Result<(Self, KekRecord), SealError> {
        let kek = SecretKey::generate().map_err(|_| SealError::Random)?;
        let wrapped = seal.wrap(&kek_aad(1), &kek)?;
        let mut keks = BTreeMap::new();
        keks.insert(1, kek);
        Ok((
            Self { keks, current: 1 },
            KekRecord {
                version: 1,
                wrapped,
                created_at: now,
            },
        ))
    }

    /// Opens stored keyring versions with the seal.
    pub fn open(seal: &dyn Seal, records: &[KekRecord]) -> Result<Self, SealError> {
        let mut keks = BTreeMap::new();
        for r in records {
            keks.insert(r.version, seal.unwrap(&kek_aad(r.version), &r.wrapped)?);
        }
        let current = *keks.keys().next_back().ok_or(SealError::EmptyKeyring)?;
        Ok(Self { keks, current })
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Wraps a data key under the current KEK, bound to `aad`. Returns (kek version, wrapped).
    pub fn wrap_dek(&self, aad: &[u8], dek: &SecretKey) -> Result<(u32, Vec<u8>), CryptoError> {
        let kek = self.keks.get(&self.current).ok_or(CryptoError::Integrity)?;
        Ok((self.current, crypto::seal(kek, aad, dek.expose())?))
    }

    /// Unwraps a data key; an unknown version, wrong `aad` or altered bytes is an integrity error.
    pub fn unwrap_dek(
        &self,
        kek_version: u32,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<SecretKey, CryptoError> {
        let kek = self.keks.get(&kek_version).ok_or(CryptoError::Integrity)?;
        let raw = zeroize::Zeroizing::new(crypto::open(kek, aad, wrapped)?);
        SecretKey::from_slice(&raw).ok_or(CryptoError::Integrity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestSeal(SecretKey);
    impl Seal for TestSeal {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn wrap(&self, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>, SealError> {
            crypto::seal(&self.0, aad, key.expose()).map_err(|_| SealError::Random)
        }
        fn unwrap(&self, aad: &[u8], w: &[u8]) -> Result<SecretKey, SealError> {
            let b = crypto::open(&self.0, aad, w).map_err(|_| SealError::WrongKey)?;
            SecretKey::from_slice(&b).ok_or(SealError::WrongKey)
        }
    }

    #[test]
    fn generate_open_wrap() {
        let seal = TestSeal(SecretKey::generate().unwrap());
        let (ring, rec) = Keyring::generate(&seal, Timestamp::now()).unwrap();
        let dek = SecretKey::generate().unwrap();
        let (v, w) = ring.wrap_dek(b"ctx", &dek).unwrap();
        let reopened = Keyring::open(&seal, std::slice::from_ref(&rec)).unwrap();
        assert_eq!(
            reopened.unwrap_dek(v, b"ctx", &w).unwrap().expose(),
            dek.expose()
        );
        assert!(reopened.unwrap_dek(v, b"other", &w).is_err());
        assert!(reopened.unwrap_dek(v + 1, b"ctx", &w).is_err());

        let wrong = TestSeal(SecretKey::generate().unwrap());
        assert!(matches!(
            Keyring::open(&wrong, &[rec]),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            Keyring::open(&seal, &[]),
            Err(SealError::EmptyKeyring)
        ));
    }
}
