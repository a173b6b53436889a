//! Client-certificate authentication (`[auth] type = "certificate"`): the TLS layer requires a
//! certificate that chains to the configured CA (rustls' WebPKI verifier: signature, validity
//! dates, key usage) and hands the verified leaf to the gateway; this module turns the leaf's
//! subject or a subject alternative name into a Hadoop user name with the configured rules.
//! It never decides trust: a certificate reaches it only after the handshake verified it.

use crate::auth::{AuthRequest, AuthStep, HttpAuthenticator};
use crate::config::CertificateRule;
use crate::error::{KmsError, KmsResult};
use regex::Regex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Which part of the certificate a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CertField {
    /// The subject's common name (each CN attribute, in order).
    #[serde(rename = "subject.cn")]
    SubjectCn,
    /// The whole subject distinguished name, as RFC 4514 text (`CN=alice, O=Example`).
    #[serde(rename = "subject")]
    Subject,
    #[serde(rename = "san.dns")]
    SanDns,
    #[serde(rename = "san.email")]
    SanEmail,
    #[serde(rename = "san.uri")]
    SanUri,
}

/// The verified leaf certificate of the connection, put into every request's extensions by the
/// accept loop (only over HTTPS with a client certificate).
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

struct CompiledRule {
    field: CertField,
    pattern: Regex,
    user: String,
}

/// The mapping from a certificate to a user name.
pub struct CertMapper {
    rules: Vec<CompiledRule>,
}

impl CertMapper {
    /// Compiles the rules (anchored: a pattern must match the whole field). No rules: the
    /// subject's common name.
    pub fn new(rules: &[CertificateRule]) -> anyhow::Result<CertMapper> {
        let rules = if rules.is_empty() {
            vec![CertificateRule {
                field: CertField::SubjectCn,
                pattern: "(.+)".to_owned(),
                user: "$1".to_owned(),
            }]
        } else {
            rules.to_vec()
        };
        let mut out = Vec::with_capacity(rules.len());
        for r in rules {
            let pattern = Regex::new(&format!("^(?:{})$", r.pattern)).map_err(|e| {
                anyhow::anyhow!("auth.certificate_rules: bad pattern {:?}: {e}", r.pattern)
            })?;
            out.push(CompiledRule {
                field: r.field,
                pattern,
                user: r.user,
            });
        }
        Ok(CertMapper { rules: out })
    }

    /// The user name of a certificate, or None if no rule maps it.
    pub fn map(&self, der: &[u8]) -> Option<String> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        for rule in &self.rules {
            for value in field_values(&cert, rule.field) {
                if let Some(c) = rule.pattern.captures(&value) {
                    let mut user = String::new();
                    c.expand(&rule.user, &mut user);
                    if !user.is_empty() {
                        return Some(user);
                    }
                }
            }
        }
        None
    }
}

fn field_values(cert: &X509Certificate<'_>, field: CertField) -> Vec<String> {
    let sans = || -> Vec<GeneralName<'_>> {
        cert.subject_alternative_name()
            .ok()
            .flatten()
            .map(|e| e.value.general_names.clone())
            .unwrap_or_default()
    };
    match field {
        CertField::SubjectCn => cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect(),
        CertField::Subject => vec![cert.subject().to_string()],
        CertField::SanDns => sans()
            .into_iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(s) => Some(s.to_owned()),
                _ => None,
            })
            .collect(),
        CertField::SanEmail => sans()
            .into_iter()
            .filter_map(|g| match g {
                GeneralName::RFC822Name(s) => Some(s.to_owned()),
                _ => None,
            })
            .collect(),
        CertField::SanUri => sans()
            .into_iter()
            .filter_map(|g| match g {
                GeneralName::URI(s) => Some(s.to_owned()),
                _ => None,
            })
            .collect(),
    }
}

/// Reads the client CA file into a root store.
pub fn client_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("cannot read the client CA {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad PEM in the client CA {}: {e}", path.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| anyhow::anyhow!("bad CA certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("no certificate in the client CA file {}", path.display());
    }
    Ok(roots)
}

/// The certificate authenticator: every request is authenticated by the connection's verified
/// certificate (a cookie is still issued, as Hadoop's client expects one, but a cookie alone
/// never authenticates: it must name the same user as the certificate).
pub struct CertificateAuthenticator {
    mapper: CertMapper,
}

