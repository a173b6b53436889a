//! Client-side TLS: the client's own certificate for mutual TLS, and how the server is trusted:
//! pinned by fingerprint (the default once registered), trusted on first use (only while
//! registering, and the fingerprint seen is then pinned), or verified against a CA certificate.

use crate::error::ClientError;
use keysafe_proto::ClientFingerprint;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

/// How the client decides that it talks to the right server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The server's public key must have this fingerprint.
    Fingerprint(ClientFingerprint),
    /// Accept whatever key the server shows and remember it (registration only).
    TrustOnFirstUse,
    /// Verify the server's certificate chain and host name against these CA certificates.
    Ca(Vec<CertificateDer<'static>>),
}

/// What the handshake saw of the server, shared with the verifier.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub fingerprint: Option<ClientFingerprint>,
    pub mismatch: Option<(ClientFingerprint, ClientFingerprint)>,
}

#[derive(Debug)]
struct PinningVerifier {
    expected: Option<ClientFingerprint>,
    observed: Arc<Mutex<Observed>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual = ClientFingerprint::of_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let mut obs = self
            .observed
            .lock()
            .map_err(|_| rustls::Error::General("lock poisoned".into()))?;
        obs.fingerprint = Some(actual.clone());
        match &self.expected {
            Some(expected) if expected != &actual => {
                obs.mismatch = Some((expected.clone(), actual));
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls configuration; returns it with the slot the verifier reports into.
pub(crate) fn client_config(
    trust: &ServerTrust,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<(ClientConfig, Arc<Mutex<Observed>>), ClientError> {
    let provider = provider();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Invalid(format!("TLS configuration: {e}")))?;
    let builder = match trust {
        ServerTrust::Ca(certs) => {
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| ClientError::Invalid(format!("bad CA certificate: {e}")))?;
            }
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ClientError::Invalid(format!("CA verifier: {e}")))?;
            builder.with_webpki_verifier(verifier)
        }
        ServerTrust::Fingerprint(fp) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinningVerifier {
                    expected: Some(fp.clone()),
                    observed: observed.clone(),
                    algs: provider.signature_verification_algorithms,
                }))
        }
        ServerTrust::TrustOnFirstUse => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinningVerifier {
                    expected: None,
                    observed: observed.clone(),
                    algs: provider.signature_verification_algorithms,
                }))
        }
    };
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Invalid(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok((config, observed))
}
