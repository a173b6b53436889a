//! Sealed and unsealed: opening the keyring with the seal at start or later (`unseal` with a
//! passphrase), sealing the service when the HSM key disappears, keyring rotation and
//! retirement. While sealed, deposit operations answer `Sealed` and nothing else changes.

use super::{Caller, Service};
use crate::error::CoreError;
use crate::keyring::{Keyring, seal_summary};
use crate::seal::{KdfParams, PassphraseSeal, Seal, SealError};
use crate::store::{KekUsage, Mutation, RowAuthMode, WrappedKind};
use keysafe_proto::Timestamp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The seal in use, and why the service is sealed when it is.
#[derive(Default)]
pub(super) struct SealState {
    seal: RwLock<Option<Arc<dyn Seal>>>,
    reason: RwLock<Option<String>>,
    /// Set when the HSM key was found destroyed: nothing may unseal this process again.
    shredded: std::sync::atomic::AtomicBool,
    /// Wakes whoever announces to other nodes that the key was found destroyed.
    pub(super) shredded_event: tokio::sync::Notify,
    /// Wakes the re-wrap job (after a rotation or an unseal).
    pub(super) rewrap_wake: tokio::sync::Notify,
    /// Serialises every change of the in-memory keyring that comes from the store (reload,
    /// rotation, retirement), so a reload never installs rows read before a local rotation;
    /// holds when the last reload started (the rate limit).
    changes: tokio::sync::Mutex<Option<Instant>>,
    /// Reloads begun and the last one completed, numbered: a caller that needs a reload that
    /// began after it looked (single flight) waits for one numbered higher than what it saw.
    reloads_started: AtomicU64,
    reloads_done: AtomicU64,
}

