//! The key-encryption keyring: numbered KEK versions that wrap every data key. The keyring is
//! held in memory unwrapped (opened once by the seal at start) and stored wrapped by the seal.
//! New data keys always use the current (highest) version; older versions stay until every data
//! key has been re-wrapped away from them and an operator retires them.
//!
//! With a `per-deposit` seal (PKCS#11), every wrapped data key is additionally encrypted by the
//! seal itself, so each unwrap needs the HSM: destroying the HSM key makes every data key
//! unreadable at once, even in a process that still holds the keyring.

use crate::crypto::{self, AadBuilder, CryptoError, SecretKey};
use crate::seal::{Seal, SealError};
use crate::store::KekRecord;
use keysafe_proto::Timestamp;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub struct Keyring {
    keks: BTreeMap<u32, SecretKey>,
    current: u32,
    /// The seal, when it must also wrap every data key (`per-deposit`).
    outer: Option<Arc<dyn Seal>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("versions", &self.keks.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .field("per_deposit", &self.outer.is_some())
            .finish()
    }
}

fn kek_aad(version: u32) -> Vec<u8> {
    AadBuilder::new("keysafe/kek/v1")
        .number(u64::from(version))
        .finish()
}

fn outer_aad(aad: &[u8]) -> Vec<u8> {
    AadBuilder::new("keysafe/seal-dek/v1").field(aad).finish()
}

/// Wraps one KEK version under a seal: the record to store.
pub fn wrap_kek(
    seal: &dyn Seal,
    version: u32,
    kek: &SecretKey,
    now: Timestamp,
) -> Result<KekRecord, SealError> {
    Ok(KekRecord {
        version,
        seal: seal.descriptor(),
        wrapped: seal.wrap(&kek_aad(version), kek)?,
        created_at: now,
    })
}

/// An error of a data-key operation: the keyring's own crypto, or the per-deposit seal.
#[derive(Debug, thiserror::Error)]
pub enum DekError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Seal(#[from] SealError),
}

impl Keyring {
    /// A fresh keyring with version 1, and the record to store for it.
    pub fn generate(seal: Arc<dyn Seal>, now: Timestamp) -> Result<(Self, KekRecord), SealError> {
        let kek = SecretKey::generate().map_err(|_| SealError::Random)?;
        let record = wrap_kek(seal.as_ref(), 1, &kek, now)?;
        let mut keks = BTreeMap::new();
        keks.insert(1, kek);
        let outer = seal.per_deposit().then_some(seal);
        Ok((
            Self {
                keks,
                current: 1,
                outer,
            },
            record,
        ))
    }

    /// Opens the stored keyring versions wrapped by this seal (rows wrapped by another seal, left
    /// by an interrupted seal migration, are ignored).
    pub fn open(seal: Arc<dyn Seal>, records: &[KekRecord]) -> Result<Self, SealError> {
        if records.is_empty() {
            return Err(SealError::EmptyKeyring);
        }
        let descriptor = seal.descriptor();
        let mut keks = BTreeMap::new();
        for r in records.iter().filter(|r| r.seal == descriptor) {
            keks.insert(r.version, seal.unwrap(&kek_aad(r.version), &r.wrapped)?);
        }
        let Some(current) = keks.keys().next_back().copied() else {
            return Err(no_keyring_for(&descriptor, records));
        };
        let outer = seal.per_deposit().then_some(seal);
        Ok(Self {
            keks,
            current,
            outer,
        })
    }

    /// The keyring as the store holds it now (another process may have rotated, retired or
    /// re-wrapped): every version wrapped by `seal` is kept, taken from memory when this
    /// keyring holds it already and unwrapped by `seal` otherwise; versions no longer stored
    /// are dropped. The per-deposit layer stays as it is.
    pub fn reloaded(&self, seal: &dyn Seal, records: &[KekRecord]) -> Result<Self, SealError> {
        let descriptor = seal.descriptor();
        let mut keks = BTreeMap::new();
        for r in records.iter().filter(|r| r.seal == descriptor) {
            let kek = match self.keks.get(&r.version) {
                Some(k) => k.clone(),
                None => seal.unwrap(&kek_aad(r.version), &r.wrapped)?,
            };
            keks.insert(r.version, kek);
        }
        let Some(current) = keks.keys().next_back().copied() else {
            return Err(no_keyring_for(&descriptor, records));
        };
        Ok(Self {
            keks,
            current,
            outer: self.outer.clone(),
        })
    }

