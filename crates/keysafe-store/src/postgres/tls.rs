//! TLS to PostgreSQL through rustls with the aws-lc-rs provider (the tree's one crypto
//! library). How much the server's certificate is checked follows libpq's `sslmode`: see
//! [`super::config::SslMode`]. Only `verify-full` authenticates the server; the modes that do
//! not check the certificate use [`danger::AnyServerCertificate`], whose name says what it is.

use super::config::{PgConfig, SslMode};
use keysafe_core::store::{StoreError, StoreResult};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector for `cfg`'s `sslmode`. With `disable` it is never used (tokio-postgres does
/// not ask for TLS), but the pool's type needs one.
pub(crate) fn connector(cfg: &PgConfig) -> StoreResult<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (cfg.ssl_mode, cfg.root_certs.is_empty()) {
        (SslMode::VerifyFull, _) => webpki(cfg, &provider)?,
        // libpq: with a root certificate at hand, `require` checks the chain as `verify-ca`.
        (SslMode::VerifyCa, _) | (SslMode::Require | SslMode::Prefer, false) => {
            Arc::new(ChainOnly(webpki(cfg, &provider)?))
        }
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, true) => {
            Arc::new(danger::AnyServerCertificate(provider.clone()))
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Backend(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn webpki(
    cfg: &PgConfig,
    provider: &Arc<CryptoProvider>,
) -> StoreResult<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    for c in &cfg.root_certs {
        roots
            .add(c.clone())
            .map_err(|e| StoreError::Backend(format!("sslrootcert: {e}")))?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| StoreError::Backend(format!("sslrootcert: {e}")))
}

/// `verify-ca`: the chain must lead to a configured root; the host name is not checked. The
/// WebPKI verifier checks the name last, after the chain, so a name error means the chain
/// passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

pub(crate) mod danger {
    //! The verifier of `sslmode=prefer`/`require` without `sslrootcert` (libpq's meaning):
    //! the connection is encrypted, but to whichever server answered.

    use super::*;

    /// Accepts any server certificate. The handshake signature is still checked against the
    /// presented certificate, so the session key belongs to whoever holds that certificate's
    /// private key; who that is stays unknown.
    #[derive(Debug)]
    pub(crate) struct AnyServerCertificate(pub(crate) Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyServerCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