/// Reloads of the keyring are at most this frequent: a flood of rows naming unknown versions
/// (tampered rows) costs one small read per interval, not one per request.
const RELOAD_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// What a keyring reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyringReload {
    /// The current version before and after.
    pub before: u32,
    pub after: u32,
    /// The set of versions changed (a rotation or a retirement elsewhere).
    pub changed: bool,
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
                let ring = Arc::new(ring);
                let key = self.enable_row_macs(&ring).await?;
                // Verification is on before anything is served unsealed.
                self.store.row_auth().set(RowAuthMode::On(key));
                self.install(Some(ring), Some(seal), None);
                // Identities cached while sealed were not verified: read them again (defensive: a
                // token check usually drops the entry anyway, so no test isolates this).
                self.forget_all_identities();
                self.sealing.rewrap_wake.notify_one();
                Ok(())
            }
            Err(e @ SealError::HsmKeyMissing { .. }) => {
                tracing::error!(error = %e, "the HSM key is gone: starting sealed; no deposit can be decrypted");
                self.mark_shredded();
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
        if ring.is_none() {
            // Nothing can be authenticated without the key: authenticated rows stay as they are.
            self.store.row_auth().set(RowAuthMode::Sealed);
        }
        let sealed = ring.is_none();
        if let Ok(mut k) = self.keyring.write() {
            *k = ring;
        }
        if sealed {
            // Data keys that reads kept with cached rows go with the keyring (after it: see
            // `Service::keep_dek`).
            self.store.forget_cached_rows();
        }
        if let Ok(mut s) = self.sealing.seal.write() {
            *s = seal;
        }
        if let Ok(mut r) = self.sealing.reason.write() {
            *r = reason;
        }
    }

    /// Records that the seal's key was found destroyed (nothing may unseal this process again)
    /// and wakes [`Service::seal_key_destroyed`].
    fn mark_shredded(&self) {
        self.sealing
            .shredded
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.sealing.shredded_event.notify_one();
    }

    pub(super) fn is_shredded(&self) -> bool {
        self.sealing
            .shredded
            .load(std::sync::atomic::Ordering::SeqCst)
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
    /// good. While it is there, also reloads the keyring (changes made by other processes).
    /// Returns whether the service is unsealed afterwards.
    pub async fn check_seal(&self) -> bool {
        let Ok(seal) = self.seal() else {
            return false;
        };
        match tokio::task::spawn_blocking(move || seal.check()).await {
            Ok(Ok(())) => {
                // Follows rotations and retirements made by other processes on this store.
                match self.reload_keyring().await {
                    Ok(_) => true,
                    Err(CoreError::Sealed) => false,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reload the keyring");
                        true
                    }
                }
            }
            Ok(Err(e @ SealError::HsmKeyMissing { .. })) => {
                self.mark_shredded();
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
            self.mark_shredded();
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
        let ring = Arc::new(ring);
        let key = self.enable_row_macs(&ring).await?;
        // Verification is on before anything is served unsealed.
        self.store.row_auth().set(RowAuthMode::On(key));
        self.install(Some(ring), Some(seal), None);
        // Identities cached while sealed were not verified: read them again (defensive: a
        // token check usually drops the entry anyway, so no test isolates this).
        self.forget_all_identities();
        self.sealing.rewrap_wake.notify_one();
        tracing::info!(admin = %caller.fingerprint, "unsealed");
        Ok(())
    }

    /// `keysafe admin keyring rotate`: adds a keyring version that new data keys use at once, and
    /// wakes the re-wrap job. Starts from the keyring as the store holds it (another process
    /// may have rotated already).
    pub async fn rotate_keyring(&self, caller: &Caller) -> Result<u32, CoreError> {
        self.require_admin(caller)?;
        let mut changes = self.sealing.changes.lock().await;
        for attempt in 0..2 {
            self.reload_locked(&mut changes, false).await?;
            let ring = self.keyring()?;
            let seal = self.seal()?;
            let now = self.clock.now();
            let r = ring.clone();
            let (rotated, record) =
                tokio::task::spawn_blocking(move || r.rotated(seal.as_ref(), now))
                    .await
                    .map_err(blocking_err)??;
            // Stored before it is used: a data key never names a version the database lacks.
            match self.store.apply(Mutation::InsertKek(record)).await {
                Ok(_) => {}
                // Another process stored that version between our read and this write.
                Err(crate::store::StoreError::AlreadyExists) if attempt == 0 => continue,
                Err(e) => return Err(CoreError::from_store(e, "keyring version")),
            }
            let version = rotated.current_version();
            if let Ok(mut k) = self.keyring.write() {
                *k = Some(Arc::new(rotated));
            }
            self.sealing.rewrap_wake.notify_one();
            tracing::info!(version, admin = %caller.fingerprint, "keyring rotated");
            return Ok(version);
        }
        Err(CoreError::Conflict(
            "another process is rotating the keyring; retry".into(),
        ))
    }

    /// `keysafe admin keyring retire N`: deletes a version that no wrapped row uses any more.
    pub async fn retire_kek(&self, caller: &Caller, version: u32) -> Result<(), CoreError> {
        self.require_admin(caller)?;
        let mut changes = self.sealing.changes.lock().await;
        self.reload_locked(&mut changes, false).await?;
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

    /// Reads the keyring rows again and installs what they hold now: versions another process
    /// (or node) added are unwrapped with this process's seal, retired ones are dropped. This is
    /// the entry point for a change notification from other nodes; this process also calls it
    /// when it meets a keyring version it does not hold, when the store refuses a version it
    /// wrapped with, and at every seal check. Single flight (concurrent callers share one
    /// reload) and at most one reload per 200 ms.
    ///
    /// When the rows are no longer wrapped by this process's seal (the seal was migrated
    /// elsewhere, or they do not open with it), the service seals itself and says why: it
    /// answers `Sealed`, never `integrity_error`, for a keyring it cannot open.
    pub async fn reload_keyring(&self) -> Result<KeyringReload, CoreError> {
        let since = self.sealing.reloads_started.load(Ordering::SeqCst);
        self.reload_keyring_since(since).await
    }

    /// Makes sure a reload that began after the caller saw `since` reloads begun has
    /// completed; the caller takes `since` before it looks at the keyring.
    pub(super) async fn reload_keyring_since(
        &self,
        since: u64,
    ) -> Result<KeyringReload, CoreError> {
        let mut changes = self.sealing.changes.lock().await;
        if self.sealing.reloads_done.load(Ordering::SeqCst) > since {
            let current = self.keyring()?.current_version();
            return Ok(KeyringReload {
                before: current,
                after: current,
                changed: false,
            });
        }
        self.reload_locked(&mut changes, true).await
    }

    /// After the store refused a write naming keyring version `used` (the contract's answer to
    /// a retired version): reloads the keyring and says whether `used` is gone, so the caller
    /// can wrap again with the current one.
    pub(super) async fn kek_retired(&self, used: u32, seen: u64) -> bool {
        match self.reload_keyring_since(seen).await {
            Ok(_) => self.keyring().is_ok_and(|r| !r.has_version(used)),
            Err(_) => false,
        }
    }

    /// The number to pass to [`Service::reload_keyring_since`] later.
    pub(super) fn reloads_seen(&self) -> u64 {
        self.sealing.reloads_started.load(Ordering::SeqCst)
    }

    /// Reloads now (the caller holds `changes`). `rate_limited` reloads (those a request or
    /// a timer triggers) wait out [`RELOAD_MIN_INTERVAL`] since the last one began; an
    /// administrator's operation does not wait.
    async fn reload_locked(
        &self,
        last: &mut tokio::sync::MutexGuard<'_, Option<Instant>>,
        rate_limited: bool,
    ) -> Result<KeyringReload, CoreError> {
        if rate_limited && let Some(at) = **last {
            let wait = RELOAD_MIN_INTERVAL.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let number = self.sealing.reloads_started.fetch_add(1, Ordering::SeqCst) + 1;
        **last = Some(Instant::now());
        let ring = self.keyring()?;
        let seal = self.seal()?;
        let records = self.store.load_keks().await?;
        let (r, s) = (ring.clone(), seal.clone());
        let reloaded = tokio::task::spawn_blocking(move || r.reloaded(s.as_ref(), &records))
            .await
            .map_err(blocking_err)?;
        let fresh = match reloaded {
            Ok(fresh) => fresh,
            Err(e @ SealError::HsmKeyMissing { .. }) => {
                self.on_seal_error(&e);
                return Err(CoreError::Sealed);
            }
            Err(
                e @ (SealError::NoKeyringForSeal { .. }
                | SealError::EmptyKeyring
                | SealError::WrongKey
                | SealError::WrongPassphrase),
            ) => {
                // Only this process's view is wrong: the rows belong to a seal it cannot open
                // (a migration or restore elsewhere). Sealed, so nothing is called tampered.
                self.seal_now(&format!(
                    "the stored keyring no longer opens with this process's seal ({e}); restart \
                     with the seal the keyring now has"
                ));
                return Err(CoreError::Sealed);
            }
            Err(e) => return Err(e.into()),
        };
        let result = KeyringReload {
            before: ring.current_version(),
            after: fresh.current_version(),
            changed: fresh.versions() != ring.versions(),
        };
        // Installed only if nothing replaced the keyring meanwhile (sealing does not take the
        // lock).
        if result.changed
            && let Ok(mut k) = self.keyring.write()
            && k.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &ring))
        {
            *k = Some(Arc::new(fresh));
            tracing::info!(
                before = result.before,
                after = result.after,
                "keyring reloaded: another process changed it"
            );
        }
        if result.after != result.before {
            // Rows this process wrote with the old version move on too.
            self.sealing.rewrap_wake.notify_one();
        }
        self.sealing.reloads_done.store(number, Ordering::SeqCst);
        Ok(result)
    }

    /// `keysafe admin keyring status`.
    pub async fn keyring_status(&self, caller: &Caller) -> Result<KeyringStatus, CoreError> {
        self.require_admin(caller)?;
        if !self.is_sealed() {
            let mut changes = self.sealing.changes.lock().await;
            if let Err(e) = self.reload_locked(&mut changes, false).await {
                tracing::warn!(error = %e, "cannot reload the keyring");
            }
        }
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
