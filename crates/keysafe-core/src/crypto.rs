//! Envelope-encryption primitives: 256-bit keys that zeroise themselves, AES-256-GCM with
//! associated data, and the canonical associated-data encodings that bind ciphertext to its row.
//! Everything here is synchronous and allocation-light; it runs on the request path.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::fmt;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong associated data or altered bytes.
    #[error("integrity check failed")]
    Integrity,
    #[error("the system random number generator failed")]
    Random,
}

/// A 256-bit symmetric key. Zeroised on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| CryptoError::Random)?;
        Ok(Self(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Fills a buffer from the system CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

fn aead_key(key: &SecretKey) -> Result<LessSafeKey, CryptoError> {
    // Only fails for a wrong key length, which the type rules out.
    UnboundKey::new(&AES_256_GCM, &key.0[..])
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Integrity)
}

/// AES-256-GCM with a random 96-bit nonce. Output: nonce || ciphertext || tag.
pub fn seal(key: &SecretKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let k = aead_key(key)?;
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Integrity)?;
    out.append(&mut body);
    Ok(out)
}

/// Opens what [`seal`] produced. Any change to key, associated data or bytes is an
/// [`CryptoError::Integrity`] error; wrong bytes are never returned.
pub fn open(key: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Integrity);
    }
    let k = aead_key(key)?;
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Integrity)?;
    let mut buf = body.to_vec();
    let len = k
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Builds a canonical, unambiguous associated-data string: a domain label, then each field
/// length-prefixed, so that no two different field tuples encode alike.
#[derive(Debug, Default)]
pub struct AadBuilder(Vec<u8>);

impl AadBuilder {
    pub fn new(domain: &str) -> Self {
        let mut b = Self(Vec::with_capacity(160));
        b = b.field(domain.as_bytes());
        b
    }

    pub fn field(mut self, bytes: &[u8]) -> Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn number(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&8u32.to_be_bytes());
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = SecretKey::generate().unwrap();
        let ct = seal(&k, b"ctx", b"hello").unwrap();
        assert_eq!(open(&k, b"ctx", &ct).unwrap(), b"hello");
        assert_eq!(open(&k, b"other", &ct), Err(CryptoError::Integrity));
        let mut bad = ct.clone();
        bad[NONCE_LEN] ^= 1;
        assert_eq!(open(&k, b"ctx", &bad), Err(CryptoError::Integrity));
        let k2 = SecretKey::generate().unwrap();
        assert_eq!(open(&k2, b"ctx", &ct), Err(CryptoError::Integrity));
        assert_eq!(open(&k, b"ctx", &ct[..10]), Err(CryptoError::Integrity));
    }

    #[test]
    fn nonces_differ() {
        let k = SecretKey::generate().unwrap();
        assert_ne!(seal(&k, b"", b"x").unwrap(), seal(&k, b"", b"x").unwrap());
    }

    #[test]
    fn aad_is_unambiguous() {
        let a = AadBuilder::new("d").field(b"ab").field(b"c").finish();
        let b = AadBuilder::new("d").field(b"a").field(b"bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn debug_redacts() {
        let k = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(format!("{k:?}"), "SecretKey([redacted])");
    }
}
