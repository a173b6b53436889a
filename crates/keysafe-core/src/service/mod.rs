//! The domain service: every operation the API offers, with its authorisation rule and its
//! envelope encryption. Handlers call exactly one method here; tests drive it directly.
//!
//! Identities are cached in memory (the read path must not hit the database just to learn who
//! the caller is); a change made through this node invalidates its entry at once, and entries
//! expire after `identity_cache_ttl` so changes made through another node are seen soon.

mod access;
mod backup;
mod clients;
mod deposits;
mod etag;
mod groups;
mod integrity;
mod lifecycle;
mod orgs;
mod sharing;
mod tokens;
mod turns;
mod verify;

pub use clients::{ADMIN_ORG, ClientAction};
pub use deposits::{Deposit, DepositRead, Precondition, PutOptions};
pub use etag::{ContentTag, IfNoneMatch};
pub use lifecycle::TokenSelector;
pub use tokens::IssuedToken;

// A cluster of nodes over one database.
pub mod cluster;
// Seals, rotation and re-wrap.
pub use backup::BackupSource;
pub mod rewrap;
pub mod sealing;
pub use rewrap::RewrapProgress;
pub use sealing::{KekVersionStatus, KeyringReload, KeyringStatus};

use crate::clock::Clock;
use crate::error::CoreError;
use crate::keyring::Keyring;
use crate::seal::Seal;
use crate::store::{ClientRecord, Mutation, Store};
use keysafe_proto::api::{ClientRole, ClientState};
use keysafe_proto::{ClientFingerprint, OrgName};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Tunables the domain enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest deposit payload accepted, in bytes.
    pub max_deposit_size: usize,
    /// How long a cached client identity is trusted before it is re-read from the store.
    pub identity_cache_ttl: Duration,
    /// How often a client's sequenced token is rotated.
    pub token_rotation: Duration,
    /// How long a replaced token is still accepted (requests in flight when it rotated).
    pub token_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_deposit_size: 1024 * 1024,
            identity_cache_ttl: Duration::from_secs(5),
            token_rotation: Duration::from_secs(300),
            token_grace: Duration::from_secs(300),
        }
    }
}

/// An authenticated caller, and the token to hand back if one was issued.
#[derive(Debug)]
pub struct Authenticated {
    pub caller: Caller,
    pub issued_token: Option<IssuedToken>,
}

/// An authenticated, active client: the only kind of caller the deposit and admin operations
/// accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub fingerprint: ClientFingerprint,
    pub org: OrgName,
    pub role: ClientRole,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == ClientRole::Admin
    }

    /// Refuses a caller that is not a server administrator.
    pub fn require_admin(&self) -> Result<(), CoreError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(CoreError::Forbidden(
                "this operation needs a server administrator identity".into(),
            ))
        }
    }
}

pub struct Service {
    store: Arc<dyn Store>,
    /// `None` while sealed: deposit operations answer `Sealed`, everything else keeps working.
    keyring: RwLock<Option<Arc<Keyring>>>,
    /// The seal, and why the service is sealed.
    sealing: sealing::SealState,
    clock: Arc<dyn Clock>,
    limits: Limits,
    identities: RwLock<HashMap<ClientFingerprint, (Arc<ClientRecord>, Instant)>>,
    write_turns: turns::Turns,
    // ---- audit trail and metrics ----
    audit_signer: tokio::sync::OnceCell<Arc<crate::audit::AuditSigner>>,
    identity_hits: std::sync::atomic::AtomicU64,
    identity_misses: std::sync::atomic::AtomicU64,
    integrity_failures: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Opens the keyring with the seal and returns a ready service. Without a seal (a passphrase
    /// seal with no passphrase given), or when the HSM key is gone, the service starts sealed;
    /// any other failure to open the keyring (wrong passphrase, wrong PIN) is an error.
    pub async fn open(
        store: Arc<dyn Store>,
        seal: Option<Arc<dyn Seal>>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Result<Self, CoreError> {
        let service = Self {
            store,
            keyring: RwLock::new(None),
            sealing: sealing::SealState::default(),
            clock,
            limits,
            identities: RwLock::new(HashMap::new()),
            write_turns: turns::Turns::new(),
            audit_signer: tokio::sync::OnceCell::new(),
            identity_hits: Default::default(),
            identity_misses: Default::default(),
            integrity_failures: Default::default(),
        };
        service
            .store
            .row_auth()
            .set(crate::store::RowAuthMode::Sealed);
        if let Some(seal) = seal {
            service.open_keyring(seal).await?;
        } else {
            service.set_sealed_reason("waiting for the passphrase (keysafe admin unseal)");
        }
        Ok(service)
    }

    /// Creates the first keyring version in an empty store (used by `init`).
    pub async fn initialise_keyring(
        store: &dyn Store,
        seal: Arc<dyn Seal>,
        clock: &dyn Clock,
    ) -> Result<(), CoreError> {
        if !store.load_keks().await?.is_empty() {
            return Err(CoreError::AlreadyExists("keyring"));
        }
        let now = clock.now();
        let (_, record) = tokio::task::spawn_blocking(move || Keyring::generate(seal, now))
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))??;
        store.apply(Mutation::InsertKek(record)).await?;
        Ok(())
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn is_sealed(&self) -> bool {
        self.keyring.read().map(|k| k.is_none()).unwrap_or(true)
    }

    fn keyring(&self) -> Result<Arc<Keyring>, CoreError> {
        self.keyring
            .read()
            .map_err(|_| CoreError::Internal("keyring lock poisoned".into()))?
            .clone()
            .ok_or(CoreError::Sealed)
    }

    /// Looks a client up, through the identity cache.
    async fn client_record(
        &self,
        fp: &ClientFingerprint,
    ) -> Result<Option<Arc<ClientRecord>>, CoreError> {
        if let Ok(map) = self.identities.read()
            && let Some((rec, at)) = map.get(fp)
            && at.elapsed() < self.limits.identity_cache_ttl
        {
            self.identity_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Some(rec.clone()));
        }
        self.identity_misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Only verified rows are cached.
        let Some(rec) = self.verified_client(fp).await? else {
            return Ok(None);
        };
        let rec = Arc::new(rec);
        if let Ok(mut map) = self.identities.write() {
            // Bounded: an attacker cannot grow this with unregistered certificates, because only
            // registered clients are cached.
            map.insert(fp.clone(), (rec.clone(), Instant::now()));
        }
        Ok(Some(rec))
    }

