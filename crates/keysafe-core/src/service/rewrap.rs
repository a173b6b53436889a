//! The re-wrap job: moves every KEK-wrapped row onto the current keyring version after a
//! rotation. Each row is replaced by one compare-and-set write, so the job can stop at any point
//! (crash, kill -9, restart) and resume by simply looking again for rows on older versions:
//! progress is the data itself, never a separate counter that could disagree with it.
//!
//! To cover another kind of KEK-wrapped secret: add a `WrappedKind` variant (with its API name,
//! in keysafe-proto) and a `WrappedId` variant (`store/records.rs`), its associated data in
//! [`aad_for`], and in every backend its listing (`list_stale_wrapped`), its count
//! (`kek_usage`, `RetireKek`) and its `Rewrap`.

use super::Service;
use super::deposits::dek_aad;
use crate::crypto::SecretKey;
use crate::error::CoreError;
use crate::keyring::{DekError, Keyring};
use crate::store::{Mutation, ReadMemo, StoreError, WrappedId, WrappedKind, WrappedRow};
use std::sync::Arc;
use std::time::Duration;

/// The associated data a wrapped row was bound to when it was wrapped.
pub fn aad_for(id: &WrappedId) -> Vec<u8> {
    match id {
        WrappedId::DepositVersion { org, key, version } => {
            dek_aad(org, &key.owner, &key.name, *version)
        }
        WrappedId::AuditSigningKey { public_key, .. } => crate::audit::signing_key_aad(public_key),
        WrappedId::ClusterTlsKey { fingerprint } => super::cluster::cluster_key_aad(fingerprint),
    }
}

/// What one pass of the job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapProgress {
    pub rewrapped: u64,
    /// Rows that changed or vanished under the job (written, re-wrapped or purged meanwhile).
    pub skipped: u64,
    /// Rows whose data key does not unwrap (tampered): left untouched, logged.
    pub failed: u64,
}

/// Tunables of the background job.
#[derive(Debug, Clone)]
pub struct RewrapSettings {
    /// Rows per batch (one group-committed transaction).
    pub batch: u32,
    /// Pause between batches, to leave room for client traffic.
    pub pause: Duration,
}

impl Default for RewrapSettings {
    fn default() -> Self {
        Self {
            batch: 256,
            pause: Duration::ZERO,
        }
    }
}

impl Service {
    /// Wraps a data key with the current keyring version, off the async runtime when the seal
    /// takes part (per-deposit HSM mode).
    pub(super) async fn wrap_dek(
        &self,
        ring: &Arc<Keyring>,
        aad: Vec<u8>,
        dek: &SecretKey,
    ) -> Result<(u32, Vec<u8>), CoreError> {
        let r = if ring.per_deposit() {
            let ring = ring.clone();
            let dek = dek.clone();
            tokio::task::spawn_blocking(move || ring.wrap_dek(&aad, &dek))
                .await
                .map_err(|e| CoreError::Internal(e.to_string()))?
        } else {
            ring.wrap_dek(&aad, dek)
        };
        r.map_err(|e| self.dek_error(e))
    }

    /// Keeps a data key with the shared row it was unwrapped from ([`ReadMemo`]), so that the
    /// next read of that row does not unwrap it again. Sealing drops the keyring and then the
    /// store's cached rows; a read that unwrapped before the seal may keep its key after the
    /// rows were dropped, so it looks at the keyring after keeping it and, if it is gone, drops
    /// them again: no data key stays in memory once the service is sealed.
    pub(super) fn keep_dek(&self, memo: &ReadMemo, dek: &SecretKey) {
        memo.keep_dek(dek.clone());
        if self.keyring().is_err() {
            self.store.forget_cached_rows();
        }
    }

