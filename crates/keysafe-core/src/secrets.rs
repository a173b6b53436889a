//! Organisation auth secrets: generated from the CSPRNG, stored only as Argon2id hashes (PHC
//! strings). Hashing is deliberately slow, so callers run it off the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use keysafe_proto::api::AuthSecret;
use std::sync::OnceLock;

use crate::crypto::{self, CryptoError};

/// A new random secret: 32 bytes from the CSPRNG, URL-safe base64 without padding (43 chars).
pub fn generate_secret() -> Result<AuthSecret, CryptoError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    crypto::random_bytes(&mut raw[..])?;
    Ok(AuthSecret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..]),
    ))
}

/// SHA-256 of a high-entropy bearer value (sequenced or registration token), lowercase hex. Such
/// values are 256-bit random, so a fast hash is enough; Argon2 is for human-chosen secrets.
pub fn token_hash(value: &str) -> String {
    keysafe_proto::lower_hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes()).as_ref(),
    )
}

/// Compares two hashes without an early exit.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The Argon2id PHC hash of a secret, with a random salt and the crate's default parameters
/// (m=19 MiB, t=2, p=1; the OWASP recommendation).
pub fn hash_secret(secret: &AuthSecret) -> Result<String, CryptoError> {
    let mut salt = [0u8; 16];
    crypto::random_bytes(&mut salt)?;
    Argon2::default()
        .hash_password_with_salt(secret.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::Random)
}

/// Checks a secret against a stored PHC hash. A malformed hash never verifies.
pub fn verify_secret(secret: &AuthSecret, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(secret.expose().as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the same effort as a real verification, so an unknown organisation cannot be told
/// from a wrong secret by timing.
pub fn burn_verification(secret: &AuthSecret) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| generate_secret().ok().and_then(|s| hash_secret(&s).ok()));
    if let Some(h) = dummy {
        let _ = verify_secret(secret, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let s = generate_secret().unwrap();
        assert_eq!(s.expose().len(), 43);
        let h = hash_secret(&s).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(s.expose()));
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret(&AuthSecret::new("wrong-secret-value"), &h));
        assert!(!verify_secret(&s, "not a hash"));
    }
}
