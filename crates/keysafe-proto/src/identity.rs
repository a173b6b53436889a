//! Identity rules shared by both ends: a client (and the server) is identified by the SHA-256 of
//! its certificate's SubjectPublicKeyInfo, as 64 lowercase hex characters. Re-issuing a
//! certificate for the same key keeps the identity. Also generates the self-signed ECDSA P-256
//! certificates both sides use, and reads what an operator needs to know about a certificate
//! (validity, names, whether it is self-signed).
//!
//! Validity of generated certificates: a server certificate is valid for
//! [`SERVER_CERT_VALIDITY`] (one year; `keysafe admin tls renew` re-issues it for the same key,
//! and health warns 30 days before the end); a client identity certificate for
//! [`CLIENT_CERT_VALIDITY`] (ten years: the server identifies a client by its key and ignores
//! the dates, and nothing renews client certificates). Both start an hour in the past, so a
//! peer whose clock runs a little behind accepts them.

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

/// How long a generated server certificate is valid.
pub const SERVER_CERT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 86400);
/// How long a generated client identity certificate is valid.
pub const CLIENT_CERT_VALIDITY: std::time::Duration =
    std::time::Duration::from_secs(10 * 365 * 86400);
/// Generated certificates start this long before now (clock skew between peers).
const BACKDATE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Generates an ECDSA P-256 key pair and a self-signed client identity certificate for
/// `common_name` with the given subject alternative names (DNS names or IP addresses), valid
/// for [`CLIENT_CERT_VALIDITY`].
pub fn generate_self_signed(
    common_name: &str,
    subject_alt_names: &[String],
) -> Result<SelfSigned, CertGenError> {
    generate_self_signed_for(common_name, subject_alt_names, CLIENT_CERT_VALIDITY)
}

/// Generates an ECDSA P-256 key pair and a self-signed certificate valid for `validity`.
pub fn generate_self_signed_for(
    common_name: &str,
    subject_alt_names: &[String],
    validity: std::time::Duration,
) -> Result<SelfSigned, CertGenError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CertGenError(e.to_string()))?;
    self_signed_for_key(&key, common_name, subject_alt_names, validity)
}

/// Issues a self-signed certificate for an existing PKCS#8 PEM key (re-issuing keeps identity),
/// valid for `validity` from now.
pub fn reissue_self_signed(
    key_pem: &str,
    common_name: &str,
    subject_alt_names: &[String],
    validity: std::time::Duration,
) -> Result<SelfSigned, CertGenError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| CertGenError(e.to_string()))?;
    self_signed_for_key(&key, common_name, subject_alt_names, validity)
}

fn self_signed_for_key(
    key: &rcgen::KeyPair,
    common_name: &str,
    subject_alt_names: &[String],
    validity: std::time::Duration,
) -> Result<SelfSigned, CertGenError> {
    let mut params = rcgen::CertificateParams::new(subject_alt_names.to_vec())
        .map_err(|e| CertGenError(e.to_string()))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    let span = |d: std::time::Duration| {
        time::Duration::try_from(d).map_err(|e| CertGenError(format!("validity: {e}")))
    };
    params.not_before = now - span(BACKDATE)?;
    params.not_after = now + span(validity)?;
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

/// What an operator needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS names and IP addresses (in text form) of the subject alternative names.
    pub subject_alt_names: Vec<String>,
    /// Subject and issuer are the same name (not issued by a CA).
    pub self_signed: bool,
    pub fingerprint: ClientFingerprint,
}

/// Reads a DER certificate's validity, names and issuer.
pub fn inspect_certificate(cert_der: &[u8]) -> Result<CertInfo, FingerprintError> {
    let bad = |e: String| FingerprintError::BadCertificate(e);
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| bad(e.to_string()))?;
    let mut sans = Vec::new();
    if let Some(ext) = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                        sans.push(std::net::Ipv4Addr::from(a).to_string());
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        common_name,
        subject_alt_names: sans,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        fingerprint: ClientFingerprint::of_certificate(cert_der)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn generated_certificates_have_sane_validity_and_their_names() {
        let server = generate_self_signed_for(
            "ks.example.com",
            &["ks.example.com".into(), "10.0.0.5".into(), "::1".into()],
            SERVER_CERT_VALIDITY,
        )
        .unwrap();
        let info = inspect_certificate(&server.cert_der).unwrap();
        let year = 365 * 86400;
        assert!((info.not_after - now() - year).abs() < 120, "{info:?}");
        assert!((now() - info.not_before - 3600).abs() < 120, "{info:?}");
        assert_eq!(
            info.subject_alt_names,
            vec!["ks.example.com", "10.0.0.5", "::1"]
        );
        assert_eq!(info.common_name.as_deref(), Some("ks.example.com"));
        assert!(info.self_signed);
        assert_eq!(info.fingerprint, server.fingerprint);
        let client = generate_self_signed("c", &[]).unwrap();
        let info = inspect_certificate(&client.cert_der).unwrap();
        assert!((info.not_after - now() - 10 * year).abs() < 120, "{info:?}");
        assert!(inspect_certificate(b"junk").is_err());
    }

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
        let again =
            reissue_self_signed(&id.key_pem, "b", &["b".into()], SERVER_CERT_VALIDITY).unwrap();
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