    /// Unwraps a data key (see [`Service::wrap_dek`]). A keyring version this process does not
    /// hold is first looked for in the store (another process may have rotated): only a row
    /// that still does not unwrap after that is an integrity error, named by `what`.
    pub(super) async fn unwrap_dek(
        &self,
        ring: &Arc<Keyring>,
        kek_version: u32,
        aad: Vec<u8>,
        wrapped: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<SecretKey, CoreError> {
        let mut ring = ring.clone();
        if !ring.has_version(kek_version) {
            let seen = self.reloads_seen();
            self.reload_keyring_since(seen).await?;
            ring = self.keyring()?;
        }
        let r = if ring.per_deposit() {
            let wrapped = wrapped.to_vec();
            tokio::task::spawn_blocking(move || ring.unwrap_dek(kek_version, &aad, &wrapped))
                .await
                .map_err(|e| CoreError::Internal(format!("blocking task: {e}")))?
        } else {
            ring.unwrap_dek(kek_version, &aad, wrapped)
        };
        r.map_err(|e| match e {
            DekError::Seal(s) => {
                self.on_seal_error(&s);
                CoreError::from(s)
            }
            DekError::Crypto(_) => CoreError::Integrity(format!("{} does not unwrap", what())),
        })
    }

    fn dek_error(&self, e: DekError) -> CoreError {
        if let DekError::Seal(s) = &e {
            self.on_seal_error(s);
        }
        e.into()
    }

    /// One pass over every kind of wrapped row: re-wraps up to everything that is not on the
    /// current version. Returns what it did; `Sealed` if the keyring is not open.
    pub async fn rewrap_pass(
        &self,
        settings: &RewrapSettings,
    ) -> Result<RewrapProgress, CoreError> {
        let mut progress = RewrapProgress::default();
        // Another process may have rotated: re-wrap towards the version the store has now.
        self.reload_keyring().await?;
        for kind in WrappedKind::ALL {
            let mut after: Option<WrappedId> = None;
            loop {
                let ring = self.keyring()?;
                let current = ring.current_version();
                let rows = self
                    .store
                    .list_stale_wrapped(*kind, current, after.as_ref(), settings.batch.max(1))
                    .await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.id.clone());
                self.rewrap_batch(&ring, rows, &mut progress).await?;
                if !settings.pause.is_zero() {
                    tokio::time::sleep(settings.pause).await;
                }
            }
        }
        Ok(progress)
    }