    /// True when every version both keyrings hold has the same key in both (a seal migration
    /// that resumes checks that the rows it wrote earlier hold this keyring).
    pub fn agrees_with(&self, other: &Keyring) -> bool {
        self.keks.iter().all(|(v, k)| {
            other.keks.get(v).is_none_or(|o| {
                aws_lc_rs::constant_time::verify_slices_are_equal(k.expose(), o.expose()).is_ok()
            })
        })
    }

    /// The secret part of a client's sequenced token number `counter` (ADR 0006): HMAC-SHA256
    /// over the client's fingerprint, the counter and `salt`, under a key derived with
    /// HKDF-SHA256 from keyring version `version` for this purpose only (the KEK itself never
    /// signs anything). The server can compute a token again without storing it. `None` when
    /// this keyring does not hold `version`.
    pub fn token_secret(
        &self,
        version: u32,
        fingerprint: &str,
        counter: u64,
        salt: &[u8],
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        use aws_lc_rs::{hkdf, hmac};
        let kek = self.keks.get(&version)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"keysafe/token-key/v1").extract(kek.expose());
        let info = [b"keysafe sequenced tokens".as_slice()];
        let key = hmac::Key::from(prk.expand(&info, hmac::HMAC_SHA256).ok()?);
        let data = AadBuilder::new("keysafe/token/v1")
            .field(fingerprint.as_bytes())
            .number(counter)
            .field(salt)
            .finish();
        Some(zeroize::Zeroizing::new(
            hmac::sign(&key, &data).as_ref().to_vec(),
        ))
    }

    /// True when this keyring holds `version`.
    pub fn has_version(&self, version: u32) -> bool {
        self.keks.contains_key(&version)
    }

    /// A copy of this keyring with one more version, and the record to store for it.
    pub fn rotated(&self, seal: &dyn Seal, now: Timestamp) -> Result<(Self, KekRecord), SealError> {
        let version = self.current + 1;
        let kek = SecretKey::generate().map_err(|_| SealError::Random)?;
        let record = wrap_kek(seal, version, &kek, now)?;
        let mut keks = self.keks.clone();
        keks.insert(version, kek);
        Ok((
            Self {
                keks,
                current: version,
                outer: self.outer.clone(),
            },
            record,
        ))
    }

    /// A copy of this keyring without `version` (which must not be the current one).
    pub fn without(&self, version: u32) -> Option<Self> {
        if version == self.current || !self.keks.contains_key(&version) {
            return None;
        }
        let mut keks = self.keks.clone();
        keks.remove(&version);
        Some(Self {
            keks,
            current: self.current,
            outer: self.outer.clone(),
        })
    }

    /// Every version wrapped under `seal`, for a seal migration.
    pub fn wrap_all(&self, seal: &dyn Seal, now: Timestamp) -> Result<Vec<KekRecord>, SealError> {
        self.keks
            .iter()
            .map(|(v, k)| wrap_kek(seal, *v, k, now))
            .collect()
    }

    /// The same KEKs with a different per-deposit seal (or none), for a seal migration.
    pub fn with_outer(&self, seal: Option<Arc<dyn Seal>>) -> Self {
        Self {
            keks: self.keks.clone(),
            current: self.current,
            outer: seal.filter(|s| s.per_deposit()),
        }
    }

    pub fn current_version(&self) -> u32 {
        self.current
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keks.keys().copied().collect()
    }

    /// True when data-key operations call the seal (an HSM round trip: run them off the runtime).
    pub fn per_deposit(&self) -> bool {
        self.outer.is_some()
    }

    /// Wraps a data key under the current KEK, bound to `aad`. Returns (kek version, wrapped).
    pub fn wrap_dek(&self, aad: &[u8], dek: &SecretKey) -> Result<(u32, Vec<u8>), DekError> {
        let kek = self.keks.get(&self.current).ok_or(CryptoError::Integrity)?;
        let inner = crypto::seal(kek, aad, dek.expose())?;
        let wrapped = match &self.outer {
            Some(seal) => seal.encrypt(&outer_aad(aad), &inner)?,
            None => inner,
        };
        Ok((self.current, wrapped))
    }

    /// Wraps a data key under a given (existing) version: a seal migration changes the
    /// per-deposit layer but keeps each data key on its version.
    pub fn wrap_dek_with(
        &self,
        version: u32,
        aad: &[u8],
        dek: &SecretKey,
    ) -> Result<Vec<u8>, DekError> {
        let kek = self.keks.get(&version).ok_or(CryptoError::Integrity)?;
        let inner = crypto::seal(kek, aad, dek.expose())?;
        Ok(match &self.outer {
            Some(seal) => seal.encrypt(&outer_aad(aad), &inner)?,
            None => inner,
        })
    }

    /// Unwraps a data key; an unknown version, wrong `aad` or altered bytes is an integrity error.
    pub fn unwrap_dek(
        &self,
        kek_version: u32,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<SecretKey, DekError> {
        let kek = self.keks.get(&kek_version).ok_or(CryptoError::Integrity)?;
        let inner;
        let wrapped = match &self.outer {
            Some(seal) => {
                inner = seal
                    .decrypt(&outer_aad(aad), wrapped)
                    .map_err(|e| match e {
                        SealError::WrongKey => DekError::Crypto(CryptoError::Integrity),
                        other => DekError::Seal(other),
                    })?;
                &inner[..]
            }
            None => wrapped,
        };
        let raw = zeroize::Zeroizing::new(crypto::open(kek, aad, wrapped)?);
        Ok(SecretKey::from_slice(&raw).ok_or(CryptoError::Integrity)?)
    }
}

