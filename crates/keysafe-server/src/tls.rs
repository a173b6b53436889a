//! TLS for the server: rustls with the aws-lc-rs provider, TLS 1.2 minimum (1.3 preferred), and a
//! client-certificate verifier that asks every client for a certificate, accepts any well-formed
//! self-signed one (proof of possession is still checked through the handshake signature), and
//! leaves the decision to the application, which knows the registered fingerprints. A missing or
//! unknown certificate therefore gets a JSON error, not a bare TLS alert.

use crate::config::{Config, TlsMinVersion};
use anyhow::{Context, anyhow};
use keysafe_proto::ClientFingerprint;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[derive(Debug)]
struct AnySelfSignedClient {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnySelfSignedClient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Identity is the key, not a chain: we only require a parseable certificate here. Whether
        // the key belongs to a registered, active client is decided per request.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
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

/// The server certificate chain and key loaded from PEM files.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: ClientFingerprint,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

pub fn load_identity(cert: &Path, key: &Path) -> anyhow::Result<ServerIdentity> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in {}", cert.display()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("no certificate in {}", cert.display()))?;
    let fingerprint = ClientFingerprint::of_certificate(leaf)
        .with_context(|| format!("bad certificate in {}", cert.display()))?;
    keysafe_core::seal::check_private_file(key).map_err(|e| match e {
        keysafe_core::seal::PrivateFileError::Insecure(mode) => anyhow!(
            "the TLS key {} is readable by group or others (mode {mode:o}); run: chmod 600 {}",
            key.display(),
            key.display()
        ),
        keysafe_core::seal::PrivateFileError::Io(e) => {
            anyhow!("cannot read TLS key {}: {e}", key.display())
        }
    })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read TLS key {}", key.display()))?;
    Ok(ServerIdentity {
        chain,
        key,
        fingerprint,
    })
}

pub fn server_config(config: &Config, identity: &ServerIdentity) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match config.tls_min_version {
        TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
        TlsMinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let verifier = Arc::new(AnySelfSignedClient {
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .context("the TLS certificate and key do not match or are unsupported")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}
