//! Sealed and unsealed: opening the keyring with the seal at start or later (`unseal` with a
//! passphrase), sealing the service when the HSM key disappears, keyring rotation and
//! retirement. While sealed, deposit operations answer `Sealed` and nothing else changes.

use super::{Caller, Service};
use crate::error::CoreError;
use crate::keyring::{Keyring, seal_summary};
use crate::seal::{KdfParams, PassphraseSeal, Seal, SealError};
use crate::store::{KekUsage, Mutation, WrappedKind};
use keysafe_proto::Timestamp;
use std::sync::{Arc, RwLock};

/// The seal in use, and why the service is sealed when it is.
#[derive(Default)]
pub(super) struct SealState {
    seal: RwLock<Option<Arc<dyn Seal>>>,
    reason: RwLock<Option<String>>,
    /// Set when the HSM key was found destroyed: nothing may unseal this process again.
    shredded: std::sync::atomic::AtomicBool,
    /// Wakes the re-wrap job (after a rotation or an unseal).
    pub(super) rewrap_wake: tokio::sync::Notify,
}

/// One keyring version as `keysafe admin keyring status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekVersionStatus {
    pub version: u32,
    pub created_at: Timestamp,
    pub current: bool,
    /// Wrapped rows per kind that still use this version.
    pub usage: Vec<(WrappedKind, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringStatus {
    pub sealed: bool,
    pub sealed_reason: Option<String>,
    pub seal: Option<String>,
    pub per_deposit: bool,
    pub current: Option<u32>,
    pub versions: Vec<KekVersionStatus>,
    /// Wrapped rows not yet on the current version.
    pub rewrap_pending: u64,
}

fn blocking_err(e: tokio::task::JoinError) -> CoreError {
    CoreError::Internal(format!("blocking task failed: {e}"))
}

impl Service {
    /// Opens the keyring with `seal` and unseals the service. An HSM key that is gone leaves the
    /// service sealed (and logs why) instead of failing; any other failure is returned.
    pub(super) async fn open_keyring(&self, seal: Arc<dyn Seal>) -> Result<(), CoreError> {
        let records = self.store.load_keks().await?;
        let s = seal.clone();
        let opened = tokio::task::spawn_blocking(move || Keyring::open(s, &records))
            .await
            .map_err(blocking_err)?;
        match opened {
            Ok(ring) => {
                self.install(Some(Arc::new(ring)), Some(seal), None);
                self.sealing.rewrap_wake.notify_one();
                Ok(())
            }
            Err(e @ SealError::HsmKeyMissing { .. }) => {
                tracing::error!(error = %e, "the HSM key is gone: starting sealed; no deposit can be decrypted");
                self.sealing
                    .shredded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.install(None, None, Some(e.to_string()));
                Ok(())
            }
            Err(e) => Err(CoreError::Unavailable(format!(
                "cannot open the keyring: {e}"
            ))),
        }
    }

    fn install(
        &self,
        ring: Option<Arc<Keyring>>,
        seal: Option<Arc<dyn Seal>>,
        reason: Option<String>,
    ) {
        if let Ok(mut k) = self.keyring.write() {
            *k = ring;
        }
        if let Ok(mut s) = self.sealing.seal.write() {
            *s = seal;
        }
        if let Ok(mut r) = self.sealing.reason.write() {
            *r = reason;
        }
    }

    pub(super) fn set_sealed_reason(&self, reason: &str) {
        if let Ok(mut r) = self.sealing.reason.write() {
            *r = Some(reason.to_owned());
        }
    }

    /// Why the service is sealed, if it is.
    pub fn sealed_reason(&self) -> Option<String> {
        if !self.is_sealed() {
            return None;
        }
        self.sealing.reason.read().ok().and_then(|r| r.clone())
    }

    /// The kind of the seal in use (`file`, `passphrase`, `pkcs11`), if unsealed.
    pub fn seal_kind(&self) -> Option<&'static str> {
        self.sealing
            .seal
            .read()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.kind()))
    }

    fn seal(&self) -> Result<Arc<dyn Seal>, CoreError> {
        self.sealing
            .seal
            .read()
            .ok()
            .and_then(|s| s.clone())
            .ok_or(CoreError::Sealed)
    }

    /// Seals the service now: the keyring is dropped from memory (its keys are zeroised when the
    /// last in-flight request lets go of it).
    pub fn seal_now(&self, reason: &str) {
        tracing::error!(
            reason,
            "sealing the service: deposits can no longer be decrypted"
        );
        self.install(None, None, Some(reason.to_owned()));
    }

    /// Re-checks the seal's key (the HSM key object). If it is gone, the service seals itself for
    /// good. Returns whether the service is unsealed afterwards.
    pub async fn check_seal(&self) -> bool {
        let Ok(seal) = self.seal() else {
            return false;
        };
        match tokio::task::spawn_blocking(move || seal.check()).await {
            Ok(Ok(())) => true,
            Ok(Err(e @ SealError::HsmKeyMissing { .. })) => {
                self.sealing
                    .shredded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.seal_now(&e.to_string());
                false
            }
            Ok(Err(e)) => {
                // An HSM that does not answer is not proof that the key is gone; keep serving
                // (each per-deposit operation fails on its own) and say so.
                tracing::warn!(error = %e, "the seal check failed");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "the seal check did not run");
                true
            }
        }
    }

    /// Called by the data-key paths when the seal reports its key gone mid-request.
    pub fn on_seal_error(&self, e: &SealError) {
        if matches!(e, SealError::HsmKeyMissing { .. }) {
            self.sealing
                .shredded
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.seal_now(&e.to_string());
        }
    }

    /// `POST /v1/admin/unseal`: opens the keyring with an operator's passphrase. A wrong
    /// passphrase changes nothing.
    pub async fn unseal_with_passphrase(
        &self,
        caller: &Caller,
        passphrase: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<(), CoreError> {
        if !caller.is_admin() {
            return Err(CoreError::Forbidden(
                "unsealing needs a server administrator identity".into(),
            ));
        }
        if !self.is_sealed() {
            return Err(CoreError::InvalidState("the server is not sealed".into()));
        }
        if self
            .sealing
            .shredded
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(CoreError::InvalidState(
                "the HSM key is gone; this keyring can never be opened again".into(),
            ));
        }
        let records = self.store.load_keks().await?;
        let mut descriptors: Vec<String> = records
            .iter()
            .filter(|r| KdfParams::is_descriptor(&r.seal))
            .map(|r| r.seal.clone())
            .collect();
        descriptors.sort();
        descriptors.dedup();
        if descriptors.is_empty() {
            return Err(CoreError::InvalidState(
                "this server's keyring is not sealed by a passphrase".into(),
            ));
        }
        let opened = tokio::task::spawn_blocking(move || {
            for d in descriptors {
                let params = KdfParams::parse(&d)?;
                let seal: Arc<dyn Seal> = Arc::new(PassphraseSeal::derive(&passphrase, params)?);
                match Keyring::open(seal.clone(), &records) {
                    Ok(ring) => return Ok(Some((ring, seal))),
                    Err(SealError::WrongPassphrase) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        })
        .await
        .map_err(blocking_err)?
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        let Some((ring, seal)) = opened else {
            tracing::warn!(admin = %caller.fingerprint, "unseal refused: wrong passphrase");
            return Err(CoreError::Forbidden(
                "the passphrase does not open the keyring".into(),
            ));
        };
        self.install(Some(Arc::new(ring)), Some(seal), None);
        self.sealing.rewrap_wake.notify_one();
        tracing::info!(admin = %caller.fingerprint, "unsealed");
        Ok(())
    }

    /// `keysafe admin keyring rotate`: adds a keyring version that new data keys use at once, and
    /// wakes the re-wrap job.
    pub async fn rotate_keyring(&self, caller: &Caller) -> Result<u32, CoreError> {
        self.require_admin(caller)?;
        let ring = self.keyring()?;
        let seal = self.seal()?;
        let now = self.clock.now();
        let r = ring.clone();
        let (rotated, record) = tokio::task::spawn_blocking(move || r.rotated(seal.as_ref(), now))
            .await
            .map_err(blocking_err)??;
        // Stored before it is used: a data key never names a version the database lacks.
        self.store
            .apply(Mutation::InsertKek(record))
            .await
            .map_err(|e| CoreError::from_store(e, "keyring version"))?;
        let version = rotated.current_version();
        if let Ok(mut k) = self.keyring.write() {
            *k = Some(Arc::new(rotated));
        }
        self.sealing.rewrap_wake.notify_one();
        tracing::info!(version, admin = %caller.fingerprint, "keyring rotated");
        Ok(version)
    }

    /// `keysafe admin keyring retire N`: deletes a version that no wrapped row uses any more.
    pub async fn retire_kek(&self, caller: &Caller, version: u32) -> Result<(), CoreError> {
        self.require_admin(caller)?;
        let ring = self.keyring()?;
        if version == ring.current_version() {
            return Err(CoreError::InvalidState(
                "the current keyring version cannot be retired; rotate first".into(),
            ));
        }
        if !ring.versions().contains(&version) {
            return Err(CoreError::NotFound("keyring version"));
        }
        self.store
            .apply(Mutation::RetireKek { version })
            .await
            .map_err(|e| CoreError::from_store(e, "keyring version"))?;
        if let Some(smaller) = ring.without(version)
            && let Ok(mut k) = self.keyring.write()
        {
            *k = Some(Arc::new(smaller));
        }
        tracing::info!(version, admin = %caller.fingerprint, "keyring version retired");
        Ok(())
    }

    /// `keysafe admin keyring status`.
    pub async fn keyring_status(&self, caller: &Caller) -> Result<KeyringStatus, CoreError> {
        self.require_admin(caller)?;
        let ring = self.keyring().ok();
        let seal = self.seal().ok();
        let records = self.store.load_keks().await?;
        let usage: Vec<KekUsage> = self.store.kek_usage().await?;
        let current = ring.as_ref().map(|r| r.current_version());
        let descriptor = seal.as_ref().map(|s| s.descriptor());
        let mut versions: Vec<KekVersionStatus> = Vec::new();
        for r in &records {
            if descriptor.as_ref().is_some_and(|d| *d != r.seal)
                || versions.iter().any(|v| v.version == r.version)
            {
                continue;
            }
            versions.push(KekVersionStatus {
                version: r.version,
                created_at: r.created_at,
                current: Some(r.version) == current,
                usage: usage
                    .iter()
                    .filter(|u| u.kek_version == r.version)
                    .map(|u| (u.kind, u.count))
                    .collect(),
            });
        }
        versions.sort_by_key(|v| v.version);
        let rewrap_pending = match current {
            Some(c) => usage
                .iter()
                .filter(|u| u.kek_version != c)
                .map(|u| u.count)
                .sum(),
            None => usage.iter().map(|u| u.count).sum(),
        };
        Ok(KeyringStatus {
            sealed: ring.is_none(),
            sealed_reason: self.sealed_reason(),
            seal: descriptor.map(|d| seal_summary(&d)),
            per_deposit: ring.as_ref().is_some_and(|r| r.per_deposit()),
            current,
            versions,
            rewrap_pending,
        })
    }

    fn require_admin(&self, caller: &Caller) -> Result<(), CoreError> {
        if caller.is_admin() {
            Ok(())
        } else {
            Err(CoreError::Forbidden(
                "this operation needs a server administrator identity".into(),
            ))
        }
    }
}