/// No stored version is wrapped by the seal `descriptor` names: say which seals wrap them.
fn no_keyring_for(descriptor: &str, records: &[KekRecord]) -> SealError {
    if records.is_empty() {
        return SealError::EmptyKeyring;
    }
    let mut found: Vec<&str> = records.iter().map(|r| r.seal.as_str()).collect();
    found.sort_unstable();
    found.dedup();
    SealError::NoKeyringForSeal {
        configured: seal_summary(descriptor),
        found: found
            .iter()
            .map(|d| seal_summary(d))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A short, human description of a seal descriptor (passphrase salts elided).
pub fn seal_summary(descriptor: &str) -> String {
    if crate::seal::KdfParams::is_descriptor(descriptor) {
        "passphrase".into()
    } else {
        descriptor.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestSeal(SecretKey, bool);
    impl Seal for TestSeal {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn descriptor(&self) -> String {
            "test".into()
        }
        fn encrypt(&self, aad: &[u8], p: &[u8]) -> Result<Vec<u8>, SealError> {
            crypto::seal(&self.0, aad, p).map_err(|_| SealError::Random)
        }
        fn decrypt(&self, aad: &[u8], w: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
            crypto::open(&self.0, aad, w)
                .map(zeroize::Zeroizing::new)
                .map_err(|_| SealError::WrongKey)
        }
        fn per_deposit(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn generate_open_wrap() {
        let seal: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        let (ring, rec) = Keyring::generate(seal.clone(), Timestamp::now()).unwrap();
        let dek = SecretKey::generate().unwrap();
        let (v, w) = ring.wrap_dek(b"ctx", &dek).unwrap();
        let reopened = Keyring::open(seal.clone(), std::slice::from_ref(&rec)).unwrap();
        assert_eq!(
            reopened.unwrap_dek(v, b"ctx", &w).unwrap().expose(),
            dek.expose()
        );
        assert!(reopened.unwrap_dek(v, b"other", &w).is_err());
        assert!(reopened.unwrap_dek(v + 1, b"ctx", &w).is_err());

        let wrong: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        assert!(matches!(
            Keyring::open(wrong, std::slice::from_ref(&rec)),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            Keyring::open(seal.clone(), &[]),
            Err(SealError::EmptyKeyring)
        ));
        let mut other = rec.clone();
        other.seal = "elsewhere".into();
        assert!(matches!(
            Keyring::open(seal, &[other]),
            Err(SealError::NoKeyringForSeal { .. })
        ));
    }

    #[test]
    fn rotation_keeps_old_versions_readable() {
        let seal: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        let (ring, rec1) = Keyring::generate(seal.clone(), Timestamp::now()).unwrap();
        let dek = SecretKey::generate().unwrap();
        let (v1, w1) = ring.wrap_dek(b"a", &dek).unwrap();
        let (ring2, rec2) = ring.rotated(seal.as_ref(), Timestamp::now()).unwrap();
        assert_eq!(ring2.current_version(), 2);
        let (v2, w2) = ring2.wrap_dek(b"a", &dek).unwrap();
        assert_eq!((v1, v2), (1, 2));
        let reopened = Keyring::open(seal, &[rec1, rec2]).unwrap();
        assert_eq!(
            reopened.unwrap_dek(1, b"a", &w1).unwrap().expose(),
            dek.expose()
        );
        assert_eq!(
            reopened.unwrap_dek(2, b"a", &w2).unwrap().expose(),
            dek.expose()
        );
        assert!(
            reopened.without(2).is_none(),
            "the current version cannot go"
        );
        let retired = reopened.without(1).unwrap();
        assert!(retired.unwrap_dek(1, b"a", &w1).is_err());
    }

    #[test]
    fn reloading_follows_rotation_and_retirement_elsewhere() {
        let seal: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        let (a, rec1) = Keyring::generate(seal.clone(), Timestamp::now()).unwrap();
        let b = Keyring::open(seal.clone(), std::slice::from_ref(&rec1)).unwrap();
        // A rotates; B does not know version 2 until it reloads.
        let (a2, rec2) = a.rotated(seal.as_ref(), Timestamp::now()).unwrap();
        let dek = SecretKey::generate().unwrap();
        let (v, w) = a2.wrap_dek(b"x", &dek).unwrap();
        assert!(!b.has_version(v));
        let b2 = b
            .reloaded(seal.as_ref(), &[rec1.clone(), rec2.clone()])
            .unwrap();
        assert_eq!(b2.current_version(), 2);
        assert_eq!(b2.unwrap_dek(v, b"x", &w).unwrap().expose(), dek.expose());
        // A retires version 1: B drops it.
        let b3 = b2
            .reloaded(seal.as_ref(), std::slice::from_ref(&rec2))
            .unwrap();
        assert_eq!(b3.versions(), vec![2]);
        // Rows of another seal only: this seal has no keyring there any more.
        let mut moved = rec2.clone();
        moved.seal = "elsewhere".into();
        assert!(matches!(
            b3.reloaded(seal.as_ref(), &[moved]),
            Err(SealError::NoKeyringForSeal { .. })
        ));
        // A new version this seal cannot open: an error, not a silently smaller keyring.
        let other: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        let (_, foreign) = a2.rotated(other.as_ref(), Timestamp::now()).unwrap();
        assert!(matches!(
            b3.reloaded(seal.as_ref(), &[rec2, foreign]),
            Err(SealError::WrongKey)
        ));
    }

    #[test]
    fn token_secrets_are_reproducible_and_bound_to_every_input() {
        let seal: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), false));
        let (ring, rec) = Keyring::generate(seal.clone(), Timestamp::now()).unwrap();
        let again = Keyring::open(seal.clone(), std::slice::from_ref(&rec)).unwrap();
        let t = ring.token_secret(1, "fp", 7, b"salt").unwrap();
        assert_eq!(t.len(), 32);
        assert_eq!(*again.token_secret(1, "fp", 7, b"salt").unwrap(), *t);
        for other in [
            ring.token_secret(1, "fq", 7, b"salt"),
            ring.token_secret(1, "fp", 8, b"salt"),
            ring.token_secret(1, "fp", 7, b"salu"),
        ] {
            assert_ne!(*other.unwrap(), *t);
        }
        assert!(ring.token_secret(2, "fp", 7, b"salt").is_none());
        let (other, _) = Keyring::generate(seal, Timestamp::now()).unwrap();
        assert_ne!(*other.token_secret(1, "fp", 7, b"salt").unwrap(), *t);
    }

    #[test]
    fn per_deposit_needs_the_seal_for_every_data_key() {
        let seal: Arc<dyn Seal> = Arc::new(TestSeal(SecretKey::generate().unwrap(), true));
        let (ring, _) = Keyring::generate(seal, Timestamp::now()).unwrap();
        assert!(ring.per_deposit());
        let dek = SecretKey::generate().unwrap();
        let (v, w) = ring.wrap_dek(b"a", &dek).unwrap();
        assert_eq!(ring.unwrap_dek(v, b"a", &w).unwrap().expose(), dek.expose());
        // Without the outer layer the same KEK cannot read it.
        let plain = ring.with_outer(None);
        assert!(plain.unwrap_dek(v, b"a", &w).is_err());
        assert!(ring.unwrap_dek(v, b"b", &w).is_err());
    }
}