impl CertificateAuthenticator {
    pub fn new(rules: &[CertificateRule]) -> anyhow::Result<Self> {
        Ok(Self {
            mapper: CertMapper::new(rules)?,
        })
    }
}

#[async_trait::async_trait]
impl HttpAuthenticator for CertificateAuthenticator {
    fn token_type(&self) -> &'static str {
        "certificate-dt"
    }
    fn challenge(&self) -> &'static str {
        // No HTTP-level scheme: the answer to a missing certificate is the TLS handshake's.
        "Certificate"
    }
    fn cookie_alone_authenticates(&self) -> bool {
        false
    }
    async fn authenticate(&self, req: &AuthRequest<'_>) -> KmsResult<AuthStep> {
        let Some(cert) = req.peer_certificate else {
            return Ok(AuthStep::None);
        };
        match self.mapper.map(cert.0.as_ref()) {
            Some(user) => Ok(AuthStep::User {
                user,
                principal: None,
                headers: vec![],
            }),
            None => Err(KmsError::authn(
                "the client certificate maps to no user (auth.certificate_rules)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<rcgen_like::San>) -> Vec<u8> {
        rcgen_like::make(cn, sans)
    }

    /// Minimal certificates for the mapper (the real TLS path is tested in tests/it).
    mod rcgen_like {
        pub enum San {
            Dns(&'static str),
            Email(&'static str),
            Uri(&'static str),
        }
        pub fn make(cn: &str, sans: Vec<San>) -> Vec<u8> {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "Example");
            for s in sans {
                p.subject_alt_names.push(match s {
                    San::Dns(d) => rcgen::SanType::DnsName(d.try_into().unwrap()),
                    San::Email(e) => rcgen::SanType::Rfc822Name(e.try_into().unwrap()),
                    San::Uri(u) => rcgen::SanType::URI(u.try_into().unwrap()),
                });
            }
            let k = rcgen::KeyPair::generate().unwrap();
            p.self_signed(&k).unwrap().der().to_vec()
        }
    }

    #[test]
    fn default_rule_is_the_common_name() {
        let m = CertMapper::new(&[]).unwrap();
        assert_eq!(m.map(&cert("alice", vec![])).as_deref(), Some("alice"));
        assert_eq!(m.map(b"not a certificate"), None);
    }

    #[test]
    fn rules_in_order_with_groups() {
        use rcgen_like::San;
        let rules = vec![
            CertificateRule {
                field: CertField::SanEmail,
                pattern: r"([a-z]+)@hadoop\.example\.com".into(),
                user: "$1".into(),
            },
            CertificateRule {
                field: CertField::SanUri,
                pattern: r"spiffe://example\.com/svc/(?P<svc>[a-z]+)".into(),
                user: "svc-${svc}".into(),
            },
            CertificateRule {
                field: CertField::SanDns,
                pattern: r"(nn|dn)[0-9]+\.example\.com".into(),
                user: "hdfs".into(),
            },
            CertificateRule {
                field: CertField::Subject,
                pattern: r"CN=([^,]+), O=Example".into(),
                user: "o_$1".into(),
            },
        ];
        let m = CertMapper::new(&rules).unwrap();
        let c = cert(
            "ignored",
            vec![
                San::Email("bob@other.com"),
                San::Email("carol@hadoop.example.com"),
            ],
        );
        assert_eq!(m.map(&c).as_deref(), Some("carol"));
        let c = cert("x", vec![San::Uri("spiffe://example.com/svc/hive")]);
        assert_eq!(m.map(&c).as_deref(), Some("svc-hive"));
        let c = cert("x", vec![San::Dns("nn1.example.com")]);
        assert_eq!(m.map(&c).as_deref(), Some("hdfs"));
        // A partial match is no match: the pattern must cover the whole field.
        let c = cert("x", vec![San::Dns("evil-nn1.example.com.attacker.net")]);
        assert_eq!(
            m.map(&c).as_deref(),
            Some("o_x"),
            "falls through to the subject rule"
        );
        let only_san = CertMapper::new(&rules[..1]).unwrap();
        assert_eq!(only_san.map(&cert("dave", vec![])), None);
        assert!(
            CertMapper::new(&[CertificateRule {
                field: CertField::SubjectCn,
                pattern: "(".into(),
                user: "$1".into(),
            }])
            .is_err()
        );
    }
}
