//! Shared state handed to every handler.

use crate::attempts::{AttemptLimiter, WindowCounter};
use keysafe_core::Service;
use keysafe_net::ConnectionLimiter;
use keysafe_proto::ClientFingerprint;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Shared state handed to every handler: one reference-counted pointer, so the clone axum
/// makes for every extractor and middleware layer of every request is one atomic increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub struct AppStateInner {
    pub service: Arc<Service>,
    /// The server's certificate and key as served now (reloadable); its fingerprint is the
    /// SHA-256 of the certificate's public key.
    pub tls: Arc<crate::tls::ServerTls>,
    /// The last health status, so that a change is logged once rather than per probe.
    pub health_log: Arc<crate::health_log::HealthLog>,
    /// What unauthenticated registration may cost the server.
    pub registration: Arc<RegistrationLimits>,
    /// The audit queue and its failure policy.
    pub audit: Arc<crate::audit::AuditTrail>,
    /// Entries of requests from callers nobody authenticated: counted, and only sampled into
    /// the chain.
    pub anonymous: Arc<crate::anonymous::AnonymousAudit>,
    /// What a backup contains besides the database.
    pub backup: Arc<crate::backup::BackupSources>,
    /// Open connections, in all and per source address.
    pub connections: Arc<ConnectionLimiter>,
    /// A request must be answered within this time.
    pub request_timeout: Duration,
    /// This node of the cluster (its id, heartbeat and change-following settings).
    pub cluster: Arc<crate::cluster::ClusterNode>,
}

impl AppStateInner {
    /// The server's own fingerprint, of the key it serves now.
    pub fn fingerprint(&self) -> ClientFingerprint {
        self.tls.fingerprint()
    }
}

/// The limits on registration, the one operation a caller without an identity can start that
/// costs real work (an Argon2id verification, 19 MiB and tens of milliseconds) or leaves rows
/// behind (a pending client).
#[derive(Debug)]
pub struct RegistrationLimits {
    /// Failed registrations (`invalid_auth`) per source address and window.
    pub failures: Arc<AttemptLimiter>,
    /// Registrations into approval-mode organisations per source address and window.
    pub pending: Arc<AttemptLimiter>,
    /// ... and from all sources together.
    pub pending_total: WindowCounter,
    /// Registrations being verified at once (sized to the cores).
    pub verifications: Arc<Semaphore>,
    /// How long a registration waits for a verification slot before `429 rate_limited`.
    pub verification_wait: Duration,
}

impl RegistrationLimits {
    pub fn from_config(c: &crate::config::Config) -> Self {
        let permits = match c.registration_max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Self {
            failures: AttemptLimiter::new(
                c.registration_failure_limit,
                c.registration_failure_window,
            ),
            pending: AttemptLimiter::new(
                c.registration_pending_limit,
                c.registration_pending_window,
            ),
            pending_total: WindowCounter::new(
                c.registration_pending_total,
                c.registration_pending_window,
            ),
            verifications: Arc::new(Semaphore::new(permits)),
            verification_wait: Duration::from_secs(2),
        }
    }
}
