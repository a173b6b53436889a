//! End-to-end encryption with age (age-encryption.org/v1, X25519 recipients). Every client has
//! its own age identity in its home (`age.key`, mode 0600, the standard age identity file format,
//! so `age -d -i age.key` decrypts a keysafe payload). Deposits are encrypted on the client to the
//! owner and every grantee before they leave the host; the server stores and serves ciphertext.
//! Group identities arrive wrapped (age-encrypted) to this client's identity and are unwrapped
//! in memory only.

use crate::error::ClientError;
use age::secrecy::ExposeSecret;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The file in a client home holding its age identity.
pub const AGE_KEY_FILE: &str = "age.key";

/// An age X25519 identity (private key). Never printed.
#[derive(Clone)]
pub struct Identity(age::x25519::Identity);

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The public recipient (`age1...`).
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    /// Parses `AGE-SECRET-KEY-1...`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        age::x25519::Identity::from_str(s.trim())
            .map(Self)
            .map_err(|_| ClientError::Invalid("not an age identity".into()))
    }

    /// The secret form, zeroised when dropped.
    pub fn secret(&self) -> Zeroizing<String> {
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }

    /// Reads an age identity file (comments and blank lines allowed; the first key is used).
    pub fn read_file(path: &Path) -> Result<Self, ClientError> {
        crate::home::check_key_permissions(path)?;
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| ClientError::Home(format!("cannot read {}: {e}", path.display())))?,
        );
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .ok_or_else(|| {
                ClientError::Home(format!("{} holds no age identity", path.display()))
            })?;
        Self::parse(line)
    }

    /// Writes the identity in age's identity file format, mode 0600, refusing to overwrite.
    pub fn write_new_file(&self, path: &Path) -> Result<(), ClientError> {
        let text = Zeroizing::new(format!(
            "# keysafe client encryption identity (age X25519)\n# public key: {}\n{}\n",
            self.recipient(),
            self.secret().as_str()
        ));
        crate::home::write_file(path, text.as_bytes(), 0o600, false)
    }
}

/// Checks a recipient string.
pub fn parse_recipient(r: &str) -> Result<age::x25519::Recipient, ClientError> {
    age::x25519::Recipient::from_str(r.trim())
        .map_err(|_| ClientError::Invalid(format!("{r:?} is not an age recipient (age1...)")))
}

/// Encrypts to every recipient (duplicates are ignored).
pub fn encrypt(recipients: &[String], plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut parsed: Vec<age::x25519::Recipient> = Vec::with_capacity(recipients.len());
    let mut seen: Vec<&str> = Vec::new();
    for r in recipients {
        if seen.contains(&r.as_str()) {
            continue;
        }
        seen.push(r);
        parsed.push(parse_recipient(r)?);
    }
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| ClientError::Invalid(format!("cannot encrypt: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + 200 + 100 * parsed.len());
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| ClientError::Invalid(format!("cannot encrypt: {e}")))?;
    w.write_all(plaintext)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| ClientError::Invalid(format!("cannot encrypt: {e}")))?;
    Ok(out)
}

/// Decrypts with the first identity that opens the file.
pub fn decrypt(
    identities: &[Identity],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let decryptor =
        age::Decryptor::new(ciphertext).map_err(|e| ClientError::Decrypt(e.to_string()))?;
    let mut r = decryptor
        .decrypt(identities.iter().map(|i| &i.0 as &dyn age::Identity))
        .map_err(|e| ClientError::Decrypt(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    r.read_to_end(&mut out)
        .map_err(|e| ClientError::Decrypt(e.to_string()))?;
    Ok(out)
}

/// Wraps an identity for one recipient (the group-key handover).
pub fn wrap_identity(identity: &Identity, recipient: &str) -> Result<Vec<u8>, ClientError> {
    encrypt(&[recipient.to_owned()], identity.secret().as_bytes())
}

/// Unwraps an identity wrapped for `me`.
pub fn unwrap_identity(me: &Identity, wrapped: &[u8]) -> Result<Identity, ClientError> {
    let raw = decrypt(std::slice::from_ref(me), wrapped)?;
    let s = std::str::from_utf8(&raw)
        .map_err(|_| ClientError::Decrypt("a wrapped group key is not text".into()))?;
    Identity::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_multi_recipient() {
        let a = Identity::generate();
        let b = Identity::generate();
        let c = Identity::generate();
        let ct = encrypt(&[a.recipient(), b.recipient()], b"secret key material").unwrap();
        assert!(!ct.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &*decrypt(std::slice::from_ref(&a), &ct).unwrap(),
            b"secret key material"
        );
        assert_eq!(
            &*decrypt(std::slice::from_ref(&b), &ct).unwrap(),
            b"secret key material"
        );
        assert!(decrypt(std::slice::from_ref(&c), &ct).is_err());
        let w = wrap_identity(&c, &a.recipient()).unwrap();
        assert_eq!(unwrap_identity(&a, &w).unwrap().recipient(), c.recipient());
        assert!(unwrap_identity(&b, &w).is_err());
        assert!(!format!("{a:?}").contains("AGE-SECRET"));
    }
}