    fn forget_identity(&self, fp: &ClientFingerprint) {
        if let Ok(mut map) = self.identities.write() {
            map.remove(fp);
        }
    }

    /// Turns the certificate fingerprint of a connection and the sequenced token the client
    /// presented into an active caller, or says why not. May issue the client's next token.
    pub async fn authenticate(
        &self,
        fp: Option<&ClientFingerprint>,
        token: Option<&str>,
    ) -> Result<Authenticated, CoreError> {
        let fp = fp.ok_or(CoreError::ClientCertificateRequired)?;
        let rec = self
            .client_record(fp)
            .await?
            .ok_or(CoreError::UnknownClient)?;
        match rec.state {
            ClientState::Active => {}
            ClientState::Pending => return Err(CoreError::ClientPending),
            ClientState::Disabled => return Err(CoreError::ClientDisabled),
            ClientState::SuspectedClone => return Err(CoreError::SuspectedClone),
        }
        let issued_token = self.check_token(&rec, token).await?;
        Ok(Authenticated {
            caller: Caller {
                fingerprint: rec.fingerprint.clone(),
                org: rec.org.clone(),
                role: rec.role,
            },
            issued_token,
        })
    }

    // ---- audit trail and metrics ----

    /// Applies a change made by the request being served, carrying the request's audit event
    /// so that the entry commits with the change. A write that fails leaves the event for the
    /// server to record with the error.
    pub(crate) async fn apply_audited(
        &self,
        mutation: Mutation,
    ) -> Result<crate::store::Applied, crate::store::StoreError> {
        self.submit_audited(mutation).await?.await
    }

    /// Queues a change made by the request being served, as [`Service::apply_audited`]
    /// applies it, and returns once it is queued (see [`Store::submit_audited`]); the future
    /// returned answers when it is durable, and must be awaited by the request's task.
    pub(crate) async fn submit_audited(
        &self,
        mutation: Mutation,
    ) -> Result<
        impl Future<Output = Result<crate::store::Applied, crate::store::StoreError>> + use<>,
        crate::store::StoreError,
    > {
        let event = crate::audit::event_for_write();
        let carried = event.is_some();
        let queued = self.store.submit_audited(mutation, event).await?;
        Ok(async move {
            let r = queued.await;
            if carried && r.is_ok() {
                crate::audit::mark_recorded();
            }
            r
        })
    }

    /// The audit signing key, loaded (or created on first use) once.
    pub async fn audit_signer(&self) -> Result<Arc<crate::audit::AuditSigner>, CoreError> {
        self.audit_signer
            .get_or_try_init(|| async {
                let keyring = self.keyring()?;
                let load = |keyring: Arc<Keyring>| async move {
                    crate::audit::AuditSigner::load_or_create(
                        self.store.as_ref(),
                        &keyring,
                        self.clock.now(),
                    )
                    .await
                    .map(Arc::new)
                };
                match load(keyring).await {
                    // Wrapped by a keyring version another process added since this one
                    // loaded its keyring: reload, then try once more.
                    Err(CoreError::Integrity(_)) => {
                        self.reload_keyring().await?;
                        load(self.keyring()?).await
                    }
                    other => other,
                }
            })
            .await
            .cloned()
    }

    /// Signs the head of the audit chain if it moved past the last checkpoint, and stores the
    /// checkpoint. The head is the writer's (what it committed), not what the database says now.
    pub async fn audit_checkpoint(
        &self,
    ) -> Result<Option<keysafe_proto::audit::AuditCheckpoint>, CoreError> {
        let head = self.store.audit_head();
        if head.seq == 0 {
            return Ok(None);
        }
        if !self.store.audit_checkpoints(head.seq).await?.is_empty() {
            return Ok(None);
        }
        let signer = self.audit_signer().await?;
        let cp = signer.sign(head.seq, &head.hash, self.clock.now());
        self.store
            .apply(Mutation::InsertAuditCheckpoint(cp.clone()))
            .await
            .map_err(|e| CoreError::from_store(e, "audit checkpoint"))?;
        Ok(Some(cp))
    }

    /// Identity cache (hits, misses) since start.
    pub fn identity_cache_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.identity_hits.load(Relaxed),
            self.identity_misses.load(Relaxed),
        )
    }
}
