//! TLS for the server: rustls with the aws-lc-rs provider, TLS 1.2 minimum (1.3 preferred), and a
//! client-certificate verifier that asks every client for a certificate, accepts any well-formed
//! self-signed one (proof of possession is still checked through the handshake signature), and
//! leaves the decision to the application, which knows the registered fingerprints. A missing or
//! unknown certificate therefore gets a JSON error, not a bare TLS alert.
//!
//! The server's own certificate and key are served through [`ServerTls`], a certificate resolver
//! whose certified key is swapped atomically when the files are reloaded (SIGHUP, or a change the
//! watcher notices). A handshake takes whichever key is current when it starts; connections
//! already open keep theirs, and the accept loop never sees the change. A reload that fails (a
//! half-written pair, a key that does not match its certificate, a new key that is not allowed)
//! keeps serving the previous pair and is reported once per change of the files.

use crate::config::{Config, TlsMinVersion};
use anyhow::{Context, anyhow, bail};
use keysafe_proto::ClientFingerprint;
use keysafe_proto::identity::CertInfo;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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

/// A `ServerConfig` that always serves this one identity (tests, tools).
pub fn server_config(config: &Config, identity: &ServerIdentity) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(AnySelfSignedClient {
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(config))
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .context("the TLS certificate and key do not match or are unsupported")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(config: &Config) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match config.tls_min_version {
        TlsMinVersion::Tls13 => &TLS13_ONLY,
        TlsMinVersion::Tls12 => &TLS13_AND_12,
    }
}

/// Health warns this long before the certificate expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86400);

/// The certificate and key being served now.
struct Current {
    certified: Arc<CertifiedKey>,
    info: CertInfo,
}

/// What identifies one version of the two files, so that a change is noticed (and a failed
/// attempt is not repeated until they change again).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        inode,
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold what is already served.
    Unchanged,
    /// A new certificate for the same key: the fingerprint is unchanged.
    Renewed { not_after: i64 },
    /// A new key (allowed by `server.tls_allow_key_change`): the fingerprint changed.
    NewKey {
        old: ClientFingerprint,
        new: ClientFingerprint,
        not_after: i64,
    },
}

/// The server's reloadable TLS identity; also the rustls certificate resolver.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    allow_key_change: bool,
    current: RwLock<Arc<Current>>,
    /// The files as last read, successfully or not.
    seen: Mutex<Option<(Stamp, Stamp)>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert_path)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }
}

