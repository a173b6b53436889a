//! Identity rules shared by both ends: a client (and the server) is identified by the SHA-256 of
//! its certificate's SubjectPublicKeyInfo, as 64 lowercase hex characters. Re-issuing a
//! certificate for the same key keeps the identity. Also generates the self-signed ECDSA P-256
//! certificates both sides use.

use aws_lc_rs::digest::{SHA256, digest};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::Zeroizing;

/// SHA-256 of a SubjectPublicKeyInfo, 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientFingerprint(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    #[error("invalid fingerprint {0:?}: expected 64 lowercase hexadecimal characters")]
    Malformed(String),
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

impl ClientFingerprint {
    pub fn parse(s: &str) -> Result<Self, FingerprintError> {
        let s = s.trim();
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            // Echo at most a prefix: a pasted secret must not end up in an error message whole.
            let shown: String = s.chars().take(80).collect();
            Err(FingerprintError::Malformed(shown))
        }
    }

    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(hex::encode(digest(&SHA256, spki_der).as_ref()))
    }

    /// The fingerprint of a DER-encoded X.509 certificate (of its public key, not its bytes).
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, FingerprintError> {
        let der = CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| FingerprintError::BadCertificate(format!("{e:?}")))?;
        Ok(Self::of_spki(cert.subject_public_key_info().as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for humans (first 16 hex characters), never used for decisions.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl fmt::Display for ClientFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A freshly generated key pair and self-signed certificate.
pub struct SelfSigned {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8 PEM of the private key; zeroised on drop.
    pub key_pem: Zeroizing<String>,
    pub fingerprint: ClientFingerprint,
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct CertGenError(String);

/// Generates an ECDSA P-256 key pair and a self-signed certificate for `common_name` with the
/// given subject alternative names (DNS names or IP addresses).
pub fn generate_self_signed(
    common_name: &str,
    subject_alt_names: &[String],
) -> Result<SelfSigned, CertGenError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CertGenError(e.to_string()))?;
    self_signed_for_key(&key, common_name, subject_alt_names)
}

/// Issues a self-signed certificate for an existing PKCS#8 PEM key (re-issuing keeps identity).
pub fn reissue_self_signed(
    key_pem: &str,
    common_name: &str,
    subject_alt_names: &[String],
) -> Result<SelfSigned, CertGenError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| CertGenError(e.to_string()))?;
    self_signed_for_key(&key, common_name, subject_alt_names)
}

fn self_signed_for_key(
    key: &rcgen::KeyPair,
    common_name: &str,
    subject_alt_names: &[String],
) -> Result<SelfSigned, CertGenError> {
    let mut params = rcgen::CertificateParams::new(subject_alt_names.to_vec())
        .map_err(|e| CertGenError(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let cert = params
        .self_signed(key)
        .map_err(|e| CertGenError(e.to_string()))?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: Zeroizing::new(key.serialize_pem()),
        fingerprint: ClientFingerprint::of_spki(&rcgen::PublicKeyData::subject_public_key_info(
            key,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_fingerprint_is_spki_hash() {
        let id = generate_self_signed("t", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let from_cert = ClientFingerprint::of_certificate(&id.cert_der).unwrap();
        assert_eq!(from_cert, id.fingerprint);
        assert_eq!(id.fingerprint.as_str().len(), 64);
    }

    #[test]
    fn reissue_keeps_identity() {
        let id = generate_self_signed("a", &["a".into()]).unwrap();
        let again = reissue_self_signed(&id.key_pem, "b", &["b".into()]).unwrap();
        assert_ne!(again.cert_der, id.cert_der);
        assert_eq!(again.fingerprint, id.fingerprint);
        assert_eq!(
            ClientFingerprint::of_certificate(&again.cert_der).unwrap(),
            id.fingerprint
        );
    }

    #[test]
    fn fingerprint_parse() {
        assert!(ClientFingerprint::parse(&"a".repeat(64)).is_ok());
        assert!(ClientFingerprint::parse(&"A".repeat(64)).is_err());
        assert!(ClientFingerprint::parse(&"a".repeat(63)).is_err());
        assert!(ClientFingerprint::parse("zz").is_err());
    }

    #[test]
    fn garbage_certificate_is_an_error() {
        assert!(ClientFingerprint::of_certificate(b"not a certificate").is_err());
    }

    #[test]
    fn debug_redacts_key() {
        let id = generate_self_signed("t", &["t".into()]).unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("PRIVATE KEY"));
        assert!(dbg.contains("[redacted]"));
    }
}