    async fn rewrap_batch(
        &self,
        ring: &Arc<Keyring>,
        rows: Vec<WrappedRow>,
        progress: &mut RewrapProgress,
    ) -> Result<(), CoreError> {
        // A row on a version newer than this keyring's current one means another process
        // rotated since the pass began: never move a row backwards; reload, and let the next
        // batch (or pass) take it with the new keyring.
        let current = ring.current_version();
        let (rows, newer): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.kek_version < current);
        if !newer.is_empty() {
            progress.skipped += newer.len() as u64;
            self.reload_keyring().await?;
        }
        let r = ring.clone();
        // Unwrap and wrap the whole batch in one go (one blocking task when the HSM is involved).
        let prepared = tokio::task::spawn_blocking(move || {
            rows.into_iter()
                .map(|row| {
                    let aad = aad_for(&row.id);
                    let res = r
                        .unwrap_dek(row.kek_version, &aad, &row.wrapped)
                        .and_then(|dek| r.wrap_dek(&aad, &dek));
                    (row, res)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| CoreError::Internal(e.to_string()))?;
        let mut writes = Vec::new();
        for (row, res) in prepared {
            match res {
                Ok((kek_version, wrapped)) => writes.push(self.store.apply(Mutation::Rewrap {
                    id: row.id,
                    expected_kek: row.kek_version,
                    kek_version,
                    wrapped,
                })),
                Err(DekError::Seal(e)) => {
                    self.on_seal_error(&e);
                    return Err(e.into());
                }
                Err(DekError::Crypto(_)) => {
                    tracing::error!(row = ?row.id, kek_version = row.kek_version, "re-wrap: the data key does not unwrap; left as it is");
                    progress.failed += 1;
                }
            }
        }
        // Sent together so the store commits them in one transaction.
        for r in futures_util::future::join_all(writes).await {
            match r {
                Ok(_) => progress.rewrapped += 1,
                Err(StoreError::NotFound | StoreError::VersionConflict { .. }) => {
                    progress.skipped += 1
                }
                Err(e) => return Err(CoreError::from_store(e, "wrapped row")),
            }
        }
        Ok(())
    }

    /// The background job: runs a pass at start, after each rotation and after an unseal, until
    /// nothing is left on older versions. Never returns.
    pub async fn run_rewrap_job(self: Arc<Self>, settings: RewrapSettings) {
        loop {
            self.sealing.rewrap_wake.notified().await;
            loop {
                match self.rewrap_pass(&settings).await {
                    Ok(p) if p.rewrapped == 0 => {
                        if p.failed > 0 {
                            tracing::error!(
                                failed = p.failed,
                                "re-wrap finished with rows that do not unwrap"
                            );
                        }
                        break;
                    }
                    Ok(p) => tracing::info!(
                        rewrapped = p.rewrapped,
                        skipped = p.skipped,
                        "re-wrap pass done"
                    ),
                    Err(CoreError::Sealed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "re-wrap pass failed; retrying in 5 s");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        }
    }
}

/// What moving the per-deposit layer of every wrapped row did (see [`move_outer_layer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerMove {
    /// Rows rewritten under the new layer.
    pub moved: u64,
    /// Rows that opened under the new layer already (an earlier, interrupted run moved them,
    /// or, when undoing a migration, they had not been moved yet).
    pub already: u64,
    /// Rows that open under neither layer (tampered): counted, logged, left as they are.
    pub unreadable: u64,
    /// Rows that vanished or changed under the move (purged or rewritten meanwhile).
    pub skipped: u64,
}

impl LayerMove {
    /// Rows looked at so far.
    pub fn seen(&self) -> u64 {
        self.moved + self.already + self.unreadable + self.skipped
    }
}

enum RowMove {
    Already,
    Move(Vec<u8>),
    Unreadable,
}

/// Moves every KEK-wrapped row from the per-deposit layer of `from` to that of `to` (the same
/// key-encryption keys, a different per-deposit seal or none), for a seal migration. Each row
/// keeps its keyring version and is rewritten by one compare-and-set write, and a row that
/// opens under `to` already is left alone; so at every instant each row opens under `from` or
/// under `to`, and a run interrupted anywhere (kill -9) is finished by running it again, or
/// undone by running it with `from` and `to` swapped. A row that opens under neither is
/// counted and left as it is; a seal that fails (an HSM that does not answer) stops the move
/// with the error, changing nothing more. `progress` is called after every batch. The caller
/// makes sure nothing else writes these rows meanwhile (servers are stopped).
pub async fn move_outer_layer(
    store: &dyn crate::store::Store,
    from: Arc<Keyring>,
    to: Arc<Keyring>,
    batch: u32,
    mut progress: impl FnMut(&LayerMove),
) -> Result<LayerMove, CoreError> {
    let mut done = LayerMove::default();
    // The cheaper layer is tried first: no HSM round trip for a row it settles.
    let to_first = !to.per_deposit();
    for kind in WrappedKind::ALL {
        let mut after: Option<WrappedId> = None;
        loop {
            // Version 0 never exists: every row is listed.
            let rows = store
                .list_stale_wrapped(*kind, 0, after.as_ref(), batch.max(1))
                .await?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id.clone());
            let (f, t) = (from.clone(), to.clone());
            let decided = tokio::task::spawn_blocking(move || {
                rows.into_iter()
                    .map(|row| {
                        let aad = aad_for(&row.id);
                        let v = row.kek_version;
                        let under_to = |w: &[u8]| t.unwrap_dek(v, &aad, w).map(|_| ());
                        let already = if to_first {
                            under_to(&row.wrapped)
                        } else {
                            Err(DekError::Crypto(crate::crypto::CryptoError::Integrity))
                        };
                        let decision = match already {
                            Ok(()) => Ok(RowMove::Already),
                            Err(DekError::Seal(e)) => Err(e),
                            Err(DekError::Crypto(_)) => match f.unwrap_dek(v, &aad, &row.wrapped) {
                                Ok(dek) => t
                                    .wrap_dek_with(v, &aad, &dek)
                                    .map(RowMove::Move)
                                    .map_err(|e| match e {
                                        DekError::Seal(s) => s,
                                        DekError::Crypto(_) => crate::seal::SealError::Random,
                                    }),
                                Err(DekError::Seal(e)) => Err(e),
                                Err(DekError::Crypto(_)) if to_first => Ok(RowMove::Unreadable),
                                Err(DekError::Crypto(_)) => match under_to(&row.wrapped) {
                                    Ok(()) => Ok(RowMove::Already),
                                    Err(DekError::Seal(e)) => Err(e),
                                    Err(DekError::Crypto(_)) => Ok(RowMove::Unreadable),
                                },
                            },
                        };
                        (row, decision)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| CoreError::Internal(format!("blocking task: {e}")))?;
            let mut writes = Vec::new();
            for (row, decision) in decided {
                match decision? {
                    RowMove::Already => done.already += 1,
                    RowMove::Unreadable => {
                        tracing::error!(row = ?row.id, kek_version = row.kek_version, "seal migration: the data key opens under neither seal; left as it is");
                        done.unreadable += 1;
                    }
                    RowMove::Move(wrapped) => writes.push(store.apply(Mutation::Rewrap {
                        id: row.id,
                        expected_kek: row.kek_version,
                        kek_version: row.kek_version,
                        wrapped,
                    })),
                }
            }
            // Sent together so the store commits them in one transaction.
            for r in futures_util::future::join_all(writes).await {
                match r {
                    Ok(_) => done.moved += 1,
                    Err(StoreError::NotFound | StoreError::VersionConflict { .. }) => {
                        done.skipped += 1
                    }
                    Err(e) => return Err(CoreError::from_store(e, "wrapped row")),
                }
            }
            progress(&done);
        }
    }
    Ok(done)
}