/// Reads and checks a certificate chain and its key.
fn load_certified(cert: &Path, key: &Path) -> anyhow::Result<Current> {
    let identity = load_identity(cert, key)?;
    let leaf = identity
        .chain
        .first()
        .ok_or_else(|| anyhow!("no certificate in {}", cert.display()))?;
    let info = keysafe_proto::identity::inspect_certificate(leaf)
        .with_context(|| format!("bad certificate in {}", cert.display()))?;
    let certified =
        CertifiedKey::from_der(identity.chain, identity.key, &provider()).map_err(|e| {
            anyhow!(
                "the TLS certificate {} and key {} do not match or are unsupported: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Current {
        certified: Arc::new(certified),
        info,
    })
}

impl ServerTls {
    /// Loads the configured certificate and key.
    pub fn load(config: &Config) -> anyhow::Result<Arc<Self>> {
        let seen = stamp(&config.tls_cert).zip(stamp(&config.tls_key));
        let current = load_certified(&config.tls_cert, &config.tls_key)?;
        let tls = Self {
            cert_path: config.tls_cert.clone(),
            key_path: config.tls_key.clone(),
            allow_key_change: config.tls_allow_key_change,
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(seen),
        };
        tls.publish();
        Ok(Arc::new(tls))
    }

    /// A `ServerConfig` that serves whatever this identity currently holds.
    pub fn server_config(self: &Arc<Self>, config: &Config) -> anyhow::Result<ServerConfig> {
        let provider = provider();
        let verifier = Arc::new(AnySelfSignedClient {
            algs: provider.signature_verification_algorithms,
        });
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions(config))
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.clone());
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tls)
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The fingerprint of the key served now.
    pub fn fingerprint(&self) -> ClientFingerprint {
        self.current().info.fingerprint.clone()
    }

    /// What the served certificate says about itself (validity, names, issuer).
    pub fn certificate(&self) -> CertInfo {
        self.current().info.clone()
    }

    /// Unix seconds when the served certificate expires.
    pub fn not_after(&self) -> i64 {
        self.current().info.not_after
    }

    fn publish(&self) {
        metrics::gauge!("keysafe_tls_certificate_expiry_seconds").set(self.not_after() as f64);
    }

    /// Reads the files again and serves them if they are valid and the key is acceptable;
    /// otherwise keeps serving what it served and returns why.
    pub fn reload(&self) -> anyhow::Result<Reloaded> {
        let stamps = stamp(&self.cert_path).zip(stamp(&self.key_path));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let next = load_certified(&self.cert_path, &self.key_path)?;
        let old = self.current();
        if old.certified.cert == next.certified.cert && old.info == next.info {
            return Ok(Reloaded::Unchanged);
        }
        let not_after = next.info.not_after;
        let outcome = if next.info.fingerprint == old.info.fingerprint {
            Reloaded::Renewed { not_after }
        } else if self.allow_key_change {
            Reloaded::NewKey {
                old: old.info.fingerprint.clone(),
                new: next.info.fingerprint.clone(),
                not_after,
            }
        } else {
            bail!(
                "refusing the new TLS key in {}: its fingerprint {} differs from the served {}, and                  clients that pinned the served one would refuse the server. Renew the                  certificate for the same key (keysafe admin tls renew, or a CSR from the same                  key), or set server.tls_allow_key_change = true and re-pin the clients",
                self.key_path.display(),
                next.info.fingerprint,
                old.info.fingerprint
            );
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.publish();
        Ok(outcome)
    }

    /// Reloads when either file changed since it was last read (or tried); `None` otherwise.
    pub fn reload_if_changed(&self) -> Option<anyhow::Result<Reloaded>> {
        let now = stamp(&self.cert_path).zip(stamp(&self.key_path));
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return None;
            }
        }
        Some(self.reload())
    }

    /// Reloads and logs the outcome (SIGHUP and the watcher).
    pub fn reload_and_log(&self, why: &str) {
        log_outcome(why, self.reload());
    }

    /// Polls the files every `every` and reloads them when they change. Returns the task; it
    /// runs until aborted.
    pub fn spawn_watcher(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let me = self.clone();
                let r = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
                if let Ok(Some(outcome)) = r {
                    log_outcome("the files changed", outcome);
                }
            }
        })
    }
}

fn log_outcome(why: &str, outcome: anyhow::Result<Reloaded>) {
    match outcome {
        Ok(Reloaded::Unchanged) => {
            tracing::info!(why, "TLS certificate checked: unchanged");
        }
        Ok(Reloaded::Renewed { not_after }) => {
            tracing::info!(
                why,
                expires = %keysafe_proto::Timestamp::from_unix_millis(not_after.saturating_mul(1000)).to_rfc3339(),
                "TLS certificate reloaded (same key, same fingerprint)"
            );
        }
        Ok(Reloaded::NewKey {
            old,
            new,
            not_after,
        }) => {
            tracing::warn!(
                why,
                %old,
                %new,
                expires = %keysafe_proto::Timestamp::from_unix_millis(not_after.saturating_mul(1000)).to_rfc3339(),
                "TLS key replaced: the server's fingerprint changed; clients that pinned the old one must re-pin"
            );
        }
        Err(e) => {
            tracing::error!(why, error = %format!("{e:#}"), "TLS reload failed; still serving the previous certificate");
        }
    }
}
